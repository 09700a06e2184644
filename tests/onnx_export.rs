//! `securenn export` and `securenn inspect` through the command line: a built-in network
//! exported to ONNX and run with `infer --onnx` costs the same bytes and rounds and predicts the
//! same classes as the built-in itself, in both layouts; `inspect` lists every fixture (and
//! refuses the unsupported ones by node), and its dry-run totals are what `infer` sends.

#[path = "common/files.rs"]
mod files;

use files::Scratch;
use serde_json::Value;
use std::process::Command;

/// Run the binary: (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = cli(args);
    assert_eq!(code, 0, "securenn {args:?}:\n{out}\n{err}");
    out
}

fn json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (name, bytes, rounds) of every layer of a report or listing.
fn layer_costs(v: &Value) -> Vec<(String, u64, u64)> {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["bytes"].as_u64().unwrap(),
                l["rounds"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Export `net`, then run 20 images through the export and through the built-in, in both
/// layouts: the same bytes (in all and per layer), rounds and predictions.
fn round_trip(net: &str) {
    let dir = Scratch::new(&format!("export-{net}"));
    let onnx = dir.path("model.onnx");
    let out = ok(&["export", "--model", net, "--out", &onnx]);
    assert!(
        out.contains("the argmax is not exported") && out.contains("re-imported: the same"),
        "{out}"
    );
    for layout in ["default", "paper"] {
        let run = |source: &[&str], file: &str| {
            let path = dir.path(file);
            let mut args = vec!["infer"];
            args.extend(source);
            args.extend([
                "--samples",
                "20",
                "--seed",
                "7",
                "--layout",
                layout,
                "--json",
                &path,
            ]);
            ok(&args);
            json(&path)
        };
        let (a, b) = (
            run(&["--onnx", &onnx], "onnx.json"),
            run(&["--model", net], "builtin.json"),
        );
        let what = format!("network {net}, {layout} layout");
        for field in [
            "bytes_total",
            "rounds",
            "messages",
            "predictions",
            "plaintext_predictions",
            "float_predictions",
            "accuracy",
        ] {
            assert_eq!(a[field], b[field], "{what}: {field}");
        }
        assert_eq!(layer_costs(&a), layer_costs(&b), "{what}");
        assert!(a["bytes_total"].as_u64().unwrap() > 0, "{what}");
        std::fs::remove_file(dir.path("onnx.json")).unwrap();
        std::fs::remove_file(dir.path("builtin.json")).unwrap();
    }
}

#[test]
fn network_a_round_trips_through_onnx() {
    round_trip("a");
}

#[test]
fn network_b_round_trips_through_onnx() {
    round_trip("b");
}

#[test]
fn network_c_round_trips_through_onnx() {
    round_trip("c");
}

#[test]
fn network_d_round_trips_through_onnx() {
    round_trip("d");
}

#[test]
fn network_d_as_benchmarked_round_trips_through_onnx() {
    // Its zero padding of 720 activations to 980 is an ONNX Pad of the feature axis.
    round_trip("d-as-benchmarked");
}

#[test]
fn average_pooling_variants_round_trip_through_onnx() {
    for net in ["b-avg", "c-avg", "d-as-benchmarked-avg"] {
        round_trip(net);
    }
}

#[test]
fn export_keeps_what_users_wrote_and_the_bundled_weights() {
    let dir = Scratch::new("export-files");
    let out = dir.path("c.onnx");
    ok(&["export", "--model", "c", "--out", &out]);
    let first = std::fs::read(&out).unwrap();
    let (code, _, err) = cli(&["export", "--model", "d", "--out", &out]);
    assert!(code == 1 && err.contains("exists; pass --force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), first, "kept");
    ok(&["export", "--model", "d", "--out", &out, "--force"]);
    assert_ne!(
        std::fs::read(&out).unwrap(),
        first,
        "overwritten with --force"
    );
    // The bundled weights of the source tree: never, --force or not.
    let bundled = format!("{}/models/c.safetensors", env!("CARGO_MANIFEST_DIR"));
    let before = std::fs::read(&bundled).unwrap();
    let (code, _, err) = cli(&["export", "--model", "c", "--out", &bundled, "--force"]);
    assert!(code == 1 && err.contains("bundled weights"), "{err}");
    assert_eq!(std::fs::read(&bundled).unwrap(), before);
    // Weights of one's own: exported as given; the weight file itself is not an output.
    let model = securenn::models::network_c();
    let w = model.init_weights(9).unwrap();
    let wpath = dir.path("w.safetensors");
    securenn::nn::weights_file::save(std::path::Path::new(&wpath), &w, Default::default(), false)
        .unwrap();
    let (code, _, err) = cli(&[
        "export",
        "--model",
        "c",
        "--weights",
        &wpath,
        "--out",
        &wpath,
        "--force",
    ]);
    assert!(code == 1 && err.contains("is the --weights file"), "{err}");
    let own = dir.path("own.onnx");
    ok(&["export", "--model", "c", "--weights", &wpath, "--out", &own]);
    let imported = securenn::onnx::import(std::path::Path::new(&own)).unwrap();
    let (saved, _) =
        securenn::nn::weights_file::load(std::path::Path::new(&wpath), &model).unwrap();
    assert_eq!(imported.weights, saved);
    assert_eq!(imported.model.nodes, model.nodes);
    // Bad paths and weights name the file.
    let (code, _, err) = cli(&[
        "export",
        "--model",
        "a",
        "--out",
        &dir.path("no/such/dir/a.onnx"),
    ]);
    assert!(code == 1 && err.contains("does not exist"), "{err}");
    let (code, _, err) = cli(&[
        "export",
        "--model",
        "a",
        "--weights",
        &wpath,
        "--out",
        &own,
        "--force",
    ]);
    assert!(code == 1 && err.contains("w.safetensors"), "{err}");
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx");

#[test]
fn inspect_lists_every_supported_fixture_with_its_cost() {
    let dir = Scratch::new("inspect-fixtures");
    for name in [
        "mlp",
        "lenet_bn",
        "matmul_reshape",
        "allconv",
        "resnet_cifar",
    ] {
        let file = format!("{FIXTURES}/{name}.onnx");
        let j = dir.path(&format!("{name}.json"));
        let out = ok(&["inspect", &file, "--json", &j]);
        let v = json(&j);
        let onnx = securenn::onnx::OnnxModel::read(&file).unwrap();
        assert!(
            out.contains(&format!("IR version {}, opset 13", onnx.ir_version)),
            "{name}: {out}"
        );
        assert_eq!(v["opset"], 13, "{name}");
        assert_eq!(
            v["producer"].as_str(),
            Some(onnx.producer.as_str()),
            "{name}"
        );
        let nodes = v["nodes"].as_array().unwrap();
        assert_eq!(
            nodes.len(),
            onnx.graph.nodes.len(),
            "{name}: every node listed"
        );
        for (n, o) in nodes.iter().zip(&onnx.graph.nodes) {
            assert_eq!(n["op_type"], o.op_type.as_str(), "{name}");
            assert_eq!(n["supported"], true, "{name}: {n}");
            let fate = n["fate"].as_str().unwrap();
            assert!(
                ["layer ", "folded into ", "evaluated at import", "removed: "]
                    .iter()
                    .any(|f| fate.starts_with(f)),
                "{name}: {fate}"
            );
            assert!(out.contains(fate), "{name}: {fate} printed");
        }
        let layers = v["layers"].as_array().unwrap();
        assert!(!layers.is_empty(), "{name}");
        for l in layers {
            for f in ["name", "input", "output", "params", "bytes", "rounds"] {
                assert!(l.get(f).is_some(), "{name}: {f} in {l}");
            }
        }
        let bytes = v["bytes_total"].as_u64().unwrap();
        assert!(bytes > 0 && v["rounds"].as_u64().unwrap() > 0, "{name}");
        // The totals are the layers' (and the weights', input's and reveal's) sums.
        let other: u64 = v["other"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["bytes"].as_u64().unwrap())
            .sum();
        let sum: u64 = layer_costs(&v).iter().map(|l| l.1).sum();
        assert_eq!(sum + other, bytes, "{name}");
        let params: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
        assert_eq!(v["params"].as_u64(), Some(params), "{name}");
        assert!(params > 0 && v["error"].is_null(), "{name}");
    }
}

#[test]
fn inspect_refuses_unsupported_fixtures_after_listing_every_node() {
    let dir = Scratch::new("inspect-refused");
    let j = dir.path("u.json");
    let file = format!("{FIXTURES}/unsupported_op.onnx");
    let (code, out, err) = cli(&["inspect", &file, "--json", &j]);
    assert_eq!(code, 1, "{out}\n{err}");
    for node in ["flatten", "fc", "sigmoid"] {
        assert!(out.contains(node), "every node listed: {out}");
    }
    assert!(
        out.lines()
            .any(|l| l.contains("sigmoid") && l.contains("Sigmoid") && l.contains("NOT SUPPORTED")),
        "{out}"
    );
    assert!(
        err.contains("unsupported_op.onnx") && err.contains("node 'sigmoid' (Sigmoid)"),
        "{err}"
    );
    let v = json(&j);
    let unsupported: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["supported"] == false)
        .map(|n| n["op_type"].as_str().unwrap())
        .collect();
    assert_eq!(unsupported, ["Sigmoid"]);
    assert!(v["error"].as_str().unwrap().contains("Sigmoid"));

    let (code, out, err) = cli(&["inspect", &format!("{FIXTURES}/group_conv.onnx")]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("Conv") && err.contains("group"),
        "{out}\n{err}"
    );
    assert!(err.contains("group_conv.onnx"), "{err}");

    let (code, _, err) = cli(&["inspect", &format!("{FIXTURES}/missing_initializer.onnx")]);
    assert!(code == 1 && err.contains("fc.weight"), "{err}");

    let not_onnx = dir.path("x.onnx");
    std::fs::write(&not_onnx, "hello").unwrap();
    let (code, _, err) = cli(&["inspect", &not_onnx]);
    assert!(
        code == 1 && err.contains("x.onnx") && err.contains("not an ONNX"),
        "{err}"
    );
    let (code, _, err) = cli(&["inspect", &dir.path("missing.onnx")]);
    assert!(code == 1 && err.contains("missing.onnx"), "{err}");
    // The JSON file is an output: kept without --force.
    let (code, _, err) = cli(&["inspect", "--model", "a", "--json", &j]);
    assert!(code == 1 && err.contains("--force"), "{err}");
}

#[test]
fn inspect_costs_are_what_infer_sends() {
    let dir = Scratch::new("inspect-infer");
    for layout in ["default", "paper"] {
        let (i, r) = (dir.path("i.json"), dir.path("r.json"));
        let out = ok(&["inspect", "--model", "a", "--layout", layout, "--json", &i]);
        assert!(out.contains("total"), "{out}");
        ok(&[
            "infer",
            "--model",
            "a",
            "--samples",
            "1",
            "--batch",
            "1",
            "--seed",
            "3",
            "--layout",
            layout,
            "--json",
            &r,
        ]);
        let (i, r) = (json(&i), json(&r));
        assert_eq!(i["bytes_total"], r["bytes_total"], "{layout}");
        assert_eq!(i["rounds"], r["rounds"], "{layout}");
        // infer's layers: weights, input, the model's, reveal.
        let rl = layer_costs(&r);
        assert_eq!(layer_costs(&i), rl[2..rl.len() - 1], "{layout}");
        assert_eq!(i["params"], 118_282, "network A's weights and biases");
        std::fs::remove_file(dir.path("i.json")).unwrap();
        std::fs::remove_file(dir.path("r.json")).unwrap();
    }
    // An exported built-in costs what the built-in does.
    let onnx = dir.path("c.onnx");
    ok(&["export", "--model", "c", "--out", &onnx]);
    let (a, b) = (dir.path("a.json"), dir.path("b.json"));
    let out = ok(&["inspect", &onnx, "--json", &a]);
    assert!(out.contains("producer securenn"), "{out}");
    ok(&["inspect", "--model", "c", "--json", &b]);
    let (a, b) = (json(&a), json(&b));
    assert_eq!(layer_costs(&a), layer_costs(&b));
    assert_eq!(
        (&a["bytes_total"], &a["params"]),
        (&b["bytes_total"], &b["params"])
    );
}
