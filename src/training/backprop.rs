//! One iteration of training on any [`Trainable`] backend (SecureNN, or the plaintext
//! fixed-point twin): the forward pass keeping what the backward pass needs (a linear layer's
//! input, ReLU's DReLU bits, max pooling's DMaxpool one-hot tensor), the approximate softmax
//! and its error ([`super::asm`]), the backward pass and the SGD step.
//!
//! Backward (SecureNN paper §4; reference §3.2, §3.7-3.11, §9.6), for the error g of a layer's
//! output:
//! - dense: dW = Xᵀ·g and dX = g·Wᵀ, two Beaver products in one flight whose operands are the
//!   forward pass's X and W themselves, so with memoised masks neither is opened again (only g
//!   is); db = Σ_batch g (local);
//! - convolution: dW = im2col(X)ᵀ·g and dX = col2im(g·Wᵀ), the same way;
//! - ReLU: g ⊙ DReLU bits, one SelectShare-sized product (integer bits: no truncation);
//! - max pooling: each window's g routed to its maximum by the one-hot tensor (a product);
//! - average pooling: g / k² to every cell (local).
//!
//! SGD: W ← W − (lr / batch)·dW. With lr and the batch powers of two, as the paper's (lr 2^-7
//! for network A, 2^-5 otherwise, batch 2^7), the scaling is a truncation by log2(batch) +
//! log2(1/lr) bits; we fold it into the truncation of the product dW (one rounding, where the
//! paper's code truncates dW by 13 bits and then by those), and truncate db likewise. Other
//! rates multiply by the public constant.

use super::asm::asm_error;
use crate::channel::{Ctx, ProtocolError};
use crate::nn::{Layer, Model, ModelError};
use crate::protocol::{TrainProduct, Trainable, avgpool};
use crate::ring::{Gather, Padding, RingTensor, Window, numel};

/// A layer as training runs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `param` is the index of its kernel; its bias follows.
    Dense {
        param: usize,
    },
    Conv {
        param: usize,
        stride: usize,
        padding: Padding,
    },
    /// A bias on its own (ONNX's MatMul + Add): `param` is the bias.
    Bias {
        param: usize,
    },
    Relu,
    MaxPool {
        k: usize,
    },
    AvgPool {
        k: usize,
    },
    Flatten,
    PadTo,
}

/// A model checked for training: its steps, with each step's input and output shape (without
/// the batch axis).
#[derive(Clone, Debug)]
pub struct Net {
    pub steps: Vec<Step>,
    /// Layer names as the model describes them (`dense`, `relu~1`, ...): the report's keys.
    pub names: Vec<String>,
    pub inputs: Vec<Vec<usize>>,
    pub outputs: Vec<Vec<usize>>,
    pub classes: usize,
    /// Whether the model ends with a ReLU, which is then the approximate softmax's own
    /// (the paper's layout: ReLU after every dense layer, the last one included).
    pub ends_with_relu: bool,
}

fn unsupported(what: String, reason: &str) -> ModelError {
    ModelError::Unsupported {
        what,
        by: "secure training".into(),
        reason: reason.into(),
    }
}

