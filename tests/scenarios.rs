//! Every shipped scenario runs (with few images), the fault scenario fails with the expected
//! message, and bad scenario files are refused naming the key, the line and what is allowed.

mod common;
#[path = "common/files.rs"]
mod files;

use common::securenn_cli as run;
use files::Scratch;

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_scenarios_run() {
    for name in [
        "lan-a",
        "wan-a",
        "wan-c-batch128",
        "pond-vs-securenn",
        "lossy-wan",
        "quic-localhost",
        "batch-sweep",
        "onnx-mlp",
    ] {
        let (ok, out, err) = run(&["run", &scenario(name), "--samples", "2"]);
        assert!(ok, "{name}: {err}");
        assert!(out.contains("100.00%"), "{name}: {out}");
    }
}

#[test]
fn partition_scenario_fails_naming_the_link() {
    let (ok, _, err) = run(&["run", &scenario("partition-p2"), "--samples", "2"]);
    assert!(!ok);
    assert!(
        err.contains("-> P2 is cut by a fault from 1ms") && err.contains("relu"),
        "{err}"
    );
}

#[test]
fn bad_scenarios_name_the_key_the_line_and_what_is_allowed() {
    let dir = std::env::temp_dir().join(format!("securenn-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (text, needles) in [
        (
            "description = \"x\"\n[job]\nmodle = \"a\"\n",
            vec!["line 3", "modle", "model"],
        ),
        (
            "description = \"x\"\n[job]\nprotocol = \"spdz\"\n",
            vec!["line 3", "spdz", "securenn"],
        ),
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\npreset = \"moon\"\n",
            vec!["network.preset", "moon", "lossy-wan"],
        ),
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\n[network.links.\"0->0\"]\nlatency_ms = 1\n",
            vec!["0->0", "directed link"],
        ),
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\n[[fault]]\nkind = \"partition\"\nparty = 7\nat_ms = 1\n",
            vec!["fault[0].party", "7"],
        ),
        (
            "description = \"x\"\n[[fault]]\nkind = \"partition\"\nparty = 2\nat_ms = 1\n",
            vec!["faults need", "sim"],
        ),
        ("[job]\nmodel = \"a\"\n", vec!["description"]),
    ] {
        let f = dir.join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let (ok, _, err) = run(&["run", f.to_str().unwrap()]);
        assert!(!ok, "{text}");
        for n in needles {
            assert!(err.contains(n), "{text}: missing {n:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/onnx/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The predictions (and payload bytes) of a report written by `--json` (one object, or the
/// first of an array).
fn predictions(json: &str) -> (Vec<u64>, u64) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let r = if v.is_array() { &v[0] } else { &v };
    let p = r["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    (p, r["bytes_total"].as_u64().unwrap())
}

/// `onnx = "mlp.onnx"` (beside the scenario file) runs on the simulator as `securenn infer
/// --onnx` runs it: with the same seed, the same predictions and the same bytes.
#[test]
fn onnx_scenario_runs_as_infer_onnx() {
    let dir = Scratch::new("scenario-onnx");
    std::fs::copy(fixture("mlp.onnx"), dir.0.join("mlp.onnx")).unwrap();
    let file = dir.path("mlp-lan.toml");
    std::fs::write(
        &file,
        "description = \"mlp from ONNX on the LAN\"\n[job]\nonnx = \"mlp.onnx\"\nsamples = 12\n\
         batch = 5\nseed = 7\n[network]\ntransport = \"sim\"\npreset = \"lan\"\n\
         [output]\njson = \"report.json\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["run", &file]);
    assert!(ok, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    let scenario = std::fs::read_to_string(dir.path("report.json")).unwrap();
    assert!(scenario.contains("\"model\": \"mlp\""), "{scenario}");
    let infer_json = dir.path("infer.json");
    let (ok, _, err) = run(&[
        "infer",
        "--onnx",
        &dir.path("mlp.onnx"),
        "--samples",
        "12",
        "--batch",
        "5",
        "--seed",
        "7",
        "--json",
        &infer_json,
    ]);
    assert!(ok, "{err}");
    let infer = std::fs::read_to_string(&infer_json).unwrap();
    let (p_scenario, bytes_scenario) = predictions(&scenario);
    let (p_infer, bytes_infer) = predictions(&infer);
    assert_eq!(p_scenario.len(), 12);
    assert_eq!(p_scenario, p_infer);
    assert_eq!(bytes_scenario, bytes_infer);
}

/// A job with both `model` and `onnx`, `onnx` with `weights`, a variant changing an ONNX job's
/// model, and an ONNX file that is not there are refused, naming the key and the file.
#[test]
fn bad_onnx_scenarios_name_the_key_and_the_file() {
    let dir = Scratch::new("scenario-onnx-bad");
    let head = "description = \"x\"\n[job]\n";
    for (text, needles) in [
        (
            format!("{head}model = \"a\"\nonnx = \"m.onnx\"\n"),
            vec!["job.model and job.onnx", "not both"],
        ),
        (
            format!("{head}onnx = \"m.onnx\"\nweights = \"w.safetensors\"\n"),
            vec!["job.weights", "carries its own weights"],
        ),
        (
            format!("{head}onnx = \"m.onnx\"\n[[variant]]\nmodel = \"b\"\n"),
            vec!["variant.model", "job.onnx"],
        ),
        (
            format!("{head}onnx = \"no-such.onnx\"\n"),
            vec!["job.onnx", "no-such.onnx", "cannot read"],
        ),
        (
            format!("{head}onnx = \"unsupported_op.onnx\"\n"),
            vec!["job.onnx", "unsupported_op.onnx", "Sigmoid"],
        ),
    ] {
        std::fs::copy(
            fixture("unsupported_op.onnx"),
            dir.0.join("unsupported_op.onnx"),
        )
        .unwrap();
        let f = dir.path("bad.toml");
        std::fs::write(&f, &text).unwrap();
        let (ok, _, err) = run(&["run", &f, "--samples", "2"]);
        assert!(!ok, "{text}");
        for n in needles.iter().chain(&["bad.toml"]) {
            assert!(err.contains(n), "{text}: missing {n:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}
