//! Transports for securenn parties: envelopes between party ids, per-link metering with causal
//! depth, the in-memory transport and the network simulator (latency, jitter, bandwidth, loss,
//! faults; virtual or real clock). This crate knows nothing of MPC; every transport plugs in
//! behind the same [`Transport`] trait.

mod backlog;
mod envelope;
mod error;
mod memory;
mod meter;
pub mod offload;
pub mod quic;
pub mod sim;

pub use backlog::Backlog;
pub use envelope::{Envelope, FrameError, KEPT_OVERHEAD, PartyId};
pub use error::{TransportError, printable};
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
    /// The party's protocol has consumed `env`: a transport with a virtual clock advances the
    /// party's clock to the envelope's arrival. Called on the party's own thread.
    fn on_receive(&self, _env: &Envelope) {}
    /// The party's virtual time now (its compute so far plus its waiting), for transports that
    /// keep one. Called on the party's own thread.
    fn virtual_now(&self) -> Option<std::time::Duration> {
        None
    }
    /// Stop hearing from `peer`: the party found it misbehaving (`reason` says how). A network
    /// transport closes the connection, so the peer can no longer use this party's memory or
    /// time; transports inside one process have nothing to close.
    fn cut_off(&self, _peer: PartyId, _reason: &str) {}
}

/// One party's endpoint: its sending half, its incoming stream, and the backlog of what each
/// peer delivered that the party has not consumed yet (the party releases what it consumes or
/// drops; a network transport holds a peer back at the backlog's cap).
pub struct Endpoint {
    pub transport: std::sync::Arc<dyn Transport>,
    pub incoming: Incoming,
    pub backlog: std::sync::Arc<Backlog>,
}

/// The queue of `env`'s destination among `peers` (indexed by party id), or the error for a
/// message to oneself or to a party that does not exist. Shared by the transports.
pub(crate) fn destination<'a, T>(
    me: PartyId,
    env: &Envelope,
    peers: &'a [T],
) -> Result<&'a T, TransportError> {
    if env.to == me {
        return Err(TransportError::SelfSend {
            from: me,
            key: env.key.clone(),
        });
    }
    peers
        .get(env.to.index())
        .ok_or(TransportError::NoSuchParty {
            from: me,
            to: env.to,
            parties: peers.len(),
        })
}
