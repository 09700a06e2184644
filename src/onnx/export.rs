//! ONNX export: a [`Model`] and its [`Weights`] as a standard ONNX classifier (IR version 8,
//! opset 13), converted once from the project's NHWC back to ONNX's NCHW. It is the inverse of
//! [`super::import`]: [`super::import_model`] of an export gives back the same layers, topology
//! and weights (up to float32 rounding: ONNX weights are float32).
//!
//! Conventions:
//! - the graph input `input` is [batch, C, H, W] (NCHW) for an [h, w, c] model and
//!   [batch, n] for a flat one; the output `logits` is [batch, classes]. A final
//!   [`Layer::Argmax`] is not written: the file ends with the logits, as every exporter writes
//!   classifiers (the importer appends the argmax again);
//! - convolution kernels HWIO → OIHW; the rows of a dense layer that reads a flattened
//!   [h, w, c] activation (with c > 1 and h·w > 1; through element-wise layers and zero
//!   padding) are permuted from the model's (h, w, c) order to ONNX's (c, h, w) order, as are
//!   per-feature constants on such a value;
//! - Dense → `Gemm` (B = [inputs, units], transB = 0); Conv2d → `Conv` with explicit `pads`
//!   (VALID → zeros, SAME → TensorFlow's SAME geometry, which the importer reads back as SAME);
//!   MaxPool/AvgPool → `MaxPool`/`AveragePool` (`count_include_pad`); Relu, LeakyRelu; Clip →
//!   `Clip` with constant min 0 and max inputs; Flatten → `Flatten` (axis 1); PadTo → `Pad` of
//!   the feature axis with zeros; Pad2d → `Pad`; Add → `Add`; Concat → `Concat` (axis 1); Scale
//!   and Bias → `Mul` and `Add` with a [C, 1, 1] constant ([n] for flat values).
//!
//! Node and value names are the model's layer names (`3.dense`), initializers its weight names
//! (`3.dense.kernel`), so that a report on the file names what the model names.
//!
//! Not read back identically (the file is valid and computes the same function, but the
//! importer simplifies it): a Pad2d read only by a convolution becomes that convolution's
//! padding, a Flatten of a value that is already flat is removed, and explicit convolution pads
//! equal to SAME's come back as SAME.

use super::{
    Attribute, AttributeValue, DataType, Dim, Node, OnnxError, OnnxGraph, OnnxModel, Tensor,
    TensorData, ValueInfo,
};
use crate::nn::{Layer, Model, Weights};
use crate::ring::{Padding, numel};
use ndarray::{ArrayD, IxDyn};

/// The ONNX IR version written.
pub const IR_VERSION: i64 = 8;
/// The standard operator set version written.
pub const OPSET: i64 = 13;
/// The graph input's name.
pub const INPUT: &str = "input";
/// The graph output's name.
pub const OUTPUT: &str = "logits";
/// The symbolic batch axis of the input and output.
pub const BATCH: &str = "batch";

/// An ONNX value of the graph under construction: its name, its ONNX shape without the batch
/// (NCHW), and for a flat value made by flattening an [h, w, c] map with c > 1 and h·w > 1,
/// that map's shape: the model orders such a vector (h, w, c), ONNX (c, h, w).
#[derive(Clone, Debug)]
struct Value {
    name: String,
    shape: Vec<usize>,
    hwc_flat: Option<[usize; 3]>,
}

struct Exporter<'a> {
    weights: &'a Weights,
    nodes: Vec<Node>,
    initializers: Vec<(String, Tensor)>,
}

fn export_err(what: impl Into<String>, reason: impl Into<String>) -> OnnxError {
    OnnxError::Export {
        what: what.into(),
        reason: reason.into(),
    }
}

fn attr(name: &str, value: AttributeValue) -> Attribute {
    Attribute {
        name: name.to_string(),
        value,
    }
}

fn ints(v: &[usize]) -> AttributeValue {
    AttributeValue::Ints(v.iter().map(|&x| x as i64).collect())
}

