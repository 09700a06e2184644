//! The protocol context: operation path, rendezvous keys, causal depth and per-op PRGs.
//!
//! Every context is also a `tracing` span (target `securenn::op`, name `op`, fields `name`,
//! `path`, `shape`, `depth`, `depth_end`, `fork`; the job's root is `job` with `party` and
//! `session`), so a subscriber sees the operation tree of each party: what [`crate::metrics`]
//! attributes messages, rounds and time to. Spans carry shapes and sizes, never values.

use super::{ProtocolError, Wire};
use crate::fixed::FixedPoint;
use crate::share::{Prg, Seeds, derive_prg};
use futures::future::LocalBoxFuture;
use securenn_transports::{Envelope, PartyId, TransportError};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub const P0: PartyId = PartyId(0);
pub const P1: PartyId = PartyId(1);
pub const P2: PartyId = PartyId(2);

/// What the party layer provides: sending envelopes, and waiting for the one with a given
/// rendezvous key (with a timeout, so a missing peer is an error, never a hang).
pub trait Endpoint {
    fn me(&self) -> PartyId;
    fn send(&self, env: Envelope) -> Result<(), TransportError>;
    fn recv(
        &self,
        session: u64,
        from: PartyId,
        key: String,
    ) -> LocalBoxFuture<'static, Result<Envelope, ProtocolError>>;
}

struct Shared {
    endpoint: Rc<dyn Endpoint>,
    session: u64,
    seeds: Option<Seeds>,
    fixed: FixedPoint,
}

/// Counters of one operation path. Both ends of a message advance them in the same order (SPMD),
/// so they derive the same rendezvous key and the same PRG streams.
#[derive(Default)]
struct PathState {
    /// How many children of each name this path has made.
    children: std::collections::HashMap<String, u32>,
    sent: [u32; 3],
    received: [u32; 3],
    prgs: [u32; 3],
    local_prgs: u32,
}

/// The operation's span; when the operation ends (its last context clone drops) it records the
/// causal depth reached, so a subscriber knows the rounds the operation added.
struct OpSpan {
    span: tracing::Span,
    depth: Rc<Cell<u64>>,
}

impl Drop for OpSpan {
    fn drop(&mut self) {
        if !self.span.is_disabled() {
            self.span.record("depth_end", self.depth.get());
        }
    }
}

/// A party's view of one operation: cheap to clone (clones share the path and its counters).
#[derive(Clone)]
pub struct Ctx {
    shared: Rc<Shared>,
    path: Rc<str>,
    state: Rc<RefCell<PathState>>,
    depth: Rc<Cell<u64>>,
    op: Rc<OpSpan>,
}

impl Ctx {
    /// The root context of a job. `seeds` is `None` only while the seeds are being agreed.
    /// `depth` is the party's causal depth when the job starts (what earlier jobs reached), so
    /// rounds add up across the jobs of a session.
    pub fn new(
        endpoint: Rc<dyn Endpoint>,
        session: u64,
        seeds: Option<Seeds>,
        fixed: FixedPoint,
        root: &str,
        depth: u64,
    ) -> Self {
        let party = endpoint.me().0;
        let span = tracing::debug_span!(
            target: "securenn::op",
            parent: None,
            "job",
            name = root,
            path = root,
            party,
            session,
            depth,
            depth_end = tracing::field::Empty,
        );
        let depth = Rc::new(Cell::new(depth));
        Self {
            shared: Rc::new(Shared {
                endpoint,
                session,
                seeds,
                fixed,
            }),
            path: root.into(),
            state: Rc::default(),
            op: Rc::new(OpSpan {
                span,
                depth: depth.clone(),
            }),
            depth,
        }
    }

