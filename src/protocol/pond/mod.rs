//! Pond, tf-encrypted's SPDZ-style protocol (Dahl et al. 2018, `tf_encrypted/protocol/pond`):
//! two servers (P0, P1) hold additive shares over Z_{2^64}; a crypto producer (P2) deals Beaver
//! triples. Linear layers are exact, ReLU is a polynomial approximation, pooling is average
//! pooling; max pooling needs exact comparison, which Pond does not have.
//!
//! Costs (words of 8 bytes): masking a tensor x costs 2|x| (each server sends its masked share),
//! once per tensor (masks are memoised and reused); a product z costs |z| more (the producer's
//! dense triple share to server 1; server 0 derives its share from the P0-P2 seed). A matmul
//! m×n·n×v of two fresh tensors therefore moves (2mn + 2nv + mv)·8 bytes, in one round.
//! The shared-tensor machinery lives in [`super::shared`] and [`super::beaver`], shared with
//! SecureNN.

use super::beaver::{MaskPolicy, beaver};
use super::shared::{self, SharedTensor};
use super::{
    Protocol, ProtocolError, TFE_RELU_9, check_conv, check_matmul, check_pool, poly_eval,
    same_shape,
};
use crate::channel::{Ctx, PartyId};
use crate::ring::{Padding, RingTensor};

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

impl Protocol for Pond {
    type Tensor = SharedTensor;

    fn name(&self) -> &'static str {
        "pond"
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
        shared::input(ctx, owner, value, shape, frac).await
    }

    async fn reveal(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        to: PartyId,
    ) -> Result<Option<RingTensor>, ProtocolError> {
        shared::reveal(ctx, x, to).await
    }

    fn add(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        shared::add(ctx, x, y)
    }

    fn sub(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        shared::sub(ctx, x, y)
    }

    fn add_bias(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        b: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        shared::add_bias(ctx, x, b)
    }

    fn add_public(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        c: f64,
    ) -> Result<SharedTensor, ProtocolError> {
        shared::add_public(ctx, x, c)
    }

    fn mul_public(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        c: f64,
    ) -> Result<SharedTensor, ProtocolError> {
        shared::mul_public(ctx, x, c)
    }

    fn reshape(&self, x: &SharedTensor, shape: &[usize]) -> SharedTensor {
        shared::reshape(x, shape)
    }

    fn pad_last(&self, x: &SharedTensor, to: usize) -> SharedTensor {
        shared::pad_last(x, to)
    }

    fn sum_pool(&self, x: &SharedTensor, k: usize) -> SharedTensor {
        shared::sum_pool(x, k)
    }

    async fn mul(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        same_shape(ctx, x.shape(), y.shape())?;
        beaver(
            &ctx.child("mul"),
            x,
            y,
            x.shape(),
            MaskPolicy::Reuse,
            |a, b| a.mul(b),
        )
        .await
    }

    async fn matmul(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        let out = check_matmul(ctx, x.shape(), y.shape())?;
        beaver(
            &ctx.child("matmul"),
            x,
            y,
            &out,
            MaskPolicy::Reuse,
            |a, b| a.matmul(b),
        )
        .await
    }

    async fn conv2d(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        f: &SharedTensor,
        stride: usize,
        padding: Padding,
    ) -> Result<SharedTensor, ProtocolError> {
        let out = check_conv(ctx, x.shape(), f.shape(), stride, padding)?;
        beaver(
            &ctx.child("conv2d"),
            x,
            f,
            &out,
            MaskPolicy::Reuse,
            |a, b| a.conv2d(b, stride, padding),
        )
        .await
    }

    async fn relu(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        poly_eval(self, &ctx.child("relu"), x, &self.relu).await
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        k: usize,
    ) -> Result<SharedTensor, ProtocolError> {
        check_pool(ctx, x.shape(), k)?;
        Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "Pond has no exact comparison, so no max pooling: use average pooling (the \
                     -avg models), or --protocol securenn"
                .into(),
        })
    }

    async fn argmax(&self, ctx: &Ctx, _: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        Err(ProtocolError::Unsupported {
            op: ctx.path().to_string(),
            reason: "Pond has no exact comparison, so no secure argmax: reveal the logits to the \
                     data owner instead"
                .into(),
        })
    }
}
