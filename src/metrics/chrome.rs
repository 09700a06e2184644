//! Chrome trace export (the JSON `chrome://tracing` and Perfetto read): every party's operation
//! spans on one timeline, one process per party, and each message as a flow arrow from the
//! span that sent it to the span that took it.

use super::SessionTrace;
use serde_json::{Value, json};
use std::collections::HashMap;

/// One trace for several runs (labelled): run i's party p is process 3i + p. Times are the
/// parties' virtual clocks when the run was simulated, the wall clock from the run's first span
/// otherwise, in microseconds.
pub fn chrome_trace(runs: &[(String, &SessionTrace)]) -> Value {
    let mut events = Vec::new();
    let mut flow_id = 0u64;
    for (ri, (label, trace)) in runs.iter().enumerate() {
        let pid = |party: u8| ri as u64 * 3 + party as u64;
        let virtual_clock = !trace.spans.is_empty()
            && trace
                .spans
                .iter()
                .all(|s| s.virtual_start.is_some() && s.virtual_end.is_some());
        let base = if virtual_clock {
            0
        } else {
            trace.spans.iter().map(|s| s.wall_start).min().unwrap_or(0)
        };
        let us = |wall: u64, virt: Option<u64>| -> f64 {
            if virtual_clock {
                virt.unwrap_or(0) as f64 / 1e3
            } else {
                wall.saturating_sub(base) as f64 / 1e3
            }
        };
        for party in 0..3u8 {
            events.push(json!({
                "ph": "M", "name": "process_name", "pid": pid(party),
                "args": { "name": format!("{label} P{party}") }
            }));
            events.push(json!({
                "ph": "M", "name": "process_sort_index", "pid": pid(party),
                "args": { "sort_index": pid(party) }
            }));
        }
        // Lanes: a forked branch gets a thread of its own so concurrent spans never overlap on
        // one thread; sub-operations stay on their parent's.
        let mut order: Vec<usize> = (0..trace.spans.len()).collect();
        order.sort_by_key(|&i| trace.spans[i].wall_start);
        let mut lane: HashMap<u64, u64> = HashMap::new();
        let mut lanes_used = [0u64; 3];
        for &i in &order {
            let s = &trace.spans[i];
            let l = match s.parent.and_then(|p| lane.get(&p).copied()) {
                Some(_) if s.fork => {
                    let slot = &mut lanes_used[s.party as usize % 3];
                    *slot += 1;
                    *slot
                }
                Some(l) => l,
                None => 0,
            };
            lane.insert(s.uid, l);
        }
        for s in &trace.spans {
            let start = us(s.wall_start, s.virtual_start);
            let end = us(s.wall_end, s.virtual_end);
            events.push(json!({
                "ph": "X", "cat": "op", "name": s.name,
                "pid": pid(s.party), "tid": lane[&s.uid],
                "ts": start, "dur": (end - start).max(0.0),
                "args": {
                    "path": s.path,
                    "shape": s.shape,
                    "rounds": s.depth_end.saturating_sub(s.depth_start),
                    "cpu_us": s.cpu_ns as f64 / 1e3,
                }
            }));
        }
        let mut received: HashMap<(u8, u8, &str), (u64, f64)> = HashMap::new();
        for r in &trace.recvs {
            received.insert(
                (r.from, r.to, r.key.as_str()),
                (
                    lane.get(&r.span).copied().unwrap_or(0),
                    us(r.wall, r.virtual_time),
                ),
            );
        }
        for m in &trace.sends {
            let Some(&(to_lane, ts_end)) = received.get(&(m.from, m.to, m.key.as_str())) else {
                continue;
            };
            flow_id += 1;
            let ts = us(m.wall, m.virtual_time);
            events.push(json!({
                "ph": "s", "cat": "message", "name": "message", "id": flow_id,
                "pid": pid(m.from), "tid": lane.get(&m.span).copied().unwrap_or(0), "ts": ts,
                "args": { "key": m.key, "bytes": m.bytes, "depth": m.depth }
            }));
            events.push(json!({
                "ph": "f", "bp": "e", "cat": "message", "name": "message", "id": flow_id,
                "pid": pid(m.to), "tid": to_lane, "ts": ts_end.max(ts),
            }));
        }
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}
