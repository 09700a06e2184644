//! Pond against the plaintext reference: every operation on random tensors of odd shapes at
//! batch 1 and 64, exact costs from the transport meter, determinism and privacy of shares.

mod common;

use common::*;
use securenn::channel::{P0, P1, P2};
use securenn::protocol::{Pond, ProtocolError, ReluKind, TFE_RELU_9};
use securenn::ring::{Padding, RingTensor, Window};

fn pond() -> Pond {
    Pond::default()
}

/// Secure and plaintext results of `case`, and the secure run's report.
fn both(
    seed: u64,
    case: &Case,
) -> (
    RingTensor,
    RingTensor,
    securenn::party::RunReport<Option<RingTensor>>,
) {
    let r = run_case(seed, case, pond).unwrap();
    let secure = reconstruct(&r.outputs);
    assert!(r.outputs[2].is_none(), "the producer holds no share");
    let plain = plain_case(case, ReluKind::Polynomial(TFE_RELU_9.to_vec())).unwrap();
    (secure, plain, r)
}

/// Ops without truncation are exact.
#[test]
fn linear_ops_are_exact() {
    let mut g = rng(1);
    for batch in [1, 64] {
        let x = random_fixed(&[batch, 6, 4, 3], 100.0, &mut g);
        let y = random_fixed(&[batch, 6, 4, 3], 100.0, &mut g);
        let bias = random_fixed(&[3], 5.0, &mut g);
        for (op, y) in [
            (Op::Add, y.clone()),
            (Op::Sub, y.clone()),
            (Op::AddBias, bias),
            (Op::SumPool(Window::square(2)), y.clone()),
            (Op::AddPublic(-3.25), y.clone()),
            (Op::Reshape(vec![batch, 72]), y.clone()),
        ] {
            let (s, p, r) = both(batch as u64, &Case::new(op.clone(), x.clone(), y));
            assert_eq!(s, p, "{op:?} batch {batch}");
            assert_eq!(r.traffic.total_bytes(), 0, "{op:?} is local");
        }
    }
}

/// Products are within one ulp of the plaintext (the local truncation bound; values here are
/// below 2^22 before truncation, so the failure probability is 2^-41 per element).
#[test]
fn products_are_within_one_ulp() {
    let mut g = rng(2);
    for batch in [1, 64] {
        let cases = [
            Case::new(
                Op::Mul,
                random_fixed(&[batch, 7, 3], 8.0, &mut g),
                random_fixed(&[batch, 7, 3], 8.0, &mut g),
            ),
            Case::new(
                Op::Matmul,
                random_fixed(&[batch, 13], 4.0, &mut g),
                random_fixed(&[13, 7], 4.0, &mut g),
            ),
            Case::new(
                Op::Conv {
                    stride: 2,
                    padding: Padding::Same,
                },
                random_fixed(&[batch, 9, 7, 3], 2.0, &mut g),
                random_fixed(&[3, 3, 3, 5], 1.0, &mut g),
            ),
            Case::new(
                Op::Conv {
                    stride: 1,
                    padding: Padding::Valid,
                },
                random_fixed(&[batch, 5, 6, 2], 2.0, &mut g),
                random_fixed(&[5, 2, 2, 1], 1.0, &mut g),
            ),
        ];
        for case in cases {
            let (s, p, _) = both(batch as u64 + 10, &case);
            let d = max_ulp_diff(&s, &p);
            assert!(d <= 1, "{:?} batch {batch}: {d} ulp", case.op);
        }
    }
}

/// An integer operand (0 fractional bits) needs no truncation: exact.
#[test]
fn integer_products_are_exact() {
    let mut g = rng(3);
    let mut case = Case::new(
        Op::Matmul,
        random_fixed(&[4, 5], 3.0, &mut g),
        RingTensor::from_vec(&[5, 2], vec![1, 2, 3, 4, 5, 6, 7, 8, 9, u64::MAX]),
    );
    case.frac = (13, 0);
    let (s, p, _) = both(3, &case);
    assert_eq!(s, p);
}

/// Public constants, including Pond's tiny x⁸ coefficient: a pre-shift, a product and a
/// truncation, so within 2 ulp.
#[test]
fn public_constant_products() {
    let mut g = rng(4);
    let x = random_fixed(&[64, 5], 50.0, &mut g);
    for c in [
        0.5,
        -0.25,
        0.11217537671414643,
        3.0,
        -2.1097433984e-08 * 1e6,
        0.0,
    ] {
        let (s, p, _) = both(4, &Case::new(Op::MulPublic(c), x.clone(), x.clone()));
        let d = max_ulp_diff(&s, &p);
        assert!(d <= 2, "x * {c}: {d} ulp");
    }
}

