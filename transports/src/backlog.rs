//! The backlog: how many bytes each peer has delivered that the party has not consumed yet, and
//! the cap that turns a peer running ahead into back-pressure instead of memory.
//!
//! A transport that reads from the network (QUIC) admits a frame only while the peer's
//! unclaimed bytes stay under the cap ([`Backlog::admit`]); otherwise it stops reading that
//! peer's stream, so the peer's flow-control window fills and its sends wait (in its own memory,
//! not ours). The party releases the bytes of every envelope it consumes or drops
//! ([`Backlog::release`]). A frame that alone exceeds the cap is admitted when nothing else is
//! queued (the frame cap bounds it), so a large legitimate message never deadlocks.

use crate::PartyId;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Unclaimed bytes per peer, with a cap (see the module docs).
#[derive(Debug)]
pub struct Backlog {
    cap: u64,
    queued: Vec<AtomicU64>,
    peak: Vec<AtomicU64>,
    blocked: Vec<AtomicBool>,
    released: tokio::sync::Notify,
}

impl Backlog {
    /// A backlog for `parties` peers, each capped at `cap` unclaimed bytes.
    pub fn new(parties: usize, cap: u64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            cap,
            queued: (0..parties).map(|_| AtomicU64::new(0)).collect(),
            peak: (0..parties).map(|_| AtomicU64::new(0)).collect(),
            blocked: (0..parties).map(|_| AtomicBool::new(false)).collect(),
            released: tokio::sync::Notify::new(),
        })
    }

    /// A backlog that never holds a reader back: for transports inside one process, whose
    /// peers are this process's own parties.
    pub fn unbounded(parties: usize) -> std::sync::Arc<Self> {
        Self::new(parties, u64::MAX)
    }

    /// The cap on each peer's unclaimed bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes `peer` has delivered that the party still holds unclaimed.
    pub fn queued(&self, peer: PartyId) -> u64 {
        self.queued
            .get(peer.index())
            .map_or(0, |q| q.load(Ordering::Acquire))
    }

    /// The most bytes `peer` ever had queued unclaimed.
    pub fn peak(&self, peer: PartyId) -> u64 {
        self.peak
            .get(peer.index())
            .map_or(0, |q| q.load(Ordering::Acquire))
    }

    /// Whether a reader is holding `peer`'s stream back, waiting for the party to consume.
    pub fn is_blocked(&self, peer: PartyId) -> bool {
        self.blocked
            .get(peer.index())
            .is_some_and(|b| b.load(Ordering::Acquire))
    }

    /// Count `bytes` more from `peer` if they fit under the cap (or nothing is queued), and say
    /// whether they did; if not, `peer` is blocked until they do.
    pub fn try_admit(&self, peer: PartyId, bytes: u64) -> bool {
        let (Some(q), Some(peak)) = (self.queued.get(peer.index()), self.peak.get(peer.index()))
        else {
            return true;
        };
        let cap = self.cap;
        let admitted = q
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v == 0 || v.saturating_add(bytes) <= cap).then(|| v.saturating_add(bytes))
            })
            .map(|old| old.saturating_add(bytes));
        let blocked = &self.blocked[peer.index()];
        match admitted {
            Ok(now) => {
                peak.fetch_max(now, Ordering::AcqRel);
                blocked.store(false, Ordering::Release);
                true
            }
            Err(_) => {
                // Before the caller tells anyone, so that whoever hears of it sees the flag.
                blocked.store(true, Ordering::Release);
                false
            }
        }
    }

    /// Wait until `bytes` more from `peer` fit (see [`Backlog::try_admit`]), then count them.
    /// While it waits, [`Backlog::is_blocked`] says so.
    pub async fn admit(&self, peer: PartyId, bytes: u64) {
        loop {
            let released = self.released.notified();
            if self.try_admit(peer, bytes) {
                return;
            }
            released.await;
        }
    }

    /// The party consumed or dropped `bytes` of `peer`'s: wake a reader waiting for room.
    pub fn release(&self, peer: PartyId, bytes: u64) {
        if let Some(q) = self.queued.get(peer.index()) {
            let _ = q.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(bytes))
            });
            self.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_under_the_cap_and_one_large_frame_alone() {
        let b = Backlog::new(3, 100);
        let p = PartyId(1);
        assert!(b.try_admit(p, 60));
        assert!(b.try_admit(p, 40));
        assert!(!b.try_admit(p, 1), "at the cap");
        b.release(p, 100);
        assert_eq!(b.queued(p), 0);
        assert!(b.try_admit(p, 500), "a frame over the cap alone");
        assert!(!b.try_admit(p, 1));
        assert_eq!(b.peak(p), 500);
        b.release(p, 1000);
        assert_eq!(b.queued(p), 0, "release saturates");
        assert!(b.try_admit(PartyId(7), 1), "an unknown peer is not tracked");
    }

    #[test]
    fn a_waiting_reader_resumes_on_release() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = Backlog::new(2, 10);
        let p = PartyId(0);
        assert!(b.try_admit(p, 10));
        rt.block_on(async {
            let waiter = async {
                b.admit(p, 5).await;
                b.queued(p)
            };
            let releaser = async {
                tokio::task::yield_now().await;
                assert!(b.is_blocked(p));
                b.release(p, 8);
            };
            let (queued, ()) = tokio::join!(waiter, releaser);
            assert_eq!(queued, 7);
            assert!(!b.is_blocked(p));
        });
    }
}
