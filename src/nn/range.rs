//! Fixed-point range analysis: worst-case interval bounds on every value and every un-truncated
//! product of a model, from a public input range, the public architecture and the model owner's
//! weights, and what they mean in Z_{2^64}: products that wrap, comparisons that get the wrong
//! sign, the expected number of values local truncation gets wrong, and weights that round to 0.
//!
//! # What is bounded
//!
//! Each element of each activation is an interval, propagated layer by layer (dense, conv2d,
//! ReLU exact or polynomial, max and average pooling, flatten, pad, argmax) with the weights as
//! the fixed-point encoding holds them (rounded to `frac_bits`) and one ulp of slack per
//! truncation, so the bound also covers the fixed-point run, not only the real-valued model. The
//! bound is a worst case over every input in the range: real activations are usually far
//! smaller (the report puts the plaintext reference's observed maximum beside it).
//!
//! In ring units a value v at `f` fractional bits is v·2^f; a product of two such values is
//! v·2^(2f) until it is truncated. For every layer the analysis reports the largest ring
//! magnitude it creates (the un-truncated product for dense, conv2d, average pooling and Pond's
//! polynomial ReLU; the difference of two compared values for max pooling and argmax; the value
//! itself otherwise) and the headroom 63 − log2 of it.
//!
//! - **Hard failures** (refused by [`RangeReport::check`]): a product reaching 2^63 wraps, a
//!   compared difference reaching 2^63 makes DReLU/MSB read the wrong sign (SecureNN's ReLU,
//!   maxpool and argmax), a value reaching 2^63 is not representable.
//! - **Truncation failures**: SecureML's local truncation of a shared x fails with probability
//!   about |x|/2^64 and then the value is off by about 2^(64−f) ulps, i.e. wrong. The expected
//!   number of wrong values per inference is the sum of |x|/2^64 over every truncated element,
//!   here with the worst-case |x|: an upper estimate. Above [`WARN_EXPECTED_WRONG`] per
//!   inference the report warns.
//! - **Vanished weights**: a nonzero weight with |w| < 2^−(f+1) encodes to 0. The report counts
//!   them per layer and warns when a layer loses all of its nonzero weights or at least
//!   [`WARN_VANISHED_FRACTION`] of them.
//!
//! Pond's polynomial ReLU is included: x², x⁴ = x²·x², x⁶ = x²·x⁴, x⁸ = x⁴·x⁴ are truncated
//! products (up to B⁸·2^(2f) for an input bound B), and so is every coefficient's product. Its
//! worst case leaves the ring for every trained model (the polynomial is only meaningful on its
//! fitted domain anyway), so with a polynomial ReLU the verdict uses the same propagation with
//! every element cut to the largest |value| the plaintext reference computed on the job's images
//! ([`observe`], [`Basis::Observed`]): empirical, and only possible where images and weights meet.
//!
//! # Who computes it
//!
//! The bound is a function of the weights, so it belongs to the model owner. In `securenn infer`
//! and scenario runs all three parties are in one process and the check runs there before the job
//! starts. In a real deployment only the model owner can compute it; what it reveals, if the
//! model owner publishes it, is a coarse magnitude per layer (a few bits of log2 of a sum of
//! absolute weights), not the weights.

use super::model::{Layer, Model, ModelError, Weights, forward_inspect, input_params};
use crate::channel::Ctx;
use crate::fixed::FixedPoint;
use crate::protocol::{Plaintext, ReluKind};
use crate::ring::kernels::im2col;
use crate::ring::window::concat_last;
use crate::ring::{Gather, PadCell, RingTensor, Window};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use std::fmt;

/// MNIST pixels scaled by 1/255.
pub const MNIST_INPUT_RANGE: (f64, f64) = (0.0, 1.0);

/// Warn when the expected number of values truncation gets wrong exceeds this per inference
/// (one image). A wrong value almost always changes the prediction, so this is about the extra
/// error rate it adds: 1e-4 is one image in ten thousand, ten times below the difference a
/// 10,000-image MNIST test can resolve. The shipped networks A-D at 13 fractional bits stay below
/// 2e-6 (C), at 16 bits C passes it (1.2e-4).
pub const WARN_EXPECTED_WRONG: f64 = 1e-4;

/// Warn when at least this fraction of a layer's nonzero weights round to zero.
pub const WARN_VANISHED_FRACTION: f64 = 0.25;

/// 2^63 as a float: what a signed value in the ring must stay below.
const RING_LIMIT: f64 = 9_223_372_036_854_775_808.0;
/// 2^64.
const RING: f64 = 18_446_744_073_709_551_616.0;

/// What a layer's largest ring magnitude measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantity {
    /// A value at f fractional bits.
    Value,
    /// A product at 2f fractional bits before truncation.
    Product,
    /// The difference of two compared values at f fractional bits (DReLU/MSB of it).
    Difference,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Value => "value (it would not be representable)",
            Self::Product => "product before truncation (it wraps)",
            Self::Difference => "difference of compared values (DReLU/MSB reads the wrong sign)",
        })
    }
}

/// One layer's bounds, per inference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRange {
    pub name: String,
    /// Worst-case |value| of the layer's output in real units (argmax: of the largest logit
    /// difference it compares).
    pub bound: f64,
    /// The largest |value| the plaintext fixed-point reference saw on the job's images (same
    /// units as `bound`); `null` when no images were run.
    pub observed: Option<f64>,
    /// `ring_bits` and `expected_wrong` with the intervals cut to the observed values.
    pub observed_ring_bits: Option<f64>,
    pub observed_expected_wrong: Option<f64>,
    /// What `ring_bits` measures.
    pub quantity: Quantity,
    /// log2 of the largest magnitude the layer puts in the ring (worst case).
    pub ring_bits: f64,
    /// 63 − `ring_bits`: how many bits the worst case stays below 2^63.
    pub headroom_bits: f64,
    /// Truncations of shared values per inference.
    pub truncations: u64,
    /// Expected number of values truncation gets wrong per inference (worst-case bound).
    pub expected_wrong: f64,
    /// Nonzero parameters of the layer.
    pub weights: u64,
    /// Nonzero parameters that encode to 0 at this precision.
    pub vanished_weights: u64,
}

/// A bound that exceeds what the ring holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub layer: String,
    pub quantity: Quantity,
    /// log2 of the worst-case ring magnitude (at least 63).
    pub ring_bits: f64,
}

