//! Division (SecureNN, Algorithm 8): shares of x/y at the session's fixed-point precision, for
//! 0 ≤ x < y, by long division: one quotient bit per iteration, from the most significant,
//! each a DReLU of the remainder test z_i = x·2^f - u - 2^i·y and one multiplication β_i·2^i·y.
//! l_D = f iterations (13 by default), so the quotient carries f fractional bits.
//!
//! Cost per element: (664 + 40)·l_D bytes (9,152 for l_D = 13; the public C++ code uses full
//! triples, 824 per iteration) in 9·l_D rounds (the paper counts 10 per iteration).
//!
//! [`Radix::Four`] finds two quotient bits per iteration: the three remainder tests
//! z - k·2^p·y for k = 1, 2, 3 in one DReLU (their bits are monotone, so the digit is their
//! sum) and one multiplication digit·2^p·y. An odd f starts with one radix-2 bit. The quotient
//! is the same, floor(x·2^f / y), in ⌈f/2⌉ iterations instead of f (7 instead of 13: 63 rounds
//! instead of 117) for 3·664 + 40 = 2,032 bytes per element and iteration (12,896 in all for
//! f = 13, against 9,152): on a WAN the rounds cost more than the bytes.

use super::relu::drelu;
use crate::channel::{Ctx, ProtocolError};
use crate::protocol::beaver::{Product, beaver_many};
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, add, refresh, sub};
use crate::protocol::{same_frac, same_shape};
use crate::ring::RingTensor;

/// Quotient digits per iteration of the long division.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Radix {
    /// Algorithm 8: one bit per iteration, f iterations.
    Two,
    /// Two bits per iteration, ⌈f/2⌉ iterations, three comparisons each.
    Four,
}

/// x / y elementwise, for shared fixed-point 0 ≤ x < y with |x|·2^f < 2^62, by Algorithm 8.
pub async fn divide(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    divide_radix(ctx, x, y, costing, Radix::Two).await
}

/// x / y as [`divide`], with `radix` quotient digits per iteration (the same quotient).
pub async fn divide_radix(
    ctx: &Ctx,
    x: &SharedTensor,
    y: &SharedTensor,
    costing: Costing,
    radix: Radix,
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
    // (bit position, bits) of each digit, most significant first.
    let mut digits = Vec::new();
    let mut p = f;
    if radix == Radix::Four && f % 2 == 1 {
        p -= 1;
        digits.push((p, 1));
    }
    while p > 0 {
        let width = match radix {
            Radix::Two => 1,
            Radix::Four => 2,
        };
        p -= width;
        digits.push((p, width));
    }
    for (p, width) in digits {
        let it = ctx.child("bit");
        let shifted = den.map_share(&shape, 0, |s| s.scale(1 << p));
        let rem = sub(&it, &num, &u)?;
        // Tests rem - k·2^p·y for k = 1 .. 2^width - 1, side by side in one DReLU.
        let tests: Vec<SharedTensor> = (1..1u64 << width)
            .map(|k| sub(&it, &rem, &shifted.map_share(&shape, 0, |s| s.scale(k))))
            .collect::<Result<_, _>>()?;
        let beta = match &tests[..] {
            [z] => drelu(&it, &refresh(&it, z), costing).await?,
            _ => {
                let n: usize = shape.iter().product();
                let joined = SharedTensor::new(
                    &[tests.len() * n],
                    0,
                    tests
                        .iter()
                        .map(|t| t.share().map(|s| s.as_slice().to_vec()))
                        .collect::<Option<Vec<_>>>()
                        .map(|parts| RingTensor::from_vec(&[tests.len() * n], parts.concat())),
                );
                let bits = drelu(&it, &refresh(&it, &joined), costing).await?;
                // The bits are monotone in k, so the digit is their sum.
                bits.map_share(&shape, 0, |s| {
                    let mut d = RingTensor::zeros(&shape);
                    for part in s.as_slice().chunks_exact(n) {
                        d.add_assign(&RingTensor::from_vec(&shape, part.to_vec()));
                    }
                    d
                })
            }
        };
        let v = beaver_many(&it, &[Product::elementwise(&beta, &shifted)], costing)
            .await?
            .pop()
            .expect("one product");
        u = add(&it, &u, &v)?;
        q = add(&it, &q, &beta.map_share(&shape, 0, |s| s.scale(1 << p)))?;
    }
    Ok(refresh(&ctx, &q.with_frac(f)))
}
