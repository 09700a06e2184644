//! Per-operation inspection through tracing: the metrics layer's operation tree against the
//! meter (bytes add up), the protocol tests (rounds per op), the paper's Table 1-2 costs, the
//! JSON schema, and the Chrome trace.

mod common;

use common::securenn_cli;
use securenn::infer::{InferReport, Layout, run_inference};
use securenn::metrics::{OpReport, SessionTrace};
use securenn::scenario::Scenario;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Once;

/// The layer is process-global (the parties run on their own threads).
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(securenn::metrics::layer())
            .init();
    });
}

fn scenario_run(file: &str, samples: usize, layout: Layout) -> InferReport {
    install();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let runs = Scenario::load(&path)
        .unwrap()
        .runs(&path, Some(samples))
        .unwrap();
    let mut spec = runs[0].spec().unwrap();
    spec.layout = layout;
    run_inference(&spec, None).unwrap()
}

fn op<'a>(r: &'a InferReport, path: &str) -> &'a OpReport {
    r.ops
        .iter()
        .find(|o| o.path == path)
        .unwrap_or_else(|| panic!("no op {path}"))
}

#[test]
fn wan_a_layers_add_up_and_ops_cost_what_the_protocol_tests_assert() {
    let r = scenario_run("scenarios/wan-a.toml", 3, Layout::Default);
    assert!(!r.ops.is_empty());
    // The job row is the run's total; the layers under it add up to it.
    assert_eq!(op(&r, "infer").bytes, r.bytes_total);
    assert_eq!(op(&r, "infer").messages, r.messages);
    let layer_rows: Vec<&OpReport> = r
        .ops
        .iter()
        .filter(|o| o.level == 2 && o.path.starts_with("infer/batch/"))
        .chain(r.ops.iter().filter(|o| o.path == "infer/weights"))
        .collect();
    assert_eq!(
        layer_rows.iter().map(|o| o.bytes).sum::<u64>(),
        r.bytes_total
    );
    // Per layer, the spans agree with the envelope keys (`layers`), bytes and rounds.
    for l in &r.layers {
        let path = if l.name == "weights" {
            "infer/weights".to_string()
        } else {
            format!("infer/batch/{}", l.name)
        };
        if let Some(o) = r.ops.iter().find(|o| o.path == path) {
            assert_eq!(o.bytes, l.bytes, "{}", l.name);
            assert_eq!(o.messages, l.messages, "{}", l.name);
            // The masked kernels leave in the weights stage, which waits for nothing (0 rounds
            // in the tree); by the messages' causal depth they take 1, and the first layer,
            // whose helper waits for its kernel, one less.
            let rounds = match l.name.as_str() {
                "weights" => o.rounds_total + 1,
                "1.dense" => o.rounds_total - 1,
                _ => o.rounds_total,
            };
            assert_eq!(rounds, l.rounds, "{}", l.name);
        } else {
            assert_eq!(l.bytes, 0, "{} has traffic but no span", l.name);
        }
    }
    // Per link, the operation tree's root equals the meter.
    let root = op(&r, "infer");
    for l in &r.links {
        let t = root
            .links
            .iter()
            .find(|x| x.from == l.from && x.to == l.to)
            .unwrap();
        assert_eq!((t.bytes, t.messages), (l.bytes, l.messages));
    }
    // Rounds per call, as tests/securenn.rs asserts them op by op: the default layout's ReLU
    // is one masked opening, one PrivateCompare and the helper's shares back (narrow_drelu).
    let relu = "infer/batch/2.relu/relu";
    let expect = [
        (relu.to_string(), 3, Some(10)),
        (format!("{relu}/private_compare"), 1, Some(1)),
        // The first query's product waits at the helper for the weight's F (known_operand):
        // 2 rounds, as the paper counts; later queries 1.
        ("infer/batch/1.dense/matmul".into(), 2, Some(2)),
        (
            "infer/batch/6.argmax/argmax/all_pairs/drelu".into(),
            3,
            Some(8),
        ),
        ("infer/batch/6.argmax/argmax/all_won".into(), 1, None),
    ];
    for (path, rounds, paper) in expect {
        let o = op(&r, &path);
        assert_eq!(o.rounds, rounds, "{path}");
        assert_eq!(o.paper_rounds, paper, "{path}");
        assert_eq!(o.calls % 3, 0, "{path}: one call per image at least");
    }
    // Bytes on the layer's comparison width m (from the range analysis), 128 elements a call:
    // c = y + r mod 2^m both ways (m bits each), the dealt bit shares and PrivateCompare's two
    // messages (m − 1 Z_67 values per element, packed ten per 8 bytes), z to the helper from
    // both servers and d, d·z back to P1 (8 bytes each per element).
    for layer in [2, 4] {
        let m = r.comparison_widths[layer].expect("a ReLU compares") as usize;
        assert!(m < 32, "A's ReLU inputs are bounded well below 2^31: {m}");
        let packed = securenn::ring::z67::packed_len((m - 1) * 128) as u64;
        let opened = 2 * (128 * m).div_ceil(8) as u64;
        for (name, ours, paper) in [
            ("relu", opened + 3 * packed + 32 * 128, 704 * 128),
            ("private_compare", 2 * packed, 128 * 128),
        ] {
            let o = r
                .ops
                .iter()
                .find(|o| o.name == name && o.path.contains(&format!("{layer}.relu")))
                .unwrap();
            assert_eq!(o.bytes, 3 * ours, "{layer}.relu {name} on {m} bits");
            assert_eq!(o.paper_bytes, Some(3 * paper), "{name}");
        }
    }
    // The argmax: all 45 comparisons in one DReLU, then 4 levels of products of wins, against
    // the paper's 9 sequential steps.
    let argmax = op(&r, "infer/batch/6.argmax/argmax");
    assert_eq!(argmax.rounds, 7);
    assert_eq!(argmax.paper_rounds, Some(81));
    assert_eq!(op(&r, "infer/batch/6.argmax/argmax/all_won").calls, 3 * 4);
    // Shapes and names only in spans: no values.
    for o in &r.ops {
        if let Some(s) = &o.shape {
            assert!(s.chars().all(|c| c.is_ascii_digit() || c == 'x'), "{s}");
        }
        assert_eq!(o.party_cpu_seconds.len(), 3);
    }
    // Virtual time on the WAN: a ReLU call's 3 rounds take at least 3 × 29 ms.
    assert!(
        op(&r, relu).seconds >= 3.0 * 3.0 * 0.029,
        "{}",
        op(&r, relu).seconds
    );
}

