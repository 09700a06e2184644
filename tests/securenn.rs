//! SecureNN's protocols against plaintext, on random and edge inputs, with exact byte and round
//! costs from the transport meter, P2's view, and determinism.

mod common;

use common::*;
use rand::RngExt;
use securenn::channel::{Ctx, P0, P1, P2, ProtocolError};
use securenn::protocol::securenn::bits::{L_BITS, bit_shares};
use securenn::protocol::securenn::private_compare::private_compare_view;
use securenn::protocol::securenn::share_convert::{ScRandomness, share_convert_with};
use securenn::protocol::securenn::{compute_msb, division, maxpool, narrow_drelu, relu};
use securenn::protocol::{Costing, SecureNn, SharedTensor};
use securenn::ring::{ODD_MODULUS, OddTensor, RingTensor, Window, odd_reduce};

const FRESH: Costing = Costing::PAPER;
const REUSE: Costing = Costing::OPTIMISED;

/// Bytes of n Z_67 values packed in base 67.
fn packed(n: u64) -> u64 {
    securenn::ring::z67::packed_len(n as usize) as u64
}

/// Split `x` into two additive shares with a test-local PRG (both servers derive the same split).
fn split(x: &[u64], seed: u64) -> (RingTensor, RingTensor) {
    let t = RingTensor::from_vec(&[x.len()], x.to_vec());
    securenn::share::share(&t, &mut rng(seed))
}

/// This server's share of a split, as a shared tensor (P2 holds none).
fn mine(ctx: &Ctx, shares: &(RingTensor, RingTensor), shape: &[usize], frac: u32) -> SharedTensor {
    let s = match ctx.me() {
        P0 => Some(shares.0.clone().reshape(shape)),
        P1 => Some(shares.1.clone().reshape(shape)),
        _ => None,
    };
    SharedTensor::new(shape, frac, s)
}

fn open(outputs: &[Option<RingTensor>]) -> Vec<u64> {
    reconstruct(outputs).as_slice().to_vec()
}

// ---------------------------------------------------------------- PrivateCompare (Alg. 3)

/// β' = β ⊕ (x > r) on random and corner inputs; 128 bytes per comparison, one round.
#[test]
fn private_compare_is_correct_and_costs_128_bytes() {
    let mut g = rng(1);
    let mut xs: Vec<u64> = (0..500).map(|_| g.random()).collect();
    let mut rs: Vec<u64> = (0..500).map(|_| g.random()).collect();
    // Corners: equal values, neighbours, 0 and 2^64-1 on either side.
    for (x, r) in [
        (0, 0),
        (1, 0),
        (0, 1),
        (u64::MAX, u64::MAX),
        (u64::MAX, u64::MAX - 1),
        (0, u64::MAX),
        (u64::MAX, 0),
        (1 << 63, (1 << 63) - 1),
    ] {
        xs.push(x);
        rs.push(r);
    }
    let n = xs.len();
    let betas: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let (xs2, rs2, b2) = (xs.clone(), rs.clone(), betas.clone());
    let r = run3(1, move |ctx: Ctx| {
        let (xs, rs, betas) = (xs2.clone(), rs2.clone(), b2.clone());
        async move {
            let (s0, s1) = bit_shares(&xs, &mut rng(77));
            let bits = match ctx.me() {
                P0 => Some(s0),
                P1 => Some(s1),
                _ => None,
            };
            let (r, b) = if ctx.me() == P2 {
                (vec![], vec![])
            } else {
                (rs, betas)
            };
            Ok(private_compare_view(&ctx, n, bits.as_ref(), &r, &b, FRESH)
                .await?
                .map(|v| v.beta_prime))
        }
    })
    .unwrap();
    let bp = r.outputs[2].clone().unwrap();
    for i in 0..n {
        assert_eq!(
            bp[i],
            betas[i] ^ (xs[i] > rs[i]) as u8,
            "x={} r={} β={}",
            xs[i],
            rs[i],
            betas[i]
        );
    }
    assert_eq!(r.traffic.total_bytes(), 128 * n as u64);
    assert_eq!(r.traffic.rounds, 1);
}

/// P2's view carries no position information: comparisons that all first differ at bit 40 put
/// their single zero uniformly over the 64 slots (chi-square, 63 degrees of freedom).
#[test]
fn private_compare_hides_the_position_from_p2() {
    let n = 64 * 150;
    let mut g = rng(2);
    // x and r agree above bit 40, x has 1 and r has 0 there: x > r, first difference at bit 40.
    let xs: Vec<u64> = (0..n).map(|_| g.random::<u64>() | (1 << 40)).collect();
    let rs: Vec<u64> = xs
        .iter()
        .map(|&x| (x & !((1u64 << 41) - 1)) | (g.random::<u64>() & ((1 << 40) - 1)))
        .collect();
    let (xs2, rs2) = (xs.clone(), rs.clone());
    let r = run3(2, move |ctx: Ctx| {
        let (xs, rs) = (xs2.clone(), rs2.clone());
        async move {
            let (s0, s1) = bit_shares(&xs, &mut rng(78));
            let bits = match ctx.me() {
                P0 => Some(s0),
                P1 => Some(s1),
                _ => None,
            };
            let (r, b) = if ctx.me() == P2 {
                (vec![], vec![])
            } else {
                (rs, vec![0u8; xs.len()])
            };
            Ok(
                private_compare_view(&ctx, xs.len(), bits.as_ref(), &r, &b, FRESH)
                    .await?
                    .map(|v| v.d),
            )
        }
    })
    .unwrap();
    let d = r.outputs[2].clone().unwrap();
    let mut counts = [0f64; L_BITS];
    for c in d.as_slice().chunks_exact(L_BITS) {
        let zeros: Vec<usize> = (0..L_BITS).filter(|&k| c[k] == 0).collect();
        assert_eq!(
            zeros.len(),
            1,
            "exactly one zero per comparison with x > r and β = 0"
        );
        counts[zeros[0]] += 1.0;
    }
    let e = n as f64 / L_BITS as f64;
    let chi2: f64 = counts.iter().map(|o| (o - e) * (o - e) / e).sum();
    // 63 degrees of freedom: P(chi2 > 103.4) = 0.001. Without the permutation every zero
    // would sit in slot 23 (chi2 = 63·n).
    assert!(
        chi2 < 103.4,
        "zero positions not uniform: chi2 = {chi2}, counts {counts:?}"
    );
    // The nonzero values are uniform over Z_67^* too (multiplied by fresh s_i).
    let nonzero = d.as_slice().iter().filter(|&&v| v != 0).count();
    assert_eq!(nonzero, n * (L_BITS - 1));
}