/// The polynomial ReLU: 5 products and 5 constant products, each adding at most an ulp, scaled by
/// the coefficients; within 16 ulp of the plaintext polynomial for |x| <= 4.
#[test]
fn polynomial_relu_matches_plaintext_polynomial() {
    let mut g = rng(5);
    for batch in [1, 64] {
        let x = random_fixed(&[batch, 3, 5], 4.0, &mut g);
        let (s, p, r) = both(5, &Case::new(Op::Relu, x.clone(), x));
        let d = max_ulp_diff(&s, &p);
        assert!(d <= 16, "batch {batch}: {d} ulp");
        // x², x⁴, x⁶ mask one tensor each (2 words per element), x⁸ reuses x⁴'s mask; four
        // triples (1 word each): 10 words per element, in three rounds.
        assert_eq!(r.traffic.total_bytes(), 10 * 8 * (batch * 15) as u64);
        assert_eq!(r.traffic.rounds, 3);
    }
}

#[test]
fn average_pooling() {
    let mut g = rng(6);
    for batch in [1, 64] {
        let x = random_fixed(&[batch, 4, 6, 3], 20.0, &mut g);
        let (s, p, r) = both(
            6,
            &Case::new(Op::AvgPool(Window::square(2), false), x.clone(), x),
        );
        assert!(max_ulp_diff(&s, &p) <= 1);
        assert_eq!(r.traffic.total_bytes(), 0);
    }
}

