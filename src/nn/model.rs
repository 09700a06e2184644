//! Sequential models: a builder over layers, shape checking, weights and the protocol-generic
//! forward pass.

use crate::channel::{Ctx, PartyId, ProtocolError};
use crate::fixed::FixedPoint;
use crate::protocol::{Protocol, avgpool};
use crate::ring::{Padding, numel};
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;
use rand::SeedableRng;

/// One layer. Shapes exclude the batch axis; activations are NHWC.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    Dense {
        units: usize,
    },
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    },
    Relu,
    /// Append zeros to a flat input: the public SecureNN code feeds network D's 720 activations
    /// to a 980-wide layer (it reads past the end); zeros are the defined version of that.
    PadTo {
        n: usize,
    },
    /// Index of the largest output (the prediction); a model's last layer.
    Argmax,
    AvgPool {
        k: usize,
    },
    MaxPool {
        k: usize,
    },
    Flatten,
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
}

/// Static description of one layer: its name, shapes and parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    /// (tensor name, shape) of the layer's parameters, kernel first.
    pub params: Vec<(String, Vec<usize>)>,
}

/// A sequential model: input shape [h, w, c] (or [n]) and layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequential {
    pub input: Vec<usize>,
    pub layers: Vec<Layer>,
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

impl Sequential {
    pub fn new(input: &[usize]) -> Self {
        Self {
            input: input.to_vec(),
            layers: Vec::new(),
        }
    }

    pub fn dense(mut self, units: usize) -> Self {
        self.layers.push(Layer::Dense { units });
        self
    }

