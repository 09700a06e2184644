//! Metering: bytes and messages per directed link, and the causal depth of the run.
//!
//! Bytes are payload bytes, the quantity the SecureNN paper counts (a Z_{2^64} element is 8
//! bytes, a Z_67 element 1 byte); envelope headers are transport overhead and are not counted
//! here. Rounds are causal: the largest `depth` of any envelope sent.

use crate::{Envelope, PartyId, Transport, TransportError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters shared by every endpoint of one network (or one process, in a deployment).
#[derive(Debug)]
pub struct Meter {
    parties: usize,
    bytes: Vec<AtomicU64>,
    messages: Vec<AtomicU64>,
    max_depth: AtomicU64,
    log: Mutex<Vec<EnvelopeRecord>>,
}

/// One envelope as the meter saw it: for attributing traffic to operations by their key
/// (protocols send few, large messages, so keeping one record each is cheap).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeRecord {
    pub from: u8,
    pub to: u8,
    pub key: String,
    pub bytes: u64,
    pub depth: u64,
}

/// Traffic on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStats {
    pub from: u8,
    pub to: u8,
    pub bytes: u64,
    pub messages: u64,
}

/// A copy of the counters at one moment; subtract two to cost an operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterSnapshot {
    pub parties: usize,
    /// Directed links with traffic, in (from, to) order.
    pub links: Vec<LinkStats>,
    /// Causal rounds: the deepest envelope seen.
    pub rounds: u64,
}

impl Meter {
    pub fn new(parties: usize) -> Arc<Self> {
        let n = parties * parties;
        Arc::new(Self {
            parties,
            bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
            messages: (0..n).map(|_| AtomicU64::new(0)).collect(),
            max_depth: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Every envelope recorded so far, in send order per sender.
    pub fn records(&self) -> Vec<EnvelopeRecord> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Count one envelope (called once per send by [`Metered`]).
    pub fn record(&self, env: &Envelope) {
        let i = env.from.index() * self.parties + env.to.index();
        if let (Some(b), Some(m)) = (self.bytes.get(i), self.messages.get(i)) {
            b.fetch_add(env.payload_len() as u64, Ordering::Relaxed);
            m.fetch_add(1, Ordering::Relaxed);
        }
        self.max_depth.fetch_max(env.depth, Ordering::Relaxed);
        if let Ok(mut log) = self.log.lock() {
            log.push(EnvelopeRecord {
                from: env.from.0,
                to: env.to.0,
                key: env.key.clone(),
                bytes: env.payload_len() as u64,
                depth: env.depth,
            });
        }
    }

    pub fn snapshot(&self) -> MeterSnapshot {
        let mut links = Vec::new();
        for from in 0..self.parties {
            for to in 0..self.parties {
                let i = from * self.parties + to;
                let bytes = self.bytes[i].load(Ordering::Relaxed);
                let messages = self.messages[i].load(Ordering::Relaxed);
                if messages > 0 {
                    links.push(LinkStats {
                        from: from as u8,
                        to: to as u8,
                        bytes,
                        messages,
                    });
                }
            }
        }
        MeterSnapshot {
            parties: self.parties,
            links,
            rounds: self.max_depth.load(Ordering::Relaxed),
        }
    }
}

impl MeterSnapshot {
    pub fn total_bytes(&self) -> u64 {
        self.links.iter().map(|l| l.bytes).sum()
    }

    pub fn total_messages(&self) -> u64 {
        self.links.iter().map(|l| l.messages).sum()
    }

    /// Bytes on the directed link `from -> to`.
    pub fn link_bytes(&self, from: PartyId, to: PartyId) -> u64 {
        self.link(from, to).map_or(0, |l| l.bytes)
    }

    pub fn link(&self, from: PartyId, to: PartyId) -> Option<&LinkStats> {
        self.links.iter().find(|l| l.from == from.0 && l.to == to.0)
    }

    /// Traffic since `before`: per-link differences, and the rounds added.
    pub fn since(&self, before: &MeterSnapshot) -> MeterSnapshot {
        let links = self
            .links
            .iter()
            .filter_map(|l| {
                let (b, m) = before
                    .link(PartyId(l.from), PartyId(l.to))
                    .map_or((0, 0), |o| (o.bytes, o.messages));
                (l.messages > m).then_some(LinkStats {
                    from: l.from,
                    to: l.to,
                    bytes: l.bytes - b,
                    messages: l.messages - m,
                })
            })
            .collect();
        MeterSnapshot {
            parties: self.parties,
            links,
            rounds: self.rounds - before.rounds,
        }
    }
}

/// A transport decorator that counts every envelope sent through it, and emits a `trace`-level
/// `envelope` event with sizes and key (never the payload) for per-operation attribution.
pub struct Metered {
    inner: Arc<dyn Transport>,
    meter: Arc<Meter>,
}

impl Metered {
    pub fn new(inner: Arc<dyn Transport>, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl Transport for Metered {
    fn party(&self) -> PartyId {
        self.inner.party()
    }

    fn parties(&self) -> usize {
        self.inner.parties()
    }

    fn send(&self, env: Envelope) -> Result<(), TransportError> {
        self.meter.record(&env);
        tracing::trace!(
            target: "securenn::envelope",
            from = env.from.0,
            to = env.to.0,
            key = %env.key,
            depth = env.depth,
            bytes = env.payload_len(),
            "envelope"
        );
        self.inner.send(env)
    }

    fn on_receive(&self, env: &Envelope) {
        self.inner.on_receive(env)
    }

    fn virtual_now(&self) -> Option<std::time::Duration> {
        self.inner.virtual_now()
    }

    fn cut_off(&self, peer: PartyId, reason: &str) {
        self.inner.cut_off(peer, reason)
    }
}
