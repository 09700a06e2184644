//! Hostile peers over real QUIC: parties 1 and 2 run as actors; party 0 is played by the test,
//! which holds party 0's identity and sends whatever envelopes it likes.

use securenn::channel::{Ctx, P0, P1, P2, ProtocolError};
use securenn::party::{LocalCluster, PartyConfig, SeedSource, spmd};
use securenn::ring::RingTensor;
use securenn_transports::quic::{QuicLimits, localhost};
use securenn_transports::{Backlog, Envelope, KEPT_OVERHEAD, Meter, PartyId};
use std::sync::Arc;
use std::time::Duration;

const SESSION: u64 = 5;

fn envelope(to: PartyId, key: &str, depth: u64, payload: Vec<u8>) -> Envelope {
    Envelope {
        session: SESSION,
        from: P0,
        to,
        key: key.into(),
        depth,
        arrival: 0,
        payload,
    }
}

/// Start the three parties on localhost with `limits`; party 0 sends the seeds of the session
/// setup like an honest party, then `attack`; parties 1 and 2 run a job `job` in which party 1
/// waits for one message from party 0. Returns party 1's result, and party 1's backlog.
fn attacked_by_p0(
    limits: QuicLimits,
    attack: impl FnOnce(&dyn securenn_transports::Transport) + Send + 'static,
) -> (Result<(), ProtocolError>, Arc<Backlog>) {
    let meter = Meter::new(3);
    let mut nodes = localhost(3, limits, &meter).unwrap();
    let (ep0, node0) = nodes.remove(0);
    let backlog = nodes[0].0.backlog.clone();
    let (endpoints, others): (Vec<_>, Vec<_>) = nodes.into_iter().unzip();
    let p0 = ep0.transport.clone();
    for to in [P1, P2] {
        p0.send(envelope(to, "setup/seeds#0", 1, vec![7; 32]))
            .unwrap();
    }
    let config = PartyConfig {
        recv_timeout: Duration::from_secs(60),
        ..PartyConfig::default()
    };
    let result = actix::System::new().block_on(async move {
        let cluster = LocalCluster::with_endpoints(endpoints, meter, config);
        let out = async {
            cluster.setup(SESSION, SeedSource::Os).await?;
            std::thread::spawn(move || attack(&*p0));
            let jobs = spmd(|ctx: Ctx| async move {
                if ctx.me() == P1 {
                    ctx.recv::<RingTensor>(P0, &vec![4]).await?;
                }
                Ok(())
            });
            cluster
                .run("job", vec![jobs(P1), jobs(P2)])
                .await
                .map(|_| ())
        }
        .await;
        cluster.stop();
        out
    });
    drop(ep0);
    node0.shutdown();
    for n in others {
        n.shutdown();
    }
    (result, backlog)
}

/// Finding 4 of the security review: a peer could make a party hold everything it sent. Party
/// 0 sends 64 MiB of envelopes party 1 never asks for, with keys of the running job, while
/// party 1 waits for its real message: party 1 holds at most the 4 MiB cap of it, sees that
/// nothing it can do frees the stream, and cuts party 0 off with an error that names it.
#[test]
fn a_flooding_peer_is_cut_off_naming_it() {
    let cap = 4 << 20;
    let limits = QuicLimits {
        max_frame_bytes: 1 << 20,
        max_queued_bytes: cap,
        ..QuicLimits::default()
    };
    let (result, backlog) = attacked_by_p0(limits, |p0| {
        for i in 0..128 {
            let env = envelope(P1, &format!("job/junk#{i}"), 2, vec![0xab; 1 << 19]);
            if p0.send(env).is_err() {
                break;
            }
        }
    });
    match result {
        Err(ProtocolError::PeerGone { peer, reason, .. }) => {
            assert_eq!(peer, P0);
            assert!(reason.contains("flood"), "{reason}");
            assert!(reason.contains("P0 sent"), "{reason}");
        }
        other => panic!("expected party 0 to be cut off, got {other:?}"),
    }
    let peak = backlog.peak(P0);
    eprintln!("flood of 64 MiB: party 1 held at most {peak} bytes of it (cap {cap})");
    assert!(peak <= cap, "held {peak} bytes, over the cap");
}

/// Finding 4, second form (found by the audit of the fix): envelopes with no payload cost
/// their receiver memory too (1.4 GiB in 40 s, with keys under a root no job uses, before each
/// kept envelope counted [`KEPT_OVERHEAD`] against the cap). Party 0 sends 100,000 of them;
/// party 1 holds at most the 1 MiB cap's worth and cuts party 0 off, naming it.
#[test]
fn empty_envelopes_count_against_the_cap() {
    let cap = 1 << 20;
    let limits = QuicLimits {
        max_queued_bytes: cap,
        ..QuicLimits::default()
    };
    let (result, backlog) = attacked_by_p0(limits, |p0| {
        for i in 0..100_000 {
            if p0
                .send(envelope(P1, &format!("zzz/x#{i}"), 2, Vec::new()))
                .is_err()
            {
                break;
            }
        }
    });
    match result {
        Err(ProtocolError::PeerGone { peer, reason, .. }) => {
            assert_eq!(peer, P0);
            assert!(reason.contains("flood"), "{reason}");
        }
        other => panic!("expected party 0 to be cut off, got {other:?}"),
    }
    let peak = backlog.peak(P0);
    let kept = peak / (KEPT_OVERHEAD + 10);
    eprintln!(
        "flood of 100,000 empty envelopes: party 1 held at most {peak} bytes ({kept} envelopes; cap {cap})"
    );
    assert!(peak <= cap, "held {peak} bytes, over the cap");
}

/// Envelopes that cannot belong to the running job cut their sender off at once, naming it:
/// another session, a key that is not a rendezvous key (here with terminal escapes), and a
/// causal depth of u64::MAX (which overflowed the next send).
#[test]
fn envelopes_that_cannot_belong_to_the_job_cut_the_sender_off() {
    let cases: Vec<(Envelope, &str)> = vec![
        (
            Envelope {
                session: SESSION + 1,
                ..envelope(P1, "job/x#0", 2, vec![0; 8])
            },
            "session 6",
        ),
        (
            envelope(P1, "job/\u{1b}[2J#0", 2, vec![0; 8]),
            "outside printable ASCII",
        ),
        (envelope(P1, "job#0", u64::MAX, vec![0; 32]), "causal depth"),
    ];
    for (env, why) in cases {
        let (result, _) = attacked_by_p0(QuicLimits::default(), move |p0| {
            let _ = p0.send(env);
        });
        match result {
            Err(ProtocolError::PeerGone { peer, reason, .. }) => {
                assert_eq!(peer, P0);
                assert!(reason.contains(why), "{reason} lacks {why}");
                assert!(!reason.contains('\u{1b}'), "escaped: {reason:?}");
            }
            other => panic!("expected party 0 to be cut off for {why}, got {other:?}"),
        }
    }
}
