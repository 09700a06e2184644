//! The network simulator: a link model per directed pair of parties (latency, jitter, bandwidth,
//! loss, queue limit) with FIFO links, per-party virtual clocks, and fault rules.
//!
//! A message departs when its link is free (FIFO: messages on one link share it, different links
//! do not), takes bytes / bandwidth to transmit, then latency ± jitter to arrive. A lost packet
//! (1,500 bytes) costs one retransmission timeout, since the protocols assume reliable channels.
//! With the **virtual clock** nothing sleeps: each party's clock advances by its own compute (the
//! CPU time of its thread plus the makespan of its parallel sections on [`SimConfig::cores`]
//! cores, see [`crate::offload`]; or nothing with [`Compute::Zero`]) and, when it receives, to the
//! message's arrival; the run's time is the largest party clock, what three machines on that
//! network would take. With the **real clock** the simulator also holds every message until its
//! arrival in wall time (for demonstrations, and to check the virtual clock).
//! Jitter and loss are drawn from a PRG per link seeded by the scenario seed, so the same seed
//! gives the same virtual network times. Faults ([`Fault`]) cut links; the receiver learns at
//! once which link was cut and when, so a stopped protocol ends with an error, never a hang.

use crate::{
    Backlog, Delivery, Endpoint, Envelope, Meter, Metered, PartyId, Transport, TransportError,
    destination, offload,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// Packet size used for the loss model.
const PACKET: u64 = 1500;

/// One directed link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkSpec {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Half-width of a uniform spread around `latency`.
    pub jitter: Duration,
    /// Bytes per second; 0 means unlimited.
    pub bandwidth: f64,
    /// Probability that a 1,500-byte packet is lost.
    pub loss: f64,
    /// Delay a lost packet costs (one retransmission timeout).
    pub rto: Duration,
    /// Most bytes queued on the link; a sender that would exceed it waits (in virtual time).
    pub queue_limit: Option<u64>,
}

impl Default for LinkSpec {
    /// An ideal link: no latency, unlimited bandwidth, no loss.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth: 0.0,
            loss: 0.0,
            rto: Duration::from_millis(200),
            queue_limit: None,
        }
    }
}

/// A preset as written in `presets.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetFile {
    latency_ms: f64,
    bandwidth: f64,
    #[serde(default)]
    jitter_ms: f64,
    #[serde(default)]
    loss: f64,
    #[serde(default)]
    rto_ms: Option<f64>,
    #[serde(default)]
    queue_limit: Option<u64>,
}

/// Problems with a network description.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("unknown network preset {name:?}; the presets are {known}")]
    UnknownPreset { name: String, known: String },
    #[error("network preset file: {0}")]
    PresetFile(String),
    #[error("link {field}: {reason}")]
    Link { field: String, reason: String },
    #[error("cores: {0} is not a number of cores per party (at least 1)")]
    Cores(u32),
}

const PRESETS: &str = include_str!("../presets.toml");

fn presets() -> Result<BTreeMap<String, PresetFile>, SimError> {
    toml::from_str(PRESETS).map_err(|e| SimError::PresetFile(e.to_string()))
}