/// float32 values of an array, row-major.
fn f32_tensor(a: &ArrayD<f64>) -> Tensor {
    let data: Vec<f32> = a.as_standard_layout().iter().map(|&v| v as f32).collect();
    Tensor::new(a.shape().to_vec(), TensorData::F32(data)).expect("an array's shape fits")
}

/// The leading h·w·c entries of a vector (a dense kernel's rows, or a per-feature constant) from
/// the model's (h, w, c) order to ONNX's (c, h, w) order; entries past them (zero padding) stay.
fn hwc_to_chw_rows(a: &ArrayD<f64>, [h, w, c]: [usize; 3]) -> ArrayD<f64> {
    let mut out = a.clone();
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let from = (y * w + x) * c + ch;
                let to = ch * h * w + y * w + x;
                out.index_axis_mut(ndarray::Axis(0), to)
                    .assign(&a.index_axis(ndarray::Axis(0), from));
            }
        }
    }
    out
}

/// Write `model` with `weights` as an ONNX model whose graph is called `name` (see the module
/// documentation for the conventions).
///
/// # Errors
/// [`OnnxError::Export`] when the weights do not fit the model, the model has no layer before
/// its argmax, its input is neither [h, w, c] nor [n], or a layer has no ONNX form that the
/// importer reads back (a concatenation or sum mixing a flattened multi-channel map with a value
/// in another order).
pub fn export(model: &Model, weights: &Weights, name: &str) -> Result<OnnxModel, OnnxError> {
    let model_err = |e: crate::nn::ModelError| export_err("the model", e.to_string());
    model.validate(weights).map_err(model_err)?;
    let infos = model.describe().map_err(model_err)?;
    let count = match model.nodes.last().map(|n| &n.layer) {
        Some(Layer::Argmax) => model.nodes.len() - 1,
        _ => model.nodes.len(),
    };
    if count == 0 {
        return Err(export_err(
            "the model",
            "it has no layer before its argmax: there are no logits to write",
        ));
    }
    let (input_shape, input_dims) = match model.input[..] {
        [h, w, c] => (vec![c, h, w], vec![c, h, w]),
        [n] => (vec![n], vec![n]),
        _ => {
            return Err(export_err(
                "the model's input",
                format!(
                    "shape {:?}: [h, w, c] images or [n] features are exported",
                    model.input
                ),
            ));
        }
    };
    let dims = |shape: &[usize]| -> Vec<Dim> {
        std::iter::once(Dim::Symbolic(BATCH.to_string()))
            .chain(shape.iter().map(|&d| Dim::Fixed(d as u64)))
            .collect()
    };
    let mut ex = Exporter {
        weights,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let mut values = vec![Value {
        name: INPUT.to_string(),
        shape: input_shape,
        hwc_flat: None,
    }];
    for (i, (node, info)) in model.nodes[..count].iter().zip(&infos).enumerate() {
        let ins: Vec<Value> = node.inputs.iter().map(|&v| values[v].clone()).collect();
        let out = if i + 1 == count {
            OUTPUT.to_string()
        } else {
            info.name.clone()
        };
        let v = ex.layer(&info.name, &node.layer, &ins, out)?;
        values.push(v);
    }
    let last = values.pop().expect("at least one layer");
    Ok(OnnxModel {
        ir_version: IR_VERSION,
        opsets: vec![(String::new(), OPSET)],
        producer: "securenn".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: OnnxGraph {
            name: name.to_string(),
            inputs: vec![ValueInfo {
                name: INPUT.to_string(),
                elem_type: DataType::FLOAT,
                shape: Some(dims(&input_dims)),
            }],
            outputs: vec![ValueInfo {
                name: last.name,
                elem_type: DataType::FLOAT,
                shape: Some(dims(&last.shape)),
            }],
            initializers: ex.initializers,
            value_info: Vec::new(),
            nodes: ex.nodes,
        },
    })
}

impl Exporter<'_> {
    fn weight(&self, layer: &str, param: &str) -> &ArrayD<f64> {
        self.weights
            .get(&format!("{layer}.{param}"))
            .expect("validated weights")
    }

    fn initializer(&mut self, name: String, t: Tensor) -> String {
        self.initializers.push((name.clone(), t));
        name
    }

    fn node(
        &mut self,
        name: &str,
        op: &str,
        inputs: Vec<String>,
        out: &str,
        attributes: Vec<Attribute>,
    ) {
        self.nodes.push(Node {
            name: name.to_string(),
            op_type: op.to_string(),
            domain: String::new(),
            inputs,
            outputs: vec![out.to_string()],
            attributes,
        });
    }

    /// Write one layer reading `ins`, its output called `out`; returns the output value.
    fn layer(
        &mut self,
        name: &str,
        layer: &Layer,
        ins: &[Value],
        out: String,
    ) -> Result<Value, OnnxError> {
        let x = &ins[0];
        let same = |v: &Value| Value {
            name: out.clone(),
            shape: v.shape.clone(),
            hwc_flat: v.hwc_flat,
        };
        let mut inputs = vec![x.name.clone()];
        let (op, attributes, value) = match layer {
            Layer::Dense { units } => {
                let mut kernel = self.weight(name, "kernel").clone();
                if let Some(hwc) = x.hwc_flat {
                    kernel = hwc_to_chw_rows(&kernel, hwc);
                }
                let bias = self.weight(name, "bias").clone();
                inputs.push(self.initializer(format!("{name}.kernel"), f32_tensor(&kernel)));
                inputs.push(self.initializer(format!("{name}.bias"), f32_tensor(&bias)));
                (
                    "Gemm",
                    vec![
                        attr("alpha", AttributeValue::Float(1.0)),
                        attr("beta", AttributeValue::Float(1.0)),
                        attr("transB", AttributeValue::Int(0)),
                    ],
                    Value {
                        name: out.clone(),
                        shape: vec![*units],
                        hwc_flat: None,
                    },
                )
            }
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            } => {
                let [_, h, w] = spatial(x);
                let k = *kernel;
                let g = crate::ring::kernels::conv_geometry(h, w, k, k, *stride, *padding);
                let pads = match *padding {
                    Padding::Valid => [0; 4],
                    Padding::Explicit(p) => p,
                    Padding::Same => {
                        // TensorFlow's SAME: the total pad of an axis is what the last window
                        // needs, the odd cell at the end (ONNX's SAME_UPPER).
                        let total = |input: usize, out: usize| {
                            ((out.max(1) - 1) * stride + k).saturating_sub(input)
                        };
                        [
                            g.pad_top,
                            g.pad_left,
                            total(h, g.out_h) - g.pad_top,
                            total(w, g.out_w) - g.pad_left,
                        ]
                    }
                };
                // HWIO → OIHW.
                let wt = self
                    .weight(name, "kernel")
                    .clone()
                    .permuted_axes(IxDyn(&[3, 2, 0, 1]));
                let bias = self.weight(name, "bias").clone();
                inputs.push(self.initializer(format!("{name}.kernel"), f32_tensor(&wt)));
                inputs.push(self.initializer(format!("{name}.bias"), f32_tensor(&bias)));
                (
                    "Conv",
                    vec![
                        attr("dilations", ints(&[1, 1])),
                        attr("group", AttributeValue::Int(1)),
                        attr("kernel_shape", ints(&[k, k])),
                        attr("pads", ints(&pads)),
                        attr("strides", ints(&[*stride, *stride])),
                    ],
                    Value {
                        name: out.clone(),
                        shape: vec![*filters, g.out_h, g.out_w],
                        hwc_flat: None,
                    },
                )
            }
            Layer::Relu => ("Relu", vec![], same(x)),
            Layer::LeakyRelu { alpha } => (
                "LeakyRelu",
                vec![attr("alpha", AttributeValue::Float(*alpha as f32))],
                same(x),
            ),
            Layer::Clip { max } => {
                let scalar = |v: f64| Tensor::new(vec![], TensorData::F32(vec![v as f32]));
                inputs.push(self.initializer(format!("{name}.min"), scalar(0.0)?));
                inputs.push(self.initializer(format!("{name}.max"), scalar(*max)?));
                ("Clip", vec![], same(x))
            }
            Layer::MaxPool { window } | Layer::AvgPool { window, .. } => {
                let [c, h, w] = spatial(x);
                let (oh, ow) = window
                    .output(h, w)
                    .map_err(|e| export_err(format!("layer {name}"), e))?;
                let mut attributes = vec![
                    attr("kernel_shape", ints(&window.kernel)),
                    attr("pads", ints(&window.pads)),
                    attr("strides", ints(&window.stride)),
                ];
                let op = match layer {
                    Layer::AvgPool { count_padding, .. } => {
                        attributes.push(attr(
                            "count_include_pad",
                            AttributeValue::Int(i64::from(*count_padding)),
                        ));
                        "AveragePool"
                    }
                    _ => "MaxPool",
                };
                (
                    op,
                    attributes,
                    Value {
                        name: out.clone(),
                        shape: vec![c, oh, ow],
                        hwc_flat: None,
                    },
                )
            }
            Layer::Flatten => {
                let hwc_flat = match x.shape[..] {
                    [c, h, w] if c > 1 && h * w > 1 => Some([h, w, c]),
                    _ => x.hwc_flat,
                };
                (
                    "Flatten",
                    vec![attr("axis", AttributeValue::Int(1))],
                    Value {
                        name: out.clone(),
                        shape: vec![numel(&x.shape)],
                        hwc_flat,
                    },
                )
            }
            Layer::PadTo { n } => {
                let extra = (n - x.shape[0]) as i64;
                let pads = Tensor::new(vec![4], TensorData::I64(vec![0, 0, 0, extra]))?;
                inputs.push(self.initializer(format!("{name}.pads"), pads));
                (
                    "Pad",
                    vec![attr("mode", AttributeValue::String("constant".into()))],
                    Value {
                        name: out.clone(),
                        shape: vec![*n],
                        hwc_flat: x.hwc_flat,
                    },
                )
            }
            Layer::Pad2d { pads: [t, l, b, r] } => {
                let [c, h, w] = spatial(x);
                let p = [0, 0, *t, *l, 0, 0, *b, *r].map(|v| v as i64);
                let pads = Tensor::new(vec![8], TensorData::I64(p.to_vec()))?;
                inputs.push(self.initializer(format!("{name}.pads"), pads));
                (
                    "Pad",
                    vec![attr("mode", AttributeValue::String("constant".into()))],
                    Value {
                        name: out.clone(),
                        shape: vec![c, h + t + b, w + l + r],
                        hwc_flat: None,
                    },
                )
            }
            Layer::Add => {
                let y = &ins[1];
                if x.hwc_flat != y.hwc_flat {
                    return Err(export_err(
                        format!("layer {name}"),
                        "it adds a flattened multi-channel map to a value in another order \
                         (the model orders flattened maps (h, w, c), ONNX (c, h, w))",
                    ));
                }
                inputs.push(y.name.clone());
                ("Add", vec![], same(x))
            }
            Layer::Concat => {
                if ins.iter().any(|v| v.hwc_flat.is_some()) {
                    return Err(export_err(
                        format!("layer {name}"),
                        "it concatenates a flattened multi-channel map (the model orders \
                         flattened maps (h, w, c), ONNX (c, h, w)); concatenate the maps before \
                         flattening",
                    ));
                }
                inputs = ins.iter().map(|v| v.name.clone()).collect();
                let mut shape = x.shape.clone();
                shape[0] = ins.iter().map(|v| v.shape[0]).sum();
                (
                    "Concat",
                    vec![attr("axis", AttributeValue::Int(1))],
                    Value {
                        name: out.clone(),
                        shape,
                        hwc_flat: None,
                    },
                )
            }
            Layer::Scale | Layer::Bias => {
                let param = if *layer == Layer::Scale {
                    "scale"
                } else {
                    "bias"
                };
                let mut v = self.weight(name, param).clone();
                let dims = match x.shape[..] {
                    [c, _, _] => vec![c, 1, 1],
                    _ => {
                        if let Some(hwc) = x.hwc_flat {
                            v = hwc_to_chw_rows(&v, hwc);
                        }
                        v.shape().to_vec()
                    }
                };
                let v = v
                    .into_shape_with_order(IxDyn(&dims))
                    .expect("one value per channel");
                inputs.push(self.initializer(format!("{name}.{param}"), f32_tensor(&v)));
                let op = if *layer == Layer::Scale { "Mul" } else { "Add" };
                (op, vec![], same(x))
            }
            Layer::Argmax => {
                return Err(export_err(
                    format!("layer {name}"),
                    "an argmax is exported only as the model's last layer, where it is dropped",
                ));
            }
        };
        self.node(name, op, inputs, &out, attributes);
        Ok(value)
    }
}

