//! The command line: exit codes and messages for good and bad invocations.

use std::process::Command;

fn securenn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

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
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["protocol"], "pond");
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

#[test]
fn bad_arguments_fail_cleanly() {
    for (args, needle) in [
        (vec!["infer", "--samples", "0"], "--samples"),
        (vec!["infer", "--batch", "0"], "--batch"),
        (vec!["infer", "--samples", "2000"], "split"),
        (
            vec!["infer", "--data", "/nonexistent/x.csv"],
            "/nonexistent/x.csv",
        ),
        (vec!["infer", "--frac-bits", "40"], "fractional bits"),
        (
            vec!["infer", "--protocol", "pond", "--model", "b"],
            "maxpool",
        ),
        (vec!["infer", "--model", "z"], "invalid value"),
        (vec!["infer", "--data-owner", "3"], "invalid value"),
    ] {
        let (ok, _, err) = securenn(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
