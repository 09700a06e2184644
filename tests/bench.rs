//! `securenn bench`: the library's rows on a one-cell plan (network A, batch 1, the simulated LAN,
//! the paper's layout: its bytes are the paper's to the byte), the grids the defaults and
//! `--quick` select, the errors for bad names, and the command's JSON file; and the training
//! bench (`--train`): its grid, the paper's per-iteration figures, the closed-form model of the
//! public code's iteration against its measured bytes, and one tiny run through the command;
//! `--compare`: another engine's rows (tests/fixtures/bench) beside ours, and bad files.

mod common;

use common::securenn_cli as securenn;
use securenn::bench::compare::{
    self, CompareRow, compare_table, narrow_plan, parse_rows, read_rows,
};
use securenn::bench::train::{
    TrainPlan, learning_rate, paper_train_cell, public_code_bytes, public_code_measured_mb,
    public_code_phases,
};
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

/// `cores` 1 and 16: one row each, side by side, with the same bytes and rounds; 16 cores take
/// no more virtual time (allowing for a shared machine's noise between separate runs).
#[test]
fn cores_rows_share_bytes_and_rounds() {
    let plan = BenchPlan {
        cores: vec![1, 16],
        batches: vec![16],
        ..one_cell(Layout::Default)
    };
    let cells = plan.cells().unwrap();
    assert_eq!(cells.iter().map(|c| c.cores).collect::<Vec<_>>(), [1, 16]);
    assert!(cells[1].to_string().ends_with(", 16 cores"), "{}", cells[1]);
    let rows = run_bench(&plan, &mut |_| {}).unwrap();
    let (one, sixteen) = (&rows[0], &rows[1]);
    assert_eq!((one.cores, sixteen.cores), (1, 16));
    assert_eq!(
        (one.bytes, one.rounds, one.messages),
        (sixteen.bytes, sixteen.rounds, sixteen.messages)
    );
    assert_eq!(one.network_bound_seconds, sixteen.network_bound_seconds);
    assert!(
        sixteen.seconds <= one.seconds * 1.1,
        "{} vs {}",
        sixteen.seconds,
        one.seconds
    );
    let table = securenn::bench::table(&rows);
    assert!(table.lines().next().unwrap().ends_with("cores"), "{table}");
    // Rows written before the field existed read as one core.
    let mut v = serde_json::to_value(one).unwrap();
    v.as_object_mut().unwrap().remove("cores");
    let old: securenn::bench::BenchRow = serde_json::from_value(v).unwrap();
    assert_eq!(old.cores, 1);
    let e = BenchPlan {
        cores: vec![0],
        ..plan
    }
    .cells()
    .unwrap_err();
    assert!(e.to_string().contains("--cores"), "{e}");
}

