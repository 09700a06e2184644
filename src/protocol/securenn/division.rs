//! Division (SecureNN, Algorithm 8): shares of x/y at the session's fixed-point precision, for
//! 0 ≤ x < y, by long division: one quotient bit per iteration, from the most significant,
//! each a DReLU of the remainder test z_i = x·2^f - u - 2^i·y and one multiplication β_i·2^i·y.
//! l_D = f iterations (13 by default), so the quotient carries f fractional bits.
//!
//! Cost per element: (664 + 40)·l_D bytes (9,152 for l_D = 13; the public C++ code uses full
//! triples, 824 per iteration) in 9·l_D rounds (the paper counts 10 per iteration).

use super::relu::drelu;
use crate::channel::{Ctx, ProtocolError};
use crate::protocol::beaver::{Product, beaver_many};
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, add, refresh, sub};
use crate::protocol::{same_frac, same_shape};

/// x / y elementwise, for shared fixed-point 0 ≤ x < y with |x|·2^f < 2^62.
pub async fn divide(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    same_shape(ctx, x.shape(), y.shape())?;
    same_frac(ctx, x.frac(), y.frac())?;
    let ctx = ctx.child("division");
    let f = ctx.fixed().frac_bits;
    ctx.shape(&[x.shape().iter().product(), f as usize]);
    let shape = x.shape().to_vec();
    // Numerator x·2^f, so the integer quotient has f fractional bits.
    let num = x.map_share(&shape, 0, |s| s.scale(1 << f));
    let den = y.with_frac(0);
    let mut u = x.map_share(&shape, 0, |s| s.scale(0));
    let mut q = u.clone();
    for i in (0..f).rev() {
        let it = ctx.child("bit");
        let shifted = den.map_share(&shape, 0, |s| s.scale(1 << i));
        let z = sub(&it, &sub(&it, &num, &u)?, &shifted)?;
        let beta = drelu(&it, &refresh(&it, &z), costing).await?;
        let v = beaver_many(&it, &[Product::elementwise(&beta, &shifted)], costing)
            .await?
            .pop()
            .expect("one product");
        u = add(&it, &u, &v)?;
        q = add(&it, &q, &beta.map_share(&shape, 0, |s| s.scale(1 << i)))?;
    }
    Ok(refresh(&ctx, &q.with_frac(f)))
}
