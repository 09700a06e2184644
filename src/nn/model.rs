//! The model: a graph of layers over NHWC activations (a chain in the common case; residual Add
//! and Concat make it a DAG), one type for every backend and every source (the built-in networks,
//! weight files, ONNX), with shape checking, weights and the protocol-generic forward pass.
//!
//! Layout: activations are NHWC inside (channels last: a convolution's im2col rows are contiguous
//! runs of the input, and a per-channel bias is a broadcast along the last axis). ONNX models are
//! NCHW; the importer converts once ([`crate::onnx`]): kernels OIHW → HWIO, the rows of a dense
//! layer after a flatten permuted from (c, h, w) to (h, w, c) order, inputs given as NCHW
//! transposed on loading ([`InputLayout`]).

use crate::channel::{Ctx, PartyId, ProtocolError};
use crate::fixed::FixedPoint;
use crate::protocol::{Protocol, avgpool};
use crate::ring::{Gather, Padding, Window, numel};
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// One layer. Shapes exclude the batch axis; activations are NHWC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Layer {
    /// x·W + b (W: [inputs, units]).
    Dense {
        units: usize,
    },
    /// Convolution with a square HWIO kernel, one stride for both axes, and a bias.
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    },
    Relu,
    /// max(x, 0) + alpha·min(x, 0), computed as alpha·x + (1 - alpha)·ReLU(x): the exact ReLU
    /// and two public scalings.
    LeakyRelu {
        alpha: f64,
    },
    /// min(max(x, 0), max) = ReLU(x) - ReLU(x - max): two exact ReLUs in one call.
    Clip {
        max: f64,
    },
    /// Append zeros to a flat input: the public SecureNN code feeds network D's 720 activations
    /// to a 980-wide layer (it reads past the end); zeros are the defined version of that.
    PadTo {
        n: usize,
    },
    /// Index of the largest output (the prediction); a model's last layer.
    Argmax,
    /// Average over windows; `count_padding` divides by the whole window where it overlaps the
    /// padding (ONNX `count_include_pad`), else by the cells inside the input.
    AvgPool {
        window: Window,
        count_padding: bool,
    },
    /// Maximum over windows (padding never wins).
    MaxPool {
        window: Window,
    },
    /// Flatten [h, w, c] to [h·w·c] in (h, w, c) order.
    Flatten,
    /// Zero rows and columns around an [h, w, c] input: (top, left, bottom, right).
    Pad2d {
        pads: [usize; 4],
    },
    /// The sum of two inputs of one shape (a residual connection).
    Add,
    /// Inputs concatenated along the last axis (channels).
    Concat,
    /// x times a per-channel factor (a weight: batch normalisation left unfolded, or a constant
    /// multiplier).
    Scale,
    /// x plus a per-channel term (a weight: batch normalisation's shift, a constant offset).
    Bias,
}

impl Layer {
    /// Short name of the kind, used in layer names (`3.conv2d`) and weight names.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "dense",
            Layer::Conv2d { .. } => "conv2d",
            Layer::Relu => "relu",
            Layer::LeakyRelu { .. } => "leaky_relu",
            Layer::Clip { .. } => "clip",
            Layer::PadTo { .. } => "pad",
            Layer::Argmax => "argmax",
            Layer::AvgPool { .. } => "avgpool",
            Layer::MaxPool { .. } => "maxpool",
            Layer::Flatten => "flatten",
            Layer::Pad2d { .. } => "pad2d",
            Layer::Add => "add",
            Layer::Concat => "concat",
            Layer::Scale => "scale",
            Layer::Bias => "bias",
        }
    }

    /// Names of the layer's parameters, in the order `forward` consumes them.
    pub fn param_names(&self) -> &'static [&'static str] {
        match self {
            Layer::Dense { .. } | Layer::Conv2d { .. } => &["kernel", "bias"],
            Layer::Scale => &["scale"],
            Layer::Bias => &["bias"],
            _ => &[],
        }
    }

    /// Whether the layer is a max pool.
    pub fn is_max_pool(&self) -> bool {
        matches!(self, Layer::MaxPool { .. })
    }
}

/// How a caller gives the model's inputs: channels last (the built-in networks, whose single
/// channel makes both orders the same) or channels first (an ONNX model's NCHW input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputLayout {
    #[default]
    ChannelsLast,
    ChannelsFirst,
}

/// One node: a layer and the values it reads. Value 0 is the model's input, value i + 1 the
/// output of node i; a node reads only earlier values, so `nodes` is in topological order and
/// the last node's output is the model's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub layer: Layer,
    pub inputs: Vec<usize>,
}

