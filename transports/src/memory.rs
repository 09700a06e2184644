//! The in-memory transport: one unbounded tokio channel per receiving party, inside one process.

use crate::{
    Backlog, Delivery, Endpoint, Envelope, Meter, Metered, PartyId, Transport, TransportError,
    destination,
};
use std::sync::Arc;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// Builds the endpoints of an in-memory network of `n` parties.
pub struct MemoryNetwork;

struct MemoryTransport {
    me: PartyId,
    peers: Vec<UnboundedSender<Delivery>>,
}

impl MemoryNetwork {
    /// Endpoints for parties 0..n, metered by `meter`. Channels are FIFO per sender, so each
    /// directed link is FIFO, as the [`Transport`] contract requires.
    pub fn endpoints(n: usize, meter: &Arc<Meter>) -> Vec<Endpoint> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded_channel()).unzip();
        rxs.into_iter()
            .enumerate()
            .map(|(i, incoming)| {
                let raw: Arc<dyn Transport> = Arc::new(MemoryTransport {
                    me: PartyId(i as u8),
                    peers: txs.clone(),
                });
                Endpoint {
                    transport: Arc::new(Metered::new(raw, meter.clone())),
                    incoming,
                    backlog: Backlog::unbounded(n),
                }
            })
            .collect()
    }
}

impl Transport for MemoryTransport {
    fn party(&self) -> PartyId {
        self.me
    }

    fn parties(&self) -> usize {
        self.peers.len()
    }

    fn send(&self, env: Envelope) -> Result<(), TransportError> {
        let tx = destination(self.me, &env, &self.peers)?;
        let (peer, key) = (env.to, env.key.clone());
        tx.send(Ok(env))
            .map_err(|_| TransportError::PeerGone { peer, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(from: u8, to: u8, key: &str, depth: u64, len: usize) -> Envelope {
        Envelope {
            session: 1,
            from: PartyId(from),
            to: PartyId(to),
            key: key.into(),
            depth,
            arrival: 0,
            payload: vec![0; len],
        }
    }

    #[test]
    fn delivers_fifo_and_meters_each_link() {
        let meter = Meter::new(3);
        let mut eps = MemoryNetwork::endpoints(3, &meter);
        for i in 0..5 {
            eps[0]
                .transport
                .send(env(0, 1, &format!("k{i}"), 1, 8))
                .unwrap();
        }
        eps[2].transport.send(env(2, 1, "c", 4, 24)).unwrap();
        for i in 0..5 {
            let got = eps[1].incoming.try_recv().unwrap().unwrap();
            if got.from == PartyId(0) {
                assert_eq!(got.key, format!("k{i}"));
            }
        }
        let s = meter.snapshot();
        assert_eq!(s.link_bytes(PartyId(0), PartyId(1)), 40);
        assert_eq!(s.link(PartyId(0), PartyId(1)).unwrap().messages, 5);
        assert_eq!(s.link_bytes(PartyId(2), PartyId(1)), 24);
        assert_eq!(s.total_bytes(), 64);
        assert_eq!(s.rounds, 4);
        let before = s.clone();
        eps[1].transport.send(env(1, 0, "x", 5, 16)).unwrap();
        let d = meter.snapshot().since(&before);
        assert_eq!(d.total_bytes(), 16);
        assert_eq!(d.total_messages(), 1);
        assert_eq!(d.rounds, 1);
    }

    #[test]
    fn bad_destinations_are_typed_errors() {
        let meter = Meter::new(3);
        let eps = MemoryNetwork::endpoints(3, &meter);
        assert!(matches!(
            eps[0].transport.send(env(0, 0, "k", 1, 1)),
            Err(TransportError::SelfSend { .. })
        ));
        assert!(matches!(
            eps[0].transport.send(env(0, 9, "k", 1, 1)),
            Err(TransportError::NoSuchParty { .. })
        ));
        let mut eps = eps;
        let dropped = eps.remove(1);
        drop(dropped);
        assert!(matches!(
            eps[0].transport.send(env(0, 1, "k", 1, 1)),
            Err(TransportError::PeerGone { .. })
        ));
    }
}
