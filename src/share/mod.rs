//! Additive 2-out-of-2 secret sharing over Z_{2^64}, and the seeds of correlated randomness:
//! every pair of parties holds a ChaCha seed agreed at session setup (P0-P1, P0-P2, P1-P2), and
//! every party a local one (SecureNN §3.1: "common randomness" and PRF-based zero shares).

use crate::ring::RingTensor;
use rand_core::{Rng, SeedableRng};
use securenn_transports::PartyId;

/// The PRG behind all protocol randomness. ChaCha with 12 rounds: 2.8 GB/s on the build machine
/// (reference/stack.md §4.2), with a wide security margin (the best attacks reach 7 rounds).
pub type Prg = rand_chacha::ChaCha12Rng;

/// Split `x` into two uniformly random shares with x = x0 + x1 (mod 2^64).
pub fn share<R: Rng + ?Sized>(x: &RingTensor, rng: &mut R) -> (RingTensor, RingTensor) {
    let r = RingTensor::random(x.shape(), rng);
    (x.sub(&r), r)
}

/// x0 + x1.
pub fn reconstruct(x0: &RingTensor, x1: &RingTensor) -> RingTensor {
    x0.add(x1)
}

/// A party's seeds: one per peer (shared with that peer only) and one local.
#[derive(Clone)]
pub struct Seeds {
    me: PartyId,
    pair: [Option<[u8; 32]>; 3],
    local: [u8; 32],
}

impl std::fmt::Debug for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seeds({}, redacted)", self.me)
    }
}

impl Seeds {
    pub fn new(me: PartyId, pair: [Option<[u8; 32]>; 3], local: [u8; 32]) -> Self {
        Self { me, pair, local }
    }

    pub fn me(&self) -> PartyId {
        self.me
    }

    /// The seed shared with `peer`. Panics if `peer` is this party: a protocol bug.
    pub fn pair(&self, peer: PartyId) -> &[u8; 32] {
        self.pair[peer.index()]
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no pair seed with {peer}", self.me))
    }

    pub fn local(&self) -> &[u8; 32] {
        &self.local
    }
}

/// A PRG keyed by `seed` for the purpose named by `label` (an op path and a counter):
/// the ChaCha key is BLAKE3's keyed hash of the label, so distinct labels give independent
/// streams and both holders of a seed derive the same stream without talking.
pub fn derive_prg(seed: &[u8; 32], label: &str) -> Prg {
    Prg::from_seed(*blake3::keyed_hash(seed, label.as_bytes()).as_bytes())
}

/// A 32-byte value derived from a u64 seed and a label (for reproducible session seeds).
pub fn derive_bytes(seed: u64, label: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    *blake3::keyed_hash(&key, label.as_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn share_then_reconstruct_is_identity(v in proptest::collection::vec(any::<u64>(), 0..64), seed: u64) {
            let mut rng = Prg::seed_from_u64(seed);
            let x = RingTensor::from_vec(&[v.len()], v);
            let (a, b) = share(&x, &mut rng);
            prop_assert_eq!(reconstruct(&a, &b), x);
        }
    }

    /// A share of a constant must look uniform: bit balance and a chi-square over 16 buckets of
    /// the top nibble, for the constant 0, 1, -1 and 2^62.
    #[test]
    fn shares_of_a_constant_are_uniform() {
        let mut rng = Prg::seed_from_u64(99);
        for c in [0u64, 1, u64::MAX, 1 << 62] {
            let n = 40_000;
            let x = RingTensor::filled(&[n], c);
            let (s0, s1) = share(&x, &mut rng);
            for s in [&s0, &s1] {
                for bit in 0..64 {
                    let ones = s.as_slice().iter().filter(|&&v| v >> bit & 1 == 1).count();
                    // 5 sigma around n/2 (sigma = 100 for n = 40000).
                    assert!(
                        (ones as f64 - n as f64 / 2.0).abs() < 500.0,
                        "c={c} bit {bit}: {ones}"
                    );
                }
                let mut buckets = [0f64; 16];
                for &v in s.as_slice() {
                    buckets[(v >> 60) as usize] += 1.0;
                }
                let e = n as f64 / 16.0;
                let chi2: f64 = buckets.iter().map(|o| (o - e) * (o - e) / e).sum();
                // 15 degrees of freedom: P(chi2 > 37.7) = 0.001.
                assert!(chi2 < 37.7, "c={c}: chi-square {chi2}");
            }
        }
    }

    #[test]
    fn derived_streams_agree_and_differ_by_label() {
        let seed = [3u8; 32];
        let a = RingTensor::random(&[8], &mut derive_prg(&seed, "x#0"));
        let b = RingTensor::random(&[8], &mut derive_prg(&seed, "x#0"));
        let c = RingTensor::random(&[8], &mut derive_prg(&seed, "x#1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
