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
    /// The peer closed the connection saying why (its own error, escaped and capped): what its
    /// abort notice said, in case the notice was not read before the close.
    #[error("{peer} closed the connection: {reason}")]
    Closed { peer: PartyId, reason: String },
    /// Not fatal by itself: the peer's stream is paused because the party holds `queued` bytes
    /// of it unclaimed, at the cap. The party decides whether that is a flood (it waits for a
    /// message from the peer that can only come after what is queued) or a peer running ahead.
    #[error(
        "{peer} has {queued} bytes queued unclaimed, at the cap of {cap} bytes: its stream is paused"
    )]
    Backlog {
        peer: PartyId,
        queued: u64,
        cap: u64,
    },
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

/// A string a peer sent (a rendezvous key, an abort reason, a close reason), made safe for a log
/// line or an error message: control characters, quotes and backslashes escaped, and cut after
/// `max` characters with the number of characters left out.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 16);
    for (taken, c) in s.chars().enumerate() {
        if taken == max {
            let rest = s.chars().count() - taken;
            out.push_str(&format!("... ({rest} more characters)"));
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn peer_strings_are_escaped_and_capped() {
        assert_eq!(
            printable("infer/batch~2/relu#0", 100),
            "infer/batch~2/relu#0"
        );
        assert_eq!(printable("a\nb\u{1b}[31m\"", 100), "a\\nb\\u{1b}[31m\\\"");
        let long = "x".repeat(10_000);
        let p = printable(&long, 16);
        assert!(p.starts_with(&"x".repeat(16)));
        assert!(p.ends_with("(9984 more characters)"), "{p}");
    }
}