// ---------------------------------------------------------------- ShareConvert (Alg. 4)

fn run_share_convert(
    a: Vec<u64>,
    seed: u64,
    forced: Option<ScRandomness>,
    policy: Costing,
) -> (Vec<u64>, securenn_transports::MeterSnapshot) {
    let n = a.len();
    let shares = split(&a, seed);
    let r = run3(seed, move |ctx: Ctx| {
        let (shares, forced) = (shares.clone(), forced.clone());
        async move {
            let x = mine(&ctx, &shares, &[n], 0);
            let y = share_convert_with(&ctx, n, x.share(), forced, policy).await?;
            Ok(y)
        }
    })
    .unwrap();
    let (y0, y1): (OddTensor, OddTensor) =
        (r.outputs[0].clone().unwrap(), r.outputs[1].clone().unwrap());
    (y0.add(&y1).as_slice().to_vec(), r.traffic)
}

#[test]
fn share_convert_is_correct_and_costs_304_bytes() {
    let mut g = rng(3);
    let mut a: Vec<u64> = (0..1000).map(|_| g.random()).collect();
    a.extend([0, 1, 2, u64::MAX - 1, 1 << 63, (1 << 63) - 1]);
    a.retain(|&v| v != u64::MAX);
    // The paper's 304 bytes; with P0's dealt shares from the P0-P2 seed and Z_67 packed,
    // 32 + 3 packed bit vectors.
    let n = a.len() as u64;
    for (policy, bytes) in [(FRESH, 304 * n), (REUSE, 32 * n + 3 * packed(64 * n))] {
        let (y, t) = run_share_convert(a.clone(), 3, None, policy);
        for (v, w) in a.iter().zip(&y) {
            assert_eq!(*w, odd_reduce(*v), "a = {v}, {policy:?}");
        }
        assert_eq!(t.total_bytes(), bytes, "{policy:?}");
        assert_eq!(t.rounds, 4);
    }
}

/// The corners of ShareConvert's randomness: r = 0 (PrivateCompare against r - 1 = 2^64 - 1,
/// footnote 7), and r chosen so that a_j + r_j wraps on share 0, on share 1, on both, on neither.
#[test]
fn share_convert_randomness_corners() {
    let mut g = rng(4);
    let n = 64;
    let a: Vec<u64> = (0..n).map(|_| g.random::<u64>() >> 1).collect();
    let (a0, a1) = split(&a, 4);
    for (case, policy) in (0..5).flat_map(|c| [(c, FRESH), (c, REUSE)]) {
        let r0: Vec<u64> = match case {
            // share 0 wraps: r0 > 2^64 - 1 - a0
            1 => a0.as_slice().iter().map(|&v| u64::MAX - v / 2).collect(),
            // share 0 does not wrap
            _ => a0.as_slice().iter().map(|&v| (u64::MAX - v) / 2).collect(),
        };
        let r: Vec<u64> = match case {
            0 => vec![0; n],
            // r1 = r - r0 wraps with a1: pick r1 = MAX - a1/2, r = r0 + r1.
            2 | 3 => r0
                .iter()
                .zip(a1.as_slice())
                .map(|(&x, &v)| x.wrapping_add(u64::MAX - v / 2))
                .collect(),
            _ => r0
                .iter()
                .zip(a1.as_slice())
                .map(|(&x, &v)| x.wrapping_add((u64::MAX - v) / 2))
                .collect(),
        };
        let r0 = if case == 3 {
            a0.as_slice().iter().map(|&v| u64::MAX - v / 2).collect()
        } else {
            r0
        };
        let forced = ScRandomness {
            r,
            r0,
            eta2: (0..n).map(|i| (i % 2) as u8).collect(),
        };
        let shares = (a0.clone(), a1.clone());
        let fc = forced.clone();
        let out = run3(40 + case, move |ctx: Ctx| {
            let (shares, forced) = (shares.clone(), fc.clone());
            async move {
                let x = mine(&ctx, &shares, &[n], 0);
                share_convert_with(&ctx, n, x.share(), Some(forced), policy).await
            }
        })
        .unwrap();
        let y = out.outputs[0]
            .clone()
            .unwrap()
            .add(&out.outputs[1].clone().unwrap());
        for (i, (&v, &w)) in a.iter().zip(y.as_slice()).enumerate() {
            assert_eq!(w, odd_reduce(v), "case {case} element {i}, {policy:?}");
        }
    }
}

// ---------------------------------------------------------------- ComputeMSB (Alg. 5)