impl Net {
    /// The model as it trains (a trailing argmax is dropped: the loss is on the logits). It must
    /// be a chain of dense, conv2d, ReLU, non-overlapping square max or average pooling,
    /// flatten and pad layers, ending in flat logits.
    pub fn new(model: &Model) -> Result<Self, ModelError> {
        let model = model.without_argmax();
        let infos = model.describe()?;
        if !model.is_chain() {
            return Err(unsupported(
                "a model whose layers are not a chain (residual Add, Concat)".into(),
                "the backward pass walks a chain of layers",
            ));
        }
        let mut steps = Vec::new();
        for (layer, info) in model.layers().zip(&infos) {
            let pool = |window: &Window| -> Result<usize, ModelError> {
                window.as_square().ok_or_else(|| {
                    unsupported(
                        format!("layer {} ({window:?})", info.name),
                        "pooling windows must be square, with stride equal to the window and \
                         no padding",
                    )
                })
            };
            steps.push(match *layer {
                Layer::Dense { .. } => Step::Dense {
                    param: 0, // numbered below
                },
                Layer::Conv2d {
                    stride, padding, ..
                } => Step::Conv {
                    param: 0,
                    stride,
                    padding,
                },
                Layer::Bias => Step::Bias { param: 0 },
                Layer::Relu => Step::Relu,
                Layer::MaxPool { window } => Step::MaxPool { k: pool(&window)? },
                Layer::AvgPool { window, .. } => Step::AvgPool { k: pool(&window)? },
                Layer::Flatten => Step::Flatten,
                Layer::PadTo { .. } => Step::PadTo,
                _ => {
                    return Err(unsupported(
                        format!("layer {} ({})", info.name, layer.kind()),
                        "it trains dense, conv2d, bias, ReLU, max and average pooling, flatten \
                         and pad layers",
                    ));
                }
            });
        }
        let mut param = 0;
        for s in &mut steps {
            match s {
                Step::Dense { param: p } | Step::Conv { param: p, .. } => {
                    *p = param;
                    param += 2;
                }
                Step::Bias { param: p } => {
                    *p = param;
                    param += 1;
                }
                _ => {}
            }
        }
        let last = infos
            .last()
            .ok_or_else(|| unsupported("an empty model".into(), "there is nothing to train"))?;
        if last.output.len() != 1 || last.output[0] < 2 {
            return Err(ModelError::Shape {
                layer: last.name.clone(),
                reason: format!(
                    "training needs flat logits [classes] (at least 2) at the end, got {:?}",
                    last.output
                ),
            });
        }
        if !steps
            .iter()
            .any(|s| matches!(s, Step::Dense { .. } | Step::Conv { .. }))
        {
            return Err(unsupported(
                "a model without dense or conv2d layers".into(),
                "there are no weights to train",
            ));
        }
        Ok(Self {
            ends_with_relu: steps.last() == Some(&Step::Relu),
            steps,
            names: infos.iter().map(|i| i.name.clone()).collect(),
            inputs: infos.iter().map(|i| i.input.clone()).collect(),
            outputs: infos.iter().map(|i| i.output.clone()).collect(),
            classes: last.output[0],
        })
    }
}

/// How the weights are updated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub learning_rate: f64,
    /// Images per update.
    pub batch: usize,
    /// Halve the rate every this many epochs.
    pub halve_every: Option<usize>,
}

impl Sgd {
    /// The step of epoch `epoch` (from 1): the rate halved once per `halve_every` epochs done.
    pub fn at(&self, epoch: usize) -> Self {
        let halvings = self.halve_every.map_or(0, |k| (epoch.max(1) - 1) / k);
        Self {
            learning_rate: self.learning_rate / 2f64.powi(halvings.min(60) as i32),
            halve_every: None,
            ..*self
        }
    }

    /// The update's scale lr / batch as a truncation, when it is a power of two 2^-s.
    pub fn shift(&self) -> Option<u32> {
        let c = self.learning_rate / self.batch as f64;
        let s = -c.log2();
        (c > 0.0 && s.fract() == 0.0 && (1.0..=62.0).contains(&s)).then_some(s as u32)
    }
}

/// What the backward pass keeps from a step's forward pass.
enum Kept<T> {
    Input(T),
    Bits(T),
    OneHot(T),
    Nothing,
}

fn with_batch(b: usize, s: &[usize]) -> Vec<usize> {
    let mut v = vec![b];
    v.extend_from_slice(s);
    v
}

/// Σ over the rows of a [m, n] tensor: [n] (local).
pub(crate) fn sum_rows<P: Trainable>(p: &P, x: &P::Tensor) -> P::Tensor {
    let (m, n) = (p.shape(x)[0], p.shape(x)[1]);
    let col = p.reshape(x, &[1, m, n, 1]);
    let w = Window {
        kernel: [m, 1],
        stride: [m, 1],
        pads: [0; 4],
    };
    p.reshape(&p.sum_pool(&col, &w), &[n])
}

/// Each cell of an NHWC input of `shape` reads its k×k window's output (zeros where no
/// window covers it): the adjoint routing of pooling.
fn unpool(shape: &[usize], k: usize) -> Gather {
    let [b, h, w, c] = [shape[0], shape[1], shape[2], shape[3]];
    let (oh, ow) = (h / k, w / k);
    let mut index = Vec::with_capacity(b * h * w * c);
    for n in 0..b {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    index.push(if y / k < oh && x / k < ow {
                        ((n * oh + y / k) * ow + x / k) * c + ch
                    } else {
                        Gather::ZERO
                    });
                }
            }
        }
    }
    Gather {
        shape: shape.to_vec(),
        index,
    }
}