/// `--ablate`: each default-layout cell is followed by one row per lever it ran without, each
/// moving more bytes than the row with every lever (and, without the narrow comparisons, more
/// rounds); the paper layout gets no such rows; the table and the JSON say which lever.
#[test]
fn ablated_levers_get_rows_of_their_own() {
    use securenn::infer::Lever;
    let all = [
        Lever::NarrowComparisons,
        Lever::BoundedWidths,
        Lever::KnownOperands,
    ];
    let plan = BenchPlan {
        layouts: vec![Layout::Paper, Layout::Default],
        ablate: all.to_vec(),
        ..one_cell(Layout::Default)
    };
    let cells = plan.cells().unwrap();
    assert_eq!(
        cells
            .iter()
            .map(|c| (c.layout, c.without))
            .collect::<Vec<_>>(),
        [
            (Layout::Paper, None),
            (Layout::Default, None),
            (Layout::Default, Some(all[0])),
            (Layout::Default, Some(all[1])),
            (Layout::Default, Some(all[2])),
        ]
    );
    assert!(
        cells[4].to_string().contains("without known-operands"),
        "{}",
        cells[4]
    );
    let rows = run_bench(
        &BenchPlan {
            layouts: vec![Layout::Default],
            ..plan
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rows.len(), 4);
    let base = &rows[0];
    assert_eq!(base.without, None);
    for (r, lever) in rows[1..].iter().zip(all) {
        assert_eq!(r.without, Some(lever));
        assert!(
            r.bytes > base.bytes,
            "{lever}: {} vs {}",
            r.bytes,
            base.bytes
        );
        assert!(r.network_bound_seconds > 0.0);
    }
    assert!(
        rows[1].rounds > base.rounds + 5,
        "{} vs {}",
        rows[1].rounds,
        base.rounds
    );
    assert_eq!(rows[2].rounds, base.rounds, "widths change bytes only");
    let table = securenn::bench::table(&rows);
    assert!(
        table.lines().next().unwrap().ends_with("without"),
        "{table}"
    );
    assert!(
        table.lines().last().unwrap().ends_with("known-operands"),
        "{table}"
    );
    let json = serde_json::to_value(&rows[3]).unwrap();
    assert_eq!(json["without"], "known-operands");
    // Rows written before the field existed ran with every lever.
    let mut v = serde_json::to_value(base).unwrap();
    v.as_object_mut().unwrap().remove("without");
    let old: securenn::bench::BenchRow = serde_json::from_value(v).unwrap();
    assert_eq!(old.without, None);
}

/// A batch above half the bundled test split (1,000 images) still runs: the warm second query
/// repeats the first one's images.
#[test]
fn batches_beyond_half_the_test_split_run() {
    let rows = run_bench(
        &BenchPlan {
            batches: vec![600],
            ..one_cell(Layout::Default)
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((rows.len(), rows[0].batch), (1, 600));
    assert!(rows[0].bytes > 0);
    let e = run_bench(
        &BenchPlan {
            batches: vec![1001],
            ..one_cell(Layout::Default)
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("1000"), "{e}");
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

#[test]
fn the_training_grids() {
    let full = TrainPlan::full().cells().unwrap();
    assert_eq!(full.len(), 3 * 2 * 2, "A-C x lan, wan x both layouts");
    assert!(full.iter().all(|c| c.batch == 128));
    assert_eq!(
        (full[0].layout, full[1].layout),
        (Layout::Paper, Layout::Default)
    );
    assert_eq!(TrainPlan::full().runs, 1);
    let quick = TrainPlan::quick().cells().unwrap();
    assert_eq!(quick.len(), 2 * 2);
    assert!(quick.iter().all(|c| c.model == "a"));
    let d = TrainPlan {
        models: vec!["d".into()],
        ..TrainPlan::full()
    };
    let e = d.cells().unwrap_err().to_string();
    assert!(e.contains("--models") && e.contains("a, b, c"), "{e}");
    let nothing = TrainPlan {
        models: vec!["b".into()],
        ..TrainPlan::quick()
    };
    assert!(
        nothing.cells().unwrap_err().to_string().contains("--quick"),
        "an empty quick grid says why"
    );
    assert_eq!(learning_rate("a"), 1.0 / 128.0);
    assert_eq!(learning_rate("c"), 1.0 / 32.0);
}

#[test]
fn the_paper_training_figures() {
    // Tables 3 and 5 over their iterations (468.75 per epoch at batch 128).
    for (m, net, s) in [
        ("a", "lan", 0.527),
        ("a", "wan", 4.009),
        ("b", "lan", 8.909),
        ("b", "wan", 27.63),
        ("c", "lan", 15.33),
        ("c", "wan", 47.09),
    ] {
        let p = paper_train_cell(m, 128, net).unwrap();
        assert!((p.seconds - s).abs() < 0.005, "{m} {net}: {}", p.seconds);
        assert_eq!(p.network, m.to_uppercase());
    }
    assert!(paper_train_cell("a", 1, "lan").is_none());
    assert!(paper_train_cell("a", 128, "wan-tfe").is_none());
    assert!(paper_train_cell("d", 128, "lan").is_none());
}

#[test]
fn the_public_codes_iteration_in_closed_form() {
    // Every measured figure (reference §4.4) to its printed digits, from the model.
    for (m, batch, exact) in [
        ("a", 1, 3_458_832u64),
        ("b", 1, 11_587_248),
        ("c", 1, 33_529_360),
        ("a", 128, 47_124_480),
        ("b", 128, 1_314_308_544),
        ("c", 128, 2_105_834_080),
    ] {
        assert_eq!(
            public_code_bytes(m, batch),
            Some(exact),
            "{m} batch {batch}"
        );
        let mb = public_code_measured_mb(m, batch).unwrap();
        let digits = 6 - (mb.log10().floor() as i32 + 1);
        let scale = 10f64.powi(digits);
        assert_eq!(
            (exact as f64 / 1e6 * scale).round() / scale,
            mb,
            "{m} batch {batch}"
        );
    }
    // A at 128: Table 7's 29,117,440 without the argmax, the Division, the backward pass.
    let a = public_code_phases("a", 128).unwrap();
    let phase = |p: &str| {
        a.iter()
            .filter(|x| x.phase == p)
            .map(|x| x.bytes)
            .sum::<u64>()
    };
    assert_eq!(phase("forward"), 29_117_440 - 9 * 744 * 128);
    assert_eq!(phase("asm"), 13 * 824 * 1280);
    assert_eq!(phase("backward"), 5_152_768);
    assert_eq!(phase("update") + phase("input"), 0);
    assert!(public_code_phases("d", 128).is_none());
    assert!(public_code_measured_mb("a", 2).is_none());
}

#[test]
fn cli_trains_one_tiny_iteration() {
    let dir = std::env::temp_dir().join(format!("securenn-bench-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("train.json");
    let j = json.to_str().unwrap();
    let args = [
        "bench",
        "--train",
        "--explain",
        "--batches",
        "2",
        "--models",
        "a",
        "--networks",
        "lan",
        "--json",
        j,
    ];
    let (ok, out, err) = securenn(&args);
    assert!(ok, "{err}");
    assert!(
        out.contains("s/iter") && out.contains("public MB") && out.contains("net bound"),
        "{out}"
    );
    assert!(
        out.contains("against the public code") && out.contains("total"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "paper and default layouts");
    assert_eq!(
        (rows[0]["layout"].as_str(), rows[1]["layout"].as_str()),
        (Some("paper"), Some("default"))
    );
    for r in rows {
        assert_eq!(r["batch"], 2);
        assert_eq!(r["paper_network"], "A");
        for f in [
            "bytes",
            "rounds",
            "messages",
            "busiest_link_bytes",
            "oneoff_bytes",
        ] {
            assert!(r[f].as_u64().unwrap() > 0, "{f}: {r}");
        }
        for f in [
            "seconds",
            "network_bound_seconds",
            "cpu_seconds",
            "job_seconds",
        ] {
            assert!(r[f].as_f64().unwrap() > 0.0, "{f}: {r}");
        }
        // The paper and the public code have no figure at batch 2.
        for f in [
            "paper_seconds",
            "ratio_seconds",
            "public_bytes",
            "ratio_bytes",
        ] {
            assert!(r[f].is_null(), "{f}: {r}");
        }
        // The bound's floor: every round costs the LAN's 0.11 ms one way.
        let rounds = r["rounds"].as_f64().unwrap();
        assert!(r["network_bound_seconds"].as_f64().unwrap() >= rounds * 0.11e-3 * 0.99);
        let phases = r["phases"].as_array().unwrap();
        let sum: u64 = phases.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
        assert_eq!(sum, r["bytes"].as_u64().unwrap());
        assert!(
            phases
                .iter()
                .all(|p| p["phase"] != "weights" && p["phase"] != "reveal")
        );
    }
    // The paper layout against the public code's model, line by line, at batch 2.
    let paper = &rows[0];
    let ours = |phase: &str, layer: Option<&str>| -> u64 {
        paper["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["phase"] == phase && layer.is_none_or(|l| p["layer"] == l))
            .map(|p| p["bytes"].as_u64().unwrap())
            .sum()
    };
    let public = public_code_phases("a", 2).unwrap();
    let theirs = |phase: &str, layer: &str| {
        public
            .iter()
            .find(|p| p.phase == phase && p.layer == layer)
            .unwrap()
            .bytes
    };
    assert_eq!(
        ours("forward", None),
        theirs("forward", ""),
        "Table 7 without the argmax"
    );
    assert_eq!(
        ours("asm", None),
        13 * 704 * 2 * 10,
        "Division with PRF triples"
    );
    assert_eq!(theirs("asm", ""), 13 * 824 * 2 * 10, "with full triples");
    for layer in ["1.dense", "3.dense", "4.relu", "5.dense"] {
        assert_eq!(
            ours("backward", Some(layer)),
            theirs("backward", layer),
            "{layer}"
        );
    }
    assert_eq!(
        (
            ours("backward", Some("2.relu")),
            theirs("backward", "2.relu")
        ),
        (40 * 2 * 128, 0)
    );
    assert_eq!(
        (
            ours("backward", Some("6.relu")),
            theirs("backward", "6.relu")
        ),
        (0, 40 * 2 * 10)
    );
    let (ok, _, err) = securenn(&["bench", "--explain"]);
    assert!(!ok && err.contains("--train"), "{err}");
    let (ok, _, err) = securenn(&["bench", "--train", "--models", "d"]);
    assert!(!ok && err.contains("--models"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn spu_sample() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bench/spu-sample.json")
}

/// One of our rows as the comparison reads it.
fn our_row(model: &str, batch: usize, layout: &str, seconds: f64, bytes: u64) -> CompareRow {
    CompareRow {
        model: model.into(),
        batch,
        network: Some("lan".into()),
        layout: Some(layout.into()),
        protocol: Some("securenn".into()),
        engine: None,
        seconds,
        wall_seconds: Some(2.0 * seconds),
        bytes,
        weights_bytes: Some(1_000_000),
        rounds: Some(33),
        date: None,
        loadavg: None,
    }
}

#[test]
fn compare_reads_another_engines_rows_and_pairs_them_on_model_and_batch() {
    let path = spu_sample();
    let theirs = read_rows(&path).unwrap();
    assert_eq!(theirs.len(), 6);
    let t = &theirs[0];
    assert_eq!((t.model.as_str(), t.batch), ("a", 1));
    assert_eq!(t.protocol.as_deref(), Some("aby3"));
    assert_eq!(t.engine.as_deref(), Some("spu 0.9.5"));
    assert_eq!(t.network.as_deref(), Some("local"));
    assert_eq!((t.bytes, t.rounds), (65_325, None));
    assert_eq!(t.wall(), Some(t.seconds));
    // What `bench --compare` runs of ours: the file's models the bench knows, its batches.
    let mut plan = BenchPlan::full();
    narrow_plan(&mut plan, &theirs, "spu-sample.json", false, false).unwrap();
    assert_eq!(plan.models, ["a", "c"]);
    assert_eq!(plan.batches, [1, 128]);
    let mut given = BenchPlan::full();
    narrow_plan(&mut given, &theirs, "spu-sample.json", true, true).unwrap();
    assert_eq!(given.models, BenchPlan::full().models, "flags win");
    let foreign: Vec<CompareRow> = theirs
        .iter()
        .filter(|t| t.model == "lenet-spu")
        .cloned()
        .collect();
    let e = narrow_plan(&mut plan, &foreign, "x.json", false, false).unwrap_err();
    assert!(
        e.to_string().contains("x.json") && e.to_string().contains("lenet-spu batch 1"),
        "{e}"
    );

    let ours = vec![
        our_row("a", 1, "paper", 0.012, 2_100_984),
        our_row("a", 1, "default", 0.010, 2_047_000),
        our_row("b", 1, "default", 0.037, 5_630_000),
    ];
    let pairs = compare::pairs(&ours, &theirs, "f").unwrap();
    // Each of our a-batch-1 rows beside SPU's two protocols; b has no partner.
    assert_eq!(pairs, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    let table = compare_table(&ours, &theirs, "spu-sample.json").unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("their MB") && lines[0].contains("ours wall"),
        "{table}"
    );
    assert!(
        lines[1].contains("lan paper") && lines[1].contains("spu aby3"),
        "{table}"
    );
    // Bytes: 2,100,984 / 65,325; wall: 0.024 / 0.063755; seconds: different networks.
    assert!(
        lines[1].contains(&format!("{:.3}", 2_100_984.0 / 65_325.0)),
        "{table}"
    );
    assert!(
        lines[1].contains(&format!("{:.2}", 0.024 / 0.063755)),
        "{table}"
    );
    // Less the weights' one-time input: 1,100,984 B, 1.101 MB, 16.854 times SPU's.
    assert!(
        lines[1].contains(" 1.101 ")
            && lines[1].contains(&format!("{:.3}", 1_100_984.0 / 65_325.0)),
        "{table}"
    );
    assert!(lines[0].contains("ours - wts"), "{table}");
    assert!(lines[2].contains("spu semi2k"), "{table}");
    assert!(
        table.contains("spu 0.9.5") && table.contains("load 3.99 to 6.57"),
        "{table}"
    );
    assert!(
        table.contains("not matched by any of ours: a batch 128, c batch 1, lenet-spu batch 1"),
        "{table}"
    );
    // Seconds are compared on the same network only, rounds where both have them.
    let same = vec![CompareRow {
        engine: Some("other 1.0".into()),
        rounds: Some(66),
        ..our_row("a", 1, "x", 0.024, 1_050_492)
    }];
    let t = compare_table(&ours[..1], &same, "g").unwrap();
    let line = t.lines().nth(1).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[cols.len() - 1], "0.50", "rounds 33 / 66: {t}");
    assert!(cols.contains(&"0.50") && cols.contains(&"2.000"), "{t}");
    let e = compare::pairs(&ours[2..], &theirs, "spu-sample.json").unwrap_err();
    assert!(
        e.to_string().contains("spu-sample.json") && e.to_string().contains("we have b batch 1"),
        "{e}"
    );
}

#[test]
fn compare_refuses_bad_files_naming_the_file_row_and_field() {
    let bad = |text: &str| parse_rows(text, "their.json").unwrap_err().to_string();
    let row = r#"{"model": "a", "batch": 1, "seconds": 0.5, "bytes": 10}"#;
    assert_eq!(parse_rows(&format!("[{row}]"), "f").unwrap().len(), 1);
    for (text, want) in [
        ("[", "their.json is not JSON"),
        (
            r#"{"rows": []}"#,
            "expected a JSON array of bench rows, found an object",
        ),
        ("[]", "their.json: holds no rows"),
        ("[3]", "row 1: field \"(row)\" is a number"),
        (
            &format!(r#"[{row}, {{"model": "a", "batch": 1, "seconds": 0.5}}]"#),
            "their.json: row 2: field \"bytes\" is missing",
        ),
        (
            r#"[{"model": "a", "batch": 1, "seconds": "fast", "bytes": 1}]"#,
            "field \"seconds\" is \"fast\", expected seconds",
        ),
        (
            r#"[{"model": "a", "batch": 1, "seconds": 1, "bytes": -5}]"#,
            "field \"bytes\" is -5, expected a whole number",
        ),
        (
            r#"[{"model": "a", "batch": 0, "seconds": 1, "bytes": 5}]"#,
            "field \"batch\" is 0",
        ),
        (
            r#"[{"model": 7, "batch": 1, "seconds": 1, "bytes": 5}]"#,
            "field \"model\" is a number, expected a string",
        ),
        (
            r#"[{"model": "a", "batch": 1, "seconds": 1, "bytes": 5, "rounds": 1.5}]"#,
            "field \"rounds\" is 1.5",
        ),
    ] {
        let e = bad(text);
        assert!(e.contains(want) && e.contains("their.json"), "{text}: {e}");
    }
    let e = read_rows(std::path::Path::new("/no/such/rows.json")).unwrap_err();
    assert!(e.to_string().contains("/no/such/rows.json"), "{e}");
}

#[test]
fn cli_compares_with_a_file() {
    let dir = std::env::temp_dir().join(format!("securenn-bench-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = spu_sample();
    let f = fixture.to_str().unwrap();
    let json = dir.join("ours.json");
    let j = json.to_str().unwrap();
    // One cell of ours, run, then beside the file's.
    let (ok, out, err) = securenn(&[
        "bench",
        "--compare",
        f,
        "--models",
        "a",
        "--batches",
        "1",
        "--networks",
        "lan",
        "--layout",
        "paper",
        "--runs",
        "1",
        "--json",
        j,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("paper s"),
        "the bench's own table first: {out}"
    );
    assert!(
        out.contains("lan paper") && out.contains("spu aby3") && out.contains("spu semi2k"),
        "{out}"
    );
    assert!(out.contains("not matched by any of ours"), "{out}");
    // The same from the file --json wrote, without running.
    let (ok, out2, err) = securenn(&["bench", "--compare", f, "--ours", j]);
    assert!(ok, "{err}");
    assert!(
        !out2.contains("paper s") && out2.contains("spu aby3"),
        "{out2}"
    );
    let ours_line = |o: &str| {
        o.lines()
            .find(|l| l.contains("spu semi2k"))
            .map(str::to_string)
    };
    assert_eq!(ours_line(&out), ours_line(&out2));
    // Bad files: the error names the file and the field, the exit is not 0, nothing panics.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"[{"model": "a", "batch": 1, "bytes": 10}]"#).unwrap();
    let b = bad.to_str().unwrap();
    for args in [
        vec!["bench", "--compare", b, "--quick"],
        vec!["bench", "--compare", f, "--ours", b],
    ] {
        let (ok, _, err) = securenn(&args);
        assert!(
            !ok && err.contains("bad.json") && err.contains("\"seconds\" is missing"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, _, err) = securenn(&["bench", "--compare", "/no/such.json"]);
    assert!(!ok && err.contains("/no/such.json"), "{err}");
    let (ok, _, err) = securenn(&["bench", "--compare", f, "--models", "b", "--ours", j]);
    assert!(
        !ok && err.contains("--models"),
        "--ours runs nothing: {err}"
    );
    let (ok, _, err) = securenn(&["bench", "--ours", j]);
    assert!(!ok && err.contains("--compare"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
