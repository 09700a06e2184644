//! ONNX import: an ONNX classifier (opset 13 and later) into the project's [`Model`] and
//! [`Weights`], converted once from ONNX's NCHW to the project's NHWC.
//!
//! The walk keeps, for every ONNX value, either a constant (initializers, `Constant` nodes and
//! everything computed from constants and static shapes: PyTorch's
//! `Shape → Gather → Unsqueeze → Concat` reshape target, a `Pad`'s computed pads) or a runtime
//! value (a node of the model). Layout conversion happens here and only here: convolution
//! kernels OIHW → HWIO, per-channel constants to the last axis, and the rows of a dense layer
//! that reads a flattened [c, h, w] activation permuted from (c, h, w) to (h, w, c) order (the
//! model flattens NHWC). Batch normalisation is folded into the convolution or dense layer
//! before it when that layer has no other reader, else applied as per-channel [`Layer::Scale`]
//! and [`Layer::Bias`]; a zero `Pad` read only by a convolution becomes the convolution's
//! padding; a zero `Pad` at the end of an N × features value becomes [`Layer::PadTo`];
//! `Dropout` and `Identity` are removed; a final `Softmax`/`LogSoftmax` is dropped (the
//! argmax is unchanged) and the model ends with the secure argmax.
//!
//! Every constant a computation uses (kernels, biases, normalisation constants) is a weight,
//! known to the model owner only; the architecture (layers, shapes, attributes) is public.

use super::{AttributeValue, Dim, Node, OnnxError, OnnxModel, Tensor};
use crate::nn::{InputLayout, Layer, Model, Weights};
use crate::ring::{Padding, Window, numel};
use ndarray::{ArrayD, Axis, IxDyn};
use std::collections::HashMap;
use std::path::Path;

/// Operators computed on secret values (others are refused naming the node).
pub const SUPPORTED: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "LeakyRelu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Concat",
    "Pad",
    "BatchNormalization",
    "Dropout",
    "Identity",
    "Softmax (last)",
    "LogSoftmax (last)",
];

/// Operators evaluated at import when all their inputs are constants or static shapes.
pub const CONSTANT_FOLDED: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Reshape",
    "Slice",
    "Transpose",
    "ConstantOfShape",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
];

/// The lowest opset whose operator forms the importer reads (Clip, Pad, Unsqueeze take inputs,
/// not attributes).
pub const MIN_OPSET: i64 = 13;

/// Stand-in for the batch size in constant-folded shapes (the batch axis is symbolic).
const BATCH: f64 = -1.0e15;

/// What became of one ONNX node.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Computed by this layer of the model (its index in `Model::nodes`).
    Layer(usize),
    /// Folded into the weights of this layer (batch normalisation, a bias add, a zero pad).
    FoldedInto(usize),
    /// Evaluated at import (shapes, constants).
    Constant,
    /// Removed: it does not change the prediction (Dropout, Identity, a final Softmax).
    Removed(&'static str),
}

/// An imported model: the architecture, the model owner's weights, and what became of every
/// ONNX node.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The file's stem (`mlp` for `mlp.onnx`), used as the model's name in reports.
    pub name: String,
    pub model: Model,
    pub weights: Weights,
    /// (node label, op type, fate), in the file's order.
    pub nodes: Vec<(String, String, Fate)>,
    /// The ONNX input's shape without the batch axis (NCHW for images).
    pub onnx_input: Vec<usize>,
}

/// Read and import an ONNX file.
pub fn import(path: &Path) -> Result<Imported, OnnxError> {
    let m = OnnxModel::read(path)?;
    let name = path
        .file_stem()
        .map_or_else(|| "onnx".to_string(), |s| s.to_string_lossy().into_owned());
    import_model(&m, &name)
}

/// A runtime value: the model value id it lives in, its ONNX shape (without batch), and, for a
/// flat value made by flattening [c, h, w] with c > 1 and h·w > 1, that shape: ONNX orders
/// such a vector (c, h, w), the model (h, w, c).
#[derive(Clone, Debug)]
struct Runtime {
    value: usize,
    shape: Vec<usize>,
    chw_flat: Option<[usize; 3]>,
}

#[derive(Clone, Debug)]
enum Val {
    Const(ArrayD<f64>),
    Run(Runtime),
}

/// A layer under construction: parameters are kept in ONNX-independent (model) layout, and
/// named once the node order is final.
struct Draft {
    layer: Layer,
    inputs: Vec<usize>,
    params: Vec<ArrayD<f64>>,
    /// ONNX nodes computed or folded here (indices into the file's node list).
    sources: Vec<usize>,
}

struct Importer<'a> {
    graph: &'a super::OnnxGraph,
    vals: HashMap<String, Val>,
    drafts: Vec<Draft>,
    fates: Vec<Fate>,
    /// How many ONNX nodes read each value name.
    readers: HashMap<String, usize>,
}

fn unsupported(node: &Node, reason: impl Into<String>) -> OnnxError {
    OnnxError::Unsupported {
        node: node.label(),
        op_type: node.op_type.clone(),
        reason: reason.into(),
    }
}

fn bad(node: &Node, reason: impl Into<String>) -> OnnxError {
    OnnxError::Import {
        what: format!("node '{}' ({})", node.label(), node.op_type),
        reason: reason.into(),
    }
}

fn tensor_array(t: &Tensor) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(t.dims()), t.to_f64_vec()).expect("a tensor's shape fits")
}

