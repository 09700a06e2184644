//! The envelope every transport moves, and its length-prefixed frame encoding for byte streams.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A party's id: 0, 1, 2 in a three-party session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartyId(pub u8);

impl PartyId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

/// A message between two parties.
///
/// `key` is the deterministic rendezvous key both ends derive from the operation path, so the
/// receiver can route the envelope to the receive that waits for it without negotiation.
/// `depth` is the sender's causal depth plus one (see DESIGN.md, "Rounds").
/// `payload` holds the protocol value, fixed-width little-endian for ring tensors.
/// `arrival` is the virtual time (nanoseconds) at which the network simulator delivers it; 0 for
/// transports without a virtual clock.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub session: u64,
    pub from: PartyId,
    pub to: PartyId,
    pub key: String,
    pub depth: u64,
    pub arrival: u64,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Envelope {
    // Never print the payload: it may be a share or a masked value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("session", &self.session)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("key", &self.key)
            .field("depth", &self.depth)
            .field("arrival", &self.arrival)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What a receiver counts for a kept envelope beyond its payload and key bytes: the decoded
/// [`Envelope`], the frame's header, the receiving party's map slot for it with a copy of its
/// key (keys are op paths of tens of bytes; a party refuses keys over 512) and the allocator's
/// rounding. An envelope with an empty payload is not free to keep: without this, a peer could
/// park millions of them under any unclaimed-bytes cap (the security review measured 1.4 GiB of
/// memory in 40 s). Generous on purpose: a job sends at most a few thousand envelopes, so this
/// costs the cap a few MiB at most.
pub const KEPT_OVERHEAD: u64 = 1024;

/// Header of a framed envelope (everything but the payload bytes).
#[derive(Serialize, Deserialize)]
struct Header {
    session: u64,
    from: PartyId,
    to: PartyId,
    key: String,
    depth: u64,
    arrival: u64,
    payload_len: u64,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {got} bytes is shorter than its {needed}-byte header")]
    Short { needed: usize, got: usize },
    #[error("frame header does not decode: {0}")]
    Header(String),
    #[error("frame header announces a {announced}-byte payload but {present} bytes follow")]
    PayloadLength { announced: u64, present: usize },
    #[error("frame header is {0} bytes, over the 64 KiB limit")]
    HeaderTooLarge(usize),
}

/// Largest header accepted when decoding (keys are short op paths).
const MAX_HEADER: usize = 64 * 1024;

fn codec() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
> {
    bincode::config::legacy()
}

impl Envelope {
    /// Size of the payload in bytes: what the meter counts.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// Bytes a receiver counts against the sender's unclaimed-bytes cap while it keeps this
    /// envelope: payload, key and [`KEPT_OVERHEAD`].
    pub fn held_bytes(&self) -> u64 {
        self.payload.len() as u64 + self.key.len() as u64 + KEPT_OVERHEAD
    }

    /// Encode as `u32 header length | bincode header | payload`. The payload is copied raw, so a
    /// random u64 costs exactly 8 bytes on the wire.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let header = Header {
            session: self.session,
            from: self.from,
            to: self.to,
            key: self.key.clone(),
            depth: self.depth,
            arrival: self.arrival,
            payload_len: self.payload.len() as u64,
        };
        let h = bincode::serde::encode_to_vec(&header, codec()).expect("header encodes");
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.payload);
    }

    /// Decode one frame produced by [`Envelope::encode_frame`]; never panics on bad input.
    pub fn decode_frame(frame: &[u8]) -> Result<Self, FrameError> {
        if frame.len() < 4 {
            return Err(FrameError::Short {
                needed: 4,
                got: frame.len(),
            });
        }
        let hlen = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        if hlen > MAX_HEADER {
            return Err(FrameError::HeaderTooLarge(hlen));
        }
        if frame.len() < 4 + hlen {
            return Err(FrameError::Short {
                needed: 4 + hlen,
                got: frame.len(),
            });
        }
        let cfg = codec().with_limit::<MAX_HEADER>();
        let (header, used): (Header, usize) =
            bincode::serde::decode_from_slice(&frame[4..4 + hlen], cfg)
                .map_err(|e| FrameError::Header(e.to_string()))?;
        if used != hlen {
            return Err(FrameError::Header(format!(
                "header has {} trailing bytes",
                hlen - used
            )));
        }
        let payload = &frame[4 + hlen..];
        if header.payload_len != payload.len() as u64 {
            return Err(FrameError::PayloadLength {
                announced: header.payload_len,
                present: payload.len(),
            });
        }
        Ok(Self {
            session: header.session,
            from: header.from,
            to: header.to,
            key: header.key,
            depth: header.depth,
            arrival: header.arrival,
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            session: 7,
            from: PartyId(0),
            to: PartyId(2),
            key: "infer/0.layer/1.matmul#0".into(),
            depth: 3,
            arrival: 12345,
            payload: (0..=255u8).collect(),
        }
    }

    #[test]
    fn frame_round_trip_and_payload_is_raw() {
        let e = sample();
        let mut buf = Vec::new();
        e.encode_frame(&mut buf);
        assert!(buf.ends_with(&e.payload));
        assert_eq!(Envelope::decode_frame(&buf).unwrap(), e);
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        let mut buf = Vec::new();
        sample().encode_frame(&mut buf);
        for cut in [0, 3, 4, 10, buf.len() - 1] {
            assert!(Envelope::decode_frame(&buf[..cut]).is_err(), "cut {cut}");
        }
        let mut garbage = vec![0xffu8; 64];
        assert!(Envelope::decode_frame(&garbage).is_err());
        garbage[..4].copy_from_slice(&8u32.to_le_bytes());
        assert!(Envelope::decode_frame(&garbage).is_err());
    }

    #[test]
    fn debug_never_shows_payload() {
        let s = format!("{:?}", sample());
        assert!(s.contains("payload_bytes: 256"));
        assert!(!s.contains("255"));
    }
}
