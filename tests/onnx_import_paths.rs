//! ONNX import paths that no fixture exercises, on small graphs built here: batch normalisation
//! that cannot be folded (applied as a per-channel scale and bias), Gemm's alpha, beta and
//! transB, Identity and Dropout removed, and the refusals of the forms the importer does not
//! compute (each naming the node and its operator).
//!
//! The imported model's float output is compared with values computed here by hand from the
//! same constants (ONNX semantics, NCHW order); the unfolded batch normalisations and a Gemm
//! with alpha, beta and transB also run through SecureNN and agree within fixed-point
//! tolerance. Constants are exact in float32 (attributes) or given as float64 (initializers),
//! so the float comparisons are tight.

mod common;

use common::*;
use ndarray::{ArrayD, IxDyn};
use securenn::channel::{Ctx, P0, P1};
use securenn::fixed::FixedPoint;
use securenn::nn::{Layer, forward, forward_float, input_params};
use securenn::onnx::{
    Attribute, AttributeValue, DataType, Dim, Fate, Imported, Node, OnnxError, OnnxGraph,
    OnnxModel, Tensor, TensorData, ValueInfo, import_model,
};
use securenn::protocol::{Protocol, ReluKind, SecureNn};

/// Largest |imported float output − the hand computation|: both are float64 computations of
/// the same constants, in a different order.
const FLOAT_TOL: f64 = 1e-9;

/// Largest |SecureNN output − the hand computation|: 4 ulps of 13 fractional bits (constants
/// rounded to the grid and one truncation per product, on values of a few units; about 2 ulps
/// seen).
const SECURE_TOL: f64 = 4.0 / 8192.0;

