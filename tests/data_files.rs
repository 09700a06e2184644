//! Inputs of one's own through `securenn infer`: a label-first CSV with a header, a file of 10
//! images with the default selection, and a `.npy` tensor with and without labels.

#[path = "common/files.rs"]
mod files;

use files::{Scratch, bundled_test, csv, run_guarded, write_npy};

/// Run `securenn infer` with `args` and `--json`; its report.
fn infer(dir: &Scratch, name: &str, args: &[&str]) -> (serde_json::Value, String, String) {
    let json = dir.path(&format!("{name}.json"));
    let mut all = vec!["infer", "--seed", "7", "--json", &json];
    all.extend(args);
    let out = run_guarded(&all, 600);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{all:?}: {stderr}");
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, stdout, stderr)
}

/// The first 100 test images of the bundled sample, written label-first under a header row and
/// read with `--label-column first`, give the bundled run's predictions and accuracy.
#[test]
fn label_first_csv_reproduces_the_bundled_accuracy() {
    let dir = Scratch::new("data-first");
    let file = dir.path("first.csv");
    let m = bundled_test(100);
    std::fs::write(&file, format!("label,1x1,1x2\n{}", csv(&m, true, ","))).unwrap();
    let (bundled, _, _) = infer(&dir, "bundled", &["--protocol", "plaintext"]);
    let (mine, out, err) = infer(
        &dir,
        "mine",
        &[
            "--protocol",
            "plaintext",
            "--data",
            &file,
            "--label-column",
            "first",
        ],
    );
    assert!(err.contains("as a header row"), "{err}");
    assert!(out.contains("on 100 images"), "{out}");
    for field in ["accuracy", "predictions", "labels", "samples"] {
        assert_eq!(mine[field], bundled[field], "{field}");
    }
    assert!(
        mine["accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        mine["accuracy"]
    );
}

/// A file of 10 images is read whole by default (no split rule, no --samples needed), and the
/// same images as a `.npy` tensor give the same secure predictions; without labels the report
/// has no accuracy.
#[test]
fn small_csv_and_npy_agree() {
    let dir = Scratch::new("data-npy");
    let m = bundled_test(10);
    let file = dir.path("ten.csv");
    std::fs::write(&file, csv(&m, false, ",")).unwrap();
    let (x, y) = (dir.path("x.npy"), dir.path("y.npy"));
    write_npy(&m, x.as_ref(), y.as_ref());
    let (from_csv, out, _) = infer(&dir, "csv", &["--data", &file]);
    assert_eq!(from_csv["samples"], 10, "{out}");
    assert_eq!(from_csv["labels"], serde_json::json!(m.labels));
    let (from_npy, _, _) = infer(&dir, "npy", &["--input", &x, "--labels", &y]);
    for field in ["predictions", "plaintext_predictions", "labels", "accuracy"] {
        assert_eq!(from_npy[field], from_csv[field], "{field}");
    }
    let (unlabelled, out, _) = infer(&dir, "bare", &["--input", &x, "--samples", "4"]);
    assert!(out.contains("no labels were given"), "{out}");
    assert_eq!(unlabelled["samples"], 4);
    assert!(unlabelled["accuracy"].is_null() && unlabelled["float_accuracy"].is_null());
    assert_eq!(unlabelled["labels"], serde_json::json!([]));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(
        validator.is_valid(&unlabelled),
        "an unlabelled report fits the schema"
    );
    // With the logits revealed, they are in the JSON, and the report still fits the schema.
    let (revealed, _, _) = infer(
        &dir,
        "logits",
        &["--input", &x, "--samples", "3", "--reveal", "logits"],
    );
    assert_eq!(revealed["logits"].as_array().map(Vec::len), Some(3));
    assert!(
        validator.is_valid(&revealed),
        "a report with logits fits the schema"
    );
    assert_eq!(
        unlabelled["predictions"].as_array().unwrap()[..],
        from_csv["predictions"].as_array().unwrap()[..4]
    );
}

/// A scenario's `[job] data` and `label_column`: the file is relative to the scenario and read
/// whole, in file order.
#[test]
fn scenario_job_reads_a_data_file() {
    let dir = Scratch::new("data-scenario");
    let m = bundled_test(12);
    std::fs::write(dir.0.join("twelve.csv"), csv(&m, true, ",")).unwrap();
    let scenario = dir.path("s.toml");
    std::fs::write(
        &scenario,
        "description = \"mine\"\n[job]\nprotocol = \"plaintext\"\ndata = \"twelve.csv\"\n\
         label_column = \"first\"\nsamples = 5\noffset = 7\n",
    )
    .unwrap();
    let json = dir.path("s.json");
    let out = run_guarded(&["run", &scenario, "--json", &json], 600);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r[0]["labels"], serde_json::json!(m.labels[7..12]));
}