/// Errors in a model's definition or weights, naming the layer or tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("layer {layer}: {reason}")]
    Shape { layer: String, reason: String },
    #[error("weight tensor {tensor}: expected shape {expected:?}, got {got:?}")]
    WeightShape {
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("weight tensor {tensor} is missing: expected shape {expected:?}")]
    MissingWeight {
        tensor: String,
        expected: Vec<usize>,
    },
    #[error("weight tensor {tensor} is not used by the model")]
    ExtraWeight { tensor: String },
    #[error("weight tensor {tensor}: {reason}")]
    WeightValue { tensor: String, reason: String },
    #[error("{what} is not supported by {by}: {reason}")]
    Unsupported {
        what: String,
        by: String,
        reason: String,
    },
}

/// Static description of one layer: its name, shapes and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    /// Shape of the first input.
    pub input: Vec<usize>,
    /// Shapes of every input, in order.
    pub inputs: Vec<Vec<usize>>,
    pub output: Vec<usize>,
    /// (tensor name, shape) of the layer's parameters, kernel first.
    pub params: Vec<(String, Vec<usize>)>,
}

/// A model: input shape [h, w, c] (or [n]), the layers as a graph, and how inputs are given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub input: Vec<usize>,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub input_layout: InputLayout,
    /// Public comparison widths per node (empty: none declared): a node that compares (ReLU,
    /// LeakyReLU, Clip, max pooling, argmax) with `Some(w)` has every |input| < 2^(w − 1) in
    /// ring units, so SecureNN compares on w bits instead of 64
    /// ([`crate::nn::range::RangeReport::compare_widths`] derives them from the weights).
    #[serde(default)]
    pub compare_widths: Vec<Option<u32>>,
}

/// Most elements one value (per image) or parameter of a model may have, and the largest
/// dimension, kernel, stride or padding: beyond any model anyone computes on in secret, and low
/// enough that no shape arithmetic overflows, however the model was made (a peer sends it in a
/// deployment). [`Model::describe`] refuses a model beyond it.
pub const MAX_ELEMENTS: u64 = 1 << 32;

/// Whether every number of `v` is at most [`MAX_ELEMENTS`].
fn small(v: &[usize]) -> bool {
    v.iter().all(|&d| d as u64 <= MAX_ELEMENTS)
}

/// Whether `shape`'s dimensions and number of elements are at most [`MAX_ELEMENTS`].
fn bounded(shape: &[usize]) -> bool {
    small(shape)
        && shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .is_some_and(|n| n <= MAX_ELEMENTS)
}

/// Named float weight tensors, as the model owner holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub tensors: Vec<(String, ArrayD<f64>)>,
}

impl Weights {
    pub fn get(&self, name: &str) -> Option<&ArrayD<f64>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

impl Model {
    pub fn new(input: &[usize]) -> Self {
        Self {
            input: input.to_vec(),
            nodes: Vec::new(),
            input_layout: InputLayout::ChannelsLast,
            compare_widths: Vec::new(),
        }
    }

    /// Append a node reading `inputs` (value ids: 0 the model's input, i + 1 node i's output);
    /// returns the id of its output.
    pub fn push(&mut self, layer: Layer, inputs: Vec<usize>) -> usize {
        self.nodes.push(Node { layer, inputs });
        self.nodes.len()
    }

    /// Append a layer reading the last value (a chain).
    pub fn then(mut self, layer: Layer) -> Self {
        let last = self.nodes.len();
        self.push(layer, vec![last]);
        self
    }

    pub fn dense(self, units: usize) -> Self {
        self.then(Layer::Dense { units })
    }

    pub fn conv2d(self, filters: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        self.then(Layer::Conv2d {
            filters,
            kernel,
            stride,
            padding,
        })
    }

    pub fn relu(self) -> Self {
        self.then(Layer::Relu)
    }

    /// Non-overlapping k×k average pooling.
    pub fn avgpool(self, k: usize) -> Self {
        self.then(Layer::AvgPool {
            window: Window::square(k),
            count_padding: false,
        })
    }

    /// Non-overlapping k×k max pooling.
    pub fn maxpool(self, k: usize) -> Self {
        self.then(Layer::MaxPool {
            window: Window::square(k),
        })
    }

    pub fn flatten(self) -> Self {
        self.then(Layer::Flatten)
    }