#[test]
fn compute_msb_is_correct_and_costs_360_bytes() {
    let mut g = rng(5);
    let mut a: Vec<u64> = (0..1000)
        .map(|_| g.random::<u64>())
        .map(odd_reduce)
        .collect();
    // Values whose doubled form wraps the odd ring (a ≥ 2^63), and the edges.
    a.extend([0, 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, ODD_MODULUS - 1]);
    let n = a.len();
    let odd = OddTensor::from_vec(&[n], a.clone());
    let x0 = OddTensor::random(&[n], &mut rng(55));
    let x1 = odd.sub(&x0);
    // The paper's 360 bytes; with P0's dealt shares from the P0-P2 seed and Z_67 packed,
    // 80 + 3 packed bit vectors.
    let m = n as u64;
    for (policy, bytes) in [(FRESH, 360 * m), (REUSE, 80 * m + 3 * packed(64 * m))] {
        let (x0, x1) = (x0.clone(), x1.clone());
        let r = run3(5, move |ctx: Ctx| {
            let (x0, x1) = (x0.clone(), x1.clone());
            async move {
                let mine = match ctx.me() {
                    P0 => Some(x0),
                    P1 => Some(x1),
                    _ => None,
                };
                let m = compute_msb::compute_msb(&ctx, n, mine.as_ref(), policy).await?;
                Ok(m.share().cloned())
            }
        })
        .unwrap();
        for (v, m) in a.iter().zip(open(&r.outputs)) {
            assert_eq!(m, v >> 63, "a = {v}, {policy:?}");
        }
        assert_eq!(r.traffic.total_bytes(), bytes, "{policy:?}");
        // Standalone, P2's dealing is a round of its own: deal, r exchange, PrivateCompare,
        // β', multiplication (the paper's 5). Inside DReLU the dealing overlaps ShareConvert.
        assert_eq!(r.traffic.rounds, 5);
    }
}

// ---------------------------------------------------------------- DReLU and ReLU (Alg. 6, 7)

fn drelu_run(
    a: &[u64],
    seed: u64,
    policy: Costing,
) -> (Vec<u64>, securenn_transports::MeterSnapshot) {
    let n = a.len();
    let shares = split(a, seed);
    let r = run3(seed, move |ctx: Ctx| {
        let shares = shares.clone();
        async move {
            Ok(relu::drelu(&ctx, &mine(&ctx, &shares, &[n], 13), policy)
                .await?
                .share()
                .cloned())
        }
    })
    .unwrap();
    (open(&r.outputs), r.traffic)
}

/// Edge values of the valid range |a| < 2^62: 0, ±1 ulp, ±(2^62 - 1), fixed-point ±1.0.
fn edge_values() -> Vec<u64> {
    let e: [i64; 9] = [
        0,
        1,
        -1,
        (1 << 62) - 1,
        -((1 << 62) - 1),
        1 << 13,
        -(1 << 13),
        (1 << 61) + 12345,
        -(1 << 61),
    ];
    e.iter().map(|&v| v as u64).collect()
}

#[test]
fn drelu_edges_and_cost() {
    let a = edge_values();
    let (d, t) = drelu_run(&a, 6, FRESH);
    for (v, b) in a.iter().zip(&d) {
        assert_eq!(*b, ((*v as i64) >= 0) as u64, "a = {}", *v as i64);
    }
    assert_eq!(t.total_bytes(), 664 * a.len() as u64);
    assert_eq!(
        t.rounds, 8,
        "the paper's 8 rounds: P2 deals ComputeMSB before ShareConvert"
    );
    // Ours: one opening modulo 2^64 and one PrivateCompare on 63 bits (narrow_drelu), the same
    // results in 3 rounds.
    let (d2, t2) = drelu_run(&a, 6, REUSE);
    assert_eq!(d2, d);
    let n = a.len() as u64;
    assert_eq!(t2.total_bytes(), 24 * n + 3 * packed(63 * n));
    assert_eq!(t2.rounds, 3);
}

/// DReLU's domain is |a| < 2^62 (it doubles a): the largest fixed-point values the protocol
/// accepts are ±(2^62 - 1) raw, i.e. ±2^49 at 13 fractional bits, and 2^62 is where it stops
/// being right (2·2^62 has its top bit set, so DReLU says "negative").
#[test]
fn drelu_domain_bound() {
    let inside = [
        (1u64 << 62) - 1,
        ((1i64 << 62) - 1).wrapping_neg() as u64,
        (-(1i64 << 62)) as u64 + 1,
    ];
    let (d, _) = drelu_run(&inside, 20, FRESH);
    assert_eq!(d, vec![1, 0, 0]);
    let (d, _) = drelu_run(&[1 << 62, (1 << 63) - 1], 21, FRESH);
    assert_eq!(
        d,
        vec![0, 0],
        "outside the domain the answer is wrong, as documented"
    );
}

/// The correctness probability: 100,000 random DReLUs over the valid range, zero wrong answers.
#[test]
fn drelu_100k_random_zero_errors() {
    let mut g = rng(7);
    let a: Vec<u64> = (0..100_000)
        .map(|_| (g.random::<i64>() >> 2) as u64)
        .collect();
    let (d, _) = drelu_run(&a, 7, FRESH);
    let wrong = a
        .iter()
        .zip(&d)
        .filter(|(v, b)| **b != ((**v as i64) >= 0) as u64)
        .count();
    assert_eq!(wrong, 0);
}

