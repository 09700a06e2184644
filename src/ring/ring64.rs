//! Tensors over Z_{2^64}: wrapping u64 arithmetic on ndarray arrays.

use super::kernels::{self, Padding};
use super::random_u64s;
use ndarray::{ArrayD, IxDyn};
use rand_core::Rng;

/// Least elements in a parallel chunk of an elementwise operation ([`crate::par`]): 1 MiB of
/// each operand, a few hundred µs of memory traffic.
const ELEMENTWISE_CHUNK: usize = 1 << 17;

/// A tensor over Z_{2^64}. Always in standard (row-major, contiguous) layout.
#[derive(Clone, PartialEq, Eq)]
pub struct RingTensor(ArrayD<u64>);

impl std::fmt::Debug for RingTensor {
    // Shape only: a ring tensor is usually a share.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingTensor{:?}", self.shape())
    }
}

impl RingTensor {
    /// A tensor of `shape` from row-major `data`. Panics if the lengths disagree (a caller bug).
    pub fn from_vec(shape: &[usize], data: Vec<u64>) -> Self {
        assert_eq!(
            super::numel(shape),
            data.len(),
            "data length does not match shape {shape:?}"
        );
        Self(ArrayD::from_shape_vec(IxDyn(shape), data).expect("length checked"))
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self(ArrayD::zeros(IxDyn(shape)))
    }

    /// Every element equal to `v`.
    pub fn filled(shape: &[usize], v: u64) -> Self {
        Self(ArrayD::from_elem(IxDyn(shape), v))
    }

    /// Uniformly random elements from `rng`.
    pub fn random<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Self {
        Self::from_vec(shape, random_u64s(rng, super::numel(shape)))
    }

    pub fn from_array(a: ArrayD<u64>) -> Self {
        if a.is_standard_layout() {
            Self(a)
        } else {
            Self(a.as_standard_layout().into_owned())
        }
    }

    pub fn array(&self) -> &ArrayD<u64> {
        &self.0
    }

    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[u64] {
        self.0.as_slice().expect("standard layout")
    }

    pub fn as_mut_slice(&mut self) -> &mut [u64] {
        self.0.as_slice_mut().expect("standard layout")
    }

    pub fn into_vec(self) -> Vec<u64> {
        let (v, off) = self.0.into_raw_vec_and_offset();
        debug_assert!(matches!(off, None | Some(0)));
        v
    }

    /// Same data, new shape (element count must match).
    pub fn reshape(self, shape: &[usize]) -> Self {
        let v = self.into_vec();
        Self::from_vec(shape, v)
    }