/// Pond refuses max pooling with an error naming the operation.
#[test]
fn max_pooling_is_refused_by_name() {
    let mut g = rng(7);
    let x = random_fixed(&[1, 4, 4, 1], 1.0, &mut g);
    let err = run_case(
        7,
        &Case::new(Op::MaxPool(Window::square(2)), x.clone(), x),
        pond,
    )
    .unwrap_err();
    match err {
        ProtocolError::Unsupported { op, reason } => {
            assert!(op.contains("op"), "{op}");
            assert!(reason.contains("securenn"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }
}

/// A matmul m×n·n×v of two fresh tensors moves exactly (2mn + 2nv + mv)·8 bytes, in one round:
/// each server sends its masked shares of X and Y (mn + nv words), the producer sends server 1 its
/// dense triple share (mv words), and nothing else (seeds were agreed at setup: 96 bytes).
#[test]
fn matmul_bytes_are_exact() {
    let mut g = rng(8);
    for (m, n, v) in [(1, 784, 128), (128, 128, 10), (3, 5, 7), (1, 1, 1)] {
        let case = Case::new(
            Op::Matmul,
            random_fixed(&[m, n], 1.0, &mut g),
            random_fixed(&[n, v], 1.0, &mut g),
        );
        let r = run_case(8, &case, pond).unwrap();
        let (m, n, v) = (m as u64, n as u64, v as u64);
        assert_eq!(
            r.traffic.total_bytes(),
            (2 * m * n + 2 * n * v + m * v) * 8,
            "{m}x{n}x{v}"
        );
        assert_eq!(r.traffic.link_bytes(P0, P1), (m * n + n * v) * 8);
        assert_eq!(r.traffic.link_bytes(P1, P0), (m * n + n * v) * 8);
        assert_eq!(r.traffic.link_bytes(P2, P1), m * v * 8);
        assert_eq!(r.traffic.rounds, 1);
        assert_eq!(r.setup.total_bytes(), 96);
    }
}

/// A tensor used twice is masked once: x·w then x·w' costs 2|x| once.
#[test]
fn masks_are_reused() {
    let mut g = rng(9);
    let x = random_fixed(&[2, 3], 1.0, &mut g);
    let w = random_fixed(&[3, 4], 1.0, &mut g);
    let r = run3(9, move |ctx| {
        let (x, w) = (x.clone(), w.clone());
        async move {
            use securenn::protocol::Protocol;
            let p = Pond::default();
            let me = ctx.me();
            let tx = p
                .input(&ctx, P0, (me == P0).then_some(&x), &[2, 3], 13)
                .await?;
            let tw = p
                .input(&ctx, P1, (me == P1).then_some(&w), &[3, 4], 13)
                .await?;
            p.matmul(&ctx, &tx, &tw).await?;
            p.matmul(&ctx, &tx, &tw).await?;
            Ok(())
        }
    })
    .unwrap();
    // First product: 2·6 + 2·12 + 8 words; second: only the triple share, 8 words.
    assert_eq!(r.traffic.total_bytes(), (12 + 24 + 8 + 8) * 8);
    assert_eq!(r.traffic.rounds, 1, "the second product needs no exchange");
}

/// Inputs from each owner: servers share through their common PRG (no bytes), the producer
/// sends server 1 one word per element.
#[test]
fn input_costs_by_owner() {
    let mut g = rng(10);
    let x = random_fixed(&[5, 3], 9.0, &mut g);
    for (owner, bytes) in [(P0, 0), (P1, 0), (P2, 15 * 8)] {
        let mut case = Case::new(Op::Add, x.clone(), x.clone());
        case.owners = (owner, owner);
        let r = run_case(10, &case, pond).unwrap();
        assert_eq!(r.traffic.total_bytes(), 2 * bytes, "owner {owner}");
        assert_eq!(reconstruct(&r.outputs), x.add(&x));
    }
}

/// Same seed: identical shares, bytes and rounds. Different seed: different shares, same value.
#[test]
fn determinism_by_seed() {
    let mut g = rng(11);
    let case = Case::new(
        Op::Matmul,
        random_fixed(&[3, 4], 2.0, &mut g),
        random_fixed(&[4, 2], 2.0, &mut g),
    );
    let mut int_case = case.clone();
    int_case.frac = (0, 0);
    let a = run_case(42, &int_case, pond).unwrap();
    let b = run_case(42, &int_case, pond).unwrap();
    let c = run_case(43, &int_case, pond).unwrap();
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.traffic, b.traffic);
    assert_ne!(
        a.outputs[0], c.outputs[0],
        "a different seed gives different shares"
    );
    assert_eq!(reconstruct(&a.outputs), reconstruct(&c.outputs));
    assert_eq!(a.traffic, c.traffic);
    // With truncation the same seed still reproduces every share exactly.
    let d = run_case(7, &case, pond).unwrap();
    let e = run_case(7, &case, pond).unwrap();
    assert_eq!(d.outputs, e.outputs);
}

/// A server's share of a constant input is uniform (bit balance over 64 × 4096 bits).
#[test]
fn input_shares_look_uniform() {
    let x = RingTensor::filled(&[4096], 1 << 13);
    for owner in [P0, P2] {
        let mut case = Case::new(Op::Add, x.clone(), RingTensor::zeros(&[4096]));
        case.owners = (owner, P1);
        let r = run_case(12, &case, pond).unwrap();
        for share in [
            r.outputs[0].as_ref().unwrap(),
            r.outputs[1].as_ref().unwrap(),
        ] {
            for bit in 0..64 {
                let ones = share
                    .as_slice()
                    .iter()
                    .filter(|&&v| v >> bit & 1 == 1)
                    .count();
                // 5 sigma around 2048 (sigma = 32).
                assert!(
                    (ones as i64 - 2048).abs() < 160,
                    "owner {owner} bit {bit}: {ones}"
                );
            }
        }
    }
}

/// Bad shapes are typed errors naming the operation, not panics.
#[test]
fn bad_shapes_are_errors() {
    let mut g = rng(13);
    let x = random_fixed(&[2, 3], 1.0, &mut g);
    for op in [
        Op::Matmul,
        Op::Conv {
            stride: 1,
            padding: Padding::Valid,
        },
        Op::AvgPool(Window::square(2), false),
    ] {
        let err = run_case(13, &Case::new(op.clone(), x.clone(), x.clone()), pond).unwrap_err();
        assert!(matches!(err, ProtocolError::Input { .. }), "{op:?}: {err}");
    }
    let mut case = Case::new(Op::Add, x.clone(), x.clone());
    case.frac = (13, 0);
    assert!(matches!(
        run_case(13, &case, pond).unwrap_err(),
        ProtocolError::Input { .. }
    ));
}

// ------------------------------------------------------------- the helper as output receiver

/// What P2 learns of the model owner's operand y when it owns x, receives x·y, and replays its
/// own steps as the helper: it derives the masks a = a0 + a1, b = b0 + b1 and the triple share
/// c1 it dealt (from its pair seeds, known here from the session seed), opens α = x − a from its
/// own x, and solves P1's output share z1 = α·b1 + a1·β + c1 for β = y − b. Returns how many
/// elements it recovered exactly, and how many in their low 32 bits (where a1 has at most 32
/// trailing zero bits, z1 determines β modulo 2^(64 − zeros)).
fn helper_recovers_operand<P: securenn::protocol::Protocol + Clone + Send + 'static>(
    protocol: P,
    seed: u64,
    n: usize,
) -> (usize, usize)
where
    P::Tensor: 'static,
{
    use securenn::share::{derive_bytes, derive_prg};
    let mut g = rng(seed);
    let x = RingTensor::random(&[n], &mut g)
        .map(|v| v % 2001)
        .sub(&RingTensor::filled(&[n], 1000));
    let y = RingTensor::random(&[n], &mut g)
        .map(|v| v % 2001)
        .sub(&RingTensor::filled(&[n], 1000));
    let (xs, ys) = (x.clone(), y.clone());
    let (outs, log) = run3_recorded(seed, move |ctx| {
        let (p, x, y) = (protocol.clone(), xs.clone(), ys.clone());
        async move {
            let me = ctx.me();
            // Integer operands: no truncation, so the product's shares are exactly linear.
            let xt = p.input(&ctx, P2, (me == P2).then_some(&x), &[n], 0).await?;
            let yt = p.input(&ctx, P1, (me == P1).then_some(&y), &[n], 0).await?;
            let z = p.mul(&ctx, &xt, &yt).await?;
            p.reveal(&ctx, &z, P2).await
        }
    })
    .unwrap();
    assert_eq!(outs[2].as_ref().unwrap(), &x.mul(&y), "P2 gets the product");
    // P2's seeds: the lower party of each pair picks the pair seed (party/setup.rs).
    let s02 = derive_bytes(seed, "P0/pair02");
    let s12 = derive_bytes(seed, "P1/pair12");
    let draw = |s: &[u8; 32], label: &str| RingTensor::random(&[n], &mut derive_prg(s, label));
    let (a0, a1) = (
        draw(&s02, "test/mul/mask@02#0"),
        draw(&s12, "test/mul/mask@12#0"),
    );
    let (b0, b1) = (
        draw(&s02, "test/mul/mask@02#1"),
        draw(&s12, "test/mul/mask@12#1"),
    );
    let c0 = draw(&s02, "test/mul/triple@02#0");
    let c1 = a0.add(&a1).mul(&b0.add(&b1)).sub(&c0);
    let alpha = x.sub(&a0.add(&a1));
    let z1 = log
        .iter()
        .find(|e| e.from == P1 && e.to == P2 && e.key == "test/reveal#0")
        .expect("P1 reveals its share to P2");
    let z1 = RingTensor::from_vec(
        &[n],
        z1.payload
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    );
    // a1·β = z1 − α·b1 − c1.
    let rhs = z1.sub(&alpha.mul(&b1)).sub(&c1);
    let b = b0.add(&b1);
    let (mut exact, mut low32) = (0, 0);
    for i in 0..n {
        let (a1, rhs) = (a1.as_slice()[i], rhs.as_slice()[i]);
        if a1 == 0 {
            continue;
        }
        let zeros = a1.trailing_zeros();
        if zeros > 32 || rhs.trailing_zeros() < zeros {
            continue;
        }
        // β ≡ (rhs / 2^zeros) · (a1 / 2^zeros)^-1 modulo 2^(64 − zeros).
        let beta = (rhs >> zeros).wrapping_mul(inverse_odd(a1 >> zeros));
        let guess = beta.wrapping_add(b.as_slice()[i]);
        let mask = u64::MAX >> zeros;
        if guess & mask == y.as_slice()[i] & mask {
            low32 += 1;
            if zeros == 0 {
                exact += 1;
            }
        }
    }
    (exact, low32)
}

/// The inverse of an odd number modulo 2^64 (Newton's iteration).
fn inverse_odd(a: u64) -> u64 {
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

/// Finding 1 of the security review: Pond revealed output shares as the product left them, so
/// the helper, receiving the output (`--data-owner 2`), solved P1's share for the model owner's
/// operand (about half of the elements exactly, all in their low 32 bits). Every reveal now
/// re-randomises the shares with a P0-P1 zero share first: the helper recovers nothing, in
/// either protocol.
#[test]
fn helper_as_output_receiver_learns_only_the_output() {
    let n = 4096;
    let (exact, low32) = helper_recovers_operand(pond(), 11, n);
    assert_eq!(
        (exact, low32),
        (0, 0),
        "Pond: P2 recovered y from P1's output share"
    );
    let (exact, low32) = helper_recovers_operand(securenn::protocol::SecureNn::default(), 12, n);
    assert_eq!(
        (exact, low32),
        (0, 0),
        "SecureNN: P2 recovered y from P1's output share"
    );
}
