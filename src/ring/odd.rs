//! Tensors over the odd ring Z_{2^64-1}, where MSB(a) = LSB(2a) (SecureNN §3.5, Alg. 4-5).
//!
//! Elements live in [0, 2^64 - 2]. Addition is `(a + b + carry) mod 2^64`, folding the value
//! 2^64 - 1 to 0: since 2^64 ≡ 1 (mod 2^64 - 1), a carry out of 64 bits adds one.

use super::random_u64s;
use rand_core::Rng;

/// The modulus 2^64 - 1, which is also the one value that is not an element.
pub const ODD_MODULUS: u64 = u64::MAX;

/// A tensor over Z_{2^64-1}, row-major.
#[derive(Clone, PartialEq, Eq)]
pub struct OddTensor {
    shape: Vec<usize>,
    data: Vec<u64>,
}

impl std::fmt::Debug for OddTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OddTensor{:?}", self.shape)
    }
}

/// a + b mod 2^64 - 1, for a, b in [0, 2^64 - 2].
pub fn odd_add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    if carry {
        // a + b = s + 2^64 ≡ s + 1; s <= 2^64 - 4 here, so s + 1 does not wrap.
        s + 1
    } else if s == ODD_MODULUS {
        0
    } else {
        s
    }
}

/// -a mod 2^64 - 1.
pub fn odd_neg(a: u64) -> u64 {
    if a == 0 { 0 } else { ODD_MODULUS - a }
}

pub fn odd_sub(a: u64, b: u64) -> u64 {
    odd_add(a, odd_neg(b))
}

/// Reduce any u64 into Z_{2^64-1} (only 2^64 - 1 itself changes, to 0).
pub fn odd_reduce(a: u64) -> u64 {
    if a == ODD_MODULUS { 0 } else { a }
}

impl OddTensor {
    /// From row-major elements; panics (caller bug) if an element is 2^64 - 1 or lengths differ.
    pub fn from_vec(shape: &[usize], data: Vec<u64>) -> Self {
        assert_eq!(super::numel(shape), data.len(), "data length vs shape");
        assert!(
            data.iter().all(|&x| x != ODD_MODULUS),
            "2^64-1 is not an element of Z_(2^64-1)"
        );
        Self {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::from_vec(shape, vec![0; super::numel(shape)])
    }

    /// Uniform elements, by rejecting 2^64 - 1.
    pub fn random<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Self {
        let n = super::numel(shape);
        let mut data = random_u64s(rng, n);
        for x in &mut data {
            while *x == ODD_MODULUS {
                *x = rng.next_u64();
            }
        }
        Self {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn as_slice(&self) -> &[u64] {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn zip(&self, o: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        assert_eq!(self.shape, o.shape, "shape mismatch");
        Self {
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(&o.data)
                .map(|(&a, &b)| f(a, b))
                .collect(),
        }
    }

    pub fn add(&self, o: &Self) -> Self {
        self.zip(o, odd_add)
    }

    pub fn sub(&self, o: &Self) -> Self {
        self.zip(o, odd_sub)
    }

    pub fn neg(&self) -> Self {
        Self {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&a| odd_neg(a)).collect(),
        }
    }
}
