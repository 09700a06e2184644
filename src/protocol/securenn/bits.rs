//! Helpers shared by SecureNN's comparison protocols: wrap bits, bit decomposition into Z_67
//! shares (most significant bit first, as the paper indexes them), and the P0-P1 common PRG.

use crate::channel::{Ctx, P0, P1, P2};
use crate::ring::{P, Z67Vec, z67};
use crate::share::Prg;
use rand_core::Rng;

/// ℓ: bits per ring element.
pub const L_BITS: usize = 64;

/// wrap(a, b, 2^64): 1 iff a + b overflows 64 bits.
pub fn wrap(a: u64, b: u64) -> u64 {
    a.overflowing_add(b).1 as u64
}

/// Bit k (0 = most significant) of each value, as Z_67 shares: (share for P0, share for P1).
pub fn bit_shares<R: Rng + ?Sized>(x: &[u64], rng: &mut R) -> (Z67Vec, Z67Vec) {
    bit_shares_width(x, L_BITS, rng)
}

/// [`bit_shares`] of the low `width` bits of each value (most significant of them first).
pub fn bit_shares_width<R: Rng + ?Sized>(x: &[u64], width: usize, rng: &mut R) -> (Z67Vec, Z67Vec) {
    let s0 = Z67Vec::random(x.len() * width, rng);
    let s1: Vec<u8> = x
        .iter()
        .flat_map(|&v| (0..width).map(move |k| ((v >> (width - 1 - k)) & 1) as u8))
        .zip(s0.as_slice())
        .map(|(bit, &r)| z67::sub(bit, r))
        .collect();
    (s0, Z67Vec::from_vec(s1))
}

/// The PRG P0 and P1 share (common randomness); a server-only helper.
pub fn common_prg(ctx: &Ctx) -> Prg {
    let other = if ctx.me() == P0 { P1 } else { P0 };
    ctx.prg_with(other)
}

/// P2's stream for P0's share of what it deals: drawn from the P0-P2 seed when `derived` (P0
/// then draws the same with [`p0_dealt_prg`] and nothing is sent), from P2's own seed otherwise.
pub fn dealer_prg(ctx: &Ctx, derived: bool) -> Prg {
    if derived {
        ctx.prg_with(P0)
    } else {
        ctx.prg_local()
    }
}

/// P0's side of [`dealer_prg`] with `derived`: the same stream, from the P0-P2 seed.
pub fn p0_dealt_prg(ctx: &Ctx) -> Prg {
    ctx.prg_with(P2)
}

/// The values below 2^width: all ones in the low `width` bits (1..=64).
pub const fn low_mask(width: usize) -> u64 {
    if width >= L_BITS {
        u64::MAX
    } else {
        (1u64 << width) - 1
    }
}

/// `n` uniform bits.
pub fn random_bits<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut b);
    b.iter_mut().for_each(|v| *v &= 1);
    b
}

/// A uniform value in 0..n (0 < n <= 2^32 - 1), without modulo bias: Lemire's multiply-shift
/// (the high half of v·n), rejecting the 2^32 mod n low halves that would bias it; the division
/// runs only when the low half falls below n, which is rare for small n.
pub fn uniform_below<R: Rng + ?Sized>(n: u32, rng: &mut R) -> u32 {
    let mut m = rng.next_u32() as u64 * n as u64;
    if (m as u32) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u32) < threshold {
            m = rng.next_u32() as u64 * n as u64;
        }
    }
    (m >> 32) as u32
}

/// One value of Z_67 as an integer (for readability in the algorithms).
pub const fn zp(v: u64) -> u8 {
    (v % P as u64) as u8
}