// ---------------------------------------------------------------- building graphs

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<(&str, AttributeValue)>,
) -> Node {
    Node {
        name: name.to_string(),
        op_type: op.to_string(),
        domain: String::new(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        attributes: attrs
            .into_iter()
            .map(|(n, value)| Attribute {
                name: n.to_string(),
                value,
            })
            .collect(),
    }
}

/// A float64 initializer.
fn init(name: &str, dims: &[usize], values: Vec<f64>) -> (String, Tensor) {
    (
        name.to_string(),
        Tensor::new(dims.to_vec(), TensorData::F64(values)).unwrap(),
    )
}

/// An int64 initializer (shapes).
fn init_i64(name: &str, values: Vec<i64>) -> (String, Tensor) {
    let n = values.len();
    (
        name.to_string(),
        Tensor::new(vec![n], TensorData::I64(values)).unwrap(),
    )
}

fn value(name: &str, dims: &[usize]) -> ValueInfo {
    let mut shape = vec![Dim::Symbolic("N".into())];
    shape.extend(dims.iter().map(|&d| Dim::Fixed(d as u64)));
    ValueInfo {
        name: name.to_string(),
        elem_type: DataType::FLOAT,
        shape: Some(shape),
    }
}

/// An opset-13 model of one input `x` of shape [N, ...input] and one output `out` of shape
/// [N, classes].
fn model(
    input: &[usize],
    classes: usize,
    initializers: Vec<(String, Tensor)>,
    nodes: Vec<Node>,
) -> OnnxModel {
    OnnxModel {
        ir_version: 8,
        opsets: vec![(String::new(), 13)],
        producer: "onnx_import_paths".into(),
        producer_version: "0".into(),
        graph: OnnxGraph {
            name: "g".into(),
            inputs: vec![value("x", input)],
            outputs: vec![value("out", &[classes])],
            initializers,
            value_info: vec![],
            nodes,
        },
    }
}

fn import(m: &OnnxModel) -> Imported {
    import_model(m, "t").unwrap_or_else(|e| panic!("import: {e}"))
}

/// `BatchNormalization` named `name` reading `input` with the parameters `{name}.*`.
fn batch_norm(name: &str, input: &str, output: &str, epsilon: Option<f32>) -> Node {
    let p = |s: &str| format!("{name}.{s}");
    let (g, b, m, v) = (p("gamma"), p("beta"), p("mean"), p("var"));
    node(
        "BatchNormalization",
        name,
        &[input, &g, &b, &m, &v],
        &[output],
        epsilon
            .map(|e| vec![("epsilon", AttributeValue::Float(e))])
            .unwrap_or_default(),
    )
}

/// Per-channel batch normalisation constants.
struct Bn {
    gamma: Vec<f64>,
    beta: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    eps: f64,
}

impl Bn {
    /// Distinct, non-trivial constants for `c` channels (negative scales and shifts included).
    fn new(c: usize, eps: f64, seed: f64) -> Self {
        let f = |a: f64, b: f64| {
            (0..c)
                .map(|i| a + b * (i as f64 + seed))
                .collect::<Vec<_>>()
        };
        let gamma = (0..c)
            .map(|i| if i % 2 == 0 { 1.5 } else { -0.75 } + 0.125 * i as f64 * seed)
            .collect();
        Self {
            gamma,
            beta: f(-0.5, 0.375),
            mean: f(0.25, -0.5),
            var: f(0.5, 0.25),
            eps,
        }
    }

    fn initializers(&self, name: &str) -> Vec<(String, Tensor)> {
        let c = self.gamma.len();
        [
            ("gamma", &self.gamma),
            ("beta", &self.beta),
            ("mean", &self.mean),
            ("var", &self.var),
        ]
        .into_iter()
        .map(|(s, v)| init(&format!("{name}.{s}"), &[c], v.clone()))
        .collect()
    }

    /// gamma·(x − mean)/√(var + ε) + beta on channel `c`.
    fn apply(&self, c: usize, x: f64) -> f64 {
        self.gamma[c] * (x - self.mean[c]) / (self.var[c] + self.eps).sqrt() + self.beta[c]
    }
}

/// Batch normalisation's ε when the attribute is absent (ONNX's default).
const DEFAULT_EPS: f64 = 1e-5;

// ---------------------------------------------------------------- running

/// `rows` (each one input as ONNX gives it: NCHW without the batch) as the model's NHWC batch.
fn batch(im: &Imported, rows: &[Vec<f64>]) -> ArrayD<f64> {
    let mut shape = vec![rows.len()];
    shape.extend(&im.model.input);
    let v: Vec<f64> = rows
        .iter()
        .flat_map(|r| im.model.input_to_nhwc(r))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
}

fn rows_of(y: &ArrayD<f64>) -> Vec<Vec<f64>> {
    y.outer_iter()
        .map(|r| r.iter().copied().collect())
        .collect()
}

/// The imported model's logits in float (no fixed point) on `rows`.
fn float(im: &Imported, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let y = forward_float(
        &im.model.without_argmax(),
        &im.weights,
        &batch(im, rows),
        &ReluKind::Exact,
    )
    .unwrap();
    rows_of(&y)
}

/// The imported model's logits run by the three parties with SecureNN over the in-memory
/// transport (input from P0, weights from P1), as tests/graph.rs runs its models.
fn secure(im: &Imported, rows: &[Vec<f64>], seed: u64) -> Vec<Vec<f64>> {
    let fp = FixedPoint::default();
    let x = batch(im, rows);
    let xr = fp
        .encode_tensor(x.shape(), &x.iter().copied().collect::<Vec<_>>())
        .unwrap();
    let (model, w) = (im.model.without_argmax(), im.weights.clone());
    let r = run3(seed, move |ctx: Ctx| {
        let (model, w, xr) = (model.clone(), w.clone(), xr.clone());
        async move {
            let p = SecureNn::optimised();
            let me = ctx.me();
            let params = input_params(&p, &ctx, &model, P1, (me == P1).then_some(&w)).await?;
            let xs = p
                .input(&ctx, P0, (me == P0).then_some(&xr), xr.shape(), 13)
                .await?;
            let y = forward(&p, &ctx, &model, &params, xs).await?;
            Ok(HasShare::share(&y))
        }
    })
    .unwrap();
    let y = reconstruct(&r.outputs);
    let v = fp.decode_tensor(&y);
    rows_of(&ArrayD::from_shape_vec(IxDyn(y.shape()), v).unwrap())
}

/// Every |got − want| at most `tol`.
fn assert_close(what: &str, got: &[Vec<f64>], want: &[Vec<f64>], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {i} length");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                (a - b).abs() <= tol,
                "{what}: row {i}, output {j}: {a} vs {b} (tolerance {tol})"
            );
        }
    }
}