impl LinkSpec {
    /// The named preset of `presets.toml` (`lan`, `wan`, `wan-tfe`, `lossy-wan`).
    pub fn preset(name: &str) -> Result<Self, SimError> {
        let all = presets()?;
        let p = all.get(name).ok_or_else(|| SimError::UnknownPreset {
            name: name.to_string(),
            known: all.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        let spec = Self {
            latency: Duration::from_secs_f64(p.latency_ms / 1e3),
            jitter: Duration::from_secs_f64(p.jitter_ms / 1e3),
            bandwidth: p.bandwidth,
            loss: p.loss,
            rto: p
                .rto_ms
                .map_or(Self::default().rto, |ms| Duration::from_secs_f64(ms / 1e3)),
            queue_limit: p.queue_limit,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Names of the presets.
    pub fn preset_names() -> Vec<String> {
        presets()
            .map(|p| p.into_keys().collect())
            .unwrap_or_default()
    }

    /// Check the values make sense (called by [`LinkSpec::preset`]; call it on hand-made specs).
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field: &str, reason: &str| {
            Err(SimError::Link {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if !(self.bandwidth >= 0.0 && self.bandwidth.is_finite()) {
            return bad(
                "bandwidth",
                "must be a finite number of bytes per second, 0 for unlimited",
            );
        }
        if !(0.0..1.0).contains(&self.loss) {
            return bad("loss", "must be a probability in [0, 1)");
        }
        if self.jitter > self.latency {
            return bad("jitter", "must not exceed the latency");
        }
        if self.queue_limit == Some(0) {
            return bad("queue_limit", "must be at least one byte");
        }
        Ok(())
    }
}

/// Which clock the simulator keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Per-party virtual clocks; nothing sleeps.
    Virtual,
    /// Messages are also held until their arrival in wall time.
    Real,
}

/// What advances a party's virtual clock besides messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    /// The CPU time of the party's thread, plus the makespan of its parallel sections on the
    /// party's cores ([`crate::offload`]).
    Measured,
    /// Nothing: the pure network bound.
    Zero,
}

/// A fault rule. Times are virtual (since the simulator started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Drop every message on `from -> to` sent at or after `at`.
    CutAfterTime {
        from: PartyId,
        to: PartyId,
        at: Duration,
    },
    /// Drop every message on `from -> to` after the first `count`.
    CutAfterMessages {
        from: PartyId,
        to: PartyId,
        count: u64,
    },
    /// Cut every link to and from `party` at `at`.
    Partition { party: PartyId, at: Duration },
    /// Delay messages on `from -> to` sent in [at, at + length) by `extra`.
    DelaySpike {
        from: PartyId,
        to: PartyId,
        at: Duration,
        length: Duration,
        extra: Duration,
    },
}

/// The whole simulated network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// `links[from][to]`.
    pub links: Vec<Vec<LinkSpec>>,
    pub clock: Clock,
    pub compute: Compute,
    /// Seeds the jitter and loss of every link.
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// Cores of each party's machine, at least 1: a parallel section's chunks are charged as
    /// if scheduled on this many cores ([`crate::offload`]). 1 (the default) charges all of the
    /// party's CPU time, as one process per server would spend it.
    pub cores: u32,
}

impl SimConfig {
    /// The same link between every two of `parties` parties.
    pub fn uniform(parties: usize, link: LinkSpec) -> Self {
        Self {
            links: vec![vec![link; parties]; parties],
            clock: Clock::Virtual,
            compute: Compute::Measured,
            seed: 0,
            faults: Vec::new(),
            cores: 1,
        }
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct PartyClock {
    now: Duration,
    /// Thread CPU time and parallel-section charge ([`offload`]) at the last tick; `None` until
    /// the party's thread ticks (re-armed at every barrier, so compute between jobs is not
    /// billed).
    mark: Option<(Duration, i64)>,
}

struct LinkState {
    spec: LinkSpec,
    free_at: Duration,
    last_arrival: Duration,
    wall_free_at: Duration,
    wall_last_arrival: Duration,
    sent: u64,
    rng: ChaCha8Rng,
}

/// Shared state of a simulated network: party clocks and link states.
pub struct SimNetwork {
    cfg: SimConfig,
    clocks: Vec<Mutex<PartyClock>>,
    links: Vec<Mutex<LinkState>>,
    start: Instant,
    /// Real clock: one delivery thread per directed link, fed in FIFO order.
    couriers: Vec<Option<std_mpsc::Sender<(Instant, Delivery)>>>,
}

impl std::fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SimNetwork({} parties, {:?} clock)",
            self.clocks.len(),
            self.cfg.clock
        )
    }
}

struct SimTransport {
    me: PartyId,
    net: Arc<SimNetwork>,
    peers: Vec<UnboundedSender<Delivery>>,
}

impl SimNetwork {
    /// Endpoints for the parties of `cfg`, metered by `meter`, and the network's shared state.
    pub fn endpoints(
        cfg: SimConfig,
        meter: &Arc<Meter>,
    ) -> Result<(Vec<Endpoint>, Arc<SimNetwork>), SimError> {
        let n = cfg.links.len();
        if cfg.cores == 0 {
            return Err(SimError::Cores(cfg.cores));
        }
        for (i, row) in cfg.links.iter().enumerate() {
            if row.len() != n {
                return Err(SimError::Link {
                    field: format!("links[{i}]"),
                    reason: format!("needs {n} entries"),
                });
            }
            for l in row {
                l.validate()?;
            }
        }
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded_channel()).unzip();
        let mut couriers = Vec::with_capacity(n * n);
        for i in 0..n * n {
            let to = i % n;
            couriers
                .push((cfg.clock == Clock::Real && to != i / n).then(|| courier(txs[to].clone())));
        }
        let net = Arc::new(SimNetwork {
            clocks: (0..n)
                .map(|_| {
                    Mutex::new(PartyClock {
                        now: Duration::ZERO,
                        mark: None,
                    })
                })
                .collect(),
            links: (0..n * n)
                .map(|i| {
                    Mutex::new(LinkState {
                        spec: cfg.links[i / n][i % n],
                        free_at: Duration::ZERO,
                        last_arrival: Duration::ZERO,
                        wall_free_at: Duration::ZERO,
                        wall_last_arrival: Duration::ZERO,
                        sent: 0,
                        rng: ChaCha8Rng::seed_from_u64(
                            cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        ),
                    })
                })
                .collect(),
            start: Instant::now(),
            couriers,
            cfg,
        });
        let endpoints = rxs
            .into_iter()
            .enumerate()
            .map(|(i, incoming)| {
                let raw: Arc<dyn Transport> = Arc::new(SimTransport {
                    me: PartyId(i as u8),
                    net: net.clone(),
                    peers: txs.clone(),
                });
                Endpoint {
                    transport: Arc::new(Metered::new(raw, meter.clone())),
                    incoming,
                    backlog: Backlog::unbounded(n),
                }
            })
            .collect();
        Ok((endpoints, net))
    }

