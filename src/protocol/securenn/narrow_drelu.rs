//! DReLU and ReLU on fewer bits: one masked opening modulo 2^m and one PrivateCompare (SecureNN
//! Algorithm 3) on m − 1 bits, in 3 rounds, replacing ShareConvert and ComputeMSB (Algorithms
//! 4-6) under [`Costing::OPTIMISED`]. The wrap-of-the-low-bits idea is the one CrypTFlow2,
//! Cheetah and SPU use to cut comparison bit-widths; here it runs on SecureNN's helper.
//!
//! # The protocol, for a width m (2 ≤ m ≤ 64) such that every |a| < 2^(m−1)
//!
//! Let k = m − 1 and y = a + 2^k. Then y ∈ [1, 2^m) as an integer and DReLU(a) = [a ≥ 0] is
//! y's bit k. Reduction modulo 2^m is a ring homomorphism from Z_{2^64}, so the servers can
//! work on their shares' low m bits.
//!
//! 1. P2 draws r = r_0 + r_1 (r_j from its seed with server j, so nothing travels) and deals
//!    Z_67 shares of the k low bits r_l of r mod 2^m (P0's share from the P0-P2 seed; P1's is
//!    sent). Server j opens c_j = y_j + r_j mod 2^m to the other: c = y + r mod 2^m, uniform
//!    since r is uniform and each server misses one of its two parts.
//! 2. Write c = c_h·2^k + c_l and r mod 2^m = r_h·2^k + r_l. Subtracting r from c borrows
//!    from bit k exactly when r_l > c_l, so y's bit k is c_h ⊕ r_h ⊕ [r_l > c_l]. The servers
//!    run PrivateCompare on the shared bits of r_l against the public c_l with a common random
//!    bit β: P2 learns β' = β ⊕ [r_l > c_l], uniform to it, and nothing else.
//! 3. P2 knows r_h, so it shares d = β' ⊕ r_h; the servers know t = β ⊕ c_h, and
//!    DReLU = d ⊕ t = d + t − 2td is local.
//!
//! ReLU(a) = a·DReLU(a) = t ? a − a·d : a·d. For a·d, each server also sends P2 its share of
//! z = a + s (s from the P0-P1 seed, uniform to P2) in step 1; P2 shares w = d·z beside d, and
//! a·d = w − s·d is local (s is public to the servers). No Beaver triple: the product with a
//! bit the helper knows costs 3 ring elements where a product of two shared values costs 5.
//!
//! # Why it is exact
//!
//! Nothing is approximated: if |a| < 2^(m−1) the output is DReLU(a) for every a and every draw
//! of the randomness (PrivateCompare's corner β = 1, c_l = 2^k − 1 is handled there; r = 0 has
//! no special case here because nothing is compared against r − 1). At m = 64 every ring
//! element qualifies (y = a + 2^63 covers the whole signed range), which is one more value than
//! Algorithm 6's doubling allows (it needs |a| < 2^62). Beyond the bound the answer is
//! wrong, tested at the boundary: the width must come from a sound bound (the range analysis of
//! [`crate::nn::range`]), never from observed values.
//!
//! # Cost per element
//!
//! DReLU: c (2 × m bits), P1's bit shares (k Z_67 values, packed ten per eight bytes),
//! PrivateCompare (2 × k values), P1's share of d (8 B): at m = 64 about 175 B and at m = 24
//! about 70 B, against 419 B for Algorithms 4-6 with the same optimisations; 3 rounds instead
//! of 8. ReLU adds z (2 × 8 B) and P1's share of w (8 B): about 199 B at m = 64, against 459 B
//! and 9 rounds.

use super::bits::{L_BITS, bit_shares_width, common_prg, low_mask, random_bits};
use super::compute_msb::xor_public;
use super::private_compare::private_compare_width;
use crate::channel::{Ctx, LowBits, P0, P1, P2, ProtocolError, Z67Wire};
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, other_server, refresh};
use crate::ring::{RingTensor, Z67Vec};

/// Narrowest comparison: one bit of magnitude and the sign.
pub const MIN_WIDTH: u32 = 2;

/// DReLU of `a` known to satisfy |a| < 2^(width−1): integer shares of [a ≥ 0].
pub async fn drelu(ctx: &Ctx, a: &SharedTensor, width: u32) -> Result<SharedTensor, ProtocolError> {
    let ctx = ctx.child("drelu");
    Ok(run(&ctx, a, width, false).await?.0)
}

/// ReLU and DReLU of `a` known to satisfy |a| < 2^(width−1).
pub async fn relu_with_drelu(
    ctx: &Ctx,
    a: &SharedTensor,
    width: u32,
) -> Result<(SharedTensor, SharedTensor), ProtocolError> {
    let ctx = ctx.child("relu");
    let (bits, relu) = run(&ctx, a, width, true).await?;
    Ok((relu.expect("asked for the ReLU"), bits))
}