    /// Apply `f` to every element.
    pub fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self::from_vec(
            self.shape(),
            self.as_slice().iter().map(|&x| f(x)).collect(),
        )
    }

    /// Combine two tensors of the same shape elementwise.
    pub fn zip_map(&self, o: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        assert_eq!(self.shape(), o.shape(), "shape mismatch");
        Self::from_vec(
            self.shape(),
            self.as_slice()
                .iter()
                .zip(o.as_slice())
                .map(|(&a, &b)| f(a, b))
                .collect(),
        )
    }

    /// [`RingTensor::zip_map`] as a parallel section on large tensors ([`crate::par`]).
    fn zip_par(&self, o: &Self, f: impl Fn(u64, u64) -> u64 + Sync) -> Self {
        assert_eq!(self.shape(), o.shape(), "shape mismatch");
        let mut out = vec![0u64; self.len()];
        crate::par::zip_into(
            &mut out,
            self.as_slice(),
            o.as_slice(),
            ELEMENTWISE_CHUNK,
            f,
        );
        Self::from_vec(self.shape(), out)
    }

    /// [`RingTensor::map`] as a parallel section on large tensors ([`crate::par`]).
    fn map_par(&self, f: impl Fn(u64) -> u64 + Sync) -> Self {
        let a = self.as_slice();
        let mut out = vec![0u64; a.len()];
        crate::par::fill(&mut out, ELEMENTWISE_CHUNK, |r, o| {
            for (o, &x) in o.iter_mut().zip(&a[r]) {
                *o = f(x);
            }
        });
        Self::from_vec(self.shape(), out)
    }

    pub fn add(&self, o: &Self) -> Self {
        self.zip_par(o, u64::wrapping_add)
    }

    pub fn sub(&self, o: &Self) -> Self {
        self.zip_par(o, u64::wrapping_sub)
    }

    pub fn neg(&self) -> Self {
        self.map_par(u64::wrapping_neg)
    }

    /// Elementwise product.
    pub fn mul(&self, o: &Self) -> Self {
        self.zip_par(o, u64::wrapping_mul)
    }

    /// Multiply every element by the ring constant `c`.
    pub fn scale(&self, c: u64) -> Self {
        self.map_par(|x| x.wrapping_mul(c))
    }

    /// In-place `self += o`.
    pub fn add_assign(&mut self, o: &Self) {
        assert_eq!(self.shape(), o.shape(), "shape mismatch");
        let b = o.as_slice();
        crate::par::fill(self.as_mut_slice(), ELEMENTWISE_CHUNK, |r, a| {
            for (a, &b) in a.iter_mut().zip(&b[r]) {
                *a = a.wrapping_add(b);
            }
        });
    }

    /// Matrix product of 2-D tensors (m×k)·(k×n).
    pub fn matmul(&self, o: &Self) -> Self {
        let (m, k, n) = matmul_dims(self.shape(), o.shape());
        Self::from_vec(
            &[m, n],
            kernels::matmul(self.as_slice(), o.as_slice(), m, k, n),
        )
    }

    /// 2-D convolution of an NHWC tensor with an HWIO filter.
    pub fn conv2d(&self, filter: &Self, stride: usize, padding: Padding) -> Self {
        let xs = dims4(self.shape(), "conv2d input (NHWC)");
        let fs = dims4(filter.shape(), "conv2d filter (HWIO)");
        let (out, shape) =
            kernels::conv2d(self.as_slice(), xs, filter.as_slice(), fs, stride, padding);
        Self::from_vec(&shape, out)
    }

    /// The transpose of a 2-D tensor.
    pub fn transpose(&self) -> Self {
        let [m, n]: [usize; 2] = self
            .shape()
            .try_into()
            .unwrap_or_else(|_| panic!("transpose of a {:?} tensor", self.shape()));
        let a = self.as_slice();
        let mut out = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[j * m + i] = a[i * n + j];
            }
        }
        Self::from_vec(&[n, m], out)
    }

    /// The gradient of a convolution's filter: for this NHWC input x and the output's gradient
    /// `dy` (NHWC), im2col(x)ᵀ · dy as an HWIO filter of spatial size `kernel`.
    pub fn conv2d_filter_grad(
        &self,
        dy: &Self,
        kernel: [usize; 2],
        stride: usize,
        padding: Padding,
    ) -> Self {
        let [b, h, w, c] = dims4(self.shape(), "conv2d input (NHWC)");
        let co = *dy.shape().last().expect("conv2d output (NHWC)");
        let (cols, geo) = kernels::im2col(
            self.as_slice(),
            b,
            h,
            w,
            c,
            kernel[0],
            kernel[1],
            stride,
            padding,
        );
        let rows = b * geo.out_h * geo.out_w;
        assert_eq!(dy.len(), rows * co, "conv2d output gradient shape");
        let width = kernel[0] * kernel[1] * c;
        let cols = Self::from_vec(&[rows, width], cols).transpose();
        Self::from_vec(
            &[kernel[0], kernel[1], c, co],
            kernels::matmul(cols.as_slice(), dy.as_slice(), width, rows, co),
        )
    }

    /// The gradient of a convolution's input of shape `input` (NHWC): col2im(dy · filterᵀ) for
    /// the output's gradient `dy` (this tensor, NHWC) and the HWIO `filter`.
    pub fn conv2d_input_grad(
        &self,
        filter: &Self,
        input: [usize; 4],
        stride: usize,
        padding: Padding,
    ) -> Self {
        let [fh, fw, ci, co] = dims4(filter.shape(), "conv2d filter (HWIO)");
        let geo = kernels::conv_geometry(input[1], input[2], fh, fw, stride, padding);
        let rows = input[0] * geo.out_h * geo.out_w;
        assert_eq!(self.len(), rows * co, "conv2d output gradient shape");
        let wt = filter.clone().reshape(&[fh * fw * ci, co]).transpose();
        let dcols = kernels::matmul(self.as_slice(), wt.as_slice(), rows, co, fh * fw * ci);
        let dx = kernels::col2im(&dcols, input, fh, fw, stride, geo, u64::wrapping_add);
        Self::from_vec(&input, dx)
    }

    /// Sum over the windows of an NHWC tensor (padded cells count as zero).
    pub fn sum_window(&self, window: &super::Window) -> Self {
        let shape = self.shape().to_vec();
        let mut out: Option<Self> = None;
        for t in 0..window.cells() {
            let part = self.gather(&window.part(&shape, t, super::PadCell::Zero));
            match &mut out {
                None => out = Some(part),
                Some(acc) => acc.add_assign(&part),
            }
        }
        out.expect("a window has cells")
    }

    /// The gathered tensor (zeros where the map says so).
    pub fn gather(&self, g: &super::Gather) -> Self {
        Self::from_vec(&g.shape, g.apply(self.as_slice(), 0))
    }

    /// Tensors with equal leading axes, concatenated along the last axis.
    pub fn concat_last(parts: &[&Self]) -> Self {
        let first = parts.first().expect("at least one tensor").shape();
        let lead = &first[..first.len() - 1];
        let rows: usize = lead.iter().product();
        let cols: Vec<(&[u64], usize)> = parts
            .iter()
            .map(|p| (p.as_slice(), *p.shape().last().expect("an axis")))
            .collect();
        let width = cols.iter().map(|(_, c)| c).sum::<usize>();
        let mut shape = lead.to_vec();
        shape.push(width);
        Self::from_vec(&shape, super::window::concat_last(&cols, rows))
    }

    /// Element t (= dy·k + dx) of every non-overlapping k×k window of an NHWC tensor.
    pub fn pool_window(&self, k: usize, t: usize) -> Self {
        self.gather(&super::Window::square(k).part(self.shape(), t, super::PadCell::Zero))
    }

    /// The inverse of [`RingTensor::pool_window`]: `parts[t]` back into window position t of an
    /// NHWC tensor of spatial size (h/k·k, w/k·k).
    pub fn unpool_windows(parts: &[Self], k: usize) -> Self {
        assert_eq!(parts.len(), k * k, "one part per window position");
        let [b, oh, ow, c] = dims4(parts[0].shape(), "pooled part (NHWC)");
        let (h, w) = (oh * k, ow * k);
        let mut out = vec![0u64; b * h * w * c];
        for (t, part) in parts.iter().enumerate() {
            let (dy, dx) = (t / k, t % k);
            let p = part.as_slice();
            for n in 0..b {
                for i in 0..oh {
                    for j in 0..ow {
                        let src = ((n * oh + i) * ow + j) * c;
                        let dst = ((n * h + i * k + dy) * w + j * k + dx) * c;
                        out[dst..dst + c].copy_from_slice(&p[src..src + c]);
                    }
                }
            }
        }
        Self::from_vec(&[b, h, w, c], out)
    }

    /// Add a per-last-axis vector (a bias) to every row.
    pub fn add_rows(&self, bias: &Self) -> Self {
        let c = *self.shape().last().expect("non-scalar");
        assert_eq!(bias.len(), c, "bias length must equal the last axis");
        let b = bias.as_slice();
        let mut out = self.clone();
        for (i, v) in out.as_mut_slice().iter_mut().enumerate() {
            *v = v.wrapping_add(b[i % c]);
        }
        out
    }
}

/// (m, k, n) of a 2-D product, panicking with both shapes if they do not fit.
pub(crate) fn matmul_dims(a: &[usize], b: &[usize]) -> (usize, usize, usize) {
    assert!(
        a.len() == 2 && b.len() == 2 && a[1] == b[0],
        "matmul of {a:?} by {b:?}"
    );
    (a[0], a[1], b[1])
}

pub(crate) fn dims4(s: &[usize], what: &str) -> [usize; 4] {
    s.try_into()
        .unwrap_or_else(|_| panic!("{what} must be 4-D, got {s:?}"))
}
