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

    fn zip(&self, o: &Self, f: impl Fn(u8, u8) -> u8 + Sync) -> Self {
        assert_eq!(self.len(), o.len(), "length mismatch");
        let mut out = vec![0u8; self.len()];
        crate::par::zip_into(&mut out, &self.0, &o.0, ELEMENTWISE_CHUNK, f);
        Self(out)
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

/// Values per packed word: 67^10 < 2^64 < 67^11, so ten Z_67 values fit one u64 (6.4 bits a
/// value instead of 8).
pub const PER_WORD: usize = 10;

/// Least values in a parallel chunk of an elementwise operation ([`crate::par`]).
const ELEMENTWISE_CHUNK: usize = 1 << 18;

/// Least packed words in a parallel chunk of packing or unpacking (160 K values).
const PACK_CHUNK_WORDS: usize = 1 << 14;

/// The packed word of `values` (at most ten): Σ v_i·67^i.
fn pack_word(values: &[u8]) -> u64 {
    values
        .iter()
        .rev()
        .fold(0u64, |acc, &v| acc * P as u64 + v as u64)
}

/// Bytes of `n` values packed in base 67.
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(PER_WORD) * 8
}

impl Z67Vec {
    /// Base-67 packing: each run of ten values v_0..v_9 as the little-endian u64 Σ v_i·67^i.
    /// Long vectors pack as a parallel section over runs of words ([`crate::par`]).
    pub fn write_packed(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + packed_len(self.0.len()), 0);
        let values = &self.0;
        crate::par::fill_rows(&mut out[start..], 8, PACK_CHUNK_WORDS, |words, bytes| {
            let vals = &values[words.start * PER_WORD..(words.end * PER_WORD).min(values.len())];
            for (chunk, dst) in vals.chunks(PER_WORD).zip(bytes.chunks_exact_mut(8)) {
                dst.copy_from_slice(&pack_word(chunk).to_le_bytes());
            }
        });
    }

    /// The inverse of [`Z67Vec::write_packed`] for `n` values; refuses words that encode more
    /// than their values (so every value is below 67 and the encoding is canonical).
    pub fn read_packed(bytes: &[u8], n: usize) -> Result<Self, String> {
        if bytes.len() != packed_len(n) {
            return Err(format!(
                "expected {} bytes for {n} packed values, got {}",
                packed_len(n),
                bytes.len()
            ));
        }
        // Every word decodes ten values (a short last word's extra ones must be zero, and are
        // cut off at the end); the first word that encodes too much is reported.
        let words = bytes.len() / 8;
        let mut out = vec![0u8; words * PER_WORD];
        let bad = std::sync::atomic::AtomicUsize::new(usize::MAX);
        crate::par::fill_rows(&mut out, PER_WORD, PACK_CHUNK_WORDS, |ws, vals| {
            for (i, dst) in ws.zip(vals.chunks_exact_mut(PER_WORD)) {
                let mut w = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
                let count = PER_WORD.min(n - i * PER_WORD);
                for d in &mut dst[..count] {
                    *d = (w % P as u64) as u8;
                    w /= P as u64;
                }
                if w != 0 {
                    bad.fetch_min(i, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let i = bad.into_inner();
        if i != usize::MAX {
            let count = PER_WORD.min(n - i * PER_WORD);
            return Err(format!("packed word {i} encodes more than {count} values"));
        }
        out.truncate(n);
        Ok(Self(out))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Pearson's statistic of `values` against the uniform distribution over `cats` values.
    fn chi_square(values: &[u8], cats: std::ops::Range<u8>) -> f64 {
        let k = cats.len();
        let mut counts = vec![0u64; 256];
        for &v in values {
            counts[v as usize] += 1;
        }
        let expected = values.len() as f64 / k as f64;
        cats.map(|c| (counts[c as usize] as f64 - expected).powi(2) / expected)
            .sum()
    }

    /// The rejection sampler is uniform over Z_67 (and Z_67^* for the multipliers): these are
    /// the masks of every dealt bit share and of PrivateCompare's values, so a bias would leak.
    #[test]
    fn sampling_is_uniform() {
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(5);
        let v = Z67Vec::random(670_000, &mut rng);
        assert!(v.as_slice().iter().all(|&x| x < P));
        // 66 degrees of freedom: the 99.999th percentile is about 120.
        let c = chi_square(v.as_slice(), 0..P);
        assert!(c < 120.0, "chi-square {c}");
        let nz = Z67Vec::random_nonzero(660_000, &mut rng);
        assert!(nz.as_slice().iter().all(|&x| x > 0 && x < P));
        let c = chi_square(nz.as_slice(), 1..P);
        assert!(c < 120.0, "chi-square {c}");
        // A biased sampler (byte % 67 without rejection) fails the same test.
        let mut bytes = vec![0u8; 670_000];
        rand_core::Rng::fill_bytes(&mut rng, &mut bytes);
        let biased: Vec<u8> = bytes.iter().map(|b| b % P).collect();
        assert!(chi_square(&biased, 0..P) > 120.0);
    }

    #[test]
    fn packing_round_trips_and_refuses_non_canonical_words() {
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(3);
        for n in [0, 1, 9, 10, 11, 64, 640, 1001] {
            let v = Z67Vec::random(n, &mut rng);
            let mut bytes = Vec::new();
            v.write_packed(&mut bytes);
            assert_eq!(bytes.len(), packed_len(n));
            assert_eq!(Z67Vec::read_packed(&bytes, n).unwrap(), v, "n = {n}");
        }
        // All 66s: the largest word, 67^10 - 1.
        let top = Z67Vec::from_vec(vec![66; 10]);
        let mut bytes = Vec::new();
        top.write_packed(&mut bytes);
        assert_eq!(
            u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            67u64.pow(10) - 1
        );
        assert_eq!(Z67Vec::read_packed(&bytes, 10).unwrap(), top);
        // 67^10 would be an 11th value; a short tail word may not carry extra values either.
        assert!(Z67Vec::read_packed(&67u64.pow(10).to_le_bytes(), 10).is_err());
        assert!(Z67Vec::read_packed(&67u64.pow(3).to_le_bytes(), 3).is_err());
        assert!(Z67Vec::read_packed(&[0; 7], 3).is_err());
    }

    /// Vectors long enough to pack and unpack as parallel sections give the same bytes on one
    /// pool thread and several, and the same as packing word by word.
    #[test]
    fn long_vectors_pack_the_same_on_any_number_of_threads() {
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(8);
        let n = 40 * PACK_CHUNK_WORDS * PER_WORD + 7;
        let v = Z67Vec::random(n, &mut rng);
        let w = Z67Vec::random(n, &mut rng);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut bytes = vec![1, 2, 3]; // appends after what is there
                v.write_packed(&mut bytes);
                let back = Z67Vec::read_packed(&bytes[3..], n).unwrap();
                (bytes, back, v.add(&w), v.mul(&w), v.sub(&w))
            })
        };
        let one = run(1);
        assert_eq!(one, run(4));
        let serial: Vec<u8> = v
            .as_slice()
            .chunks(PER_WORD)
            .flat_map(|c| pack_word(c).to_le_bytes())
            .collect();
        assert_eq!(&one.0[3..], &serial[..]);
        assert_eq!(one.1, v);
        let sum: Vec<u8> = v.0.iter().zip(&w.0).map(|(&a, &b)| add(a, b)).collect();
        assert_eq!(one.2.0, sum);
        // A bad word far into a long vector: the first one is named.
        let mut bytes = serial.clone();
        for i in [30_000usize, 20_000] {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        }
        let e = Z67Vec::read_packed(&bytes, n).unwrap_err();
        assert!(e.starts_with("packed word 20000 "), "{e}");
    }
}
