//! The party actor.

use super::mailbox::Mailbox;
use super::setup::{SeedSource, agree_seeds};
use crate::channel::{Ctx, Endpoint, PartyId, ProtocolError};
use crate::fixed::FixedPoint;
use crate::share::Seeds;
use actix::prelude::*;
use futures::future::LocalBoxFuture;
pub use securenn_transports::sim::thread_cpu_time;
use securenn_transports::{Delivery, Envelope, Incoming, Transport, TransportError, offload};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Settings every party of a session shares.
#[derive(Clone, Copy, Debug)]
pub struct PartyConfig {
    /// How long a receive waits before failing with [`ProtocolError::Timeout`]. Default 120 s:
    /// long enough for a peer's largest step (a batch-128 convolution on a slow machine), short
    /// enough that a dead peer is reported within minutes.
    pub recv_timeout: Duration,
    pub fixed: FixedPoint,
}

impl Default for PartyConfig {
    fn default() -> Self {
        Self {
            recv_timeout: Duration::from_secs(120),
            fixed: FixedPoint::default(),
        }
    }
}

/// A job: the protocol future a party runs, built on the party's thread from its context.
pub type JobFn<R> =
    Box<dyn FnOnce(Ctx) -> LocalBoxFuture<'static, Result<R, ProtocolError>> + Send>;

/// Agree the session's seeds.
pub struct Setup {
    pub session: u64,
    pub source: SeedSource,
}

impl Message for Setup {
    type Result = Result<(), ProtocolError>;
}

/// Run a job in the current session; the result comes back to the sender.
///
/// A job starts after a barrier: every party begins at `start_depth`, the deepest causal depth
/// of the session so far, so the job's rounds are the depth it adds on top.
pub struct Run<R> {
    pub name: String,
    pub start_depth: u64,
    pub job: JobFn<R>,
}

impl<R: Send + 'static> Message for Run<R> {
    type Result = Result<JobOutput<R>, ProtocolError>;
}

/// A job's result at one party, with the CPU time the party spent on it (its thread's, plus
/// what its parallel sections ran on pool threads).
#[derive(Debug)]
pub struct JobOutput<R> {
    pub value: R,
    pub cpu: Duration,
}

/// One party: its transport endpoint, mailbox, and session state.
pub struct PartyActor {
    me: PartyId,
    endpoint: Rc<PartyEndpoint>,
    incoming: Option<Incoming>,
    config: PartyConfig,
    session: Rc<RefCell<Option<(u64, Seeds)>>>,
    /// Causal depth reached by the jobs run so far.
    depth: Rc<Cell<u64>>,
    /// How many jobs (and setups) of each name this party has run: the k-th repeat of `name`
    /// runs at the root path `name~k`, so every job's PRG streams and rendezvous keys are its
    /// own (two jobs of one name on the same seeds would otherwise repeat every mask, and a
    /// server could subtract two masked values to learn the difference of their inputs), and a
    /// finished job's root never comes back. Every party runs the same setups and jobs in the
    /// same order, so they agree on the roots.
    jobs: HashMap<String, u32>,
    /// Jobs (and setups) running now: a transport failure outside them is no news.
    running: Rc<Cell<usize>>,
}

/// Counts a running job while it lives.
struct Running(Rc<Cell<usize>>);

impl Running {
    fn new(count: &Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        Self(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl PartyActor {
    pub fn new(endpoint: securenn_transports::Endpoint, config: PartyConfig) -> Self {
        let securenn_transports::Endpoint {
            transport,
            incoming,
            backlog,
        } = endpoint;
        let me = transport.party();
        Self {
            me,
            endpoint: Rc::new(PartyEndpoint {
                me,
                mailbox: Rc::new(RefCell::new(Mailbox::new(me, transport.clone(), backlog))),
                transport,
                timeout: config.recv_timeout,
            }),
            incoming: Some(incoming),
            config,
            session: Rc::default(),
            depth: Rc::default(),
            jobs: HashMap::new(),
            running: Rc::default(),
        }
    }
}

impl Actor for PartyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // This arbiter thread is this party's: time its spans on its clock.
        crate::metrics::set_thread_clock(Some(self.endpoint.transport.clone()));
        if let Some(rx) = self.incoming.take() {
            ctx.add_stream(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|d| (d, rx))
            }));
        }
    }
}

impl StreamHandler<Delivery> for PartyActor {
    fn handle(&mut self, item: Delivery, _: &mut Self::Context) {
        let mut mb = self.endpoint.mailbox.borrow_mut();
        match item {
            Ok(env) if env.to == self.me && env.key == ABORT_KEY => mb.gave_up(env),
            Ok(env) => mb.deliver(env),
            Err(TransportError::Backlog { peer, .. }) => mb.backlogged(peer),
            // Once the job has ended, or failed already, peers closing their connections are
            // no news: only the first failure during a job is an error.
            Err(e) if self.running.get() == 0 || mb.is_aborted() => {
                tracing::debug!(party = %self.me, error = %e, "transport failure after the job");
                mb.fail_peer(&e);
            }
            Err(e) => {
                tracing::error!(party = %self.me, error = %e, "transport failure");
                mb.fail_peer(&e);
            }
        }
    }

    // The incoming stream ending (all senders gone) must not stop the actor: running jobs
    // still get their timeouts or peer errors.
    fn finished(&mut self, _: &mut Self::Context) {}
}

impl Handler<Setup> for PartyActor {
    type Result = ResponseFuture<Result<(), ProtocolError>>;