/// Inputs of `n` values: negative and positive, a zero, not symmetric between rows.
fn inputs(n: usize) -> Vec<Vec<f64>> {
    (0..3)
        .map(|r| {
            (0..n)
                .map(|i| {
                    let v = ((i * 7 + r * 5) % 11) as f64 - 5.0;
                    v * if r == 1 { 0.375 } else { 0.25 } + r as f64 * 0.125
                })
                .collect()
        })
        .collect()
}

/// The fate of the node labelled `label`.
fn fate(im: &Imported, label: &str) -> Fate {
    im.nodes
        .iter()
        .find(|n| n.0 == label)
        .unwrap_or_else(|| panic!("no node {label}"))
        .2
        .clone()
}

fn layers(im: &Imported) -> Vec<Layer> {
    im.model.nodes.iter().map(|n| n.layer.clone()).collect()
}

fn identity(n: usize) -> Vec<f64> {
    (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect()
}

// ---------------------------------------------------------------- 1. batch normalisation

/// Batch normalisation directly after the input of an N × features model (nothing to fold it
/// into) becomes a Scale and a Bias layer computing gamma·(x − mean)/√(var + ε) + beta per
/// feature, with the epsilon attribute, on 5 features.
#[test]
fn batch_norm_after_the_input_is_a_scale_and_a_bias() {
    let bn = Bn::new(5, 0.0625, 1.0);
    let m = model(
        &[5],
        5,
        bn.initializers("bn"),
        vec![batch_norm("bn", "x", "out", Some(0.0625))],
    );
    let im = import(&m);
    assert_eq!(
        layers(&im),
        vec![Layer::Scale, Layer::Bias, Layer::Argmax],
        "{:?}",
        im.model
    );
    assert_eq!(fate(&im, "bn"), Fate::Layer(1));
    let x = inputs(5);
    let want: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().enumerate().map(|(c, &v)| bn.apply(c, v)).collect())
        .collect();
    assert_close("bn on features", &float(&im, &x), &want, FLOAT_TOL);
}

/// N × 3 × 2 × 5 images: batch normalisation after the input (default ε), ReLU, batch
/// normalisation after the ReLU, flattened and read by an identity Gemm; and the hand
/// computation of its outputs from one input, in ONNX's (c, h, w) order.
fn images_bn_relu_bn() -> (OnnxModel, impl Fn(&[f64]) -> Vec<f64>) {
    let (c, h, w) = (3, 2, 5);
    let n = c * h * w;
    let (bn1, bn2) = (Bn::new(c, DEFAULT_EPS, 0.5), Bn::new(c, 0.25, 2.0));
    let mut inits = bn1.initializers("bn1");
    inits.extend(bn2.initializers("bn2"));
    inits.push(init("fc.weight", &[n, n], identity(n)));
    let nodes = vec![
        batch_norm("bn1", "x", "b1", None),
        node("Relu", "relu", &["b1"], &["r"], vec![]),
        batch_norm("bn2", "r", "b2", Some(0.25)),
        node("Flatten", "flatten", &["b2"], &["f"], vec![]),
        node(
            "Gemm",
            "fc",
            &["f", "fc.weight"],
            &["out"],
            vec![("transB", AttributeValue::Int(1))],
        ),
    ];
    let want = move |x: &[f64]| {
        (0..n)
            .map(|i| {
                let ch = i / (h * w);
                bn2.apply(ch, bn1.apply(ch, x[i]).max(0.0))
            })
            .collect()
    };
    (model(&[c, h, w], n, inits, nodes), want)
}

