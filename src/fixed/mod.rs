//! Fixed-point numbers in Z_{2^64}: encoding with 13 fractional bits by default (SecureNN §7.1,
//! as in SecureML), decoding, and SecureML's local truncation of shares (SecureNN App. B, Alg. 11).
//!
//! # Truncation error bound
//!
//! Local truncation by `d` bits: P0 shifts its share arithmetically, P1 shifts the negation of its
//! share and negates back. If the shared value x satisfies |x| < 2^e (as a signed 64-bit number)
//! and the shares are uniformly random, then with probability at least 1 - 2^(e+1-64) the result
//! is floor(x / 2^d) or floor(x / 2^d) + 1, i.e. within one unit in the last place
//! (SecureML, Theorem 1). Otherwise it is off by about 2^(64-d). After a product of two values at
//! 13 fractional bits the intermediate carries 26 fractional bits, so |value| must stay well below
//! 2^(e-26): with e = 40 (failure probability 2^-23 per element) that is |value| < 2^14 = 16384.
//! [`crate::nn::range`] bounds every product of a model from its weights and checks this before
//! a run; [`MAX_FRAC_BITS`] limits the precision for the same reason.

use crate::ring::RingTensor;
use serde::{Deserialize, Serialize};

/// SecureNN's and SecureML's precision: 13 fractional bits.
pub const DEFAULT_FRAC_BITS: u32 = 13;

/// Most fractional bits accepted. A product of two values carries 2·f fractional bits before
/// truncation, and local truncation of a shared x fails (the value comes out wrong by about
/// 2^(64-f) ulps) with probability about |x| / 2^64, so every extra bit makes failures four times
/// likelier. Measured with SecureNN on 1000 test images, agreement with the plaintext reference
/// first drops at 20 bits for network C (99.9%), 22 for B (99.5%), 23 for A (99.8%) and 24 for D
/// (99.6%), and collapses by 28 (10-62%); 18 keeps two bits (a factor 16) below the first
/// failure. Within the range, [`crate::nn::range`] checks each model's own bounds (see the
/// README, "Fixed-point range").
pub const MAX_FRAC_BITS: u32 = 18;

/// Why the fractional bits are limited, for error messages and `--help`.
pub const FRAC_BITS_WHY: &str = "a product carries twice the fractional bits before truncation, and local truncation of a shared product x fails with probability about |x|/2^64: trained networks start to disagree with the plaintext reference from 20 bits (network C 99.9% agreement at 20, B 99.5% at 22, A 99.8% at 23; 10-62% at 28)";

/// Why a real number could not be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FixedError {
    // The value is kept for callers but never printed: it may be a weight or a pixel.
    #[error("a value is not a finite number")]
    NotFinite { value: f64 },
    #[error("a value is outside the representable range ±{max} at {frac_bits} fractional bits")]
    OutOfRange {
        value: f64,
        max: f64,
        frac_bits: u32,
    },
    #[error(
        "{0} fractional bits is not supported: the safe range is 1 to {MAX_FRAC_BITS} ({FRAC_BITS_WHY})"
    )]
    FracBits(u32),
}

