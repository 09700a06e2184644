//! ComputeMSB (SecureNN, Algorithm 5): Z_{2^64-1} shares of a to Z_{2^64} shares of MSB(a).
//!
//! In the odd ring MSB(a) = LSB(2a). P2 deals a random x with Z_67 shares of its bits and Z_{2^64}
//! shares of its LSB; the servers open r = 2a + x, and LSB(2a) = r[0] ⊕ x[0] ⊕ (x > r), the last
//! term (a wrap of the odd ring) from PrivateCompare. The XOR of γ = (x > r) and δ = x[0] ⊕ r[0]
//! takes one multiplication.
//!
//! The dealing does not depend on the input, so it is a separate step ([`deal`]) that DReLU
//! sends before ShareConvert; that is how the paper's DReLU takes 8 rounds, not 9. Standalone,
//! ComputeMSB takes the paper's 5 rounds (dealing, r, PrivateCompare, β', multiplication).
//!
//! Messages per element: P2's ⟨x⟩, 64 bit shares and ⟨x[0]⟩ (2 × 80 B), the exchange of r
//! (2 × 8 B), PrivateCompare (128 B), P2's shares of β' (2 × 8 B), one multiplication (40 B):
//! 360 bytes. Under [`Costing::OPTIMISED`] P0 draws its dealt shares from the P0-P2 seed
//! ([`Costing::derive_dealt_shares`]): 272 bytes, the same rounds.

use super::bits::{L_BITS, bit_shares, common_prg, dealer_prg, p0_dealt_prg, random_bits};
use super::private_compare::private_compare;
use crate::channel::{Ctx, P0, P1, P2, ProtocolError, Z67Wire};
use crate::protocol::beaver::{Product, beaver_many};
use crate::protocol::costing::Costing;
use crate::protocol::shared::{SharedTensor, other_server, zero_share};
use crate::ring::{ODD_MODULUS, OddTensor, RingTensor, Z67Vec, odd_add};

/// What a server needs from the dealing (received when the protocol runs).
pub struct Dealt {
    ctx: Ctx,
    n: usize,
    /// P2's random x (P2 only).
    x: Option<Vec<u64>>,
    /// P0's dealt shares come from the P0-P2 seed.
    derived: bool,
}

/// P2 samples x ∈ Z_{2^64-1} and sends each server ⟨x⟩ (odd ring), the Z_67 shares of x's bits
/// and ⟨x[0]⟩ (Z_{2^64}). Sends nothing on the servers; they receive in [`run`].
pub fn deal(ctx: &Ctx, n: usize, costing: Costing) -> Result<Dealt, ProtocolError> {
    let ctx = ctx.child("compute_msb");
    ctx.shape(&[n]);
    let derived = costing.derive_dealt_shares();
    let mut x = None;
    if ctx.me() == P2 {
        let shape = vec![n];
        let xs = OddTensor::random(&shape, &mut ctx.prg_local());
        // P0's shares: from the P0-P2 seed (not sent) or P2's own.
        let mut rng = dealer_prg(&ctx, derived);
        let x0 = OddTensor::random(&shape, &mut rng);
        let x1 = xs.sub(&x0);
        let (b0, b1) = bit_shares(xs.as_slice(), &mut rng);
        let lsb = RingTensor::from_vec(&shape, xs.as_slice().iter().map(|v| v & 1).collect());
        let l0 = RingTensor::random(&shape, &mut rng);
        let l1 = lsb.sub(&l0);
        let packed = costing.pack_z67();
        let z67 = |values| Z67Wire { values, packed };
        if !derived {
            ctx.send(P0, &(x0, z67(b0), l0))?;
        }
        ctx.send(P1, &(x1, z67(b1), l1))?;
        x = Some(xs.as_slice().to_vec());
    }
    Ok(Dealt { ctx, n, x, derived })
}

/// MSB of `a` (servers: their Z_{2^64-1} shares) as integer Z_{2^64} shares (0 or 1).
pub async fn compute_msb(
    ctx: &Ctx,
    n: usize,
    a: Option<&OddTensor>,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    let dealt = deal(ctx, n, costing)?;
    run(dealt, a, costing).await
}

