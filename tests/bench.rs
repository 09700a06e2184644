//! `securenn bench`: the library's rows on a one-cell plan (network A, batch 1, the simulated LAN,
//! the paper's layout: its bytes are the paper's to the byte), the grids the defaults and
//! `--quick` select, the errors for bad names, and the command's JSON file.

mod common;

use common::securenn_cli as securenn;
use securenn::bench::{BenchError, BenchEvent, BenchPlan, paper_cell, run_bench};
use securenn::infer::Layout;

fn one_cell(layout: Layout) -> BenchPlan {
    BenchPlan {
        models: vec!["a".into()],
        batches: vec![1],
        networks: vec!["lan".into()],
        layouts: vec![layout],
        runs: 1,
        ..BenchPlan::full()
    }
}

#[test]
fn network_a_batch_1_on_the_lan_in_the_paper_layout() {
    let mut events = (0, 0);
    let rows = run_bench(&one_cell(Layout::Paper), &mut |e| match e {
        BenchEvent::Run { .. } => events.0 += 1,
        BenchEvent::Cell(_) => events.1 += 1,
    })
    .unwrap();
    assert_eq!(events, (2, 1), "one measured run, one network-bound run");
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.model.as_str(), r.batch, r.network.as_str()),
        ("a", 1, "lan")
    );
    assert_eq!(r.layout, Layout::Paper);
    assert_eq!(r.paper_network.as_deref(), Some("A"));
    // The paper's Table 7, to the byte; revealing the class costs 8 more.
    assert_eq!(r.bytes, 2_100_984);
    assert_eq!(r.reveal_bytes, 8);
    assert_eq!(r.paper_bytes, Some(2_100_000));
    assert_eq!(r.paper_seconds, Some(0.043));
    assert!(r.rounds > 0 && r.messages > 0);
    assert_eq!((r.runs, r.seconds_all.len()), (1, 1));
    assert_eq!(r.seconds, r.seconds_all[0]);
    assert!(r.seconds > 0.0);
    assert!(
        r.network_bound_seconds > 0.0 && r.network_bound_seconds <= r.seconds,
        "bound {} above the measured {}",
        r.network_bound_seconds,
        r.seconds
    );
    assert_eq!(r.ratio_seconds, Some(r.seconds / 0.043));
    assert_eq!(r.ratio_bytes, Some(2_100_984.0 / 2_100_000.0));
    // The bound's floor: every causal round costs the LAN's 0.11 ms one way.
    assert!(r.network_bound_seconds >= r.rounds as f64 * 0.11e-3 * 0.99);
}

#[test]
fn the_grids() {
    let full = BenchPlan::full().cells().unwrap();
    assert_eq!(
        full.len(),
        4 * 2 * 2 * 2,
        "models x batches x networks x layouts"
    );
    assert_eq!(BenchPlan::full().runs, 3);
    let quick = BenchPlan::quick();
    assert_eq!(quick.runs, 1);
    let cells = quick.cells().unwrap();
    assert_eq!(cells.len(), (4 + 1) * 2 * 2, "batch 1 for all, 128 for A");
    assert!(cells.iter().all(|c| c.batch == 1 || c.model == "a"));
    // Layouts of a cell sit side by side, the paper's first.
    assert_eq!(cells[0].layout, Layout::Paper);
    assert_eq!(cells[1].layout, Layout::Default);
    assert_eq!(cells[0].model, cells[1].model);
    let nothing = BenchPlan {
        models: vec!["b".into()],
        batches: vec![128],
        ..BenchPlan::quick()
    };
    assert!(
        matches!(nothing.cells(), Err(BenchError::Config(m)) if m.contains("--quick")),
        "an empty quick grid says why"
    );
}

#[test]
fn the_paper_figures() {
    let c = paper_cell("c", 128, "wan").unwrap();
    assert_eq!((c.network, c.seconds, c.bytes), ("C", 30.45, 1_550_000_000));
    let d = paper_cell("d-as-benchmarked", 128, "lan").unwrap();
    assert_eq!((d.network, d.seconds, d.bytes), ("D", 2.6, 317_700_000));
    assert_eq!(paper_cell("b", 1, "lan").unwrap().bytes, 8_860_000);
    // The paper never timed D as described, other batches or other networks.
    assert!(paper_cell("d", 1, "lan").is_none());
    assert!(paper_cell("a", 10, "lan").is_none());
    assert!(paper_cell("a", 1, "wan-tfe").is_none());
}

#[test]
fn bad_names_say_which_flag_and_what_is_allowed() {
    let bad_model = BenchPlan {
        models: vec!["a".into(), "e".into()],
        ..BenchPlan::quick()
    };
    let e = bad_model.cells().unwrap_err().to_string();
    assert!(
        e.contains("--models") && e.contains("\"e\"") && e.contains("d-as-benchmarked"),
        "{e}"
    );
    let bad_network = BenchPlan {
        networks: vec!["moon".into()],
        ..BenchPlan::quick()
    };
    let e = bad_network.cells().unwrap_err().to_string();
    assert!(
        e.contains("--networks") && e.contains("moon") && e.contains("lan") && e.contains("wan"),
        "{e}"
    );
    let no_runs = BenchPlan {
        runs: 0,
        ..BenchPlan::quick()
    };
    assert!(no_runs.cells().unwrap_err().to_string().contains("--runs"));
}

#[test]
fn cli_writes_json_and_keeps_existing_files() {
    let dir = std::env::temp_dir().join(format!("securenn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let j = json.to_str().unwrap();
    let args = [
        "bench",
        "--models",
        "a",
        "--batches",
        "1",
        "--networks",
        "lan,wan",
        "--layout",
        "default",
        "--runs",
        "2",
        "--json",
        j,
    ];
    let (ok, out, err) = securenn(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains("net bound") && out.contains("paper s"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "lan and wan");
    for r in rows {
        for field in [
            "model",
            "batch",
            "network",
            "layout",
            "seconds",
            "network_bound_seconds",
            "bytes",
            "rounds",
            "paper_seconds",
            "paper_bytes",
            "ratio_seconds",
            "ratio_bytes",
            "runs",
            "seconds_all",
        ] {
            assert!(r.get(field).is_some(), "missing {field}: {r}");
        }
        assert_eq!(r["layout"], "default");
        assert_eq!(r["runs"], 2);
        assert_eq!(r["seconds_all"].as_array().unwrap().len(), 2);
        assert!(r["network_bound_seconds"].as_f64() <= r["seconds"].as_f64());
    }
    assert_eq!(rows[0]["network"], "lan");
    assert_eq!(rows[1]["paper_seconds"], 2.43);
    let before = std::fs::read_to_string(&json).unwrap();
    let (ok, _, err) = securenn(&args);
    assert!(!ok && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&json).unwrap(), before, "kept");
    let mut forced = args.to_vec();
    forced.push("--force");
    let (ok, _, err) = securenn(&forced);
    assert!(ok, "{err}");
    let (ok, _, err) = securenn(&["bench", "--models", "z", "--json", j]);
    assert!(
        !ok && err.contains("--force"),
        "the file check comes first: {err}"
    );
    let (ok, _, err) = securenn(&["bench", "--quick", "--models", "z"]);
    assert!(
        !ok && err.contains("--models") && err.contains("d-as-benchmarked"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