#[test]
fn paper_layout_matches_the_paper_op_by_op() {
    let r = scenario_run("scenarios/lan-a.toml", 1, Layout::Paper);
    // The paper's Table 7 figure reveals nothing; we send the data owner the other server's
    // share of the class (8 B).
    assert_eq!(op(&r, "infer/batch/reveal").bytes, 8);
    assert_eq!(r.bytes_total - 8, 2_100_984);
    for o in &r.ops {
        if matches!(o.name.as_str(), "matmul" | "relu" | "argmax" | "drelu") {
            assert_eq!(Some(o.bytes), o.paper_bytes, "{}", o.path);
        }
    }
    // Sequential argmax in paper layout (after a ReLU on the logits): 9 steps of 9 rounds.
    let argmax = r
        .ops
        .iter()
        .find(|o| o.level == 3 && o.name == "argmax")
        .unwrap();
    assert_eq!((argmax.rounds, argmax.paper_rounds), (81, Some(81)));
    assert_eq!(op(&r, &format!("{}/step", argmax.path)).calls, 9);
}

/// Everything but the clocks.
fn counts(r: &InferReport) -> Vec<(String, u64, u64, u64, u64, Option<String>)> {
    r.ops
        .iter()
        .map(|o| {
            (
                o.path.clone(),
                o.calls,
                o.bytes,
                o.messages,
                o.rounds_total,
                o.shape.clone(),
            )
        })
        .collect()
}

#[test]
fn same_run_same_tree_even_when_runs_overlap() {
    let a = scenario_run("scenarios/lan-a.toml", 2, Layout::Default);
    // Two runs at once in one process: each session keeps its own records.
    let (b, c) = std::thread::scope(|s| {
        let b = s.spawn(|| scenario_run("scenarios/lan-a.toml", 2, Layout::Default));
        let c = s.spawn(|| scenario_run("scenarios/lan-a.toml", 2, Layout::Default));
        (b.join().unwrap(), c.join().unwrap())
    });
    assert_eq!(counts(&a), counts(&b));
    assert_eq!(counts(&a), counts(&c));
}

#[test]
fn report_json_validates_against_the_shipped_schema() {
    let r = scenario_run("scenarios/lan-a.toml", 2, Layout::Default);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = serde_json::to_value(vec![&r]).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    // A report missing a field, or with a wrong type, fails it.
    let mut bad = serde_json::to_value(&r).unwrap();
    bad.as_object_mut().unwrap().remove("bytes_total");
    assert!(!validator.is_valid(&bad));
    let mut bad = serde_json::to_value(&r).unwrap();
    bad["ops"][0]["rounds"] = serde_json::json!("nine");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn chrome_trace_has_every_party_span_and_a_flow_per_message() {
    let r = scenario_run("scenarios/lan-a.toml", 2, Layout::Default);
    let trace: &SessionTrace = r.trace.as_deref().unwrap();
    let doc = securenn::metrics::chrome::chrome_trace(&[("a".into(), trace)]);
    let events = doc["traceEvents"].as_array().unwrap();
    let of = |ph: &'static str| events.iter().filter(move |e| e["ph"] == ph);
    assert_eq!(of("X").count(), trace.spans.len());
    let pids: HashSet<u64> = of("X").map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids, HashSet::from([0, 1, 2]));
    // One arrow per message of the job, each ending at its receiver no earlier than it left.
    assert_eq!(of("s").count() as u64, r.messages);
    let starts: HashMap<u64, (f64, u64)> = of("s")
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                (e["ts"].as_f64().unwrap(), e["pid"].as_u64().unwrap()),
            )
        })
        .collect();
    assert_eq!(of("f").count(), starts.len());
    for f in of("f") {
        let (ts, from) = starts[&f["id"].as_u64().unwrap()];
        assert!(f["ts"].as_f64().unwrap() >= ts);
        assert_ne!(f["pid"].as_u64().unwrap(), from);
    }
}

