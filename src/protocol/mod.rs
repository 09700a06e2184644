//! Operations on private tensors, one backend per protocol: the plaintext reference, Pond
//! (tf-encrypted's SPDZ-style protocol with a crypto producer) and SecureNN. Model code
//! is written once against [`Protocol`] and runs on every backend unchanged.

pub(crate) mod beaver;
pub mod costing;
mod known_operand;
pub mod plaintext;
mod polynomial;
pub mod pond;
pub mod securenn;
pub mod shared;
mod shared_tensor;
pub mod trainable;

pub use crate::channel::ProtocolError;
pub use costing::Costing;
pub use plaintext::{PlainTensor, Plaintext, ReluKind};
pub use polynomial::{TFE_RELU_3, TFE_RELU_9, poly_eval};
pub use pond::Pond;
pub use securenn::SecureNn;
pub use shared::{SharedProtocol, SharedTensor};
pub use trainable::{Bilinear, TrainProduct, Trainable};

use crate::channel::{Ctx, PartyId};
use crate::ring::{Gather, Padding, RingTensor, Window, numel};

/// A backend: how private tensors are held and computed on. Every party calls the same methods
/// in the same order (SPMD); local methods need no communication.
///
/// Tensors carry their number of fractional bits: inputs at the session's precision (13 by
/// default) or 0 for integers. A product of two fractional tensors is truncated back to the
/// session precision.
// The futures are not Send on purpose: a party's protocol runs on its own thread.
#[allow(async_fn_in_trait)]
pub trait Protocol {
    type Tensor: Clone;

