//! Number rings: tensors over Z_{2^64} (wrapping u64), over the odd ring Z_{2^64-1}, and Z_67
//! vectors with one byte per value (SecureNN §3.1), plus the fast kernels they use.

pub mod kernels;
mod odd;
mod ring64;
mod z67;

pub use kernels::Padding;
pub use odd::{ODD_MODULUS, OddTensor, odd_add, odd_neg, odd_reduce, odd_sub};
pub use ring64::RingTensor;
pub use z67::{P, Z67Vec};

use rand_core::Rng;

/// Fill `n` u64 values from a PRG, little-endian so streams are platform independent.
pub(crate) fn random_u64s<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<u64> {
    let mut bytes = vec![0u8; n * 8];
    rng.fill_bytes(&mut bytes);
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}
