//! Per-operation cost inspection through `tracing`: a subscriber layer that attributes every
//! message to the innermost operation span of the party that sent it, and aggregates the three
//! parties' spans into one operation tree (bytes per link, messages, causal rounds added,
//! virtual or wall time, CPU time per party) beside the SecureNN paper's Table 1/2 costs.
//!
//! How it fits together:
//! - every [`crate::channel::Ctx`] is a span (target `securenn::op`) carrying its operation's
//!   name, path, shape and causal depth; the transport's `securenn::envelope` event fires inside
//!   the sender's span, and `securenn::recv` inside the receiver's;
//! - [`layer`] returns the layer; install it next to any other (a `fmt` layer with `RUST_LOG`
//!   filtering, say): it filters for its own targets, so it never changes what gets logged;
//! - a run [`begin`]s a session, the parties run, and [`take`] returns what the layer saw of it
//!   ([`SessionTrace`]); [`ops::op_reports`] turns that into the rows of the report, and
//!   [`chrome::chrome_trace`] into a Chrome trace.
//!
//! Spans record sizes and names only, never values (the privacy rule).

pub mod chrome;
mod layer;
pub mod ops;
pub mod table;
pub mod theory;

pub use layer::MetricsLayer;
pub use ops::{OpReport, op_reports};

use securenn_transports::Transport;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// One operation span at one party, closed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpanRecord {
    pub party: u8,
    /// Unique within the session; `parent` refers to it.
    pub uid: u64,
    pub parent: Option<u64>,
    /// The operation's name (`relu`, `2.relu`, `private_compare`, ...).
    pub name: String,
    /// The operation path, unique per party (`infer/batch~3/2.relu/relu`).
    pub path: String,
    /// Run concurrently with its siblings ([`crate::channel::Ctx::fork`]).
    pub fork: bool,
    /// `100x784x128`: what the operation recorded with [`crate::channel::Ctx::shape`].
    pub shape: Option<String>,
    /// Causal depth at the start (or from [`crate::channel::Ctx::count_from_here`]) and end.
    pub depth_start: u64,
    pub depth_end: u64,
    /// Nanoseconds since the collector started.
    pub wall_start: u64,
    pub wall_end: u64,
    /// The party's virtual clock (simulated networks), nanoseconds.
    pub virtual_start: Option<u64>,
    pub virtual_end: Option<u64>,
    /// CPU time of the party's thread while the span was open (concurrent siblings overlap).
    pub cpu_ns: u64,
}

/// One envelope sent, attributed to the innermost span open at the sender.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendRecord {
    pub span: u64,
    pub from: u8,
    pub to: u8,
    pub key: String,
    pub bytes: u64,
    pub depth: u64,
    pub wall: u64,
    pub virtual_time: Option<u64>,
}

/// One envelope taken by the receiving protocol code, in the receiver's innermost span.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecvRecord {
    pub span: u64,
    pub from: u8,
    pub to: u8,
    pub key: String,
    pub wall: u64,
    pub virtual_time: Option<u64>,
}

/// Everything the layer saw of one session, all parties.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SessionTrace {
    pub spans: Vec<SpanRecord>,
    pub sends: Vec<SendRecord>,
    pub recvs: Vec<RecvRecord>,
}

/// What a subtree of operations cost, all parties: see [`SessionTrace::cost`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubtreeCost {
    pub bytes: u64,
    pub messages: u64,
    /// The deepest causal depth any party reached at the end minus the deepest at the start.
    pub rounds: u64,
    /// The latest end at any party minus the latest start: on the virtual clocks when
    /// simulated, the wall clock otherwise.
    pub seconds: f64,
}

impl SessionTrace {
    /// The cost of the operation at `path` (unique: `infer/batch~1`, at every party) and
    /// everything under it except the sub-operations whose paths `exclude` accepts; `None` if
    /// no party ran it.
    pub fn cost(&self, path: &str, exclude: impl Fn(&str) -> bool) -> Option<SubtreeCost> {
        let under = |p: &str| {
            (p == path || p.strip_prefix(path).is_some_and(|r| r.starts_with('/'))) && !exclude(p)
        };
        let roots: Vec<&SpanRecord> = self.spans.iter().filter(|s| s.path == path).collect();
        if roots.is_empty() {
            return None;
        }
        let uids: std::collections::HashSet<u64> = self
            .spans
            .iter()
            .filter(|s| under(&s.path))
            .map(|s| s.uid)
            .collect();
        let sent = self.sends.iter().filter(|m| uids.contains(&m.span));
        let (bytes, messages) = sent.fold((0, 0), |(b, n), m| (b + m.bytes, n + 1));
        let max = |f: &dyn Fn(&SpanRecord) -> u64| roots.iter().map(|s| f(s)).max().unwrap_or(0);
        let virtual_clock = roots.iter().all(|s| s.virtual_start.is_some());
        let (t0, t1) = if virtual_clock {
            (
                max(&|s| s.virtual_start.unwrap_or(0)),
                max(&|s| s.virtual_end.unwrap_or(0)),
            )
        } else {
            (max(&|s| s.wall_start), max(&|s| s.wall_end))
        };
        Some(SubtreeCost {
            bytes,
            messages,
            rounds: max(&|s| s.depth_end).saturating_sub(max(&|s| s.depth_start)),
            seconds: t1.saturating_sub(t0) as f64 * 1e-9,
        })
    }
}

/// What the layer collects into: the sessions being recorded.
struct Collector {
    epoch: Instant,
    sessions: Mutex<HashMap<u64, SessionTrace>>,
    next_uid: std::sync::atomic::AtomicU64,
}

fn collector() -> &'static Collector {
    static C: OnceLock<Collector> = OnceLock::new();
    C.get_or_init(|| Collector {
        epoch: Instant::now(),
        sessions: Mutex::new(HashMap::new()),
        next_uid: std::sync::atomic::AtomicU64::new(1),
    })
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether a [`layer`] was made in this process (so [`begin`] is worth calling).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The metrics layer with its own filter: operation spans and message events only, whatever
/// `RUST_LOG` says for the other layers.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    INSTALLED.store(true, Ordering::Relaxed);
    MetricsLayer.with_filter(targets())
}

/// The targets the layer needs.
pub fn targets() -> Targets {
    Targets::new()
        .with_target("securenn::op", tracing::Level::DEBUG)
        .with_target("securenn::envelope", tracing::Level::TRACE)
        .with_target("securenn::recv", tracing::Level::TRACE)
}

/// Start recording `session` (spans of other sessions are ignored).
pub fn begin(session: u64) {
    if let Ok(mut s) = collector().sessions.lock() {
        s.insert(session, SessionTrace::default());
    }
}

/// Stop recording `session` and return what was seen (`None` if it was never begun).
pub fn take(session: u64) -> Option<SessionTrace> {
    collector().sessions.lock().ok()?.remove(&session)
}

thread_local! {
    static CLOCK: RefCell<Option<Arc<dyn Transport>>> = const { RefCell::new(None) };
}

/// Tell the layer which transport's virtual clock this thread's spans are timed on (a party's
/// thread, on a simulated network); `None` clears it.
pub fn set_thread_clock(transport: Option<Arc<dyn Transport>>) {
    CLOCK.with(|c| *c.borrow_mut() = transport);
}

fn virtual_now() -> Option<u64> {
    CLOCK.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|t| t.virtual_now())
            .map(|d| d.as_nanos() as u64)
    })
}

fn wall_now() -> u64 {
    collector().epoch.elapsed().as_nanos() as u64
}

/// A session id no other run in this process uses, so concurrent runs (tests) keep their
/// records apart.
pub fn fresh_session() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