    pub fn pad_to(self, n: usize) -> Self {
        self.then(Layer::PadTo { n })
    }

    pub fn argmax(self) -> Self {
        self.then(Layer::Argmax)
    }

    /// The shape in which callers give one input: [h, w, c] (channels last) or [c, h, w]
    /// (channels first: an ONNX model's NCHW input without the batch).
    pub fn given_input_shape(&self) -> Vec<usize> {
        match (self.input_layout, self.input.as_slice()) {
            (InputLayout::ChannelsFirst, &[h, w, c]) => vec![c, h, w],
            _ => self.input.clone(),
        }
    }

    /// One input as given ([`Model::given_input_shape`], row-major) in the model's NHWC order.
    pub fn input_to_nhwc(&self, given: &[f64]) -> Vec<f64> {
        match (self.input_layout, self.input.as_slice()) {
            (InputLayout::ChannelsFirst, &[h, w, c]) if c > 1 => {
                let mut out = vec![0.0; given.len()];
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            out[(y * w + x) * c + ch] = given[(ch * h + y) * w + x];
                        }
                    }
                }
                out
            }
            _ => given.to_vec(),
        }
    }

    /// Why MNIST images (one channel of 28 × 28, row-major) cannot be this model's inputs, if
    /// they cannot: it must take 784 values in one channel (or flat). A 784-value input of
    /// several channels would read the pixels in an order the images do not have.
    pub fn mnist_mismatch(&self) -> Option<String> {
        let channels = match self.input[..] {
            [_, _, c] => c,
            _ => 1,
        };
        (numel(&self.input) != crate::data::PIXELS || channels != 1).then(|| {
            format!(
                "model takes inputs of shape {:?}; MNIST images are 1 × 28 × 28 (784 values in \
                 one channel): give its inputs with --input (a .npy of N × {:?})",
                self.given_input_shape(),
                self.given_input_shape()
            )
        })
    }

    /// The layers in order (for chains and reports).
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.nodes.iter().map(|n| &n.layer)
    }

    /// Whether every node reads only the one before it.
    pub fn is_chain(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| n.inputs == [i])
    }

    /// How many nodes read each value (value ids as in [`Node`]).
    pub fn readers(&self) -> Vec<usize> {
        let mut r = vec![0; self.nodes.len() + 1];
        for n in &self.nodes {
            for &v in &n.inputs {
                r[v] += 1;
            }
        }
        r
    }

    /// Max pooling before ReLU wherever a ReLU read only by a max pool feeds it: the same
    /// function (ReLU is monotone, so max(relu(x)) = relu(max(x)), exactly also in fixed point,
    /// and a padded cell repeats a cell of its window) with the ReLU on a k² times smaller
    /// tensor (the paper's §9.2 swap).
    pub fn pool_before_relu(&self) -> Self {
        let mut m = self.clone();
        for i in 0..m.nodes.len().saturating_sub(1) {
            let readers = m.readers();
            if m.nodes[i].layer == Layer::Relu
                && m.nodes[i + 1].layer.is_max_pool()
                && m.nodes[i + 1].inputs == [i + 1]
                && readers[i + 1] == 1
            {
                let relu_inputs = m.nodes[i].inputs.clone();
                m.nodes.swap(i, i + 1);
                m.nodes[i].inputs = relu_inputs;
                m.nodes[i + 1].inputs = vec![i + 1];
            }
        }
        m
    }

    /// Insert `layer` right after node `i`, reading its output; every later reader of node i's
    /// output reads the new node's instead.
    fn insert_after(&mut self, i: usize, layer: Layer) {
        for n in &mut self.nodes[i + 1..] {
            for v in &mut n.inputs {
                if *v > i {
                    *v += 1;
                }
            }
        }
        self.nodes.insert(
            i + 1,
            Node {
                layer,
                inputs: vec![i + 1],
            },
        );
    }

    /// The model in the paper's cost layout: [`Model::pool_before_relu`], and a ReLU after the
    /// last dense layer (the ReLU of the paper's ASM output; it changes a prediction only when
    /// every logit is negative).
    pub fn paper_layout(&self) -> Self {
        let mut m = self.pool_before_relu();
        let last_dense = m
            .nodes
            .iter()
            .rposition(|n| matches!(n.layer, Layer::Dense { .. }));
        if let Some(last) = last_dense.filter(|&i| {
            m.nodes
                .get(i + 1)
                .is_none_or(|n| n.layer != Layer::Relu || n.inputs != [i + 1])
        }) {
            m.insert_after(last, Layer::Relu);
        }
        m
    }

    /// The model without a final argmax: what the logits come out of.
    pub fn without_argmax(&self) -> Self {
        let mut m = self.clone();
        if m.nodes.last().map(|n| &n.layer) == Some(&Layer::Argmax) {
            m.nodes.pop();
        }
        m
    }

    /// The same model with every max pool replaced by an average pool (for Pond).
    pub fn with_avg_pooling(&self) -> Self {
        let mut m = self.clone();
        for n in &mut m.nodes {
            if let Layer::MaxPool { window } = n.layer {
                n.layer = Layer::AvgPool {
                    window,
                    count_padding: false,
                };
            }
        }
        m
    }

    /// Names, shapes and parameters of every layer; an error names the first layer that does not
    /// fit its inputs.
    pub fn describe(&self) -> Result<Vec<LayerInfo>, ModelError> {
        if !bounded(&self.input) {
            return Err(ModelError::Shape {
                layer: "input".into(),
                reason: format!(
                    "shape {:?} has more than {MAX_ELEMENTS} elements or a dimension beyond it",
                    self.input
                ),
            });
        }
        let mut values: Vec<Vec<usize>> = vec![self.input.clone()];
        let mut out = Vec::new();
        let last = self.nodes.len().saturating_sub(1);
        for (i, node) in self.nodes.iter().enumerate() {
            let layer = &node.layer;
            let kind = layer.kind();
            let name = format!("{i}.{kind}");
            let err = |reason: String| ModelError::Shape {
                layer: name.clone(),
                reason,
            };
            let arity = match layer {
                Layer::Add => 2..=2,
                Layer::Concat => 1..=usize::MAX,
                _ => 1..=1,
            };
            if !arity.contains(&node.inputs.len()) {
                return Err(err(format!(
                    "reads {} values, {kind} takes {}",
                    node.inputs.len(),
                    if *arity.end() == usize::MAX {
                        "at least one".to_string()
                    } else {
                        arity.start().to_string()
                    }
                )));
            }
            if let Some(&v) = node.inputs.iter().find(|&&v| v > i) {
                return Err(err(format!(
                    "reads value {v}, which is not computed before it (nodes are in order; \
                     value 0 is the input, value j + 1 node j's output)"
                )));
            }
            let ins: Vec<Vec<usize>> = node.inputs.iter().map(|&v| values[v].clone()).collect();
            let shape = ins[0].clone();
            let hwc = |what: &str| -> Result<[usize; 3], ModelError> {
                <[usize; 3]>::try_from(shape.as_slice())
                    .map_err(|_| err(format!("{what} needs an [h, w, c] input, got {shape:?}")))
            };
            let channels = || shape.last().copied().unwrap_or(0);
            let (next, params): (Vec<usize>, Vec<Vec<usize>>) = match layer {
                Layer::Dense { units } => {
                    if shape.len() != 1 {
                        return Err(err(format!(
                            "dense needs a flat input, got {shape:?}: add flatten() first"
                        )));
                    }
                    if *units == 0 {
                        return Err(err("dense needs at least one unit".into()));
                    }
                    (vec![*units], vec![vec![shape[0], *units], vec![*units]])
                }
                Layer::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                } => {
                    let [h, w, c] = hwc("conv2d")?;
                    if *filters == 0 || *kernel == 0 || *stride == 0 {
                        return Err(err("filters, kernel and stride must be at least 1".into()));
                    }
                    let pads = match padding {
                        Padding::Explicit(p) => *p,
                        _ => [0; 4],
                    };
                    if !small(&[*kernel, *stride]) || !small(&pads) {
                        return Err(err(format!(
                            "kernel {kernel}, stride {stride} or padding {padding:?} beyond \
                             {MAX_ELEMENTS}"
                        )));
                    }
                    let g = crate::ring::kernels::conv_geometry(
                        h, w, *kernel, *kernel, *stride, *padding,
                    );
                    if g.out_h == 0 || g.out_w == 0 {
                        return Err(err(format!(
                            "a {kernel}x{kernel} kernel does not fit {shape:?} with padding \
                             {padding:?}"
                        )));
                    }
                    (
                        vec![g.out_h, g.out_w, *filters],
                        vec![vec![*kernel, *kernel, c, *filters], vec![*filters]],
                    )
                }
                Layer::Relu | Layer::LeakyRelu { .. } | Layer::Clip { .. } => {
                    if let Layer::Clip { max } = layer
                        && !(max.is_finite() && *max > 0.0)
                    {
                        return Err(err(format!("clip's maximum must be positive, got {max}")));
                    }
                    if let Layer::LeakyRelu { alpha } = layer
                        && !alpha.is_finite()
                    {
                        return Err(err("leaky ReLU's alpha must be finite".into()));
                    }
                    (shape.clone(), vec![])
                }
                Layer::AvgPool { window, .. } | Layer::MaxPool { window } => {
                    let [h, w, c] = hwc(kind)?;
                    if !small(&window.kernel) || !small(&window.stride) || !small(&window.pads) {
                        return Err(err(format!("window {window:?} beyond {MAX_ELEMENTS}")));
                    }
                    let (oh, ow) = window.output(h, w).map_err(err)?;
                    (vec![oh, ow, c], vec![])
                }
                Layer::Flatten => (vec![numel(&shape)], vec![]),
                Layer::PadTo { n } => {
                    if shape.len() != 1 || shape[0] > *n {
                        return Err(err(format!(
                            "pads a flat input of at most {n} values, got {shape:?}"
                        )));
                    }
                    (vec![*n], vec![])
                }
                Layer::Pad2d { pads } => {
                    let [h, w, c] = hwc("pad2d")?;
                    if !small(pads) {
                        return Err(err(format!("pads {pads:?} beyond {MAX_ELEMENTS}")));
                    }
                    (
                        vec![h + pads[0] + pads[2], w + pads[1] + pads[3], c],
                        vec![],
                    )
                }
                Layer::Add => {
                    if ins[1] != shape {
                        return Err(err(format!(
                            "adds values of shapes {shape:?} and {:?}",
                            ins[1]
                        )));
                    }
                    (shape.clone(), vec![])
                }
                Layer::Concat => {
                    let lead = &shape[..shape.len().saturating_sub(1)];
                    if shape.is_empty()
                        || ins
                            .iter()
                            .any(|s| s.len() != shape.len() || &s[..s.len() - 1] != lead)
                    {
                        return Err(err(format!(
                            "concatenates along the last axis values of shapes {ins:?}"
                        )));
                    }
                    let channels = ins
                        .iter()
                        .try_fold(0usize, |n, s| n.checked_add(s[s.len() - 1]))
                        .filter(|&n| n as u64 <= MAX_ELEMENTS)
                        .ok_or_else(|| {
                            err(format!("concatenates more than {MAX_ELEMENTS} channels"))
                        })?;
                    let mut next = lead.to_vec();
                    next.push(channels);
                    (next, vec![])
                }
                Layer::Scale | Layer::Bias => {
                    if shape.is_empty() || channels() == 0 {
                        return Err(err(format!("needs a non-empty input, got {shape:?}")));
                    }
                    (shape.clone(), vec![vec![channels()]])
                }
                Layer::Argmax => {
                    if shape.len() != 1 || i != last {
                        return Err(err(format!(
                            "argmax is the last layer, on a flat input; got {shape:?}"
                        )));
                    }
                    (vec![], vec![])
                }
            };
            if let Some(s) = std::iter::once(&next).chain(&params).find(|s| !bounded(s)) {
                return Err(err(format!(
                    "a value or parameter of shape {s:?}: more than {MAX_ELEMENTS} elements"
                )));
            }
            let params = params
                .into_iter()
                .zip(layer.param_names())
                .map(|(s, p)| (format!("{name}.{p}"), s))
                .collect();
            out.push(LayerInfo {
                name,
                input: shape,
                inputs: ins,
                output: next.clone(),
                params,
            });
            values.push(next);
        }
        Ok(out)
    }

    /// (name, shape) of every parameter, in the order `forward` consumes them.
    pub fn param_shapes(&self) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
        Ok(self
            .describe()?
            .into_iter()
            .flat_map(|l| l.params)
            .collect())
    }

    /// Output shape (without batch).
    pub fn output_shape(&self) -> Result<Vec<usize>, ModelError> {
        Ok(self
            .describe()?
            .last()
            .map_or(self.input.clone(), |l| l.output.clone()))
    }

    /// Glorot-uniform kernels, zero biases and unit scales from a seed (untrained weights for
    /// tests and demos).
    pub fn init_weights(&self, seed: u64) -> Result<Weights, ModelError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let tensors = self
            .param_shapes()?
            .into_iter()
            .map(|(name, shape)| {
                let t = if name.ends_with(".scale") {
                    ArrayD::ones(IxDyn(&shape))
                } else if shape.len() == 1 {
                    ArrayD::zeros(IxDyn(&shape))
                } else {
                    let fan_out = *shape.last().expect("kernel has dims");
                    let fan_in = numel(&shape) / fan_out;
                    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                    ArrayD::from_shape_fn(IxDyn(&shape), |_| rng.random_range(-limit..limit))
                };
                (name, t)
            })
            .collect();
        Ok(Weights { tensors })
    }

    /// Check that `w` has exactly the model's tensors with the right shapes and finite values.
    pub fn validate(&self, w: &Weights) -> Result<(), ModelError> {
        let shapes = self.param_shapes()?;
        for (name, expected) in &shapes {
            let t = w.get(name).ok_or_else(|| ModelError::MissingWeight {
                tensor: name.clone(),
                expected: expected.clone(),
            })?;
            if t.shape() != expected.as_slice() {
                return Err(ModelError::WeightShape {
                    tensor: name.clone(),
                    expected: expected.clone(),
                    got: t.shape().to_vec(),
                });
            }
            if t.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::WeightValue {
                    tensor: name.clone(),
                    reason: "holds a value that is not a finite number".into(),
                });
            }
        }
        if let Some((name, _)) = w
            .tensors
            .iter()
            .find(|(n, _)| !shapes.iter().any(|(s, _)| s == n))
        {
            return Err(ModelError::ExtraWeight {
                tensor: name.clone(),
            });
        }
        Ok(())
    }
}