#[test]
fn cli_report_table_json_and_trace() {
    let dir = std::env::temp_dir().join(format!("securenn-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, trace) = (dir.join("r.json"), dir.join("t.json"));
    let (j, t) = (json.to_str().unwrap(), trace.to_str().unwrap());
    let (ok, out, err) = securenn_cli(&[
        "run",
        "scenarios/wan-a.toml",
        "--samples",
        "2",
        "--report",
        "table",
        "--trace",
        t,
    ]);
    assert!(ok, "{err}");
    for needle in [
        "private_compare",
        "all_pairs",
        "paper bytes",
        "virtual s",
        "6.argmax",
    ] {
        assert!(out.contains(needle), "{needle} missing from\n{out}");
    }
    assert!(trace.exists());
    // Not overwritten without --force.
    let (ok, _, err) = securenn_cli(&[
        "run",
        "scenarios/lan-a.toml",
        "--samples",
        "1",
        "--trace",
        t,
    ]);
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = securenn_cli(&[
        "run",
        "scenarios/lan-a.toml",
        "--samples",
        "1",
        "--report",
        "json",
        j,
    ]);
    assert!(ok, "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(!doc[0]["ops"].as_array().unwrap().is_empty());
    // `infer` takes the same flags.
    let (ok, out, err) = securenn_cli(&["infer", "--samples", "1", "--report", "table"]);
    assert!(ok && out.contains("private_compare"), "{err}");
    for (args, msg) in [
        (vec!["--report", "json"], "needs a FILE"),
        (vec!["--report", "csv"], "expected `table` or `json FILE`"),
        (vec!["--report", "table", "x.txt"], "takes no FILE"),
    ] {
        let mut a = vec!["run", "scenarios/lan-a.toml", "--samples", "1"];
        a.extend(args);
        let (ok, _, err) = securenn_cli(&a);
        assert!(!ok && err.contains(msg), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rust_log_filters_the_log_lines_only() {
    let run = |filter: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_securenn"));
        cmd.args([
            "run",
            "scenarios/lan-a.toml",
            "--samples",
            "1",
            "--report",
            "table",
        ]);
        cmd.env_remove("RUST_LOG");
        if let Some(f) = filter {
            cmd.env("RUST_LOG", f);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (quiet_out, quiet_err) = run(None);
    assert!(!quiet_err.contains("envelope"), "{quiet_err}");
    let (loud_out, loud_err) = run(Some("securenn::envelope=trace"));
    let lines = loud_err.lines().filter(|l| l.contains("envelope")).count();
    assert!(lines > 100, "{loud_err}");
    // No secret goes to the log: the envelope lines carry keys and sizes.
    assert!(
        loud_err
            .lines()
            .filter(|l| l.contains("envelope"))
            .all(|l| l.contains("bytes="))
    );
    // The table does not depend on what is logged.
    let table = |s: &str| s.lines().filter(|l| l.contains("private_compare")).count();
    assert_eq!(table(&quiet_out), table(&loud_out));
    assert!(table(&quiet_out) > 0);
}

#[test]
fn a_second_query_costs_less_once_the_masked_weights_are_cached() {
    let r = scenario_run("scenarios/lan-a.toml", 2, Layout::Default);
    let t = r.trace.as_deref().unwrap();
    let none = |_: &str| false;
    let (first, second) = (
        t.cost("infer/batch", none).unwrap(),
        t.cost("infer/batch~1", none).unwrap(),
    );
    // The weights stage sends the helper the model owner's masked kernels once
    // (784·128 + 128·128 + 128·10 words; see known_operand), beside the first query's input;
    // with the two queries, that is the whole job.
    let weights = t.cost("infer/weights", none).unwrap();
    assert_eq!(weights.bytes, 8 * (784 * 128 + 128 * 128 + 128 * 10));
    assert_eq!(first.bytes + second.bytes + weights.bytes, r.bytes_total);
    assert_eq!(
        first.messages + second.messages + weights.messages,
        r.messages
    );
    // The queries move the same bytes; the first takes one round more, the helper waiting for
    // the first layer's kernel: 16 rounds, a warm query 15 (17 with Beaver products: in a
    // product with a known weight the other server receives nothing, so it runs ahead).
    assert_eq!(first.bytes, second.bytes);
    assert_eq!((first.rounds, second.rounds), (16, 15));
    assert!(second.seconds > 0.0 && second.seconds < first.seconds);
    // Excluding a subtree: the reveal is the second query's last 8 bytes.
    let without_reveal = t
        .cost("infer/batch~1", |p| p.starts_with("infer/batch~1/reveal"))
        .unwrap();
    assert_eq!(second.bytes - without_reveal.bytes, 8);
    assert!(t.cost("infer/batch~7", none).is_none());
}