/// Batch normalisation after the input of N × 3 × 2 × 5 images and after a ReLU
/// ([`images_bn_relu_bn`]) is not folded: each becomes a Scale and a Bias layer, and the
/// float outputs are gamma·(x − mean)/√(var + ε) + beta per channel around the ReLU, in
/// ONNX's (c, h, w) order, so a constant applied to the wrong channel after the NCHW → NHWC
/// conversion shows.
#[test]
fn batch_norm_on_images_after_the_input_and_after_relu_is_a_scale_and_a_bias() {
    let (m, want) = images_bn_relu_bn();
    let im = import(&m);
    assert_eq!(
        layers(&im),
        vec![
            Layer::Scale,
            Layer::Bias,
            Layer::Relu,
            Layer::Scale,
            Layer::Bias,
            Layer::Flatten,
            Layer::Dense { units: 30 },
            Layer::Argmax
        ]
    );
    assert_eq!(fate(&im, "bn1"), Fate::Layer(1));
    assert_eq!(fate(&im, "bn2"), Fate::Layer(4));
    let x = inputs(30);
    let expected: Vec<Vec<f64>> = x.iter().map(|r| want(r)).collect();
    assert_close(
        "bn, relu, bn on images",
        &float(&im, &x),
        &expected,
        FLOAT_TOL,
    );
}

/// Batch normalisation of a flattened 3 × 2 × 5 map (30 features, ONNX's (c, h, w) order)
/// after the Flatten that made it: its per-feature constants follow the model's (h, w, c)
/// flattening, so feature i still gets constant i of the file.
#[test]
fn batch_norm_of_a_flattened_map_keeps_onnx_feature_order() {
    let (c, h, w) = (3, 2, 5);
    let n = c * h * w;
    let bn = Bn::new(n, 0.125, 0.25);
    let mut inits = bn.initializers("bn");
    inits.push(init("fc.weight", &[n, n], identity(n)));
    let m = model(
        &[c, h, w],
        n,
        inits,
        vec![
            node("Flatten", "flatten", &["x"], &["f"], vec![]),
            batch_norm("bn", "f", "b", Some(0.125)),
            node("Gemm", "fc", &["b", "fc.weight"], &["out"], vec![]),
        ],
    );
    let im = import(&m);
    assert_eq!(fate(&im, "bn"), Fate::Layer(2));
    assert_eq!(
        layers(&im)[..3],
        [Layer::Flatten, Layer::Scale, Layer::Bias]
    );
    let x = inputs(n);
    let want: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().enumerate().map(|(i, &v)| bn.apply(i, v)).collect())
        .collect();
    assert_close("bn of a flattened map", &float(&im, &x), &want, FLOAT_TOL);
}

/// x → Gemm → g; BN(pass(g)) + g, where `pass` is an Identity or a Dropout: the dense layer's
/// output is read twice, once under the pass-through's name, so the batch normalisation must
/// not be folded into it (that would normalise the residual branch too). Without the Add (the
/// batch normalisation the only reader) it is folded. Both compute BN(x·W + b) (+ x·W + b).
#[test]
fn batch_norm_is_not_folded_into_a_layer_read_elsewhere_under_another_name() {
    let w: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5) * 0.125).collect();
    let b = vec![0.5, -0.25, 1.0];
    let bn = Bn::new(3, 0.0625, 1.5);
    let dense = |x: &[f64]| -> Vec<f64> {
        (0..3)
            .map(|j| (0..4).map(|k| x[k] * w[k * 3 + j]).sum::<f64>() + b[j])
            .collect()
    };
    for pass in ["Identity", "Dropout"] {
        for residual in [true, false] {
            let mut inits = bn.initializers("bn");
            inits.push(init("fc.weight", &[4, 3], w.clone()));
            inits.push(init("fc.bias", &[3], b.clone()));
            let bn_out = if residual { "bn_out" } else { "out" };
            let mut nodes = vec![
                node("Gemm", "fc", &["x", "fc.weight", "fc.bias"], &["g"], vec![]),
                node(pass, "pass", &["g"], &["p"], vec![]),
                batch_norm("bn", "p", bn_out, Some(0.0625)),
            ];
            if residual {
                nodes.push(node("Add", "add", &["bn_out", "g"], &["out"], vec![]));
            }
            let im = import(&model(&[4], 3, inits, nodes));
            let what = format!("{pass}, residual {residual}");
            let folded = matches!(fate(&im, "bn"), Fate::FoldedInto(0));
            assert_eq!(folded, !residual, "{what}: {:?}", im.nodes);
            let x = inputs(4);
            let want: Vec<Vec<f64>> = x
                .iter()
                .map(|r| {
                    let g = dense(r);
                    (0..3)
                        .map(|j| bn.apply(j, g[j]) + if residual { g[j] } else { 0.0 })
                        .collect()
                })
                .collect();
            assert_close(&what, &float(&im, &x), &want, FLOAT_TOL);
        }
    }
}