/// A fixed-point format: value v is stored as round(v · 2^frac_bits) in two's complement mod 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPoint {
    pub frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self {
            frac_bits: DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    pub fn new(frac_bits: u32) -> Result<Self, FixedError> {
        if (1..=MAX_FRAC_BITS).contains(&frac_bits) {
            Ok(Self { frac_bits })
        } else {
            Err(FixedError::FracBits(frac_bits))
        }
    }

    /// 2^frac_bits.
    pub fn scale(&self) -> f64 {
        (self.frac_bits as f64).exp2()
    }

    /// One unit in the last place, 2^-frac_bits.
    pub fn ulp(&self) -> f64 {
        1.0 / self.scale()
    }

    /// Largest magnitude that encodes: just below 2^(63 - frac_bits).
    pub fn max_value(&self) -> f64 {
        ((63 - self.frac_bits) as f64).exp2()
    }

    pub fn encode(&self, v: f64) -> Result<u64, FixedError> {
        if !v.is_finite() {
            return Err(FixedError::NotFinite { value: v });
        }
        let scaled = (v * self.scale()).round();
        if scaled.abs() >= 2f64.powi(63) {
            return Err(FixedError::OutOfRange {
                value: v,
                max: self.max_value(),
                frac_bits: self.frac_bits,
            });
        }
        Ok(scaled as i64 as u64)
    }

    pub fn decode(&self, x: u64) -> f64 {
        x as i64 as f64 / self.scale()
    }

    pub fn encode_tensor(&self, shape: &[usize], values: &[f64]) -> Result<RingTensor, FixedError> {
        let data = values
            .iter()
            .map(|&v| self.encode(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RingTensor::from_vec(shape, data))
    }

    pub fn decode_tensor(&self, x: &RingTensor) -> Vec<f64> {
        x.as_slice().iter().map(|&v| self.decode(v)).collect()
    }
}

/// SecureML local truncation of one party's share by `bits` bits: party 0 shifts its share
/// arithmetically, party 1 computes -((-share) >> bits). See the module docs for the bound.
pub fn truncate_share(share: &RingTensor, bits: u32, party: usize) -> RingTensor {
    match party {
        0 => share.map(|x| ((x as i64) >> bits) as u64),
        _ => share
            .map(|x| (((x.wrapping_neg()) as i64) >> bits) as u64)
            .neg(),
    }
}

/// Exact truncation of a plaintext value: arithmetic shift, i.e. floor(x / 2^bits).
pub fn truncate_exact(x: &RingTensor, bits: u32) -> RingTensor {
    x.map(|v| ((v as i64) >> bits) as u64)
}

/// How to multiply a fixed-point value by a public real constant `c` without losing the
/// constant's precision: first drop `pre_shift` low bits of the value, then multiply by the
/// integer `factor` = round(c · 2^(frac_bits + pre_shift)), then truncate by `frac_bits`.
///
/// Encoding a small constant directly at 13 bits would round it to zero (Pond's x^8 coefficient
/// -2.1e-8 is 0.00017 ulp); the pre-shift keeps at least [`CONSTANT_BITS`] significant bits of
/// the constant while the product stays as small as the direct one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstantPlan {
    pub pre_shift: u32,
    pub factor: u64,
    pub post_shift: u32,
}

/// Significant bits kept of a public constant in [`ConstantPlan`].
pub const CONSTANT_BITS: i32 = 12;

