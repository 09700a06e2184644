//! SelectShare (SecureNN, Algorithm 2): shares of (1 - α)x + αy for a shared bit α, by one
//! multiplication α·(y - x). The bit is an integer share (0 or 1), so no truncation: the
//! selected value is exact. Cost: 40 bytes per element (one 1×1 MatMul), one round.

use crate::channel::{Ctx, ProtocolError};
use crate::protocol::beaver::{Product, beaver_many};
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, refresh, sub};

/// Several selections with their products in one flight: for each (α, x, y), x + α(y - x).
pub async fn select_shares(
    ctx: &Ctx,
    selections: &[(&SharedTensor, &SharedTensor, &SharedTensor)],
    costing: Costing,
) -> Result<Vec<SharedTensor>, ProtocolError> {
    let ctx = ctx.child("select_share");
    ctx.shape(&[selections
        .iter()
        .map(|(a, _, _)| a.shape().iter().product::<usize>())
        .sum()]);
    let diffs = selections
        .iter()
        .map(|(_, x, y)| sub(&ctx, y, x))
        .collect::<Result<Vec<_>, _>>()?;
    let products: Vec<Product> = selections
        .iter()
        .zip(&diffs)
        .map(|((alpha, _, _), d)| Product::elementwise(alpha, d))
        .collect();
    let c = beaver_many(&ctx, &products, costing).await?;
    selections
        .iter()
        .zip(c)
        .map(|((_, x, _), c)| Ok(refresh(&ctx, &crate::protocol::shared::add(&ctx, x, &c)?)))
        .collect()
}

/// One selection: x where α = 0, y where α = 1.
pub async fn select_share(
    ctx: &Ctx,
    alpha: &SharedTensor,
    x: &SharedTensor,
    y: &SharedTensor,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    Ok(select_shares(ctx, &[(alpha, x, y)], costing)
        .await?
        .pop()
        .expect("one selection"))
}
