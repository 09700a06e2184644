//! PrivateCompare (SecureNN, Algorithm 3): P0 and P1 hold Z_67 shares of the ℓ bits of x, a
//! common public r and a common random bit β; P2 learns β' = β ⊕ (x > r) and nothing else.
//!
//! For β = 0, c_i = r_i - x_i + 1 + Σ_{k>i} (x_k ⊕ r_k) is zero exactly at the first differing
//! bit when x > r; for β = 1 the same with t = r + 1 and the signs flipped detects x < t; the
//! corner β = 1, r = 2^ℓ - 1 plants exactly one zero. Every c_i is multiplied by a fresh nonzero
//! s_i and the ℓ values are shuffled by a fresh secret permutation π, all from the P0-P1 seed, so
//! P2 sees only whether a zero exists: not where. (tf-encrypted omits π and the public C++
//! code's parallel build uses constant s_i and π; both leak the position of the first differing
//! bit to P2.)
//!
//! Cost: each of P0, P1 sends ℓ Z_67 values per comparison (64 bytes; 52 packed in base 67
//! under [`Costing::OPTIMISED`], see [`Costing::pack_z67`]), one round.

use super::bits::{L_BITS, common_prg, uniform_below};
use crate::channel::{Ctx, P0, P1, P2, ProtocolError, Z67Wire};
use crate::protocol::costing::Costing;
use crate::ring::{P, Z67Vec};
use crate::share::Prg;
use rand_core::SeedableRng;

/// Comparisons per parallel chunk: at about 0.6 µs each on 64 bits, a chunk of 256 is ~150 µs
/// of work, well above a hand-off between threads (see [`crate::par`]).
const MIN_COMPARISONS_PER_CHUNK: usize = 256;

/// What P2 sees of a batch of comparisons: the reconstructed, scaled and permuted values
/// (ℓ per comparison), and its output β'.
pub struct HelperView {
    pub d: Z67Vec,
    pub beta_prime: Vec<u8>,
}

/// Run PrivateCompare on `n` values of ℓ = 64 bits. Servers pass their bit shares (`n·ℓ`
/// values, most significant bit first), `r` and `beta`; P2 passes `None` and empty slices. P2
/// gets β'.
pub async fn private_compare(
    ctx: &Ctx,
    n: usize,
    bits: Option<&Z67Vec>,
    r: &[u64],
    beta: &[u8],
    costing: Costing,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    private_compare_width(ctx, n, L_BITS, bits, r, beta, costing).await
}

/// [`private_compare`] on values of `width` bits (1..=64): `bits` holds `n·width` shares and
/// every `r` is below 2^width. The comparison of narrower values costs `width` Z_67 values per
/// server and comparison instead of 64.
pub async fn private_compare_width(
    ctx: &Ctx,
    n: usize,
    width: usize,
    bits: Option<&Z67Vec>,
    r: &[u64],
    beta: &[u8],
    costing: Costing,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    Ok(view(ctx, n, width, bits, r, beta, costing)
        .await?
        .map(|v| v.beta_prime))
}

/// [`private_compare`], returning P2's whole view (for the privacy tests).
pub async fn private_compare_view(
    ctx: &Ctx,
    n: usize,
    bits: Option<&Z67Vec>,
    r: &[u64],
    beta: &[u8],
    costing: Costing,
) -> Result<Option<HelperView>, ProtocolError> {
    view(ctx, n, L_BITS, bits, r, beta, costing).await
}