    fn handle(&mut self, msg: Setup, _: &mut Self::Context) -> Self::Result {
        let ctx = Ctx::new(
            self.endpoint.clone(),
            msg.session,
            None,
            self.config.fixed,
            &job_root(&mut self.jobs, "setup"),
            self.depth.get(),
        );
        let (session, depth) = (self.session.clone(), self.depth.clone());
        let (transport, me) = (self.endpoint.transport.clone(), self.me);
        let mailbox = self.endpoint.mailbox.clone();
        mailbox.borrow_mut().set_session(msg.session);
        let running = Running::new(&self.running);
        Box::pin(async move {
            let _running = running;
            let seeds = agree_seeds(&ctx, msg.source).await;
            mailbox.borrow_mut().finish(ctx.path());
            if let Err(e) = &seeds {
                abort_peers(&*transport, me, msg.session, e);
            }
            depth.set(ctx.depth());
            *session.borrow_mut() = Some((msg.session, seeds?));
            Ok(())
        })
    }
}

impl<R: Send + 'static> Handler<Run<R>> for PartyActor {
    type Result = ResponseFuture<Result<JobOutput<R>, ProtocolError>>;

    fn handle(&mut self, msg: Run<R>, _: &mut Self::Context) -> Self::Result {
        let Some((session, seeds)) = self.session.borrow().clone() else {
            return Box::pin(async move { Err(ProtocolError::NoSession { op: msg.name }) });
        };
        let ctx = Ctx::new(
            self.endpoint.clone(),
            session,
            Some(seeds),
            self.config.fixed,
            &job_root(&mut self.jobs, &msg.name),
            self.depth.get().max(msg.start_depth),
        );
        let (root, depth) = (ctx.clone(), self.depth.clone());
        // Each party has its arbiter thread to itself, so the thread's CPU time (with what its
        // parallel sections ran elsewhere) is the party's.
        let cpu0 = offload::cpu_time();
        // A simulated network starts this party's virtual clock here and stops it at the end.
        let transport = self.endpoint.transport.clone();
        transport.virtual_now();
        let job = (msg.job)(ctx);
        let (me, mailbox) = (self.me, self.endpoint.mailbox.clone());
        let running = Running::new(&self.running);
        Box::pin(async move {
            let out = job.await;
            drop(running);
            transport.virtual_now();
            let left = mailbox.borrow_mut().finish(root.path());
            if left > 0 && out.is_ok() {
                tracing::warn!(party = %me, job = %root.path(), "{left} envelopes of the job were never asked for");
            }
            if let Err(e) = &out {
                abort_peers(&*transport, me, session, e);
            }
            depth.set(root.depth());
            out.map(|value| JobOutput {
                value,
                cpu: offload::cpu_time().saturating_sub(cpu0),
            })
        })
    }
}

/// The root path of the next job called `name` at this party: `name` the first time,
/// `name~k` for the k-th repeat (the convention of [`Ctx::child`] paths).
fn job_root(jobs: &mut HashMap<String, u32>, name: &str) -> String {
    let n = jobs.entry(name.to_string()).or_default();
    let root = if *n == 0 {
        name.to_string()
    } else {
        format!("{name}~{n}")
    };
    *n += 1;
    root
}

/// Rendezvous key of the message a failing party sends its peers, so that they fail at once
/// instead of waiting out their timeouts. Its payload is the error text (never a secret: errors
/// name operations, parties and sizes only).
pub const ABORT_KEY: &str = "!abort";

/// Tell every other party that this one failed (best effort).
fn abort_peers(transport: &dyn Transport, me: PartyId, session: u64, e: &ProtocolError) {
    send_abort(transport, me, session, &e.to_string());
}

/// Tell every other party that this one gave up, and why (best effort): they fail at once,
/// quoting `reason` (never a secret: it names operations, parties and sizes only).
pub fn send_abort(transport: &dyn Transport, me: PartyId, session: u64, reason: &str) {
    for p in 0..transport.parties() {
        let peer = PartyId(p as u8);
        if peer != me {
            let _ = transport.send(Envelope {
                session,
                from: me,
                to: peer,
                key: ABORT_KEY.into(),
                depth: 0,
                arrival: 0,
                payload: reason.as_bytes().to_vec(),
            });
        }
    }
}

/// The [`Endpoint`] a party's protocol code talks to.
struct PartyEndpoint {
    me: PartyId,
    transport: Arc<dyn Transport>,
    mailbox: Rc<RefCell<Mailbox>>,
    timeout: Duration,
}

impl Endpoint for PartyEndpoint {
    fn me(&self) -> PartyId {
        self.me
    }

    fn send(&self, env: Envelope) -> Result<(), TransportError> {
        self.transport.send(env)
    }

    fn recv(
        &self,
        session: u64,
        from: PartyId,
        key: String,
    ) -> LocalBoxFuture<'static, Result<Envelope, ProtocolError>> {
        let rx = self.mailbox.borrow_mut().expect(session, from, key.clone());
        let (mailbox, after, party) = (self.mailbox.clone(), self.timeout, self.me);
        let transport = self.transport.clone();
        Box::pin(async move {
            match tokio::time::timeout(after, rx).await {
                Ok(Ok(res)) => {
                    if let Ok(env) = &res {
                        transport.on_receive(env);
                    }
                    res
                }
                Ok(Err(_)) => Err(ProtocolError::PeerGone {
                    party,
                    peer: from,
                    key,
                    reason: "the party's mailbox was shut down".into(),
                }),
                Err(_) => {
                    mailbox.borrow_mut().cancel(session, from, &key);
                    Err(ProtocolError::Timeout {
                        party,
                        peer: from,
                        key,
                        after,
                    })
                }
            }
        })
    }
}