/// Import a decoded ONNX model (`name` for reports).
pub fn import_model(m: &OnnxModel, name: &str) -> Result<Imported, OnnxError> {
    let g = &m.graph;
    let opset = m.opset_version("").unwrap_or(0);
    if opset < MIN_OPSET {
        return Err(OnnxError::Import {
            what: "the model".into(),
            reason: format!(
                "opset {opset}: the importer reads opset {MIN_OPSET} and later (re-export with \
                 torch.onnx.export(..., opset_version=13) or tf2onnx --opset 13)"
            ),
        });
    }
    if let Some((d, _)) = m
        .opsets
        .iter()
        .find(|(d, _)| !d.is_empty() && d != "ai.onnx")
        && g.nodes.iter().any(|n| &n.domain == d)
    {
        return Err(OnnxError::Import {
            what: "the model".into(),
            reason: format!(
                "uses operators of domain '{d}'; only the standard ONNX domain is supported"
            ),
        });
    }
    let inputs: Vec<_> = g.runtime_inputs().collect();
    let [input] = inputs[..] else {
        return Err(OnnxError::Import {
            what: "the graph's inputs".into(),
            reason: format!(
                "the model has {} runtime inputs ({}); a classifier of one input tensor is \
                 supported",
                inputs.len(),
                inputs
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let in_err = |reason: String| OnnxError::Import {
        what: format!("graph input '{}'", input.name),
        reason,
    };
    let dims = input
        .shape
        .as_ref()
        .ok_or_else(|| in_err("has no shape".into()))?;
    let sample: Vec<usize> = dims
        .iter()
        .skip(1)
        .map(|d| match d {
            Dim::Fixed(v) if *v > 0 => Ok(*v as usize),
            d => Err(in_err(format!(
                "has shape {dims:?}: every axis but the batch must have a fixed size, got {d:?}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    let (model_input, layout) = match sample[..] {
        [c, h, w] => (vec![h, w, c], InputLayout::ChannelsFirst),
        [n] => (vec![n], InputLayout::ChannelsLast),
        _ => {
            return Err(in_err(format!(
                "has shape {dims:?}: N × C × H × W images or N × features are supported"
            )));
        }
    };
    if g.outputs.len() != 1 {
        return Err(OnnxError::Import {
            what: "the graph's outputs".into(),
            reason: format!(
                "the model has {} outputs; a classifier with one output (the logits) is supported",
                g.outputs.len()
            ),
        });
    }
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in &g.nodes {
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            *readers.entry(i.clone()).or_default() += 1;
        }
    }
    *readers.entry(g.outputs[0].name.clone()).or_default() += 1;
    let mut im = Importer {
        graph: g,
        vals: HashMap::new(),
        drafts: Vec::new(),
        fates: Vec::new(),
        readers,
    };
    for (name, t) in &g.initializers {
        im.vals.insert(name.clone(), Val::Const(tensor_array(t)));
    }
    im.vals.insert(
        input.name.clone(),
        Val::Run(Runtime {
            value: 0,
            shape: sample.clone(),
            chw_flat: None,
        }),
    );
    for (k, node) in g.nodes.iter().enumerate() {
        let fate = im.node(k, node)?;
        im.fates.push(fate);
    }
    im.finish(model_input, layout, name, sample)
}

impl Importer<'_> {
    fn get(&self, node: &Node, i: usize) -> Result<&Val, OnnxError> {
        let name = node
            .inputs
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(node, format!("input {i} is missing")))?;
        self.vals.get(name).ok_or_else(|| {
            bad(
                node,
                format!(
                    "input '{name}' is neither an initializer, a graph input nor the output of \
                     an earlier node (a missing initializer?)"
                ),
            )
        })
    }

    fn constant(&self, node: &Node, i: usize) -> Result<&ArrayD<f64>, OnnxError> {
        match self.get(node, i)? {
            Val::Const(c) => Ok(c),
            Val::Run(_) => Err(unsupported(
                node,
                format!(
                    "input {i} ('{}') is computed at run time; it must be a constant (a weight)",
                    node.inputs[i]
                ),
            )),
        }
    }

    fn optional_constant(&self, node: &Node, i: usize) -> Result<Option<&ArrayD<f64>>, OnnxError> {
        match node.inputs.get(i).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => self.constant(node, i).map(Some),
        }
    }

    fn runtime(&self, node: &Node, i: usize) -> Result<Runtime, OnnxError> {
        match self.get(node, i)? {
            Val::Run(r) => Ok(r.clone()),
            Val::Const(_) => Err(unsupported(node, format!("input {i} is a constant"))),
        }
    }

    fn is_const(&self, node: &Node) -> bool {
        node.inputs
            .iter()
            .filter(|n| !n.is_empty())
            .all(|n| matches!(self.vals.get(n), Some(Val::Const(_))))
    }

    fn set(&mut self, node: &Node, v: Val) {
        if let Some(o) = node.outputs.first() {
            self.vals.insert(o.clone(), v);
        }
    }

    /// Append a layer; returns the runtime value of its output.
    fn emit(
        &mut self,
        k: usize,
        layer: Layer,
        inputs: Vec<usize>,
        params: Vec<ArrayD<f64>>,
        shape: Vec<usize>,
    ) -> (Fate, Runtime) {
        self.drafts.push(Draft {
            layer,
            inputs,
            params,
            sources: vec![k],
        });
        let id = self.drafts.len();
        (
            Fate::Layer(id - 1),
            Runtime {
                value: id,
                shape,
                chw_flat: None,
            },
        )
    }

    fn node(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        let op = node.op_type.as_str();
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return Err(unsupported(node, format!("domain '{}'", node.domain)));
        }
        if op == "Constant" {
            let v = constant_node(node)?;
            self.set(node, Val::Const(v));
            return Ok(Fate::Constant);
        }
        if op == "Shape" {
            let r = self.runtime(node, 0)?;
            let mut s = vec![BATCH];
            s.extend(r.shape.iter().map(|&d| d as f64));
            self.set(
                node,
                Val::Const(ArrayD::from_shape_vec(IxDyn(&[s.len()]), s).expect("1-D")),
            );
            return Ok(Fate::Constant);
        }
        if self.is_const(node) && CONSTANT_FOLDED.contains(&op) {
            let ins: Vec<Option<ArrayD<f64>>> = node
                .inputs
                .iter()
                .map(|n| match self.vals.get(n) {
                    Some(Val::Const(c)) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            let v = fold(node, &ins)?;
            self.set(node, Val::Const(v));
            return Ok(Fate::Constant);
        }
        match op {
            "Identity" | "Dropout" => {
                if node
                    .outputs
                    .get(1)
                    .is_some_and(|m| self.readers.contains_key(m))
                {
                    return Err(unsupported(node, "its mask output is read"));
                }
                let v = self.get(node, 0)?.clone();
                self.set(node, v);
                Ok(Fate::Removed("does not change an inference"))
            }
            "Softmax" | "LogSoftmax" => {
                let out = node.outputs.first().cloned().unwrap_or_default();
                if out != self.graph.outputs[0].name {
                    return Err(unsupported(
                        node,
                        "only as the last node (where it is dropped: the largest logit stays the \
                         largest); a softmax inside the model has no exact secure form",
                    ));
                }
                let v = self.get(node, 0)?.clone();
                self.set(node, v);
                Ok(Fate::Removed("the last node: the argmax is unchanged"))
            }
            "Relu" => self.unary(k, node, Layer::Relu),
            "LeakyRelu" => {
                node.check_attrs(&["alpha"])?;
                let alpha = node.attr_float("alpha")?.unwrap_or(0.01) as f64;
                self.unary(k, node, Layer::LeakyRelu { alpha })
            }
            "Clip" => {
                let lo = self.optional_constant(node, 1)?.map(scalar).transpose();
                let hi = self.optional_constant(node, 2)?.map(scalar).transpose();
                let (lo, hi) = (
                    lo.map_err(|e| bad(node, format!("min: {e}")))?,
                    hi.map_err(|e| bad(node, format!("max: {e}")))?,
                );
                match (lo, hi) {
                    (Some(l), Some(h)) if l == 0.0 && h > 0.0 => {
                        self.unary(k, node, Layer::Clip { max: h })
                    }
                    (Some(0.0), None) => self.unary(k, node, Layer::Relu),
                    _ => Err(unsupported(
                        node,
                        "Clip(0, c) with c > 0 (ReLU6 and friends) and Clip(0) are supported; \
                         other bounds are not",
                    )),
                }
            }
            "Conv" => self.conv(k, node),
            "Gemm" => self.gemm(k, node),
            "MatMul" => {
                let x = self.runtime(node, 0)?;
                let w = self.constant(node, 1)?.clone();
                self.dense(k, node, x, w, None)
            }
            "Add" | "Sub" | "Mul" | "Div" => self.arith(k, node),
            "MaxPool" | "AveragePool" => self.pool(k, node),
            "GlobalAveragePool" => {
                let x = self.spatial(node)?;
                let [c, h, w] = x.1;
                let window = Window {
                    kernel: [h, w],
                    stride: [h, w],
                    pads: [0; 4],
                };
                let layer = Layer::AvgPool {
                    window,
                    count_padding: false,
                };
                let (f, r) = self.emit(k, layer, vec![x.0.value], vec![], vec![c, 1, 1]);
                self.set(node, Val::Run(r));
                Ok(f)
            }
            "Flatten" => {
                node.check_attrs(&["axis"])?;
                if node.attr_int("axis")?.unwrap_or(1) != 1 {
                    return Err(unsupported(
                        node,
                        "axis 1 (keep the batch axis) is supported",
                    ));
                }
                self.flatten(k, node)
            }
            "Reshape" => {
                let x = self.runtime(node, 0)?;
                let target = self.constant(node, 1)?.clone();
                let t: Vec<f64> = target.iter().copied().collect();
                let n = numel(&x.shape) as f64;
                // [N, -1], [N, features] or [-1, features] (x.view(-1, features)).
                let flat = t.len() == 2
                    && (((t[0] == BATCH || t[0] == 0.0) && (t[1] == -1.0 || t[1] == n))
                        || (t[0] == -1.0 && t[1] == n));
                let same = t.len() == x.shape.len() + 1
                    && (t[0] == BATCH || t[0] == 0.0 || t[0] == -1.0)
                    && t[1..].iter().zip(&x.shape).all(|(&a, &b)| a == b as f64);
                if same {
                    self.set(node, Val::Run(x));
                    Ok(Fate::Removed("reshapes to the same shape"))
                } else if flat {
                    self.flatten(k, node)
                } else {
                    Err(unsupported(
                        node,
                        format!(
                            "reshape of [N, {:?}] to a shape of {} axes: only flattening to \
                             [N, -1] or [-1, features] (x.reshape(x.shape[0], -1), \
                             x.view(N, -1), x.view(-1, features)) is supported",
                            x.shape,
                            t.len()
                        ),
                    ))
                }
            }
            "Concat" => {
                node.check_attrs(&["axis"])?;
                let xs: Vec<Runtime> = (0..node.inputs.len())
                    .map(|i| self.runtime(node, i))
                    .collect::<Result<_, _>>()?;
                let given = node.attr_int("axis")?.unwrap_or(1);
                if axis(node, given, xs[0].shape.len() + 1)? != 1 {
                    let axis = given;
                    return Err(unsupported(
                        node,
                        format!("axis {axis}: concatenation along channels (axis 1) is supported"),
                    ));
                }
                if xs.iter().any(|x| x.shape[1..] != xs[0].shape[1..]) {
                    return Err(bad(node, "inputs differ in more than the channel axis"));
                }
                if xs.iter().any(|x| x.chw_flat.is_some()) {
                    return Err(unsupported(
                        node,
                        "concatenating flattened feature maps is not supported",
                    ));
                }
                let mut shape = xs[0].shape.clone();
                shape[0] = xs.iter().map(|x| x.shape[0]).sum();
                let (f, r) = self.emit(
                    k,
                    Layer::Concat,
                    xs.iter().map(|x| x.value).collect(),
                    vec![],
                    shape,
                );
                self.set(node, Val::Run(r));
                Ok(f)
            }
            "Pad" => {
                node.check_attrs(&["mode"])?;
                if node.attr_string("mode")?.unwrap_or("constant") != "constant" {
                    return Err(unsupported(node, "mode 'constant' with zeros is supported"));
                }
                let pads: Vec<f64> = self.constant(node, 1)?.iter().copied().collect();
                if let Some(v) = self.optional_constant(node, 2)?
                    && v.iter().any(|&v| v != 0.0)
                {
                    return Err(unsupported(node, "padding with a value other than 0"));
                }
                // Zeros appended to the features of an N × features value (network D as the
                // paper's code ran it); a flattened map keeps its order, the zeros come last.
                let flat = self.runtime(node, 0)?;
                if let [n] = flat.shape[..] {
                    if pads.len() != 4 || pads[..3].iter().any(|&p| p != 0.0) || pads[3] < 0.0 {
                        return Err(unsupported(
                            node,
                            "on an N × features value, zeros appended to the features (pads \
                             [0, 0, 0, k]) are supported",
                        ));
                    }
                    let to = n + pads[3] as usize;
                    let (f, mut r) = self.emit(
                        k,
                        Layer::PadTo { n: to },
                        vec![flat.value],
                        vec![],
                        vec![to],
                    );
                    r.chw_flat = flat.chw_flat;
                    self.set(node, Val::Run(r));
                    return Ok(f);
                }
                let x = self.spatial(node)?;
                if pads.len() != 8
                    || pads[0] != 0.0
                    || pads[1] != 0.0
                    || pads[4] != 0.0
                    || pads[5] != 0.0
                    || pads.iter().any(|&p| p < 0.0)
                {
                    return Err(unsupported(
                        node,
                        "non-negative zero padding of the height and width of an N × C × H × W \
                         value is supported",
                    ));
                }
                let p = [pads[2], pads[3], pads[6], pads[7]].map(|v| v as usize);
                let [c, h, w] = x.1;
                let shape = vec![c, h + p[0] + p[2], w + p[1] + p[3]];
                let (f, r) = self.emit(k, Layer::Pad2d { pads: p }, vec![x.0.value], vec![], shape);
                self.set(node, Val::Run(r));
                Ok(f)
            }
            "BatchNormalization" => self.batch_norm(k, node),
            _ if CONSTANT_FOLDED.contains(&op) => Err(unsupported(
                node,
                "it is evaluated only on constants and static shapes, and here reads a value \
                 computed at run time",
            )),
            _ => Err(unsupported(node, "no secure form is implemented")),
        }
    }

    fn unary(&mut self, k: usize, node: &Node, layer: Layer) -> Result<Fate, OnnxError> {
        let x = self.runtime(node, 0)?;
        let (f, mut r) = self.emit(k, layer, vec![x.value], vec![], x.shape.clone());
        r.chw_flat = x.chw_flat;
        self.set(node, Val::Run(r));
        Ok(f)
    }

    /// A runtime N × C × H × W input 0: the value and [c, h, w].
    fn spatial(&self, node: &Node) -> Result<(Runtime, [usize; 3]), OnnxError> {
        let x = self.runtime(node, 0)?;
        let s: [usize; 3] = x.shape.as_slice().try_into().map_err(|_| {
            unsupported(
                node,
                format!(
                    "its input has shape [N, {:?}]; it needs N × C × H × W",
                    x.shape
                ),
            )
        })?;
        Ok((x, s))
    }

    fn flatten(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        let x = self.runtime(node, 0)?;
        if x.shape.len() == 1 {
            self.set(node, Val::Run(x));
            return Ok(Fate::Removed("already flat"));
        }
        let n = numel(&x.shape);
        let (f, mut r) = self.emit(k, Layer::Flatten, vec![x.value], vec![], vec![n]);
        if let [c, h, w] = x.shape[..]
            && c > 1
            && h * w > 1
        {
            r.chw_flat = Some([c, h, w]);
        }
        self.set(node, Val::Run(r));
        Ok(f)
    }

    fn conv(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        node.check_attrs(&[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ])?;
        let (x, [c, h, w]) = self.spatial(node)?;
        let wt = self.constant(node, 1)?.clone();
        let b = self.optional_constant(node, 2)?.cloned();
        if node.attr_int("group")?.unwrap_or(1) != 1 {
            return Err(unsupported(
                node,
                "group > 1 (grouped or depthwise convolution); group 1 is supported",
            ));
        }
        if node
            .attr_ints("dilations")?
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(unsupported(node, "dilation other than 1"));
        }
        let ws = wt.shape().to_vec();
        if ws.len() != 4 || ws[1] != c {
            return Err(bad(
                node,
                format!("kernel of shape {ws:?} for an input of {c} channels"),
            ));
        }
        let (o, kh, kw) = (ws[0], ws[2], ws[3]);
        if kh != kw {
            return Err(unsupported(
                node,
                format!("a {kh}x{kw} kernel: square kernels are supported"),
            ));
        }
        let strides = node
            .attr_ints("strides")?
            .map_or(vec![1, 1], <[i64]>::to_vec);
        if strides.len() != 2 || strides[0] != strides[1] || strides[0] < 1 {
            return Err(unsupported(
                node,
                format!("strides {strides:?}: one stride for both axes is supported"),
            ));
        }
        let stride = strides[0] as usize;
        let padding = match node.attr_string("auto_pad")?.unwrap_or("NOTSET") {
            "NOTSET" => explicit_padding(node, node.attr_ints("pads")?, h, w, kh, stride)?,
            "VALID" => Padding::Valid,
            "SAME_UPPER" => Padding::Same,
            other => return Err(unsupported(node, format!("auto_pad {other}"))),
        };
        let g = crate::ring::kernels::conv_geometry(h, w, kh, kw, stride, padding);
        if g.out_h == 0 || g.out_w == 0 {
            return Err(bad(node, "the kernel does not fit the input"));
        }
        // OIHW → HWIO.
        let kernel = wt
            .permuted_axes(IxDyn(&[2, 3, 1, 0]))
            .as_standard_layout()
            .to_owned();
        let bias = match b {
            Some(b) if b.len() == o => b.into_shape_with_order(IxDyn(&[o])).expect("1-D"),
            Some(b) => {
                return Err(bad(
                    node,
                    format!("bias of shape {:?} for {o} filters", b.shape()),
                ));
            }
            None => ArrayD::zeros(IxDyn(&[o])),
        };
        let layer = Layer::Conv2d {
            filters: o,
            kernel: kh,
            stride,
            padding,
        };
        let (f, r) = self.emit(
            k,
            layer,
            vec![x.value],
            vec![kernel, bias],
            vec![o, g.out_h, g.out_w],
        );
        self.set(node, Val::Run(r));
        Ok(f)
    }

    fn gemm(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        node.check_attrs(&["alpha", "beta", "transA", "transB"])?;
        if node.attr_int("transA")?.unwrap_or(0) != 0 {
            return Err(unsupported(
                node,
                "transA = 1 on the activations would mix the batch axis into the product; \
                 transA = 0 is supported",
            ));
        }
        let x = self.runtime(node, 0)?;
        let mut b = self.constant(node, 1)?.clone();
        if b.ndim() != 2 {
            return Err(bad(
                node,
                format!("B has shape {:?}; it must be 2-D", b.shape()),
            ));
        }
        if node.attr_int("transB")?.unwrap_or(0) != 0 {
            b = b.reversed_axes().as_standard_layout().to_owned();
        }
        let alpha = node.attr_float("alpha")?.unwrap_or(1.0) as f64;
        let beta = node.attr_float("beta")?.unwrap_or(1.0) as f64;
        b.mapv_inplace(|v| v * alpha);
        let c = self
            .optional_constant(node, 2)?
            .map(|c| c.mapv(|v| v * beta));
        self.dense(k, node, x, b, c)
    }

    /// x·W (+ c): W is [inputs, units] in ONNX's feature order.
    fn dense(
        &mut self,
        k: usize,
        node: &Node,
        x: Runtime,
        w: ArrayD<f64>,
        c: Option<ArrayD<f64>>,
    ) -> Result<Fate, OnnxError> {
        if x.shape.len() != 1 {
            return Err(unsupported(
                node,
                format!(
                    "its input has shape [N, {:?}]: dense layers read [N, features] (flatten first)",
                    x.shape
                ),
            ));
        }
        if w.ndim() != 2 || w.shape()[0] != x.shape[0] {
            return Err(bad(
                node,
                format!(
                    "weight of shape {:?} for {} input features",
                    w.shape(),
                    x.shape[0]
                ),
            ));
        }
        let units = w.shape()[1];
        let mut kernel = w;
        if let Some([ch, h, wd]) = x.chw_flat {
            // Rows in (c, h, w) order → (h, w, c): row (y·w + x)·c + ch is ONNX's row
            // ch·h·w + y·w + x.
            let src = kernel.clone();
            for ci in 0..ch {
                for y in 0..h {
                    for xx in 0..wd {
                        let from = ci * h * wd + y * wd + xx;
                        let to = (y * wd + xx) * ch + ci;
                        kernel
                            .index_axis_mut(Axis(0), to)
                            .assign(&src.index_axis(Axis(0), from));
                    }
                }
            }
        }
        let bias = match c {
            None => ArrayD::zeros(IxDyn(&[units])),
            Some(c) => broadcast_to(&c, units).ok_or_else(|| {
                bad(
                    node,
                    format!("bias of shape {:?} for {units} units", c.shape()),
                )
            })?,
        };
        let (f, r) = self.emit(
            k,
            Layer::Dense { units },
            vec![x.value],
            vec![kernel, bias],
            vec![units],
        );
        self.set(node, Val::Run(r));
        Ok(f)
    }

    fn arith(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        let op = node.op_type.as_str();
        let (a, b) = (self.get(node, 0)?.clone(), self.get(node, 1)?.clone());
        match (a, b) {
            (Val::Run(x), Val::Run(y)) if op == "Add" => {
                if x.shape != y.shape || x.chw_flat != y.chw_flat {
                    return Err(unsupported(
                        node,
                        format!(
                            "adds values of shapes {:?} and {:?}; equal shapes are supported",
                            x.shape, y.shape
                        ),
                    ));
                }
                let (f, mut r) = self.emit(
                    k,
                    Layer::Add,
                    vec![x.value, y.value],
                    vec![],
                    x.shape.clone(),
                );
                r.chw_flat = x.chw_flat;
                self.set(node, Val::Run(r));
                Ok(f)
            }
            (Val::Run(_), Val::Run(_)) => Err(unsupported(
                node,
                "a product or quotient of two computed values; constants (weights) are supported",
            )),
            (Val::Const(_), Val::Run(_)) if op != "Add" && op != "Mul" => Err(unsupported(
                node,
                "a constant minus or over a computed value; x - c and x / c are supported",
            )),
            (a, b) => {
                let (x, c) = match (a, b) {
                    (Val::Run(x), Val::Const(c)) | (Val::Const(c), Val::Run(x)) => (x, c),
                    _ => unreachable!("both constant is folded"),
                };
                let channels = match x.shape[..] {
                    [c, _, _] => c,
                    [n] => n,
                    _ => unreachable!("runtime values are [c, h, w] or [n]"),
                };
                let mut per = per_channel(&c, &x.shape, channels).ok_or_else(|| {
                    unsupported(
                        node,
                        format!(
                            "a constant of shape {:?} on a value of shape [N, {:?}]: a scalar or \
                             one value per channel is supported",
                            c.shape(),
                            x.shape
                        ),
                    )
                })?;
                if let Some([ch, h, w]) = x.chw_flat {
                    per = permute_chw_flat(&per, [ch, h, w]);
                }
                let (layer, param) = match op {
                    "Add" => (Layer::Bias, per),
                    "Sub" => (Layer::Bias, per.mapv(|v| -v)),
                    "Mul" => (Layer::Scale, per),
                    _ => {
                        if per.iter().any(|&v| v == 0.0) {
                            return Err(bad(node, "divides by zero"));
                        }
                        (Layer::Scale, per.mapv(|v| 1.0 / v))
                    }
                };
                let (f, mut r) = self.emit(k, layer, vec![x.value], vec![param], x.shape.clone());
                r.chw_flat = x.chw_flat;
                self.set(node, Val::Run(r));
                Ok(f)
            }
        }
    }

    fn pool(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        let max = node.op_type == "MaxPool";
        node.check_attrs(&[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
            "storage_order",
        ])?;
        if node.outputs.len() > 1 && self.readers.contains_key(&node.outputs[1]) {
            return Err(unsupported(node, "its indices output is read"));
        }
        let (x, [c, h, w]) = self.spatial(node)?;
        if node.attr_int("ceil_mode")?.unwrap_or(0) != 0 {
            return Err(unsupported(
                node,
                "ceil_mode = 1; floor (the default) is supported",
            ));
        }
        if node
            .attr_ints("dilations")?
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(unsupported(node, "dilation other than 1"));
        }
        if node
            .attr_string("auto_pad")?
            .is_some_and(|a| a != "NOTSET" && a != "VALID")
        {
            return Err(unsupported(
                node,
                "auto_pad SAME_*; explicit pads are supported",
            ));
        }
        let kernel = node
            .attr_ints("kernel_shape")?
            .ok_or_else(|| bad(node, "no kernel_shape"))?
            .to_vec();
        let strides = node
            .attr_ints("strides")?
            .map_or(vec![1, 1], <[i64]>::to_vec);
        let pads = node.attr_ints("pads")?.map_or(vec![0; 4], <[i64]>::to_vec);
        let ok = |v: &[i64], n: usize, min: i64| v.len() == n && v.iter().all(|&x| x >= min);
        if !ok(&kernel, 2, 1) || !ok(&strides, 2, 1) || !ok(&pads, 4, 0) {
            return Err(bad(
                node,
                format!("kernel {kernel:?}, strides {strides:?}, pads {pads:?} for a 2-D pool"),
            ));
        }
        let window = Window {
            kernel: [kernel[0] as usize, kernel[1] as usize],
            stride: [strides[0] as usize, strides[1] as usize],
            // ONNX: [top, left, bottom, right].
            pads: [pads[0], pads[1], pads[2], pads[3]].map(|p| p as usize),
        };
        let (oh, ow) = window.output(h, w).map_err(|e| bad(node, e))?;
        let layer = if max {
            Layer::MaxPool { window }
        } else {
            Layer::AvgPool {
                window,
                count_padding: node.attr_int("count_include_pad")?.unwrap_or(0) != 0,
            }
        };
        let (f, r) = self.emit(k, layer, vec![x.value], vec![], vec![c, oh, ow]);
        self.set(node, Val::Run(r));
        Ok(f)
    }

    fn batch_norm(&mut self, k: usize, node: &Node) -> Result<Fate, OnnxError> {
        node.check_attrs(&["epsilon", "momentum", "training_mode", "spatial"])?;
        if node.attr_int("training_mode")?.unwrap_or(0) != 0 {
            return Err(unsupported(node, "training_mode = 1; export in eval mode"));
        }
        let x = self.runtime(node, 0)?;
        let eps = node.attr_float("epsilon")?.unwrap_or(1e-5) as f64;
        let [scale, bias, mean, var] = [1, 2, 3, 4].map(|i| {
            self.constant(node, i)
                .map(|c| c.iter().copied().collect::<Vec<f64>>())
        });
        let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
        let channels = match x.shape[..] {
            [c, _, _] => c,
            [n] => n,
            _ => unreachable!("runtime values are [c, h, w] or [n]"),
        };
        if [&scale, &bias, &mean, &var]
            .iter()
            .any(|v| v.len() != channels)
        {
            return Err(bad(
                node,
                format!("parameters are not {channels} values each"),
            ));
        }
        let a: Vec<f64> = scale
            .iter()
            .zip(&var)
            .map(|(s, v)| s / (v + eps).sqrt())
            .collect();
        let b: Vec<f64> = bias
            .iter()
            .zip(&mean)
            .zip(&a)
            .map(|((b, m), a)| b - m * a)
            .collect();
        let (mut a, mut b) = (
            ArrayD::from_shape_vec(IxDyn(&[channels]), a).expect("1-D"),
            ArrayD::from_shape_vec(IxDyn(&[channels]), b).expect("1-D"),
        );
        if let Some(chw) = x.chw_flat {
            a = permute_chw_flat(&a, chw);
            b = permute_chw_flat(&b, chw);
        }
        // Fold into the producing convolution or dense layer if nothing else reads it, under
        // any of its names: Identity, Dropout and a same-shape Reshape pass a value on under a
        // new name, each reading one name of it, so it is read only here when its names have
        // as many readers as there are names (one per node passing it on, and this one).
        let producer = x.value.checked_sub(1);
        let (names, reads) = self
            .vals
            .iter()
            .filter(|(_, v)| matches!(v, Val::Run(r) if r.value == x.value))
            .fold((0, 0), |(n, r), (name, _)| {
                (n + 1, r + self.readers.get(name).copied().unwrap_or(0))
            });
        if let Some(p) = producer
            && reads == names
            && self.drafts.iter().all(|d| !d.inputs.contains(&x.value))
            && matches!(
                self.drafts[p].layer,
                Layer::Conv2d { .. } | Layer::Dense { .. }
            )
        {
            let d = &mut self.drafts[p];
            // The kernel's last axis is the output channel in both layouts.
            let last = d.params[0].ndim() - 1;
            for (j, mut col) in d.params[0].axis_iter_mut(Axis(last)).enumerate() {
                col.mapv_inplace(|v| v * a[j]);
            }
            for (j, v) in d.params[1].iter_mut().enumerate() {
                *v = *v * a[j] + b[j];
            }
            d.sources.push(k);
            self.set(node, Val::Run(x));
            return Ok(Fate::FoldedInto(p));
        }
        let (_, s) = self.emit(k, Layer::Scale, vec![x.value], vec![a], x.shape.clone());
        let (f, mut r) = self.emit(k, Layer::Bias, vec![s.value], vec![b], x.shape.clone());
        r.chw_flat = x.chw_flat;
        self.set(node, Val::Run(r));
        Ok(f)
    }

    fn finish(
        mut self,
        input: Vec<usize>,
        layout: InputLayout,
        name: &str,
        onnx_input: Vec<usize>,
    ) -> Result<Imported, OnnxError> {
        let out_name = &self.graph.outputs[0].name;
        let out = match self.vals.get(out_name) {
            Some(Val::Run(r)) => r.clone(),
            _ => {
                return Err(OnnxError::Import {
                    what: format!("graph output '{out_name}'"),
                    reason: "is not computed from the input".into(),
                });
            }
        };
        if out.shape.len() != 1 || out.chw_flat.is_some() {
            return Err(OnnxError::Import {
                what: format!("graph output '{out_name}'"),
                reason: format!(
                    "has shape [N, {:?}]; a classifier's logits [N, classes] are supported",
                    out.shape
                ),
            });
        }
        if out.value != self.drafts.len() {
            return Err(OnnxError::Import {
                what: format!("graph output '{out_name}'"),
                reason: "layers computed after the output are not read by it; remove them".into(),
            });
        }
        self.fuse_pads();
        let mut model = Model::new(&input);
        model.input_layout = layout;
        let mut tensors = Vec::new();
        let mut fates = self.fates.clone();
        for (i, d) in self.drafts.into_iter().enumerate() {
            for &s in &d.sources {
                fates[s] = match fates[s] {
                    Fate::Layer(_) => Fate::Layer(i),
                    Fate::FoldedInto(_) => Fate::FoldedInto(i),
                    ref f => f.clone(),
                };
            }
            for (p, t) in d.layer.param_names().iter().zip(d.params) {
                tensors.push((format!("{i}.{}.{p}", d.layer.kind()), t));
            }
            model.push(d.layer, d.inputs);
        }
        let model = model.argmax();
        let weights = Weights { tensors };
        model.validate(&weights)?;
        let nodes = self
            .graph
            .nodes
            .iter()
            .zip(fates)
            .map(|(n, f)| (n.label(), n.op_type.clone(), f))
            .collect();
        Ok(Imported {
            name: name.to_string(),
            model,
            weights,
            nodes,
            onnx_input,
        })
    }

    /// A zero pad read only by a convolution becomes the convolution's padding.
    fn fuse_pads(&mut self) {
        let mut i = 0;
        while i + 1 < self.drafts.len() {
            let value = i + 1;
            let readers: Vec<usize> = (0..self.drafts.len())
                .filter(|&j| self.drafts[j].inputs.contains(&value))
                .collect();
            let fusable = match (&self.drafts[i].layer, readers.as_slice()) {
                (Layer::Pad2d { .. }, [j]) => {
                    matches!(self.drafts[*j].layer, Layer::Conv2d { .. })
                        && self.drafts[*j].inputs == [value]
                }
                _ => false,
            };
            if !fusable {
                i += 1;
                continue;
            }
            let j = readers[0];
            let Layer::Pad2d { pads } = self.drafts[i].layer else {
                unreachable!("matched")
            };
            let pad_input = self.drafts[i].inputs[0];
            let sources = self.drafts[i].sources.clone();
            let conv = &mut self.drafts[j];
            if let Layer::Conv2d { padding, .. } = &mut conv.layer {
                let before = match *padding {
                    Padding::Explicit(p) => p,
                    Padding::Valid => [0; 4],
                    // A SAME convolution after a pad: keep the pad as it is.
                    Padding::Same => {
                        i += 1;
                        continue;
                    }
                };
                *padding = Padding::Explicit([0, 1, 2, 3].map(|q| before[q] + pads[q]));
            }
            conv.inputs = vec![pad_input];
            for &s in &sources {
                self.fates[s] = Fate::FoldedInto(j);
            }
            conv.sources.extend(sources);
            // Remove draft i: later value ids shift down by one.
            self.drafts.remove(i);
            for d in &mut self.drafts {
                for v in &mut d.inputs {
                    if *v > value {
                        *v -= 1;
                    }
                }
            }
            for f in &mut self.fates {
                match f {
                    Fate::Layer(x) | Fate::FoldedInto(x) if *x > i => *x -= 1,
                    _ => {}
                }
            }
        }
    }
}

/// ONNX `pads` of a convolution as the model's padding: none, SAME as TensorFlow pads (the
/// same geometry), or explicit.
fn explicit_padding(
    node: &Node,
    pads: Option<&[i64]>,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
) -> Result<Padding, OnnxError> {
    let pads = pads.map_or(vec![0; 4], <[i64]>::to_vec);
    if pads.len() != 4 || pads.iter().any(|&p| p < 0) {
        return Err(bad(
            node,
            format!("pads {pads:?}: four non-negative values for 2-D"),
        ));
    }
    let p = [pads[0], pads[1], pads[2], pads[3]].map(|v| v as usize);
    if p == [0; 4] {
        return Ok(Padding::Valid);
    }
    let explicit = Padding::Explicit(p);
    let (a, b) = (
        crate::ring::kernels::conv_geometry(h, w, k, k, stride, explicit),
        crate::ring::kernels::conv_geometry(h, w, k, k, stride, Padding::Same),
    );
    // SAME when the output and the leading pads agree (the trailing pads then agree too, up to
    // cells no window reads).
    let same_total =
        |input: usize, out: usize| ((out.max(1) - 1) * stride + k).saturating_sub(input);
    let same_trailing = [
        same_total(h, b.out_h) - b.pad_top,
        same_total(w, b.out_w) - b.pad_left,
    ];
    if a == b && [p[2], p[3]] == same_trailing {
        return Ok(Padding::Same);
    }
    Ok(explicit)
}

/// The scalar of a one-element constant.
fn scalar(c: &ArrayD<f64>) -> Result<f64, String> {
    match c.len() {
        1 => Ok(*c.iter().next().expect("one value")),
        n => Err(format!("a constant of {n} values where one is expected")),
    }
}

/// A constant bias for `units` outputs: [units], [1, units] or a scalar.
fn broadcast_to(c: &ArrayD<f64>, units: usize) -> Option<ArrayD<f64>> {
    match c.len() {
        1 => Some(ArrayD::from_elem(IxDyn(&[units]), scalar(c).ok()?)),
        n if n == units && c.shape().iter().filter(|&&d| d != 1).count() <= 1 => {
            Some(c.clone().into_shape_with_order(IxDyn(&[units])).ok()?)
        }
        _ => None,
    }
}

/// A constant that broadcasts against [N, ...shape] as one value per channel (axis 1): a
/// scalar, [C], [C, 1, 1] or [1, C, 1, 1] for images; a scalar, [n] or [1, n] for vectors.
fn per_channel(c: &ArrayD<f64>, shape: &[usize], channels: usize) -> Option<ArrayD<f64>> {
    if c.len() == 1 {
        return Some(ArrayD::from_elem(IxDyn(&[channels]), scalar(c).ok()?));
    }
    let dims: Vec<usize> = c.shape().to_vec();
    let ok = match shape.len() {
        3 => {
            let trimmed: Vec<usize> = dims.iter().copied().skip_while(|&d| d == 1).collect();
            trimmed == [channels, 1, 1] || (dims.len() == 1 && dims[0] == channels)
        }
        _ => broadcast_to(c, channels).is_some(),
    };
    ok.then(|| {
        c.clone()
            .into_shape_with_order(IxDyn(&[channels]))
            .expect("as many values as channels")
    })
}

/// A per-feature vector of a flattened [c, h, w] in ONNX (c, h, w) order, in the model's
/// (h, w, c) order.
fn permute_chw_flat(v: &ArrayD<f64>, [c, h, w]: [usize; 3]) -> ArrayD<f64> {
    let mut out = v.clone();
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out[[(y * w + x) * c + ch]] = v[[ch * h * w + y * w + x]];
            }
        }
    }
    out
}

