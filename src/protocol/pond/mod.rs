//! Pond, tf-encrypted's SPDZ-style protocol (Dahl et al. 2018, `tf_encrypted/protocol/pond`):
//! two servers (P0, P1) hold additive shares over Z_{2^64}; a crypto producer (P2) deals Beaver
//! triples. Linear layers are exact, ReLU is a polynomial approximation, pooling is average
//! pooling; max pooling needs exact comparison, which Pond does not have.
//!
//! Costs (words of 8 bytes): masking a tensor x costs 2|x| (each server sends its masked share),
//! once per tensor (masks are memoised and reused); a product z costs |z| more (the producer's
//! dense triple share to server 1; server 0 derives its share from the P0-P2 seed). A matmul
//! m×n·n×v of two fresh tensors therefore moves (2mn + 2nv + mv)·8 bytes, in one round.

mod triples;

use super::{
    Protocol, ProtocolError, TFE_RELU_9, check_conv, check_matmul, check_pool, encode_public,
    plaintext::check_bias, poly_eval, same_frac, same_shape,
};
use crate::channel::{Ctx, P0, P1, P2, PartyId};
use crate::fixed::{FixedError, truncate_share};
use crate::ring::{Padding, RingTensor};
use std::cell::RefCell;
use std::rc::Rc;
pub(crate) use triples::Mask;

/// The Pond backend.
#[derive(Clone, Debug)]
pub struct Pond {
    /// ReLU polynomial, (power, coefficient); tf-encrypted's shipped [-9, 9] fit by default.
    pub relu: Vec<(u32, f64)>,
}

impl Default for Pond {
    fn default() -> Self {
        Self {
            relu: TFE_RELU_9.to_vec(),
        }
    }
}

/// A party's view of a private tensor: a share on the servers, nothing but the shape on the
/// producer; plus the memoised mask (see [`triples`]).
#[derive(Clone)]
pub struct PondTensor {
    shape: Vec<usize>,
    frac: u32,
    share: Option<RingTensor>,
    mask: Rc<RefCell<Option<Mask>>>,
}

impl std::fmt::Debug for PondTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PondTensor{:?}/{}", self.shape, self.frac)
    }
}

impl PondTensor {
    fn new(shape: &[usize], frac: u32, share: Option<RingTensor>) -> Self {
        Self {
            shape: shape.to_vec(),
            frac,
            share,
            mask: Rc::default(),
        }
    }

    /// This party's share (`None` on the producer).
    pub fn share(&self) -> Option<&RingTensor> {
        self.share.as_ref()
    }

    /// Apply a local linear map to the share (the producer holds none).
    fn map_share(
        &self,
        shape: &[usize],
        frac: u32,
        f: impl FnOnce(&RingTensor) -> RingTensor,
    ) -> Self {
        Self::new(shape, frac, self.share.as_ref().map(f))
    }
}

fn is_server(p: PartyId) -> bool {
    p == P0 || p == P1
}

fn bad(ctx: &Ctx, reason: String) -> ProtocolError {
    ProtocolError::Input {
        op: ctx.path().to_string(),
        reason,
    }
}

fn plan_error(ctx: &Ctx, e: FixedError) -> ProtocolError {
    bad(ctx, e.to_string())
}

impl Protocol for Pond {
    type Tensor = PondTensor;

