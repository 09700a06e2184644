//! What secure training adds to a backend (SecureNN paper §4 and Tables 3-5; reference §2.3,
//! §3.7-3.11, §9.6): products of any bilinear map with an extra truncation (the backward pass's
//! transposed products and the SGD step), ReLU keeping its DReLU bits (Algorithms 6-7), max
//! pooling keeping DMaxpool's one-hot tensor (Algorithms 9, 10 and 12) and Division
//! (Algorithm 8, for the approximate softmax).
//!
//! Two backends train: SecureNN, and the plaintext reference, which is the fixed-point twin the
//! secure run is held against (same operations on the same numbers, truncation exact instead
//! of local). Pond cannot: its ReLU is a polynomial with no exact derivative, and it has no
//! division.

use super::beaver::{Product, beaver_many};
use super::plaintext::{PlainTensor, Plaintext};
use super::securenn::{SecureNn, division, maxpool, relu};
use super::shared::{SharedTensor, refresh};
use super::{Protocol, ProtocolError, check_pool, product_frac};
use crate::channel::Ctx;
use crate::fixed::{truncate_exact, truncate_share};
use crate::ring::{PadCell, RingTensor, Window};

/// A bilinear map over Z_{2^64}: B(x + x', y) = B(x, y) + B(x', y) and likewise in y.
pub type Bilinear<'a> = Box<dyn Fn(&RingTensor, &RingTensor) -> RingTensor + 'a>;

/// One product B(x, y) of output shape `out`, truncated by the fixed-point product rule (the
/// session's fractional bits when both operands are fractional) plus `shift` more bits, in a
/// single truncation. With a `shift` (an SGD update's scaling) the truncation rounds to nearest
/// (half an output ulp is added first, by P0: free) instead of down: floor's bias of −½ ulp per
/// weight per iteration adds up over hundreds of iterations (network A's 784-wide first layer
/// drifted by several units of pre-activation over 15 epochs and its accuracy swung by tens of
/// points from epoch to epoch).
pub struct TrainProduct<'a, T> {
    pub x: &'a T,
    pub y: &'a T,
    pub out: Vec<usize>,
    pub shift: u32,
    pub op: Bilinear<'a>,
}