/// The [c, h, w] of a value the model's shape checks made an image.
fn spatial(x: &Value) -> [usize; 3] {
    x.shape
        .as_slice()
        .try_into()
        .expect("describe() checked an [h, w, c] input")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::forward_float;
    use crate::onnx::import_model;
    use crate::protocol::ReluKind;
    use crate::ring::Window;
    use rand::{RngExt, SeedableRng};

    /// Whether two layers are the same up to float32 rounding of their constants and a
    /// convolution's padding spelled SAME or as the same explicit pads (`shape`: its input).
    fn same_layer(a: &Layer, b: &Layer, shape: &[usize]) -> bool {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-7 * x.abs().max(1.0);
        match (a, b) {
            (Layer::LeakyRelu { alpha: x }, Layer::LeakyRelu { alpha: y })
            | (Layer::Clip { max: x }, Layer::Clip { max: y }) => close(*x, *y),
            (
                Layer::Conv2d {
                    filters: f,
                    kernel: k,
                    stride: s,
                    padding: p,
                },
                Layer::Conv2d {
                    filters: g,
                    kernel: l,
                    stride: t,
                    padding: q,
                },
            ) => {
                let geometry = |p: Padding| {
                    crate::ring::kernels::conv_geometry(shape[0], shape[1], *k, *k, *s, p)
                };
                (f, k, s) == (g, l, t) && (p == q || geometry(*p) == geometry(*q))
            }
            _ => a == b,
        }
    }

    /// `imported` is `model` (with an argmax appended if it had none) with `weights` up to
    /// float32 rounding, computing the same logits; with `exact`, layer for layer equal.
    fn assert_round_trip(
        what: &str,
        model: &Model,
        weights: &Weights,
        imported: &crate::onnx::Imported,
        exact: bool,
    ) {
        let want = match model.nodes.last().map(|n| &n.layer) {
            Some(Layer::Argmax) => model.clone(),
            _ => model.clone().argmax(),
        };
        let got = &imported.model;
        assert_eq!(got.input, want.input, "{what}: input");
        let (a, b) = (want.describe().unwrap(), got.describe().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: {a:#?}\n{b:#?}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                (&x.name, &x.inputs, &x.output, &x.params),
                (&y.name, &y.inputs, &y.output, &y.params),
                "{what}: layer {i}"
            );
            assert_eq!(
                want.nodes[i].inputs, got.nodes[i].inputs,
                "{what}: {}",
                x.name
            );
            let (l, m) = (&want.nodes[i].layer, &got.nodes[i].layer);
            if exact {
                assert_eq!(l, m, "{what}: {}", x.name);
            } else {
                assert!(
                    same_layer(l, m, &x.input),
                    "{what}: {}: {l:?} vs {m:?}",
                    x.name
                );
            }
        }
        assert_eq!(
            weights.tensors.len(),
            imported.weights.tensors.len(),
            "{what}"
        );
        for (name, t) in &weights.tensors {
            let u = imported
                .weights
                .get(name)
                .unwrap_or_else(|| panic!("{what}: {name}"));
            assert_eq!(t.shape(), u.shape(), "{what}: {name}");
            for (x, y) in t.iter().zip(u) {
                assert!(
                    (x - y).abs() <= x.abs() * f64::from(f32::EPSILON),
                    "{what}: {name}: {x} vs {y}"
                );
            }
        }
        // The same function: float logits on a random input.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut shape = vec![2];
        shape.extend(&model.input);
        let x = ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.random_range(0.0..1.0));
        let y0 = forward_float(&want.without_argmax(), weights, &x, &ReluKind::Exact).unwrap();
        let y1 = forward_float(
            &got.without_argmax(),
            &imported.weights,
            &x,
            &ReluKind::Exact,
        )
        .unwrap();
        let scale = y0.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (p, q) in y0.iter().zip(&y1) {
            assert!((p - q).abs() <= 1e-5 * scale, "{what}: logits {p} vs {q}");
        }
    }

    fn through_bytes(m: &OnnxModel) -> OnnxModel {
        let back = OnnxModel::decode(&m.encode()).unwrap();
        assert_eq!(&back, m);
        back
    }

    #[test]
    fn every_builtin_round_trips_exactly() {
        for name in crate::models::BUILTIN {
            let model = crate::models::by_name(name).unwrap();
            let (w, _) = crate::nn::weights_file::load_bundled(name, &model).unwrap();
            let onnx = through_bytes(&export(&model, &w, name).unwrap());
            assert_eq!((onnx.ir_version, onnx.opset_version("")), (8, Some(OPSET)));
            assert_eq!(onnx.producer, "securenn");
            let g = &onnx.graph;
            let batch = Dim::Symbolic(BATCH.into());
            assert_eq!(
                g.inputs[0].shape,
                Some(vec![
                    batch.clone(),
                    Dim::Fixed(1),
                    Dim::Fixed(28),
                    Dim::Fixed(28)
                ]),
                "{name}"
            );
            assert_eq!(g.outputs[0].name, OUTPUT);
            assert_eq!(
                g.outputs[0].shape,
                Some(vec![batch, Dim::Fixed(10)]),
                "{name}"
            );
            assert!(g.nodes.iter().all(|n| n.op_type != "ArgMax"), "{name}");
            let imported = import_model(&onnx, name).unwrap();
            assert_round_trip(name, &model, &w, &imported, true);
            // The bundled weights are float32: the round trip is exact.
            assert_eq!(imported.weights, w, "{name}");
            // Every ONNX node became the layer of its name.
            for (k, (label, _, fate)) in imported.nodes.iter().enumerate() {
                assert_eq!(fate, &crate::onnx::Fate::Layer(k), "{name}: {label}");
                assert!(label.starts_with(&format!("{k}.")), "{name}: {label}");
            }
        }
        let c = crate::models::network_c();
        let w = c.init_weights(1).unwrap();
        let ops: Vec<String> = export(&c, &w, "c")
            .unwrap()
            .graph
            .nodes
            .iter()
            .map(|n| n.op_type.clone())
            .collect();
        assert_eq!(
            ops,
            [
                "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu",
                "Gemm"
            ]
        );
    }

    /// A DAG with every kind of layer, random weights everywhere (scales and biases too, so that
    /// a wrong permutation shows).
    fn every_layer() -> (Model, Weights) {
        let mut m = Model::new(&[8, 8, 2]);
        let conv = |filters, kernel, stride, padding| Layer::Conv2d {
            filters,
            kernel,
            stride,
            padding,
        };
        let v1 = m.push(conv(4, 3, 1, Padding::Same), vec![0]);
        let v2 = m.push(Layer::Scale, vec![v1]);
        let v3 = m.push(Layer::Bias, vec![v2]);
        let v4 = m.push(Layer::LeakyRelu { alpha: 0.01 }, vec![v3]);
        let v5 = m.push(Layer::Pad2d { pads: [1, 0, 0, 1] }, vec![v4]);
        let window = Window {
            kernel: [3, 3],
            stride: [2, 2],
            pads: [1, 1, 1, 1],
        };
        let v6 = m.push(Layer::MaxPool { window }, vec![v5]);
        let v7 = m.push(conv(4, 3, 1, Padding::Explicit([0, 1, 2, 1])), vec![v6]);
        let v8 = m.push(Layer::Relu, vec![v7]);
        let v9 = m.push(Layer::Add, vec![v6, v8]);
        let window = Window {
            kernel: [2, 2],
            stride: [1, 1],
            pads: [0, 0, 1, 1],
        };
        let v10 = m.push(
            Layer::AvgPool {
                window,
                count_padding: true,
            },
            vec![v9],
        );
        let v11 = m.push(
            Layer::AvgPool {
                window,
                count_padding: false,
            },
            vec![v9],
        );
        let v12 = m.push(Layer::Concat, vec![v10, v9, v11]);
        let v13 = m.push(conv(3, 2, 2, Padding::Valid), vec![v12]);
        let v14 = m.push(Layer::Clip { max: 0.7 }, vec![v13]);
        let v15 = m.push(Layer::Flatten, vec![v14]);
        let v16 = m.push(Layer::Scale, vec![v15]);
        let v17 = m.push(Layer::PadTo { n: 16 }, vec![v16]);
        let v18 = m.push(Layer::Bias, vec![v17]);
        let v19 = m.push(Layer::Dense { units: 5 }, vec![v18]);
        let v20 = m.push(Layer::Relu, vec![v19]);
        let v21 = m.push(Layer::Concat, vec![v19, v20]);
        m.push(Layer::Dense { units: 3 }, vec![v21]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let tensors = m
            .param_shapes()
            .unwrap()
            .into_iter()
            .map(|(n, s)| {
                let t = ArrayD::from_shape_fn(IxDyn(&s), |_| rng.random_range(-1.0..1.0));
                (n, t)
            })
            .collect();
        (m, Weights { tensors })
    }

    #[test]
    fn a_dag_of_every_layer_kind_round_trips() {
        let (m, w) = every_layer();
        let kinds: std::collections::BTreeSet<&str> =
            m.layers().map(Layer::kind).chain(["argmax"]).collect();
        assert_eq!(
            kinds.len(),
            15,
            "every kind but argmax, which is appended: {kinds:?}"
        );
        let onnx = through_bytes(&export(&m, &w, "dag").unwrap());
        let imported = import_model(&onnx, "dag").unwrap();
        assert_round_trip("dag", &m, &w, &imported, false);
        // With its argmax, the same model.
        let imported_again = import_model(&export(&m.clone().argmax(), &w, "dag").unwrap(), "dag");
        assert_eq!(imported_again.unwrap().model, imported.model);
        // Flat models: [n] in, [batch, n] input.
        let mlp = Model::new(&[6]).dense(4).relu().dense(2);
        let w = mlp.init_weights(2).unwrap();
        let onnx = through_bytes(&export(&mlp, &w, "mlp").unwrap());
        assert_eq!(
            onnx.graph.inputs[0].shape,
            Some(vec![Dim::Symbolic(BATCH.into()), Dim::Fixed(6)])
        );
        let imported = import_model(&onnx, "mlp").unwrap();
        assert_round_trip("mlp", &mlp, &w, &imported, true);
    }

    #[test]
    fn refusals_name_the_layer() {
        let m = Model::new(&[4, 4, 2]).flatten();
        let mut m2 = m.clone();
        m2.push(Layer::Concat, vec![1, 1]);
        let e = export(&m2, &m2.init_weights(1).unwrap(), "x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot export layer 1.concat: it concatenates a flattened"),
            "{e}"
        );
        let e = export(
            &Model::new(&[4]).argmax(),
            &Weights { tensors: vec![] },
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no layer before its argmax"), "{e}");
        let m = crate::models::network_a();
        let mut w = m.init_weights(1).unwrap();
        w.tensors.pop();
        let e = export(&m, &w, "a").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot export the model: weight tensor 5.dense.bias is missing"),
            "{e}"
        );
    }
}
