//! The command line: exit codes and messages for good and bad invocations.

mod common;

use common::securenn_cli as securenn;

#[test]
fn infer_runs_and_writes_json_without_overwriting() {
    let dir = std::env::temp_dir().join(format!("securenn-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let j = json.to_str().unwrap();
    let (ok, out, err) = securenn(&[
        "infer",
        "--protocol",
        "pond",
        "--samples",
        "3",
        "--batch",
        "2",
        "--seed",
        "5",
        "--json",
        j,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("agreement") && out.contains("100.00% with plaintext"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for field in [
        "protocol",
        "model",
        "samples",
        "batch",
        "accuracy",
        "plaintext_agreement",
        "bytes_total",
        "rounds",
        "wall_seconds",
        "layers",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["protocol"], "pond");
    for l in v["layers"].as_array().unwrap() {
        assert!(
            l["name"].is_string() && l["bytes"].is_u64() && l["rounds"].is_u64(),
            "{l}"
        );
    }
    let (ok, _, err) = securenn(&["infer", "--samples", "1", "--seed", "5", "--json", j]);
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = securenn(&[
        "infer",
        "--samples",
        "1",
        "--seed",
        "5",
        "--json",
        j,
        "--force",
    ]);
    assert!(ok, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--layout paper` reproduces the paper's 2,100,984 bytes for network A at batch 1 (plus the 8
/// bytes that reveal the class to the data owner).
#[test]
fn paper_layout_reproduces_the_paper() {
    let dir = std::env::temp_dir().join(format!("securenn-cli-paper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("a.json");
    let (ok, out, err) = securenn(&[
        "infer",
        "--layout",
        "paper",
        "--model",
        "a",
        "--samples",
        "1",
        "--batch",
        "1",
        "--seed",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("per layer"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["bytes_total"], 2_100_984 + 8);
    assert_eq!(v["layout"], "paper");
    std::fs::remove_dir_all(&dir).ok();
}

/// Training writes a weight file that `infer --weights` reads; neither overwrites without --force;
/// a weight file for another model is refused with the tensor's name and expected shape.
#[test]
fn train_then_infer_with_the_weights() {
    let dir = std::env::temp_dir().join(format!("securenn-cli-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("a.safetensors");
    let w = w.to_str().unwrap();
    let (ok, out, err) = securenn(&["train", "--model", "a", "--epochs", "1", "--out", w]);
    assert!(ok, "{err}");
    assert!(out.contains("test accuracy"), "{out}");
    let (ok, _, err) = securenn(&["train", "--model", "a", "--epochs", "1", "--out", w]);
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, out, err) = securenn(&[
        "infer",
        "--model",
        "a",
        "--weights",
        w,
        "--samples",
        "10",
        "--seed",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("100.00% with plaintext"), "{out}");
    let (ok, _, err) = securenn(&["infer", "--model", "d", "--weights", w, "--samples", "1"]);
    assert!(
        !ok && err.contains("kernel") && err.contains("expected shape"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plot_relu_writes_an_svg_and_keeps_existing_files() {
    let path = std::env::temp_dir().join(format!("securenn-cli-relu-{}.svg", std::process::id()));
    let p = path.to_str().unwrap();
    let (ok, _, err) = securenn(&["plot", "relu", "--out", p]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
    let (ok, _, err) = securenn(&["plot", "relu", "--out", p]);
    assert!(!ok && err.contains("--force"), "{err}");
    std::fs::remove_file(&path).ok();
}

#[test]
fn plot_costs_from_a_report() {
    let dir = std::env::temp_dir().join(format!("securenn-cli-costs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("r.json"), dir.join("c.svg"));
    let (ok, _, err) = securenn(&[
        "infer",
        "--samples",
        "2",
        "--batch",
        "2",
        "--seed",
        "3",
        "--network",
        "wan",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = securenn(&[
        "plot",
        "costs",
        json.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("1.dense") && text.contains("virtual time"),
        "the bars are labelled by layer"
    );
    // The array `securenn run --json` writes: one run is drawn as is, several need --run.
    let one = std::fs::read_to_string(&json).unwrap();
    let runs = dir.join("runs.json");
    std::fs::write(&runs, format!("[{one}, {one}]")).unwrap();
    let (ok, _, err) = securenn(&[
        "plot",
        "costs",
        runs.to_str().unwrap(),
        "--run",
        "2",
        "--out",
        dir.join("run2.svg").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    std::fs::write(&runs, format!("[{one}]")).unwrap();
    let (ok, _, err) = securenn(&[
        "plot",
        "costs",
        runs.to_str().unwrap(),
        "--out",
        dir.join("run1.svg").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    std::fs::write(&json, "{}").unwrap();
    let (ok, _, err) = securenn(&[
        "plot",
        "costs",
        json.to_str().unwrap(),
        "--out",
        dir.join("d.svg").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("not a report"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plot_bench_draws_curves_from_bench_rows() {
    let rows = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bench/rows.json"
    );
    let dir = std::env::temp_dir().join(format!("securenn-cli-bench-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let out = dir.join("figs");
    let o = out.to_str().unwrap();
    let (ok, _, err) = securenn(&["plot", "bench", rows, "--out-dir", o]);
    assert!(ok, "{err}");
    // Network A has the most batch sizes; batch 1 is the one every model ran at.
    for (file, series) in [
        (
            "bytes-vs-batch-a.svg",
            &["default layout (lan, wan)", "paper layout (lan, wan)"][..],
        ),
        (
            "time-vs-batch-a.svg",
            &[
                "default layout, lan",
                "paper layout, wan",
                "paper layout, wan: network bound",
            ],
        ),
        (
            "bytes-vs-model-batch1.svg",
            &["default layout (lan, wan)", "c (431k)"],
        ),
        (
            "time-vs-model-batch1.svg",
            &["default layout, wan", "a (118k)", "d-as-benchmarked (99k)"],
        ),
    ] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(svg.starts_with("<svg"), "{file}");
        for s in series {
            assert!(svg.contains(s), "{file} lacks {s:?}");
        }
        assert!(svg.contains("log scale"), "{file}: axis labels");
    }
    // Existing figures are kept unless --force.
    let (ok, _, err) = securenn(&["plot", "bench", rows, "--out-dir", o]);
    assert!(!ok && err.contains("--force"), "{err}");
    let (ok, _, err) = securenn(&[
        "plot",
        "bench",
        rows,
        "--out-dir",
        o,
        "--force",
        "--model",
        "c",
        "--models",
        "a,c",
    ]);
    assert!(ok, "{err}");
    assert!(out.join("bytes-vs-batch-c.svg").exists());
    let (ok, _, err) = securenn(&["plot", "bench", rows, "--out-dir", o, "--model", "z"]);
    assert!(!ok && err.contains("--model z"), "{err}");

    // Bad input: the file, the row and the field, no panic.
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    let b = bad.to_str().unwrap();
    let text = std::fs::read_to_string(rows).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[2]["bytes"] = "many".into();
    std::fs::write(&bad, v.to_string()).unwrap();
    let (ok, _, err) = securenn(&["plot", "bench", b, "--out-dir", o, "--force"]);
    assert!(
        !ok && err.contains("bad.json") && err.contains("row 3") && err.contains("`bytes`"),
        "{err}"
    );
    v[2].as_object_mut().unwrap().remove("bytes");
    std::fs::write(&bad, v.to_string()).unwrap();
    let (ok, _, err) = securenn(&["plot", "bench", b, "--out-dir", o, "--force"]);
    assert!(!ok && err.contains("`bytes`: missing"), "{err}");
    for (text, says) in [
        ("{\"model\": 1}", "not an array"),
        ("[1", "not a bench file"),
        ("[]", "no rows"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let (ok, _, err) = securenn(&["plot", "bench", b, "--out-dir", o, "--force"]);
        assert!(
            !ok && err.contains("bad.json") && err.contains(says),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = dir.join("missing.json");
    let (ok, _, err) = securenn(&["plot", "bench", missing.to_str().unwrap(), "--out-dir", o]);
    assert!(!ok && err.contains("missing.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