    fn name(&self) -> &'static str;
    fn shape<'a>(&self, x: &'a Self::Tensor) -> &'a [usize];
    fn frac(&self, x: &Self::Tensor) -> u32;

    /// Bring a value owned by `owner` into the computation. The owner passes `Some(value)`,
    /// the others `None`; everyone passes the public shape and fractional bits.
    async fn input(
        &self,
        ctx: &Ctx,
        owner: PartyId,
        value: Option<&RingTensor>,
        shape: &[usize],
        frac: u32,
    ) -> Result<Self::Tensor, ProtocolError>;

    /// Open `x` to party `to` only; it gets `Some(value)`, the others `None`.
    async fn reveal(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        to: PartyId,
    ) -> Result<Option<RingTensor>, ProtocolError>;

    fn add(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<Self::Tensor, ProtocolError>;
    fn sub(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<Self::Tensor, ProtocolError>;
    /// `x + b` with `b` broadcast along the last axis (a bias).
    fn add_bias(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor, ProtocolError>;
    /// `x + c` for a public real constant.
    fn add_public(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        c: f64,
    ) -> Result<Self::Tensor, ProtocolError>;
    /// `x · c` for a public real constant, keeping the constant's precision
    /// ([`crate::fixed::ConstantPlan`]).
    fn mul_public(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        c: f64,
    ) -> Result<Self::Tensor, ProtocolError>;
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Self::Tensor;
    /// Append zeros to the last axis of a [batch, n] tensor.
    fn pad_last(&self, x: &Self::Tensor, to: usize) -> Self::Tensor;
    /// Sum over the windows of an NHWC tensor (padded cells are zeros).
    fn sum_pool(&self, x: &Self::Tensor, window: &Window) -> Self::Tensor;
    /// A local data movement ([`Gather`]): pads, broadcasts, window cells.
    fn gather(&self, x: &Self::Tensor, g: &Gather) -> Self::Tensor;
    /// Tensors with equal leading axes and fractional bits, concatenated along the last axis
    /// (channels of NHWC tensors).
    fn concat(&self, ctx: &Ctx, xs: &[&Self::Tensor]) -> Result<Self::Tensor, ProtocolError>;

    /// Elementwise product.
    async fn mul(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<Self::Tensor, ProtocolError>;
    async fn matmul(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<Self::Tensor, ProtocolError>;
    async fn conv2d(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        filter: &Self::Tensor,
        stride: usize,
        padding: Padding,
    ) -> Result<Self::Tensor, ProtocolError>;
    async fn relu(&self, ctx: &Ctx, x: &Self::Tensor) -> Result<Self::Tensor, ProtocolError>;
    /// Max over the windows of an NHWC tensor (padding never wins).
    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        window: &Window,
    ) -> Result<Self::Tensor, ProtocolError>;
    /// Index of the maximum of each row of a [batch, n] tensor, as integers (the later one among
    /// equal values).
    async fn argmax(&self, ctx: &Ctx, x: &Self::Tensor) -> Result<Self::Tensor, ProtocolError>;

    /// A note that `x` will be the known operand of products to come (a model owner's kernel):
    /// where the protocol keeps server inputs known to their owner
    /// ([`known_operand`](crate::protocol::known_operand)), the owner sends the helper its
    /// one-time masked copy now, beside other traffic, rather than when the first product needs
    /// it (same bytes, one round fewer per layer). No effect elsewhere (the default).
    fn prefetch_known(&self, _ctx: &Ctx, _x: &Self::Tensor) -> Result<(), ProtocolError> {
        Ok(())
    }

    /// `x` declared bounded by a public bound: every |value| < 2^(width − 1) in ring units (from
    /// the range analysis, [`crate::nn::range::RangeReport::compare_widths`]), so comparisons of
    /// it (ReLU, max pooling, argmax) may run on `width` bits. The plaintext reference checks
    /// the bound and refuses a value beyond it; shared tensors carry it as metadata.
    fn bounded(
        &self,
        ctx: &Ctx,
        x: &Self::Tensor,
        width: u32,
    ) -> Result<Self::Tensor, ProtocolError>;
}

/// Append zeros to the last axis of a [batch, n] tensor (local on every backend: shares of zero
/// are zeros).
pub fn pad_ring(x: &RingTensor, to: usize) -> RingTensor {
    let s = x.shape();
    let (b, n) = (s[0], s[1]);
    let mut out = vec![0u64; b * to];
    for (row, src) in out.chunks_exact_mut(to).zip(x.as_slice().chunks_exact(n)) {
        row[..n].copy_from_slice(src);
    }
    RingTensor::from_vec(&[b, to], out)
}

/// Average over windows: a local sum, then a public 1/n (Pond's `avgpool2d`), the same on every
/// backend. With padding, n is the window's size if `count_padding` (ONNX's
/// `count_include_pad = 1`), else the number of cells inside the input, which varies along the
/// edges: each distinct n scales the whole sum and a local gather picks, per position, the one
/// that applies (local work only, no bytes).
pub fn avgpool<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    x: &P::Tensor,
    window: &Window,
    count_padding: bool,
) -> Result<P::Tensor, ProtocolError> {
    check_pool(ctx, p.shape(x), window)?;
    let s = p.sum_pool(x, window);
    let ctx = ctx.child("avgpool");
    let shape = p.shape(&s).to_vec();
    let (h, w) = (p.shape(x)[1], p.shape(x)[2]);
    let counts: Vec<usize> = (0..shape[1] * shape[2])
        .map(|o| match count_padding {
            true => window.cells(),
            false => window.inside(h, w, o / shape[2], o % shape[2]),
        })
        .collect();
    let mut distinct = counts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if let [n] = distinct[..] {
        return p.mul_public(&ctx, &s, 1.0 / n as f64);
    }
    let scaled = distinct
        .iter()
        .map(|&n| p.mul_public(&ctx, &s, 1.0 / n as f64))
        .collect::<Result<Vec<_>, _>>()?;
    let c = shape[3];
    let per_position: Vec<usize> = (0..numel(&shape))
        .map(|i| {
            let o = (i / c) % (shape[1] * shape[2]);
            distinct.binary_search(&counts[o]).expect("a listed count")
        })
        .collect();
    let stacked = p.concat(&ctx, &scaled.iter().collect::<Vec<_>>())?;
    Ok(p.gather(&stacked, &Gather::pick_stacked(&shape, &per_position)))
}

/// Pooling needs an NHWC tensor that the window fits.
pub(crate) fn check_pool(ctx: &Ctx, shape: &[usize], window: &Window) -> Result<(), ProtocolError> {
    let fit = match shape {
        [_, h, w, _] => window.output(*h, *w).map(|_| ()),
        _ => Err(format!("pooling needs an NHWC input, got {shape:?}")),
    };
    fit.map_err(|reason| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason,
    })
}

/// Concatenation needs equal leading axes and fractional bits.
pub(crate) fn check_concat(
    ctx: &Ctx,
    shapes: &[&[usize]],
    fracs: &[u32],
) -> Result<(), ProtocolError> {
    let bad = |reason: String| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason,
    };
    let first = shapes
        .first()
        .ok_or_else(|| bad("nothing to concatenate".into()))?;
    for (s, f) in shapes.iter().zip(fracs) {
        if s.is_empty() || s.len() != first.len() || s[..s.len() - 1] != first[..first.len() - 1] {
            return Err(bad(format!(
                "cannot concatenate shapes {first:?} and {s:?} along the last axis"
            )));
        }
        same_frac(ctx, fracs[0], *f)?;
    }
    Ok(())
}

