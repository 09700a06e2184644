//! Products with an operand one server knows in the clear (SecureNN, optimised costing): results
//! against the plaintext fixed-point reference for every placement of the operands, exact bytes
//! (|X| + |out| per query, |W| once), and what the receivers see looks uniform.

mod common;

use common::*;
use securenn::channel::{P0, P1, P2, PartyId};
use securenn::protocol::{Protocol, ReluKind, SecureNn};
use securenn::ring::{Padding, RingTensor};

fn snn() -> SecureNn {
    SecureNn::optimised()
}

/// Secure (reconstructed) and plaintext results of `case` on SecureNN, and the bytes moved.
fn both(seed: u64, case: &Case) -> (RingTensor, RingTensor, u64) {
    let r = run_case(seed, case, snn).unwrap();
    assert!(r.outputs[2].is_none(), "the helper holds no share");
    let plain = plain_case(case, ReluKind::Exact).unwrap();
    (reconstruct(&r.outputs), plain, r.traffic.total_bytes())
}

/// Every placement of (x, w) owners: x shared (input by the helper), known to the other server,
/// known to the same server; w known to P0 or P1; and the known operand first.
fn placements() -> Vec<(PartyId, PartyId)> {
    vec![
        (P2, P0),
        (P2, P1),
        (P1, P0),
        (P0, P1),
        (P0, P0),
        (P1, P1),
        (P0, P2),
        (P1, P2),
    ]
}

/// Whether the product is computed by one server alone (exact truncation).
fn local(owners: (PartyId, PartyId)) -> bool {
    owners.0 == owners.1
}

fn edge_values(shape: &[usize], g: &mut Prg) -> RingTensor {
    // 0, -1 ulp, +1 ulp, ±1.0, large fixed-point values, negatives, then random.
    let fp = securenn::fixed::FixedPoint::default();
    let one = fp.encode(1.0).unwrap();
    let big = fp.encode(3000.0).unwrap();
    let edges = [
        0,
        u64::MAX,
        1,
        one,
        one.wrapping_neg(),
        big,
        big.wrapping_neg(),
        fp.encode(-0.5).unwrap(),
    ];
    let r = random_fixed(shape, 50.0, g);
    let v: Vec<u64> = r
        .as_slice()
        .iter()
        .enumerate()
        .map(|(i, &x)| if i < edges.len() { edges[i] } else { x })
        .collect();
    RingTensor::from_vec(shape, v)
}

fn check(seed: u64, op: Op, x: RingTensor, y: RingTensor, frac: (u32, u32)) {
    for owners in placements() {
        let case = Case {
            op: op.clone(),
            x: x.clone(),
            y: y.clone(),
            frac,
            owners,
        };
        let (s, p, bytes) = both(seed, &case);
        let exact = local(owners) || frac.0 == 0 || frac.1 == 0;
        let d = max_ulp_diff(&s, &p);
        if exact {
            assert_eq!(d, 0, "{op:?} owners {owners:?}: not exact");
        } else {
            assert!(d <= 1, "{op:?} owners {owners:?}: {d} ulp");
        }
        if local(owners) && owners.0 != P2 {
            assert_eq!(bytes, 0, "{op:?} owners {owners:?}: computed locally");
        }
    }
}

#[test]
fn matmul_agrees_with_plaintext_for_every_placement() {
    let mut g = rng(1);
    for (m, n, v) in [(1, 13, 7), (5, 1, 3), (17, 31, 9), (128, 20, 10)] {
        let x = edge_values(&[m, n], &mut g);
        let w = edge_values(&[n, v], &mut g).map(|e| {
            // Keep products in range: weights within ±50 (edges: large ones shrunk).
            let f = e as i64;
            if f.unsigned_abs() > 50 << 13 {
                (f >> 6) as u64
            } else {
                e
            }
        });
        check(m as u64, Op::Matmul, x, w, (13, 13));
    }
}

#[test]
fn conv2d_agrees_with_plaintext_for_every_placement() {
    let mut g = rng(2);
    for (batch, stride, padding) in [
        (1, 1, Padding::Valid),
        (3, 2, Padding::Same),
        (2, 1, Padding::Explicit([1, 0, 2, 1])),
    ] {
        let x = edge_values(&[batch, 7, 6, 3], &mut g);
        let f = random_fixed(&[3, 2, 3, 4], 2.0, &mut g);
        check(
            batch as u64 + 10,
            Op::Conv { stride, padding },
            x,
            f,
            (13, 13),
        );
    }
}

