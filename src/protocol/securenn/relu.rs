//! DReLU (SecureNN, Algorithm 6) and ReLU (Algorithm 7). Under [`Costing::PAPER`] as the paper
//! computes them; under [`Costing::OPTIMISED`] by [`narrow_drelu`] (3 rounds, fewer bytes, on
//! the tensor's declared comparison width).
//!
//! DReLU(a) = 1 - MSB(a): double a (so it is even, never 2^64 - 1, and its MSB is a's for
//! |a| < 2^62), ShareConvert it to the odd ring, ComputeMSB. The output is an integer share of 0
//! or 1, not fixed-point 1.0, so ReLU = DReLU(a)·a needs no truncation and is exact.
//!
//! Costs per element: DReLU 664 bytes (ShareConvert 304 + ComputeMSB 360) in 8 rounds (P2 deals
//! ComputeMSB's randomness before ShareConvert starts); ReLU 704 bytes in 9 rounds (the paper
//! counts 10: its multiplication takes 2 because it counts P2's triple message, which here
//! travels in parallel with the servers' exchange).

use super::compute_msb;
use super::narrow_drelu;
use super::share_convert::share_convert;
use crate::channel::{Ctx, P2, ProtocolError};
use crate::protocol::beaver::{Product, beaver_many};
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, refresh};
use crate::ring::RingTensor;

/// DReLU: integer shares of 1 where a ≥ 0 and 0 where a < 0.
///
/// Domain: |a| < 2^62 as a signed ring element (|value| < 2^49 at 13 fractional bits); beyond it
/// the doubled value's top bit is not a's sign and the answer is wrong (tested).
pub async fn drelu(
    ctx: &Ctx,
    a: &SharedTensor,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    if costing.narrow_comparisons() {
        return narrow_drelu::drelu(ctx, a, a.compare_width()).await;
    }
    let ctx = ctx.child("drelu");
    ctx.shape(a.shape());
    let shape = a.shape().to_vec();
    let n = a.shape().iter().product();
    let dealt = compute_msb::deal(&ctx, n, costing)?;
    let doubled = a.share().map(|s| s.scale(2).reshape(&[n]));
    let y = share_convert(&ctx, n, doubled.as_ref(), costing).await?;
    let msb = compute_msb::run(dealt, y.as_ref(), costing).await?;
    // 1 - MSB, the public 1 held by P1 (j - α_j), as the paper writes it.
    let j = ctx.me().0 as u64;
    let out = (ctx.me() != P2).then(|| {
        RingTensor::filled(&[n], j)
            .sub(msb.share().expect("server"))
            .reshape(&shape)
    });
    Ok(refresh(&ctx, &SharedTensor::new(&shape, 0, out)))
}

/// ReLU(a) = DReLU(a)·a, exact. Returns the ReLU and the DReLU bits (kept for backprop).
pub async fn relu_with_drelu(
    ctx: &Ctx,
    a: &SharedTensor,
    costing: Costing,
) -> Result<(SharedTensor, SharedTensor), ProtocolError> {
    if costing.narrow_comparisons() {
        return narrow_drelu::relu_with_drelu(ctx, a, a.compare_width()).await;
    }
    let ctx = ctx.child("relu");
    ctx.shape(a.shape());
    let bits = drelu(&ctx, a, costing).await?;
    let y = beaver_many(&ctx, &[Product::elementwise(&bits, a)], costing)
        .await?
        .pop()
        .expect("one product");
    Ok((refresh(&ctx, &y), bits))
}

pub async fn relu(
    ctx: &Ctx,
    a: &SharedTensor,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    Ok(relu_with_drelu(ctx, a, costing).await?.0)
}
