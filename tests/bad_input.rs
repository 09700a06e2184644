//! Every bad input the command line is known to meet, walked through the binary: each fails
//! with a non-zero exit code (not a panic's 101), a message naming the file, flag or field, and
//! each cause said once; none runs the job before failing on its output paths.

#[path = "common/files.rs"]
mod files;

use files::{Scratch, bundled_test, csv, npy, run_guarded, write_npy};
use securenn::nn::weights_file;

/// The error line must not repeat a cause: no ": "-separated part of 12 or more characters
/// appears twice.
fn repeated_cause(err: &str) -> Option<String> {
    for line in err.lines() {
        let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
        for (i, p) in parts.iter().enumerate() {
            if p.len() >= 12 && parts[i + 1..].contains(p) {
                return Some(p.to_string());
            }
        }
    }
    None
}

#[test]
fn every_bad_input_fails_cleanly_with_a_clear_message() {
    let dir = Scratch::new("bad-input");
    // Paths live as long as the test (leaked), so the cases can borrow them.
    let p = |name: &str| -> &'static str { Box::leak(dir.path(name).into_boxed_str()) };

    // Data files.
    let ten = bundled_test(20);
    std::fs::write(p("tab.csv"), csv(&ten, false, "\t")).unwrap();
    std::fs::write(p("semi.csv"), csv(&ten, false, ";")).unwrap();
    std::fs::write(p("first.csv"), csv(&ten, true, ",")).unwrap();
    std::fs::write(p("small.csv"), csv(&bundled_test(10), false, ",")).unwrap();
    std::fs::write(p("empty.csv"), "").unwrap();
    std::fs::write(p("not-gzip.csv.gz"), "hello").unwrap();
    std::fs::write(p("header-only.csv"), "label,1x1,1x2\n").unwrap();
    std::fs::write(p("binary.csv"), [0xff, 0xfe, 0x00, b',', 0x80, b'\n']).unwrap();
    std::fs::write(
        p("pixel.csv"),
        csv(&bundled_test(1), false, ",").replacen('0', "300", 1),
    )
    .unwrap();
    write_npy(&bundled_test(3), p("x.npy").as_ref(), p("y.npy").as_ref());
    std::fs::write(p("y2.npy"), npy("<i8", &[2], &[0u8; 16])).unwrap();
    std::fs::write(p("yf.npy"), npy("<f4", &[3], &[0u8; 12])).unwrap();
    std::fs::write(p("y10.npy"), npy("|u1", &[3], &[1, 10, 2])).unwrap();
    std::fs::write(p("x-shape.npy"), npy("<f4", &[3, 10], &[0u8; 120])).unwrap();
    std::fs::write(
        p("x-f64.npy"),
        npy("<f8", &[3, 784], &vec![0u8; 3 * 784 * 8]),
    )
    .unwrap();
    let mut huge_x = vec![0u8; 784 * 4];
    huge_x[..4].copy_from_slice(&1e30f32.to_le_bytes());
    std::fs::write(p("x-huge.npy"), npy("<f4", &[1, 784], &huge_x)).unwrap();
    // Inputs far outside MNIST's [0, 1] that still encode: the range analysis must see them.
    let big_x: Vec<u8> = (0..2 * 784).flat_map(|_| 1e9f32.to_le_bytes()).collect();
    std::fs::write(p("x-big.npy"), npy("<f4", &[2, 784], &big_x)).unwrap();
    // One mistyped pixel in the first line: data, not a header.
    std::fs::write(
        p("typo-first.csv"),
        csv(&bundled_test(12), false, ",").replacen(",0,", ",12O,", 1),
    )
    .unwrap();
    let mut short = std::fs::read(p("x.npy")).unwrap();
    short.truncate(short.len() - 4);
    std::fs::write(p("x-short.npy"), short).unwrap();
    std::fs::create_dir_all(p("adir")).unwrap();

    // Weight files: network A's bundled weights, one of them made huge; with trailing bytes.
    let model = securenn::models::by_name("a").unwrap();
    let (mut w, meta) = weights_file::load_bundled("a", &model).unwrap();
    weights_file::save(p("a.safetensors").as_ref(), &w, meta.clone(), true).unwrap();
    let mut good = std::fs::read(p("a.safetensors")).unwrap();
    good.extend([0u8; 5]);
    std::fs::write(p("trailing.safetensors"), good).unwrap();
    let huge = w.tensors[0].0.clone();
    w.tensors[0].1[[0, 0]] = 1e30;
    weights_file::save(p("huge.safetensors").as_ref(), &w, meta, true).unwrap();

    // Reports: a single one (from infer), two of them as `run --json` writes, and not a report.
    let report = p("r.json");
    let out = run_guarded(
        &[
            "infer",
            "--protocol",
            "plaintext",
            "--samples",
            "2",
            "--json",
            report,
        ],
        300,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = std::fs::read_to_string(report).unwrap();
    std::fs::write(p("two.json"), format!("[{one}, {one}]")).unwrap();
    std::fs::write(p("other.json"), r#"{"hello": 1}"#).unwrap();

    let missing = p("no-such-dir/out.json");
    let max = usize::MAX.to_string();
    let (small, first, x) = (p("small.csv"), p("first.csv"), p("x.npy"));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        // --- CSV files
        (
            vec!["infer", "--data", p("tab.csv")],
            vec![
                "tab.csv line 1: has no commas",
                "tab-separated?",
                "must be comma-separated",
            ],
        ),
        (
            vec!["infer", "--data", p("semi.csv")],
            vec!["semi.csv line 1", "semicolon-separated?"],
        ),
        (
            vec!["infer", "--data", p("not-gzip.csv.gz")],
            vec!["not-gzip.csv.gz", "is it gzip?"],
        ),
        (
            vec!["infer", "--data", p("empty.csv")],
            vec!["empty.csv", "no images (empty file)"],
        ),
        (
            vec!["infer", "--data", p("header-only.csv")],
            vec!["only a header row"],
        ),
        (
            vec!["infer", "--data", p("typo-first.csv")],
            vec!["typo-first.csv line 1", "\"12O\" is not a number"],
        ),
        (
            vec!["infer", "--input", p("x-big.npy")],
            vec![
                "fixed-point range",
                "beyond 2^63",
                "inputs in [0, 1000000000]",
            ],
        ),
        (
            vec!["infer", "--data", p("binary.csv")],
            vec!["binary.csv line 1", "not UTF-8"],
        ),
        (
            vec!["infer", "--data", p("pixel.csv")],
            vec!["pixel.csv line 1", "column 1", "0-255"],
        ),
        (
            vec!["infer", "--data", p("adir")],
            vec!["adir", "is a directory"],
        ),
        (
            vec!["infer", "--data", "/nonexistent/x.csv"],
            vec!["cannot read /nonexistent/x.csv", "No such file"],
        ),
        (
            vec!["infer", "--data", &first],
            vec![
                "all 20 labels are 0",
                "first column? try --label-column first",
            ],
        ),
        (
            vec!["infer", "--data", &small, "--label-column", "first"],
            vec![
                "all 10 labels are 0",
                "last column? try --label-column last",
            ],
        ),
        (
            vec!["infer", "--data", &small, "--split", "test"],
            vec!["--split test", "file order"],
        ),
        (
            vec![
                "infer",
                "--data",
                &small,
                "--offset",
                "5",
                "--samples",
                "10",
            ],
            vec!["small.csv", "10 images from offset 5", "which has 10"],
        ),
        (
            vec!["infer", "--offset", &max],
            vec![&max, "test split, which has 1000"],
        ),
        (
            vec!["infer", "--samples", "2000"],
            vec!["2000 images", "test split"],
        ),
        (vec!["infer", "--label-column", "first"], vec!["--data"]),
        // --- other flags
        (vec!["infer", "--frac-bits", "40"], vec!["fractional bits"]),
        (
            vec!["infer", "--protocol", "pond", "--model", "b"],
            vec!["maxpool"],
        ),
        (vec!["infer", "--model", "z"], vec!["invalid value"]),
        (vec!["infer", "--data-owner", "3"], vec!["invalid value"]),
        (
            vec!["infer", "--network", "mars"],
            vec!["unknown network preset \"mars\""],
        ),
        (vec!["bench", "--models", "z"], vec!["unknown model \"z\""]),
        (vec!["bench", "--batches", "0"], vec!["--batches"]),
        // --- CLI numbers
        (vec!["infer", "--samples", "0"], vec!["--samples"]),
        (vec!["infer", "--batch", "0"], vec!["--batch"]),
        (vec!["infer", "--offset", "-1"], vec!["'-1'"]),
        (
            vec!["run", "scenarios/lan-a.toml", "--samples", "0"],
            vec!["--samples"],
        ),
        // --- .npy inputs and labels
        (
            vec!["infer", "--input", p("x-shape.npy")],
            vec!["x-shape.npy", "shape [3, 10]", "N × [28, 28, 1]"],
        ),
        (
            vec!["infer", "--input", p("x-f64.npy")],
            vec!["x-f64.npy", "float32"],
        ),
        (
            vec!["infer", "--input", p("x-short.npy")],
            vec!["x-short.npy", "truncated"],
        ),
        (
            vec!["infer", "--input", &small],
            vec!["small.csv", "not a .npy file"],
        ),
        (vec!["infer", "--input", p("adir")], vec!["is a directory"]),
        (
            vec!["infer", "--input", &x, "--labels", p("y2.npy")],
            vec!["y2.npy", "2 labels for the 3 inputs"],
        ),
        (
            vec!["infer", "--input", &x, "--labels", p("yf.npy")],
            vec!["yf.npy", "int64"],
        ),
        (
            vec!["infer", "--input", &x, "--labels", p("y10.npy")],
            vec!["y10.npy", "label 1 is 10"],
        ),
        (
            vec!["infer", "--input", &x, "--samples", "4"],
            vec!["x.npy", "which has 3"],
        ),
        (
            vec!["infer", "--input", &x, "--data", &small],
            vec!["--data", "cannot be used with"],
        ),
        (vec!["infer", "--labels", p("y.npy")], vec!["--input"]),
        // --- weight files
        (
            vec!["infer", "--weights", p("huge.safetensors")],
            vec!["huge.safetensors", &huge, "outside the fixed-point range"],
        ),
        (
            vec!["infer", "--weights", p("trailing.safetensors")],
            vec![
                "trailing.safetensors",
                "5 trailing bytes after the last tensor",
            ],
        ),
        (
            vec!["infer", "--model", "d", "--weights", p("a.safetensors")],
            vec!["a.safetensors", "expected shape"],
        ),
        (
            vec!["infer", "--weights", p("adir")],
            vec!["adir", "directory"],
        ),
        (
            vec!["infer", "--weights", &small],
            vec!["small.csv is not a safetensors file"],
        ),
        // --- output paths: refused before the job runs
        (
            vec!["infer", "--json", &missing],
            vec![&missing, "does not exist"],
        ),
        (
            vec!["infer", "--trace", &missing],
            vec![&missing, "does not exist"],
        ),
        (
            vec!["infer", "--report", "json", &missing],
            vec![&missing, "does not exist"],
        ),
        (
            vec!["infer", "--json", p("adir")],
            vec!["adir is a directory"],
        ),
        (
            vec!["infer", "--json", &report],
            vec!["exists; pass --force"],
        ),
        (
            vec!["run", "scenarios/lan-a.toml", "--json", &missing],
            vec![&missing, "does not exist"],
        ),
        (
            vec![
                "bench",
                "--quick",
                "--models",
                "a",
                "--networks",
                "lan",
                "--json",
                &missing,
            ],
            vec![&missing, "does not exist"],
        ),
        // --- plot
        (
            vec!["plot", "costs", p("two.json"), "--out", p("c.svg")],
            vec!["holds 2 runs", "--run 1..2"],
        ),
        (
            vec![
                "plot",
                "costs",
                p("two.json"),
                "--run",
                "3",
                "--out",
                p("c.svg"),
            ],
            vec!["--run 3", "holds 2 runs"],
        ),
        (
            vec!["plot", "costs", &report, "--run", "1", "--out", p("c.svg")],
            vec!["holds one report"],
        ),
        (
            vec!["plot", "costs", p("other.json"), "--out", p("c.svg")],
            vec!["other.json is not a report", "an array of reports"],
        ),
        (
            vec!["plot", "costs", &report, "--out", &missing],
            vec![&missing, "does not exist"],
        ),
        (
            vec!["plot", "costs", p("nothing.json"), "--out", p("c.svg")],
            vec!["nothing.json"],
        ),
        (
            vec!["plot", "relu", "--out", &missing],
            vec!["does not exist"],
        ),
        // --- train
        (
            vec![
                "train",
                "--model",
                "a",
                "--data",
                p("tab.csv"),
                "--out",
                p("w.safetensors"),
            ],
            vec!["tab.csv line 1: has no commas"],
        ),
        (
            vec![
                "train",
                "--model",
                "a",
                "--data",
                &small,
                "--out",
                p("w.safetensors"),
            ],
            vec!["small.csv", "too few images to train on"],
        ),
        (
            vec!["train", "--model", "a", "--label-column", "first"],
            vec!["--data"],
        ),
    ];
    let mut failures = Vec::new();
    for (args, needles) in &cases {
        let out = run_guarded(args, 300);
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let code = out.status.code();
        let problem = if out.status.success() {
            Some("succeeded".to_string())
        } else if code.is_none() || code == Some(101) || err.contains("panicked") {
            Some(format!("crashed (exit {code:?})"))
        } else if let Some(n) = needles.iter().find(|n| !err.contains(**n)) {
            Some(format!("message lacks {n:?}"))
        } else if let Some(r) = repeated_cause(&err) {
            Some(format!("repeats its cause {r:?}"))
        } else if stdout.contains("accuracy") {
            Some("ran the job before failing".to_string())
        } else if err.lines().any(|l| l.chars().count() > 400) {
            Some("a message line over 400 characters".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            failures.push(format!("securenn {}: {problem}\n{err}", args.join(" ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Errors wrapped the way the binary meets them print each cause once in `{e:#}` (anyhow's
/// chain): a message that holds its cause does not also chain it as a `source`.
#[test]
fn error_chains_print_each_cause_once() {
    use securenn::data::{DataSource, Mnist};
    use securenn_transports::{PartyId, TransportError};
    fn once(e: impl std::error::Error + Send + Sync + 'static, cause: &str) {
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches(cause).count(), 1, "{text}");
    }
    let dir = Scratch::new("chains");
    // A weight file for another model, through the scenario's transparent wrapper.
    let a = securenn::models::by_name("a").unwrap();
    let d = securenn::models::by_name("d").unwrap();
    let (w, meta) = weights_file::load_bundled("a", &a).unwrap();
    let file = dir.0.join("a.safetensors");
    weights_file::save(&file, &w, meta, true).unwrap();
    let e = weights_file::load(&file, &d).unwrap_err();
    once(securenn::scenario::ScenarioError::from(e), "expected shape");
    // A missing data file, through the same wrapper.
    let e = Mnist::read(DataSource::File(dir.0.join("none.csv"))).unwrap_err();
    once(securenn::scenario::ScenarioError::from(e), "No such file");
    // A transport error inside a protocol error inside an inference error.
    let t = TransportError::PeerGone {
        peer: PartyId(2),
        key: "infer/weights".into(),
    };
    let e = securenn::channel::ProtocolError::from(t);
    once(securenn::infer::InferError::from(e), "is gone");
}