// ---------------------------------------------------------------- 2. Gemm

/// Gemm computes alpha·(x·B) + beta·C for B given as [in, units] (transB 0) or [units, in]
/// (transB 1), alpha and beta given or left at 1, and C as [units], [1, units], a scalar or
/// absent; 3 inputs, 5 units.
#[test]
fn gemm_alpha_beta_and_trans_b() {
    let (k, u) = (3, 5);
    // B[i][j] as a function of (input i, unit j).
    let bij = |i: usize, j: usize| (i as f64 * 5.0 + j as f64) * 0.25 - 1.75;
    let c5: Vec<f64> = (0..u).map(|j| 0.5 - 0.375 * j as f64).collect();
    #[allow(clippy::type_complexity)]
    let cases: [(i64, Option<f32>, Option<f32>, Option<Vec<usize>>); 6] = [
        (0, Some(0.5), Some(2.0), Some(vec![u])),
        (1, Some(-1.5), Some(0.25), Some(vec![1, u])),
        (1, None, Some(-3.0), Some(vec![])),
        (0, Some(2.0), None, Some(vec![u])),
        (1, Some(0.75), Some(4.0), None),
        (0, Some(-0.125), Some(0.5), Some(vec![1, u])),
    ];
    for (trans_b, alpha, beta, c_shape) in cases {
        let what = format!("transB {trans_b}, alpha {alpha:?}, beta {beta:?}, C {c_shape:?}");
        let stored: Vec<f64> = if trans_b == 1 {
            (0..u)
                .flat_map(|j| (0..k).map(move |i| bij(i, j)))
                .collect()
        } else {
            (0..k)
                .flat_map(|i| (0..u).map(move |j| bij(i, j)))
                .collect()
        };
        let dims = if trans_b == 1 { [u, k] } else { [k, u] };
        let mut inits = vec![init("B", &dims, stored)];
        // A scalar C is its first value, broadcast.
        let c_of = |j: usize| match &c_shape {
            Some(s) if s.is_empty() => c5[0],
            Some(_) => c5[j],
            None => 0.0,
        };
        let mut ins = vec!["x", "B"];
        if let Some(s) = &c_shape {
            let v = if s.is_empty() {
                vec![c5[0]]
            } else {
                c5.clone()
            };
            inits.push(init("C", s, v));
            ins.push("C");
        }
        let mut attrs = vec![("transB", AttributeValue::Int(trans_b))];
        if let Some(a) = alpha {
            attrs.push(("alpha", AttributeValue::Float(a)));
        }
        if let Some(b) = beta {
            attrs.push(("beta", AttributeValue::Float(b)));
        }
        let m = model(
            &[k],
            u,
            inits,
            vec![node("Gemm", "fc", &ins, &["out"], attrs)],
        );
        let im = import(&m);
        assert_eq!(
            layers(&im),
            vec![Layer::Dense { units: u }, Layer::Argmax],
            "{what}"
        );
        let (a, b) = (
            f64::from(alpha.unwrap_or(1.0)),
            f64::from(beta.unwrap_or(1.0)),
        );
        let x = inputs(k);
        let want: Vec<Vec<f64>> = x
            .iter()
            .map(|r| {
                (0..u)
                    .map(|j| a * (0..k).map(|i| r[i] * bij(i, j)).sum::<f64>() + b * c_of(j))
                    .collect()
            })
            .collect();
        assert_close(&what, &float(&im, &x), &want, FLOAT_TOL);
    }
}

// ---------------------------------------------------------------- 3. Identity and Dropout