/// Walk a model's graph: `step(node index, node, info, input values)` computes each node's
/// output; a value is dropped after its last reader. Returns the last node's output (the input
/// if there are no nodes).
pub(crate) fn walk_graph<T, E>(
    model: &Model,
    infos: &[LayerInfo],
    input: T,
    mut step: impl FnMut(usize, &Node, &LayerInfo, Vec<&T>) -> Result<T, E>,
) -> Result<T, E> {
    let mut left = model.readers();
    let mut values: Vec<Option<T>> = vec![Some(input)];
    for (i, (node, info)) in model.nodes.iter().zip(infos).enumerate() {
        let out = {
            let ins: Vec<&T> = node
                .inputs
                .iter()
                .map(|&v| values[v].as_ref().expect("value still read"))
                .collect();
            step(i, node, info, ins)?
        };
        for &v in &node.inputs {
            left[v] -= 1;
            if left[v] == 0 && v != i + 1 {
                values[v] = None;
            }
        }
        values.push(Some(out));
    }
    Ok(values.pop().flatten().expect("the last value"))
}

/// Bring the model's parameters into the computation from `owner` (who passes `Some(weights)`),
/// in `param_shapes` order.
/// Why a value does not encode, without the value (weights and inputs are secret).
pub(crate) fn unencodable(e: &crate::fixed::FixedError) -> String {
    use crate::fixed::FixedError;
    match e {
        FixedError::OutOfRange { max, frac_bits, .. } => format!(
            "holds a value outside the fixed-point range ±{max} at {frac_bits} fractional bits"
        ),
        FixedError::NotFinite { .. } => "holds a value that is not a finite number".into(),
        e => e.to_string(),
    }
}

