//! The ONNX importer against onnxruntime, on the committed fixtures (`tests/fixtures/onnx`, see
//! its README): every trained model imported and run securely (SecureNN, the logits revealed)
//! on all its test inputs agrees with onnxruntime's predictions and logits; the plaintext
//! backend and Pond likewise (Pond only where it can run: no max pooling); the NCHW → NHWC
//! conversion is checked on the float path and by hand on a kernel; and broken files, wrong
//! inputs and conflicting flags are refused through the command line with a message naming
//! what is wrong.
//!
//! `cargo test --release --test onnx -- --nocapture` prints the agreement and logit error of
//! every run.

#[path = "common/files.rs"]
mod files;

use files::{Scratch, run_guarded};
use ndarray::{ArrayD, IxDyn};
use securenn::channel::ProtocolError;
use securenn::data::{DataSource, Mnist, Split};
use securenn::infer::{InferError, InferReport, InferSpec, ProtocolKind, Reveal, run_inference};
use securenn::nn::forward_float;
use securenn::onnx::{Fate, Imported, OnnxModel, import};
use securenn::protocol::ReluKind;
use std::path::PathBuf;
use std::time::Instant;

/// The session seed of every secure run.
const SEED: u64 = 0x5eed_0ca5;

/// The bundled sample's test split, as the fixtures' MNIST outputs were computed on.
const MNIST_TEST: usize = 1000;

/// Fewest predictions (fraction of inputs) that must agree with onnxruntime's.
const MIN_AGREEMENT: f64 = 0.995;

/// Largest |logit − onnxruntime's logit| allowed in fixed point (13 fractional bits).
const MAX_LOGIT_ERROR: f64 = 0.05;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

fn fixture_str(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

/// The five trained fixtures: name, onnxruntime's logits file (pre-softmax where the model ends
/// with Softmax/LogSoftmax), whether the model max-pools.
const TRAINED: [(&str, &str, bool); 5] = [
    ("mlp", "mlp.ort.npy", false),
    ("lenet_bn", "lenet_bn.ort.npy", true),
    ("matmul_reshape", "matmul_reshape.ort_logits.npy", false),
    ("allconv", "allconv.ort_logits.npy", false),
    ("resnet_cifar", "resnet_cifar.ort.npy", true),
];

fn logits_file(name: &str) -> &'static str {
    TRAINED
        .iter()
        .find(|t| t.0 == name)
        .map(|t| t.1)
        .expect("a trained fixture")
}

/// A float32 `.npy` fixture of N × `row` as rows (read with the project's `.npy` reader), and
/// the labels of `labels` if given.
fn read_npy(file: &str, labels: Option<&str>, row: &[usize]) -> Mnist {
    let labels = labels.map(fixture);
    Mnist::read_npy(&fixture(file), labels.as_deref(), row)
        .unwrap_or_else(|e| panic!("reading {file}: {e}"))
}

/// onnxruntime's logits on the fixture's inputs, one row per input.
fn onnxruntime_logits(name: &str) -> Vec<Vec<f64>> {
    read_npy(logits_file(name), None, &[10]).images
}

fn import_fixture(name: &str) -> Imported {
    import(&fixture(&format!("{name}.onnx"))).unwrap_or_else(|e| panic!("importing {name}: {e}"))
}

/// The bundled sample's test split, whose order the fixtures' MNIST outputs follow (checked
/// against `mnist_test.labels.npy`).
fn mnist_test() -> Mnist {
    Mnist::load(DataSource::Bundled, Split::Test, 0, MNIST_TEST).unwrap()
}

/// The fixture's inputs in the model's (NHWC) order, with their labels.
fn inputs(im: &Imported) -> Mnist {
    let mut data = if im.name == "resnet_cifar" {
        read_npy(
            "resnet_cifar.input.npy",
            Some("resnet_cifar.labels.npy"),
            &im.model.given_input_shape(),
        )
    } else {
        mnist_test()
    };
    for x in &mut data.images {
        *x = im.model.input_to_nhwc(x);
    }
    data
}

fn first(data: &Mnist, n: usize) -> Mnist {
    Mnist {
        images: data.images[..n].to_vec(),
        labels: data.labels[..n].to_vec(),
    }
}

/// Argmax with the protocols' tie rule (the later index among equal values).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x >= v[best] {
            best = i;
        }
    }
    best
}

