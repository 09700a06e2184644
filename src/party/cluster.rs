//! Three party actors in one process, each on its own arbiter thread, so their compute spreads
//! over the machine's cores; the driver sends them jobs and collects the results.

use super::actor::{JobFn, JobOutput, PartyActor, PartyConfig, Run, Setup};
use super::setup::SeedSource;
use crate::channel::{Ctx, PartyId, ProtocolError};
use crate::memory::{MemoryCounter, set_thread_counter};
use actix::prelude::*;
use securenn_transports::quic::{self, QuicLimits, QuicNode};
use securenn_transports::sim::{SimConfig, SimError, SimNetwork};
use securenn_transports::{
    Endpoint, EnvelopeRecord, MemoryNetwork, Meter, MeterSnapshot, TransportError,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parties started in this process.
pub struct LocalCluster {
    parties: Vec<Addr<PartyActor>>,
    arbiters: Vec<Arbiter>,
    meter: Arc<Meter>,
    sim: Option<Arc<SimNetwork>>,
    quic: Vec<QuicNode>,
    /// Each party's memory counter ([`crate::memory`]), in party order: its arbiter thread is
    /// tagged with it.
    memory: Vec<&'static MemoryCounter>,
}

/// Which transport connects the parties of a [`LocalCluster`].
#[derive(Clone, Debug)]
pub enum Network {
    /// In-memory channels: no time passes on the wire.
    Memory,
    /// The network simulator.
    Sim(SimConfig),
    /// Real QUIC connections between the three parties on 127.0.0.1 (fresh certificates, free
    /// ports), all in this process.
    QuicLocalhost,
}

impl Network {
    /// How reports name the transport: `memory`, `sim` or `quic`.
    pub fn transport_name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sim(_) => "sim",
            Self::QuicLocalhost => "quic",
        }
    }
}

/// What a job returned at each party, and what it cost.
#[derive(Debug)]
pub struct RunReport<R> {
    /// One output per party, in party order.
    pub outputs: Vec<R>,
    /// CPU time each party's thread spent on the job.
    pub party_cpu: Vec<Duration>,
    /// Traffic of the job (setup excluded).
    pub traffic: MeterSnapshot,
    /// Traffic of the session setup (seed agreement).
    pub setup: MeterSnapshot,
    /// Every envelope of the job, for attributing traffic to operations by key.
    pub envelopes: Vec<EnvelopeRecord>,
    pub wall: Duration,
    /// CPU time of the whole process during the job (all threads).
    pub cpu: Duration,
    /// On a simulated network: the job's time on the parties' virtual clocks.
    pub virtual_time: Option<Duration>,
    /// Over QUIC: the UDP bytes the endpoints sent in the whole session (headers, handshakes,
    /// acknowledgements and retransmissions included), beside the meter's payload bytes.
    pub quic_wire_bytes: Option<u64>,
    /// The job's operation spans and messages, when a [`crate::metrics`] layer is installed.
    pub trace: Option<crate::metrics::SessionTrace>,
    /// Each party's peak of live heap bytes during the job (see [`LocalCluster::peak_memory`]).
    pub peak_memory: Vec<u64>,
}

impl LocalCluster {
    /// Three parties over `network`. Must be called inside an actix `System`.
    pub fn start_on(network: &Network, config: PartyConfig) -> Result<Self, SimError> {
        let meter = Meter::new(3);
        Ok(match network {
            Network::Memory => {
                Self::with_endpoints(MemoryNetwork::endpoints(3, &meter), meter, config)
            }
            Network::Sim(cfg) => {
                let (endpoints, sim) = SimNetwork::endpoints(cfg.clone(), &meter)?;
                let mut c = Self::with_endpoints(endpoints, meter, config);
                c.sim = Some(sim);
                c
            }
            Network::QuicLocalhost => {
                let (endpoints, nodes) = quic_localhost(&meter).map_err(|e| SimError::Link {
                    field: "quic".into(),
                    reason: e.to_string(),
                })?;
                let mut c = Self::with_endpoints(endpoints, meter, config);
                c.quic = nodes;
                c
            }
        })
    }