/// The value of a `Constant` node.
fn constant_node(node: &Node) -> Result<ArrayD<f64>, OnnxError> {
    let attr = node
        .attributes
        .first()
        .ok_or_else(|| bad(node, "no value attribute"))?;
    Ok(match &attr.value {
        AttributeValue::Tensor(t) => tensor_array(t),
        AttributeValue::Float(f) => ArrayD::from_elem(IxDyn(&[]), *f as f64),
        AttributeValue::Int(i) => ArrayD::from_elem(IxDyn(&[]), *i as f64),
        AttributeValue::Floats(v) => {
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.iter().map(|&x| x as f64).collect())
                .expect("1-D")
        }
        AttributeValue::Ints(v) => {
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.iter().map(|&x| x as f64).collect())
                .expect("1-D")
        }
        _ => {
            return Err(unsupported(
                node,
                format!("a constant given as '{}'", attr.name),
            ));
        }
    })
}

/// An axis attribute or input, counted from the end when negative.
fn axis(node: &Node, a: i64, rank: usize) -> Result<usize, OnnxError> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r)
        .contains(&a)
        .then_some(a as usize)
        .ok_or_else(|| bad(node, format!("axis {a} for a tensor of rank {rank}")))
}

fn ints(c: &ArrayD<f64>) -> Vec<i64> {
    c.iter().map(|&v| v as i64).collect()
}