/// A public real constant as a ring element with `frac` fractional bits (0: an integer).
pub(crate) fn encode_public(ctx: &Ctx, c: f64, frac: u32) -> Result<u64, ProtocolError> {
    let bad = |reason: String| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason,
    };
    if frac == 0 {
        if c.fract() != 0.0 || c.abs() >= 2f64.powi(63) {
            return Err(bad(format!(
                "{c} is not an integer constant for an integer tensor"
            )));
        }
        return Ok(c as i64 as u64);
    }
    let fp = crate::fixed::FixedPoint::new(frac).map_err(|e| bad(e.to_string()))?;
    fp.encode(c).map_err(|e| bad(e.to_string()))
}

/// Fractional bits of a product and how many bits to truncate it by.
pub(crate) fn product_frac(fx: u32, fy: u32, session: u32) -> (u32, u32) {
    let f = fx + fy;
    if f > session {
        (session, f - session)
    } else {
        (f, 0)
    }
}

pub(crate) fn same_frac(ctx: &Ctx, a: u32, b: u32) -> Result<(), ProtocolError> {
    if a != b {
        return Err(ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: format!("operands have {a} and {b} fractional bits"),
        });
    }
    Ok(())
}

pub(crate) fn same_shape(ctx: &Ctx, a: &[usize], b: &[usize]) -> Result<(), ProtocolError> {
    if a != b {
        return Err(ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: format!("shapes {a:?} and {b:?} differ"),
        });
    }
    Ok(())
}

/// Shape checks shared by the backends, so every backend refuses the same inputs.
pub(crate) fn check_matmul(
    ctx: &Ctx,
    a: &[usize],
    b: &[usize],
) -> Result<[usize; 2], ProtocolError> {
    if a.len() != 2 || b.len() != 2 || a[1] != b[0] {
        return Err(ProtocolError::Input {
            op: ctx.path().to_string(),
            reason: format!("cannot multiply matrices of shapes {a:?} and {b:?}"),
        });
    }
    Ok([a[0], b[1]])
}

pub(crate) fn check_conv(
    ctx: &Ctx,
    x: &[usize],
    f: &[usize],
    stride: usize,
    padding: Padding,
) -> Result<[usize; 4], ProtocolError> {
    let bad = |reason: String| ProtocolError::Input {
        op: ctx.path().to_string(),
        reason,
    };
    if x.len() != 4 || f.len() != 4 {
        return Err(bad(format!(
            "conv2d wants NHWC input and HWIO filter, got {x:?} and {f:?}"
        )));
    }
    if x[3] != f[2] {
        return Err(bad(format!(
            "input has {} channels, filter expects {}",
            x[3], f[2]
        )));
    }
    if stride == 0 {
        return Err(bad("stride must be at least 1".into()));
    }
    if padding == Padding::Valid && (f[0] > x[1] || f[1] > x[2]) {
        return Err(bad(format!(
            "a {}x{} filter does not fit a {}x{} input without padding",
            f[0], f[1], x[1], x[2]
        )));
    }
    let g = crate::ring::kernels::conv_geometry(x[1], x[2], f[0], f[1], stride, padding);
    Ok([x[0], g.out_h, g.out_w, f[3]])
}
