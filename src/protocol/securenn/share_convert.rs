//! ShareConvert (SecureNN, Algorithm 4): Z_{2^64} shares of a (a ≠ 2^64 - 1) to Z_{2^64-1}
//! shares of the same value, by computing θ = wrap(a_0, a_1, 2^64) in Z_{2^64-1} and
//! subtracting it (2^64 ≡ 1 there).
//!
//! P0 and P1 mask a with a common random r (θ = β_0 + β_1 - α + δ + η - 1, where β_j are the
//! local wraps of a_j + r_j, α = wrap(r_0, r_1), δ = wrap(ã_0, ã_1) computed by P2, and
//! η = (x > r - 1) = "a + r did not wrap" from PrivateCompare). When r = 0, r - 1 wraps and the
//! comparison would say no; the parties then take η = 1 (the paper's footnote 7).
//!
//! Messages per element: ã_j to P2 (2 × 8 B), P2's Z_67 bit shares of x and share of δ
//! (2 × 72 B), PrivateCompare (128 B), P2's shares of η' (2 × 8 B): 304 bytes in 4 rounds.
//! Under [`Costing::OPTIMISED`] P0 draws its dealt shares from the P0-P2 seed instead
//! ([`Costing::derive_dealt_shares`]): 224 bytes, the same 4 rounds.

use super::bits::{L_BITS, bit_shares, common_prg, dealer_prg, p0_dealt_prg, random_bits, wrap};
use super::private_compare::private_compare;
use crate::channel::{Ctx, P0, P1, P2, ProtocolError, Z67Wire};
use crate::protocol::costing::Costing;
use crate::ring::{OddTensor, RingTensor, Z67Vec, odd_add, odd_neg, odd_reduce, odd_sub};
use rand_core::Rng;

/// The common randomness of one ShareConvert, drawn from the P0-P1 seed (tests may force it).
#[derive(Clone, Debug)]
pub struct ScRandomness {
    /// The mask r, known to both servers.
    pub r: Vec<u64>,
    /// P0's share of r (P1's is r - r0).
    pub r0: Vec<u64>,
    /// The PrivateCompare bit η''.
    pub eta2: Vec<u8>,
}

impl ScRandomness {
    pub fn draw<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Self {
        let r = crate::ring::random_u64s(rng, n);
        let r0 = crate::ring::random_u64s(rng, n);
        let eta2 = random_bits(n, rng);
        Self { r, r0, eta2 }
    }
}

/// Convert `a` (P0, P1: their Z_{2^64} shares; P2: `None`) of `n` elements; returns the
/// Z_{2^64-1} shares (P2: `None`).
pub async fn share_convert(
    ctx: &Ctx,
    n: usize,
    a: Option<&RingTensor>,
    costing: Costing,
) -> Result<Option<OddTensor>, ProtocolError> {
    share_convert_with(ctx, n, a, None, costing).await
}

