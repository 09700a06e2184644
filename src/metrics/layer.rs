//! The `tracing-subscriber` layer: operation spans and message events into [`SessionTrace`]s.

use super::{RecvRecord, SendRecord, SpanRecord, collector, virtual_now, wall_now};
use securenn_transports::offload;
use std::fmt::Debug;
use std::sync::atomic::Ordering;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// See [`super::layer`], which adds the filter this layer expects.
pub struct MetricsLayer;

/// What a span's extension keeps while it is open.
struct Open {
    session: u64,
    record: SpanRecord,
    cpu_start: u64,
}

#[derive(Default)]
struct Fields {
    name: Option<String>,
    path: Option<String>,
    shape: Option<String>,
    key: Option<String>,
    party: Option<u64>,
    session: Option<u64>,
    depth: Option<u64>,
    depth_end: Option<u64>,
    fork: bool,
    from: Option<u64>,
    to: Option<u64>,
    bytes: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "name" => self.name = Some(value.to_string()),
            "path" => self.path = Some(value.to_string()),
            "shape" => self.shape = Some(value.to_string()),
            "key" => self.key = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "party" => self.party = Some(value),
            "session" => self.session = Some(value),
            "depth" => self.depth = Some(value),
            "depth_end" => self.depth_end = Some(value),
            "from" => self.from = Some(value),
            "to" => self.to = Some(value),
            "bytes" => self.bytes = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "fork" {
            self.fork = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        // `%key` arrives here as Display wrapped in Debug.
        if field.name() == "key" {
            self.key = Some(format!("{value:?}"));
        }
    }
}

/// The thread's CPU time, with what its parallel sections ran on pool threads.
fn cpu_ns() -> u64 {
    offload::cpu_time().as_nanos() as u64
}

impl<S> tracing_subscriber::Layer<S> for MetricsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        attrs.record(&mut f);
        let c = collector();
        let (session, party, parent) = match span.parent() {
            Some(p) => match p.extensions().get::<Open>() {
                Some(o) => (o.session, o.record.party, Some(o.record.uid)),
                None => return,
            },
            None => match (f.session, f.party) {
                (Some(s), Some(p)) => (s, p as u8, None),
                _ => return,
            },
        };
        if !c
            .sessions
            .lock()
            .map(|s| s.contains_key(&session))
            .unwrap_or(false)
        {
            return;
        }
        let depth = f.depth.unwrap_or(0);
        let record = SpanRecord {
            party,
            uid: c.next_uid.fetch_add(1, Ordering::Relaxed),
            parent,
            name: f.name.unwrap_or_default(),
            path: f.path.unwrap_or_default(),
            fork: f.fork,
            shape: f.shape,
            depth_start: depth,
            depth_end: depth,
            wall_start: wall_now(),
            wall_end: 0,
            virtual_start: virtual_now(),
            virtual_end: None,
            cpu_ns: 0,
        };
        span.extensions_mut().insert(Open {
            session,
            record,
            cpu_start: cpu_ns(),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(open) = ext.get_mut::<Open>() else {
            return;
        };
        let mut f = Fields::default();
        values.record(&mut f);
        if let Some(s) = f.shape {
            open.record.shape = Some(s);
        }
        if let Some(d) = f.depth {
            // Counted from here (see `Ctx::count_from_here`): rounds and time restart.
            open.record.depth_start = d;
            open.record.wall_start = wall_now();
            open.record.virtual_start = virtual_now();
            open.cpu_start = cpu_ns();
        }
        if let Some(d) = f.depth_end {
            open.record.depth_end = d;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        let send = target == "securenn::envelope";
        if !send && target != "securenn::recv" {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let ext = span.extensions();
        let Some(open) = ext.get::<Open>() else {
            return;
        };
        let mut f = Fields::default();
        event.record(&mut f);
        let (Some(from), Some(key)) = (f.from, f.key) else {
            return;
        };
        let (session, uid) = (open.session, open.record.uid);
        let (wall, virtual_time) = (wall_now(), virtual_now());
        let Ok(mut sessions) = collector().sessions.lock() else {
            return;
        };
        let Some(trace) = sessions.get_mut(&session) else {
            return;
        };
        if send {
            trace.sends.push(SendRecord {
                span: uid,
                from: from as u8,
                to: f.to.unwrap_or(0) as u8,
                key,
                bytes: f.bytes.unwrap_or(0),
                depth: f.depth.unwrap_or(0),
                wall,
                virtual_time,
            });
        } else {
            trace.recvs.push(RecvRecord {
                span: uid,
                from: from as u8,
                to: open.record.party,
                key,
                wall,
                virtual_time,
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let Open {
            session,
            mut record,
            cpu_start,
        } = open;
        record.wall_end = wall_now();
        record.virtual_end = virtual_now();
        record.cpu_ns = cpu_ns().saturating_sub(cpu_start);
        if let Ok(mut sessions) = collector().sessions.lock()
            && let Some(trace) = sessions.get_mut(&session)
        {
            trace.spans.push(record);
        }
    }
}