/// The rest of ComputeMSB after [`deal`].
pub async fn run(
    dealt: Dealt,
    a: Option<&OddTensor>,
    costing: Costing,
) -> Result<SharedTensor, ProtocolError> {
    let Dealt { ctx, n, x, derived } = dealt;
    // The deal may have gone out in an earlier flight (DReLU sends it beside ShareConvert):
    // the rounds this op adds count from here.
    ctx.count_from_here();
    let me = ctx.me();
    let shape = vec![n];
    if me == P2 {
        let _ = x.expect("P2 dealt x");
        let bp = private_compare(&ctx, n, None, &[], &[], costing)
            .await?
            .expect("P2 learns β'");
        let b = RingTensor::from_vec(&shape, bp.iter().map(|&v| v as u64).collect());
        let b0 = RingTensor::random(&shape, &mut dealer_prg(&ctx, derived));
        if !derived {
            ctx.send(P0, &b0)?;
        }
        ctx.send(P1, &b.sub(&b0))?;
        // The helper's side of θ = γ·δ: two distinct operands, as on the servers.
        let (g, d) = (
            SharedTensor::new(&shape, 0, None),
            SharedTensor::new(&shape, 0, None),
        );
        beaver_many(&ctx, &[Product::elementwise(&g, &d)], costing).await?;
        return Ok(g);
    }
    let a = a.expect("servers hold shares");
    let j = me.0 as u64;
    // P0 draws what P2 would have sent it, in P2's order.
    let p0_derives = derived && me == P0;
    let (xj, bits, lsb): (OddTensor, Z67Vec, RingTensor) = if p0_derives {
        let mut rng = p0_dealt_prg(&ctx);
        (
            OddTensor::random(&shape, &mut rng),
            Z67Vec::random(n * L_BITS, &mut rng),
            RingTensor::random(&shape, &mut rng),
        )
    } else {
        let (xj, bits, lsb): (OddTensor, Z67Wire, RingTensor) = ctx
            .recv(
                P2,
                &(
                    shape.clone(),
                    (n * L_BITS, costing.pack_z67()),
                    shape.clone(),
                ),
            )
            .await?;
        (xj, bits.values, lsb)
    };
    // Steps 2-3: r_j = 2a_j + x_j in the odd ring; open r.
    let rj: Vec<u64> = a
        .as_slice()
        .iter()
        .zip(xj.as_slice())
        .map(|(&v, &x)| odd_add(odd_add(v, v), x))
        .collect();
    let rj = OddTensor::from_vec(&shape, rj);
    ctx.send(other_server(me), &rj)?;
    let r = rj.add(&ctx.recv::<OddTensor>(other_server(me), &shape).await?);
    debug_assert!(r.as_slice().iter().all(|&v| v != ODD_MODULUS));
    // Step 4: PrivateCompare(x, r, β).
    let beta = random_bits(n, &mut common_prg(&ctx));
    private_compare(&ctx, n, Some(&bits), r.as_slice(), &beta, costing).await?;
    let bp: RingTensor = if p0_derives {
        RingTensor::random(&shape, &mut p0_dealt_prg(&ctx))
    } else {
        ctx.recv(P2, &shape).await?
    };
    // Steps 6-7: γ = β ⊕ β' = (x > r), δ = x[0] ⊕ r[0].
    let gamma: Vec<u64> = bp
        .as_slice()
        .iter()
        .zip(&beta)
        .map(|(&b, &bt)| xor_public(b, bt as u64, j))
        .collect();
    let delta: Vec<u64> = lsb
        .as_slice()
        .iter()
        .zip(r.as_slice())
        .map(|(&l, &rv)| xor_public(l, rv & 1, j))
        .collect();
    let gamma = SharedTensor::new(&shape, 0, Some(RingTensor::from_vec(&shape, gamma)));
    let delta = SharedTensor::new(&shape, 0, Some(RingTensor::from_vec(&shape, delta)));
    // Steps 8-9: θ = γ·δ; α = γ + δ - 2θ (+ zero shares).
    let theta = beaver_many(&ctx, &[Product::elementwise(&gamma, &delta)], costing)
        .await?
        .pop()
        .expect("one product");
    let u = zero_share(&ctx, &shape).expect("servers");
    let out = gamma
        .share()
        .expect("server")
        .add(delta.share().expect("server"))
        .sub(&theta.share().expect("server").scale(2))
        .add(&u);
    Ok(SharedTensor::new(&shape, 0, Some(out)))
}

/// Shares of b ⊕ c for shared bit b (share `bj`) and public bit c: b + c - 2bc, with the public
/// c held by P1 (j = 1), as the paper writes j·c.
pub(crate) fn xor_public(bj: u64, c: u64, j: u64) -> u64 {
    bj.wrapping_add(j * c)
        .wrapping_sub(2u64.wrapping_mul(c).wrapping_mul(bj))
}
