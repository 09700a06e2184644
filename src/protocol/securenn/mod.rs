//! SecureNN (Wagh, Gupta, Chandran, PETS 2019): P0 and P1 hold additive shares over Z_{2^64},
//! P2 assists. Linear layers are Beaver products with PRF-derived triples (Algorithm 1, shared
//! with Pond in [`super::beaver`]); non-linear layers are exact, from secret-shared comparison:
//! PrivateCompare over Z_67 ([`private_compare`], Alg. 3), ShareConvert to the odd ring
//! ([`share_convert`], Alg. 4), ComputeMSB ([`compute_msb`], Alg. 5), DReLU and ReLU
//! ([`relu`], Alg. 6-7), SelectShare ([`select_share`], Alg. 2), Maxpool and its derivative
//! ([`maxpool`], Alg. 9, 10, 12) and Division ([`division`], Alg. 8).
//!
//! Comparison bits and max indices are integer shares (0/1, 0..n-1), so selections need no
//! truncation and can never drift by an ulp. Every operation ends with freshly re-randomised
//! shares (the paper's zero shares u_j), which costs no communication.

pub mod bits;
pub mod compute_msb;
pub mod division;
pub mod maxpool;
pub mod private_compare;
pub mod relu;
pub mod select_share;
pub mod share_convert;

use super::beaver::{MaskPolicy, beaver};
use super::shared::{self, SharedTensor, refresh};
use super::{Protocol, ProtocolError, check_conv, check_matmul, same_shape};
use crate::channel::{Ctx, PartyId};
use crate::ring::kernels::im2col;
use crate::ring::{Padding, RingTensor};
pub use maxpool::MaxStrategy;

/// What a convolution masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvMasking {
    /// The im2col matrix, as the paper (Conv2d = MatMul after im2col: the f² blow-up of the
    /// input travels).
    Im2col,
    /// The image itself (convolution is bilinear, so the blow-up stays local).
    Image,
}

/// The SecureNN backend.
#[derive(Clone, Copy, Debug)]
pub struct SecureNn {
    /// [`MaskPolicy::Fresh`] masks every operand of every product anew, as the paper counts;
    /// [`MaskPolicy::Reuse`] memoises masks (a weight is opened once per job, a comparison bit
    /// once for both selections of a max step).
    pub masks: MaskPolicy,
    /// Sequential maxima (the paper) or a balanced tree.
    pub max: MaxStrategy,
    pub conv: ConvMasking,
}

impl SecureNn {
    /// The paper's accounting: fresh masks, sequential maxima, masked im2col matrices. Every
    /// operation moves exactly the bytes of the paper's Tables 1-2.
    pub fn paper() -> Self {
        Self {
            masks: MaskPolicy::Fresh,
            max: MaxStrategy::Sequential,
            conv: ConvMasking::Im2col,
        }
    }

    /// Ours: reused masks, tree maxima, masked images. Same results, fewer bytes and rounds.
    pub fn optimised() -> Self {
        Self {
            masks: MaskPolicy::Reuse,
            max: MaxStrategy::Tree,
            conv: ConvMasking::Image,
        }
    }
}

impl Default for SecureNn {
    /// [`SecureNn::optimised`].
    fn default() -> Self {
        Self::optimised()
    }
}

impl Protocol for SecureNn {
    type Tensor = SharedTensor;

    fn name(&self) -> &'static str {
        "securenn"
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
        let ctx = ctx.child("mul");
        let z = beaver(&ctx, x, y, x.shape(), self.masks, |a, b| a.mul(b)).await?;
        Ok(refresh(&ctx, &z))
    }

    /// MatMul (Algorithm 1) with PRF-derived triples: (2mn + 2nv + mv)·8 bytes.
    async fn matmul(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        y: &SharedTensor,
    ) -> Result<SharedTensor, ProtocolError> {
        let out = check_matmul(ctx, x.shape(), y.shape())?;
        let ctx = ctx.child("matmul");
        let z = beaver(&ctx, x, y, &out, self.masks, |a, b| a.matmul(b)).await?;
        Ok(refresh(&ctx, &z))
    }

    /// Conv2d as MatMul of the masked image (the filter's im2col blow-up is local).
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
        let z = match self.conv {
            ConvMasking::Image => {
                beaver(&ctx, x, f, &out, self.masks, |a, b| {
                    a.conv2d(b, stride, padding)
                })
                .await?
            }
            ConvMasking::Im2col => {
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
                let fm = shared::reshape(f, &[cols, fs[3]]);
                let z = beaver(&ctx, &cm, &fm, &[rows, fs[3]], self.masks, |a, b| {
                    a.matmul(b)
                })
                .await?;
                shared::reshape(&z, &out)
            }
        };
        Ok(refresh(&ctx, &z))
    }

    async fn relu(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        relu::relu(ctx, x, self.masks).await
    }

    async fn maxpool(
        &self,
        ctx: &Ctx,
        x: &SharedTensor,
        k: usize,
    ) -> Result<SharedTensor, ProtocolError> {
        Ok(maxpool::maxpool(ctx, x, k, self.masks, self.max).await?.max)
    }

    async fn argmax(&self, ctx: &Ctx, x: &SharedTensor) -> Result<SharedTensor, ProtocolError> {
        Ok(maxpool::argmax(ctx, x, self.masks, self.max).await?.index)
    }
}
