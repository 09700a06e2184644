//! The operation tree of a run: the three parties' spans merged per operation, each call's
//! messages, rounds and time, and the paper's cost beside them.

use super::SessionTrace;
use super::theory::{paper_cost, parse_shape};
use securenn_transports::LinkStats;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One row: an operation at one place in the tree (`infer/batch/2.relu/relu/drelu`), all its
/// calls (batches, repeated steps) and all parties together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// The operation's place in the tree, repeat counters dropped (`batch~3` is `batch`).
    pub path: String,
    pub name: String,
    /// Depth in the tree: 0 is the job.
    pub level: usize,
    /// The shape the first call recorded (`100x784x128`), if any.
    pub shape: Option<String>,
    pub calls: u64,
    /// Payload bytes sent inside the operation (sub-operations included), all calls, all links.
    pub bytes: u64,
    pub messages: u64,
    /// Bytes and messages per directed link.
    pub links: Vec<LinkStats>,
    /// Causal rounds one call adds (the most of any call): the deepest depth any party reached
    /// at its end minus the deepest at its start.
    pub rounds: u64,
    /// Rounds added by all calls together.
    pub rounds_total: u64,
    /// The paper's bytes for all calls (Tables 1-2; [`super::theory`]).
    pub paper_bytes: Option<u64>,
    /// The paper's rounds for one call.
    pub paper_rounds: Option<u64>,
    /// Time of all calls: per call, the latest end at any party minus the latest start; on the
    /// parties' virtual clocks when the network is simulated, the wall clock otherwise.
    pub seconds: f64,
    /// CPU time of each party's thread while the operation was open (P0, P1, P2), all calls.
    pub party_cpu_seconds: Vec<f64>,
}

/// Drop `~k` repeat counters from every segment of an operation path.
pub fn normalise(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split_once('~').map_or(seg, |(s, _)| s))
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Default)]
struct Node {
    name: String,
    level: usize,
    shape: Option<String>,
    first: u64,
    calls: u64,
    bytes: u64,
    messages: u64,
    links: [[(u64, u64); 3]; 3],
    rounds: u64,
    rounds_total: u64,
    paper_bytes: Option<u64>,
    paper_rounds: Option<u64>,
    seconds: f64,
    cpu: [f64; 3],
}

/// The rows of `trace` in tree order (children after their parent, siblings by first start).
/// `paper`: put the SecureNN paper's costs beside the operations it has figures for.
pub fn op_reports(trace: &SessionTrace, paper: bool) -> Vec<OpReport> {
    let index: HashMap<u64, usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.uid, i))
        .collect();
    // Each send counts in its span and every enclosing one.
    let mut inclusive: Vec<[[(u64, u64); 3]; 3]> = vec![Default::default(); trace.spans.len()];
    for m in &trace.sends {
        let (f, t) = (m.from as usize % 3, m.to as usize % 3);
        let mut at = index.get(&m.span).copied();
        while let Some(i) = at {
            inclusive[i][f][t].0 += m.bytes;
            inclusive[i][f][t].1 += 1;
            at = trace.spans[i].parent.and_then(|p| index.get(&p).copied());
        }
    }
    // Calls: the parties' spans of one unique path.
    let mut calls: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in trace.spans.iter().enumerate() {
        calls.entry(s.path.as_str()).or_default().push(i);
    }
    let virtual_clock = trace
        .spans
        .iter()
        .all(|s| s.virtual_start.is_some() && s.virtual_end.is_some());
    let mut nodes: HashMap<String, Node> = HashMap::new();
    for (path, members) in calls {
        let spans: Vec<_> = members.iter().map(|&i| &trace.spans[i]).collect();
        let key = normalise(path);
        let node = nodes.entry(key.clone()).or_insert_with(|| Node {
            name: spans[0].name.clone(),
            level: key.matches('/').count(),
            first: u64::MAX,
            ..Node::default()
        });
        let first = spans.iter().map(|s| s.wall_start).min().unwrap_or(0);
        let shape = spans.iter().find_map(|s| s.shape.clone());
        if first < node.first {
            node.first = first;
            node.shape = shape.clone();
        }
        node.calls += 1;
        for &i in &members {
            for (f, row) in inclusive[i].iter().enumerate() {
                for (t, &(b, m)) in row.iter().enumerate() {
                    node.links[f][t].0 += b;
                    node.links[f][t].1 += m;
                    node.bytes += b;
                    node.messages += m;
                }
            }
            node.cpu[trace.spans[i].party as usize % 3] += trace.spans[i].cpu_ns as f64 * 1e-9;
        }
        let start = spans.iter().map(|s| s.depth_start).max().unwrap_or(0);
        let end = spans.iter().map(|s| s.depth_end).max().unwrap_or(0);
        let rounds = end.saturating_sub(start);
        node.rounds = node.rounds.max(rounds);
        node.rounds_total += rounds;
        let (t0, t1) = if virtual_clock {
            (
                spans.iter().filter_map(|s| s.virtual_start).max(),
                spans.iter().filter_map(|s| s.virtual_end).max(),
            )
        } else {
            (
                spans.iter().map(|s| s.wall_start).max(),
                spans.iter().map(|s| s.wall_end).max(),
            )
        };
        node.seconds += t1.unwrap_or(0).saturating_sub(t0.unwrap_or(0)) as f64 * 1e-9;
        if paper
            && let Some((b, r)) = shape
                .as_deref()
                .and_then(parse_shape)
                .and_then(|s| paper_cost(&node.name, &s))
        {
            *node.paper_bytes.get_or_insert(0) += b;
            node.paper_rounds = Some(node.paper_rounds.unwrap_or(0).max(r));
        }
    }
    // Tree order: a depth-first walk, siblings by their first start.
    let mut keys: Vec<&String> = nodes.keys().collect();
    keys.sort_by_key(|k| {
        // The chain of first-start times from the root down orders siblings under one parent.
        let mut chain = Vec::new();
        let mut prefix = String::new();
        for (i, seg) in k.split('/').enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(seg);
            chain.push((nodes.get(&prefix).map_or(0, |n| n.first), prefix.clone()));
        }
        chain
    });
    keys.into_iter()
        .map(|k| {
            let n = &nodes[k];
            let mut links = Vec::new();
            for (f, row) in n.links.iter().enumerate() {
                for (t, &(bytes, messages)) in row.iter().enumerate() {
                    if messages > 0 {
                        links.push(LinkStats {
                            from: f as u8,
                            to: t as u8,
                            bytes,
                            messages,
                        });
                    }
                }
            }
            OpReport {
                path: k.clone(),
                name: n.name.clone(),
                level: n.level,
                shape: n.shape.clone(),
                calls: n.calls,
                bytes: n.bytes,
                messages: n.messages,
                links,
                rounds: n.rounds,
                rounds_total: n.rounds_total,
                paper_bytes: n.paper_bytes,
                paper_rounds: n.paper_rounds,
                seconds: n.seconds,
                party_cpu_seconds: n.cpu.to_vec(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_counters_are_dropped() {
        assert_eq!(
            normalise("infer/batch~12/2.relu/maxpool/step~2/drelu"),
            "infer/batch/2.relu/maxpool/step/drelu"
        );
        assert_eq!(normalise("setup"), "setup");
    }
}