/// Identity (on the input and after the last layer) and Dropout (with a ratio input and an
/// unread mask output) are removed: the model is the Gemm and the ReLU alone, and computes
/// ReLU(x·W + b).
#[test]
fn identity_and_dropout_are_removed() {
    let w: Vec<f64> = (0..12).map(|i| 1.0 - 0.1875 * i as f64).collect();
    let b = vec![0.25, -0.5, 0.0];
    let m = model(
        &[4],
        3,
        vec![
            init("fc.weight", &[4, 3], w.clone()),
            init("fc.bias", &[3], b.clone()),
            init("ratio", &[], vec![0.5]),
        ],
        vec![
            node("Identity", "id_in", &["x"], &["i"], vec![]),
            node("Gemm", "fc", &["i", "fc.weight", "fc.bias"], &["g"], vec![]),
            node("Dropout", "drop", &["g", "ratio"], &["d", "mask"], vec![]),
            node("Relu", "relu", &["d"], &["r"], vec![]),
            node("Identity", "id_out", &["r"], &["out"], vec![]),
        ],
    );
    let im = import(&m);
    assert_eq!(
        layers(&im),
        vec![Layer::Dense { units: 3 }, Layer::Relu, Layer::Argmax]
    );
    for label in ["id_in", "drop", "id_out"] {
        assert!(
            matches!(fate(&im, label), Fate::Removed(_)),
            "{label}: {:?}",
            fate(&im, label)
        );
    }
    assert_eq!(fate(&im, "fc"), Fate::Layer(0));
    assert_eq!(fate(&im, "relu"), Fate::Layer(1));
    let x = inputs(4);
    let want: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            (0..3)
                .map(|j| ((0..4).map(|k| r[k] * w[k * 3 + j]).sum::<f64>() + b[j]).max(0.0))
                .collect()
        })
        .collect();
    assert_close("identity and dropout", &float(&im, &x), &want, FLOAT_TOL);
}

/// A Reshape to [-1, features] of all the features (PyTorch's `x.view(-1, 30)`) is a flatten,
/// like [0, -1]; the result is the input in ONNX's (c, h, w) order.
#[test]
fn reshape_to_minus_one_and_all_features_flattens() {
    let (c, h, w) = (3, 2, 5);
    let n = c * h * w;
    for target in [vec![-1, n as i64], vec![0, -1]] {
        let m = model(
            &[c, h, w],
            n,
            vec![
                init_i64("shape", target.clone()),
                init("fc.weight", &[n, n], identity(n)),
            ],
            vec![
                node("Reshape", "reshape", &["x", "shape"], &["f"], vec![]),
                node("Gemm", "fc", &["f", "fc.weight"], &["out"], vec![]),
            ],
        );
        let im = import(&m);
        assert_eq!(fate(&im, "reshape"), Fate::Layer(0), "{target:?}");
        let x = inputs(n);
        assert_close(&format!("{target:?}"), &float(&im, &x), &x, FLOAT_TOL);
    }
}

// ---------------------------------------------------------------- secure

/// The unfolded batch normalisations around a ReLU on images and a Gemm with alpha, beta and
/// transB, run by SecureNN, agree with the hand computation within fixed-point tolerance.
#[test]
fn securenn_runs_unfolded_batch_norm_and_scaled_gemm() {
    let (m, want) = images_bn_relu_bn();
    let im = import(&m);
    let x = inputs(30);
    let expected: Vec<Vec<f64>> = x.iter().map(|r| want(r)).collect();
    assert_close(
        "bn, relu, bn on SecureNN",
        &secure(&im, &x, 7),
        &expected,
        SECURE_TOL,
    );

    let b: Vec<f64> = (0..15).map(|i| 0.25 * i as f64 - 2.0).collect();
    let m = model(
        &[3],
        5,
        vec![
            init("B", &[5, 3], b.clone()),
            init("C", &[5], vec![1.0, -2.0, 0.5, 0.0, 3.0]),
        ],
        vec![node(
            "Gemm",
            "fc",
            &["x", "B", "C"],
            &["out"],
            vec![
                ("transB", AttributeValue::Int(1)),
                ("alpha", AttributeValue::Float(-0.75)),
                ("beta", AttributeValue::Float(0.5)),
            ],
        )],
    );
    let im = import(&m);
    let c = [1.0, -2.0, 0.5, 0.0, 3.0];
    let x = inputs(3);
    let expected: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            (0..5)
                .map(|j| -0.75 * (0..3).map(|i| r[i] * b[j * 3 + i]).sum::<f64>() + 0.5 * c[j])
                .collect()
        })
        .collect();
    assert_close(
        "gemm on SecureNN",
        &secure(&im, &x, 8),
        &expected,
        SECURE_TOL,
    );
}