/// ReLU is exact: equal to the plaintext reference bit for bit, no truncation.
#[test]
fn relu_is_exact_and_costs_704_bytes() {
    let mut g = rng(8);
    for (batch, shape) in [(1usize, vec![1, 7, 3]), (128, vec![128, 5])] {
        let mut x = random_fixed(&shape, 1000.0, &mut g);
        let n = x.len();
        let mut v = x.clone().into_vec();
        v[..edge_values().len().min(n)]
            .copy_from_slice(&edge_values()[..edge_values().len().min(n)]);
        x = RingTensor::from_vec(&shape, v);
        let case = Case::new(Op::Relu, x.clone(), x.clone());
        let want = plain_case(&case, securenn::protocol::ReluKind::Exact).unwrap();
        // The paper's 704 bytes in 9 rounds; ours (narrow_drelu at 64 bits, the product with
        // the helper's bit) in 3.
        let m = n as u64;
        let backends = [
            (SecureNn::paper(), 704 * m, 9),
            (SecureNn::optimised(), 48 * m + 3 * packed(63 * m), 3),
        ];
        for (backend, bytes, rounds) in backends {
            let r = run_case(8, &case, move || backend).unwrap();
            assert_eq!(reconstruct(&r.outputs), want, "batch {batch}");
            assert_eq!(r.traffic.total_bytes(), bytes);
            assert_eq!(r.traffic.rounds, rounds);
        }
    }
}

// ---------------------------------------------------------------- DReLU and ReLU on fewer bits

/// Narrow DReLU and ReLU of `a` at `width` bits: (DReLU bits, ReLU values, traffic).
fn narrow_run(
    a: &[u64],
    width: u32,
    seed: u64,
) -> (Vec<u64>, Vec<u64>, securenn_transports::MeterSnapshot) {
    let n = a.len();
    let shares = split(a, seed);
    let r = run3(seed, move |ctx: Ctx| {
        let shares = shares.clone();
        async move {
            let t = mine(&ctx, &shares, &[n], 13);
            let (y, b) = narrow_drelu::relu_with_drelu(&ctx, &t, width).await?;
            Ok((b.share().cloned(), y.share().cloned()))
        }
    })
    .unwrap();
    let b: Vec<Option<RingTensor>> = r.outputs.iter().map(|o| o.0.clone()).collect();
    let y: Vec<Option<RingTensor>> = r.outputs.iter().map(|o| o.1.clone()).collect();
    (open(&b), open(&y), r.traffic)
}

/// Values inside |a| < 2^(width-1): the boundary, 0, ±1, and random ones of every magnitude.
fn narrow_values(width: u32, g: &mut securenn::share::Prg) -> Vec<u64> {
    let top = if width == 64 {
        i64::MAX
    } else {
        (1i64 << (width - 1)) - 1
    };
    let mut v: Vec<i64> = vec![0, 1, -1, top, -top, top - 1, -top + 1, top / 2, -top / 2];
    for _ in 0..300 {
        let bits = g.random_range(0..width);
        let m = if bits >= 63 {
            i64::MAX
        } else {
            (1i64 << bits) - 1
        };
        let x = (g.random::<u64>() as i64) & m;
        v.push(if g.random::<bool>() { x } else { -x });
    }
    v.into_iter().map(|x| x as u64).collect()
}

#[test]
fn narrow_drelu_and_relu_are_exact_inside_the_bound_at_every_width() {
    let mut g = rng(80);
    for width in [2u32, 3, 8, 14, 21, 32, 47, 62, 63, 64] {
        let a = narrow_values(width, &mut g);
        let (b, y, t) = narrow_run(&a, width, 80 + width as u64);
        for ((&v, &bit), &relu) in a.iter().zip(&b).zip(&y) {
            let pos = (v as i64) >= 0;
            assert_eq!(bit, pos as u64, "width {width}, a = {}", v as i64);
            assert_eq!(relu, if pos { v } else { 0 }, "width {width}");
        }
        // c both ways (width bits each), P1's bit shares of the mask's low bits and
        // PrivateCompare (width - 1 Z_67 values, three times), z both ways, d and w to P1.
        let n = a.len() as u64;
        let w = width as u64;
        assert_eq!(
            t.total_bytes(),
            2 * (n * w).div_ceil(8) + 3 * packed((w - 1) * n) + 32 * n,
            "width {width}"
        );
        assert_eq!(t.rounds, 3);
    }
}

/// The bound is a precondition, not a hope: 2^(width-1) itself reads as negative.
#[test]
fn narrow_drelu_is_wrong_just_outside_the_bound() {
    for width in [8u32, 21, 40] {
        let a = [1u64 << (width - 1), (1u64 << (width - 1)) + 5];
        let (b, _, _) = narrow_run(&a, width, 90);
        assert_eq!(
            b,
            vec![0, 0],
            "width {width}: documented wrong answer outside"
        );
    }
}

/// At 64 bits every ring element is in range, the MSB's neighbourhood included: 100,000
/// random values and the extremes, zero wrong answers.
#[test]
fn narrow_drelu_at_64_bits_covers_the_whole_ring() {
    let mut g = rng(91);
    let mut a: Vec<u64> = (0..100_000).map(|_| g.random::<u64>()).collect();
    a.extend([1 << 63, (1 << 63) - 1, (1 << 63) + 1, u64::MAX, 0, 1 << 62]);
    let (d, _) = drelu_run(&a, 91, REUSE);
    let wrong = a
        .iter()
        .zip(&d)
        .filter(|(v, b)| **b != ((**v as i64) >= 0) as u64)
        .count();
    assert_eq!(wrong, 0);
}

// ---------------------------------------------------------------- MatMul (Alg. 1) and linear layers