fn argmaxes(rows: &[Vec<f64>]) -> Vec<usize> {
    rows.iter().map(|r| argmax(r)).collect()
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

/// Run `im` on `data` in memory. Pond's jobs run despite the range analysis (see
/// [`pond_runs_the_models_without_max_pooling`]).
fn run(
    protocol: ProtocolKind,
    im: &Imported,
    data: Mnist,
    batch: usize,
    reveal: Reveal,
) -> Result<InferReport, InferError> {
    let spec = InferSpec {
        batch,
        reveal: Some(reveal),
        allow_range_risk: protocol == ProtocolKind::Pond,
        without: Vec::new(),
        ..InferSpec::new(
            protocol,
            &im.name,
            im.model.clone(),
            im.weights.clone(),
            data,
            SEED,
        )
    };
    run_inference(&spec, None)
}

/// What a run with the logits revealed gave, beside onnxruntime.
struct Against {
    report: InferReport,
    /// Fraction of inputs whose prediction is onnxruntime's.
    agreement: f64,
    /// Largest |logit − onnxruntime's logit|.
    max_error: f64,
}

/// Run `protocol` with the logits revealed on all the fixture's inputs and compare with
/// onnxruntime's outputs.
fn against_onnxruntime(protocol: ProtocolKind, im: &Imported, batch: usize) -> Against {
    let data = inputs(im);
    let ort = onnxruntime_logits(&im.name);
    assert_eq!(
        ort.len(),
        data.images.len(),
        "{}: one output per input",
        im.name
    );
    let n = ort.len();
    let t = Instant::now();
    let report = run(protocol, im, data, batch, Reveal::Logits)
        .unwrap_or_else(|e| panic!("{} on {}: {e}", protocol.name(), im.name));
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.logits.len(), n, "{}: logits of every input", im.name);
    // The data owner's predictions are the argmax of the logits it learnt.
    assert_eq!(report.predictions, argmaxes(&report.logits));
    let agreement = agreement(&report.predictions, &argmaxes(&ort));
    let max_error = max_abs_diff(&report.logits, &ort);
    eprintln!(
        "{:<15} {:<9} vs onnxruntime: {:6.2}% of {n} predictions agree ({} differ), max |logit \
         error| {max_error:.5}; accuracy {:.1}% (float model {:.1}%); batch {batch}, {secs:.1} s",
        im.name,
        protocol.name(),
        100.0 * agreement,
        ((1.0 - agreement) * n as f64).round(),
        100.0 * report.accuracy.unwrap_or(f64::NAN),
        100.0 * report.float_accuracy.unwrap_or(f64::NAN),
    );
    Against {
        report,
        agreement,
        max_error,
    }
}