    /// Parties over the given transport endpoints (one per party, in party order).
    pub fn with_endpoints(
        endpoints: Vec<Endpoint>,
        meter: Arc<Meter>,
        config: PartyConfig,
    ) -> Self {
        let mut parties = Vec::new();
        let mut arbiters = Vec::new();
        let mut memory = Vec::new();
        for ep in endpoints {
            let arbiter = Arbiter::new();
            let counter = MemoryCounter::leak();
            let addr = PartyActor::start_in_arbiter(&arbiter.handle(), move |_| {
                // This arbiter thread is this party's: its allocations are the party's.
                set_thread_counter(Some(counter));
                PartyActor::new(ep, config)
            });
            parties.push(addr);
            arbiters.push(arbiter);
            memory.push(counter);
        }
        Self {
            parties,
            arbiters,
            meter,
            sim: None,
            quic: Vec::new(),
            memory,
        }
    }

    pub fn meter(&self) -> MeterSnapshot {
        self.meter.snapshot()
    }

    /// Start each party's memory peak afresh from its live bytes (at a job's start).
    pub fn reset_peak_memory(&self) {
        self.memory.iter().for_each(|c| c.reset_peak());
    }

    /// Each party's peak of live heap bytes since the cluster started or
    /// [`LocalCluster::reset_peak_memory`], in party order: what its thread allocated and had
    /// not freed, wherever the blocks went (a message counts at its sender until the receiver
    /// drops it). The inputs handed to a job (an owner's weights and images, made by the
    /// caller) count at no party; everything the party makes of them does. Other threads of
    /// the process (transport, driver) count nowhere.
    pub fn peak_memory(&self) -> Vec<u64> {
        self.memory.iter().map(|c| c.peak()).collect()
    }

    /// Agree the session's seeds at every party.
    pub async fn setup(&self, session: u64, source: SeedSource) -> Result<(), ProtocolError> {
        let replies = futures::future::join_all(
            self.parties
                .iter()
                .map(|p| p.send(Setup { session, source })),
        )
        .await;
        pick_error(replies.into_iter().enumerate().map(flatten)).map(|_| ())
    }