#[test]
fn elementwise_agrees_with_plaintext_for_every_placement() {
    let mut g = rng(3);
    for shape in [vec![1, 9], vec![64, 5, 3]] {
        let x = edge_values(&shape, &mut g);
        let y = edge_values(&shape, &mut g);
        check(shape[0] as u64 + 20, Op::Mul, x, y, (13, 13));
    }
}

/// An integer operand: no truncation, so the result is exact wherever the operands live.
#[test]
fn integer_products_are_exact() {
    let mut g = rng(4);
    let x = random_fixed(&[6, 5], 3.0, &mut g);
    let w = RingTensor::from_vec(&[5, 2], vec![1, 2, 3, 0, 5, 6, 7, 8, 9, u64::MAX]);
    check(4, Op::Matmul, x, w, (13, 0));
}

/// Inputs of a server are known to it; the helper's are ordinary shares.
#[test]
fn server_inputs_are_known_to_their_owner() {
    let x = RingTensor::from_vec(&[3], vec![5, 6, 7]);
    for owner in [P0, P1, P2] {
        let xs = x.clone();
        let r = run3(30, move |ctx| {
            let x = xs.clone();
            async move {
                let p = snn();
                let me = ctx.me();
                let t = p
                    .input(&ctx, owner, (me == owner).then_some(&x), &[3], 13)
                    .await?;
                Ok((t.known_by(), HasShare::share(&t)))
            }
        })
        .unwrap();
        for (i, (known, share)) in r.outputs.iter().enumerate() {
            if owner == P2 {
                assert_eq!(*known, None);
            } else {
                assert_eq!(*known, Some(owner), "party {i}");
                match PartyId(i as u8) {
                    P2 => assert!(share.is_none()),
                    m if m == owner => assert_eq!(share.as_ref(), Some(&x)),
                    _ => assert_eq!(share.as_ref(), Some(&RingTensor::zeros(&[3]))),
                }
            }
        }
        assert_eq!(r.traffic.total_bytes(), if owner == P2 { 24 } else { 0 });
    }
    // The paper's accounting shares server inputs as before.
    let r = run3(31, move |ctx| {
        let x = RingTensor::from_vec(&[3], vec![5, 6, 7]);
        async move {
            let p = SecureNn::paper();
            let me = ctx.me();
            let t = p
                .input(&ctx, P0, (me == P0).then_some(&x), &[3], 13)
                .await?;
            Ok(t.known_by())
        }
    })
    .unwrap();
    assert!(r.outputs.iter().all(|k| k.is_none()));
}

/// A dense layer x·W with W known to the model owner: the first query moves
/// (mn + mv + nv)·8 bytes, later ones (mn + mv)·8, whether x is shared or the data owner's.
#[test]
fn dense_layer_bytes_cold_and_warm() {
    let mut g = rng(5);
    for (m, n, v) in [(1, 784, 128), (7, 13, 5)] {
        for (x_owner, k) in [(P0, P1), (P2, P1), (P1, P0)] {
            let x = random_fixed(&[m, n], 1.0, &mut g);
            let w = random_fixed(&[n, v], 1.0, &mut g);
            let queries = |q: usize| {
                let (x, w) = (x.clone(), w.clone());
                run3(40, move |ctx| {
                    let (x, w) = (x.clone(), w.clone());
                    async move {
                        let p = snn();
                        let me = ctx.me();
                        let wt = p
                            .input(&ctx, k, (me == k).then_some(&w), &[n, v], 13)
                            .await?;
                        let mut last = None;
                        for _ in 0..q {
                            let xt = p
                                .input(&ctx, x_owner, (me == x_owner).then_some(&x), &[m, n], 13)
                                .await?;
                            last = Some(p.matmul(&ctx, &xt, &wt).await?);
                        }
                        Ok(HasShare::share(&last.unwrap()))
                    }
                })
                .unwrap()
            };
            let input = if x_owner == P2 { m * n * 8 } else { 0 } as u64;
            let (cold, two) = (queries(1), queries(2));
            let o = if k == P0 { P1 } else { P0 };
            let (mn, mv, nv) = ((m * n * 8) as u64, (m * v * 8) as u64, (n * v * 8) as u64);
            assert_eq!(cold.traffic.total_bytes() - input, mn + mv + nv);
            assert_eq!(cold.traffic.link_bytes(o, k), mn);
            assert_eq!(cold.traffic.link_bytes(k, P2), nv);
            // (P2's input sends P1 its share.)
            let to_p1 = if k == P1 { input } else { 0 };
            assert_eq!(cold.traffic.link_bytes(P2, k), mv + to_p1);
            assert_eq!(cold.traffic.link_bytes(k, o), 0, "O receives nothing");
            let warm = two.traffic.total_bytes() - cold.traffic.total_bytes() - input;
            assert_eq!(warm, mn + mv, "{m}x{n}x{v} x from {x_owner}, W at {k}");
            assert_eq!(two.traffic.link_bytes(k, P2), nv, "F goes once");
            let want = x.matmul(&w).map(|e| ((e as i64) >> 13) as u64);
            assert!(max_ulp_diff(&reconstruct(&two.outputs), &want) <= 1);
        }
    }
}