fn model_err(ctx: &Ctx, e: String) -> ProtocolError {
    ProtocolError::Input {
        op: ctx.path().to_string(),
        reason: e,
    }
}

/// The forward pass on a batch x, keeping what the backward pass needs; returns the logits
/// (or, when the net ends with a ReLU, that ReLU's output) and the kept values.
async fn forward_keep<P: Trainable>(
    p: &P,
    ctx: &Ctx,
    net: &Net,
    params: &[P::Tensor],
    mut x: P::Tensor,
) -> Result<(P::Tensor, Vec<Kept<P::Tensor>>), ProtocolError> {
    let batch = p.shape(&x)[0];
    let mut kept = Vec::with_capacity(net.steps.len());
    for (i, step) in net.steps.iter().enumerate() {
        let lctx = ctx.child(&net.names[i]);
        lctx.shape(p.shape(&x));
        let (y, k) = match *step {
            Step::Dense { param } => {
                let y = p.matmul(&lctx, &x, &params[param]).await?;
                (p.add_bias(&lctx, &y, &params[param + 1])?, Kept::Input(x))
            }
            Step::Conv {
                param,
                stride,
                padding,
            } => {
                let y = p.conv2d(&lctx, &x, &params[param], stride, padding).await?;
                (p.add_bias(&lctx, &y, &params[param + 1])?, Kept::Input(x))
            }
            Step::Bias { param } => (p.add_bias(&lctx, &x, &params[param])?, Kept::Nothing),
            Step::Relu => {
                let (y, bits) = p.relu_keep(&lctx, &x).await?;
                (y, Kept::Bits(bits))
            }
            Step::MaxPool { k } => {
                let (y, one_hot) = p.maxpool_keep(&lctx, &x, k).await?;
                (y, Kept::OneHot(one_hot))
            }
            Step::AvgPool { k } => (
                avgpool(p, &lctx, &x, &Window::square(k), true)?,
                Kept::Nothing,
            ),
            Step::Flatten => (
                p.reshape(&x, &[batch, numel(&net.outputs[i])]),
                Kept::Nothing,
            ),
            Step::PadTo => (p.pad_last(&x, net.outputs[i][0]), Kept::Nothing),
        };
        kept.push(k);
        x = y;
    }
    Ok((x, kept))
}

/// `bits ⊙ g` for integer 0/1 `bits` (ReLU' or DMaxpool's one-hot): SelectShare(bits, 0, g),
/// one product with no truncation.
async fn select<P: Trainable>(
    p: &P,
    ctx: &Ctx,
    bits: &P::Tensor,
    g: &P::Tensor,
) -> Result<P::Tensor, ProtocolError> {
    let prod = TrainProduct {
        x: bits,
        y: g,
        out: p.shape(g).to_vec(),
        shift: 0,
        op: Box::new(|a: &RingTensor, b: &RingTensor| a.mul(b)),
    };
    Ok(p.products(ctx, &[prod]).await?.pop().expect("one product"))
}

