//! Additively shared tensors with a helper party, the linear algebra Pond and SecureNN share:
//! P0 and P1 hold 2-out-of-2 shares over Z_{2^64}; P2 (Pond's crypto producer, SecureNN's
//! assistant) holds only the shape. Inputs, reveal, the local linear operations, and the
//! [`Protocol`] implementation of every [`SharedProtocol`]: a protocol on shared tensors says
//! how it masks and what its non-linear layers are, and gets the rest from here.

use super::beaver::beaver;
use super::costing::Costing;
use super::known_operand;
use super::plaintext::check_bias;
pub use super::shared_tensor::SharedTensor;
use super::{
    Protocol, ProtocolError, check_concat, check_conv, check_matmul, encode_public, same_frac,
    same_shape,
};
use crate::channel::{Ctx, P0, P1, P2, PartyId};
use crate::fixed::truncate_share;
use crate::ring::kernels::im2col;
use crate::ring::{Gather, Padding, RingTensor, Window};

pub(crate) fn is_server(p: PartyId) -> bool {
    p == P0 || p == P1
}

/// The other server.
pub(crate) fn other_server(p: PartyId) -> PartyId {
    if p == P0 { P1 } else { P0 }
}

fn bad(ctx: &Ctx, reason: String) -> ProtocolError {
    ProtocolError::Input {
        op: ctx.path().to_string(),
        reason,
    }
}

/// Bring `owner`'s value in. An owner among the servers shares with the other server through
/// their common PRG: no message; or, with `known` (see [`super::known_operand`]), keeps the value
/// as its share, the other server's share being zero, and the tensor is marked known to it.
/// P2 as owner derives P0's share from their seed and sends P1 the rest: one word per element.
pub(crate) async fn input(
    ctx: &Ctx,
    owner: PartyId,
    value: Option<&RingTensor>,
    shape: &[usize],
    frac: u32,
    known: bool,
) -> Result<SharedTensor, ProtocolError> {
    let ctx = ctx.child("input");
    ctx.shape(shape);
    let me = ctx.me();
    if owner.0 > 2 {
        return Err(bad(&ctx, format!("no party {owner}")));
    }
    if me == owner {
        let v =
            value.ok_or_else(|| bad(&ctx, format!("{owner} owns this input but has no value")))?;
        same_shape(&ctx, v.shape(), shape)?;
    }
    if known && is_server(owner) {
        let share = match me {
            m if m == owner => Some(value.expect("checked").clone()),
            P2 => None,
            _ => Some(RingTensor::zeros(shape)),
        };
        return Ok(SharedTensor::new(shape, frac, share).known_to(Some(owner)));
    }
    let share = match (owner, me) {
        (o, m) if is_server(o) && m == o => {
            let r = RingTensor::random(shape, &mut ctx.prg_with(other_server(o)));
            Some(value.expect("checked").sub(&r))
        }
        (o, m) if is_server(o) && is_server(m) => {
            Some(RingTensor::random(shape, &mut ctx.prg_with(o)))
        }
        (o, _) if is_server(o) => None,
        (_, P2) => {
            let x0 = RingTensor::random(shape, &mut ctx.prg_with(P0));
            ctx.send(P1, &value.expect("checked").sub(&x0))?;
            None
        }
        (_, P0) => Some(RingTensor::random(shape, &mut ctx.prg_with(P2))),
        _ => Some(ctx.recv(P2, &shape.to_vec()).await?),
    };
    Ok(SharedTensor::new(shape, frac, share))
}

/// Open `x` to `to` only: the servers other than `to` send their shares.
///
/// The shares are re-randomised first with a P0-P1 zero share (no extra bytes): a share as an
/// operation left it is a function of what the helper dealt (a Beaver product's
/// z1 = α·b1 + a1·β + c1), so the helper receiving it could solve for an operand it never saw.
/// Refreshed, the share a receiver gets is uniform given the value, whoever receives and
/// whatever operation made `x`.
pub(crate) async fn reveal(
    ctx: &Ctx,
    x: &SharedTensor,
    to: PartyId,
) -> Result<Option<RingTensor>, ProtocolError> {
    let ctx = ctx.child("reveal");
    ctx.shape(x.shape());
    let x = &refresh(&ctx, x);
    let me = ctx.me();
    if me != to {
        if let Some(s) = &x.share {
            ctx.send(to, s)?;
        }
        return Ok(None);
    }
    let mut sum = x
        .share
        .clone()
        .unwrap_or_else(|| RingTensor::zeros(&x.shape));
    for server in [P0, P1] {
        if server != me {
            sum.add_assign(&ctx.recv(server, &x.shape).await?);
        }
    }
    Ok(Some(sum))
}