    /// Run one job per party (in party order) and wait for all of them.
    pub async fn run<R: Send + 'static>(
        &self,
        name: &str,
        jobs: Vec<JobFn<R>>,
    ) -> Result<Vec<JobOutput<R>>, ProtocolError> {
        assert_eq!(jobs.len(), self.parties.len(), "one job per party");
        let start_depth = self.meter.snapshot().rounds;
        let replies = futures::future::join_all(self.parties.iter().zip(jobs).map(|(p, job)| {
            p.send(Run {
                name: name.to_string(),
                start_depth,
                job,
            })
        }))
        .await;
        pick_error(replies.into_iter().enumerate().map(flatten))
    }

    /// Stop the parties' threads and wait for them, then close QUIC endpoints cleanly.
    pub fn stop(self) {
        drop(self.parties);
        for a in self.arbiters {
            a.stop();
            let _ = a.join();
        }
        for node in self.quic {
            node.shutdown();
        }
    }

    /// Start a cluster in a fresh actix system, agree seeds, run `jobs(party)` at each party, stop.
    pub fn run_once<R: Send + 'static>(
        config: PartyConfig,
        source: SeedSource,
        name: &str,
        jobs: impl Fn(PartyId) -> JobFn<R>,
    ) -> Result<RunReport<R>, ProtocolError> {
        Self::run_once_on(&Network::Memory, config, source, name, jobs)
    }

    /// [`LocalCluster::run_once`] over `network`.
    pub fn run_once_on<R: Send + 'static>(
        network: &Network,
        config: PartyConfig,
        source: SeedSource,
        name: &str,
        jobs: impl Fn(PartyId) -> JobFn<R>,
    ) -> Result<RunReport<R>, ProtocolError> {
        System::new().block_on(async {
            let cluster = Self::start_on(network, config).map_err(|e| ProtocolError::Input {
                op: "network".into(),
                reason: e.to_string(),
            })?;
            // A session id of its own, so the metrics layer keeps concurrent runs apart.
            let session = crate::metrics::fresh_session();
            let result = async {
                cluster.setup(session, source).await?;
                let setup = cluster.meter();
                let setup_records = cluster.meter.records().len();
                let v0 = cluster.sim.as_ref().map(|s| s.barrier());
                let traced = crate::metrics::installed();
                if traced {
                    crate::metrics::begin(session);
                }
                cluster.reset_peak_memory();
                let (t0, c0) = (Instant::now(), process_cpu_time());
                let (outputs, party_cpu) = cluster
                    .run(name, (0..3).map(|i| jobs(PartyId(i))).collect())
                    .await?
                    .into_iter()
                    .map(|o| (o.value, o.cpu))
                    .unzip();
                let (wall, cpu) = (t0.elapsed(), process_cpu_time().saturating_sub(c0));
                let peak_memory = cluster.peak_memory();
                let virtual_time = cluster.sim.as_ref().zip(v0).map(|(s, v0)| s.now() - v0);
                let quic_wire_bytes = (!cluster.quic.is_empty()).then(|| {
                    cluster
                        .quic
                        .iter()
                        .flat_map(|n| n.wire_bytes())
                        .map(|(_, b)| b)
                        .sum()
                });
                Ok(RunReport {
                    outputs,
                    party_cpu,
                    traffic: cluster.meter().since(&setup),
                    setup,
                    envelopes: cluster.meter.records().split_off(setup_records),
                    wall,
                    cpu,
                    virtual_time,
                    quic_wire_bytes,
                    trace: traced.then(|| crate::metrics::take(session)).flatten(),
                    peak_memory,
                })
            }
            .await;
            // A failed run's records are dropped.
            crate::metrics::take(session);
            cluster.stop();
            result
        })
    }
}

/// Three QUIC endpoints on 127.0.0.1 with fresh identities, connected to each other.
fn quic_localhost(meter: &Arc<Meter>) -> Result<(Vec<Endpoint>, Vec<QuicNode>), TransportError> {
    Ok(quic::localhost(3, QuicLimits::default(), meter)?
        .into_iter()
        .unzip())
}

/// Jobs that run the same protocol function at every party (SPMD).
pub fn spmd<R, F, Fut>(f: F) -> impl Fn(PartyId) -> JobFn<R>
where
    F: Fn(Ctx) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, ProtocolError>> + 'static,
{
    move |_| {
        let f = f.clone();
        Box::new(move |ctx| Box::pin(f(ctx)))
    }
}

fn flatten<R>(
    (i, r): (usize, Result<Result<R, ProtocolError>, MailboxError>),
) -> Result<R, ProtocolError> {
    r.unwrap_or_else(|e| {
        Err(ProtocolError::PeerGone {
            party: PartyId(i as u8),
            peer: PartyId(i as u8),
            key: "job".into(),
            reason: format!("the party's actor stopped: {e}"),
        })
    })
}

/// All outputs, or the most telling error: a party's own failure rather than the timeouts and
/// disconnections it caused at the others.
fn pick_error<R>(
    results: impl Iterator<Item = Result<R, ProtocolError>>,
) -> Result<Vec<R>, ProtocolError> {
    let mut outs = Vec::new();
    let mut errs = Vec::new();
    for r in results {
        match r {
            Ok(v) => outs.push(v),
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        return Ok(outs);
    }
    // A party's own failure explains the rest; a lost peer (with its reason) explains more than
    // another party's abort, and that more than a timeout.
    let rank = |e: &ProtocolError| match e {
        ProtocolError::Timeout { .. } => 3,
        ProtocolError::Aborted { .. } => 2,
        ProtocolError::PeerGone { .. } => 1,
        _ => 0,
    };
    let idx = (0..errs.len())
        .min_by_key(|&i| (rank(&errs[i]), i))
        .expect("errors");
    Err(errs.swap_remove(idx))
}

/// CPU time used by this process so far (user + system, all threads).
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