    /// Start of a job: every party's clock jumps to the latest one (the job starts when all are
    /// ready), and compute is counted from the parties' next step.
    pub fn barrier(&self) -> Duration {
        let t = self.now();
        for c in &self.clocks {
            let mut c = c.lock().expect("clock");
            c.now = t;
            c.mark = None;
        }
        t
    }

    /// The latest party clock.
    pub fn now(&self) -> Duration {
        self.clocks
            .iter()
            .map(|c| c.lock().expect("clock").now)
            .max()
            .unwrap_or_default()
    }

    /// Called on the party's own thread: advance its clock by its compute since the last tick
    /// (its thread's CPU time, plus its parallel sections' makespans on its cores).
    fn tick(&self, me: PartyId) -> Duration {
        let mut c = self.clocks[me.index()].lock().expect("clock");
        if self.cfg.compute == Compute::Measured {
            offload::set_cores(self.cfg.cores);
            let (cpu, charged) = (thread_cpu_time(), offload::charged());
            if let Some((cpu0, charged0)) = c.mark {
                let ns = cpu.saturating_sub(cpu0).as_nanos() as i64 + (charged - charged0);
                c.now += Duration::from_nanos(ns.max(0) as u64);
            }
            c.mark = Some((cpu, charged));
        }
        c.now
    }

    fn set_clock(&self, me: PartyId, t: Duration) {
        let mut c = self.clocks[me.index()].lock().expect("clock");
        c.now = c.now.max(t);
    }

    /// The fault that drops a message on `from -> to` sent at `t` as the link's `sent`-th.
    fn cut(&self, from: PartyId, to: PartyId, t: Duration, sent: u64) -> Option<Duration> {
        self.cfg.faults.iter().find_map(|f| match *f {
            Fault::CutAfterTime { from: a, to: b, at } if (a, b) == (from, to) && t >= at => {
                Some(at)
            }
            Fault::CutAfterMessages {
                from: a,
                to: b,
                count,
            } if (a, b) == (from, to) && sent >= count => Some(t),
            Fault::Partition { party, at } if (party == from || party == to) && t >= at => Some(at),
            _ => None,
        })
    }