/// Beaver's MatMul on shared operands (input by the helper: its input sends P1 (mn + nv) words
/// first) costs (2mn + 2nv + mv) words; with x the data owner's and W the model owner's, known
/// to them (tests/known_operand.rs), it costs (mn + nv + mv).
#[test]
fn matmul_and_conv_match_plaintext_and_cost_the_formula() {
    let mut g = rng(9);
    for (m, n, v) in [(1, 100, 1), (1, 500, 100), (3, 7, 5), (128, 13, 10)] {
        let mut case = Case::new(
            Op::Matmul,
            random_fixed(&[m, n], 1.0, &mut g),
            random_fixed(&[n, v], 1.0, &mut g),
        );
        let want = plain_case(&case, securenn::protocol::ReluKind::Exact).unwrap();
        let (m, n, v) = (m as u64, n as u64, v as u64);
        let r = run_case(9, &case, SecureNn::default).unwrap();
        assert!(max_ulp_diff(&reconstruct(&r.outputs), &want) <= 1);
        assert_eq!(r.traffic.total_bytes(), (m * n + n * v + m * v) * 8);
        assert_eq!(r.traffic.link_bytes(P2, P1), m * v * 8);
        assert_eq!(r.traffic.rounds, 2, "the helper waits for the weight's F");
        case.owners = (P2, P2);
        let r = run_case(9, &case, SecureNn::default).unwrap();
        assert!(max_ulp_diff(&reconstruct(&r.outputs), &want) <= 1);
        let input = (m * n + n * v) * 8;
        assert_eq!(
            r.traffic.total_bytes() - input,
            (2 * m * n + 2 * n * v + m * v) * 8
        );
        assert_eq!(r.traffic.link_bytes(P2, P1) - input, m * v * 8);
        assert_eq!(r.traffic.rounds, 2, "the input, then the product");
    }
    // Conv: the image is masked (Beaver) or sent masked to the filter's owner, not its im2col
    // matrix.
    let mut case = Case::new(
        Op::Conv {
            stride: 1,
            padding: securenn::ring::Padding::Valid,
        },
        random_fixed(&[2, 8, 8, 3], 1.0, &mut g),
        random_fixed(&[5, 5, 3, 4], 1.0, &mut g),
    );
    let want = plain_case(&case, securenn::protocol::ReluKind::Exact).unwrap();
    let r = run_case(10, &case, SecureNn::default).unwrap();
    assert!(max_ulp_diff(&reconstruct(&r.outputs), &want) <= 1);
    assert_eq!(
        r.traffic.total_bytes(),
        (2 * 64 * 3 + 75 * 4 + 2 * 16 * 4) * 8
    );
    case.owners = (P2, P2);
    let r = run_case(10, &case, SecureNn::default).unwrap();
    assert!(max_ulp_diff(&reconstruct(&r.outputs), &want) <= 1);
    assert_eq!(
        r.traffic.total_bytes() - (2 * 64 * 3 + 75 * 4) * 8,
        (2 * 2 * 64 * 3 + 2 * 75 * 4 + 2 * 16 * 4) * 8
    );
}

// ---------------------------------------------------------------- Maxpool (Alg. 9) and DMaxpool (Alg. 10, 12)

/// Plaintext max and index (later wins among ties) of each k×k window.
fn plain_maxpool(x: &RingTensor, k: usize) -> (Vec<u64>, Vec<u64>) {
    let n = k * k;
    let parts: Vec<RingTensor> = (0..n).map(|t| x.pool_window(k, t)).collect();
    let m = parts[0].len();
    let mut max = parts[0].as_slice().to_vec();
    let mut idx = vec![0u64; m];
    for (t, p) in parts.iter().enumerate().skip(1) {
        for o in 0..m {
            if p.as_slice()[o] as i64 >= max[o] as i64 {
                max[o] = p.as_slice()[o];
                idx[o] = t as u64;
            }
        }
    }
    (max, idx)
}

fn run_maxpool(
    x: &RingTensor,
    k: usize,
    policy: Costing,
    seed: u64,
) -> (Vec<u64>, Vec<u64>, securenn_transports::MeterSnapshot) {
    let shape = x.shape().to_vec();
    let shares = split(x.as_slice(), seed);
    let r = run3(seed, move |ctx: Ctx| {
        let (shares, shape) = (shares.clone(), shape.clone());
        async move {
            let t = mine(&ctx, &shares, &shape, 13);
            let p = maxpool::maxpool_with_index(&ctx, &t, k, policy, false).await?;
            Ok((p.max.share().cloned(), p.index.share().cloned()))
        }
    })
    .unwrap();
    let max: Vec<Option<RingTensor>> = r.outputs.iter().map(|o| o.0.clone()).collect();
    let idx: Vec<Option<RingTensor>> = r.outputs.iter().map(|o| o.1.clone()).collect();
    (open(&max), open(&idx), r.traffic)
}