async fn run(
    ctx: &Ctx,
    a: &SharedTensor,
    width: u32,
    with_relu: bool,
) -> Result<(SharedTensor, Option<SharedTensor>), ProtocolError> {
    assert!(
        (MIN_WIDTH..=L_BITS as u32).contains(&width),
        "comparison width {width} outside {MIN_WIDTH}..=64"
    );
    ctx.shape(a.shape());
    let shape = a.shape().to_vec();
    let n: usize = shape.iter().product();
    let (m, k) = (width as usize, width as usize - 1);
    let (mask_m, mask_k) = (low_mask(m), low_mask(k));
    let flat = vec![n];
    let me = ctx.me();
    // Draw order on every pair stream: r_j, then P0's dealt bit shares, then its shares of d, w.
    if me == P2 {
        let r0 = RingTensor::random(&flat, &mut ctx.prg_with(P0));
        let r1 = RingTensor::random(&flat, &mut ctx.prg_with(P1));
        let r: Vec<u64> = r0.add(&r1).as_slice().iter().map(|v| v & mask_m).collect();
        let low: Vec<u64> = r.iter().map(|v| v & mask_k).collect();
        let (_, b1) = bit_shares_width(&low, k, &mut ctx.prg_with(P0));
        ctx.send(
            P1,
            &Z67Wire {
                values: b1,
                packed: true,
            },
        )?;
        let z = if with_relu {
            let z0: RingTensor = ctx.recv(P0, &flat).await?;
            let z1: RingTensor = ctx.recv(P1, &flat).await?;
            Some(z0.add(&z1))
        } else {
            None
        };
        let bp = private_compare_width(ctx, n, k, None, &[], &[], Costing::OPTIMISED)
            .await?
            .expect("P2 learns β'");
        let d: Vec<u64> = bp
            .iter()
            .zip(&r)
            .map(|(&b, &rv)| b as u64 ^ (rv >> k))
            .collect();
        let d = RingTensor::from_vec(&flat, d);
        let mut rng = ctx.prg_with(P0);
        let d1 = d.sub(&RingTensor::random(&flat, &mut rng));
        match z {
            None => ctx.send(P1, &d1)?,
            Some(z) => {
                let w1 = d.mul(&z).sub(&RingTensor::random(&flat, &mut rng));
                ctx.send(P1, &(d1, w1))?;
            }
        }
        let none = SharedTensor::new(&shape, 0, None);
        let relu = with_relu.then(|| SharedTensor::new(&shape, a.frac(), None));
        return Ok((none, relu));
    }
    let share = a.share().expect("servers hold shares");
    let j = me.0 as u64;
    let other = other_server(me);
    let rj = RingTensor::random(&flat, &mut ctx.prg_with(P2));
    let half = 1u64 << k;
    let cj: Vec<u64> = share
        .as_slice()
        .iter()
        .zip(rj.as_slice())
        .map(|(&v, &r)| v.wrapping_add(r).wrapping_add(half * (1 - j)) & mask_m)
        .collect();
    ctx.send(
        other,
        &LowBits {
            values: cj.clone(),
            width,
        },
    )?;
    let mut common = common_prg(ctx);
    let s = if with_relu {
        // z_j = a_j + s_j; s = s_0 + s_1 is public to the servers, uniform to P2.
        let s0 = RingTensor::random(&flat, &mut common);
        let s1 = RingTensor::random(&flat, &mut common);
        let sj = if j == 0 { &s0 } else { &s1 };
        ctx.send(P2, &share.clone().reshape(&flat).add(sj))?;
        Some(s0.add(&s1))
    } else {
        None
    };
    let beta = random_bits(n, &mut common);
    // P0 draws what P2 would have sent it, from the P0-P2 seed.
    let p0 = me == P0;
    let bits: Z67Vec = match p0 {
        true => Z67Vec::random(n * k, &mut ctx.prg_with(P2)),
        false => {
            let w: Z67Wire = ctx.recv(P2, &(n * k, true)).await?;
            w.values
        }
    };
    let theirs: LowBits = ctx.recv(other, &(n, width)).await?;
    let c: Vec<u64> = cj
        .iter()
        .zip(&theirs.values)
        .map(|(&x, &y)| x.wrapping_add(y) & mask_m)
        .collect();
    let c_low: Vec<u64> = c.iter().map(|v| v & mask_k).collect();
    private_compare_width(ctx, n, k, Some(&bits), &c_low, &beta, Costing::OPTIMISED).await?;
    let (d, w) = match (p0, &s) {
        (true, _) => {
            let mut rng = ctx.prg_with(P2);
            let d = RingTensor::random(&flat, &mut rng);
            let w = s.is_some().then(|| RingTensor::random(&flat, &mut rng));
            (d, w)
        }
        (false, None) => (ctx.recv::<RingTensor>(P2, &flat).await?, None),
        (false, Some(_)) => {
            let (d, w): (RingTensor, RingTensor) =
                ctx.recv(P2, &(flat.clone(), flat.clone())).await?;
            (d, Some(w))
        }
    };
    // t = β ⊕ c_h, public to the servers; DReLU = d ⊕ t.
    let t: Vec<u64> = beta
        .iter()
        .zip(&c)
        .map(|(&b, &cv)| b as u64 ^ (cv >> k))
        .collect();
    let bits_out: Vec<u64> = d
        .as_slice()
        .iter()
        .zip(&t)
        .map(|(&dj, &tv)| xor_public(dj, tv, j))
        .collect();
    let drelu = refresh(
        ctx,
        &SharedTensor::new(&shape, 0, Some(RingTensor::from_vec(&shape, bits_out))),
    );
    let relu = match (w, s) {
        (Some(w), Some(s)) => {
            // a·d = w − s·d; ReLU = t ? a − a·d : a·d.
            let ad = w.sub(&s.mul(&d));
            let out: Vec<u64> = ad
                .as_slice()
                .iter()
                .zip(share.as_slice().iter())
                .zip(&t)
                .map(|((&p, &x), &tv)| if tv == 1 { x.wrapping_sub(p) } else { p })
                .collect();
            Some(refresh(
                &ctx.child("select"),
                &SharedTensor::new(&shape, a.frac(), Some(RingTensor::from_vec(&shape, out))),
            ))
        }
        _ => None,
    };
    Ok((drelu, relu))
}