/// The range analysis of one model at one precision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeReport {
    pub frac_bits: u32,
    /// The public input range the bounds start from.
    pub input: [f64; 2],
    pub layers: Vec<LayerRange>,
    /// Largest `ring_bits` of any layer.
    pub ring_bits: f64,
    /// Smallest `headroom_bits` of any layer.
    pub headroom_bits: f64,
    /// Expected values truncation gets wrong per inference (worst case, summed over layers).
    pub expected_wrong_per_inference: f64,
    /// The same for the whole job (`inferences` images).
    pub expected_wrong_per_job: f64,
    /// Headroom and expected wrong values per inference with the intervals cut to the values the
    /// plaintext reference saw on the job's images (empirical); `null` without images.
    pub observed_headroom_bits: Option<f64>,
    pub observed_expected_wrong_per_inference: Option<f64>,
    /// Which figures `violations` and `warnings` come from.
    pub basis: Basis,
    pub inferences: usize,
    pub weights: u64,
    pub vanished_weights: u64,
    /// Bounds beyond the ring: the run is refused unless the risk is accepted.
    pub violations: Vec<Violation>,
    /// What the user should know before trusting the predictions.
    pub warnings: Vec<String>,
}

/// Why a model cannot run safely at this precision.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RangeError {
    #[error(
        "fixed-point range: layer {layer}: the {basis} {quantity} reaches 2^{ring_bits:.1} in the ring at {frac_bits} fractional bits, beyond 2^63{more}; inputs in [{lo}, {hi}]. Scale the weights down, lower the fractional bits, or accept the risk (--allow-range-risk)"
    )]
    Overflow {
        layer: String,
        /// `worst-case`, or `observed` (Pond: cut to the values seen on the job's images).
        basis: String,
        quantity: Quantity,
        ring_bits: f64,
        frac_bits: u32,
        lo: f64,
        hi: f64,
        /// ", and N more" when other operations also exceed it.
        more: String,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("fixed-point range: {0}")]
    Input(String),
}

/// Per-element intervals of one activation (batch of one).
struct Iv {
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl Iv {
    fn max_abs(&self) -> f64 {
        self.lo
            .iter()
            .zip(&self.hi)
            .map(|(l, h)| l.abs().max(h.abs()))
            .fold(0.0, f64::max)
    }
}

/// What one layer put in the ring.
struct Acc {
    ring: f64,
    quantity: Quantity,
    truncations: u64,
    wrong: f64,
    violation: Option<(Quantity, f64)>,
}

impl Acc {
    fn new() -> Self {
        Self {
            ring: 0.0,
            quantity: Quantity::Value,
            truncations: 0,
            wrong: 0.0,
            violation: None,
        }
    }

    fn see(&mut self, q: Quantity, ring: f64) {
        // Overflowed float bounds count as the largest float (JSON has no infinity).
        let ring = if ring.is_nan() {
            f64::MAX
        } else {
            ring.min(f64::MAX)
        };
        if ring > self.ring {
            self.ring = ring;
            self.quantity = q;
        }
        if ring >= RING_LIMIT && self.violation.is_none_or(|(_, r)| ring > r) {
            self.violation = Some((q, ring));
        }
    }

    /// A shared value of ring magnitude `ring` truncated once.
    fn truncate(&mut self, ring: f64) {
        self.see(Quantity::Product, ring);
        self.truncations += 1;
        self.wrong += (ring / RING).min(1.0);
    }
}

fn log2(x: f64) -> f64 {
    if x > 1.0 { x.log2() } else { 0.0 }
}

/// The weight as the fixed-point encoding holds it.
fn quantize(fp: FixedPoint, w: f64) -> f64 {
    (w * fp.scale()).round() / fp.scale()
}

/// Interval image of x·K for intervals x (rows × n) and a known matrix K (n × u): per output
/// element [lo, hi] of the sum before bias.
fn interval_matmul(
    lo: ArrayView2<f64>,
    hi: ArrayView2<f64>,
    k: &Array2<f64>,
) -> (Array2<f64>, Array2<f64>) {
    let kp = k.mapv(|v| v.max(0.0));
    let kn = k.mapv(|v| v.min(0.0));
    let zlo = lo.dot(&kp) + hi.dot(&kn);
    let zhi = hi.dot(&kp) + lo.dot(&kn);
    (zlo, zhi)
}

/// Which bounds decide refusals and warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// The worst case over every input in the range: sound, needs only the weights.
    #[default]
    WorstCase,
    /// The same propagation with each layer's intervals cut to the largest |value| the plaintext
    /// reference saw on the job's images: empirical, for Pond's polynomial ReLU, whose
    /// worst case grows with the 8th power of its input bound and leaves both the ring and the
    /// polynomial's fitted domain for every trained model.
    Observed,
}

/// Bound every layer of `model` (as it will run: layout applied) on inputs in `input`, with the
/// model owner's `weights` at precision `fp` and the protocol's ReLU. `inferences` scales the
/// per-job figures (the number of images). `observed` (from [`observe`], per element) adds the
/// empirical figures; with a polynomial ReLU they are the [`Basis`] of the verdict.
pub fn analyse(
    model: &Model,
    weights: &Weights,
    fp: FixedPoint,
    input: (f64, f64),
    relu: &ReluKind,
    inferences: usize,
    observed: Option<&[Vec<f64>]>,
) -> Result<RangeReport, RangeError> {
    let worst = pass(model, weights, fp, input, relu, None)?;
    let seen = observed
        .map(|o| pass(model, weights, fp, input, relu, Some(o)))
        .transpose()?;
    let basis = match (relu, &seen) {
        (ReluKind::Polynomial(_), Some(_)) => Basis::Observed,
        _ => Basis::WorstCase,
    };
    let mut warnings = worst.vanish_warnings.clone();
    let mut layers = worst.layers;
    if let (Some(seen), Some(obs)) = (&seen, observed) {
        for ((l, s), o) in layers.iter_mut().zip(&seen.layers).zip(obs) {
            l.observed = Some(o.iter().copied().fold(0.0, f64::max));
            l.observed_ring_bits = Some(s.ring_bits);
            l.observed_expected_wrong = Some(s.expected_wrong);
        }
    }
    let ring_bits = layers.iter().map(|l| l.ring_bits).fold(0.0, f64::max);
    let per_inference: f64 = layers.iter().map(|l| l.expected_wrong).sum();
    let observed_ring_bits = seen
        .as_ref()
        .map(|s| s.layers.iter().map(|l| l.ring_bits).fold(0.0, f64::max));
    let observed_per_inference = seen
        .as_ref()
        .map(|s| s.layers.iter().map(|l| l.expected_wrong).sum::<f64>());
    let (violations, verdict_wrong, verdict_bits, what) = match (basis, &seen) {
        (Basis::Observed, Some(s)) => (
            s.violations.clone(),
            observed_per_inference.unwrap_or(0.0),
            observed_ring_bits.unwrap_or(0.0),
            "bound from the plaintext reference's observed values",
        ),
        _ => (
            worst.violations,
            per_inference,
            ring_bits,
            "worst-case bound",
        ),
    };
    let total_weights = layers.iter().map(|l| l.weights).sum();
    let total_vanished = layers.iter().map(|l| l.vanished_weights).sum();
    if total_weights > 0 && total_vanished == total_weights {
        warnings.push(format!(
            "every nonzero weight rounds to zero at {} fractional bits: every input gets the same output",
            fp.frac_bits
        ));
    }
    if verdict_wrong > WARN_EXPECTED_WRONG {
        warnings.push(format!(
            "local truncation may get about {verdict_wrong:.2e} values wrong per inference ({:.2e} in {inferences} inferences; {what} at {} fractional bits, headroom {:.1} bits): a wrong value usually changes the prediction",
            verdict_wrong * inferences as f64,
            fp.frac_bits,
            63.0 - verdict_bits
        ));
    }
    for v in &violations {
        warnings.push(format!(
            "layer {}: the {} reaches 2^{:.1} in the ring ({what})",
            v.layer, v.quantity, v.ring_bits
        ));
    }
    Ok(RangeReport {
        frac_bits: fp.frac_bits,
        input: [input.0, input.1],
        layers,
        ring_bits,
        headroom_bits: 63.0 - ring_bits,
        expected_wrong_per_inference: per_inference,
        expected_wrong_per_job: per_inference * inferences as f64,
        observed_headroom_bits: observed_ring_bits.map(|b| 63.0 - b),
        observed_expected_wrong_per_inference: observed_per_inference,
        basis,
        inferences,
        weights: total_weights,
        vanished_weights: total_vanished,
        violations,
        warnings,
    })
}

