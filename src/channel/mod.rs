//! What protocol code sees of the network: a context with `send(to, value)` and
//! `recv(from)`, rendezvous keys derived from the operation path, causal depth, and the
//! PRGs shared with each peer. It never names actix, tokio or a transport: the party layer
//! supplies an [`Endpoint`].

mod ctx;
mod error;
mod wire;

pub use ctx::{Ctx, Endpoint, P0, P1, P2};
pub use error::ProtocolError;
pub use securenn_transports::PartyId;
pub use wire::{LowBits, Wire, Z67Wire};