impl FixedPoint {
    pub fn constant_plan(&self, c: f64) -> Result<ConstantPlan, FixedError> {
        if !c.is_finite() {
            return Err(FixedError::NotFinite { value: c });
        }
        let f = self.frac_bits as i32;
        let pre_shift = if c == 0.0 {
            0
        } else {
            (CONSTANT_BITS - f - c.abs().log2().floor() as i32).clamp(0, 62 - f) as u32
        };
        let factor = FixedPoint {
            frac_bits: self.frac_bits + pre_shift,
        };
        let scaled = (c * factor.scale()).round();
        if scaled.abs() >= 2f64.powi(62) {
            return Err(FixedError::OutOfRange {
                value: c,
                max: self.max_value(),
                frac_bits: self.frac_bits,
            });
        }
        Ok(ConstantPlan {
            pre_shift,
            factor: scaled as i64 as u64,
            post_shift: self.frac_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::{reconstruct, share};
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn encode_edges() {
        let fp = FixedPoint::default();
        assert_eq!(fp.encode(0.0).unwrap(), 0);
        assert_eq!(fp.encode(-fp.ulp()).unwrap(), u64::MAX);
        assert_eq!(fp.encode(1.0).unwrap(), 1 << 13);
        assert_eq!(fp.encode(-1.0).unwrap(), (1u64 << 13).wrapping_neg());
        assert_eq!(fp.decode(1 << 15), 4.0);
        assert!(fp.encode(f64::NAN).is_err());
        assert!(fp.encode(fp.max_value()).is_err());
        assert!(fp.encode(-fp.max_value() * 1.01).is_err());
        let largest = fp.max_value() - 1.0;
        assert_eq!(fp.decode(fp.encode(largest).unwrap()), largest);
        assert!(FixedPoint::new(0).is_err() && FixedPoint::new(MAX_FRAC_BITS + 1).is_err());
        assert!(FixedPoint::new(MAX_FRAC_BITS).is_ok());
        let e = FixedPoint::new(28).unwrap_err().to_string();
        assert!(e.contains("1 to 18"), "{e}");
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(v in -1.0e9f64..1.0e9, f in 1u32..=MAX_FRAC_BITS) {
            let fp = FixedPoint::new(f).unwrap();
            let back = fp.decode(fp.encode(v).unwrap());
            prop_assert!((back - v).abs() <= fp.ulp() / 2.0 + v.abs() * 1e-15);
        }

        #[test]
        fn truncation_within_one_ulp_for_moderate_values(x in -(1i64 << 40)..(1i64 << 40), seed: u64) {
            // |x| < 2^40: the failure probability bound is 2^(41-64) = 2^-23 per trial.
            let mut rng = crate::share::Prg::seed_from_u64(seed);
            let t = RingTensor::from_vec(&[1], vec![x as u64]);
            let (s0, s1) = share(&t, &mut rng);
            let r = reconstruct(&truncate_share(&s0, 13, 0), &truncate_share(&s1, 13, 1));
            let got = r.as_slice()[0] as i64;
            let want = x >> 13;
            prop_assert!(got == want || got == want + 1, "x={x} got={got} want={want}");
        }
    }

    /// Edge values with the bound each is checked against (see the module docs): for |x| < 2^e the
    /// result is within one ulp with probability at least 1 - 2^(e+1-64).
    #[test]
    fn truncation_edges_state_their_bound() {
        let mut rng = crate::share::Prg::seed_from_u64(7);
        let trials = 20_000;
        let cases: [(i64, f64); 6] = [
            (0, 2f64.powi(-63)),          // e = 0: always correct
            (-1, 2f64.powi(-62)),         // -1 ulp, e = 1
            (1 << 30, 2f64.powi(-33)),    // e = 31
            (-(1 << 40), 2f64.powi(-23)), // e = 41
            ((1 << 62) - 1, 0.5),         // near 2^62: e = 62, bound 1/2
            (-(1 << 62), 0.5),            // -2^62: e = 63 (|x| = 2^62 is not < 2^62), bound 1
        ];
        for (x, bound) in cases {
            let t = RingTensor::from_vec(&[1], vec![x as u64]);
            let mut wrong = 0;
            for _ in 0..trials {
                let (s0, s1) = share(&t, &mut rng);
                let r = reconstruct(&truncate_share(&s0, 13, 0), &truncate_share(&s1, 13, 1));
                let got = r.as_slice()[0] as i64;
                if !(got == x >> 13 || got == (x >> 13) + 1) {
                    wrong += 1;
                }
            }
            let rate = wrong as f64 / trials as f64;
            // Allow sampling noise of 4 standard deviations above the bound.
            let slack = 4.0 * (bound.min(1.0) * (1.0 - bound.min(1.0)) / trials as f64).sqrt();
            assert!(
                rate <= bound + slack,
                "x={x}: failure rate {rate} above bound {bound}"
            );
            if bound < 1e-6 {
                assert_eq!(wrong, 0, "x={x}");
            }
        }
        // The largest and smallest representable values have e = 63: the bound promises nothing,
        // and indeed local truncation fails about half the time there.
        for x in [i64::MAX, i64::MIN] {
            let t = RingTensor::from_vec(&[1], vec![x as u64]);
            let wrong = (0..2000)
                .filter(|_| {
                    let (s0, s1) = share(&t, &mut rng);
                    let r = reconstruct(&truncate_share(&s0, 13, 0), &truncate_share(&s1, 13, 1));
                    let got = r.as_slice()[0] as i64;
                    !(got == x >> 13 || got == (x >> 13) + 1)
                })
                .count();
            assert!(wrong > 500 && wrong < 1500, "x={x}: {wrong} of 2000 wrong");
        }
    }

    #[test]
    fn constant_plan_keeps_small_constants() {
        let fp = FixedPoint::default();
        let p = fp.constant_plan(-2.1097433984e-08).unwrap();
        assert!(p.pre_shift > 0);
        let c = p.factor as i64 as f64 / 2f64.powi((fp.frac_bits + p.pre_shift) as i32);
        assert!((c / -2.1097433984e-08 - 1.0).abs() < 1e-3);
        assert_eq!(fp.constant_plan(0.5).unwrap().pre_shift, 0);
        assert_eq!(fp.constant_plan(0.0).unwrap().factor, 0);
        assert!(fp.constant_plan(f64::INFINITY).is_err());
    }
}
