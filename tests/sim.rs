//! The network simulator under the protocols: virtual time equal to the link model's prediction,
//! determinism by seed, the same results as in memory, and faults that end runs with a clear
//! error instead of a hang.

mod common;

use common::*;
use securenn::channel::{Ctx, P0, P1, P2, ProtocolError};
use securenn::party::{LocalCluster, Network, PartyConfig, SeedSource, spmd};
use securenn::ring::RingTensor;
use securenn_transports::sim::{Clock, Compute, Fault, LinkSpec, SimConfig};
use std::time::{Duration, Instant};

fn wan(compute: Compute) -> Network {
    let mut cfg = SimConfig::uniform(3, LinkSpec::preset("wan").unwrap());
    cfg.compute = compute;
    Network::Sim(cfg)
}

fn run_on<R: Send + 'static, F, Fut>(
    network: &Network,
    seed: u64,
    f: F,
) -> Result<securenn::party::RunReport<R>, ProtocolError>
where
    F: Fn(Ctx) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<R, ProtocolError>> + 'static,
{
    LocalCluster::run_once_on(
        network,
        PartyConfig::default(),
        SeedSource::Fixed(seed),
        "test",
        spmd(f),
    )
}

/// A ping-pong of 1,000-byte messages on the paper's WAN (40 MB/s, 29 ms one way), compute
/// excluded: each message takes 1000 / 40e6 s = 25 µs to transmit and 29 ms to arrive.
#[test]
fn virtual_time_matches_the_link_model() {
    let r = run_on(&wan(Compute::Zero), 1, |ctx: Ctx| async move {
        let x = RingTensor::zeros(&[125]); // 1,000 bytes
        match ctx.me() {
            P0 => {
                ctx.send(P1, &x)?;
                ctx.recv::<RingTensor>(P1, &vec![125]).await?;
            }
            P1 => {
                ctx.recv::<RingTensor>(P0, &vec![125]).await?;
                ctx.send(P0, &x)?;
            }
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        r.virtual_time,
        Some(2 * (Duration::from_millis(29) + Duration::from_micros(25)))
    );
    // Two 4 MB messages on one link queue behind each other (0.1 s each); a third on another
    // link does not wait for them.
    let r = run_on(&wan(Compute::Zero), 1, |ctx: Ctx| async move {
        let big = RingTensor::zeros(&[500_000]); // 4 MB
        match ctx.me() {
            P0 => {
                ctx.send(P1, &big)?;
                ctx.send(P1, &big)?;
                ctx.send(P2, &big)?;
            }
            P1 => {
                ctx.recv::<RingTensor>(P0, &vec![500_000]).await?;
                ctx.recv::<RingTensor>(P0, &vec![500_000]).await?;
            }
            _ => {
                ctx.recv::<RingTensor>(P0, &vec![500_000]).await?;
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        r.virtual_time,
        Some(Duration::from_millis(200) + Duration::from_millis(29))
    );
}

/// The same secure job over memory and over the simulator: identical results, bytes and rounds.
#[test]
fn same_results_bytes_and_rounds_as_in_memory() {
    let mut g = rng(3);
    let case = Case::new(
        Op::Relu,
        random_fixed(&[4, 9], 20.0, &mut g),
        random_fixed(&[4, 9], 1.0, &mut g),
    );
    let job = move |ctx: Ctx| {
        let case = case.clone();
        async move {
            use securenn::protocol::Protocol;
            let p = securenn::protocol::SecureNn::default();
            let me = ctx.me();
            let x = p
                .input(&ctx, P0, (me == P0).then_some(&case.x), case.x.shape(), 13)
                .await?;
            let y = p.relu(&ctx, &x).await?;
            p.reveal(&ctx, &y, P0).await
        }
    };
    let mem = run_on(&Network::Memory, 4, job.clone()).unwrap();
    let sim = run_on(&wan(Compute::Measured), 4, job).unwrap();
    assert_eq!(mem.outputs, sim.outputs);
    assert_eq!(mem.traffic, sim.traffic);
    assert!(mem.virtual_time.is_none());
    // ReLU is 3 rounds plus the reveal: at least 4 one-way WAN latencies.
    assert!(
        sim.virtual_time.unwrap() >= Duration::from_millis(4 * 29),
        "{:?}",
        sim.virtual_time
    );
}

/// Same seed: the same virtual network time even with jitter and loss; the loss costs
/// retransmission timeouts.
#[test]
fn lossy_network_is_deterministic_by_seed() {
    let lossy = |seed: u64| {
        let mut link = LinkSpec::preset("lossy-wan").unwrap();
        link.jitter = Duration::from_millis(5);
        let mut cfg = SimConfig::uniform(3, link);
        cfg.compute = Compute::Zero;
        cfg.seed = seed;
        Network::Sim(cfg)
    };
    let job = |ctx: Ctx| async move {
        let x = RingTensor::zeros(&[200_000]); // 1.6 MB: about 1,067 packets, some lost
        for _ in 0..3 {
            match ctx.me() {
                P0 => ctx.send(P1, &x)?,
                P1 => {
                    ctx.recv::<RingTensor>(P0, &vec![200_000]).await?;
                }
                _ => {}
            }
        }
        Ok(())
    };
    let a = run_on(&lossy(7), 1, job).unwrap().virtual_time.unwrap();
    let b = run_on(&lossy(7), 1, job).unwrap().virtual_time.unwrap();
    assert_eq!(a, b);
    // Without loss: 3 × 40 ms of transmission plus 29 ms ± 5 ms; with 1% packet loss nearly
    // every message loses a packet and waits a 200 ms timeout.
    assert!(a >= Duration::from_millis(120 + 24 + 200), "{a:?}");
}

/// A partitioned P2 ends the run with an error naming the cut link and its time, in bounded
/// wall time, well before the receive timeout.
#[test]
fn partition_ends_the_run_with_a_clear_error() {
    let mut cfg = SimConfig::uniform(3, LinkSpec::preset("lan").unwrap());
    // Setup ends at 0.11 ms (one LAN latency); ReLU's 3 rounds follow every 0.11 ms, so the
    // cut at 0.25 ms falls between its second and third.
    cfg.compute = Compute::Zero;
    cfg.faults = vec![Fault::Partition {
        party: P2,
        at: Duration::from_micros(250),
    }];
    let t0 = Instant::now();
    let err = run_on(&Network::Sim(cfg), 5, |ctx: Ctx| async move {
        use securenn::protocol::Protocol;
        let p = securenn::protocol::SecureNn::default();
        let x = p
            .input(
                &ctx,
                P0,
                (ctx.me() == P0).then(|| RingTensor::zeros(&[3])).as_ref(),
                &[3],
                13,
            )
            .await?;
        p.relu(&ctx, &x).await?;
        Ok(())
    })
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    // The party at the cut end reports it; the others' receives fail with its abort.
    assert!(
        matches!(
            err,
            ProtocolError::PeerGone { .. } | ProtocolError::Aborted { .. }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("P2") && msg.contains("cut") && msg.contains("relu"),
        "{msg}"
    );
}

/// A link cut after N messages: the run stops at the (N+1)-th, naming the link.
#[test]
fn cut_after_messages() {
    let mut cfg = SimConfig::uniform(3, LinkSpec::preset("lan").unwrap());
    cfg.faults = vec![Fault::CutAfterMessages {
        from: P0,
        to: P1,
        count: 2,
    }];
    let err = run_on(&Network::Sim(cfg), 6, |ctx: Ctx| async move {
        for i in 0..4 {
            match ctx.me() {
                P0 => ctx.send(P1, &RingTensor::filled(&[1], i))?,
                P1 => {
                    ctx.recv::<RingTensor>(P0, &vec![1]).await?;
                }
                _ => {}
            }
        }
        Ok(())
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("P0 -> P1") && msg.contains("cut"), "{msg}");
}

/// The real clock delivers the same messages, later; results do not change.
#[test]
fn real_clock_gives_the_same_results() {
    let mut cfg = SimConfig::uniform(3, LinkSpec::preset("lan").unwrap());
    cfg.clock = Clock::Real;
    let job = |ctx: Ctx| async move {
        match ctx.me() {
            P0 => {
                ctx.send(P1, &RingTensor::filled(&[2], 7))?;
                Ok(0)
            }
            P1 => Ok(ctx.recv::<RingTensor>(P0, &vec![2]).await?.as_slice()[1]),
            _ => Ok(0),
        }
    };
    let r = run_on(&Network::Sim(cfg), 7, job).unwrap();
    assert_eq!(r.outputs, vec![0, 7, 0]);
}

/// The same secure job over real QUIC connections on 127.0.0.1 (three endpoints in this process,
/// mutual TLS with fresh certificates): identical results, bytes and rounds to memory.
#[test]
fn quic_on_localhost_gives_the_same_results() {
    let mut g = rng(8);
    let case = Case::new(
        Op::Relu,
        random_fixed(&[3, 7], 20.0, &mut g),
        random_fixed(&[3, 7], 1.0, &mut g),
    );
    let job = move |ctx: Ctx| {
        let case = case.clone();
        async move {
            use securenn::protocol::Protocol;
            let p = securenn::protocol::SecureNn::default();
            let me = ctx.me();
            let x = p
                .input(&ctx, P0, (me == P0).then_some(&case.x), case.x.shape(), 13)
                .await?;
            let w = p
                .input(&ctx, P1, (me == P1).then_some(&case.y), case.y.shape(), 13)
                .await?;
            let y = p.relu(&ctx, &x).await?;
            let z = p.mul(&ctx, &y, &w).await?;
            p.reveal(&ctx, &z, P0).await
        }
    };
    let mem = run_on(&Network::Memory, 9, job.clone()).unwrap();
    let quic = run_on(&Network::QuicLocalhost, 9, job).unwrap();
    assert_eq!(mem.outputs, quic.outputs);
    assert_eq!(mem.traffic, quic.traffic);
}

/// `--cores 16` changes only the virtual time: the same predictions, bytes and rounds as
/// `--cores 1` (parallel sections are cut the same way whatever the cores, and draw no
/// randomness), and no more virtual time. Network A at batch 128: its products and the
/// PrivateCompare vectors are large enough to run as parallel sections.
#[test]
fn more_cores_per_party_change_only_the_virtual_time() {
    let dir = std::env::temp_dir().join(format!("securenn-cores-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |cores: &str| {
        let json = dir.join(format!("cores-{cores}.json"));
        let j = json.to_str().unwrap();
        let (ok, _, err) = securenn_cli(&[
            "infer",
            "--model",
            "a",
            "--samples",
            "128",
            "--batch",
            "128",
            "--network",
            "lan",
            "--seed",
            "3",
            "--cores",
            cores,
            "--json",
            j,
            "--force",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v
    };
    let (one, sixteen) = (run("1"), run("16"));
    for field in ["predictions", "bytes_total", "rounds", "messages"] {
        assert_eq!(one[field], sixteen[field], "{field}");
    }
    let (t1, t16) = (
        one["virtual_seconds"].as_f64().unwrap(),
        sixteen["virtual_seconds"].as_f64().unwrap(),
    );
    // Separate runs measure CPU time anew: allow the noise of a shared machine.
    assert!(t16 <= t1 * 1.1, "16 cores {t16} s, 1 core {t1} s");
    // --cores needs the simulator.
    let (ok, _, err) = securenn_cli(&["infer", "--model", "a", "--samples", "1", "--cores", "2"]);
    assert!(
        !ok && err.contains("--cores") && err.contains("--network"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