/// Shares of zero from the P0-P1 seed (P0: +r, P1: -r), to refresh an output's shares at no
/// communication cost (SecureNN's u_j).
pub(crate) fn zero_share(ctx: &Ctx, shape: &[usize]) -> Option<RingTensor> {
    match ctx.me() {
        P0 => Some(RingTensor::random(shape, &mut ctx.prg_with(P1))),
        P1 => Some(RingTensor::random(shape, &mut ctx.prg_with(P0)).neg()),
        _ => None,
    }
}

/// `x` with freshly re-randomised shares (same value).
pub(crate) fn refresh(ctx: &Ctx, x: &SharedTensor) -> SharedTensor {
    let z = zero_share(&ctx.child("refresh"), &x.shape);
    SharedTensor::new(
        &x.shape,
        x.frac,
        x.share.as_ref().zip(z).map(|(s, z)| s.add(&z)),
    )
}

/// A public constant tensor as shares: P0 holds it, P1 zeros.
pub(crate) fn public(ctx: &Ctx, value: &RingTensor, frac: u32) -> SharedTensor {
    let share = match ctx.me() {
        P0 => Some(value.clone()),
        P1 => Some(RingTensor::zeros(value.shape())),
        _ => None,
    };
    SharedTensor::new(value.shape(), frac, share)
}

pub(crate) fn add(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
) -> Result<SharedTensor, ProtocolError> {
    same_frac(ctx, x.frac, y.frac)?;
    same_shape(ctx, &x.shape, &y.shape)?;
    Ok(x.zip_share(y, RingTensor::add))
}

pub(crate) fn sub(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
) -> Result<SharedTensor, ProtocolError> {
    same_frac(ctx, x.frac, y.frac)?;
    same_shape(ctx, &x.shape, &y.shape)?;
    Ok(x.zip_share(y, RingTensor::sub))
}

pub(crate) fn add_bias(
    ctx: &Ctx,
    x: &SharedTensor,
    b: &SharedTensor,
) -> Result<SharedTensor, ProtocolError> {
    same_frac(ctx, x.frac, b.frac)?;
    check_bias(ctx, &x.shape, &b.shape)?;
    Ok(x.zip_share(b, RingTensor::add_rows))
}

pub(crate) fn add_public(
    ctx: &Ctx,
    x: &SharedTensor,
    c: f64,
) -> Result<SharedTensor, ProtocolError> {
    let e = encode_public(ctx, c, x.frac)?;
    let holder = ctx.me() == P0;
    Ok(x.map_share(&x.shape, x.frac, |s| {
        if holder {
            s.map(|v| v.wrapping_add(e))
        } else {
            s.clone()
        }
    }))
}

pub(crate) fn mul_public(
    ctx: &Ctx,
    x: &SharedTensor,
    c: f64,
) -> Result<SharedTensor, ProtocolError> {
    let plan = ctx
        .fixed()
        .constant_plan(c)
        .map_err(|e| bad(ctx, e.to_string()))?;
    let j = ctx.me().index();
    Ok(x.map_share(&x.shape, x.frac, |s| {
        let pre = truncate_share(s, plan.pre_shift, j).scale(plan.factor);
        truncate_share(&pre, plan.post_shift, j)
    }))
}

pub(crate) fn reshape(x: &SharedTensor, shape: &[usize]) -> SharedTensor {
    x.move_share(shape, |s| s.clone().reshape(shape))
}

pub(crate) fn pad_last(x: &SharedTensor, to: usize) -> SharedTensor {
    let shape = [x.shape[0], to];
    x.move_share(&shape, |s| super::pad_ring(s, to))
}

pub(crate) fn sum_pool(x: &SharedTensor, window: &Window) -> SharedTensor {
    let s = &x.shape;
    let (oh, ow) = window.output(s[1], s[2]).expect("checked window");
    x.map_share(&[s[0], oh, ow, s[3]], x.frac, |v| v.sum_window(window))
}

/// A local data movement of every share (shares of zero are zeros).
pub(crate) fn gather(x: &SharedTensor, g: &Gather) -> SharedTensor {
    x.move_share(&g.shape, |v| v.gather(g))
}