/// A backend that can train; see the module docs.
// The futures are not Send on purpose: a party's protocol runs on its own thread.
#[allow(async_fn_in_trait)]
pub trait Trainable: Protocol {
    /// Several products in one flight (one round on SecureNN). An operand that was masked by an
    /// earlier product keeps its mask where the backend memoises masks, so the backward pass
    /// re-opens neither a layer's input nor its weights.
    async fn products(
        &self,
        ctx: &Ctx,
        products: &[TrainProduct<'_, Self::Tensor>],
    ) -> Result<Vec<Self::Tensor>, ProtocolError>;

    /// ReLU and its derivative: (ReLU(x), integer bits [x ≥ 0]).
    async fn relu_keep(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor), ProtocolError>;

    /// Max over non-overlapping k×k windows of an NHWC tensor, and the one-hot tensor shaped
    /// like `x` (integers; one 1 per window at its maximum, the later among ties; zeros where
    /// no window covers the input).
    async fn maxpool_keep(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        k: usize,
    ) -> Result<(Self::Tensor, Self::Tensor), ProtocolError>;

    /// `x` divided by 2^bits, rounded to nearest (half an output ulp added by P0, then
    /// SecureML's local truncation of each share on SecureNN, within one ulp; exact on the
    /// plaintext backend). Local.
    fn truncate(&self, ctx: &Ctx, x: &Self::Tensor, bits: u32) -> Self::Tensor;

    /// This party's part of `x`, for a checkpoint: its share on a server, nothing on the
    /// helper, the value on the plaintext backend.
    fn part(&self, x: &Self::Tensor) -> Option<RingTensor>;

    /// The tensor a checkpoint's part stands for (the inverse of [`Trainable::part`]).
    fn restore(&self, shape: &[usize], frac: u32, part: Option<RingTensor>) -> Self::Tensor;

    /// x / y elementwise by long division with the session's fractional bits of quotient, for
    /// fixed-point 0 ≤ x ≤ y (x = y and y = 0 give the largest quotient, 1 - 2^-f).
    async fn divide(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<Self::Tensor, ProtocolError>;
}

/// What party `j` adds before truncating by `bits` to round to nearest: half an output ulp at
/// P0 (or on the plaintext backend, j = 0) when the truncation scales an update (`shift` > 0).
fn half_ulp(bits: u32, shift: u32, j: usize) -> u64 {
    match (shift, bits, j) {
        (0, _, _) | (_, 0, _) => 0,
        (_, b, 0) => 1 << (b - 1),
        _ => 0,
    }
}

/// Fractional bits of a product and its total truncation.
fn plan(ctx: &Ctx, fx: u32, fy: u32, shift: u32) -> (u32, u32) {
    let (frac, bits) = product_frac(fx, fy, ctx.fixed().frac_bits);
    (frac, bits + shift)
}

impl Trainable for SecureNn {
    async fn products(
        &self,
        ctx: &Ctx,
        products: &[TrainProduct<'_, SharedTensor>],
    ) -> Result<Vec<SharedTensor>, ProtocolError> {
        // The operands as integers, keeping their memoised masks (a clone shares the mask), so
        // the Beaver products come back untruncated and each is truncated once, by all its bits.
        let integer = |t: &SharedTensor| {
            let mut t = t.clone();
            t.frac = 0;
            t
        };
        let views: Vec<(SharedTensor, SharedTensor)> = products
            .iter()
            .map(|p| (integer(p.x), integer(p.y)))
            .collect();
        let beaver: Vec<Product> = products
            .iter()
            .zip(&views)
            .map(|(p, (x, y))| Product {
                x,
                y,
                out: p.out.clone(),
                op: Box::new(|a: &RingTensor, b: &RingTensor| (p.op)(a, b)),
            })
            .collect();
        let z = beaver_many(ctx, &beaver, self.costing).await?;
        let j = ctx.me().index();
        Ok(products
            .iter()
            .zip(z)
            .map(|(p, z)| {
                let (frac, bits) = plan(ctx, p.x.frac(), p.y.frac(), p.shift);
                let half = half_ulp(bits, p.shift, j);
                let z = z.map_share(&p.out, frac, |s| match bits {
                    0 => s.clone(),
                    _ => truncate_share(&s.map(|v| v.wrapping_add(half)), bits, j),
                });
                refresh(ctx, &z)
            })
            .collect())
    }

    async fn relu_keep(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
    ) -> Result<(SharedTensor, SharedTensor), ProtocolError> {
        relu::relu_with_drelu(ctx, x, self.costing).await
    }

    async fn maxpool_keep(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        k: usize,
    ) -> Result<(SharedTensor, SharedTensor), ProtocolError> {
        maxpool::maxpool_one_hot(ctx, x, k, self.costing, self.max).await
    }

    fn truncate(&self, ctx: &Ctx, x: &SharedTensor, bits: u32) -> SharedTensor {
        let j = ctx.me().index();
        let half = half_ulp(bits, bits, j);
        x.map_share(x.shape(), x.frac(), |s| {
            truncate_share(&s.map(|v| v.wrapping_add(half)), bits, j)
        })
    }

    fn part(&self, x: &SharedTensor) -> Option<RingTensor> {
        x.share().cloned()
    }

    fn restore(&self, shape: &[usize], frac: u32, part: Option<RingTensor>) -> SharedTensor {
        SharedTensor::new(shape, frac, part)
    }

    async fn divide(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        division::divide_radix(ctx, x, y, self.costing, self.division).await
    }
}

/// The signed value of a ring element.
fn signed(v: u64) -> i64 {
    v as i64
}

impl Trainable for Plaintext {
    async fn products(
        &self,
        ctx: &Ctx,
        products: &[TrainProduct<'_, PlainTensor>],
    ) -> Result<Vec<PlainTensor>, ProtocolError> {
        Ok(products
            .iter()
            .map(|p| {
                let (frac, bits) = plan(ctx, p.x.frac, p.y.frac, p.shift);
                let half = half_ulp(bits, p.shift, 0);
                let v = (p.op)(&p.x.value, &p.y.value).map(|v| v.wrapping_add(half));
                PlainTensor {
                    value: truncate_exact(&v, bits),
                    frac,
                }
            })
            .collect())
    }

    async fn relu_keep(
        &self,
        _: &Ctx,
        x: &PlainTensor,
    ) -> Result<(PlainTensor, PlainTensor), ProtocolError> {
        let y = x.value.map(|v| if signed(v) >= 0 { v } else { 0 });
        let bits = x.value.map(|v| u64::from(signed(v) >= 0));
        Ok((
            PlainTensor {
                value: y,
                frac: x.frac,
            },
            PlainTensor {
                value: bits,
                frac: 0,
            },
        ))
    }

    async fn maxpool_keep(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        k: usize,
    ) -> Result<(PlainTensor, PlainTensor), ProtocolError> {
        let window = Window::square(k);
        check_pool(ctx, x.value.shape(), &window)?;
        let parts: Vec<RingTensor> = (0..k * k)
            .map(|t| {
                x.value
                    .gather(&window.part(x.value.shape(), t, PadCell::Repeat))
            })
            .collect();
        let m = parts[0].len();
        let mut max = parts[0].as_slice().to_vec();
        let mut arg = vec![0usize; m];
        for (t, part) in parts.iter().enumerate().skip(1) {
            for (o, &v) in part.as_slice().iter().enumerate() {
                // Later wins among ties, as the secure maxima.
                if signed(v) >= signed(max[o]) {
                    max[o] = v;
                    arg[o] = t;
                }
            }
        }
        let units: Vec<RingTensor> = (0..k * k)
            .map(|t| {
                RingTensor::from_vec(
                    parts[0].shape(),
                    arg.iter().map(|&a| u64::from(a == t)).collect(),
                )
            })
            .collect();
        let full = RingTensor::unpool_windows(&units, k);
        let (s, f) = (x.value.shape(), full.shape().to_vec());
        let one_hot = full.gather(&crate::ring::Gather::pad2d(
            &f,
            [0, 0, s[1] - f[1], s[2] - f[2]],
        ));
        Ok((
            PlainTensor {
                value: RingTensor::from_vec(parts[0].shape(), max),
                frac: x.frac,
            },
            PlainTensor {
                value: one_hot,
                frac: 0,
            },
        ))
    }

    fn truncate(&self, _: &Ctx, x: &PlainTensor, bits: u32) -> PlainTensor {
        let half = half_ulp(bits, bits, 0);
        PlainTensor {
            value: truncate_exact(&x.value.map(|v| v.wrapping_add(half)), bits),
            frac: x.frac,
        }
    }

    fn part(&self, x: &PlainTensor) -> Option<RingTensor> {
        Some(x.value.clone())
    }

    fn restore(&self, shape: &[usize], frac: u32, part: Option<RingTensor>) -> PlainTensor {
        PlainTensor {
            value: part.unwrap_or_else(|| RingTensor::zeros(shape)),
            frac,
        }
    }

    /// Algorithm 8's loop on the values themselves, so the quotient is the secure one's bit for
    /// bit (the secure division is exact).
    async fn divide(
        &self,
        ctx: &Ctx,
        x: &PlainTensor,
        y: &PlainTensor,
    ) -> Result<PlainTensor, ProtocolError> {
        super::same_shape(ctx, x.value.shape(), y.value.shape())?;
        super::same_frac(ctx, x.frac, y.frac)?;
        let f = ctx.fixed().frac_bits;
        let q = x.value.zip_map(&y.value, |num, den| {
            let num = num.wrapping_shl(f);
            let (mut u, mut q) = (0u64, 0u64);
            for i in (0..f).rev() {
                let shifted = den.wrapping_shl(i);
                if signed(num.wrapping_sub(u).wrapping_sub(shifted)) >= 0 {
                    u = u.wrapping_add(shifted);
                    q |= 1 << i;
                }
            }
            q
        });
        Ok(PlainTensor { value: q, frac: f })
    }
}