#[test]
fn maxpool_matches_plaintext_with_ties_and_negative_windows() {
    let mut g = rng(11);
    for (shape, k) in [
        (vec![1, 4, 6, 3], 2),
        (vec![128, 2, 2, 1], 2),
        (vec![2, 6, 3, 1], 3),
    ] {
        let mut x = random_fixed(&shape, 50.0, &mut g);
        {
            let v = x.as_mut_slice();
            // A window of ties, an all-negative window (first window of channel 0).
            let c = shape[3];
            let w = shape[2];
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                v[(dy * w + dx) * c] = (-(5i64 << 13) - dy as i64) as u64;
            }
            if shape[0] > 1 {
                let off = shape[1] * shape[2] * c;
                for t in 0..k * k {
                    v[off + ((t / k) * w + t % k) * c] = 7 << 13;
                }
            }
        }
        let (max, idx, t) = run_maxpool(&x, k, FRESH, 11);
        let (pmax, pidx) = plain_maxpool(&x, k);
        assert_eq!(max, pmax, "{shape:?}");
        assert_eq!(idx, pidx, "{shape:?}");
        let outputs = (x.len() / (k * k)) as u64;
        let steps = (k * k - 1) as u64;
        assert_eq!(t.total_bytes(), 744 * steps * outputs, "{shape:?}");
        assert_eq!(t.rounds, 9 * steps);
        // Reusing β's mask for the index selection (16 bytes less per step) and narrow_drelu.
        let (max2, idx2, t2) = run_maxpool(&x, k, REUSE, 12);
        assert_eq!((max2, idx2), (pmax, pidx));
        assert_eq!(
            t2.total_bytes(),
            steps * (88 * outputs + 3 * packed(63 * outputs))
        );
        assert_eq!(t2.rounds, 4 * steps);
    }
}

#[test]
fn dmaxpool_one_hot_both_algorithms() {
    let mut g = rng(13);
    for (shape, k) in [(vec![3, 4, 4, 2], 2), (vec![1, 6, 3, 2], 3)] {
        let x = random_fixed(&shape, 9.0, &mut g);
        let sh = shape.clone();
        let shares = split(x.as_slice(), 13);
        let r = run3(13, move |ctx: Ctx| {
            let (shares, sh) = (shares.clone(), sh.clone());
            async move {
                let t = mine(&ctx, &shares, &sh, 13);
                Ok(maxpool::dmaxpool(&ctx, &t, k, FRESH)
                    .await?
                    .share()
                    .cloned())
            }
        })
        .unwrap();
        let d = RingTensor::from_vec(&shape, open(&r.outputs));
        let (_, pidx) = plain_maxpool(&x, k);
        for t in 0..k * k {
            let part = d.pool_window(k, t);
            for (o, &i) in pidx.iter().enumerate() {
                assert_eq!(
                    part.as_slice()[o],
                    (i == t as u64) as u64,
                    "{shape:?} window {o} pos {t}"
                );
            }
        }
        let outputs = (x.len() / (k * k)) as u64;
        let n = (k * k) as u64;
        let maxpool_bytes = 744 * (n - 1) * outputs;
        if k == 2 {
            // Algorithm 10 after the maxpool: 2 words to P2, 2n words back, 2 rounds.
            assert_eq!(
                r.traffic.total_bytes(),
                maxpool_bytes + 16 * (n + 1) * outputs
            );
            assert_eq!(r.traffic.rounds, 9 * (n - 1) + 2);
        } else {
            // Algorithm 12: n more selections per step, no extra round.
            assert_eq!(
                r.traffic.total_bytes(),
                maxpool_bytes + 40 * n * (n - 1) * outputs
            );
            assert_eq!(r.traffic.rounds, 9 * (n - 1));
        }
    }
}

// ---------------------------------------------------------------- Division (Alg. 8)

#[test]
fn division_is_exact_long_division() {
    use securenn::protocol::securenn::division::Radix;
    let mut g = rng(14);
    let fp = securenn::fixed::FixedPoint::default();
    let mut ys: Vec<f64> = (0..40).map(|_| g.random_range(0.5..100.0)).collect();
    let mut xs: Vec<f64> = ys.iter().map(|&y| y * g.random_range(0.0..0.999)).collect();
    // Edges: 0 / y, x = y (a single positive class in the approximate softmax), 0 / 0, one
    // ulp over one ulp, x one ulp below y, the largest quotient bit patterns.
    let ulp = fp.ulp();
    for (x, y) in [
        (0.0, 3.0),
        (7.5, 7.5),
        (0.0, 0.0),
        (ulp, ulp),
        (0.0, ulp),
        (1000.0 - ulp, 1000.0),
        (1.0, 3.0),
        (2.0, 3.0),
    ] {
        xs.push(x);
        ys.push(y);
    }
    let n = xs.len();
    let x = fp.encode_tensor(&[n], &xs).unwrap();
    let y = fp.encode_tensor(&[n], &ys).unwrap();
    for (radix, bytes, rounds) in [
        (Radix::Two, 704 * 13, 9 * 13),
        (Radix::Four, 704 + 6 * 2032, 9 * 7),
    ] {
        let (sx, sy) = (split(x.as_slice(), 14), split(y.as_slice(), 15));
        let r = run3(14, move |ctx: Ctx| {
            let (sx, sy) = (sx.clone(), sy.clone());
            async move {
                let (a, b) = (mine(&ctx, &sx, &[n], 13), mine(&ctx, &sy, &[n], 13));
                Ok(division::divide_radix(&ctx, &a, &b, FRESH, radix)
                    .await?
                    .share()
                    .cloned())
            }
        })
        .unwrap();
        let q = open(&r.outputs);
        for i in 0..n {
            let (xi, yi) = (x.as_slice()[i] as u128, y.as_slice()[i] as u128);
            // Long division's quotient; x ≥ y (and 0 / 0) give all f bits set.
            let want = match yi {
                0 => (1 << 13) - 1,
                _ => ((xi << 13) / yi).min((1 << 13) - 1),
            };
            assert_eq!(q[i] as u128, want, "{radix:?}: {} / {}", xs[i], ys[i]);
        }
        assert_eq!(r.traffic.total_bytes(), bytes * n as u64, "{radix:?}");
        assert_eq!(r.traffic.rounds, rounds, "{radix:?}");
    }
}

// ---------------------------------------------------------------- Determinism and errors