/// At most this many bytes of kernels go to the helper ahead of use ([`input_params`]): a party
/// holds what a peer sent and it has not used yet, and deployments cap that (`max_queued_mib`,
/// 512 MiB by default), so a large model's later kernels wait for their layer. 32 MiB covers
/// every built-in network (C's kernels: 3.5 MB).
pub const PREFETCH_BUDGET_BYTES: usize = 32 << 20;

/// Bring the model owner's parameters into the computation, in [`Model::param_shapes`]'s order,
/// each under `weights/<name>`; each kernel, up to [`PREFETCH_BUDGET_BYTES`], is announced to
/// the protocol as a known operand of products to come ([`Protocol::prefetch_known`]).
pub async fn input_params<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    model: &Model,
    owner: PartyId,
    weights: Option<&Weights>,
) -> Result<Vec<P::Tensor>, ProtocolError> {
    let ctx = ctx.child("weights");
    let model_err = |e: ModelError| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason: e.to_string(),
    };
    let shapes = model.param_shapes().map_err(model_err)?;
    if let Some(w) = weights {
        model.validate(w).map_err(model_err)?;
    }
    let fp: FixedPoint = ctx.fixed();
    let mut out = Vec::with_capacity(shapes.len());
    let mut prefetch_left = PREFETCH_BUDGET_BYTES;
    for (name, shape) in shapes {
        let value = match weights {
            Some(w) => {
                let t = w.get(&name).expect("validated");
                let data: Vec<f64> = t.iter().copied().collect();
                Some(fp.encode_tensor(&shape, &data).map_err(|e| {
                    model_err(ModelError::WeightValue {
                        tensor: name.clone(),
                        reason: unencodable(&e),
                    })
                })?)
            }
            None => None,
        };
        let pctx = ctx.child(&name);
        let t = p
            .input(&pctx, owner, value.as_ref(), &shape, fp.frac_bits)
            .await?;
        // A kernel is the known operand of its layer's product: its one-time masked copy can
        // travel now, beside the other inputs, rather than when the first query needs it; the
        // helper holds what it has not used yet, so only up to a budget (in model order).
        let bytes = 8 * crate::ring::numel(&shape);
        if name.ends_with(".kernel") && bytes <= prefetch_left {
            prefetch_left -= bytes;
            p.prefetch_known(&pctx, &t)?;
        }
        out.push(t);
    }
    Ok(out)
}