#[test]
fn mnist_test_split_is_in_the_fixtures_order() {
    let labels = read_npy("mlp.ort.npy", Some("mnist_test.labels.npy"), &[10]).labels;
    let m = mnist_test();
    assert_eq!(m.images.len(), MNIST_TEST);
    assert_eq!(m.labels, labels);
    for (name, ..) in &TRAINED[..4] {
        assert_eq!(onnxruntime_logits(name).len(), MNIST_TEST, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. SecureNN (default layout, the logits revealed) against onnxruntime, on every input.

/// SecureNN on all the fixture's inputs against onnxruntime; then the secure argmax (the class
/// revealed) on the first `class_inputs` against the argmax of the revealed logits.
fn securenn_agrees(name: &str, batch: usize, class_inputs: usize) {
    let im = import_fixture(name);
    let a = against_onnxruntime(ProtocolKind::SecureNn, &im, batch);
    assert!(
        a.agreement >= MIN_AGREEMENT,
        "{name}: SecureNN agrees with onnxruntime on {:.2}% of inputs",
        100.0 * a.agreement
    );
    assert!(
        a.max_error < MAX_LOGIT_ERROR,
        "{name}: SecureNN's logits are up to {} from onnxruntime's",
        a.max_error
    );
    let t = Instant::now();
    let data = first(&inputs(&im), class_inputs);
    let c = run(ProtocolKind::SecureNn, &im, data, batch, Reveal::Class)
        .unwrap_or_else(|e| panic!("{name}, the class revealed: {e}"));
    assert!(c.logits.is_empty(), "{name}: only the class is revealed");
    assert_eq!(
        c.predictions,
        a.report.predictions[..class_inputs],
        "{name}: the secure argmax differs from the argmax of the revealed logits"
    );
    eprintln!(
        "{name:<15} securenn  secure argmax = argmax of the revealed logits on the first \
         {class_inputs} inputs ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn securenn_agrees_with_onnxruntime_mlp() {
    securenn_agrees("mlp", 100, 100);
}

#[test]
fn securenn_agrees_with_onnxruntime_lenet_bn() {
    securenn_agrees("lenet_bn", 100, 100);
}

#[test]
fn securenn_agrees_with_onnxruntime_matmul_reshape() {
    securenn_agrees("matmul_reshape", 100, 100);
}

#[test]
fn securenn_agrees_with_onnxruntime_allconv() {
    securenn_agrees("allconv", 100, 100);
}

#[test]
fn securenn_agrees_with_onnxruntime_resnet_cifar() {
    securenn_agrees("resnet_cifar", 50, 10);
}

// ---------------------------------------------------------------------------------------------
// 2. The plaintext backend and Pond.

#[test]
fn plaintext_agrees_with_onnxruntime() {
    for (name, ..) in TRAINED {
        let im = import_fixture(name);
        let a = against_onnxruntime(ProtocolKind::Plaintext, &im, 100);
        assert!(
            a.agreement >= MIN_AGREEMENT,
            "{name}: plaintext agrees with onnxruntime on {:.2}% of inputs",
            100.0 * a.agreement
        );
        assert!(
            a.max_error < MAX_LOGIT_ERROR,
            "{name}: plaintext logits are up to {} from onnxruntime's",
            a.max_error
        );
    }
}

/// Pond's ReLU is tf-encrypted's degree-8 polynomial fitted on [-9, 9]; these models were
/// trained with the exact ReLU and their pre-activations leave that interval, where the
/// polynomial explodes (its x⁸ term) and its products wrap the ring or make truncation fail. So
/// Pond computes another function, and the jobs run only with the range risk accepted: the
/// bounds are loose (per model, from the figures printed), and the range analysis must be the
/// one to say so (it refuses mlp and allconv without `--allow-range-risk`).
#[test]
fn pond_runs_the_models_without_max_pooling() {
    // (model, fewest predictions that must agree with onnxruntime's, refused by the range check).
    // allconv is at chance: its activations reach far beyond 9 in every layer.
    let expect = [
        ("mlp", 0.6, true),
        ("matmul_reshape", 0.9, false),
        ("allconv", 0.0, true),
    ];
    let mut results = Vec::new();
    for (name, min_agreement, out_of_range) in expect {
        let im = import_fixture(name);
        let a = against_onnxruntime(ProtocolKind::Pond, &im, 100);
        eprintln!(
            "{name:<15} pond      vs the plaintext reference with Pond's ReLU: {:.2}% agree, max \
             |logit error| {:.5}; range analysis: {}",
            100.0 * a.report.plaintext_agreement,
            a.report.max_logit_error.unwrap_or(f64::NAN),
            a.report.range.summary()
        );
        results.push((name, a, min_agreement, out_of_range));
    }
    for (name, a, min_agreement, out_of_range) in results {
        assert!(
            a.agreement >= min_agreement,
            "{name}: Pond agrees with onnxruntime on {:.2}% of inputs",
            100.0 * a.agreement
        );
        assert_eq!(
            a.report.range.check().is_err(),
            out_of_range,
            "{name}: the range check under Pond: {}",
            a.report.range.summary()
        );
    }
}

#[test]
fn pond_refuses_max_pooling() {
    for (name, _, max_pool) in TRAINED {
        if !max_pool {
            continue;
        }
        let im = import_fixture(name);
        // Without --allow-range-risk: the max pool is refused before the range analysis (which
        // finds resnet_cifar out of range with Pond's ReLU and would otherwise speak first).
        let spec = InferSpec {
            reveal: Some(Reveal::Logits),
            ..InferSpec::new(
                ProtocolKind::Pond,
                name,
                im.model.clone(),
                im.weights.clone(),
                first(&inputs(&im), 2),
                SEED,
            )
        };
        let e = run_inference(&spec, None)
            .err()
            .unwrap_or_else(|| panic!("{name}: Pond ran a max pool"));
        let msg = e.to_string();
        eprintln!("{name:<15} pond      refused: {msg}");
        assert!(
            matches!(e, InferError::Protocol(ProtocolError::Unsupported { .. })),
            "{name}: not an Unsupported error: {e:?}"
        );
        assert!(msg.contains("max pooling"), "{name}: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Layout: NCHW converted once, at import.

/// The imported model in float (no fixed point) on the first `n` inputs equals onnxruntime's
/// logits: the kernels, the flattened rows and the inputs were each converted to NHWC once.
#[test]
fn float_model_equals_onnxruntime() {
    for (name, n) in [("lenet_bn", 200), ("resnet_cifar", 50)] {
        let im = import_fixture(name);
        let data = first(&inputs(&im), n);
        let mut shape = vec![n];
        shape.extend(&im.model.input);
        let x = ArrayD::from_shape_vec(IxDyn(&shape), data.images.concat()).unwrap();
        let y = forward_float(
            &im.model.without_argmax(),
            &im.weights,
            &x,
            &ReluKind::Exact,
        )
        .unwrap();
        let rows: Vec<Vec<f64>> = y
            .outer_iter()
            .map(|r| r.iter().copied().collect())
            .collect();
        let ort = onnxruntime_logits(name);
        let err = max_abs_diff(&rows, &ort[..n]);
        eprintln!("{name:<15} float     vs onnxruntime on {n} inputs: max |logit error| {err:.2e}");
        assert!(
            err < 1e-3,
            "{name}: float logits up to {err} from onnxruntime's"
        );
    }
}

/// The layer and weight name prefix of the ONNX node `label`.
fn layer_of(im: &Imported, label: &str) -> String {
    let (_, op, fate) = im
        .nodes
        .iter()
        .find(|n| n.0 == label)
        .unwrap_or_else(|| panic!("{}: no node {label}", im.name));
    match fate {
        Fate::Layer(i) => format!("{i}.{}", if op == "Conv" { "conv2d" } else { "dense" }),
        f => panic!("{}: node {label} became {f:?}", im.name),
    }
}

/// The ONNX initializer read by input `i` of node `label`, with its shape.
fn initializer(m: &OnnxModel, label: &str, i: usize) -> ArrayD<f64> {
    let node = m.graph.nodes.iter().find(|n| n.label() == label).unwrap();
    let t = m.graph.initializer(&node.inputs[i]).unwrap();
    ArrayD::from_shape_vec(IxDyn(t.dims()), t.to_f64_vec()).unwrap()
}

/// A convolution kernel's element [o][i][y][x] of the ONNX initializer (OIHW) is the model's
/// [y][x][i][o] (HWIO); for lenet_bn times the batch normalisation folded into it.
#[test]
fn conv_kernels_land_in_hwio() {
    // resnet_cifar: batch normalisation folded by the exporter, every kernel as in the file.
    let path = fixture("resnet_cifar.onnx");
    let m = OnnxModel::read(&path).unwrap();
    let im = import(&path).unwrap();
    let mut convs = 0;
    for node in m.graph.nodes.iter().filter(|n| n.op_type == "Conv") {
        let label = node.label();
        let w = initializer(&m, &label, 1);
        let layer = layer_of(&im, &label);
        let k = im.weights.get(&format!("{layer}.kernel")).unwrap();
        let s = w.shape();
        assert_eq!(k.shape(), [s[2], s[3], s[1], s[0]], "{label}");
        for o in 0..s[0] {
            for i in 0..s[1] {
                for y in 0..s[2] {
                    for x in 0..s[3] {
                        assert_eq!(
                            k[[y, x, i, o]],
                            w[[o, i, y, x]],
                            "{label} [{o}][{i}][{y}][{x}]"
                        );
                    }
                }
            }
        }
        let b = initializer(&m, &label, 2);
        assert_eq!(
            im.weights.get(&format!("{layer}.bias")).unwrap().as_slice(),
            b.as_slice(),
            "{label}"
        );
        convs += 1;
    }
    assert_eq!(convs, 10);
    // One element by hand: the stem's kernel is [16, 3, 3, 3]; [5][2][0][1] → [0][1][2][5].
    let w = initializer(&m, "/stem/stem.0/Conv", 1);
    let k = im
        .weights
        .get(&format!("{}.kernel", layer_of(&im, "/stem/stem.0/Conv")))
        .unwrap();
    assert_eq!(k.shape(), [3, 3, 3, 16]);
    assert_eq!(k[[0, 1, 2, 5]], w[[5, 2, 0, 1]]);
    assert_ne!(
        k[[0, 1, 2, 5]],
        k[[1, 0, 2, 5]],
        "a kernel not symmetric in y, x"
    );

    // lenet_bn: the first convolution with the batch normalisation after it folded in:
    // kernel[y][x][i][o] = W[o][i][y][x]·γ[o]/√(σ²[o] + ε), bias = (b − μ)·γ/√(σ² + ε) + β.
    let path = fixture("lenet_bn.onnx");
    let m = OnnxModel::read(&path).unwrap();
    let im = import(&path).unwrap();
    let conv = "/net/net.0/Conv";
    let bn = m
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "BatchNormalization")
        .unwrap();
    let bn_label = bn.label();
    let eps = bn.attr_float("epsilon").unwrap().unwrap_or(1e-5) as f64;
    let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| initializer(&m, &bn_label, i));
    let w = initializer(&m, conv, 1);
    let b = initializer(&m, conv, 2);
    let layer = layer_of(&im, conv);
    assert_eq!(
        im.nodes.iter().find(|n| n.0 == bn_label).unwrap().2,
        Fate::FoldedInto(0)
    );
    let k = im.weights.get(&format!("{layer}.kernel")).unwrap();
    let kb = im.weights.get(&format!("{layer}.bias")).unwrap();
    assert_eq!(k.shape(), [5, 5, 1, 6]);
    for o in 0..6 {
        let a = gamma[o] / (var[o] + eps).sqrt();
        for y in 0..5 {
            for x in 0..5 {
                let want = w[[o, 0, y, x]] * a;
                assert!((k[[y, x, 0, o]] - want).abs() < 1e-12, "[{o}][0][{y}][{x}]");
            }
        }
        let want = (b[o] - mean[o]) * a + beta[o];
        assert!((kb[o] - want).abs() < 1e-12, "bias {o}");
    }

    // lenet_bn's first dense layer reads the flattened [16, 5, 5] activation: ONNX's row
    // c·25 + y·5 + x (Gemm with transB: column of B) is the model's row (y·5 + x)·16 + c.
    let gemm = m
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "Gemm")
        .unwrap()
        .label();
    let b = initializer(&m, &gemm, 1); // [units, 400] (transB = 1)
    let layer = layer_of(&im, &gemm);
    let k = im.weights.get(&format!("{layer}.kernel")).unwrap();
    // A batch normalisation follows this Gemm too and is folded in: compare up to the column's
    // factor, taken from one element.
    for u in [0, 7, 119] {
        let a = k[[0, u]] / b[[u, 0]];
        for c in [0, 3, 15] {
            for (y, x) in [(0, 0), (1, 4), (4, 2)] {
                let got = k[[(y * 5 + x) * 16 + c, u]];
                let want = b[[u, c * 25 + y * 5 + x]] * a;
                assert!(
                    (got - want).abs() < 1e-9,
                    "dense row c {c} y {y} x {x}, unit {u}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Bad files and inputs through the command line.

/// `securenn ARGS`: it must fail, without a panic; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = run_guarded(args, 120);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{args:?} succeeded; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

#[test]
fn cli_refuses_bad_files() {
    let scratch = Scratch::new("onnx-cli");

    let e = refused(&["infer", "--onnx", &fixture_str("unsupported_op.onnx")]);
    assert!(e.contains("'sigmoid'") && e.contains("Sigmoid"), "{e}");
    assert!(e.contains("Supported operators: Conv, Gemm"), "{e}");

    let e = refused(&["infer", "--onnx", &fixture_str("missing_initializer.onnx")]);
    assert!(e.contains("fc.weight"), "{e}");
    assert!(
        e.contains("missing_initializer.onnx: "),
        "names the file: {e}"
    );

    let e = refused(&["infer", "--onnx", &fixture_str("group_conv.onnx")]);
    assert!(e.contains("group"), "{e}");

    let bytes = std::fs::read(fixture("mlp.onnx")).unwrap();
    let truncated = scratch.path("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = refused(&["infer", "--onnx", &truncated]);
    assert!(e.contains(&truncated), "{e}");
    assert!(
        e.contains("truncated") || e.contains("not an ONNX model"),
        "{e}"
    );

    // resnet_cifar's N × 3 × 32 × 32 inputs to the MNIST mlp (1 × 28 × 28).
    let e = refused(&[
        "infer",
        "--onnx",
        &fixture_str("mlp.onnx"),
        "--input",
        &fixture_str("resnet_cifar.input.npy"),
    ]);
    assert!(
        e.contains("[200, 3, 32, 32]") && e.contains("[1, 28, 28]"),
        "{e}"
    );

    let missing = scratch.path("no-such-model.onnx");
    let e = refused(&["infer", "--onnx", &missing]);
    assert!(e.contains(&missing), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "said once: {e}");

    let e = refused(&["infer", "--onnx", &fixture_str("mlp.onnx"), "--model", "a"]);
    assert!(
        e.contains("cannot be used with") && e.contains("--onnx") && e.contains("--model"),
        "{e}"
    );
}