/// [`share_convert`] with the servers' common randomness given (for corner-case tests); `None`
/// draws it from the P0-P1 seed.
pub async fn share_convert_with(
    ctx: &Ctx,
    n: usize,
    a: Option<&RingTensor>,
    forced: Option<ScRandomness>,
    costing: Costing,
) -> Result<Option<OddTensor>, ProtocolError> {
    let derived = costing.derive_dealt_shares();
    let ctx = ctx.child("share_convert");
    ctx.shape(&[n]);
    let me = ctx.me();
    let shape = vec![n];
    if me == P2 {
        // Step 2: reconstruct x = a + r, deal its bits and δ = wrap(ã_0, ã_1).
        let t0: RingTensor = ctx.recv(P0, &shape).await?;
        let t1: RingTensor = ctx.recv(P1, &shape).await?;
        let x = t0.add(&t1);
        let delta: Vec<u64> = t0
            .as_slice()
            .iter()
            .zip(t1.as_slice())
            .map(|(&a, &b)| wrap(a, b))
            .collect();
        // P0's shares: from the P0-P2 seed (not sent) or P2's own.
        let mut rng = dealer_prg(&ctx, derived);
        let (b0, b1) = bit_shares(x.as_slice(), &mut rng);
        let d0 = OddTensor::random(&shape, &mut rng);
        let d1: Vec<u64> = delta
            .iter()
            .zip(d0.as_slice())
            .map(|(&d, &r)| odd_sub(d, r))
            .collect();
        let packed = costing.pack_z67();
        let z67 = |values| Z67Wire { values, packed };
        if !derived {
            ctx.send(P0, &(z67(b0), d0))?;
        }
        ctx.send(P1, &(z67(b1), OddTensor::from_vec(&shape, d1)))?;
        // Steps 3-4: learn η' and share it over Z_{2^64-1}.
        let eta_p = private_compare(&ctx, n, None, &[], &[], costing)
            .await?
            .expect("P2 learns η'");
        let e0 = OddTensor::random(&shape, &mut rng);
        let e1: Vec<u64> = eta_p
            .iter()
            .zip(e0.as_slice())
            .map(|(&e, &r)| odd_sub(e as u64, r))
            .collect();
        if !derived {
            ctx.send(P0, &e0)?;
        }
        ctx.send(P1, &OddTensor::from_vec(&shape, e1))?;
        return Ok(None);
    }
    let a = a.expect("servers hold shares");
    assert_eq!(a.len(), n, "ShareConvert input size");
    let j = me.0 as u64;
    let mut prg = common_prg(&ctx);
    let rand = forced.unwrap_or_else(|| ScRandomness::draw(n, &mut prg));
    let r_mine: Vec<u64> = if j == 0 {
        rand.r0.clone()
    } else {
        rand.r
            .iter()
            .zip(&rand.r0)
            .map(|(&r, &r0)| r.wrapping_sub(r0))
            .collect()
    };
    // Step 1: ã_j = a_j + r_j, β_j = wrap(a_j, r_j).
    let at: Vec<u64> = a
        .as_slice()
        .iter()
        .zip(&r_mine)
        .map(|(&x, &r)| x.wrapping_add(r))
        .collect();
    let beta: Vec<u64> = a
        .as_slice()
        .iter()
        .zip(&r_mine)
        .map(|(&x, &r)| wrap(x, r))
        .collect();
    ctx.send(P2, &RingTensor::from_vec(&shape, at))?;
    // P0 draws what P2 would have sent it, in P2's order (bit shares, δ, then η').
    let mut dealt = (derived && me == P0).then(|| p0_dealt_prg(&ctx));
    let (bits, delta): (Z67Vec, OddTensor) = match &mut dealt {
        Some(rng) => (
            Z67Vec::random(n * L_BITS, rng),
            OddTensor::random(&shape, rng),
        ),
        None => {
            let (bits, delta): (Z67Wire, OddTensor) = ctx
                .recv(P2, &((n * L_BITS, costing.pack_z67()), shape.clone()))
                .await?;
            (bits.values, delta)
        }
    };
    // Step 3: PrivateCompare(x, r - 1, η'').
    let r_minus_1: Vec<u64> = rand.r.iter().map(|r| r.wrapping_sub(1)).collect();
    private_compare(&ctx, n, Some(&bits), &r_minus_1, &rand.eta2, costing).await?;
    let eta_p: OddTensor = match &mut dealt {
        Some(rng) => OddTensor::random(&shape, rng),
        None => ctx.recv(P2, &shape).await?,
    };
    // Steps 5-7.
    let u = OddTensor::random(&shape, &mut prg);
    let out = (0..n)
        .map(|e| {
            let eta2 = rand.eta2[e] as u64;
            let ep = eta_p.as_slice()[e];
            // η_j = η'_j + (1-j)η'' - 2η''η'_j; with r = 0 the parties hold η = 1 instead.
            let eta = if rand.r[e] == 0 {
                1 - j
            } else {
                let t = odd_add(ep, (1 - j) * eta2);
                if eta2 == 1 {
                    odd_sub(t, odd_add(ep, ep))
                } else {
                    t
                }
            };
            let alpha = wrap(rand.r0[e], rand.r[e].wrapping_sub(rand.r0[e]));
            // θ_j = β_j + (1-j)(-α - 1) + δ_j + η_j
            let mut theta = odd_add(beta[e], odd_add(delta.as_slice()[e], eta));
            if j == 0 {
                theta = odd_sub(theta, alpha + 1);
            }
            // y_j = a_j - θ_j + u_j (u: zero shares over Z_{2^64-1})
            let uj = if j == 0 {
                u.as_slice()[e]
            } else {
                odd_neg(u.as_slice()[e])
            };
            odd_add(odd_sub(odd_reduce(a.as_slice()[e]), theta), uj)
        })
        .collect();
    Ok(Some(OddTensor::from_vec(&shape, out)))
}