/// The forward pass of `model` on a batch `x` (shape [batch, ...input]) with parameters from
/// [`input_params`].
pub async fn forward<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    model: &Model,
    params: &[P::Tensor],
    x: P::Tensor,
) -> Result<P::Tensor, ProtocolError> {
    forward_inspect(p, ctx, model, params, x, &mut |_, _, _| {}).await
}

/// Whether `layer` compares its input (so a declared comparison width applies to it).
pub(crate) fn compares(layer: &Layer) -> bool {
    matches!(
        layer,
        Layer::Relu
            | Layer::LeakyRelu { .. }
            | Layer::Clip { .. }
            | Layer::MaxPool { .. }
            | Layer::Argmax
    )
}

/// A callback seeing each node's index, inputs and output.
pub(crate) type Inspect<'a, T> = dyn FnMut(usize, &[&T], &T) + 'a;

/// [`forward`], calling `inspect(node index, its inputs, its output)` after every node (the
/// plaintext backend's per-layer observations).
pub(crate) async fn forward_inspect<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    model: &Model,
    params: &[P::Tensor],
    x: P::Tensor,
    inspect: &mut Inspect<'_, P::Tensor>,
) -> Result<P::Tensor, ProtocolError> {
    let infos = model.describe().map_err(|e| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason: e.to_string(),
    })?;
    let batch = p.shape(&x)[0];
    let mut params = params.iter();
    let mut left = model.readers();
    let mut values: Vec<Option<P::Tensor>> = vec![Some(x)];
    for (i, (node, info)) in model.nodes.iter().zip(&infos).enumerate() {
        let lctx = ctx.child(&info.name);
        let ins: Vec<&P::Tensor> = node
            .inputs
            .iter()
            .map(|&v| {
                values[v]
                    .as_ref()
                    .expect("a value is kept until its last reader")
            })
            .collect();
        let declared = match model.compare_widths.get(i).copied().flatten() {
            Some(w) if compares(&node.layer) => Some(p.bounded(&lctx, ins[0], w)?),
            _ => None,
        };
        let x = declared.as_ref().unwrap_or(ins[0]);
        lctx.shape(p.shape(x));
        let mut take = || {
            params.next().ok_or_else(|| ProtocolError::Input {
                op: lctx.path().to_string(),
                reason: "fewer parameters than the model needs".into(),
            })
        };
        let full = |s: &[usize]| {
            let mut v = vec![batch];
            v.extend_from_slice(s);
            v
        };
        let y = match &node.layer {
            Layer::Dense { .. } => {
                let (w, b) = (take()?, take()?);
                let y = p.matmul(&lctx, x, w).await?;
                p.add_bias(&lctx, &y, b)?
            }
            Layer::Conv2d {
                stride, padding, ..
            } => {
                let (w, b) = (take()?, take()?);
                let y = p.conv2d(&lctx, x, w, *stride, *padding).await?;
                p.add_bias(&lctx, &y, b)?
            }
            Layer::Relu => p.relu(&lctx, x).await?,
            Layer::LeakyRelu { alpha } => {
                let r = p.relu(&lctx, x).await?;
                let a = p.mul_public(&lctx, x, *alpha)?;
                let b = p.mul_public(&lctx, &r, 1.0 - alpha)?;
                p.add(&lctx, &a, &b)?
            }
            Layer::Clip { max } => {
                // ReLU(x) and ReLU(x - max) in one call, side by side on the last axis.
                let shifted = p.add_public(&lctx, x, -max)?;
                let mut both = p.concat(&lctx, &[x, &shifted])?;
                if let Some(w) = model.compare_widths.get(i).copied().flatten() {
                    // The declared width covers |x| + max.
                    both = p.bounded(&lctx, &both, w)?;
                }
                let r = p.relu(&lctx, &both).await?;
                let shape = full(&info.output);
                let half = numel(&shape);
                let c = *shape.last().expect("an axis");
                let pick = |second: usize| Gather {
                    shape: shape.clone(),
                    index: (0..half)
                        .map(|j| (j / c) * 2 * c + second * c + j % c)
                        .collect(),
                };
                let (lo, hi) = (p.gather(&r, &pick(0)), p.gather(&r, &pick(1)));
                p.sub(&lctx, &lo, &hi)?
            }
            Layer::AvgPool {
                window,
                count_padding,
            } => avgpool(p, &lctx, x, window, *count_padding)?,
            Layer::MaxPool { window } => p.maxpool(&lctx, x, window).await?,
            Layer::Flatten => p.reshape(x, &[batch, numel(&info.output)]),
            Layer::PadTo { n } => p.pad_last(x, *n),
            Layer::Pad2d { pads } => p.gather(x, &Gather::pad2d(p.shape(x), *pads)),
            Layer::Add => p.add(&lctx, x, ins[1])?,
            Layer::Concat => p.concat(&lctx, &ins)?,
            Layer::Scale => {
                let s = take()?;
                let s = p.gather(s, &Gather::broadcast_last(p.shape(x)));
                p.mul(&lctx, x, &s).await?
            }
            Layer::Bias => p.add_bias(&lctx, x, take()?)?,
            Layer::Argmax => p.argmax(&lctx, x).await?,
        };
        inspect(i, &ins, &y);
        for &v in &node.inputs {
            left[v] -= 1;
            if left[v] == 0 {
                values[v] = None;
            }
        }
        values.push(Some(y));
        debug_assert_eq!(values.len(), i + 2);
    }
    Ok(values
        .pop()
        .flatten()
        .expect("the output is the last value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model from elsewhere (a peer's, in a deployment) with shapes whose arithmetic would
    /// overflow is refused by `describe`, naming the layer, rather than wrapping or panicking.
    #[test]
    fn mnist_images_fit_one_channel_of_784_only() {
        assert_eq!(Model::new(&[28, 28, 1]).mnist_mismatch(), None);
        assert_eq!(Model::new(&[784]).mnist_mismatch(), None);
        // 784 values in four channels: the pixels would be read in the wrong order.
        let mut four = Model::new(&[14, 14, 4]);
        four.input_layout = InputLayout::ChannelsFirst;
        let why = four.mnist_mismatch().expect("refused");
        assert!(why.contains("[4, 14, 14]"), "{why}");
        assert!(Model::new(&[32, 32, 3]).mnist_mismatch().is_some());
    }

    #[test]
    fn describe_refuses_shapes_beyond_the_bound() {
        let huge = usize::MAX / 2;
        let bad = [
            Model::new(&[huge, 2, 1]).flatten(),
            Model::new(&[0, huge, 1]).flatten(),
            Model::new(&[1 << 20, 1 << 20, 1]).flatten(),
            Model::new(&[784]).dense(1 << 30),
            Model::new(&[28, 28, 1]).then(Layer::Pad2d {
                pads: [huge, 0, huge, 0],
            }),
            Model::new(&[28, 28, 1]).conv2d(4, 3, 1, Padding::Explicit([huge, huge, 0, 0])),
            Model::new(&[28, 28, 1]).then(Layer::MaxPool {
                window: Window {
                    kernel: [huge, 1],
                    stride: [1, 1],
                    pads: [huge - 1, 0, 0, 0],
                },
            }),
            Model::new(&[784]).pad_to(huge),
        ];
        for m in bad {
            let e = m.describe().unwrap_err().to_string();
            assert!(e.contains(&MAX_ELEMENTS.to_string()), "{e}");
        }
        // Concatenations that double the channels until they would overflow.
        let mut m = Model::new(&[1, 1, 1 << 20]);
        for i in 0..40 {
            m.push(Layer::Concat, vec![i, i]);
        }
        let e = m.describe().unwrap_err().to_string();
        assert!(e.contains("channels") || e.contains("elements"), "{e}");
        // The bound is far from any real model.
        assert!(crate::models::by_name("c").unwrap().describe().is_ok());
    }
}