    fn name(&self) -> &'static str {
        "pond"
    }

    fn shape<'a>(&self, x: &'a PondTensor) -> &'a [usize] {
        &x.shape
    }

    fn frac(&self, x: &PondTensor) -> u32 {
        x.frac
    }

    /// An owner among the servers shares with the other server through their common PRG: no
    /// message. The producer as owner derives server 0's share from their seed and sends
    /// server 1 the rest.
    async fn input(
        &self,
        ctx: &Ctx,
        owner: PartyId,
        value: Option<&RingTensor>,
        shape: &[usize],
        frac: u32,
    ) -> Result<PondTensor, ProtocolError> {
        let ctx = ctx.child("input");
        let me = ctx.me();
        if me == owner {
            let v = value
                .ok_or_else(|| bad(&ctx, format!("{owner} owns this input but has no value")))?;
            same_shape(&ctx, v.shape(), shape)?;
        }
        let share = match (owner, me) {
            (o, m) if is_server(o) && m == o => {
                let other = if o == P0 { P1 } else { P0 };
                let r = RingTensor::random(shape, &mut ctx.prg_with(other));
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
        Ok(PondTensor::new(shape, frac, share))
    }

    async fn reveal(
        &self,
        ctx: &Ctx,
        x: &PondTensor,
        to: PartyId,
    ) -> Result<Option<RingTensor>, ProtocolError> {
        let ctx = ctx.child("reveal");
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

    fn add(&self, ctx: &Ctx, x: &PondTensor, y: &PondTensor) -> Result<PondTensor, ProtocolError> {
        same_frac(ctx, x.frac, y.frac)?;
        same_shape(ctx, &x.shape, &y.shape)?;
        Ok(PondTensor::new(
            &x.shape,
            x.frac,
            x.share
                .as_ref()
                .zip(y.share.as_ref())
                .map(|(a, b)| a.add(b)),
        ))
    }

    fn sub(&self, ctx: &Ctx, x: &PondTensor, y: &PondTensor) -> Result<PondTensor, ProtocolError> {
        same_frac(ctx, x.frac, y.frac)?;
        same_shape(ctx, &x.shape, &y.shape)?;
        Ok(PondTensor::new(
            &x.shape,
            x.frac,
            x.share
                .as_ref()
                .zip(y.share.as_ref())
                .map(|(a, b)| a.sub(b)),
        ))
    }

    fn add_bias(
        &self,
        ctx: &Ctx,
        x: &PondTensor,
        b: &PondTensor,
    ) -> Result<PondTensor, ProtocolError> {
        same_frac(ctx, x.frac, b.frac)?;
        check_bias(ctx, &x.shape, &b.shape)?;
        Ok(PondTensor::new(
            &x.shape,
            x.frac,
            x.share
                .as_ref()
                .zip(b.share.as_ref())
                .map(|(a, b)| a.add_rows(b)),
        ))
    }

    fn add_public(&self, ctx: &Ctx, x: &PondTensor, c: f64) -> Result<PondTensor, ProtocolError> {
        let e = encode_public(ctx, c, x.frac)?;
        let server0 = ctx.me() == P0;
        Ok(x.map_share(&x.shape, x.frac, |s| {
            if server0 {
                s.map(|v| v.wrapping_add(e))
            } else {
                s.clone()
            }
        }))
    }

    fn mul_public(&self, ctx: &Ctx, x: &PondTensor, c: f64) -> Result<PondTensor, ProtocolError> {
        let plan = ctx
            .fixed()
            .constant_plan(c)
            .map_err(|e| plan_error(ctx, e))?;
        let j = ctx.me().index();
        Ok(x.map_share(&x.shape, x.frac, |s| {
            let pre = truncate_share(s, plan.pre_shift, j).scale(plan.factor);
            truncate_share(&pre, plan.post_shift, j)
        }))
    }

    fn reshape(&self, x: &PondTensor, shape: &[usize]) -> PondTensor {
        x.map_share(shape, x.frac, |s| s.clone().reshape(shape))
    }

    fn sum_pool(&self, x: &PondTensor, k: usize) -> PondTensor {
        let s = &x.shape;
        let out = [s[0], s[1] / k, s[2] / k, s[3]];
        x.map_share(&out, x.frac, |v| v.sum_pool(k))
    }

    async fn mul(
        &self,
        ctx: &Ctx,
        x: &PondTensor,
        y: &PondTensor,
    ) -> Result<PondTensor, ProtocolError> {
        same_shape(ctx, &x.shape, &y.shape)?;
        triples::beaver(&ctx.child("mul"), x, y, &x.shape.clone(), |a, b| a.mul(b)).await
    }

    async fn matmul(
        &self,
        ctx: &Ctx,
        x: &PondTensor,
        y: &PondTensor,
    ) -> Result<PondTensor, ProtocolError> {
        let out = check_matmul(ctx, &x.shape, &y.shape)?;
        triples::beaver(&ctx.child("matmul"), x, y, &out, |a, b| a.matmul(b)).await
    }

    async fn conv2d(
        &self,
        ctx: &Ctx,
        x: &PondTensor,
        f: &PondTensor,
        stride: usize,
        padding: Padding,
    ) -> Result<PondTensor, ProtocolError> {
        let out = check_conv(ctx, &x.shape, &f.shape, stride, padding)?;
        triples::beaver(&ctx.child("conv2d"), x, f, &out, |a, b| {
            a.conv2d(b, stride, padding)
        })
        .await
    }

    async fn relu(&self, ctx: &Ctx, x: &PondTensor) -> Result<PondTensor, ProtocolError> {
        poly_eval(self, &ctx.child("relu"), x, &self.relu).await
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &PondTensor,
        k: usize,
    ) -> Result<PondTensor, ProtocolError> {
        check_pool(ctx, &x.shape, k)?;
        Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "Pond has no exact comparison, so no max pooling: use average pooling, or \
                     --protocol securenn"
                .into(),
        })
    }
}
