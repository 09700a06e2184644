//! Fixed-width wire encoding of protocol values.
//!
//! Protocol code is SPMD: the receiver always knows the shape of what it waits for, so a value
//! travels as its raw little-endian elements with no length prefix, and the receiver checks the
//! length. A Z_{2^64} element costs exactly 8 bytes, a Z_67 element 1 byte, which is what the
//! SecureNN paper counts.

use crate::ring::{OddTensor, P, RingTensor, Z67Vec, numel};

/// A value that can be sent between parties.
pub trait Wire: Sized {
    /// What the receiver must know to decode (a tensor's shape, a vector's length).
    type Shape;
    /// Exact encoded size for `shape`.
    fn wire_len(shape: &Self::Shape) -> usize;
    fn write(&self, out: &mut Vec<u8>);
    /// Decode `bytes`, whose length is already checked to be `wire_len(shape)`.
    fn read(bytes: &[u8], shape: &Self::Shape) -> Result<Self, String>;
}

/// Least words in a parallel chunk of encoding or decoding ([`crate::par`]): 1 MiB.
const CODEC_CHUNK_WORDS: usize = 1 << 17;

fn read_u64s(bytes: &[u8]) -> Vec<u64> {
    let mut out = vec![0u64; bytes.len() / 8];
    crate::par::fill(&mut out, CODEC_CHUNK_WORDS, |r, o| {
        for (o, c) in o
            .iter_mut()
            .zip(bytes[r.start * 8..r.end * 8].chunks_exact(8))
        {
            *o = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        }
    });
    out
}

fn write_u64s(v: &[u64], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + v.len() * 8, 0);
    crate::par::fill_rows(&mut out[start..], 8, CODEC_CHUNK_WORDS, |r, o| {
        for (x, o) in v[r].iter().zip(o.chunks_exact_mut(8)) {
            o.copy_from_slice(&x.to_le_bytes());
        }
    });
}

impl Wire for RingTensor {
    type Shape = Vec<usize>;
    fn wire_len(shape: &Vec<usize>) -> usize {
        numel(shape) * 8
    }
    fn write(&self, out: &mut Vec<u8>) {
        write_u64s(self.as_slice(), out);
    }
    fn read(bytes: &[u8], shape: &Vec<usize>) -> Result<Self, String> {
        Ok(RingTensor::from_vec(shape, read_u64s(bytes)))
    }
}

impl Wire for OddTensor {
    type Shape = Vec<usize>;
    fn wire_len(shape: &Vec<usize>) -> usize {
        numel(shape) * 8
    }
    fn write(&self, out: &mut Vec<u8>) {
        write_u64s(self.as_slice(), out);
    }
    fn read(bytes: &[u8], shape: &Vec<usize>) -> Result<Self, String> {
        let v = read_u64s(bytes);
        if let Some(i) = v.iter().position(|&x| x == u64::MAX) {
            return Err(format!("element {i} is 2^64-1, which is not in Z_(2^64-1)"));
        }
        Ok(OddTensor::from_vec(shape, v))
    }
}

impl Wire for Z67Vec {
    type Shape = usize;
    fn wire_len(n: &usize) -> usize {
        *n
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_slice());
    }
    fn read(bytes: &[u8], _n: &usize) -> Result<Self, String> {
        if let Some(i) = bytes.iter().position(|&b| b >= P) {
            return Err(format!("element {i} is {}, not below 67", bytes[i]));
        }
        Ok(Z67Vec::from_vec(bytes.to_vec()))
    }
}

/// Z_67 values on the wire, raw (one byte each, as the SecureNN paper counts them) or packed
/// in base 67 (ten per eight bytes, [`Z67Vec::write_packed`]); the receiver's shape says which.
pub struct Z67Wire {
    pub values: Z67Vec,
    pub packed: bool,
}

impl Wire for Z67Wire {
    /// (values, packed)
    type Shape = (usize, bool);
    fn wire_len(&(n, packed): &(usize, bool)) -> usize {
        if packed {
            crate::ring::z67::packed_len(n)
        } else {
            n
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        if self.packed {
            self.values.write_packed(out);
        } else {
            self.values.write(out);
        }
    }
    fn read(bytes: &[u8], &(n, packed): &(usize, bool)) -> Result<Self, String> {
        let values = if packed {
            Z67Vec::read_packed(bytes, n)?
        } else {
            Z67Vec::read(bytes, &n)?
        };
        Ok(Self { values, packed })
    }
}

/// Values below 2^width, `width` bits each on the wire (1..=64; the last byte padded with
/// zeros): what a comparison on fewer bits opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowBits {
    pub values: Vec<u64>,
    pub width: u32,
}