async fn view(
    ctx: &Ctx,
    n: usize,
    width: usize,
    bits: Option<&Z67Vec>,
    r: &[u64],
    beta: &[u8],
    costing: Costing,
) -> Result<Option<HelperView>, ProtocolError> {
    assert!((1..=L_BITS).contains(&width), "PrivateCompare width");
    let ctx = ctx.child("private_compare");
    ctx.shape(&[n]);
    let me = ctx.me();
    let packed = costing.pack_z67();
    if me == P2 {
        let d0: Z67Wire = ctx.recv(P0, &(n * width, packed)).await?;
        let d1: Z67Wire = ctx.recv(P1, &(n * width, packed)).await?;
        let d = d0.values.add(&d1.values);
        let beta_prime = d
            .as_slice()
            .chunks_exact(width)
            .map(|c| c.contains(&0) as u8)
            .collect();
        return Ok(Some(HelperView { d, beta_prime }));
    }
    let bits = bits.expect("servers hold bit shares");
    assert!(
        bits.len() == n * width && r.len() == n && beta.len() == n,
        "PrivateCompare input sizes"
    );
    let top = if width == L_BITS {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    debug_assert!(r.iter().all(|&v| v <= top), "PrivateCompare r beyond width");
    let j = me.0 as u32;
    // The comparisons are independent: each chunk of them draws its s_i, permutations and
    // corner values from its own stream of the P0-P1 seed (the chunk's first index names it),
    // so both servers agree however many threads run the chunks.
    let mut seed = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut common_prg(&ctx), &mut seed);
    let xb = bits.as_slice();
    let mut out = vec![0u8; n * width];
    crate::par::fill_rows(&mut out, width, MIN_COMPARISONS_PER_CHUNK, |range, out| {
        let mut prg = Prg::from_seed(seed);
        prg.set_stream(range.start as u64);
        let s = Z67Vec::random_nonzero(range.len() * width, &mut prg);
        let s = s.as_slice();
        let mut perm_all = [0u8; L_BITS];
        let mut c_all = [0u32; L_BITS];
        let (perm, c) = (&mut perm_all[..width], &mut c_all[..width]);
        for (i, e) in range.enumerate() {
            // A fresh permutation of the ℓ slots per comparison (Fisher-Yates).
            for (k, p) in perm.iter_mut().enumerate() {
                *p = k as u8;
            }
            for k in (1..width).rev() {
                perm.swap(k, uniform_below(k as u32 + 1, &mut prg) as usize);
            }
            let x = &xb[e * width..(e + 1) * width];
            if beta[e] == 1 && r[e] == top {
                // The corner: one planted zero (the last slot at both servers sums to 0),
                // nonzero elsewhere. Both servers know the corner (r and β are common), so only
                // they draw u.
                let u = Z67Vec::random_nonzero(width, &mut prg);
                for (k, (ck, &ui)) in c.iter_mut().zip(u.as_slice()).enumerate() {
                    let ui = ui as u32;
                    *ck = match (k == width - 1, j) {
                        (false, 0) => ui + 1,
                        (true, 0) => ui,
                        _ => P as u32 - ui,
                    };
                }
            } else {
                let cmp = if beta[e] == 0 {
                    r[e]
                } else {
                    r[e].wrapping_add(1)
                };
                // Unreduced sums stay below 64·67 + 3·67, far from overflow: one reduction per
                // slot instead of one per operation.
                let p = P as u32;
                let flip = beta[e] as u32;
                // Running Σ_{k>i} w_k over the more significant bits.
                let mut acc = 0u32;
                for (k, ck) in c.iter_mut().enumerate() {
                    let ri = ((cmp >> (width - 1 - k)) & 1) as u32;
                    let xi = x[k] as u32;
                    // β = 0: j·r_i - x_i + j + Σw;  β = 1: x_i - j·t_i + j + Σw (t = r + 1)
                    let (plus, minus) = if flip == 0 {
                        (j * ri, xi)
                    } else {
                        (xi, j * ri)
                    };
                    *ck = plus + p - minus + j + acc;
                    // ⟨x_i ⊕ r_i⟩ = x_i + j·r_i - 2 r_i x_i: x_i if r_i = 0, j - x_i if r_i = 1.
                    acc += if ri == 0 { xi } else { j + p - xi };
                }
            }
            let base = i * width;
            let o = &mut out[base..base + width];
            for k in 0..width {
                o[perm[k] as usize] = ((s[base + k] as u32 * (c[k] % P as u32)) % P as u32) as u8;
            }
        }
    });
    ctx.send(
        P2,
        &Z67Wire {
            values: Z67Vec::from_vec(out),
            packed,
        },
    )?;
    Ok(None)
}