    pub fn conv2d(
        mut self,
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Self {
        self.layers.push(Layer::Conv2d {
            filters,
            kernel,
            stride,
            padding,
        });
        self
    }

    pub fn relu(mut self) -> Self {
        self.layers.push(Layer::Relu);
        self
    }

    pub fn avgpool(mut self, k: usize) -> Self {
        self.layers.push(Layer::AvgPool { k });
        self
    }

    pub fn maxpool(mut self, k: usize) -> Self {
        self.layers.push(Layer::MaxPool { k });
        self
    }

    pub fn flatten(mut self) -> Self {
        self.layers.push(Layer::Flatten);
        self
    }

    pub fn pad_to(mut self, n: usize) -> Self {
        self.layers.push(Layer::PadTo { n });
        self
    }

    pub fn argmax(mut self) -> Self {
        self.layers.push(Layer::Argmax);
        self
    }

    /// Max pooling before ReLU wherever a ReLU is followed by a max pool: the same function
    /// (ReLU is monotone, so max(relu(x)) = relu(max(x)), exactly also in fixed point) with the
    /// ReLU on a k² times smaller tensor (the paper's §9.2 swap).
    pub fn pool_before_relu(&self) -> Self {
        let mut layers = self.layers.clone();
        for i in 0..layers.len().saturating_sub(1) {
            if layers[i] == Layer::Relu && matches!(layers[i + 1], Layer::MaxPool { .. }) {
                layers.swap(i, i + 1);
            }
        }
        Self {
            input: self.input.clone(),
            layers,
        }
    }

    /// The model in the paper's cost layout: [`Sequential::pool_before_relu`], and a ReLU after
    /// the last dense layer (the ReLU of the paper's ASM output; it changes a prediction only
    /// when every logit is negative).
    pub fn paper_layout(&self) -> Self {
        let mut layers = self.pool_before_relu().layers;
        let last_dense = layers
            .iter()
            .rposition(|l| matches!(l, Layer::Dense { .. }));
        if let Some(last) = last_dense.filter(|&i| layers.get(i + 1) != Some(&Layer::Relu)) {
            layers.insert(last + 1, Layer::Relu);
        }
        Self {
            input: self.input.clone(),
            layers,
        }
    }

    /// The model without a final argmax: what the logits come out of.
    pub fn without_argmax(&self) -> Self {
        let mut layers = self.layers.clone();
        if layers.last() == Some(&Layer::Argmax) {
            layers.pop();
        }
        Self {
            input: self.input.clone(),
            layers,
        }
    }

    /// The same model with every max pool replaced by an average pool (for Pond).
    pub fn with_avg_pooling(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::MaxPool { k } => Layer::AvgPool { k: *k },
                l => l.clone(),
            })
            .collect();
        Self {
            input: self.input.clone(),
            layers,
        }
    }

    /// Names, shapes and parameters of every layer; an error names the first layer that does not
    /// fit its input.
    pub fn describe(&self) -> Result<Vec<LayerInfo>, ModelError> {
        let mut shape = self.input.clone();
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (kind, next, params) = match layer {
                Layer::Dense { units } => {
                    let err = |reason: String| ModelError::Shape {
                        layer: format!("{i}.dense"),
                        reason,
                    };
                    if shape.len() != 1 {
                        return Err(err(format!(
                            "dense needs a flat input, got {shape:?}: add flatten() first"
                        )));
                    }
                    if *units == 0 {
                        return Err(err("dense needs at least one unit".into()));
                    }
                    let n = shape[0];
                    ("dense", vec![*units], vec![vec![n, *units], vec![*units]])
                }
                Layer::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                } => {
                    let err = |reason: String| ModelError::Shape {
                        layer: format!("{i}.conv2d"),
                        reason,
                    };
                    if shape.len() != 3 {
                        return Err(err(format!(
                            "conv2d needs an [h, w, c] input, got {shape:?}"
                        )));
                    }
                    if *filters == 0 || *kernel == 0 || *stride == 0 {
                        return Err(err("filters, kernel and stride must be at least 1".into()));
                    }
                    if *padding == Padding::Valid && (*kernel > shape[0] || *kernel > shape[1]) {
                        return Err(err(format!(
                            "a {kernel}x{kernel} kernel does not fit {shape:?} without padding"
                        )));
                    }
                    let g = crate::ring::kernels::conv_geometry(
                        shape[0], shape[1], *kernel, *kernel, *stride, *padding,
                    );
                    (
                        "conv2d",
                        vec![g.out_h, g.out_w, *filters],
                        vec![vec![*kernel, *kernel, shape[2], *filters], vec![*filters]],
                    )
                }
                Layer::Relu => ("relu", shape.clone(), vec![]),
                Layer::AvgPool { k } | Layer::MaxPool { k } => {
                    let kind = if matches!(layer, Layer::AvgPool { .. }) {
                        "avgpool"
                    } else {
                        "maxpool"
                    };
                    if shape.len() != 3
                        || *k == 0
                        || !shape[0].is_multiple_of(*k)
                        || !shape[1].is_multiple_of(*k)
                    {
                        return Err(ModelError::Shape {
                            layer: format!("{i}.{kind}"),
                            reason: format!(
                                "a {k}x{k} pool needs an [h, w, c] input divisible by {k}, got {shape:?}"
                            ),
                        });
                    }
                    (kind, vec![shape[0] / k, shape[1] / k, shape[2]], vec![])
                }
                Layer::Flatten => ("flatten", vec![numel(&shape)], vec![]),
                Layer::PadTo { n } => {
                    if shape.len() != 1 || shape[0] > *n {
                        return Err(ModelError::Shape {
                            layer: format!("{i}.pad"),
                            reason: format!(
                                "pads a flat input of at most {n} values, got {shape:?}"
                            ),
                        });
                    }
                    ("pad", vec![*n], vec![])
                }
                Layer::Argmax => {
                    if shape.len() != 1 || i + 1 != self.layers.len() {
                        return Err(ModelError::Shape {
                            layer: format!("{i}.argmax"),
                            reason: format!(
                                "argmax is the last layer, on a flat input; got {shape:?}"
                            ),
                        });
                    }
                    ("argmax", vec![], vec![])
                }
            };
            let name = format!("{i}.{kind}");
            let params = params
                .into_iter()
                .zip(["kernel", "bias"])
                .map(|(s, p)| (format!("{name}.{p}"), s))
                .collect();
            out.push(LayerInfo {
                name,
                input: shape,
                output: next.clone(),
                params,
            });
            shape = next;
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

    /// Glorot-uniform kernels and zero biases from a seed (untrained weights for tests and demos).
    pub fn init_weights(&self, seed: u64) -> Result<Weights, ModelError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let tensors = self
            .param_shapes()?
            .into_iter()
            .map(|(name, shape)| {
                let t = if shape.len() == 1 {
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
            if let Some(v) = t.iter().find(|v| !v.is_finite()) {
                return Err(ModelError::WeightValue {
                    tensor: name.clone(),
                    reason: format!("contains {v}"),
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

pub async fn input_params<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    model: &Sequential,
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
        out.push(
            p.input(
                &ctx.child(&name),
                owner,
                value.as_ref(),
                &shape,
                fp.frac_bits,
            )
            .await?,
        );
    }
    Ok(out)
}

/// The forward pass of `model` on a batch `x` (shape [batch, ...input]) with parameters from
/// [`input_params`].
pub async fn forward<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    model: &Sequential,
    params: &[P::Tensor],
    x: P::Tensor,
) -> Result<P::Tensor, ProtocolError> {
    let infos = model.describe().map_err(|e| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason: e.to_string(),
    })?;
    let batch = p.shape(&x)[0];
    let mut params = params.iter();
    let mut x = x;
    for (layer, info) in model.layers.iter().zip(&infos) {
        let lctx = ctx.child(&info.name);
        lctx.shape(p.shape(&x));
        let mut take = || {
            params.next().ok_or_else(|| ProtocolError::Input {
                op: lctx.path().to_string(),
                reason: "fewer parameters than the model needs".into(),
            })
        };
        x = match layer {
            Layer::Dense { .. } => {
                let (w, b) = (take()?, take()?);
                let y = p.matmul(&lctx, &x, w).await?;
                p.add_bias(&lctx, &y, b)?
            }
            Layer::Conv2d {
                stride, padding, ..
            } => {
                let (w, b) = (take()?, take()?);
                let y = p.conv2d(&lctx, &x, w, *stride, *padding).await?;
                p.add_bias(&lctx, &y, b)?
            }
            Layer::Relu => p.relu(&lctx, &x).await?,
            Layer::AvgPool { k } => avgpool(p, &lctx, &x, *k)?,
            Layer::MaxPool { k } => p.maxpool(&lctx, &x, *k).await?,
            Layer::Flatten => p.reshape(&x, &[batch, numel(&info.output)]),
            Layer::PadTo { n } => p.pad_last(&x, *n),
            Layer::Argmax => p.argmax(&lctx, &x).await?,
        };
    }
    Ok(x)
}
