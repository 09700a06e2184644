//! Transports for securenn parties: envelopes between party ids, per-link metering with causal
//! depth, and the in-memory transport. This crate knows nothing of MPC; the simulator and QUIC
//! transports plug in behind the same [`Transport`] trait.

mod envelope;
mod error;
mod memory;
mod meter;

pub use envelope::{Envelope, FrameError, PartyId};
pub use error::TransportError;
pub use memory::MemoryNetwork;
pub use meter::{EnvelopeRecord, LinkStats, Meter, MeterSnapshot, Metered};

/// What a party receives from its transport: an envelope, or an error naming the peer it
/// concerns (a broken connection, an undecodable frame).
pub type Delivery = Result<Envelope, TransportError>;

/// The receiving half of a party's transport endpoint.
pub type Incoming = tokio::sync::mpsc::UnboundedReceiver<Delivery>;

/// Moves envelopes from one party to the others.
///
/// Every implementation is reliable and FIFO per directed link as seen by the protocol.
/// `send` never blocks: it queues the envelope; delivery happens on the receiver's
/// [`Incoming`] stream.
pub trait Transport: Send + Sync + 'static {
    /// The party this endpoint belongs to.
    fn party(&self) -> PartyId;
    /// How many parties the network connects.
    fn parties(&self) -> usize;
    /// Queue `env` for delivery to `env.to`.
    fn send(&self, env: Envelope) -> Result<(), TransportError>;
}

/// One party's endpoint: its sending half and its incoming stream.
pub struct Endpoint {
    pub transport: std::sync::Arc<dyn Transport>,
    pub incoming: Incoming,
}