impl Wire for LowBits {
    /// (values, width)
    type Shape = (usize, u32);
    fn wire_len(&(n, width): &(usize, u32)) -> usize {
        (n * width as usize).div_ceil(8)
    }
    fn write(&self, out: &mut Vec<u8>) {
        let w = self.width;
        let mut acc: u128 = 0;
        let mut held = 0u32;
        out.reserve((self.values.len() * w as usize).div_ceil(8));
        for &v in &self.values {
            debug_assert!(w == 64 || v >> w == 0, "value beyond its width");
            acc |= (v as u128) << held;
            held += w;
            while held >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                held -= 8;
            }
        }
        if held > 0 {
            out.push(acc as u8);
        }
    }
    fn read(bytes: &[u8], &(n, width): &(usize, u32)) -> Result<Self, String> {
        if !(1..=64).contains(&width) {
            return Err(format!("a width of {width} bits is not in 1..=64"));
        }
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let mut values = Vec::with_capacity(n);
        let mut acc: u128 = 0;
        let mut held = 0u32;
        let mut it = bytes.iter();
        for _ in 0..n {
            while held < width {
                acc |= (*it.next().expect("length checked") as u128) << held;
                held += 8;
            }
            values.push(acc as u64 & mask);
            acc >>= width;
            held -= width;
        }
        if acc != 0 {
            return Err("nonzero padding bits after the last value".into());
        }
        Ok(Self { values, width })
    }
}

impl Wire for [u8; 32] {
    type Shape = ();
    fn wire_len(_: &()) -> usize {
        32
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn read(bytes: &[u8], _: &()) -> Result<Self, String> {
        Ok(bytes.try_into().expect("length checked"))
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    type Shape = (A::Shape, B::Shape);
    fn wire_len(s: &Self::Shape) -> usize {
        A::wire_len(&s.0) + B::wire_len(&s.1)
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.0.write(out);
        self.1.write(out);
    }
    fn read(bytes: &[u8], s: &Self::Shape) -> Result<Self, String> {
        let (a, b) = bytes.split_at(A::wire_len(&s.0));
        Ok((A::read(a, &s.0)?, B::read(b, &s.1)?))
    }
}

impl<A: Wire, B: Wire, C: Wire> Wire for (A, B, C) {
    type Shape = (A::Shape, B::Shape, C::Shape);
    fn wire_len(s: &Self::Shape) -> usize {
        A::wire_len(&s.0) + B::wire_len(&s.1) + C::wire_len(&s.2)
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.0.write(out);
        self.1.write(out);
        self.2.write(out);
    }
    fn read(bytes: &[u8], s: &Self::Shape) -> Result<Self, String> {
        let (a, rest) = bytes.split_at(A::wire_len(&s.0));
        let (b, c) = rest.split_at(B::wire_len(&s.1));
        Ok((A::read(a, &s.0)?, B::read(b, &s.1)?, C::read(c, &s.2)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(v: &T, s: &T::Shape) {
        let mut out = Vec::new();
        v.write(&mut out);
        assert_eq!(out.len(), T::wire_len(s));
        assert_eq!(&T::read(&out, s).unwrap(), v);
    }

    #[test]
    fn fixed_width_round_trips() {
        let r = RingTensor::from_vec(&[2, 2], vec![u64::MAX, 0, 1, 1 << 63]);
        round_trip(&r, &vec![2, 2]);
        let z = Z67Vec::from_vec(vec![0, 66, 5]);
        round_trip(&z, &3);
        let o = OddTensor::from_vec(&[2], vec![u64::MAX - 1, 3]);
        round_trip(&(r.clone(), o), &(vec![2, 2], vec![2]));
        // A random u64 costs 8 bytes, not a varint.
        assert_eq!(RingTensor::wire_len(&vec![1000]), 8000);
    }

    /// Tensors long enough to encode as parallel sections: the same bytes on one thread and
    /// several, appended after what the buffer holds.
    #[test]
    fn long_tensors_encode_the_same_on_any_number_of_threads() {
        let n = 20 * CODEC_CHUNK_WORDS + 3;
        let v: Vec<u64> = (0..n as u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut out = vec![7u8];
                write_u64s(&v, &mut out);
                let back = read_u64s(&out[1..]);
                (out, back)
            })
        };
        let (bytes, back) = run(1);
        assert_eq!((bytes.clone(), back.clone()), run(3));
        assert_eq!(back, v);
        assert_eq!(bytes[0], 7);
        assert_eq!(&bytes[1 + 8 * 5..1 + 8 * 6], &v[5].to_le_bytes());
    }

    #[test]
    fn low_bits_round_trip_at_every_width() {
        for width in 1..=64u32 {
            let top = if width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            let v = LowBits {
                values: vec![0, top, top / 3, 1, top ^ 1],
                width,
            };
            round_trip(&v, &(5, width));
        }
        assert_eq!(LowBits::wire_len(&(10, 20)), 25);
        assert!(LowBits::read(&[0xff], &(1, 4)).is_err(), "padding bits");
    }

    #[test]
    fn out_of_field_values_are_rejected() {
        assert!(Z67Vec::read(&[1, 67], &2).is_err());
        assert!(OddTensor::read(&u64::MAX.to_le_bytes(), &vec![1]).is_err());
    }
}