// ---------------------------------------------------------------- 4. refusals

/// The import of `m` fails with [`OnnxError::Unsupported`] naming node `label` and operator
/// `op`, with a reason containing `why`; the message names both too.
fn assert_refused(what: &str, m: &OnnxModel, label: &str, op: &str, why: &str) {
    let e = import_model(m, "t").expect_err(what);
    let msg = e.to_string();
    match &e {
        OnnxError::Unsupported {
            node,
            op_type,
            reason,
        } => {
            assert_eq!(
                (node.as_str(), op_type.as_str()),
                (label, op),
                "{what}: {msg}"
            );
            assert!(reason.contains(why), "{what}: {msg}");
        }
        other => panic!("{what}: not Unsupported: {other:?}"),
    }
    assert!(
        msg.contains(&format!("node '{label}' ({op})")),
        "{what}: {msg}"
    );
}

/// Gemm with transA = 1 (mixes the batch axis into the product), a Conv with a 3 × 2 kernel,
/// a Softmax or LogSoftmax that is not the last node, a Reshape that does not flatten (to
/// three axes, or to [-1, k] with k not all the features), and a Dropout whose mask is read:
/// each refused naming the node and its operator.
#[test]
fn refusals_name_the_node_and_the_op() {
    let w44 = || init("W", &[4, 4], identity(4));
    let gemm = |name: &str, input: &str, output: &str| {
        node("Gemm", name, &[input, "W"], &[output], vec![])
    };

    let m = model(
        &[4],
        4,
        vec![w44()],
        vec![node(
            "Gemm",
            "fc_t",
            &["x", "W"],
            &["out"],
            vec![("transA", AttributeValue::Int(1))],
        )],
    );
    assert_refused("transA", &m, "fc_t", "Gemm", "transA = 1");

    let m = model(
        &[1, 5, 5],
        2,
        vec![init("K", &[2, 1, 3, 2], vec![0.5; 12])],
        vec![
            node(
                "Conv",
                "conv_3x2",
                &["x", "K"],
                &["c"],
                vec![("kernel_shape", AttributeValue::Ints(vec![3, 2]))],
            ),
            node("GlobalAveragePool", "gap", &["c"], &["p"], vec![]),
            node("Flatten", "flatten", &["p"], &["out"], vec![]),
        ],
    );
    assert_refused("non-square kernel", &m, "conv_3x2", "Conv", "a 3x2 kernel");

    for op in ["Softmax", "LogSoftmax"] {
        let m = model(
            &[4],
            4,
            vec![w44()],
            vec![
                gemm("fc1", "x", "h"),
                node(op, "inner_softmax", &["h"], &["s"], vec![]),
                gemm("fc2", "s", "out"),
            ],
        );
        assert_refused(op, &m, "inner_softmax", op, "only as the last node");
    }

    for target in [vec![0, 3, 4], vec![-1, 6], vec![0, 2, 6]] {
        let m = model(
            &[12],
            12,
            vec![init_i64("shape", target.clone())],
            vec![node(
                "Reshape",
                "unflatten",
                &["x", "shape"],
                &["out"],
                vec![],
            )],
        );
        assert_refused(
            &format!("reshape to {target:?}"),
            &m,
            "unflatten",
            "Reshape",
            "only flattening",
        );
    }

    let m = model(
        &[4],
        4,
        vec![w44()],
        vec![
            gemm("fc1", "x", "h"),
            node("Dropout", "drop", &["h"], &["d", "mask"], vec![]),
            node("Add", "add", &["d", "mask"], &["out"], vec![]),
        ],
    );
    assert_refused("dropout mask", &m, "drop", "Dropout", "mask output is read");
}