/// Fraction of one bits over a tensor's 64-bit words.
fn ones_fraction(t: &RingTensor) -> f64 {
    let ones: u64 = t.as_slice().iter().map(|v| v.count_ones() as u64).sum();
    ones as f64 / (64 * t.len()) as f64
}

fn words(payload: &[u8]) -> RingTensor {
    let v: Vec<u64> = payload
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    RingTensor::from_vec(&[v.len()], v)
}

/// What K receives (E and the helper's correction) and what the helper receives (F) look
/// uniformly random even for constant operands: bit balance within 5 sigma over 64 × 4096
/// bits, and E is not the other server's share.
#[test]
fn receivers_see_uniform_values() {
    let n = 4096;
    for k in [P0, P1] {
        let o = if k == P0 { P1 } else { P0 };
        // x all zeros known to O (so X_O = 0), w all ones known to K.
        let (_, log) = run3_recorded(50, move |ctx| async move {
            let p = snn();
            let me = ctx.me();
            let x = RingTensor::zeros(&[1, n]);
            let w = RingTensor::filled(&[n, 1], 1 << 13);
            let xt = p
                .input(&ctx, o, (me == o).then_some(&x), &[1, n], 13)
                .await?;
            let wt = p
                .input(&ctx, k, (me == k).then_some(&w), &[n, 1], 13)
                .await?;
            let e = p.mul(&ctx, &p.reshape(&xt, &[n, 1]), &wt).await?;
            Ok(HasShare::share(&e))
        })
        .unwrap();
        let got = |from: PartyId, to: PartyId| -> Vec<RingTensor> {
            log.iter()
                .filter(|e| e.from == from && e.to == to)
                .map(|e| words(&e.payload))
                .collect()
        };
        let (e, c, f) = (got(o, k), got(P2, k), got(k, P2));
        assert_eq!((e.len(), c.len(), f.len()), (1, 1, 1), "one message each");
        assert!(
            got(k, o).is_empty() && got(P2, o).is_empty(),
            "O receives nothing"
        );
        let sigma = 5.0 * (0.25 / (64 * n) as f64).sqrt();
        for (what, t) in [("E", &e[0]), ("correction", &c[0]), ("F", &f[0])] {
            assert_eq!(t.len(), n, "{what}");
            let b = ones_fraction(t);
            assert!((b - 0.5).abs() < sigma, "{what} at K={k}: {b} ones");
            assert!(
                t.as_slice().iter().filter(|&&v| v == 0).count() < 2,
                "{what} has zeros"
            );
        }
        assert_ne!(e[0], RingTensor::zeros(&[n]), "E is not X_O");
    }
}

/// A weight used in a later query is not sent again: the helper's F and the other server's B0
/// are memoised on the tensor, within a session's jobs too.
#[test]
fn warm_queries_send_nothing_weight_sized() {
    let mut g = rng(6);
    let x = random_fixed(&[2, 50], 1.0, &mut g);
    let w = random_fixed(&[50, 40], 1.0, &mut g);
    let (x2, w2) = (x.clone(), w.clone());
    let r = run3(60, move |ctx| {
        let (x, w) = (x2.clone(), w2.clone());
        async move {
            let p = snn();
            let me = ctx.me();
            let wt = p
                .input(&ctx, P1, (me == P1).then_some(&w), &[50, 40], 13)
                .await?;
            let mut outs = Vec::new();
            for _ in 0..3 {
                let xt = p
                    .input(&ctx, P0, (me == P0).then_some(&x), &[2, 50], 13)
                    .await?;
                let z = p.matmul(&ctx, &xt, &wt).await?;
                outs.push(p.reveal(&ctx, &z, P0).await?);
            }
            Ok(outs)
        }
    })
    .unwrap();
    let want = x.matmul(&w).map(|e| ((e as i64) >> 13) as u64);
    for z in r.outputs[0].iter() {
        assert!(max_ulp_diff(z.as_ref().unwrap(), &want) <= 1);
    }
    assert_eq!(r.traffic.link_bytes(P1, P2), 50 * 40 * 8);
    // Per query: E (2×50), the correction (2×40), the reveal's share (2×40).
    assert_eq!(
        r.traffic.total_bytes(),
        (50 * 40 + 3 * (2 * 50 + 2 * 40 + 2 * 40)) * 8
    );
}