pub(crate) fn concat(ctx: &Ctx, xs: &[&SharedTensor]) -> Result<SharedTensor, ProtocolError> {
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let fracs: Vec<u32> = xs.iter().map(|x| x.frac()).collect();
    check_concat(ctx, &shapes, &fracs)?;
    let first = &xs[0].shape;
    let mut shape = first[..first.len() - 1].to_vec();
    shape.push(
        xs.iter()
            .map(|x| x.shape.last().copied().unwrap_or(0))
            .sum(),
    );
    let share = xs
        .iter()
        .map(|x| x.share())
        .collect::<Option<Vec<_>>>()
        .map(|shares| RingTensor::concat_last(&shares));
    Ok(SharedTensor::new(&shape, fracs[0], share))
}

/// A protocol on [`SharedTensor`]s (P0, P1 hold shares, P2 helps): Pond and SecureNN. It chooses
/// how products mask their operands and supplies the non-linear layers; inputs, reveal, linear
/// layers and Beaver products are common and come from the blanket [`Protocol`] implementation.
// The futures are not Send on purpose: a party's protocol runs on its own thread.
#[allow(async_fn_in_trait)]
pub trait SharedProtocol {
    fn name(&self) -> &'static str;
    /// How products mask their operands.
    fn costing(&self) -> Costing;
    /// Whether products end with freshly re-randomised shares (SecureNN's zero shares u_j; free).
    fn refresh_products(&self) -> bool;
    /// Whether a convolution masks its im2col matrix (the SecureNN paper's accounting) instead
    /// of its input image.
    fn conv_masks_im2col(&self) -> bool {
        false
    }
    /// Whether a server's inputs stay known to it (value and zero, no randomness) and products
    /// with such an operand take [`super::known_operand`]'s protocol instead of a Beaver triple.
    fn known_operands(&self) -> bool {
        false
    }
    async fn relu(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError>;
    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        window: &Window,
    ) -> Result<SharedTensor, ProtocolError>;
    async fn argmax(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError>;
}

impl<S: SharedProtocol> Protocol for S {
    type Tensor = SharedTensor;

    fn name(&self) -> &'static str {
        SharedProtocol::name(self)
    }