    fn spike(&self, from: PartyId, to: PartyId, t: Duration) -> Duration {
        self.cfg
            .faults
            .iter()
            .map(|f| match *f {
                Fault::DelaySpike {
                    from: a,
                    to: b,
                    at,
                    length,
                    extra,
                } if (a, b) == (from, to) && t >= at && t < at + length => extra,
                _ => Duration::ZERO,
            })
            .sum()
    }
}

/// A thread that delivers a link's messages at their wall-clock arrival, in order.
fn courier(tx: UnboundedSender<Delivery>) -> std_mpsc::Sender<(Instant, Delivery)> {
    let (in_tx, in_rx) = std_mpsc::channel::<(Instant, Delivery)>();
    std::thread::spawn(move || {
        for (deadline, d) in in_rx {
            // Sleep most of the way, then spin: thread sleeps overshoot by tens of microseconds,
            // which would swamp a LAN's 0.11 ms latency.
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let left = deadline - now;
                if left > Duration::from_micros(300) {
                    std::thread::sleep(left - Duration::from_micros(200));
                } else {
                    std::hint::spin_loop();
                }
            }
            if tx.send(d).is_err() {
                break;
            }
        }
    });
    in_tx
}

/// Retransmissions a message of `bytes` needs: the most any of its packets needs.
fn retransmissions(bytes: u64, loss: f64, rng: &mut ChaCha8Rng) -> u32 {
    if loss == 0.0 {
        return 0;
    }
    let packets = bytes.div_ceil(PACKET).max(1);
    let mut worst = 0;
    for _ in 0..packets {
        let mut tries = 0;
        while (rng.next_u64() as f64 / u64::MAX as f64) < loss {
            tries += 1;
        }
        worst = worst.max(tries);
    }
    worst
}

impl Transport for SimTransport {
    fn party(&self) -> PartyId {
        self.me
    }

    fn parties(&self) -> usize {
        self.peers.len()
    }

    fn send(&self, mut env: Envelope) -> Result<(), TransportError> {
        let n = self.peers.len();
        let tx = destination(self.me, &env, &self.peers)?;
        let net = &self.net;
        let link_index = self.me.index() * n + env.to.index();
        let mut now = net.tick(self.me);
        let bytes = env.payload.len() as u64;
        let (arrival, wall_arrival) = {
            let mut l = net.links[link_index].lock().expect("link");
            l.sent += 1;
            if let Some(at) = net.cut(self.me, env.to, now, l.sent - 1) {
                tracing::debug!(from = %self.me, to = %env.to, key = %env.key, "message dropped by a fault");
                let err = TransportError::Cut {
                    from: self.me,
                    to: env.to,
                    key: env.key.clone(),
                    at,
                };
                let _ = tx.send(Err(err));
                return Ok(());
            }
            let spec = l.spec;
            let transmit = if spec.bandwidth > 0.0 {
                Duration::from_secs_f64(bytes as f64 / spec.bandwidth)
            } else {
                Duration::ZERO
            };
            // A full queue makes the sender wait until its message fits.
            if let (Some(limit), true) = (spec.queue_limit, spec.bandwidth > 0.0) {
                let room_at = l
                    .free_at
                    .saturating_sub(Duration::from_secs_f64(limit as f64 / spec.bandwidth));
                if room_at > now {
                    now = room_at;
                    net.set_clock(self.me, now);
                }
            }
            let jitter = if spec.jitter > Duration::ZERO {
                let u = l.rng.next_u64() as f64 / u64::MAX as f64;
                spec.jitter.mul_f64(2.0 * u) // in [0, 2·jitter]
            } else {
                Duration::ZERO
            };
            let retries = retransmissions(bytes, spec.loss, &mut l.rng);
            let delay = (spec.latency + jitter).saturating_sub(spec.jitter)
                + spec.rto * retries
                + net.spike(self.me, env.to, now);
            let departure = now.max(l.free_at);
            l.free_at = departure + transmit;
            let arrival = (l.free_at + delay).max(l.last_arrival);
            l.last_arrival = arrival;
            let wall_arrival = if net.cfg.clock == Clock::Real {
                let wall_now = net.start.elapsed();
                let wall_departure = wall_now.max(l.wall_free_at);
                l.wall_free_at = wall_departure + transmit;
                let a = (l.wall_free_at + delay).max(l.wall_last_arrival);
                l.wall_last_arrival = a;
                Some(a)
            } else {
                None
            };
            (arrival, wall_arrival)
        };
        env.arrival = arrival.as_nanos() as u64;
        let (peer, key) = (env.to, env.key.clone());
        let gone = || TransportError::PeerGone {
            peer,
            key: key.clone(),
        };
        match (wall_arrival, &net.couriers[link_index]) {
            (Some(a), Some(courier)) => courier.send((net.start + a, Ok(env))).map_err(|_| gone()),
            _ => tx.send(Ok(env)).map_err(|_| gone()),
        }
    }

