//! Errors of protocol execution: each names the operation path and the party or peer involved,
//! never a secret value.

use securenn_transports::{PartyId, TransportError};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "{party} waited {after:?} for {peer} at {key} and gave up: is {peer} running and reachable?"
    )]
    Timeout {
        party: PartyId,
        peer: PartyId,
        key: String,
        after: Duration,
    },
    #[error("malformed message from {from} at {key}: {reason}")]
    Malformed {
        from: PartyId,
        key: String,
        reason: String,
    },
    #[error("{peer} disconnected while {party} waited at {key}: {reason}")]
    PeerGone {
        party: PartyId,
        peer: PartyId,
        key: String,
        reason: String,
    },
    /// Another party failed or stopped first (`by`): every receive of `party`, from any peer,
    /// failed with its reason, which names `by` first ("P2 stopped (SIGTERM)").
    #[error("{reason}")]
    Aborted {
        party: PartyId,
        by: PartyId,
        reason: String,
    },
    /// The message holds the transport's error; it is not chained as a `source` too (that would
    /// print it twice in `{e:#}`).
    #[error("transport error: {0}")]
    Transport(TransportError),
    #[error("{op}: not supported: {reason}")]
    Unsupported { op: String, reason: String },
    #[error("{op}: bad input: {reason}")]
    Input { op: String, reason: String },
    #[error("{op}: session not set up: run the seed agreement before jobs")]
    NoSession { op: String },
}

impl From<TransportError> for ProtocolError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}