    fn shape<'a>(&self, x: &'a SharedTensor) -> &'a [usize] {
        x.shape()
    }

    fn frac(&self, x: &SharedTensor) -> u32 {
        x.frac()
    }

    async fn input(
        &self,
        ctx: &Ctx,
        owner: PartyId,
        value: Option<&RingTensor>,
        shape: &[usize],
        frac: u32,
    ) -> Result<SharedTensor, ProtocolError> {
        input(ctx, owner, value, shape, frac, self.known_operands()).await
    }

    async fn reveal(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        to: PartyId,
    ) -> Result<Option<RingTensor>, ProtocolError> {
        reveal(ctx, x, to).await
    }

    fn add(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        add(ctx, x, y)
    }

    fn sub(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        sub(ctx, x, y)
    }

    fn add_bias(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        b: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        add_bias(ctx, x, b)
    }

    fn add_public(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        c: f64,
    ) -> Result<SharedTensor, ProtocolError> {
        add_public(ctx, x, c)
    }

    fn mul_public(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        c: f64,
    ) -> Result<SharedTensor, ProtocolError> {
        mul_public(ctx, x, c)
    }

    fn reshape(&self, x: &SharedTensor, shape: &[usize]) -> SharedTensor {
        reshape(x, shape)
    }

    fn pad_last(&self, x: &SharedTensor, to: usize) -> SharedTensor {
        pad_last(x, to)
    }

    fn sum_pool(&self, x: &SharedTensor, window: &Window) -> SharedTensor {
        sum_pool(x, window)
    }

    fn gather(&self, x: &SharedTensor, g: &Gather) -> SharedTensor {
        gather(x, g)
    }

    fn concat(&self, ctx: &Ctx, xs: &[&SharedTensor]) -> Result<SharedTensor, ProtocolError> {
        concat(ctx, xs)
    }

    async fn mul(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        same_shape(ctx, x.shape(), y.shape())?;
        let ctx = ctx.child("mul");
        ctx.shape(x.shape());
        let op = |a: &RingTensor, b: &RingTensor| a.mul(b);
        if let Some(z) = known(self, &ctx, x, y, x.shape(), op).await? {
            return Ok(z);
        }
        let z = beaver(&ctx, x, y, x.shape(), self.costing(), op).await?;
        Ok(finish(self, &ctx, z))
    }

    /// SecureNN's MatMul (Algorithm 1) with PRF-derived triples, Pond's masked matmul:
    /// (2mn + 2nv + mv)·8 bytes for fresh operands.
    async fn matmul(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        let out = check_matmul(ctx, x.shape(), y.shape())?;
        let ctx = ctx.child("matmul");
        ctx.shape(&[x.shape()[0], x.shape()[1], y.shape()[1]]);
        let op = |a: &RingTensor, b: &RingTensor| a.matmul(b);
        if let Some(z) = known(self, &ctx, x, y, &out, op).await? {
            return Ok(z);
        }
        let z = beaver(&ctx, x, y, &out, self.costing(), op).await?;
        Ok(finish(self, &ctx, z))
    }

    /// A Beaver product of the masked image (convolution is bilinear, so the im2col blow-up
    /// stays local), or, as the SecureNN paper, a MatMul of the masked im2col matrix.
    async fn conv2d(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        f: &SharedTensor,
        stride: usize,
        padding: Padding,
    ) -> Result<SharedTensor, ProtocolError> {
        let out = check_conv(ctx, x.shape(), f.shape(), stride, padding)?;
        let ctx = ctx.child("conv2d");
        // As the matmul of the im2col matrix by the filter (the paper's Conv2d cost).
        let fs = f.shape();
        ctx.shape(&[out[0] * out[1] * out[2], fs[0] * fs[1] * fs[2], fs[3]]);
        let op = |a: &RingTensor, b: &RingTensor| a.conv2d(b, stride, padding);
        if let Some(z) = known(self, &ctx, x, f, &out, op).await? {
            return Ok(z);
        }
        let z = if self.conv_masks_im2col() {
            let (xs, fs) = (x.shape(), f.shape());
            let rows = out[0] * out[1] * out[2];
            let cols = fs[0] * fs[1] * fs[2];
            let cm = x.map_share(&[rows, cols], x.frac(), |s| {
                let (m, _) = im2col(
                    s.as_slice(),
                    xs[0],
                    xs[1],
                    xs[2],
                    xs[3],
                    fs[0],
                    fs[1],
                    stride,
                    padding,
                );
                RingTensor::from_vec(&[rows, cols], m)
            });
            let fm = reshape(f, &[cols, fs[3]]);
            let z = beaver(&ctx, &cm, &fm, &[rows, fs[3]], self.costing(), |a, b| {
                a.matmul(b)
            })
            .await?;
            reshape(&z, &out)
        } else {
            beaver(&ctx, x, f, &out, self.costing(), op).await?
        };
        Ok(finish(self, &ctx, z))
    }

    async fn relu(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        SharedProtocol::relu(self, ctx, x).await
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        window: &Window,
    ) -> Result<SharedTensor, ProtocolError> {
        SharedProtocol::maxpool(self, ctx, x, window).await
    }

    async fn argmax(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        SharedProtocol::argmax(self, ctx, x).await
    }

    fn bounded(
        &self,
        _: &Ctx,
        x: &SharedTensor,
        width: u32,
    ) -> Result<SharedTensor, ProtocolError> {
        Ok(x.with_compare_width(width))
    }

    fn prefetch_known(&self, ctx: &Ctx, x: &SharedTensor) -> Result<(), ProtocolError> {
        match self.known_operands() {
            true => known_operand::prefetch(ctx, x),
            false => Ok(()),
        }
    }
}

/// B(x, y) by [`known_operand`] when the protocol holds server inputs known to their owner and
/// an operand is (the product convolves the image however convolutions are masked: only the
/// other operand travels); `None` otherwise. A product computed by K alone stays known to K and
/// is not re-randomised (its shares must stay value and zero).
async fn known<S: SharedProtocol + ?Sized>(
    p: &S,
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
    out: &[usize],
    op: impl Fn(&RingTensor, &RingTensor) -> RingTensor,
) -> Result<Option<SharedTensor>, ProtocolError> {
    if !p.known_operands() {
        return Ok(None);
    }
    Ok(known_operand::product(ctx, x, y, out, op)
        .await?
        .map(|z| match z.known_by() {
            Some(_) => z,
            None => finish(p, ctx, z),
        }))
}

/// A product's output, re-randomised if the protocol asks for it.
fn finish<S: SharedProtocol + ?Sized>(p: &S, ctx: &Ctx, z: SharedTensor) -> SharedTensor {
    if p.refresh_products() {
        refresh(ctx, &z)
    } else {
        z
    }
}
