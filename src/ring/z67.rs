//! Vectors over the prime field Z_67, one byte per value: SecureNN's PrivateCompare field
//! (p = 67 > ℓ + 2 = 66, Lemma 2).

use rand_core::Rng;

/// The prime.
pub const P: u8 = 67;

/// A vector over Z_67 (values 0..67, one byte each).
#[derive(Clone, PartialEq, Eq)]
pub struct Z67Vec(Vec<u8>);

impl std::fmt::Debug for Z67Vec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Z67Vec[{}]", self.0.len())
    }
}

/// Largest multiple of 67 that fits in a byte (3·67 = 201): bytes at or above are rejected so
/// that `byte % 67` is uniform.
const REJECT_AT: u8 = 201;

pub fn add(a: u8, b: u8) -> u8 {
    ((a as u16 + b as u16) % P as u16) as u8
}

pub fn sub(a: u8, b: u8) -> u8 {
    ((a as u16 + P as u16 - b as u16) % P as u16) as u8
}

pub fn mul(a: u8, b: u8) -> u8 {
    ((a as u16 * b as u16) % P as u16) as u8
}

impl Z67Vec {
    /// From values; panics (caller bug) if one is not below 67.
    pub fn from_vec(v: Vec<u8>) -> Self {
        assert!(v.iter().all(|&x| x < P), "Z_67 values must be below 67");
        Self(v)
    }

    pub fn zeros(n: usize) -> Self {
        Self(vec![0; n])
    }

    /// Uniform values in Z_67.
    pub fn random<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Self {
        Self(sample(n, rng, false))
    }

    /// Uniform values in Z_67^* (never 0): PrivateCompare's multipliers s_i.
    pub fn random_nonzero<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Self {
        Self(sample(n, rng, true))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn zip(&self, o: &Self, f: impl Fn(u8, u8) -> u8) -> Self {
        assert_eq!(self.len(), o.len(), "length mismatch");
        Self(self.0.iter().zip(&o.0).map(|(&a, &b)| f(a, b)).collect())
    }

    pub fn add(&self, o: &Self) -> Self {
        self.zip(o, add)
    }

    pub fn sub(&self, o: &Self) -> Self {
        self.zip(o, sub)
    }

    pub fn mul(&self, o: &Self) -> Self {
        self.zip(o, mul)
    }
}

fn sample<R: Rng + ?Sized>(n: usize, rng: &mut R, nonzero: bool) -> Vec<u8> {
    // Branch-free rejection: every candidate is written, and the write position advances only
    // for accepted ones (the tail past `n` is scratch).
    let mut out = vec![0u8; n + 256];
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < n {
        rng.fill_bytes(&mut buf);
        for &b in &buf {
            let v = b % P;
            let ok = (b < REJECT_AT) & (!nonzero | (v != 0));
            out[len] = v;
            len += ok as usize;
        }
    }
    out.truncate(n);
    out
}