    fn on_receive(&self, env: &Envelope) {
        self.net.tick(self.me);
        self.net
            .set_clock(self.me, Duration::from_nanos(env.arrival));
    }

    fn virtual_now(&self) -> Option<Duration> {
        Some(self.net.tick(self.me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_load_and_validate() {
        for name in ["lan", "wan", "wan-tfe", "lossy-wan"] {
            LinkSpec::preset(name).unwrap();
        }
        let wan = LinkSpec::preset("wan").unwrap();
        assert_eq!(wan.latency, Duration::from_micros(29_000));
        assert_eq!(wan.bandwidth, 40e6);
        let e = LinkSpec::preset("moon").unwrap_err().to_string();
        assert!(e.contains("lan") && e.contains("lossy-wan"), "{e}");
        let bad = LinkSpec {
            loss: 1.5,
            ..LinkSpec::default()
        };
        assert!(bad.validate().is_err());
    }

    /// Burn about `ms` milliseconds of the calling thread's CPU; returns what it measured.
    fn busy(ms: u64) -> Duration {
        let t0 = thread_cpu_time();
        let mut x = 1u64;
        while thread_cpu_time() - t0 < Duration::from_millis(ms) {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        thread_cpu_time() - t0
    }

    /// What a party's clock advances by for a section of `chunks` busy chunks of `ms` each
    /// run on other threads, on a party with `cores` cores; and the chunks' total CPU time.
    fn charge(cores: u32, chunks: usize, ms: u64) -> (Duration, Duration) {
        let mut cfg = SimConfig::uniform(2, LinkSpec::default());
        cfg.cores = cores;
        let (endpoints, _net) = SimNetwork::endpoints(cfg, &Meter::new(2)).unwrap();
        let t = endpoints[0].transport.clone();
        std::thread::spawn(move || {
            t.virtual_now().unwrap(); // arms the party's clock
            let before = t.virtual_now().unwrap();
            // The section: chunks on helper threads, two at a time (this machine has 2 cores).
            let mut times = Vec::new();
            for pair in (0..chunks).collect::<Vec<_>>().chunks(2) {
                let hs: Vec<_> = pair
                    .iter()
                    .map(|_| std::thread::spawn(move || busy(ms)))
                    .collect();
                times.extend(hs.into_iter().map(|h| h.join().unwrap()));
            }
            offload::report(&times, Duration::ZERO);
            (t.virtual_now().unwrap() - before, times.iter().sum())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn parallel_sections_are_charged_total_over_cores() {
        let slack = Duration::from_millis(3);
        // One core: the whole CPU time of the section (as if the party's thread had run it).
        let (one, total) = charge(1, 8, 10);
        assert!(one >= total && one <= total + slack, "{one:?} vs {total:?}");
        // Four cores, eight equal chunks: about a quarter (two chunks per core).
        let (four, total) = charge(4, 8, 10);
        let quarter = total / 4;
        assert!(
            four + slack >= quarter && four <= quarter + slack + Duration::from_millis(2),
            "{four:?} vs {total:?} / 4"
        );
        // More cores than chunks: the longest chunk bounds it.
        let (many, total) = charge(64, 8, 10);
        assert!(
            many >= total / 8 - slack && many < total / 4,
            "{many:?} vs {total:?}"
        );
        // Zero cores is refused.
        let mut cfg = SimConfig::uniform(2, LinkSpec::default());
        cfg.cores = 0;
        let e = SimNetwork::endpoints(cfg, &Meter::new(2)).map(|_| ());
        assert_eq!(e, Err(SimError::Cores(0)));
    }
}
