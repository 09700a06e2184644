//! Number rings: tensors over Z_{2^64} (wrapping u64), over the odd ring Z_{2^64-1}, and Z_67
//! vectors with one byte per value (SecureNN §3.1), plus the fast kernels they use.

pub mod kernels;
mod odd;
mod ring64;
pub mod window;
pub mod z67;

pub use kernels::Padding;
pub use odd::{ODD_MODULUS, OddTensor, odd_add, odd_neg, odd_reduce, odd_sub};
pub use ring64::RingTensor;
pub use window::{Gather, PadCell, Window};
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(v: u64) -> RingTensor {
        RingTensor::from_vec(&[1], vec![v])
    }

    fn odd(v: u64) -> u64 {
        odd_reduce(v)
    }

    proptest! {
        #[test]
        fn z64_ring_laws(a: u64, b: u64, c: u64) {
            let (x, y, z) = (ring(a), ring(b), ring(c));
            prop_assert_eq!(x.add(&y), y.add(&x));
            prop_assert_eq!(x.add(&y).add(&z), x.add(&y.add(&z)));
            prop_assert_eq!(x.mul(&y), y.mul(&x));
            prop_assert_eq!(x.mul(&y.add(&z)), x.mul(&y).add(&x.mul(&z)));
            prop_assert_eq!(x.sub(&y).add(&y), x.clone());
            prop_assert_eq!(x.add(&x.neg()), RingTensor::zeros(&[1]));
            prop_assert_eq!(x.scale(c), x.mul(&z));
        }

        #[test]
        fn odd_ring_matches_u128_arithmetic(a: u64, b: u64) {
            let m = ODD_MODULUS as u128;
            let (a, b) = (odd(a), odd(b));
            prop_assert_eq!(odd_add(a, b) as u128, (a as u128 + b as u128) % m);
            prop_assert_eq!(odd_sub(a, b) as u128, (a as u128 + m - b as u128) % m);
            prop_assert_eq!(odd_add(a, odd_neg(a)), 0);
            prop_assert!(odd_add(a, b) != ODD_MODULUS);
        }

        #[test]
        fn z67_field_laws(a in 0u8..67, b in 0u8..67, c in 0u8..67) {
            prop_assert_eq!(z67::add(a, b) as u32, (a as u32 + b as u32) % 67);
            prop_assert_eq!(z67::sub(z67::add(a, b), b), a);
            prop_assert_eq!(z67::mul(a, z67::add(b, c)), z67::add(z67::mul(a, b), z67::mul(a, c)));
            if a != 0 {
                // Every nonzero element is invertible: a^65 = a^-1 (Fermat).
                let mut inv = 1u8;
                for _ in 0..65 { inv = z67::mul(inv, a); }
                prop_assert_eq!(z67::mul(a, inv), 1);
            }
        }
    }

    #[test]
    fn odd_ring_edges() {
        let top = ODD_MODULUS - 1; // 2^64 - 2, the largest element
        assert_eq!(odd_add(top, 1), 0);
        assert_eq!(odd_add(top, top), top - 1);
        assert_eq!(odd_add(1 << 63, 1 << 63), 1);
        assert_eq!(odd_sub(0, 1), top);
        assert_eq!(odd_neg(0), 0);
        assert_eq!(odd_reduce(u64::MAX), 0);
        let t = OddTensor::from_vec(&[2], vec![top, 5]);
        assert_eq!(t.add(&t.neg()), OddTensor::zeros(&[2]));
    }

    #[test]
    fn samplers_stay_in_range_and_cover_it() {
        let mut rng = <crate::share::Prg as rand_core::SeedableRng>::seed_from_u64(5);
        let z = Z67Vec::random(67 * 300, &mut rng);
        let mut counts = [0usize; 67];
        for &v in z.as_slice() {
            counts[v as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 200 && c < 400), "{counts:?}");
        assert!(
            Z67Vec::random_nonzero(10_000, &mut rng)
                .as_slice()
                .iter()
                .all(|&v| v != 0 && v < 67)
        );
        assert!(
            OddTensor::random(&[10_000], &mut rng)
                .as_slice()
                .iter()
                .all(|&v| v != ODD_MODULUS)
        );
    }

    #[test]
    fn matmul_conv_and_pool_match_naive() {
        let mut rng = <crate::share::Prg as rand_core::SeedableRng>::seed_from_u64(6);
        let a = RingTensor::random(&[3, 5], &mut rng);
        let b = RingTensor::random(&[5, 2], &mut rng);
        let c = a.matmul(&b);
        for i in 0..3 {
            for j in 0..2 {
                let want = (0..5).fold(0u64, |s, k| {
                    s.wrapping_add(a.as_slice()[i * 5 + k].wrapping_mul(b.as_slice()[k * 2 + j]))
                });
                assert_eq!(c.as_slice()[i * 2 + j], want);
            }
        }
        let x = RingTensor::from_vec(&[1, 2, 2, 1], vec![1, 2, 3, u64::MAX]);
        assert_eq!(x.sum_window(&Window::square(2)).as_slice(), &[5]);
        let f = RingTensor::from_vec(&[1, 1, 1, 2], vec![2, 3]);
        assert_eq!(
            x.conv2d(&f, 1, Padding::Valid).as_slice(),
            &[2, 3, 4, 6, 6, 9, u64::MAX - 1, u64::MAX - 2]
        );
        let bias = RingTensor::from_vec(&[2], vec![10, 20]);
        assert_eq!(
            RingTensor::from_vec(&[2, 2], vec![1, 2, 3, 4])
                .add_rows(&bias)
                .as_slice(),
            &[11, 22, 13, 24]
        );
    }
}