#[test]
fn same_seed_same_shares_bytes_and_rounds() {
    let mut g = rng(15);
    let x = random_fixed(&[3, 4, 4, 2], 5.0, &mut g);
    let a = run_maxpool(&x, 2, FRESH, 16);
    let b = run_maxpool(&x, 2, FRESH, 16);
    assert_eq!(a.0, b.0);
    assert_eq!(a.2, b.2);
    let case = Case::new(Op::Relu, x.clone(), x.clone());
    let c = run_case(17, &case, SecureNn::default).unwrap();
    let d = run_case(17, &case, SecureNn::default).unwrap();
    let e = run_case(18, &case, SecureNn::default).unwrap();
    assert_eq!(c.outputs, d.outputs, "same seed, same shares");
    assert_ne!(
        c.outputs[0], e.outputs[0],
        "different seed, different shares"
    );
    assert_eq!(
        reconstruct(&c.outputs),
        reconstruct(&e.outputs),
        "same value"
    );
    assert_eq!(c.traffic, e.traffic);
}

#[test]
fn bad_pool_shapes_are_errors() {
    // A window larger than the input, and padding as wide as the kernel.
    let x = RingTensor::zeros(&[1, 3, 3, 1]);
    let too_wide = Window {
        pads: [0, 2, 0, 0],
        ..Window::square(2)
    };
    for w in [Window::square(4), too_wide] {
        let err = run_case(
            19,
            &Case::new(Op::MaxPool(w), x.clone(), x.clone()),
            SecureNn::default,
        )
        .unwrap_err();
        assert!(matches!(err, ProtocolError::Input { .. }), "{err}");
    }
}

// ---------------------------------------------------------------- Argmax, tree maxima, im2col conv

fn run_argmax(
    x: &RingTensor,
    policy: Costing,
    strategy: maxpool::MaxStrategy,
    seed: u64,
) -> (Vec<u64>, securenn_transports::MeterSnapshot) {
    let shape = x.shape().to_vec();
    let shares = split(x.as_slice(), seed);
    let r = run3(seed, move |ctx: Ctx| {
        let (shares, shape) = (shares.clone(), shape.clone());
        async move {
            let t = mine(&ctx, &shares, &shape, 13);
            Ok(maxpool::argmax(&ctx, &t, policy, strategy)
                .await?
                .share()
                .cloned())
        }
    })
    .unwrap();
    (open(&r.outputs), r.traffic)
}

#[test]
fn argmax_sequential_and_tree_match_plaintext() {
    use securenn::protocol::securenn::MaxStrategy::{AllPairs, Sequential, Tree};
    let mut g = rng(30);
    for b in [1usize, 128] {
        let mut x = random_fixed(&[b, 10], 20.0, &mut g);
        // Ties (the later index wins) and an all-negative row.
        let v = x.as_mut_slice();
        v[3] = 99 << 13;
        v[7] = 99 << 13;
        if b > 1 {
            for c in 0..10 {
                v[10 + c] = (-(1000i64 << 13) + c as i64 % 3) as u64;
            }
        }
        let want = securenn::protocol::Plaintext::argmax_rows(&x);
        let (seq, t1) = run_argmax(&x, FRESH, Sequential, 30);
        let (tree, t2) = run_argmax(&x, FRESH, Tree, 31);
        assert_eq!(seq, want, "sequential, batch {b}");
        assert_eq!(tree, want, "tree, batch {b}");
        // Both make n - 1 = 9 comparisons per row: the paper's 6,696 bytes per image.
        assert_eq!(t1.total_bytes(), 6696 * b as u64);
        assert_eq!(t2.total_bytes(), 6696 * b as u64);
        assert_eq!(t1.rounds, 9 * 9, "sequential: 9 steps");
        assert_eq!(t2.rounds, 9 * 4, "tree: ⌈log2 10⌉ = 4 levels");
        // All 45 pairs in one DReLU, then 9 wins multiplied in ⌈log2 9⌉ = 4 levels.
        let (all, t3) = run_argmax(&x, FRESH, AllPairs, 32);
        assert_eq!(all, want, "all pairs, batch {b}");
        assert_eq!(t3.rounds, 8 + 4, "all pairs");
        // 45 DReLUs, and 8 products of bits per candidate (9 -> 5 -> 3 -> 2 -> 1) at 40 B.
        assert_eq!(t3.total_bytes(), (45 * 664 + 10 * 8 * 40) * b as u64);
    }
    // Every row tied, a single column, two columns.
    for n in [1usize, 2, 3] {
        let x = RingTensor::filled(&[4, n], 5 << 13);
        let want = securenn::protocol::Plaintext::argmax_rows(&x);
        assert_eq!(run_argmax(&x, FRESH, AllPairs, 33).0, want, "n = {n}");
    }
}

#[test]
fn tree_maxpool_matches_sequential() {
    use securenn::protocol::securenn::MaxStrategy::Tree;
    let mut g = rng(32);
    let x = random_fixed(&[5, 4, 6, 3], 30.0, &mut g);
    let shape = x.shape().to_vec();
    let shares = split(x.as_slice(), 32);
    let r = run3(32, move |ctx: Ctx| {
        let (shares, shape) = (shares.clone(), shape.clone());
        async move {
            let t = mine(&ctx, &shares, &shape, 13);
            let p = maxpool::maxpool(&ctx, &t, &Window::square(2), FRESH, Tree).await?;
            Ok((p.max.share().cloned(), p.index.share().cloned()))
        }
    })
    .unwrap();
    let max: Vec<Option<RingTensor>> = r.outputs.iter().map(|o| o.0.clone()).collect();
    let idx: Vec<Option<RingTensor>> = r.outputs.iter().map(|o| o.1.clone()).collect();
    let (pmax, pidx) = plain_maxpool(&x, 2);
    assert_eq!((open(&max), open(&idx)), (pmax, pidx));
    assert_eq!(r.traffic.total_bytes(), 744 * 3 * 90);
    assert_eq!(r.traffic.rounds, 9 * 2);
}

