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
        // The helper's first message after the cut: the first layer's correction to the
        // weights' owner, once their F has arrived (known_operand).
        err.contains("P2 -> P1 is cut by a fault from 1ms") && err.contains("1.dense/matmul/known"),
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
        (
            "description = \"x\"\n[network]\ntransport = \"sim\"\ncores = 0\n",
            vec!["network.cores", "0", "1 to 4096"],
        ),
        (
            "description = \"x\"\n[network]\npreset = \"lan\"\ncores = \"16\"\n",
            vec!["line 4", "cores"],
        ),
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

/// A model whose inputs are not MNIST images, with its inputs as a `.npy` (`input` and
/// `labels` beside the scenario file): the CIFAR-shaped residual model runs as `securenn infer
/// --onnx --input --labels` runs it, with the same predictions and bytes.
#[test]
fn npy_input_scenario_runs_as_infer_input() {
    let dir = Scratch::new("scenario-npy");
    for f in [
        "resnet_cifar.onnx",
        "resnet_cifar.input.npy",
        "resnet_cifar.labels.npy",
    ] {
        std::fs::copy(fixture(f), dir.0.join(f)).unwrap();
    }
    let file = dir.path("resnet.toml");
    std::fs::write(
        &file,
        "description = \"resnet from ONNX, .npy inputs\"\n[job]\nonnx = \"resnet_cifar.onnx\"\n\
         input = \"resnet_cifar.input.npy\"\nlabels = \"resnet_cifar.labels.npy\"\n\
         samples = 3\nbatch = 3\nseed = 7\n[output]\njson = \"report.json\"\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["run", &file]);
    assert!(ok, "{err}");
    assert!(out.contains("accuracy"), "{out}");
    let scenario = std::fs::read_to_string(dir.path("report.json")).unwrap();
    let infer_json = dir.path("infer.json");
    let (ok, _, err) = run(&[
        "infer",
        "--onnx",
        &dir.path("resnet_cifar.onnx"),
        "--input",
        &dir.path("resnet_cifar.input.npy"),
        "--labels",
        &dir.path("resnet_cifar.labels.npy"),
        "--samples",
        "3",
        "--batch",
        "3",
        "--seed",
        "7",
        "--json",
        &infer_json,
    ]);
    assert!(ok, "{err}");
    let infer = std::fs::read_to_string(&infer_json).unwrap();
    let (p_scenario, bytes_scenario) = predictions(&scenario);
    let (p_infer, bytes_infer) = predictions(&infer);
    assert_eq!(p_scenario.len(), 3);
    assert_eq!(p_scenario, p_infer);
    assert_eq!(bytes_scenario, bytes_infer);
    // Without `input`, the model is refused, saying what to give.
    std::fs::write(
        &file,
        "description = \"x\"\n[job]\nonnx = \"resnet_cifar.onnx\"\nsamples = 1\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["run", &file]);
    assert!(
        !ok && err.contains("job.input") && err.contains("[3, 32, 32]"),
        "{err}"
    );
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
        (
            format!("{head}input = \"x.npy\"\ndata = \"d.csv\"\n"),
            vec!["job.input and job.data", "not both"],
        ),
        (
            format!("{head}labels = \"y.npy\"\n"),
            vec!["job.labels", "job.input"],
        ),
        (
            format!("{head}input = \"no-such.npy\"\n"),
            vec!["no-such.npy"],
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

/// The shipped training scenario runs in seconds: bytes and rounds, the epoch's test accuracy,
/// and with `--report table` the cost of every phase and layer.
#[test]
fn shipped_train_scenario_runs() {
    let (ok, out, err) = run(&["run", &scenario("train-a-lan"), "--report", "table"]);
    assert!(ok, "{err}");
    for needle in [
        "trained             a by SecureNN (default layout): 1 epoch of 4 iterations of batch 16",
        "(4 iterations in this run)",
        "test accuracy",
        "virtual time",
        "forward   1.dense",
        "asm",
        "backward  5.dense",
    ] {
        assert!(out.contains(needle), "no {needle:?} in {out}");
    }
    // --samples is for inference scenarios.
    let (ok, _, err) = run(&["run", &scenario("train-a-lan"), "--samples", "2"]);
    assert!(!ok && err.contains("training scenario"), "{err}");
}

/// A training scenario writes its JSON report (bytes, rounds, the per-phase table) and the
/// model owner's trained weights (network A's tensors, moved from the seeded initialisation);
/// a second run refuses to overwrite them, naming `job.out` and `force`, before it trains; with
/// `force = true` it does.
#[test]
fn train_scenario_writes_the_weights_and_never_overwrites_them() {
    use securenn::nn::weights_file;
    let dir = Scratch::new("scenario-train");
    let text = "description = \"a few iterations of A\"\n[job]\nkind = \"train\"\nmodel = \"a\"\n\
                epochs = 1\nbatch = 8\niterations = 2\ntest_samples = 10\nseed = 3\n\
                out = \"a.safetensors\"\n[output]\njson = \"report.json\"\n";
    let file = dir.path("train.toml");
    std::fs::write(&file, text).unwrap();
    let (ok, out, err) = run(&["run", &file]);
    assert!(ok, "{err}");
    assert!(out.contains("weights             written to"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("report.json")).unwrap()).unwrap();
    let r = &report[0];
    assert!(r["bytes_total"].as_u64().unwrap() > 0, "{r}");
    assert!(r["rounds"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["iterations"], 2);
    assert!(!r["layers"].as_array().unwrap().is_empty(), "{r}");
    let model = securenn::models::network_a();
    let (w, _) =
        weights_file::load(std::path::Path::new(&dir.path("a.safetensors")), &model).unwrap();
    let init = model.init_weights(3).unwrap();
    assert_eq!(
        w.tensors.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        init.tensors.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert_ne!(w, init);
    let before = std::fs::read(dir.path("a.safetensors")).unwrap();
    std::fs::remove_file(dir.path("report.json")).unwrap();
    let (ok, out, err) = run(&["run", &file]);
    assert!(!ok);
    assert!(
        err.contains("job.out")
            && err.contains("a.safetensors exists")
            && err.contains("force = true"),
        "{err}"
    );
    assert!(!out.contains("communication"), "it trained: {out}");
    assert_eq!(std::fs::read(dir.path("a.safetensors")).unwrap(), before);
    std::fs::write(&file, text.replace("[output]", "force = true\n[output]")).unwrap();
    let (ok, _, err) = run(&["run", &file]);
    assert!(ok, "{err}");
}

/// Bad training scenarios are refused naming the key: an inference key in a training job, a
/// protocol that cannot train, a zero, resuming without checkpoints, a kind that is not one.
#[test]
fn bad_train_scenarios_name_the_key() {
    let dir = Scratch::new("scenario-train-bad");
    let head = "description = \"x\"\n[job]\nkind = \"train\"\n";
    for (text, needles) in [
        (
            format!("{head}samples = 3\n"),
            vec!["line 4", "samples", "test_samples"],
        ),
        (
            format!("{head}protocol = \"pond\"\n"),
            vec!["job.protocol", "pond cannot train"],
        ),
        (
            format!("{head}epochs = 0\n"),
            vec!["job.epochs must be at least 1"],
        ),
        (
            format!("{head}resume = true\n"),
            vec!["job.resume", "job.checkpoint_dir"],
        ),
        (
            "description = \"x\"\n[job]\nkind = \"learn\"\n".to_string(),
            vec!["line 3", "learn", "train", "inference"],
        ),
    ] {
        let f = dir.path("bad.toml");
        std::fs::write(&f, &text).unwrap();
        let (ok, _, err) = run(&["run", &f]);
        assert!(!ok, "{text}");
        for n in needles.iter().chain(&["bad.toml"]) {
            assert!(err.contains(n), "{text}: missing {n:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}
