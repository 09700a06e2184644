//! `securenn train --protocol securenn|plaintext` through the binary: the weights, the JSON
//! report and the checkpoints a run writes; a run killed mid-epoch and resumed gives the same
//! weights, bit for bit, as one that was not; bad input is refused naming the flag.

#[path = "common/files.rs"]
mod files;

use files::{Scratch, run_guarded};
use securenn::models::network_a;
use securenn::nn::{Model, Weights, weights_file};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a run here may take before it counts as a hang.
const GUARD: u64 = 300;

fn train(args: &[&str]) -> Output {
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    run_guarded(&all, GUARD)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The run succeeded; its stdout and stderr.
fn ok(o: Output) -> (String, String) {
    let (out, err) = text(&o);
    assert!(o.status.success(), "exit {:?}\n{out}\n{err}", o.status);
    (out, err)
}

/// The run failed with exit status 1 or 2 (an error, not a panic) and stderr holds every needle.
fn refused(o: Output, needles: &[&str]) -> String {
    let (out, err) = text(&o);
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "expected a refusal, got {:?}\n{out}\n{err}",
        o.status
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

fn load(path: &str, model: &Model) -> Weights {
    weights_file::load(Path::new(path), model).unwrap().0
}

/// Every tensor equal to the bit.
fn assert_identical(a: &Weights, b: &Weights) {
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((na, ta), (nb, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(na, nb);
        assert_eq!(ta.shape(), tb.shape(), "{na}");
        let differ = ta
            .iter()
            .zip(tb.iter())
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(differ, 0, "{na}: {differ} of {} values differ", ta.len());
    }
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".ckpt"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A small secure run: weights that load into the model, a JSON report with every phase of an
/// iteration per layer, the epoch-end test accuracies, and every party's checkpoints (mode 0600).
#[test]
fn small_secure_run_writes_weights_report_and_checkpoints() {
    let s = Scratch::new("train-small");
    let (w, json) = (s.path("w.safetensors"), s.path("r.json"));
    let (out, err) = ok(train(&[
        "--protocol",
        "securenn",
        "--model",
        "a",
        "--epochs",
        "2",
        "--batch",
        "16",
        "--iterations",
        "3",
        "--test-samples",
        "50",
        "--out",
        &w,
        "--json",
        &json,
        "--report",
    ]));
    // Progress: a line per epoch with the test accuracy; the summary and the phase table.
    assert!(
        err.contains("epoch  1/2: test accuracy") && err.contains("epoch  2/2: test accuracy"),
        "{err}"
    );
    for needle in [
        "test accuracy",
        "on 50 held-out images after epoch 2",
        "communication",
        "rounds",
        "written to",
        "per phase and layer",
        "asm",
        "backward",
        "iteration (the 5 phases)",
    ] {
        assert!(out.contains(needle), "stdout lacks {needle:?}:\n{out}");
    }
    let trained = load(&w, &network_a());
    assert_eq!(trained.tensors.len(), 6);
    let init = network_a().init_weights(1).unwrap();
    assert!(
        trained
            .tensors
            .iter()
            .zip(&init.tensors)
            .any(|((_, t), (_, i))| t != i),
        "training did not move the weights"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["protocol"], "securenn");
    assert_eq!(r["model"], "a");
    assert_eq!(r["iterations"], 6);
    assert_eq!(r["resumed_from"], 0);
    assert_eq!(r["test_images"], 50);
    let stats = r["epoch_stats"].as_array().unwrap();
    assert_eq!(stats.len(), 2);
    for (i, s) in stats.iter().enumerate() {
        assert_eq!(s["epoch"], i + 1);
        let acc = s["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{s}");
    }
    let layers = r["layers"].as_array().unwrap();
    let has = |phase: &str, layer: &str| {
        layers
            .iter()
            .any(|l| l["phase"] == phase && l["layer"] == layer && l["bytes"].as_u64() > Some(0))
    };
    for layer in ["1.dense", "2.relu", "3.dense", "4.relu", "5.dense"] {
        assert!(has("forward", layer), "forward {layer}: {layers:?}");
        assert!(has("backward", layer), "backward {layer}: {layers:?}");
    }
    for phase in ["asm", "test", "reveal"] {
        assert!(has(phase, ""), "{phase}: {layers:?}");
    }
    let sum: u64 = layers.iter().map(|l| l["bytes"].as_u64().unwrap()).sum();
    assert!(sum > 0 && sum <= r["bytes_total"].as_u64().unwrap());

    // Every party's two checkpoints, in the default directory next to the weights.
    let dir = s.0.join("w.safetensors.checkpoints");
    let expected: Vec<String> = (0..3)
        .flat_map(|j| (1..=2).map(move |e| format!("party{j}-epoch{e}.ckpt")))
        .collect();
    assert_eq!(checkpoints(&dir), expected);
    #[cfg(unix)]
    for f in &expected {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}: mode {:o}", mode & 0o777);
    }
}

/// The resume test: a secure run killed (SIGKILL) during epoch 2, then run again with
/// `--resume`, ends with the same weights, bit for bit, and the same epoch-end test accuracies
/// as the same command never interrupted: the session's randomness is a function of the seed
/// and of each operation's path (`train/epoch<e>/iter~k/...`), the data owner's shuffle of the
/// seed and the epoch, and the checkpoint holds each party's shares exactly.
#[test]
fn killed_mid_epoch_and_resumed_gives_the_same_weights() {
    let s = Scratch::new("train-resume");
    let (u, k) = (s.path("u.safetensors"), s.path("k.safetensors"));
    let (uj, kj) = (s.path("u.json"), s.path("k.json"));
    let common = [
        "train",
        "--protocol",
        "securenn",
        "--model",
        "a",
        "--seed",
        "3",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--iterations",
        "12",
        "--test-samples",
        "20",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|a| a.to_string()).collect()
    };

    // The run to kill: as soon as every party has checkpointed epoch 1, it is in epoch 2.
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(with(&["--out", &k, "--json", &kj]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = s.0.join("k.safetensors.checkpoints");
    let epoch1: Vec<String> = (0..3).map(|j| format!("party{j}-epoch1.ckpt")).collect();
    loop {
        if epoch1.iter().all(|f| dir.join(f).exists()) {
            child.kill().unwrap(); // SIGKILL on unix
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before all three epoch-1 checkpoints appeared");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(GUARD),
            "no epoch-1 checkpoints after {GUARD} s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    let killed_after = t0.elapsed();
    let left = checkpoints(&dir);
    assert!(
        !left.iter().any(|f| f.contains("epoch3")),
        "killed too late: {left:?}"
    );
    assert!(!Path::new(&k).exists(), "a killed run wrote its weights");

    // Without --resume the directory is refused; with it, training continues after epoch 1.
    let mut args = with(&["--out", &k]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(
        run_guarded(&argv, GUARD),
        &["--resume", "--force", "k.safetensors.checkpoints"],
    );
    args = with(&["--out", &k, "--json", &kj, "--resume"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, err) = ok(run_guarded(&argv, GUARD));
    assert!(err.contains("resuming after epoch 1"), "{err}");

    // The same command, never interrupted.
    args = with(&["--out", &u, "--json", &uj]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(run_guarded(&argv, GUARD));

    assert_identical(&load(&k, &network_a()), &load(&u, &network_a()));
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (kr, ur) = (json(&kj), json(&uj));
    assert_eq!(kr["resumed_from"], 1);
    assert_eq!(kr["iterations"], 24);
    assert_eq!(ur["iterations"], 36);
    assert_eq!(kr["epoch_stats"], ur["epoch_stats"]);
    assert_eq!(kr["epoch_stats"].as_array().unwrap().len(), 3);
    eprintln!(
        "killed after {:.1} s; whole test {:.1} s",
        killed_after.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// The plaintext twin checkpoints and resumes too (one party: party0-epoch<e>.ckpt); `--resume`
/// on a directory without checkpoints starts from the initial weights and says so; a model
/// from ONNX trains and is written back as ONNX.
#[test]
fn twin_resume_and_onnx_in_and_out() {
    let s = Scratch::new("train-twin");
    let small = [
        "--model",
        "a",
        "--batch",
        "8",
        "--iterations",
        "2",
        "--test-samples",
        "10",
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["--protocol", "plaintext"];
        args.extend_from_slice(&small);
        args.extend_from_slice(extra);
        train(&args)
    };
    let (once, twice) = (s.path("once.safetensors"), s.path("twice.safetensors"));
    // --resume with nothing to resume from: a fresh start.
    let (_, err) = ok(run(&["--epochs", "2", "--out", &once, "--resume"]));
    assert!(err.contains("starts from the initial weights"), "{err}");
    ok(run(&["--epochs", "1", "--out", &twice]));
    assert_eq!(
        checkpoints(&s.0.join("twice.safetensors.checkpoints")),
        ["party0-epoch1.ckpt"]
    );
    // More epochs than the checkpoints have: continue; fewer: refused.
    let (_, err) = ok(run(&[
        "--epochs", "2", "--out", &twice, "--resume", "--force",
    ]));
    assert!(err.contains("resuming after epoch 1"), "{err}");
    assert_identical(&load(&once, &network_a()), &load(&twice, &network_a()));
    refused(
        run(&["--epochs", "1", "--out", &twice, "--resume", "--force"]),
        &["--epochs 1", "epoch 2"],
    );

    // ONNX in (network A as exported) and out; --no-checkpoints writes none.
    let a_onnx = s.path("a.onnx");
    let (o, _) = text(&run_guarded(
        &["export", "--model", "a", "--out", &a_onnx],
        GUARD,
    ));
    assert!(Path::new(&a_onnx).exists(), "{o}");
    let (t, t_onnx) = (s.path("t.safetensors"), s.path("t.onnx"));
    ok(train(&[
        "--protocol",
        "securenn",
        "--onnx",
        &a_onnx,
        "--epochs",
        "1",
        "--batch",
        "8",
        "--iterations",
        "1",
        "--test-samples",
        "0",
        "--no-checkpoints",
        "--out",
        &t,
        "--onnx-out",
        &t_onnx,
    ]));
    assert!(!s.0.join("t.safetensors.checkpoints").exists());
    let back = securenn::onnx::import(Path::new(&t_onnx)).unwrap();
    let trained = load(&t, &back.model);
    for (name, w) in &trained.tensors {
        let b = back.weights.get(name).unwrap();
        assert!(
            w.iter()
                .zip(b.iter())
                .all(|(x, y)| (x - y).abs() <= x.abs() * f64::from(f32::EPSILON)),
            "{name}"
        );
    }
}

/// Bad input: refused before anything runs, with a message naming the flag; nothing a user
/// wrote is overwritten or deleted without --force (and --force deletes only checkpoints).
#[test]
fn bad_input_is_refused_naming_the_flag() {
    let s = Scratch::new("train-bad");
    let secure = ["--protocol", "securenn", "--model", "a"];
    let with = |extra: &[&str]| -> Output {
        let mut args = secure.to_vec();
        args.extend_from_slice(extra);
        train(&args)
    };
    refused(
        train(&["--protocol", "pond", "--model", "a"]),
        &["--protocol pond", "Pond cannot train"],
    );
    refused(
        train(&["--protocol", "securenn", "--model", "a", "--onnx", "f.onnx"]),
        &["--model", "--onnx", "cannot be used with"],
    );
    refused(train(&["--protocol", "securenn"]), &["--model", "--onnx"]);
    refused(with(&["--lr", "0"]), &["--lr", "positive"]);
    refused(with(&["--learning-rate=-1"]), &["--lr", "positive"]);
    refused(with(&["--batch", "0"]), &["--batch", "at least 1"]);
    refused(with(&["--epochs", "0"]), &["--epochs", "at least 1"]);
    refused(with(&["--batch", "5000"]), &["--batch 5000", "4000"]);
    refused(with(&["--test-samples", "1001"]), &["--test-samples 1001"]);
    refused(with(&["--network", "moon"]), &["--network moon", "lan"]);
    refused(
        train(&[
            "--protocol",
            "plaintext",
            "--model",
            "a",
            "--network",
            "wan",
        ]),
        &["--network wan", "plaintext"],
    );
    // Flags of the secure kinds with the float trainer (the default).
    for flag in [
        vec!["--checkpoint-dir", "x"],
        vec!["--resume"],
        vec!["--json", "x.json"],
        vec!["--lr-halve-every", "3"],
        vec!["--onnx", "x.onnx"],
    ] {
        let mut args = if flag[0] == "--onnx" {
            vec![]
        } else {
            vec!["--model", "a"]
        };
        args.extend_from_slice(&flag);
        refused(train(&args), &[flag[0], "--protocol float"]);
    }
    // Models secure training cannot run, the layer named.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let f = |n: &str| fixtures.join(n).to_str().unwrap().to_string();
    refused(
        train(&[
            "--protocol",
            "securenn",
            "--onnx",
            &f("matmul_reshape.onnx"),
        ]),
        &[
            "cannot be trained",
            "layer 3.leaky_relu",
            "not supported by secure training",
        ],
    );
    refused(
        train(&["--protocol", "plaintext", "--onnx", &f("resnet_cifar.onnx")]),
        &["cannot be trained", "not a chain"],
    );
    // The bundled weights are never the output of secure training, --force or not.
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/a.safetensors");
    refused(
        with(&["--out", bundled.to_str().unwrap(), "--force"]),
        &["--out", "bundled"],
    );

    // An existing --out is kept without --force.
    let out = s.path("mine.safetensors");
    std::fs::write(&out, b"precious").unwrap();
    refused(with(&["--out", &out]), &["--out", "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // A directory with checkpoints: refused without --resume; --force deletes only them.
    let tiny = [
        "--epochs",
        "1",
        "--batch",
        "8",
        "--iterations",
        "1",
        "--test-samples",
        "0",
    ];
    let run = |extra: &[&str]| {
        let mut args = tiny.to_vec();
        args.extend_from_slice(extra);
        with(&args)
    };
    let (w1, w2, w3) = (
        s.path("w1.safetensors"),
        s.path("w2.safetensors"),
        s.path("w3.safetensors"),
    );
    let dir = s.path("ck");
    ok(run(&["--out", &w1, "--checkpoint-dir", &dir]));
    std::fs::write(s.0.join("ck/notes.txt"), b"mine").unwrap();
    refused(
        run(&["--out", &w2, "--checkpoint-dir", &dir]),
        &["--checkpoint-dir", "--resume", "--force"],
    );
    assert!(!Path::new(&w2).exists());
    // Another job's checkpoints (another seed) are refused on --resume, saying why.
    refused(
        run(&[
            "--out",
            &w3,
            "--checkpoint-dir",
            &dir,
            "--resume",
            "--seed",
            "2",
        ]),
        &["--checkpoint-dir", "belongs to another training job"],
    );
    let (_, err) = ok(run(&["--out", &w2, "--checkpoint-dir", &dir, "--force"]));
    assert!(err.contains("deleted 3 checkpoint files"), "{err}");
    assert_eq!(std::fs::read(s.0.join("ck/notes.txt")).unwrap(), b"mine");
    assert_identical(&load(&w1, &network_a()), &load(&w2, &network_a()));
}