/// The max alone (what inference needs): the same maxima as the plaintext reference, on a
/// tensor whose 2×2 windows leave a row and a column over, in the tree's 2 levels; each level
/// selects only the value, so it moves less than the max with its index.
#[test]
fn pool_max_without_the_index_is_exact_and_cheaper() {
    use securenn::protocol::securenn::MaxStrategy::Tree;
    let mut g = rng(34);
    let x = random_fixed(&[3, 5, 7, 2], 30.0, &mut g);
    let shape = x.shape().to_vec();
    let shares = split(x.as_slice(), 34);
    let run = |with_index: bool| {
        let (shares, shape) = (shares.clone(), shape.clone());
        run3(34, move |ctx: Ctx| {
            let (shares, shape) = (shares.clone(), shape.clone());
            async move {
                let t = mine(&ctx, &shares, &shape, 13);
                let w = Window::square(2);
                Ok(match with_index {
                    true => maxpool::maxpool(&ctx, &t, &w, REUSE, Tree).await?.max,
                    false => maxpool::pool_max(&ctx, &t, &w, REUSE, Tree).await?,
                }
                .share()
                .cloned())
            }
        })
        .unwrap()
    };
    let (lean, full) = (run(false), run(true));
    // The plaintext maxima of the windows that fit (3 × 2 × 3 × 2 of them).
    let cropped = RingTensor::from_vec(
        &[3, 4, 6, 2],
        (0..3 * 4 * 6 * 2)
            .map(|i| {
                let (b, r) = (i / 48, i % 48);
                let (h, r) = (r / 12, r % 12);
                x.as_slice()[b * 70 + h * 14 + r]
            })
            .collect(),
    );
    let (pmax, _) = plain_maxpool(&cropped, 2);
    assert_eq!(open(&lean.outputs), pmax);
    assert_eq!(open(&full.outputs), pmax);
    assert_eq!(lean.traffic.rounds, full.traffic.rounds);
    assert!(
        lean.traffic.total_bytes() < full.traffic.total_bytes(),
        "{} vs {}",
        lean.traffic.total_bytes(),
        full.traffic.total_bytes()
    );
}

/// The paper's convolution masks the im2col matrix: 8(2·|X_im2col| + 2|W| + |Z|) bytes.
#[test]
fn paper_conv_masks_the_im2col_matrix() {
    let mut g = rng(33);
    let case = Case::new(
        Op::Conv {
            stride: 1,
            padding: securenn::ring::Padding::Valid,
        },
        random_fixed(&[1, 28, 28, 1], 1.0, &mut g),
        random_fixed(&[5, 5, 1, 16], 1.0, &mut g),
    );
    let r = run_case(33, &case, SecureNn::paper).unwrap();
    let want = plain_case(&case, securenn::protocol::ReluKind::Exact).unwrap();
    assert!(max_ulp_diff(&reconstruct(&r.outputs), &want) <= 1);
    // Network B's first layer in the paper: 310,528 bytes.
    assert_eq!(r.traffic.total_bytes(), 310_528);
}

// ---------------------------------------------------------------- P1's view with derived deals

/// P2 sends P0 nothing in DReLU (P0 derives its dealt shares from the P0-P2 seed), and what P1
/// receives (value - derived share) still looks uniform: P1's Z_67 bit shares of the mask's low
/// bits pass a chi-square test, and its shares of d are balanced.
#[test]
fn p1_sees_uniform_dealt_shares_when_p0_derives_its_own() {
    let n = 2000;
    let shares = split(&vec![0u64; n], 70);
    let (_, log) = run3_recorded(70, move |ctx: Ctx| {
        let shares = shares.clone();
        async move {
            relu::drelu(&ctx, &mine(&ctx, &shares, &[n], 13), REUSE).await?;
            Ok(())
        }
    })
    .unwrap();
    let dealt = |to| log.iter().filter(|e| e.from == P2 && e.to == to).count();
    assert_eq!(dealt(P0), 0, "P0 derives what P2 deals it");
    assert_eq!(
        dealt(P1),
        2,
        "P1 gets the mask's bit shares and its share of d"
    );
    let deal = log.iter().find(|e| e.from == P2 && e.to == P1).unwrap();
    let width = L_BITS - 1;
    let len = securenn::ring::z67::packed_len(n * width);
    assert_eq!(deal.payload.len(), len);
    let bits = securenn::ring::Z67Vec::read_packed(&deal.payload, n * width).unwrap();
    let mut counts = [0f64; 67];
    for &b in bits.as_slice() {
        counts[b as usize] += 1.0;
    }
    let expected = bits.len() as f64 / 67.0;
    let chi: f64 = counts
        .iter()
        .map(|c| (c - expected).powi(2) / expected)
        .sum();
    // 66 degrees of freedom: the 99.999th percentile is about 120.
    assert!(chi < 120.0, "chi-square {chi}");
    let d = log.iter().rfind(|e| e.from == P2 && e.to == P1).unwrap();
    let ones: u32 = d.payload.iter().map(|b| b.count_ones()).sum();
    let total = (d.payload.len() * 8) as f64;
    // Binomial(128000, 1/2): 6 standard deviations is about 1,073.
    assert!(
        (ones as f64 - total / 2.0).abs() < 1100.0,
        "{ones} of {total}"
    );
}