/// One propagation: per-layer figures, violations and vanished-weight warnings.
struct Pass {
    layers: Vec<LayerRange>,
    violations: Vec<Violation>,
    vanish_warnings: Vec<String>,
}

/// Propagate intervals through the model; with `clamp`, cut each output element to its observed
/// largest |value| (plus a little slack for the secure run's ulps).
fn pass(
    model: &Model,
    weights: &Weights,
    fp: FixedPoint,
    input: (f64, f64),
    relu: &ReluKind,
    clamp: Option<&[Vec<f64>]>,
) -> Result<Pass, RangeError> {
    if !(input.0.is_finite() && input.1.is_finite() && input.0 <= input.1) {
        return Err(RangeError::Input(format!(
            "input range [{}, {}] is not an interval",
            input.0, input.1
        )));
    }
    model.validate(weights)?;
    let infos = model.describe()?;
    let f = fp.frac_bits as i32;
    let ulp = fp.ulp();
    let s1 = 2f64.powi(f);
    let s2 = 2f64.powi(2 * f);
    let n_in = crate::ring::numel(&model.input);
    let (qlo, qhi) = (quantize(fp, input.0), quantize(fp, input.1));
    let input = Iv {
        lo: vec![qlo; n_in],
        hi: vec![qhi; n_in],
    };
    let mut left = model.readers();
    let mut values: Vec<Option<Iv>> = vec![Some(input)];
    let mut layers = Vec::with_capacity(infos.len());
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    for (i, (node, info)) in model.nodes.iter().zip(&infos).enumerate() {
        let layer = &node.layer;
        let ins: Vec<&Iv> = node
            .inputs
            .iter()
            .map(|&v| values[v].as_ref().expect("kept until its last reader"))
            .collect();
        let x = ins[0];
        let mut acc = Acc::new();
        // Nonzero parameters and those that round to 0.
        let (mut nonzero, mut vanished, mut kernel_nonzero, mut kernel_vanished) = (0, 0, 0, 0);
        for (pi, (name, _)) in info.params.iter().enumerate() {
            let t = weights.get(name).expect("validated");
            for &w in t.iter().filter(|w| **w != 0.0) {
                nonzero += 1;
                let gone = quantize(fp, w) == 0.0;
                vanished += u64::from(gone);
                if pi == 0 {
                    kernel_nonzero += 1;
                    kernel_vanished += u64::from(gone);
                }
            }
        }
        let param = |i: usize| -> Vec<f64> {
            weights
                .get(&info.params[i].0)
                .expect("validated")
                .iter()
                .map(|&w| quantize(fp, w))
                .collect()
        };
        let mut linear = |cols_lo: Array2<f64>, cols_hi: Array2<f64>, units: usize| -> Iv {
            let k = Array2::from_shape_vec((cols_lo.ncols(), units), param(0)).expect("kernel");
            let b = param(1);
            let (zlo, zhi) = interval_matmul(cols_lo.view(), cols_hi.view(), &k);
            let mut out = Iv {
                lo: Vec::with_capacity(zlo.len()),
                hi: Vec::with_capacity(zlo.len()),
            };
            for ((l, h), j) in zlo.iter().zip(zhi.iter()).zip((0..units).cycle()) {
                acc.truncate(l.abs().max(h.abs()) * s2);
                out.lo.push(l + b[j] - ulp);
                out.hi.push(h + b[j] + ulp);
            }
            out
        };
        let mut out = match layer {
            Layer::Dense { units } => {
                let n = x.lo.len();
                let lo = Array2::from_shape_vec((1, n), x.lo.clone()).expect("flat");
                let hi = Array2::from_shape_vec((1, n), x.hi.clone()).expect("flat");
                linear(lo, hi, *units)
            }
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            } => {
                let s = &info.input;
                let cols = |v: &[f64]| {
                    let (c, g) =
                        im2col(v, 1, s[0], s[1], s[2], *kernel, *kernel, *stride, *padding);
                    Array2::from_shape_vec((g.out_h * g.out_w, kernel * kernel * s[2]), c)
                        .expect("im2col shape")
                };
                linear(cols(&x.lo), cols(&x.hi), *filters)
            }
            Layer::Relu => match relu {
                ReluKind::Exact => {
                    acc.see(Quantity::Value, x.max_abs() * s1);
                    Iv {
                        lo: x.lo.iter().map(|v| v.max(0.0)).collect(),
                        hi: x.hi.iter().map(|v| v.max(0.0)).collect(),
                    }
                }
                ReluKind::Polynomial(terms) => polynomial(x, terms, fp, &mut acc)?,
            },
            Layer::MaxPool { window } => {
                let s = &info.input;
                let cells = window_cells(x, s, window, PadCell::Repeat);
                let n = cells[0].lo.len();
                let mut out = Iv {
                    lo: Vec::with_capacity(n),
                    hi: Vec::with_capacity(n),
                };
                for e in 0..n {
                    let top = cells
                        .iter()
                        .map(|c| c.hi[e])
                        .fold(f64::NEG_INFINITY, f64::max);
                    let bottom = cells.iter().map(|c| c.lo[e]).fold(f64::INFINITY, f64::min);
                    acc.see(Quantity::Difference, (top - bottom).abs() * s1);
                    out.lo.push(
                        cells
                            .iter()
                            .map(|c| c.lo[e])
                            .fold(f64::NEG_INFINITY, f64::max),
                    );
                    out.hi.push(top);
                }
                out
            }
            Layer::AvgPool {
                window,
                count_padding,
            } => {
                let s = &info.input;
                let cells = window_cells(x, s, window, PadCell::Zero);
                let (ow, c) = (info.output[1], info.output[2]);
                let n = cells[0].lo.len();
                let mut out = Iv {
                    lo: Vec::with_capacity(n),
                    hi: Vec::with_capacity(n),
                };
                for e in 0..n {
                    let o = e / c;
                    let kk = match count_padding {
                        true => window.cells(),
                        false => window.inside(s[0], s[1], o / ow, o % ow),
                    } as f64;
                    let plan = fp
                        .constant_plan(1.0 / kk)
                        .map_err(|e| RangeError::Input(e.to_string()))?;
                    let sl: f64 = cells.iter().map(|c| c.lo[e]).sum();
                    let sh: f64 = cells.iter().map(|c| c.hi[e]).sum();
                    let m = sl.abs().max(sh.abs());
                    if plan.pre_shift > 0 {
                        acc.truncate(m * s1);
                    }
                    acc.truncate(m / kk * s2);
                    // The pre-shift's and the truncation's ulps, and 1/n kept to the plan's
                    // precision (as for the polynomial's coefficients).
                    let slack = 2f64.powi(plan.pre_shift as i32 - f) / kk
                        + m * 2f64.powi(-f - plan.pre_shift as i32 - 1)
                        + 2.0 * ulp;
                    out.lo.push(sl / kk - slack);
                    out.hi.push(sh / kk + slack);
                }
                out
            }
            Layer::LeakyRelu { alpha } if matches!(relu, ReluKind::Polynomial(_)) => {
                // α·x + (1 - α)·p(x) with the polynomial p: as for a ReLU layer, plus two
                // public scalings, each truncated.
                let ReluKind::Polynomial(terms) = relu else {
                    unreachable!("matched")
                };
                let r = polynomial(x, terms, fp, &mut acc)?;
                acc.truncate(x.max_abs() * alpha.abs() * s2);
                acc.truncate(r.max_abs() * (1.0 - alpha).abs() * s2);
                let scaled = |c: f64, l: f64, h: f64| {
                    if c >= 0.0 {
                        (c * l, c * h)
                    } else {
                        (c * h, c * l)
                    }
                };
                let mut out = Iv {
                    lo: Vec::with_capacity(x.lo.len()),
                    hi: Vec::with_capacity(x.lo.len()),
                };
                for e in 0..x.lo.len() {
                    let (al, ah) = scaled(*alpha, x.lo[e], x.hi[e]);
                    let (bl, bh) = scaled(1.0 - alpha, r.lo[e], r.hi[e]);
                    out.lo.push(al + bl - 2.0 * ulp);
                    out.hi.push(ah + bh + 2.0 * ulp);
                }
                out
            }
            Layer::Clip { max } if matches!(relu, ReluKind::Polynomial(_)) => {
                // p(x) - p(x - max) with the polynomial p.
                let ReluKind::Polynomial(terms) = relu else {
                    unreachable!("matched")
                };
                acc.see(Quantity::Value, (x.max_abs() + max) * s1);
                let shifted = Iv {
                    lo: x.lo.iter().map(|v| v - max).collect(),
                    hi: x.hi.iter().map(|v| v - max).collect(),
                };
                let (a, b) = (
                    polynomial(x, terms, fp, &mut acc)?,
                    polynomial(&shifted, terms, fp, &mut acc)?,
                );
                Iv {
                    lo: a.lo.iter().zip(&b.hi).map(|(a, b)| a - b).collect(),
                    hi: a.hi.iter().zip(&b.lo).map(|(a, b)| a - b).collect(),
                }
            }
            Layer::LeakyRelu { alpha } => {
                acc.see(Quantity::Value, x.max_abs() * s1);
                // α·x + (1 - α)·ReLU(x): two public scalings of every element, each truncated
                // (after a pre-shift for a small constant), the constant kept to the plan's
                // precision (as for the polynomial's coefficients).
                let plans = [*alpha, 1.0 - alpha]
                    .into_iter()
                    .map(|c| {
                        fp.constant_plan(c)
                            .map(|plan| (c, plan))
                            .map_err(|e| RangeError::Input(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let g = |v: f64| if v >= 0.0 { v } else { alpha * v };
                let mut out = Iv {
                    lo: Vec::with_capacity(x.lo.len()),
                    hi: Vec::with_capacity(x.lo.len()),
                };
                for (&l, &h) in x.lo.iter().zip(&x.hi) {
                    let m = l.abs().max(h.abs());
                    let mut slack = 0.0;
                    for (c, plan) in &plans {
                        if plan.pre_shift > 0 {
                            acc.truncate(m * s1);
                        }
                        acc.truncate(m * c.abs() * s2);
                        slack += c.abs() * 2f64.powi(plan.pre_shift as i32 - f)
                            + m * 2f64.powi(-f - plan.pre_shift as i32 - 1)
                            + ulp;
                    }
                    let mut cands = vec![g(l), g(h)];
                    if l < 0.0 && h > 0.0 {
                        cands.push(0.0);
                    }
                    out.lo
                        .push(cands.iter().copied().fold(f64::INFINITY, f64::min) - slack);
                    out.hi
                        .push(cands.iter().copied().fold(f64::NEG_INFINITY, f64::max) + slack);
                }
                out
            }
            Layer::Clip { max } => {
                // The maximum as the ring holds it (x - max is an exact public addition).
                let max = quantize(fp, *max);
                acc.see(Quantity::Value, (x.max_abs() + max) * s1);
                Iv {
                    lo: x.lo.iter().map(|v| v.clamp(0.0, max)).collect(),
                    hi: x.hi.iter().map(|v| v.clamp(0.0, max)).collect(),
                }
            }
            Layer::Pad2d { pads } => {
                let g = Gather::pad2d(&batch_of_one(&info.input), *pads);
                Iv {
                    lo: g.apply(&x.lo, 0.0),
                    hi: g.apply(&x.hi, 0.0),
                }
            }
            Layer::Add => Iv {
                lo: x.lo.iter().zip(&ins[1].lo).map(|(a, b)| a + b).collect(),
                hi: x.hi.iter().zip(&ins[1].hi).map(|(a, b)| a + b).collect(),
            },
            Layer::Concat => {
                let rows = crate::ring::numel(&info.output)
                    / info.output.last().copied().unwrap_or(1).max(1);
                let cat = |f: fn(&Iv) -> &Vec<f64>| {
                    let parts: Vec<(&[f64], usize)> = ins
                        .iter()
                        .zip(&info.inputs)
                        .map(|(v, s)| (f(v).as_slice(), *s.last().expect("an axis")))
                        .collect();
                    concat_last(&parts, rows)
                };
                Iv {
                    lo: cat(|v| &v.lo),
                    hi: cat(|v| &v.hi),
                }
            }
            Layer::Scale => {
                let k = param(0);
                let c = k.len();
                let mut out = Iv {
                    lo: Vec::with_capacity(x.lo.len()),
                    hi: Vec::with_capacity(x.lo.len()),
                };
                for (e, (&l, &h)) in x.lo.iter().zip(&x.hi).enumerate() {
                    let w = k[e % c];
                    let (a, b) = (l * w, h * w);
                    acc.truncate(a.abs().max(b.abs()) * s2);
                    out.lo.push(a.min(b) - ulp);
                    out.hi.push(a.max(b) + ulp);
                }
                out
            }
            Layer::Bias => {
                let b = param(0);
                let c = b.len();
                Iv {
                    lo: x.lo.iter().enumerate().map(|(e, v)| v + b[e % c]).collect(),
                    hi: x.hi.iter().enumerate().map(|(e, v)| v + b[e % c]).collect(),
                }
            }
            Layer::Flatten => Iv {
                lo: x.lo.clone(),
                hi: x.hi.clone(),
            },
            Layer::PadTo { n } => {
                let mut out = Iv {
                    lo: x.lo.clone(),
                    hi: x.hi.clone(),
                };
                out.lo.resize(*n, 0.0);
                out.hi.resize(*n, 0.0);
                out
            }
            Layer::Argmax => {
                let top = x.hi.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let bottom = x.lo.iter().copied().fold(f64::INFINITY, f64::min);
                let d = (top - bottom).abs();
                acc.see(Quantity::Difference, d * s1);
                Iv {
                    lo: vec![-d],
                    hi: vec![d],
                }
            }
        };
        for (lo, hi) in out.lo.iter_mut().zip(out.hi.iter_mut()) {
            *lo = if lo.is_nan() {
                -f64::MAX
            } else {
                lo.max(-f64::MAX)
            };
            *hi = if hi.is_nan() {
                f64::MAX
            } else {
                hi.min(f64::MAX)
            };
        }
        if let Some(c) = clamp.and_then(|c| c.get(i)) {
            for ((lo, hi), m) in out.lo.iter_mut().zip(out.hi.iter_mut()).zip(c) {
                let m = m * (1.0 + 1e-9) + 16.0 * ulp;
                *lo = lo.max(-m).min(m);
                *hi = hi.min(m).max(-m);
            }
        }
        let bound = out.max_abs();
        if *layer != Layer::Argmax {
            acc.see(Quantity::Value, bound * s1);
        }
        if let Some((quantity, ring)) = acc.violation {
            violations.push(Violation {
                layer: info.name.clone(),
                quantity,
                ring_bits: log2(ring),
            });
        }
        if kernel_nonzero > 0 && kernel_vanished == kernel_nonzero {
            warnings.push(format!(
                "layer {}: all {kernel_nonzero} nonzero kernel weights round to zero at {} fractional bits (|w| < 2^-{}): the layer outputs only its bias",
                info.name,
                fp.frac_bits,
                fp.frac_bits + 1
            ));
        } else if nonzero > 0 && vanished as f64 >= WARN_VANISHED_FRACTION * nonzero as f64 {
            warnings.push(format!(
                "layer {}: {vanished} of {nonzero} nonzero weights ({:.0}%) round to zero at {} fractional bits (|w| < 2^-{})",
                info.name,
                100.0 * vanished as f64 / nonzero as f64,
                fp.frac_bits,
                fp.frac_bits + 1
            ));
        }
        layers.push(LayerRange {
            name: info.name.clone(),
            bound,
            observed: None,
            observed_ring_bits: None,
            observed_expected_wrong: None,
            quantity: acc.quantity,
            ring_bits: log2(acc.ring),
            headroom_bits: 63.0 - log2(acc.ring),
            truncations: acc.truncations,
            expected_wrong: acc.wrong,
            weights: nonzero,
            vanished_weights: vanished,
        });
        for &v in &node.inputs {
            left[v] -= 1;
            if left[v] == 0 {
                values[v] = None;
            }
        }
        values.push(Some(out));
    }
    Ok(Pass {
        layers,
        violations,
        vanish_warnings: warnings,
    })
}

/// Cell t of every window of one image's intervals (shape [h, w, c]).
fn window_cells(x: &Iv, shape: &[usize], window: &Window, pad: PadCell) -> Vec<Iv> {
    let full = batch_of_one(shape);
    (0..window.cells())
        .map(|t| {
            let g = window.part(&full, t, pad);
            Iv {
                lo: g.apply(&x.lo, 0.0),
                hi: g.apply(&x.hi, 0.0),
            }
        })
        .collect()
}

/// `shape` with a batch axis of one in front.
fn batch_of_one(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1];
    s.extend_from_slice(shape);
    s
}

/// Pond's polynomial ReLU Σ c·x^k on intervals, with its truncated products: x², x⁴ = x²·x²,
/// x⁶ = x²·x⁴, x⁸ = x⁴·x⁴ (as `poly_eval` computes them), then each coefficient's product.
fn polynomial(
    x: &Iv,
    terms: &[(u32, f64)],
    fp: FixedPoint,
    acc: &mut Acc,
) -> Result<Iv, RangeError> {
    let f = fp.frac_bits as i32;
    let ulp = fp.ulp();
    let (s1, s2) = (2f64.powi(f), 2f64.powi(2 * f));
    let max = terms.iter().map(|t| t.0).max().unwrap_or(0);
    let plans = terms
        .iter()
        .map(|&(k, c)| {
            if k == 0 {
                Ok(None)
            } else {
                fp.constant_plan(c)
                    .map(Some)
                    .map_err(|e| RangeError::Input(e.to_string()))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Iv {
        lo: Vec::with_capacity(x.lo.len()),
        hi: Vec::with_capacity(x.lo.len()),
    };
    for (&lo, &hi) in x.lo.iter().zip(&x.hi) {
        let b = lo.abs().max(hi.abs());
        let m = if lo <= 0.0 && hi >= 0.0 {
            0.0
        } else {
            lo.abs().min(hi.abs())
        };
        // Error of each computed power against the exact power of the computed input.
        let mut err = [0.0f64; 9];
        if max >= 2 {
            acc.truncate(b.powi(2) * s2);
            err[2] = ulp;
        }
        if max >= 4 {
            acc.truncate(b.powi(4) * s2);
            err[4] = 2.0 * b.powi(2) * err[2] + err[2] * err[2] + ulp;
        }
        if max >= 6 {
            acc.truncate(b.powi(6) * s2);
            err[6] = b.powi(2) * err[4] + b.powi(4) * err[2] + err[2] * err[4] + ulp;
            if max >= 8 {
                acc.truncate(b.powi(8) * s2);
                err[8] = 2.0 * b.powi(4) * err[4] + err[4] * err[4] + ulp;
            }
        }
        let (mut ylo, mut yhi) = (0.0, 0.0);
        for (&(k, c), plan) in terms.iter().zip(&plans) {
            let Some(plan) = plan else {
                ylo += c;
                yhi += c;
                continue;
            };
            let e = err.get(k as usize).copied().unwrap_or(0.0);
            let (plo, phi) = if k % 2 == 1 {
                (
                    lo.signum() * lo.abs().powi(k as i32),
                    hi.signum() * hi.abs().powi(k as i32),
                )
            } else {
                (m.powi(k as i32), b.powi(k as i32))
            };
            let pmax = b.powi(k as i32) + e;
            if plan.pre_shift > 0 {
                acc.truncate(pmax * s1);
            }
            acc.truncate(c.abs() * pmax * s2);
            let slack = c.abs() * (e + 2f64.powi(plan.pre_shift as i32 - f))
                + pmax * 2f64.powi(-f - plan.pre_shift as i32 - 1)
                + ulp;
            let (tlo, thi) = if c >= 0.0 {
                (c * plo, c * phi)
            } else {
                (c * phi, c * plo)
            };
            ylo += tlo - slack;
            yhi += thi + slack;
        }
        out.lo.push(ylo);
        out.hi.push(yhi);
    }
    Ok(out)
}

impl RangeReport {
    /// Refuse the run when a bound exceeds the ring.
    /// The public comparison width of every node of `model` (the model this report bounds),
    /// for [`Model::compare_widths`]: for a node that compares (ReLU, LeakyReLU, Clip, max
    /// pooling, argmax), the fewest bits w with every |input| < 2^(w − 1) in ring units by the
    /// worst-case bound (Clip: |x| + max, as it also compares x − max), with two ulps of margin
    /// over the bound's own slack; `None` elsewhere, for a bound of 2^62 or more (64 bits serve),
    /// and when the report's verdict is not the worst case (Pond's polynomial ReLU).
    pub fn compare_widths(&self, model: &Model) -> Vec<Option<u32>> {
        if self.basis != Basis::WorstCase || self.layers.len() != model.nodes.len() {
            return vec![None; model.nodes.len()];
        }
        let scale = 2f64.powi(self.frac_bits as i32);
        let input = self.input[0].abs().max(self.input[1].abs());
        model
            .nodes
            .iter()
            .map(|node| {
                if !super::model::compares(&node.layer) {
                    return None;
                }
                let v = *node.inputs.first()?;
                let mut bound = if v == 0 {
                    input
                } else {
                    self.layers[v - 1].bound
                };
                if let Layer::Clip { max } = node.layer {
                    bound += max.abs();
                }
                let ring = bound * scale + 2.0;
                if !ring.is_finite() || ring >= 2f64.powi(62) {
                    return None;
                }
                // |x| <= ring < 2^(floor(log2 ring) + 1) = 2^(w - 1).
                Some((ring.log2().floor() as u32 + 2).max(2))
            })
            .collect()
    }

    pub fn check(&self) -> Result<(), RangeError> {
        let Some(v) = self.violations.first() else {
            return Ok(());
        };
        Err(RangeError::Overflow {
            layer: v.layer.clone(),
            basis: match self.basis {
                Basis::WorstCase => "worst-case".into(),
                Basis::Observed => "observed".into(),
            },
            quantity: v.quantity,
            ring_bits: v.ring_bits,
            frac_bits: self.frac_bits,
            lo: self.input[0],
            hi: self.input[1],
            more: match self.violations.len() - 1 {
                0 => String::new(),
                n => format!(" (and in {n} more layers)"),
            },
        })
    }

    /// A table of the bounds, for `--report table`.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, p: usize| v.map_or("-".into(), |o| format!("{o:.p$}"));
        let mut s = format!(
            "fixed-point range   {} fractional bits, inputs in [{}, {}]; worst case from the weights, observed on the job's images; verdict on the {}\n",
            self.frac_bits,
            self.input[0],
            self.input[1],
            match self.basis {
                Basis::WorstCase => "worst case",
                Basis::Observed => "observed values",
            }
        );
        s += &format!(
            "  {:<14} {:>10} {:>10} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>14}\n",
            "layer",
            "bound",
            "observed",
            "ring bits",
            "headroom",
            "obs. bits",
            "truncations",
            "exp. wrong",
            "obs. wrong",
            "vanished w."
        );
        for l in &self.layers {
            s += &format!(
                "  {:<14} {:>10.3e} {:>10} {:>9.1} {:>9.1} {:>9} {:>11} {:>10.2e} {:>10} {:>14}\n",
                l.name,
                l.bound,
                l.observed.map_or("-".into(), |o| format!("{o:.3e}")),
                l.ring_bits,
                l.headroom_bits,
                opt(l.observed_ring_bits, 1),
                l.truncations,
                l.expected_wrong,
                l.observed_expected_wrong
                    .map_or("-".into(), |o| format!("{o:.2e}")),
                format!("{}/{}", l.vanished_weights, l.weights)
            );
        }
        s += &format!(
            "  worst case: headroom {:.1} bits, {:.2e} wrong values per inference, {:.2e} in {}; observed: headroom {} bits, {} per inference\n",
            self.headroom_bits,
            self.expected_wrong_per_inference,
            self.expected_wrong_per_job,
            self.inferences,
            opt(self.observed_headroom_bits, 1),
            self.observed_expected_wrong_per_inference
                .map_or("-".into(), |o| format!("{o:.2e}")),
        );
        s
    }

    /// One line for the run summary.
    pub fn summary(&self) -> String {
        format!(
            "headroom {:.1} bits at {} fractional bits (worst case; {} observed), {:.2e} values wrong per inference (worst case); {} of {} weights round to zero",
            self.headroom_bits,
            self.frac_bits,
            self.observed_headroom_bits
                .map_or("-".into(), |b| format!("{b:.1}")),
            self.expected_wrong_per_inference,
            self.vanished_weights,
            self.weights
        )
    }
}

/// Largest |value| of each element of each layer's output (over the images) in the plaintext
/// fixed-point reference on `batches` (shape [b, ...input], encoded at `fp`); for argmax the
/// largest difference of two logits (one element). Runs the
/// model layer by layer once. Empirical: it needs the images and the weights together.
pub fn observe(
    model: &Model,
    weights: &Weights,
    fp: FixedPoint,
    relu: &ReluKind,
    batches: &[RingTensor],
) -> Result<Vec<Vec<f64>>, RangeError> {
    let infos = model.describe()?;
    let p = Plaintext { relu: relu.clone() };
    let ctx = Ctx::local(fp);
    let plain_err = |e: crate::channel::ProtocolError| RangeError::Input(e.to_string());
    futures::executor::block_on(async {
        let params = input_params(&p, &ctx, model, crate::channel::P0, Some(weights))
            .await
            .map_err(plain_err)?;
        let mut observed: Vec<Vec<f64>> = infos
            .iter()
            .map(|l| vec![0.0; crate::ring::numel(&l.output)])
            .collect();
        for batch in batches {
            let x = crate::protocol::PlainTensor {
                value: batch.clone(),
                frac: fp.frac_bits,
            };
            let mut record = |i: usize,
                              ins: &[&crate::protocol::PlainTensor],
                              y: &crate::protocol::PlainTensor| {
                if model.nodes[i].layer == Layer::Argmax {
                    let classes = infos[i].input[0];
                    let v = fp.decode_tensor(&ins[0].value);
                    for row in v.chunks(classes) {
                        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let bottom = row.iter().copied().fold(f64::INFINITY, f64::min);
                        observed[i][0] = observed[i][0].max(top - bottom);
                    }
                    return;
                }
                let scale = 2f64.powi(y.frac as i32);
                let per = observed[i].len();
                for (k, &v) in y.value.as_slice().iter().enumerate() {
                    let o = &mut observed[i][k % per];
                    *o = o.max((v as i64 as f64 / scale).abs());
                }
            };
            forward_inspect(&p, &ctx, model, &params, x, &mut record)
                .await
                .map_err(plain_err)?;
        }
        Ok(observed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn tiny(scale: f64) -> (Model, Weights) {
        let m = Model::new(&[3]).dense(2).relu().dense(2).argmax();
        let w = Weights {
            tensors: vec![
                (
                    "0.dense.kernel".into(),
                    ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![1.0, -2.0, 0.5, 1.0, -1.0, 3.0])
                        .unwrap()
                        .mapv(|v| v * scale),
                ),
                ("0.dense.bias".into(), ArrayD::zeros(IxDyn(&[2]))),
                (
                    "2.dense.kernel".into(),
                    ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 0.0, 0.0, -1.0])
                        .unwrap()
                        .mapv(|v| v * scale),
                ),
                ("2.dense.bias".into(), ArrayD::zeros(IxDyn(&[2]))),
            ],
        };
        (m, w)
    }

    #[test]
    fn dense_bounds_are_sums_of_absolute_weights() {
        let (m, w) = tiny(1.0);
        let fp = FixedPoint::default();
        let r = analyse(&m, &w, fp, (0.0, 1.0), &ReluKind::Exact, 10, None).unwrap();
        // Output 0: x·[1, 0.5, -1] in [-1, 1.5]; output 1: x·[-2, 1, 3] in [-2, 4].
        assert!((r.layers[0].bound - 4.0).abs() <= 2.0 * fp.ulp());
        assert_eq!(r.layers[0].truncations, 2);
        assert_eq!(r.layers[0].quantity, Quantity::Product);
        assert!((r.layers[0].ring_bits - (2.0 + 26.0)).abs() < 1e-6);
        // Relu: [0, 1.5] and [0, 4]; second dense: [0, 1.5] and [-4, 0].
        assert!((r.layers[2].bound - 4.0).abs() <= 4.0 * fp.ulp());
        // Argmax compares a difference of at most 1.5 + 4.
        assert!((r.layers[3].bound - 5.5).abs() <= 8.0 * fp.ulp());
        assert_eq!(r.layers[3].quantity, Quantity::Difference);
        assert!(r.violations.is_empty() && r.warnings.is_empty());
        let per: f64 = r.layers.iter().map(|l| l.expected_wrong).sum();
        assert_eq!(r.expected_wrong_per_inference, per);
        assert_eq!(r.expected_wrong_per_job, 10.0 * per);
        r.check().unwrap();
    }

    #[test]
    fn overflow_is_a_violation_and_refused() {
        // 4·s at layer 0, 4·s² at layer 2: with s = 2^20 the second product is 2^(2+40+26).
        let (m, w) = tiny(2f64.powi(20));
        let r = analyse(
            &m,
            &w,
            FixedPoint::default(),
            (0.0, 1.0),
            &ReluKind::Exact,
            1,
            None,
        )
        .unwrap();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.violations[0].layer, "2.dense");
        assert_eq!(r.violations[0].quantity, Quantity::Product);
        let e = r.check().unwrap_err().to_string();
        assert!(e.contains("2.dense") && e.contains("2^68.0"), "{e}");
        // With a smaller scale nothing wraps, but truncation failures are likely.
        let (m, w) = tiny(2f64.powi(12));
        let r = analyse(
            &m,
            &w,
            FixedPoint::default(),
            (0.0, 1.0),
            &ReluKind::Exact,
            1,
            None,
        )
        .unwrap();
        assert!(r.violations.is_empty());
        assert!(r.expected_wrong_per_inference > WARN_EXPECTED_WRONG);
        assert!(r.warnings.iter().any(|w| w.contains("values wrong")));
    }

    #[test]
    fn vanished_weights_are_counted_and_warned() {
        // 4e-6 (and its half, the smallest entry) is below half an ulp at 13 bits, not at 18.
        let (m, w) = tiny(4e-6);
        let r = analyse(
            &m,
            &w,
            FixedPoint::default(),
            (0.0, 1.0),
            &ReluKind::Exact,
            1,
            None,
        )
        .unwrap();
        assert_eq!(r.layers[0].vanished_weights, 6);
        assert_eq!(r.layers[2].vanished_weights, 2);
        assert_eq!(r.vanished_weights, 8);
        assert!(r.warnings.iter().any(|w| w.contains("0.dense: all 6")));
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("every nonzero weight"))
        );
        let r = analyse(
            &m,
            &w,
            FixedPoint::new(18).unwrap(),
            (0.0, 1.0),
            &ReluKind::Exact,
            1,
            None,
        )
        .unwrap();
        assert_eq!(r.vanished_weights, 0);
        assert!(r.warnings.is_empty());
    }

    /// Under a polynomial ReLU, LeakyReLU and Clip evaluate the polynomial too (the model's
    /// forward pass calls the protocol's ReLU): their powers count as a ReLU layer's do.
    #[test]
    fn leaky_relu_and_clip_use_the_polynomial() {
        let (_, w) = tiny(8.0);
        let fp = FixedPoint::default();
        let poly = ReluKind::Polynomial(crate::protocol::TFE_RELU_9.to_vec());
        let relu = Model::new(&[3]).dense(2).relu().dense(2).argmax();
        let reference = analyse(&relu, &w, fp, (0.0, 1.0), &poly, 1, None).unwrap();
        // Pre-activations up to 32: x⁸ is 2^40, 2^66 before truncation.
        assert!(
            reference.layers[1].ring_bits > 63.0,
            "{:?}",
            reference.layers[1]
        );
        for layer in [Layer::LeakyRelu { alpha: 0.1 }, Layer::Clip { max: 6.0 }] {
            let m = Model::new(&[3])
                .dense(2)
                .then(layer.clone())
                .dense(2)
                .argmax();
            let r = analyse(&m, &w, fp, (0.0, 1.0), &poly, 1, None).unwrap();
            assert!(
                r.layers[1].ring_bits >= reference.layers[1].ring_bits,
                "{layer:?}: {:?}",
                r.layers[1]
            );
            assert!(r.check().is_err(), "{layer:?}");
            let exact = analyse(&m, &w, fp, (0.0, 1.0), &ReluKind::Exact, 1, None).unwrap();
            assert!(
                exact.layers[1].ring_bits < 63.0 && exact.check().is_ok(),
                "{layer:?}"
            );
        }
    }

    #[test]
    fn polynomial_relu_bounds_its_powers() {
        let (m, w) = tiny(1.0);
        let terms = crate::protocol::TFE_RELU_9.to_vec();
        let fp = FixedPoint::default();
        let r = analyse(
            &m,
            &w,
            fp,
            (0.0, 1.0),
            &ReluKind::Polynomial(terms),
            1,
            None,
        )
        .unwrap();
        // Input bound 4: x⁸ = 2^16 at 2·13 bits.
        let relu = &r.layers[1];
        assert!((relu.ring_bits - (16.0 + 26.0)).abs() < 0.01, "{relu:?}");
        // x², x⁴, x⁶, x⁸ and a pre-shift and a product for each of the five coefficients.
        let pre = crate::protocol::TFE_RELU_9
            .iter()
            .filter(|(k, c)| *k > 0 && fp.constant_plan(*c).unwrap().pre_shift > 0)
            .count() as u64;
        assert_eq!(relu.truncations, 2 * (4 + 5 + pre));
        // Sound on a grid of the input interval.
        let poly = |v: f64| -> f64 {
            crate::protocol::TFE_RELU_9
                .iter()
                .map(|&(k, c)| c * v.powi(k as i32))
                .sum()
        };
        let worst = (0..=400)
            .map(|i| poly(-2.0 + 6.0 * i as f64 / 400.0).abs())
            .fold(0.0, f64::max);
        assert!(relu.bound >= worst);
    }

    #[test]
    fn logit_differences_beyond_the_ring_are_refused() {
        // Logits near ±2^49 encode (2^62 < 2^63 at 13 bits), their difference does not.
        let m = Model::new(&[1]).dense(2).argmax();
        let big = 2f64.powi(49);
        let w = Weights {
            tensors: vec![
                (
                    "0.dense.kernel".into(),
                    ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 1.0]).unwrap(),
                ),
                (
                    "0.dense.bias".into(),
                    ArrayD::from_shape_vec(IxDyn(&[2]), vec![big, -big]).unwrap(),
                ),
            ],
        };
        let fp = FixedPoint::default();
        let r = analyse(&m, &w, fp, (0.0, 1.0), &ReluKind::Exact, 1, None).unwrap();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.violations[0].layer, "1.argmax");
        assert_eq!(r.violations[0].quantity, Quantity::Difference);
        assert!(r.check().unwrap_err().to_string().contains("wrong sign"));
        // Half of it passes.
        let w = scale_bias(&w, 0.5);
        let r = analyse(&m, &w, fp, (0.0, 1.0), &ReluKind::Exact, 1, None).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn values_beyond_the_ring_are_refused() {
        // The bias (just under 2^50) and the product (2^36.5 · 2^26 < 2^63) each fit; their sum,
        // at 13 fractional bits, does not.
        let m = Model::new(&[1]).dense(1);
        let w = Weights {
            tensors: vec![
                (
                    "0.dense.kernel".into(),
                    ArrayD::from_elem(IxDyn(&[1, 1]), 2f64.powf(36.5)),
                ),
                (
                    "0.dense.bias".into(),
                    ArrayD::from_elem(IxDyn(&[1]), 2f64.powi(50) - 2f64.powi(36)),
                ),
            ],
        };
        let fp = FixedPoint::default();
        let r = analyse(&m, &w, fp, (0.0, 1.0), &ReluKind::Exact, 1, None).unwrap();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.violations[0].quantity, Quantity::Value);
        assert!(r.layers[0].ring_bits >= 63.0);
        let r = analyse(&m, &w, fp, (0.0, 0.0), &ReluKind::Exact, 1, None).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    fn scale_bias(w: &Weights, s: f64) -> Weights {
        Weights {
            tensors: w
                .tensors
                .iter()
                .map(|(n, t)| {
                    let t = if n.ends_with("bias") {
                        t.mapv(|v| v * s)
                    } else {
                        t.clone()
                    };
                    (n.clone(), t)
                })
                .collect(),
        }
    }

    #[test]
    fn observed_values_cut_the_bound() {
        let (m, w) = tiny(1.0);
        let fp = FixedPoint::default();
        let relu = ReluKind::Polynomial(crate::protocol::TFE_RELU_9.to_vec());
        let x = fp
            .encode_tensor(&[2, 3], &[0.0, 0.5, 0.1, 0.1, 0.1, 0.1])
            .unwrap();
        let obs = observe(&m, &w, fp, &relu, &[x]).unwrap();
        assert_eq!(obs.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
        // Rows of the kernel are [1, -2], [0.5, 1], [-1, 3]. First image: [0.15, 0.8]; second:
        // 0.1·[0.5, 2] = [0.05, 0.2].
        assert!((obs[0][0] - 0.15).abs() < 1e-3 && (obs[0][1] - 0.8).abs() < 1e-3);
        let r = analyse(&m, &w, fp, (0.0, 1.0), &relu, 2, Some(&obs)).unwrap();
        assert_eq!(r.basis, Basis::Observed);
        let relu_layer = &r.layers[1];
        assert!(relu_layer.observed_ring_bits.unwrap() < relu_layer.ring_bits - 6.0);
        assert!(r.observed_headroom_bits.unwrap() > r.headroom_bits);
        // With the exact ReLU the verdict stays on the worst case.
        let r = analyse(&m, &w, fp, (0.0, 1.0), &ReluKind::Exact, 2, Some(&obs)).unwrap();
        assert_eq!(r.basis, Basis::WorstCase);
    }

    #[test]
    fn bad_input_range_is_refused() {
        let (m, w) = tiny(1.0);
        let fp = FixedPoint::default();
        assert!(analyse(&m, &w, fp, (1.0, 0.0), &ReluKind::Exact, 1, None).is_err());
        assert!(analyse(&m, &w, fp, (0.0, f64::NAN), &ReluKind::Exact, 1, None).is_err());
    }
}