/// One SGD iteration on the batch `x` with one-hot labels `y` (fixed point): forward, the
/// approximate softmax's error, backward, and the update of `params` in place. Operation paths:
/// `forward/<layer>`, `asm`, `backward/<layer>`, `update`.
pub async fn iteration<P: Trainable>(
    p: &P,
    ctx: &Ctx,
    net: &Net,
    params: &mut [P::Tensor],
    x: P::Tensor,
    y: &P::Tensor,
    sgd: Sgd,
) -> Result<(), ProtocolError> {
    let batch = p.shape(&x)[0];
    let fctx = ctx.child("forward");
    let (out, mut kept) = forward_keep(p, &fctx, net, params, x).await?;
    let mut g = asm_error(p, &ctx.child("asm"), &out, y, net.ends_with_relu).await?;
    // The ASM's own ReLU (the paper's last layer) passes the error through unchanged, as the
    // paper's code does: δ = ASM(u) − y is the error of the logits.
    let mut last = net.steps.len();
    if net.ends_with_relu {
        last -= 1;
        kept.pop();
    }
    let first = net
        .steps
        .iter()
        .position(|s| {
            matches!(
                s,
                Step::Dense { .. } | Step::Conv { .. } | Step::Bias { .. }
            )
        })
        .expect("checked: the net has weights");
    let bctx = ctx.child("backward");
    let shift = sgd.shift();
    // Per parameter: its gradient, and whether the update's scale is still to be applied (a
    // bias's local sum; a product's was folded into its truncation when it is a power of two).
    let mut grads: Vec<Option<(P::Tensor, bool)>> = vec![None; params.len()];
    let scaled = shift.is_some();
    for i in (first..last).rev() {
        let lctx = bctx.child(&net.names[i]);
        lctx.shape(p.shape(&g));
        let in_shape = with_batch(batch, &net.inputs[i]);
        let out_shape = with_batch(batch, &net.outputs[i]);
        let kept_i = kept.pop().expect("one kept value per step");
        let need_dx = i > first;
        g = match (&net.steps[i], kept_i) {
            (&Step::Dense { param }, Kept::Input(xk)) => {
                let w = &params[param];
                let mut prods = vec![TrainProduct {
                    x: &xk,
                    y: &g,
                    out: p.shape(w).to_vec(),
                    shift: shift.unwrap_or(0),
                    op: Box::new(|a: &RingTensor, b: &RingTensor| a.transpose().matmul(b)),
                }];
                if need_dx {
                    prods.push(TrainProduct {
                        x: &g,
                        y: w,
                        out: in_shape.clone(),
                        shift: 0,
                        op: Box::new(|a: &RingTensor, b: &RingTensor| a.matmul(&b.transpose())),
                    });
                }
                let mut r = p.products(&lctx, &prods).await?.into_iter();
                grads[param] = Some((r.next().expect("dW"), !scaled));
                grads[param + 1] = Some((sum_rows(p, &g), true));
                match r.next() {
                    Some(dx) => dx,
                    None => break,
                }
            }
            (
                &Step::Conv {
                    param,
                    stride,
                    padding,
                },
                Kept::Input(xk),
            ) => {
                let w = &params[param];
                let ws = p.shape(w).to_vec();
                let gs = p.reshape(&g, &out_shape);
                let xin: [usize; 4] = in_shape.clone().try_into().map_err(|_| {
                    model_err(&lctx, format!("conv input {in_shape:?} is not NHWC"))
                })?;
                let kernel = [ws[0], ws[1]];
                let mut prods = vec![TrainProduct {
                    x: &xk,
                    y: &gs,
                    out: ws.clone(),
                    shift: shift.unwrap_or(0),
                    op: Box::new(move |a: &RingTensor, b: &RingTensor| {
                        a.conv2d_filter_grad(b, kernel, stride, padding)
                    }),
                }];
                if need_dx {
                    prods.push(TrainProduct {
                        x: &gs,
                        y: w,
                        out: in_shape.clone(),
                        shift: 0,
                        op: Box::new(move |a: &RingTensor, b: &RingTensor| {
                            a.conv2d_input_grad(b, xin, stride, padding)
                        }),
                    });
                }
                let mut r = p.products(&lctx, &prods).await?.into_iter();
                grads[param] = Some((r.next().expect("dW"), !scaled));
                let o = ws[3];
                let rows = numel(&out_shape) / o;
                grads[param + 1] = Some((sum_rows(p, &p.reshape(&gs, &[rows, o])), true));
                match r.next() {
                    Some(dx) => dx,
                    None => break,
                }
            }
            (&Step::Bias { param }, Kept::Nothing) => {
                let c = *out_shape.last().expect("a bias's axis");
                let rows = numel(&out_shape) / c;
                grads[param] = Some((sum_rows(p, &p.reshape(&g, &[rows, c])), true));
                if !need_dx {
                    break;
                }
                g
            }
            (Step::Relu, Kept::Bits(bits)) => {
                select(p, &lctx, &bits, &p.reshape(&g, &out_shape)).await?
            }
            (&Step::MaxPool { k }, Kept::OneHot(one_hot)) => {
                let up = p.gather(&p.reshape(&g, &out_shape), &unpool(&in_shape, k));
                select(p, &lctx, &one_hot, &up).await?
            }
            (&Step::AvgPool { k }, Kept::Nothing) => {
                let up = p.gather(&p.reshape(&g, &out_shape), &unpool(&in_shape, k));
                p.mul_public(&lctx, &up, 1.0 / (k * k) as f64)?
            }
            (Step::Flatten, Kept::Nothing) => p.reshape(&g, &in_shape),
            (Step::PadTo, Kept::Nothing) => {
                let (from, to) = (net.inputs[i][0], net.outputs[i][0]);
                p.gather(
                    &g,
                    &Gather {
                        shape: in_shape.clone(),
                        index: (0..batch * from)
                            .map(|j| (j / from) * to + j % from)
                            .collect(),
                    },
                )
            }
            _ => unreachable!("every step keeps its own kind"),
        };
    }
    // The update, local: W ← W − (lr/batch)·dW.
    let uctx = ctx.child("update");
    for (i, grad) in grads.into_iter().enumerate() {
        let Some((d, unscaled)) = grad else { continue };
        let d = match (unscaled, shift) {
            (false, _) => d,
            (true, Some(s)) => p.truncate(&uctx, &d, s),
            (true, None) => p.mul_public(&uctx, &d, sgd.learning_rate / batch as f64)?,
        };
        params[i] = p.sub(&uctx, &params[i], &d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Mnist;
    use crate::infer::{Layout, ProtocolKind};
    use crate::nn::Weights;
    use crate::party::{Network, PartyConfig};
    use crate::training::{TrainSpec, run_training};
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};

    /// The twin's update (lr / batch = 1/2, so dW = 2·(W − W')) against the float trainer's
    /// backpropagation of the same error δ = ASM(u) − y, on a model with every layer kind the
    /// float trainer has (a strided SAME convolution, max and average pooling, padding).
    #[test]
    fn the_update_is_the_float_gradient_of_the_asm_error() {
        let model = Model::new(&[13, 13, 2])
            .conv2d(3, 3, 2, Padding::Same)
            .relu()
            .maxpool(2)
            .conv2d(4, 2, 1, Padding::Valid)
            .avgpool(2)
            .flatten()
            .pad_to(6)
            .dense(5)
            .relu()
            .dense(4);
        let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let batch = 6;
        let images: Vec<Vec<f64>> = (0..batch)
            .map(|_| {
                (0..13 * 13 * 2)
                    .map(|_| g.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        let labels: Vec<u8> = (0..batch).map(|i| (i % 4) as u8).collect();
        let fp = crate::fixed::FixedPoint::default();
        let q = |v: f64| fp.decode(fp.encode(v).unwrap());
        let mut weights = model.init_weights(2).unwrap();
        for (_, t) in &mut weights.tensors {
            t.mapv_inplace(|_| q(g.random_range(-1.0..1.0)));
        }
        let spec = TrainSpec {
            protocol: ProtocolKind::Plaintext,
            model_name: "mixed".into(),
            model: model.clone(),
            layout: Layout::Default,
            weights: weights.clone(),
            train: Mnist {
                images: images.clone(),
                labels: labels.clone(),
            },
            test: Mnist::default(),
            epochs: 1,
            batch,
            learning_rate: batch as f64 / 2.0,
            lr_halve_every: None,
            seed: 1,
            iterations: Some(1),
            data_owner: crate::channel::P0,
            model_owner: crate::channel::P0,
            config: PartyConfig::default(),
            network: Network::Memory,
            network_name: "none".into(),
            checkpoint_dir: None,
            resume: false,
        };
        let after: Weights = run_training(&spec, None).unwrap().weights.unwrap();
        // The batch in the twin's order.
        let order = crate::training::epoch_order(1, 1, batch);
        let x = Array2::from_shape_fn((batch, 13 * 13 * 2), |(i, j)| q(images[order[i]][j]));
        let ulp = fp.ulp();
        let float = crate::nn::train::gradients(&model, &weights, x, |u| {
            let mut d = u.mapv(|v| v.max(0.0));
            for (i, mut row) in d.rows_mut().into_iter().enumerate() {
                let s = row.sum() + ulp;
                row.mapv_inplace(|r| r / s);
                row[labels[order[i]] as usize] -= 1.0;
            }
            d
        })
        .unwrap();
        let mut checked = 0;
        for ((name, grad), ((_, before), (_, after))) in
            float.iter().zip(weights.tensors.iter().zip(&after.tensors))
        {
            for ((gf, b), a) in grad.iter().zip(before.iter()).zip(after.iter()) {
                let twin = 2.0 * (b - a);
                // δ carries the quotient's 13 bits, and each gradient sums up to a few hundred
                // products of it: a few tens of ulps; a wrong index or transpose is off by the
                // gradient's own size.
                let tol = 0.05 * gf.abs() + 32.0 * ulp;
                assert!((twin - gf).abs() <= tol, "{name}: twin {twin}, float {gf}");
                checked += usize::from(gf.abs() > 0.05);
            }
        }
        assert!(checked > 40, "only {checked} sizeable gradients");
    }
}