    /// A context with no peers, for running protocol-generic code in the clear (the plaintext
    /// reference backend). Sending from it is an error.
    pub fn local(fixed: FixedPoint) -> Self {
        struct NoPeers;
        impl Endpoint for NoPeers {
            fn me(&self) -> PartyId {
                P0
            }
            fn send(&self, env: Envelope) -> Result<(), TransportError> {
                Err(TransportError::NoSuchParty {
                    from: env.from,
                    to: env.to,
                    parties: 1,
                })
            }
            fn recv(
                &self,
                _: u64,
                from: PartyId,
                key: String,
            ) -> LocalBoxFuture<'static, Result<Envelope, ProtocolError>> {
                Box::pin(async move {
                    Err(ProtocolError::Unsupported {
                        op: key,
                        reason: format!("a local context has no peer {from}"),
                    })
                })
            }
        }
        let seeds = Seeds::new(P0, [None, Some([1; 32]), Some([2; 32])], [0; 32]);
        Self::new(Rc::new(NoPeers), 0, Some(seeds), fixed, "local", 0)
    }

    pub fn me(&self) -> PartyId {
        self.shared.endpoint.me()
    }

    pub fn session(&self) -> u64 {
        self.shared.session
    }

    pub fn fixed(&self) -> FixedPoint {
        self.shared.fixed
    }

    /// The operation path, e.g. `infer/batch~2/4.dense/matmul`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Causal depth reached so far on this path.
    pub fn depth(&self) -> u64 {
        self.depth.get()
    }

    /// `parent/name` for the first child called `name`, `parent/name~k` for the k-th repeat, so
    /// paths read like the operation tree and stay unique (names never contain `~`).
    fn child_path(&self, name: &str) -> Rc<str> {
        let mut st = self.state.borrow_mut();
        let n = st.children.entry(name.to_string()).or_default();
        let path = if *n == 0 {
            format!("{}/{name}", self.path)
        } else {
            format!("{}/{name}~{n}", self.path)
        };
        *n += 1;
        path.into()
    }

    /// The span of a sub-operation `name` at `path`, starting at causal depth `depth`.
    fn op_span(&self, name: &str, path: &str, fork: bool, depth: u64) -> tracing::Span {
        tracing::debug_span!(
            target: "securenn::op",
            parent: &self.op.span,
            "op",
            name,
            path,
            fork,
            depth,
            shape = tracing::field::Empty,
            depth_end = tracing::field::Empty,
        )
    }

    /// Record the operation's shape on its span (e.g. `[100, 784, 128]` for a matmul
    /// m×n×v): sizes only, never values. [`crate::metrics::theory`] reads it to give the
    /// paper's cost of the operation.
    pub fn shape(&self, dims: &[usize]) {
        if !self.op.span.is_disabled() {
            let s = dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            self.op.span.record("shape", s.as_str());
        }
    }

    /// Count this operation's rounds and time from here: for an operation whose first flight
    /// went out earlier, beside other work (DReLU sends ComputeMSB's deal with ShareConvert).
    pub fn count_from_here(&self) {
        if !self.op.span.is_disabled() {
            self.op.span.record("depth", self.depth.get());
        }
    }

    /// A sub-operation run in sequence with its parent: it shares the parent's depth.
    pub fn child(&self, name: &str) -> Self {
        let path = self.child_path(name);
        let span = self.op_span(name, &path, false, self.depth.get());
        Self {
            shared: self.shared.clone(),
            path,
            state: Rc::default(),
            depth: self.depth.clone(),
            op: Rc::new(OpSpan {
                span,
                depth: self.depth.clone(),
            }),
        }
    }

    /// A branch run concurrently with its siblings: it starts at the parent's depth and keeps
    /// its own; [`Ctx::join`] brings the deepest branch back, so concurrent branches do not add
    /// up their rounds.
    pub fn fork(&self, name: &str) -> Self {
        let path = self.child_path(name);
        let span = self.op_span(name, &path, true, self.depth.get());
        let depth = Rc::new(Cell::new(self.depth.get()));
        Self {
            shared: self.shared.clone(),
            path,
            state: Rc::default(),
            op: Rc::new(OpSpan {
                span,
                depth: depth.clone(),
            }),
            depth,
        }
    }

    pub fn join(&self, branches: &[&Ctx]) {
        let d = branches
            .iter()
            .map(|b| b.depth())
            .fold(self.depth(), u64::max);
        self.depth.set(d);
    }

    fn key(&self, seq: u32) -> String {
        format!("{}#{seq}", self.path)
    }

    /// Send `v` to `to`. Non-blocking: the transport queues it.
    pub fn send<T: Wire>(&self, to: PartyId, v: &T) -> Result<(), ProtocolError> {
        let seq = {
            let mut st = self.state.borrow_mut();
            let slot = st
                .sent
                .get_mut(to.index())
                .ok_or_else(|| self.no_party(to))?;
            let s = *slot;
            *slot += 1;
            s
        };
        let mut payload = Vec::new();
        v.write(&mut payload);
        let env = Envelope {
            session: self.shared.session,
            from: self.me(),
            to,
            key: self.key(seq),
            // Peers' depths are capped on arrival (party::mailbox::MAX_DEPTH); saturate anyway.
            depth: self.depth.get().saturating_add(1),
            arrival: 0,
            payload,
        };
        // The transport's envelope event fires inside this operation's span.
        let _entered = self.op.span.enter();
        self.shared.endpoint.send(env)?;
        Ok(())
    }

    /// Wait for the next value from `from` on this path, of the given shape.
    pub async fn recv<T: Wire>(&self, from: PartyId, shape: &T::Shape) -> Result<T, ProtocolError> {
        let seq = {
            let mut st = self.state.borrow_mut();
            let slot = st
                .received
                .get_mut(from.index())
                .ok_or_else(|| self.no_party(from))?;
            let s = *slot;
            *slot += 1;
            s
        };
        let key = self.key(seq);
        let env = self
            .shared
            .endpoint
            .recv(self.shared.session, from, key.clone())
            .await?;
        self.depth.set(self.depth.get().max(env.depth));
        self.op.span.in_scope(|| {
            tracing::trace!(
                target: "securenn::recv",
                from = from.0,
                key = %key,
                depth = env.depth,
                arrival = env.arrival,
                bytes = env.payload.len(),
                "received"
            )
        });
        let expected = T::wire_len(shape);
        if env.payload.len() != expected {
            return Err(ProtocolError::Malformed {
                from,
                key,
                reason: format!("expected {expected} bytes, got {}", env.payload.len()),
            });
        }
        T::read(&env.payload, shape).map_err(|reason| ProtocolError::Malformed {
            from,
            key,
            reason,
        })
    }

    fn no_party(&self, p: PartyId) -> ProtocolError {
        ProtocolError::Input {
            op: self.path.to_string(),
            reason: format!("no party {p} in a three-party session"),
        }
    }

    fn seeds(&self) -> &Seeds {
        self.shared.seeds.as_ref().unwrap_or_else(|| {
            panic!(
                "{}: PRG used before the session's seed agreement",
                self.path
            )
        })
    }

    /// A fresh PRG stream shared with `peer` (common randomness, no messages): the n-th call on
    /// this path with this peer gives the same stream at both parties.
    pub fn prg_with(&self, peer: PartyId) -> Prg {
        let n = {
            let mut st = self.state.borrow_mut();
            let slot = &mut st.prgs[peer.index()];
            let n = *slot;
            *slot += 1;
            n
        };
        let (lo, hi) = (self.me().min(peer), self.me().max(peer));
        derive_prg(
            self.seeds().pair(peer),
            &format!("{}@{}{}#{n}", self.path, lo.0, hi.0),
        )
    }

    /// A fresh PRG stream known to this party only.
    pub fn prg_local(&self) -> Prg {
        let n = {
            let mut st = self.state.borrow_mut();
            let n = st.local_prgs;
            st.local_prgs += 1;
            n
        };
        derive_prg(self.seeds().local(), &format!("{}@local#{n}", self.path))
    }
}
