//! Routing of incoming envelopes to the receives that wait for them, by (session, sender, key).

use crate::channel::ProtocolError;
use futures::channel::oneshot;
use securenn_transports::{Envelope, PartyId, TransportError};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

type Slot = (u64, PartyId, String);

/// Envelopes that arrived before anyone asked, and receives that wait for envelopes.
pub struct Mailbox {
    me: PartyId,
    arrived: HashMap<Slot, Envelope>,
    waiting: HashMap<Slot, oneshot::Sender<Result<Envelope, ProtocolError>>>,
    gone: HashMap<PartyId, String>,
}

impl Mailbox {
    pub fn new(me: PartyId) -> Self {
        Self {
            me,
            arrived: HashMap::new(),
            waiting: HashMap::new(),
            gone: HashMap::new(),
        }
    }

    /// Hand an incoming envelope to its receive, or keep it until asked for.
    pub fn deliver(&mut self, env: Envelope) {
        let slot = (env.session, env.from, env.key.clone());
        if let Some(tx) = self.waiting.remove(&slot) {
            // The receiver may have timed out meanwhile; then the envelope is dropped.
            let _ = tx.send(Ok(env));
            return;
        }
        match self.arrived.entry(slot) {
            Entry::Occupied(o) => {
                let (_, from, key) = o.key();
                tracing::warn!(party = %self.me, from = %from, key = %key, "duplicate envelope dropped");
            }
            Entry::Vacant(v) => {
                v.insert(env);
            }
        }
    }

    /// A peer's connection failed: fail every receive waiting on it, and later ones too.
    pub fn fail_peer(&mut self, err: &TransportError) {
        let peer = match err {
            TransportError::PeerGone { peer, .. }
            | TransportError::Malformed { peer, .. }
            | TransportError::Connection { peer, .. } => *peer,
            TransportError::NoSuchParty { to, .. } => *to,
            // Both ends of a cut link learn of it; each loses the other end.
            TransportError::Cut { from, to, .. } => {
                if *from == self.me {
                    *to
                } else {
                    *from
                }
            }
            TransportError::SelfSend { from, .. } => *from,
        };
        self.fail(peer, err.to_string());
    }

    /// `peer` can no longer be heard from: fail every receive waiting on it, and later ones.
    pub fn fail(&mut self, peer: PartyId, reason: String) {
        let slots: Vec<Slot> = self
            .waiting
            .keys()
            .filter(|s| s.1 == peer)
            .cloned()
            .collect();
        for slot in slots {
            if let Some(tx) = self.waiting.remove(&slot) {
                let _ = tx.send(Err(self.gone_error(peer, &slot.2, &reason)));
            }
        }
        self.gone.entry(peer).or_insert(reason);
    }

    fn gone_error(&self, peer: PartyId, key: &str, reason: &str) -> ProtocolError {
        ProtocolError::PeerGone {
            party: self.me,
            peer,
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Ask for the envelope at `(session, from, key)`.
    pub fn expect(
        &mut self,
        session: u64,
        from: PartyId,
        key: String,
    ) -> oneshot::Receiver<Result<Envelope, ProtocolError>> {
        let (tx, rx) = oneshot::channel();
        let slot = (session, from, key);
        if let Some(env) = self.arrived.remove(&slot) {
            let _ = tx.send(Ok(env));
        } else if let Some(reason) = self.gone.get(&from) {
            let _ = tx.send(Err(self.gone_error(from, &slot.2, reason)));
        } else {
            self.waiting.insert(slot, tx);
        }
        rx
    }

    /// Forget a receive that gave up.
    pub fn cancel(&mut self, session: u64, from: PartyId, key: &str) {
        self.waiting.remove(&(session, from, key.to_string()));
    }

    /// Envelopes received but never asked for (non-zero after a job means a protocol bug).
    pub fn unclaimed(&self) -> usize {
        self.arrived.len()
    }
}