/// Evaluate a node on constants (shapes, indices, small arithmetic).
fn fold(node: &Node, ins: &[Option<ArrayD<f64>>]) -> Result<ArrayD<f64>, OnnxError> {
    let input = |i: usize| {
        ins.get(i)
            .and_then(|v| v.as_ref())
            .ok_or_else(|| bad(node, format!("input {i} is missing")))
    };
    let op = node.op_type.as_str();
    Ok(match op {
        "Identity" | "Cast" => input(0)?.clone(),
        "Neg" => input(0)?.mapv(|v| -v),
        "Add" | "Sub" | "Mul" | "Div" => {
            let (a, b) = (input(0)?, input(1)?);
            let f = |x: f64, y: f64| match op {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                _ => x / y,
            };
            if a.shape() == b.shape() {
                ndarray::Zip::from(a).and(b).map_collect(|&x, &y| f(x, y))
            } else if b.len() == 1 {
                let y = b.iter().copied().next().expect("one");
                a.mapv(|x| f(x, y))
            } else if a.len() == 1 {
                let x = a.iter().copied().next().expect("one");
                b.mapv(|y| f(x, y))
            } else {
                return Err(unsupported(
                    node,
                    "broadcasting constants of different shapes",
                ));
            }
        }
        "Gather" => {
            let (data, idx) = (input(0)?, input(1)?);
            let ax = axis(node, node.attr_int("axis")?.unwrap_or(0), data.ndim())?;
            let n = data.shape()[ax] as i64;
            let pick: Vec<usize> = ints(idx)
                .into_iter()
                .map(|i| {
                    let i = if i < 0 { i + n } else { i };
                    (0..n)
                        .contains(&i)
                        .then_some(i as usize)
                        .ok_or_else(|| bad(node, "index out of range"))
                })
                .collect::<Result<_, _>>()?;
            let picked = data.select(Axis(ax), &pick);
            if idx.ndim() == 0 {
                picked.index_axis(Axis(ax), 0).to_owned()
            } else {
                picked
            }
        }
        "Unsqueeze" => {
            let data = input(0)?;
            let axes = ints(input(1)?);
            let rank = data.ndim() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| axis(node, a, rank))
                .collect::<Result<_, _>>()?;
            axes.sort_unstable();
            let mut shape = data.shape().to_vec();
            for a in axes {
                shape.insert(a, 1);
            }
            data.clone()
                .into_shape_with_order(IxDyn(&shape))
                .expect("same count")
        }
        "Squeeze" => {
            let data = input(0)?;
            let axes: Vec<usize> = match ins.get(1).and_then(|v| v.as_ref()) {
                Some(a) => ints(a)
                    .iter()
                    .map(|&a| axis(node, a, data.ndim()))
                    .collect::<Result<_, _>>()?,
                None => (0..data.ndim()).filter(|&a| data.shape()[a] == 1).collect(),
            };
            let shape: Vec<usize> = data
                .shape()
                .iter()
                .enumerate()
                .filter(|(a, _)| !axes.contains(a))
                .map(|(_, &d)| d)
                .collect();
            data.clone()
                .into_shape_with_order(IxDyn(&shape))
                .map_err(|_| bad(node, "squeezes an axis that is not 1"))?
        }
        "Concat" => {
            let parts: Vec<_> = ins.iter().flatten().collect();
            let rank = parts.first().map_or(1, |p| p.ndim());
            let ax = axis(node, node.attr_int("axis")?.unwrap_or(0), rank.max(1))?;
            let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
            ndarray::concatenate(Axis(ax), &views).map_err(|e| bad(node, e.to_string()))?
        }
        "Reshape" => {
            let data = input(0)?;
            let target = ints(input(1)?);
            let mut shape: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d == 0 {
                        data.shape().get(i).map_or(0, |&v| v as i64)
                    } else {
                        d
                    }
                })
                .collect();
            if let Some(p) = shape.iter().position(|&d| d == -1) {
                let known: i64 = shape.iter().filter(|&&d| d != -1).product();
                shape[p] = if known == 0 {
                    0
                } else {
                    data.len() as i64 / known
                };
            }
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            data.clone()
                .into_shape_with_order(IxDyn(&shape))
                .map_err(|_| {
                    bad(
                        node,
                        format!("cannot reshape {:?} to {target:?}", data.shape()),
                    )
                })?
        }
        "Transpose" => {
            let data = input(0)?;
            let perm: Vec<usize> = match node.attr_ints("perm")? {
                Some(p) => p
                    .iter()
                    .map(|&a| axis(node, a, data.ndim()))
                    .collect::<Result<_, _>>()?,
                None => (0..data.ndim()).rev().collect(),
            };
            data.clone()
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .to_owned()
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = ints(input(0)?).iter().map(|&d| d.max(0) as usize).collect();
            let v = match node.attr_tensor("value")? {
                Some(t) => t.to_f64_vec().first().copied().unwrap_or(0.0),
                None => 0.0,
            };
            ArrayD::from_elem(IxDyn(&shape), v)
        }
        "Slice" => {
            let data = input(0)?;
            let starts = ints(input(1)?);
            let ends = ints(input(2)?);
            let axes: Vec<usize> = match ins.get(3).and_then(|v| v.as_ref()) {
                Some(a) => ints(a)
                    .iter()
                    .map(|&a| axis(node, a, data.ndim()))
                    .collect::<Result<_, _>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = match ins.get(4).and_then(|v| v.as_ref()) {
                Some(s) => ints(s),
                None => vec![1; starts.len()],
            };
            let mut out = data.clone();
            for (((&ax, &st), &en), &step) in axes.iter().zip(&starts).zip(&ends).zip(&steps) {
                let n = out.shape()[ax] as i64;
                if step == 0 {
                    return Err(bad(node, "a slice step of 0"));
                }
                let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
                let norm = |v: i64| if v < 0 { v + n } else { v };
                let idx: Vec<usize> = if step > 0 {
                    let (s, e) = (clamp(norm(st), 0, n), clamp(norm(en), 0, n));
                    (s..e).step_by(step as usize).map(|i| i as usize).collect()
                } else {
                    let (s, e) = (clamp(norm(st), -1, n - 1), clamp(norm(en), -1, n - 1));
                    let mut v = Vec::new();
                    let mut i = s;
                    while i > e {
                        v.push(i as usize);
                        i += step;
                    }
                    v
                };
                out = out.select(Axis(ax), &idx);
            }
            out
        }
        _ => return Err(unsupported(node, "not evaluated on constants")),
    })
}
