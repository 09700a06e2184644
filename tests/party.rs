//! The party layer: routing by rendezvous key, malformed messages, missing peers, causal rounds.

mod common;

use common::*;
use securenn::channel::{Ctx, P0, P1, P2, ProtocolError};
use securenn::party::{LocalCluster, PartyConfig, SeedSource, spmd};
use securenn::ring::{RingTensor, Z67Vec};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A payload of the wrong length, or with values outside its ring, is a typed error that names
/// the sender and the rendezvous key.
#[test]
fn malformed_payloads_name_sender_and_key() {
    let err = run3(1, |ctx: Ctx| async move {
        let c = ctx.child("bad");
        match ctx.me() {
            P0 => c.send(P1, &RingTensor::zeros(&[3]))?,
            P1 => {
                c.recv::<RingTensor>(P0, &vec![4]).await?;
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap_err();
    match err {
        ProtocolError::Malformed { from, key, reason } => {
            assert_eq!(from, P0);
            assert!(key.contains("bad"), "{key}");
            assert!(reason.contains("expected 32 bytes, got 24"), "{reason}");
        }
        e => panic!("unexpected {e}"),
    }
    let err = run3(2, |ctx: Ctx| async move {
        match ctx.me() {
            P2 => ctx.send(P0, &RingTensor::filled(&[1], 200))?,
            P0 => {
                // One byte per Z_67 value, 8 bytes arrive: length mismatch; then a value >= 67.
                let _ = ctx.recv::<Z67Vec>(P2, &8).await?;
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, ProtocolError::Malformed { from, reason, .. } if *from == P2 && reason.contains("200")),
        "{err}"
    );
}

/// A party that never sends makes its peer fail within the configured timeout, naming it.
#[test]
fn missing_peer_times_out_with_its_name() {
    let config = PartyConfig {
        recv_timeout: Duration::from_millis(300),
        ..PartyConfig::default()
    };
    let t0 = Instant::now();
    let err = LocalCluster::run_once(
        config,
        SeedSource::Fixed(3),
        "test",
        spmd(|ctx: Ctx| async move {
            if ctx.me() == P1 {
                ctx.recv::<RingTensor>(P2, &vec![1]).await?;
            }
            Ok(())
        }),
    )
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    match err {
        ProtocolError::Timeout {
            party, peer, key, ..
        } => {
            assert_eq!((party, peer), (P1, P2));
            assert!(key.starts_with("test"), "{key}");
            let msg = ProtocolError::Timeout {
                party,
                peer,
                key,
                after: Duration::from_millis(300),
            }
            .to_string();
            assert!(msg.contains("P1 waited") && msg.contains("for P2"), "{msg}");
        }
        e => panic!("unexpected {e}"),
    }
}

/// The most telling error wins: a party's own failure, not the timeouts it caused elsewhere.
#[test]
fn root_cause_is_reported() {
    let config = PartyConfig {
        recv_timeout: Duration::from_millis(200),
        ..PartyConfig::default()
    };
    let err = LocalCluster::run_once(
        config,
        SeedSource::Fixed(4),
        "test",
        spmd(|ctx: Ctx| async move {
            if ctx.me() == P2 {
                return Err(ProtocolError::Unsupported {
                    op: ctx.path().into(),
                    reason: "boom".into(),
                });
            }
            ctx.recv::<RingTensor>(P2, &vec![1]).await?;
            Ok(())
        }),
    )
    .unwrap_err();
    assert!(matches!(err, ProtocolError::Unsupported { .. }), "{err}");
}

/// A party that gives up fails every other party at once, whoever they wait on: P0 and P1
/// wait on each other, P2 fails, and both name P2 (not each other), long before their timeouts.
#[test]
fn an_abort_fails_every_party_naming_who_failed() {
    let config = PartyConfig {
        recv_timeout: Duration::from_secs(30),
        ..PartyConfig::default()
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let t0 = Instant::now();
    let err = LocalCluster::run_once(
        config,
        SeedSource::Fixed(5),
        "test",
        spmd(move |ctx: Ctx| {
            let seen = s.clone();
            async move {
                let me = ctx.me();
                if me == P2 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Err(ProtocolError::Input {
                        op: ctx.path().into(),
                        reason: "boom".into(),
                    });
                }
                let other = if me == P0 { P1 } else { P0 };
                let r = ctx.recv::<RingTensor>(other, &vec![1]).await;
                if let Err(e) = &r {
                    seen.lock().unwrap().push((me, e.clone()));
                }
                r.map(|_| ())
            }
        }),
    )
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(matches!(err, ProtocolError::Input { .. }), "{err}");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|(p, _)| p.0);
    assert_eq!(seen.len(), 2, "{seen:?}");
    for ((party, e), want) in seen.iter().zip([P0, P1]) {
        assert_eq!(*party, want);
        let msg = e.to_string();
        assert!(
            matches!(e, ProtocolError::Aborted { by, .. } if *by == P2),
            "{party}: {msg}"
        );
        assert!(msg.starts_with("P2 gave up: test"), "{party}: {msg}");
        assert!(msg.contains("bad input: boom"), "{party}: {msg}");
        assert!(
            !msg.contains("P0 gave up") && !msg.contains("P1 gave up"),
            "{msg}"
        );
    }
}

/// Rounds are causal: a chain of k messages gives k rounds; independent operations run
/// concurrently on forked contexts do not add up.
#[test]
fn rounds_are_causal() {
    for k in [1u64, 2, 5] {
        let r = run3(5, move |ctx: Ctx| async move {
            // A ping-pong chain P0 -> P1 -> P0 -> ... of k messages.
            for i in 0..k {
                let (from, to) = if i % 2 == 0 { (P0, P1) } else { (P1, P0) };
                if ctx.me() == from {
                    ctx.send(to, &RingTensor::zeros(&[1]))?;
                } else if ctx.me() == to {
                    ctx.recv::<RingTensor>(from, &vec![1]).await?;
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(r.traffic.rounds, k, "chain of {k}");
        assert_eq!(r.traffic.total_messages(), k);
    }
    // Two exchanges (each one round) run concurrently: 1 round. In sequence: 2.
    for concurrent in [true, false] {
        let r = run3(6, move |ctx: Ctx| async move {
            let exchange = |c: Ctx| async move {
                match c.me() {
                    P0 => {
                        c.send(P1, &RingTensor::zeros(&[1]))?;
                        c.recv::<RingTensor>(P1, &vec![1]).await?;
                    }
                    P1 => {
                        c.send(P0, &RingTensor::zeros(&[1]))?;
                        c.recv::<RingTensor>(P0, &vec![1]).await?;
                    }
                    _ => {}
                }
                Ok::<(), ProtocolError>(())
            };
            if concurrent {
                let (a, b) = (ctx.fork("a"), ctx.fork("b"));
                let (x, y) = futures::join!(exchange(a.clone()), exchange(b.clone()));
                x?;
                y?;
                ctx.join(&[&a, &b]);
            } else {
                exchange(ctx.child("a")).await?;
                exchange(ctx.child("b")).await?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(r.traffic.rounds, if concurrent { 1 } else { 2 });
        assert_eq!(r.traffic.total_bytes(), 32);
    }
}

/// Messages that arrive before their receive is posted wait in the mailbox, whatever the order.
#[test]
fn out_of_order_arrivals_are_routed_by_key() {
    let r = run3(7, |ctx: Ctx| async move {
        let (a, b) = (ctx.child("a"), ctx.child("b"));
        match ctx.me() {
            P0 => {
                b.send(P1, &RingTensor::filled(&[1], 2))?;
                a.send(P1, &RingTensor::filled(&[1], 1))?;
                Ok(0)
            }
            P1 => {
                let x = a.recv::<RingTensor>(P0, &vec![1]).await?;
                let y = b.recv::<RingTensor>(P0, &vec![1]).await?;
                Ok(x.as_slice()[0] * 10 + y.as_slice()[0])
            }
            _ => Ok(0),
        }
    })
    .unwrap();
    assert_eq!(r.outputs[1], 12);
}

/// Jobs need a session: seeds are agreed first, in one round of three 32-byte messages.
#[test]
fn session_setup_costs_three_seeds() {
    let r = run3(8, |_ctx: Ctx| async move { Ok(()) }).unwrap();
    assert_eq!(r.setup.total_bytes(), 96);
    assert_eq!(r.setup.total_messages(), 3);
    assert_eq!(r.setup.rounds, 1);
}

/// Common randomness: both holders of a pair seed draw the same stream; others cannot.
#[test]
fn pair_prgs_agree_only_within_the_pair() {
    let r = run3(9, |ctx: Ctx| async move {
        let c = ctx.child("draw");
        let draw = |peer| RingTensor::random(&[4], &mut c.prg_with(peer));
        Ok(match ctx.me() {
            P0 => (draw(P1), draw(P2)),
            P1 => (draw(P0), draw(P2)),
            _ => (draw(P0), draw(P1)),
        })
    })
    .unwrap();
    let [p0, p1, p2]: [_; 3] = r.outputs.try_into().unwrap();
    assert_eq!(p0.0, p1.0, "P0-P1");
    assert_eq!(p0.1, p2.0, "P0-P2");
    assert_eq!(p1.1, p2.1, "P1-P2");
    assert_ne!(p0.0, p0.1);
    assert_ne!(p0.1, p1.1);
}

/// Finding 3 of the security review: two jobs of one name in one session repeated every PRG
/// stream, so the masked openings of the same inputs were equal (and of different inputs, P1
/// got x − x' exactly). The k-th repeat of a name now runs at `name~k`: its masks, triples and
/// keys are its own, and its result is the same (to
/// the local truncation's ulp).
#[test]
fn repeated_job_names_draw_fresh_randomness() {
    use securenn::protocol::{Pond, Protocol};
    let mut g = rng(31);
    let x = random_fixed(&[4, 16], 3.0, &mut g);
    let w = random_fixed(&[16, 8], 3.0, &mut g);
    let (outputs, log) = run3_recorded_jobs(31, &["query", "query"], move |ctx: Ctx| {
        let (x, w) = (x.clone(), w.clone());
        async move {
            let p = Pond::default();
            let me = ctx.me();
            let xt = p
                .input(&ctx, P0, (me == P0).then_some(&x), &[4, 16], 13)
                .await?;
            let wt = p
                .input(&ctx, P1, (me == P1).then_some(&w), &[16, 8], 13)
                .await?;
            let y = p.matmul(&ctx, &xt, &wt).await?;
            p.reveal(&ctx, &y, P0).await
        }
    })
    .unwrap();
    let (a, b) = (
        outputs[0][0].as_ref().unwrap(),
        outputs[1][0].as_ref().unwrap(),
    );
    assert!(
        max_ulp_diff(a, b) <= 1,
        "same inputs, the same result (to the truncation's ulp)"
    );
    // The jobs run one after the other: the first half of the log is the first job's.
    assert!(!log.is_empty() && log.len() % 2 == 0);
    let (first, second) = log.split_at(log.len() / 2);
    fn sorted(v: &[securenn_transports::Envelope]) -> Vec<&securenn_transports::Envelope> {
        let mut v: Vec<_> = v.iter().collect();
        v.sort_by(|a, b| (a.from, a.to, &a.key).cmp(&(b.from, b.to, &b.key)));
        v
    }
    for (a, b) in sorted(first).iter().zip(sorted(second)) {
        assert!(a.key.starts_with("query/"), "{}", a.key);
        assert_ne!(
            a.payload, b.payload,
            "{} repeats its bytes in the second job",
            a.key
        );
        assert_eq!(a.key.replacen("query/", "query~1/", 1), b.key);
    }
}
