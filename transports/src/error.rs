//! Transport-layer errors: they name the peer (and, where known, the rendezvous key).

use crate::PartyId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("{from} cannot send to {to}: no such party in a network of {parties}")]
    NoSuchParty {
        from: PartyId,
        to: PartyId,
        parties: usize,
    },
    #[error("{from} cannot send to itself (key {key})")]
    SelfSend { from: PartyId, key: String },
    #[error("{peer} is gone: its endpoint was closed (while sending key {key})")]
    PeerGone { peer: PartyId, key: String },
    #[error("malformed frame from {peer}: {reason}")]
    Malformed { peer: PartyId, reason: String },
    #[error("connection to {peer} failed: {reason}")]
    Connection { peer: PartyId, reason: String },
    #[error(
        "link {from} -> {to} is cut by a fault from {at:?} (virtual time): envelope {key} was dropped"
    )]
    Cut {
        from: PartyId,
        to: PartyId,
        key: String,
        at: std::time::Duration,
    },
}
