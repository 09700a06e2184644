//! Fast kernels over Z_{2^64}: register-tiled wrapping u64 matrix multiply (AVX-512 picked at run time) and im2col convolution.
//!
//! All arithmetic is wrapping `u64`, i.e. exact arithmetic in the ring Z_{2^64}. Ring addition
//! is associative and commutative, so every code path (AVX-512, fallback, any blocking) returns
//! bit-identical results.
//!
//! # Matrix multiply
//! A simplified GotoBLAS/BLIS loop nest around a register-tiled micro-kernel:
//! * The micro-kernel keeps an `R × W` tile of C in registers (`W` = 16 columns, or 8 for a
//!   narrow last panel) and for every `p` does `acc[r][..] += A[i + r, p] * B[p, j..j + W]`:
//!   one broadcast of `A[i + r, p]` feeds `W / 8` multiply-adds over a row of B.
//! * On AVX-512 the main tile is 8 × 16: 16 zmm accumulators plus two B vectors and a broadcast
//!   fit the 32 zmm registers, and there are 2 `vpmullq` per broadcast, so the loop is bound by
//!   the multiplier (≈1 zmm `vpmullq` per cycle on Zen 4), not by loads.
//! * Neither A nor full-width B panels are copied: B rows are read in place (a 16-wide row is
//!   two cache lines) and `A[i, p]` is broadcast straight from the row-major input. Packing
//!   measured slower on every target shape (the conv shapes have a single B panel, so copying
//!   A or B is pure overhead). Only the last `n % 16` columns of B are copied into a zero-padded
//!   panel of width 8 or 16, so the kernel never needs a column tail.
//! * `k` is cut into blocks of `KC` = 512 (a 16-column B panel of a block is 64 KiB, streamed
//!   from L2) and `m` into blocks of `MC` = 128 rows (the 512 KiB `MC × KC` block of A is reused
//!   from L2 across all column panels). Rows left over at the bottom use the kernel
//!   instantiated with fewer rows.
//!
//! # Parallel sections
//! [`matmul_acc`], [`conv2d`], [`im2col`] and [`col2im`] split their output over [`crate::par`]
//! chunks of whole rows (of C, of the convolution's output pixels, of the im2col matrix; of the
//! batch's images for `col2im`, whose scatter-adds stay inside one image). A chunk is at least
//! [`GEMM_CHUNK_WORK`] multiply-adds (or [`COPY_CHUNK_WORDS`] words copied), and the cut depends
//! on the shapes only, so the results are bit-identical on any number of threads.
//!
//! The AVX-512 kernel uses `std::arch` intrinsics inside `#[target_feature(enable =
//! "avx512f,avx512dq")]` functions, selected by a cached run-time check, so the binary stays
//! portable. The fallback is the same loop nest with a portable kernel, compiled either for
//! AVX2 (selected at run time) or for the baseline target.

use std::ops::Range;

/// Columns of C per micro-tile: one 16-wide row = two zmm registers of u64.
const NR: usize = 16;
/// Depth of a k block. 512 keeps the B panel of a block (512 × 16 words) in L2 and keeps the
/// number of read-modify-write passes over C low; measured best among 128..1024.
const KC: usize = 512;
/// Rows of A per m block: the `MC × KC` block of A (512 KiB) stays in L2 while the kernel
/// sweeps it once per column panel.
const MC: usize = 128;

/// Least multiply-adds in a parallel chunk of a matrix multiply or convolution: about 20-40 µs
/// of one core, so the hand-off to a pool thread (tens of µs on a busy VM) stays a minor cost.
pub const GEMM_CHUNK_WORK: usize = 1 << 20;

/// Least words in a parallel chunk of a copy (im2col, col2im): about 50 µs of memory traffic.
pub const COPY_CHUNK_WORDS: usize = 1 << 16;

/// Least rows in a parallel chunk of an output with `per_row` units of work a row: enough for
/// `work` units, and a multiple of 8 (the micro-kernel's tile height).
fn min_rows(work: usize, per_row: usize) -> usize {
    work.div_ceil(per_row.max(1)).next_multiple_of(8)
}

/// C = A·B over Z_{2^64}. A is m×k, B is k×n, both row-major; returns row-major m×n.
pub fn matmul(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let mut c = vec![0u64; checked_len(m, n, "m*n")];
    matmul_acc(a, b, &mut c, m, k, n);
    c
}

/// C += A·B over Z_{2^64} (wrapping), C row-major m×n. Large products run as a parallel
/// section over blocks of rows of C ([`crate::par`]).
pub fn matmul_acc(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    check_shapes(a, b, c, m, k, n);
    if n == 0 || k == 0 {
        return;
    }
    crate::par::fill_rows(c, n, min_rows(GEMM_CHUNK_WORK, k * n), |rows, c| {
        matmul_acc_serial(&a[rows.start * k..rows.end * k], b, c, rows.len(), k, n)
    });
}

/// [`matmul_acc`] on the calling thread, with the best kernel of this CPU. Shapes checked.
fn matmul_acc_serial(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    match x86::Level::detect() {
        x86::Level::Avx512(token) => return token.gemm(a, b, c, m, k, n),
        x86::Level::Avx2(token) => return token.gemm(a, b, c, m, k, n),
        x86::Level::Baseline => {}
    }
    gemm(Portable, a, b, c, m, k, n);
}

/// [`matmul`] forced onto the portable fallback kernel compiled for the baseline target (no
/// run-time dispatch). Exposed for tests and benchmarks; results equal [`matmul`]'s.
#[doc(hidden)]
pub fn matmul_generic(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let mut c = vec![0u64; checked_len(m, n, "m*n")];
    matmul_acc_generic(a, b, &mut c, m, k, n);
    c
}

/// [`matmul_acc`] forced onto the portable fallback kernel (see [`matmul_generic`]).
#[doc(hidden)]
pub fn matmul_acc_generic(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    check_shapes(a, b, c, m, k, n);
    gemm(Portable, a, b, c, m, k, n);
}

/// `rows * cols`, panicking with a clear message if the shape overflows `usize`.
fn checked_len(rows: usize, cols: usize, what: &str) -> usize {
    rows.checked_mul(cols)
        .unwrap_or_else(|| panic!("kernels: {what} = {rows}*{cols} overflows usize"))
}

fn check_shapes(a: &[u64], b: &[u64], c: &[u64], m: usize, k: usize, n: usize) {
    let (la, lb, lc) = (
        checked_len(m, k, "m*k"),
        checked_len(k, n, "k*n"),
        checked_len(m, n, "m*n"),
    );
    assert!(
        a.len() == la,
        "matmul: A has {} elements, expected m*k = {m}*{k}",
        a.len()
    );
    assert!(
        b.len() == lb,
        "matmul: B has {} elements, expected k*n = {k}*{n}",
        b.len()
    );
    assert!(
        c.len() == lc,
        "matmul: C has {} elements, expected m*n = {m}*{n}",
        c.len()
    );
}

/// Operands of one micro-tile: `C[r][..nr] += Σ_{p<kc} A[r][p] · B[p][..nr]` for each tile row
/// `r`. Row `r` of A starts at `a[r * lda]`, row `p` of B at `b[p * ldb]`, row `r` of C at
/// `c[r * ldc]`. Every B row has `W` (tile width) readable words; those past `nr` are zero.
struct Tile<'t> {
    a: &'t [u64],
    lda: usize,
    b: &'t [u64],
    ldb: usize,
    kc: usize,
    c: &'t mut [u64],
    ldc: usize,
    nr: usize,
}

impl<'t> Tile<'t> {
    /// Checks once per tile that every access of an `R × W` tile is in bounds, so the inner
    /// loop can index without checks, and returns the `R` rows of A cut to length `kc`.
    #[inline(always)]
    fn a_rows<const R: usize, const W: usize>(&self) -> [&'t [u64]; R] {
        let kc = self.kc;
        assert!(self.nr <= W && (kc == 0 || self.b.len() >= (kc - 1) * self.ldb + W));
        assert!(R == 0 || self.c.len() >= (R - 1) * self.ldc + self.nr);
        std::array::from_fn(|r| &self.a[r * self.lda..r * self.lda + kc])
    }
}

/// A register-tiled micro-kernel family, instantiated for `R = 1..=MR` rows and `W` = 8 or 16
/// columns.
trait Kernel: Copy {
    /// Rows of the main tile.
    const MR: usize;
    fn tile<const R: usize, const W: usize>(self, t: Tile<'_>);
}

/// Portable kernel: plain wrapping arithmetic that LLVM vectorizes as far as the target
/// allows. 4 × 16 keeps the tile in 8 ymm (AVX2) or 32 xmm registers; 64-bit multiplies are
/// scalar `imul` on baseline x86-64 and emulated with `vpmuludq` on AVX2.
#[derive(Clone, Copy)]
struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;

    #[inline(always)]
    fn tile<const R: usize, const W: usize>(self, t: Tile<'_>) {
        let rows = t.a_rows::<R, W>();
        let mut acc = [[0u64; W]; R];
        for (p, b_row) in t.b.chunks(t.ldb).take(t.kc).enumerate() {
            // `a_rows` checked that every B row has `W` words, so this never fails.
            let b_row: &[u64; W] = b_row[..W].try_into().unwrap();
            for r in 0..R {
                let x = rows[r][p];
                for j in 0..W {
                    acc[r][j] = acc[r][j].wrapping_add(x.wrapping_mul(b_row[j]));
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let c_row = &mut t.c[r * t.ldc..r * t.ldc + t.nr];
            for (cj, &v) in c_row.iter_mut().zip(acc_r) {
                *cj = cj.wrapping_add(v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kernel, Portable, Tile};
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Best instruction set of the running CPU. The tokens can only be built by
    /// [`Level::detect`], so holding one proves the features are present.
    #[derive(Clone, Copy)]
    pub(super) enum Level {
        Avx512(Avx512),
        Avx2(Avx2),
        Baseline,
    }

    /// Proof that AVX-512 F+DQ (`vpmullq` on zmm) is available.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(());

    /// Proof that AVX2 is available.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(());

    /// Detection cache: 0 = not yet detected, 1 = baseline, 2 = AVX2, 3 = AVX-512.
    static LEVEL: AtomicU8 = AtomicU8::new(0);

    impl Level {
        #[inline]
        pub(super) fn detect() -> Level {
            let mut level = LEVEL.load(Ordering::Relaxed);
            if level == 0 {
                level = if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512dq")
                {
                    3
                } else if is_x86_feature_detected!("avx2") {
                    2
                } else {
                    1
                };
                LEVEL.store(level, Ordering::Relaxed);
            }
            match level {
                3 => Level::Avx512(Avx512(())),
                2 => Level::Avx2(Avx2(())),
                _ => Level::Baseline,
            }
        }
    }

    impl Avx512 {
        /// The blocked multiply with the AVX-512 kernel.
        pub(super) fn gemm(
            self,
            a: &[u64],
            b: &[u64],
            c: &mut [u64],
            m: usize,
            k: usize,
            n: usize,
        ) {
            // SAFETY: `self` exists only if `detect` saw AVX-512 F and DQ on this CPU.
            unsafe { gemm_avx512(self, a, b, c, m, k, n) }
        }
    }

    impl Avx2 {
        /// The blocked multiply with the portable kernel compiled for AVX2.
        pub(super) fn gemm(
            self,
            a: &[u64],
            b: &[u64],
            c: &mut [u64],
            m: usize,
            k: usize,
            n: usize,
        ) {
            // SAFETY: `self` exists only if `detect` saw AVX2 on this CPU.
            unsafe { gemm_avx2(a, b, c, m, k, n) }
        }
    }

    /// The SIMD paths this CPU supports, by name, so tests can check each one explicitly.
    #[cfg(test)]
    pub(super) fn available_paths() -> Vec<(&'static str, super::tests::AccFn)> {
        let mut paths: Vec<(&'static str, super::tests::AccFn)> = Vec::new();
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
            paths.push(("avx512", |a, b, c, m, k, n| {
                Avx512(()).gemm(a, b, c, m, k, n)
            }));
        }
        if is_x86_feature_detected!("avx2") {
            paths.push(("avx2", |a, b, c, m, k, n| Avx2(()).gemm(a, b, c, m, k, n)));
        }
        paths
    }

    #[target_feature(enable = "avx512f,avx512dq")]
    fn gemm_avx512(
        token: Avx512,
        a: &[u64],
        b: &[u64],
        c: &mut [u64],
        m: usize,
        k: usize,
        n: usize,
    ) {
        super::gemm(token, a, b, c, m, k, n);
    }

    #[target_feature(enable = "avx2")]
    fn gemm_avx2(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
        super::gemm(Portable, a, b, c, m, k, n);
    }

    impl Kernel for Avx512 {
        const MR: usize = 8;

        #[inline(always)]
        fn tile<const R: usize, const W: usize>(self, t: Tile<'_>) {
            // SAFETY: `self` proves AVX-512 F+DQ is available.
            unsafe { tile_avx512::<R, W>(t) }
        }
    }

    /// AVX-512 micro-kernel: the `R × W` accumulator tile is `R × W/8` zmm registers.
    #[target_feature(enable = "avx512f,avx512dq")]
    #[inline]
    fn tile_avx512<const R: usize, const W: usize>(t: Tile<'_>) {
        const { assert!(W == 8 || W == 16) };
        let rows = t.a_rows::<R, W>();
        let zero = _mm512_setzero_si512();
        let mut acc = [[zero; 2]; R];
        for p in 0..t.kc {
            let bp = t.b.as_ptr().wrapping_add(p * t.ldb);
            // SAFETY: `a_rows` checked that B row `p < kc` has `W` readable words from `bp`;
            // `loadu` has no alignment requirement.
            let b0 = unsafe { _mm512_loadu_si512(bp.cast()) };
            let b1 = if W == 16 {
                // SAFETY: as above; with `W == 16` words 8..16 of the row are readable too.
                unsafe { _mm512_loadu_si512(bp.add(8).cast()) }
            } else {
                zero
            };
            for r in 0..R {
                // SAFETY: `a_rows` cut every row of A to length `kc`, and `p < kc`.
                let x = _mm512_set1_epi64(unsafe { *rows[r].get_unchecked(p) } as i64);
                acc[r][0] = _mm512_add_epi64(acc[r][0], _mm512_mullo_epi64(x, b0));
                if W == 16 {
                    acc[r][1] = _mm512_add_epi64(acc[r][1], _mm512_mullo_epi64(x, b1));
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let c_row = &mut t.c[r * t.ldc..r * t.ldc + t.nr];
            let cp = c_row.as_mut_ptr();
            if t.nr == W {
                for (v, &acc_v) in acc_r.iter().take(W / 8).enumerate() {
                    // SAFETY: `c_row` has `nr = W` words, so words `8v..8v + 8` are in bounds.
                    unsafe {
                        let dst = cp.add(8 * v).cast();
                        _mm512_storeu_si512(dst, _mm512_add_epi64(_mm512_loadu_si512(dst), acc_v));
                    }
                }
            } else {
                let mut tmp = [0u64; 16];
                // SAFETY: `tmp` has 16 writable words; unaligned stores.
                unsafe {
                    _mm512_storeu_si512(tmp.as_mut_ptr().cast(), acc_r[0]);
                    _mm512_storeu_si512(tmp.as_mut_ptr().add(8).cast(), acc_r[1]);
                }
                for (cj, v) in c_row.iter_mut().zip(tmp) {
                    *cj = cj.wrapping_add(v);
                }
            }
        }
    }
}

/// Blocked C += A·B with kernel `K`. Shapes must already be checked.
#[inline(always)]
fn gemm<K: Kernel>(kern: K, a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let full = n / NR;
    let mut packed = Vec::new();
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let tail_w = pack_tail(b, n, pc..pc + kc, full * NR, &mut packed);
        for ic in (0..m).step_by(MC) {
            let mc = MC.min(m - ic);
            // The block A[ic.., pc..] · B[pc.., ..] added into C[ic.., ..], one strip of
            // columns at a time: full panels straight from B, then the packed tail.
            let (a_blk, c_blk) = (&a[ic * k + pc..], &mut c[ic * n..]);
            for j in (0..full * NR).step_by(NR) {
                let strip = Tile {
                    a: a_blk,
                    lda: k,
                    b: &b[pc * n + j..],
                    ldb: n,
                    kc,
                    c: &mut c_blk[j..],
                    ldc: n,
                    nr: NR,
                };
                sweep::<K, NR>(kern, mc, strip);
            }
            let tail = Tile {
                a: a_blk,
                lda: k,
                b: &packed,
                ldb: tail_w,
                kc,
                c: &mut c_blk[full * NR..],
                ldc: n,
                nr: n - full * NR,
            };
            match tail_w {
                0 => {}
                8 => sweep::<K, 8>(kern, mc, tail),
                _ => sweep::<K, NR>(kern, mc, tail),
            }
        }
    }
}

/// Runs `W`-wide tiles down the `mc` rows of a column strip whose top tile is `strip`: `MR`
/// rows at a time, then one shorter tile for the remainder.
#[inline(always)]
fn sweep<K: Kernel, const W: usize>(kern: K, mc: usize, strip: Tile<'_>) {
    let mut i = 0;
    while i < mc {
        let r = K::MR.min(mc - i);
        let t = Tile {
            a: &strip.a[i * strip.lda..],
            c: &mut strip.c[i * strip.ldc..],
            ..strip
        };
        match r {
            8 => kern.tile::<8, W>(t),
            7 => kern.tile::<7, W>(t),
            6 => kern.tile::<6, W>(t),
            5 => kern.tile::<5, W>(t),
            4 => kern.tile::<4, W>(t),
            3 => kern.tile::<3, W>(t),
            2 => kern.tile::<2, W>(t),
            1 => kern.tile::<1, W>(t),
            _ => unreachable!("tiles have 1..=8 rows"),
        }
        i += r;
    }
}

/// Copies the last `n - j0` (< 16) columns of `B[ks, ..]` into `out` as a zero-padded panel
/// of width 8 (if they fit) or 16, and returns that width (0 if there is no tail).
fn pack_tail(b: &[u64], n: usize, ks: Range<usize>, j0: usize, out: &mut Vec<u64>) -> usize {
    let w = n - j0;
    let width = match w {
        0 => return 0,
        1..=8 => 8,
        _ => NR,
    };
    out.clear();
    out.resize(ks.len() * width, 0);
    for (p, dst) in ks.zip(out.chunks_exact_mut(width)) {
        dst[..w].copy_from_slice(&b[p * n + j0..p * n + n]);
    }
    width
}

/// Zero padding mode of a convolution (TensorFlow's two modes, and ONNX's explicit pads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    /// No padding: only windows fully inside the input.
    Valid,
    /// Zero-pad so that `out = ceil(in / stride)`.
    Same,
    /// Zero rows and columns (top, left, bottom, right), as ONNX's `pads` = [top, left, bottom,
    /// right].
    Explicit([usize; 4]),
}

/// Output size and leading zero padding of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// Output spatial size and the (top, left) zero padding of a 2-D convolution, TensorFlow conventions
/// (SAME: out = ceil(in/stride), pad_total = max((out-1)*stride + f - in, 0), top = pad_total/2).
pub fn conv_geometry(
    in_h: usize,
    in_w: usize,
    fh: usize,
    fw: usize,
    stride: usize,
    padding: Padding,
) -> ConvGeometry {
    assert!(stride > 0, "conv: stride must be positive");
    let axis = |input: usize, f: usize, before: usize, after: usize| -> (usize, usize) {
        match padding {
            Padding::Explicit(_) if input + before + after >= f => {
                ((input + before + after - f) / stride + 1, before)
            }
            Padding::Explicit(_) => (0, before),
            Padding::Valid if input >= f => ((input - f) / stride + 1, 0),
            Padding::Valid => (0, 0),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = match out {
                    0 => 0,
                    _ => ((out - 1) * stride + f).saturating_sub(input),
                };
                (out, total / 2)
            }
        }
    };
    let [top, left, bottom, right] = match padding {
        Padding::Explicit(p) => p,
        _ => [0; 4],
    };
    let (out_h, pad_top) = axis(in_h, fh, top, bottom);
    let (out_w, pad_left) = axis(in_w, fw, left, right);
    ConvGeometry {
        out_h,
        out_w,
        pad_top,
        pad_left,
    }
}

/// im2col for NHWC input x of shape \[b, h, w, c\]: returns the (b*out_h*out_w) × (fh*fw*c) row-major matrix,
/// column order (dy, dx, ci) so that it multiplies an HWIO filter reshaped to (fh*fw*ci) × co. Zero padding.
#[allow(clippy::too_many_arguments)]
pub fn im2col<T: Copy + Default + Send + Sync>(
    x: &[T],
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    fh: usize,
    fw: usize,
    stride: usize,
    padding: Padding,
) -> (Vec<T>, ConvGeometry) {
    let img = Image::new(x, [b, h, w, c], fh, fw, stride, padding);
    let cols = img.cols();
    let mut out = vec![T::default(); checked_len(img.rows(), cols, "im2col size")];
    if cols > 0 {
        crate::par::fill_rows(
            &mut out,
            cols,
            min_rows(COPY_CHUNK_WORDS, cols),
            |rows, o| img.fill_rows(rows, o),
        );
    }
    (out, img.geo)
}

/// The adjoint of [`im2col`]: scatter-adds every entry of the (b·out_h·out_w) × (fh·fw·c)
/// matrix `cols` (column order (dy, dx, ci)) onto the NHWC input position it was copied from;
/// taps that fell into the zero padding are dropped. `add` is the element type's addition
/// (wrapping over the ring, plain for floats), so the float trainer and the ring backends share
/// one implementation.
#[allow(clippy::too_many_arguments)]
pub fn col2im<T: Copy + Default + Send + Sync>(
    cols: &[T],
    [b, h, w, c]: [usize; 4],
    fh: usize,
    fw: usize,
    stride: usize,
    geo: ConvGeometry,
    add: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let width = fh * fw * c;
    let per_image = geo.out_h * geo.out_w * width;
    assert_eq!(cols.len(), b * per_image, "col2im: matrix size");
    let mut dx = vec![T::default(); b * h * w * c];
    if h * w * c == 0 {
        return dx;
    }
    // One image's taps land in that image only: images are independent chunks.
    let min_images = COPY_CHUNK_WORDS.div_ceil(per_image.max(1));
    crate::par::fill_rows(&mut dx, h * w * c, min_images, |images, dx| {
        let cols = &cols[images.start * per_image..images.end * per_image];
        col2im_images(cols, [images.len(), h, w, c], fh, fw, stride, geo, &add, dx);
    });
    dx
}

/// [`col2im`] of the `b` images of `cols` into `dx` (zeroed, `b·h·w·c`), on this thread.
#[allow(clippy::too_many_arguments)]
fn col2im_images<T: Copy>(
    cols: &[T],
    [b, h, w, c]: [usize; 4],
    fh: usize,
    fw: usize,
    stride: usize,
    geo: ConvGeometry,
    add: &impl Fn(T, T) -> T,
    dx: &mut [T],
) {
    let width = fh * fw * c;
    let mut rows = cols.chunks_exact(width.max(1));
    for n in 0..b {
        for oy in 0..geo.out_h {
            for ox in 0..geo.out_w {
                let row = rows.next().expect("one row per output pixel");
                for ky in 0..fh {
                    let iy = oy * stride + ky;
                    if iy < geo.pad_top || iy - geo.pad_top >= h {
                        continue;
                    }
                    let iy = iy - geo.pad_top;
                    for kx in 0..fw {
                        let ix = ox * stride + kx;
                        if ix < geo.pad_left || ix - geo.pad_left >= w {
                            continue;
                        }
                        let ix = ix - geo.pad_left;
                        let src = &row[(ky * fw + kx) * c..][..c];
                        let dst = &mut dx[((n * h + iy) * w + ix) * c..][..c];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = add(*d, *s);
                        }
                    }
                }
            }
        }
    }
}

/// 2-D convolution over Z_{2^64}: x NHWC \[b,h,w,ci\], filter HWIO \[fh,fw,ci,co\]; returns NHWC \[b,out_h,out_w,co\] row-major.
///
/// Works as im2col + [`matmul_acc`], but builds the im2col matrix a block of rows at a time
/// (about 256 KiB) so it stays in cache instead of materializing the whole matrix. Large
/// convolutions run as a parallel section over runs of output pixels ([`crate::par`]), each
/// with its own block buffer.
pub fn conv2d(
    x: &[u64],
    xs: [usize; 4],
    f: &[u64],
    fs: [usize; 4],
    stride: usize,
    padding: Padding,
) -> (Vec<u64>, [usize; 4]) {
    let [b, _, _, ci] = xs;
    let [fh, fw, fci, co] = fs;
    assert!(
        fci == ci,
        "conv2d: filter has {fci} input channels, input has {ci}"
    );
    let f_len = checked_len(
        checked_len(fh, fw, "filter size"),
        checked_len(ci, co, "filter size"),
        "filter size",
    );
    assert!(
        f.len() == f_len,
        "conv2d: filter has {} elements, expected {fs:?}",
        f.len()
    );
    let img = Image::new(x, xs, fh, fw, stride, padding);
    let (rows, cols) = (img.rows(), img.cols());
    let mut out = vec![0u64; checked_len(rows, co, "output size")];
    if cols > 0 && co > 0 {
        // Rows per block: ~32K words of im2col, a multiple of the 8-row tile.
        let block = (32 * 1024 / cols).max(8) / 8 * 8;
        let min = min_rows(GEMM_CHUNK_WORK, cols * co);
        crate::par::fill_rows(&mut out, co, min, |chunk, out| {
            let mut buf = vec![0u64; block.min(chunk.len()) * cols];
            for r0 in chunk.clone().step_by(block) {
                let r1 = (r0 + block).min(chunk.end);
                let a = &mut buf[..(r1 - r0) * cols];
                img.fill_rows(r0..r1, a);
                let o = (r0 - chunk.start) * co..(r1 - chunk.start) * co;
                matmul_acc_serial(a, f, &mut out[o], r1 - r0, cols, co);
            }
        });
    }
    (out, [b, img.geo.out_h, img.geo.out_w, co])
}

/// `dst.copy_from_slice(src)` tuned for the short runs of im2col (often 5 words): runs of 4..=8
/// words are two possibly overlapping 4-word copies instead of a `memcpy` call.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    assert_eq!(n, src.len());
    if (4..=8).contains(&n) {
        let head: [T; 4] = src[..4].try_into().unwrap();
        let tail: [T; 4] = src[n - 4..].try_into().unwrap();
        dst[..4].copy_from_slice(&head);
        dst[n - 4..].copy_from_slice(&tail);
    } else {
        dst.copy_from_slice(src);
    }
}

/// A validated NHWC input together with the convolution window geometry.
struct Image<'a, T> {
    x: &'a [T],
    shape: [usize; 4],
    fh: usize,
    fw: usize,
    stride: usize,
    geo: ConvGeometry,
}

impl<'a, T: Copy + Default> Image<'a, T> {
    fn new(
        x: &'a [T],
        shape: [usize; 4],
        fh: usize,
        fw: usize,
        stride: usize,
        padding: Padding,
    ) -> Self {
        let [b, h, w, c] = shape;
        let len = checked_len(
            checked_len(b, h, "input size"),
            checked_len(w, c, "input size"),
            "input size",
        );
        assert!(
            x.len() == len,
            "conv: input has {} elements, expected {shape:?}",
            x.len()
        );
        let geo = conv_geometry(h, w, fh, fw, stride, padding);
        Image {
            x,
            shape,
            fh,
            fw,
            stride,
            geo,
        }
    }

    /// Number of im2col rows: one per output pixel.
    fn rows(&self) -> usize {
        let per_image = checked_len(self.geo.out_h, self.geo.out_w, "output size");
        checked_len(self.shape[0], per_image, "output size")
    }

    /// Number of im2col columns: one per filter tap and input channel.
    fn cols(&self) -> usize {
        checked_len(
            checked_len(self.fh, self.fw, "filter size"),
            self.shape[3],
            "filter size",
        )
    }

    /// Writes im2col rows `rows` into `out` (`rows.len() × cols()` row-major), one output
    /// pixel per row, working one output-image row (a run of pixels with equal `oy`) at a time.
    fn fill_rows(&self, rows: Range<usize>, mut out: &mut [T]) {
        let cols = self.cols();
        let ConvGeometry { out_h, out_w, .. } = self.geo;
        let mut row = rows.start;
        while row < rows.end && cols > 0 {
            let (image, within) = (row / (out_h * out_w), row % (out_h * out_w));
            let (oy, ox0) = (within / out_w, within % out_w);
            let ox1 = out_w.min(ox0 + (rows.end - row));
            let (chunk, rest) = std::mem::take(&mut out).split_at_mut((ox1 - ox0) * cols);
            self.fill_pixel_run(image, oy, ox0..ox1, chunk);
            out = rest;
            row += ox1 - ox0;
        }
    }

    /// im2col rows of output pixels `(bi, oy, ox)` for `ox` in `oxs`. For each filter row `dy`
    /// the in-bounds taps of a window are one contiguous run of the NHWC input row, so a window
    /// row is a single short copy (plus zero fill at the padded edges). Filter rows outer,
    /// pixels inner keeps the inner loop a plain strided copy for interior pixels.
    fn fill_pixel_run(&self, bi: usize, oy: usize, oxs: Range<usize>, dst: &mut [T]) {
        let [_, h, w, c] = self.shape;
        let (fw, stride, cols) = (self.fw, self.stride, self.cols());
        let (pad_top, pad_left) = (self.geo.pad_top, self.geo.pad_left);
        let seg = fw * c;
        // Pixels whose window is inside the input horizontally: ox*stride >= pad_left and
        // ox*stride + fw <= w + pad_left.
        let in_lo = pad_left.div_ceil(stride).clamp(oxs.start, oxs.end);
        let in_hi = match (w + pad_left).checked_sub(fw) {
            Some(last) => (last / stride + 1).clamp(in_lo, oxs.end),
            None => in_lo,
        };
        for dy in 0..self.fh {
            let iy = oy * stride + dy;
            let windows = dst
                .chunks_exact_mut(cols)
                .map(|row| &mut row[dy * seg..(dy + 1) * seg]);
            if iy < pad_top || iy - pad_top >= h {
                windows.for_each(|d| d.fill(T::default()));
                continue;
            }
            let src_row = &self.x[((bi * h + iy - pad_top) * w) * c..][..w * c];
            for (ox, d) in oxs.clone().zip(windows) {
                if (in_lo..in_hi).contains(&ox) {
                    let s = (ox * stride - pad_left) * c;
                    copy_run(d, &src_row[s..s + seg]);
                } else {
                    // Edge window: taps dx in [dx_lo, dx_hi) read input columns in [0, w).
                    let x0 = ox * stride;
                    let dx_lo = pad_left.saturating_sub(x0).min(fw);
                    let dx_hi = (w + pad_left).saturating_sub(x0).clamp(dx_lo, fw);
                    let (lo, hi) = (dx_lo * c, dx_hi * c);
                    d[..lo].fill(T::default());
                    d[hi..].fill(T::default());
                    if hi > lo {
                        let s = (x0 + dx_lo - pad_left) * c;
                        d[lo..hi].copy_from_slice(&src_row[s..s + hi - lo]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signature of a `C += A·B` implementation under test.
    pub(super) type AccFn = fn(&[u64], &[u64], &mut [u64], usize, usize, usize);

    /// xorshift64 generator: full-range u64 values, so products wrap constantly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn vec(&mut self, len: usize) -> Vec<u64> {
            (0..len).map(|_| self.next()).collect()
        }
        /// Values within 1000 of 0 or of 2^64, to stress wrap-around near the top of the ring.
        fn vec_near_max(&mut self, len: usize) -> Vec<u64> {
            (0..len)
                .map(|_| (self.next() % 2000).wrapping_sub(1000))
                .collect()
        }
    }

    fn naive_acc(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
        for i in 0..m {
            for j in 0..n {
                let mut s = c[i * n + j];
                for p in 0..k {
                    s = s.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
                }
                c[i * n + j] = s;
            }
        }
    }

    /// Every implementation: public dispatch, the baseline fallback, and each SIMD path the
    /// CPU supports.
    fn all_paths() -> Vec<(&'static str, AccFn)> {
        let paths: Vec<(&'static str, AccFn)> =
            vec![("dispatch", matmul_acc), ("generic", matmul_acc_generic)];
        #[cfg(target_arch = "x86_64")]
        let paths = [paths, x86::available_paths()].concat();
        paths
    }

    /// Odd shapes: zero dims, tiny, non-multiples of the 8 × 16 tile (column tails of width
    /// 1..15, both ≤ 8 and > 8), and k / m beyond one KC / MC block.
    const SHAPES: &[(usize, usize, usize)] = &[
        (0, 0, 0),
        (0, 5, 3),
        (4, 0, 3),
        (4, 5, 0),
        (1, 1, 1),
        (3, 5, 7),
        (1, 100, 10),
        (7, 3, 8),
        (8, 16, 16),
        (9, 17, 9),
        (15, 1, 17),
        (16, 33, 31),
        (17, 7, 24),
        (5, 9, 33),
        (33, 25, 16),
        (2, 64, 47),
        (23, 11, 100),
        (130, 20, 19),
        (MC + 9, 13, 40),
        (10, KC + 77, 21),
        (12, 2 * KC + 3, 5),
    ];

    #[test]
    fn matmul_matches_naive_on_odd_shapes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for &(m, k, n) in SHAPES {
            for near_max in [false, true] {
                let gen_vec = |rng: &mut Rng, len| {
                    if near_max {
                        rng.vec_near_max(len)
                    } else {
                        rng.vec(len)
                    }
                };
                let a = gen_vec(&mut rng, m * k);
                let b = gen_vec(&mut rng, k * n);
                let mut want = vec![0u64; m * n];
                naive_acc(&a, &b, &mut want, m, k, n);
                assert_eq!(matmul(&a, &b, m, k, n), want, "matmul {m}x{k}x{n}");
                assert_eq!(
                    matmul_generic(&a, &b, m, k, n),
                    want,
                    "matmul_generic {m}x{k}x{n}"
                );
            }
        }
    }

    #[test]
    fn matmul_acc_matches_naive_on_every_path() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for &(m, k, n) in SHAPES {
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let c0 = rng.vec(m * n);
            let mut want = c0.clone();
            naive_acc(&a, &b, &mut want, m, k, n);
            for (name, f) in all_paths() {
                let mut c = c0.clone();
                f(&a, &b, &mut c, m, k, n);
                assert_eq!(c, want, "{name} {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn all_ones_in_the_ring_wrap() {
        // (2^64 - 1)^2 = 1 mod 2^64, so every entry is k (plus the initial C, which wraps too).
        let (m, k, n) = (11, 37, 29);
        let a = vec![u64::MAX; m * k];
        let b = vec![u64::MAX; k * n];
        assert!(matmul(&a, &b, m, k, n).iter().all(|&v| v == k as u64));
        for (name, f) in all_paths() {
            let mut c = vec![u64::MAX; m * n];
            f(&a, &b, &mut c, m, k, n);
            assert!(c.iter().all(|&v| v == k as u64 - 1), "{name}");
        }
    }

    #[test]
    fn zero_sized_results() {
        assert!(matmul(&[], &[], 0, 0, 0).is_empty());
        assert_eq!(matmul(&[], &[], 2, 0, 3), vec![0; 6]);
        assert!(matmul(&[1, 2], &[], 1, 2, 0).is_empty());
        let mut c = vec![5u64; 6];
        matmul_acc(&[], &[], &mut c, 2, 0, 3);
        assert_eq!(c, vec![5; 6]);
    }

    #[test]
    #[should_panic(expected = "A has 5 elements")]
    fn wrong_a_length_panics() {
        matmul(&[0; 5], &[0; 6], 2, 3, 2);
    }

    #[test]
    #[should_panic(expected = "C has 3 elements")]
    fn wrong_c_length_panics() {
        matmul_acc(&[0; 6], &[0; 6], &mut [0; 3], 2, 3, 2);
    }

    /// Direct definition of the TF convolution: out[b,y,x,o] = Σ x[b, y*s+dy-pt, x*s+dx-pl, i] · f[dy,dx,i,o].
    fn naive_conv(
        x: &[u64],
        xs: [usize; 4],
        f: &[u64],
        fs: [usize; 4],
        stride: usize,
        padding: Padding,
    ) -> Vec<u64> {
        let [b, h, w, ci] = xs;
        let [fh, fw, _, co] = fs;
        let g = conv_geometry(h, w, fh, fw, stride, padding);
        let mut out = vec![0u64; b * g.out_h * g.out_w * co];
        for bi in 0..b {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    for o in 0..co {
                        let mut s = 0u64;
                        for dy in 0..fh {
                            for dx in 0..fw {
                                let iy = (oy * stride + dy) as isize - g.pad_top as isize;
                                let ix = (ox * stride + dx) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for i in 0..ci {
                                    let xv = x[((bi * h + iy as usize) * w + ix as usize) * ci + i];
                                    s = s.wrapping_add(
                                        xv.wrapping_mul(f[((dy * fw + dx) * ci + i) * co + o]),
                                    );
                                }
                            }
                        }
                        out[((bi * g.out_h + oy) * g.out_w + ox) * co + o] = s;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn geometry_matches_tensorflow() {
        let g = conv_geometry(28, 28, 5, 5, 2, Padding::Same);
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (14, 14, 1, 1));
        let g = conv_geometry(28, 28, 5, 5, 1, Padding::Valid);
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (24, 24, 0, 0));
        let g = conv_geometry(28, 28, 5, 5, 1, Padding::Same);
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (28, 28, 2, 2));
        let g = conv_geometry(28, 28, 5, 5, 2, Padding::Valid);
        assert_eq!((g.out_h, g.out_w), (12, 12));
        // Even filter: TF puts the odd padding at the bottom/right.
        let g = conv_geometry(7, 6, 4, 2, 1, Padding::Same);
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (7, 6, 1, 0));
        // Stride larger than the filter: no padding needed.
        let g = conv_geometry(9, 9, 1, 1, 3, Padding::Same);
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (3, 3, 0, 0));
        // Input smaller than the filter.
        let g = conv_geometry(3, 3, 5, 5, 1, Padding::Valid);
        assert_eq!((g.out_h, g.out_w), (0, 0));
    }

    #[test]
    fn conv2d_matches_naive() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        // (xs, fs, stride): odd sizes, multi-channel, filter larger than stride, 1×1 filters,
        // images smaller than the filter, and enough rows to span several im2col blocks.
        let cases: &[([usize; 4], [usize; 4], usize)] = &[
            ([1, 5, 5, 1], [3, 3, 1, 1], 1),
            ([2, 7, 6, 3], [3, 2, 3, 5], 1),
            ([2, 7, 6, 3], [3, 3, 3, 4], 2),
            ([1, 9, 11, 2], [5, 5, 2, 17], 2),
            ([3, 8, 8, 4], [1, 1, 4, 9], 1),
            ([1, 10, 10, 1], [4, 4, 1, 3], 3),
            ([1, 3, 3, 2], [5, 5, 2, 2], 1),
            ([2, 24, 24, 3], [5, 5, 3, 16], 1),
            ([1, 12, 12, 16], [5, 5, 16, 16], 1),
            ([0, 5, 5, 1], [3, 3, 1, 2], 1),
            ([1, 5, 5, 0], [3, 3, 0, 2], 1),
            ([1, 5, 5, 2], [3, 3, 2, 0], 1),
        ];
        for &(xs, fs, stride) in cases {
            for padding in [
                Padding::Valid,
                Padding::Same,
                Padding::Explicit([1, 0, 2, 1]),
            ] {
                let x = rng.vec(xs.iter().product());
                let f = rng.vec(fs.iter().product());
                let (got, shape) = conv2d(&x, xs, &f, fs, stride, padding);
                let g = conv_geometry(xs[1], xs[2], fs[0], fs[1], stride, padding);
                assert_eq!(
                    shape,
                    [xs[0], g.out_h, g.out_w, fs[3]],
                    "{xs:?} {fs:?} {stride} {padding:?}"
                );
                assert_eq!(
                    got,
                    naive_conv(&x, xs, &f, fs, stride, padding),
                    "{xs:?} {fs:?} {stride} {padding:?}"
                );

                // im2col · filter must give the same result.
                let (cols, g2) = im2col(
                    &x, xs[0], xs[1], xs[2], xs[3], fs[0], fs[1], stride, padding,
                );
                assert_eq!(g2, g);
                let rows = xs[0] * g.out_h * g.out_w;
                let mut via_cols = vec![0u64; rows * fs[3]];
                naive_acc(&cols, &f, &mut via_cols, rows, fs[0] * fs[1] * fs[2], fs[3]);
                assert_eq!(via_cols, got, "im2col {xs:?} {fs:?} {stride} {padding:?}");
            }
        }
    }

    #[test]
    fn im2col_layout() {
        // 1×3×3×2 input, 2×2 filter, SAME stride 1: pad_total = 1, so top/left pad 0 and the
        // last row/column of windows runs off the bottom/right edge.
        let x: Vec<u64> = (1..=18).collect();
        let (cols, g) = im2col(&x, 1, 3, 3, 2, 2, 2, 1, Padding::Same);
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (3, 3, 0, 0));
        assert_eq!(cols.len(), 9 * 8);
        // Window at (0, 0): pixels (0,0), (0,1), (1,0), (1,1), channels interleaved.
        assert_eq!(&cols[..8], &[1, 2, 3, 4, 7, 8, 9, 10]);
        // Window at (2, 2): only pixel (2, 2) is inside.
        assert_eq!(&cols[8 * 8..], &[17, 18, 0, 0, 0, 0, 0, 0]);
    }

    /// Shapes large enough to be cut into many parallel chunks give the same bytes on one
    /// pool thread and several, and the same as the serial kernels and the naive definitions.
    #[test]
    fn parallel_sections_are_bit_identical_to_serial() {
        let mut rng = Rng(0x5eed_0fc0_de01);
        let (m, k, n) = (300, 129, 97); // 3.8 M multiply-adds: several chunks
        let (a, b) = (rng.vec(m * k), rng.vec(k * n));
        let xs = [16, 14, 14, 3];
        let fs = [5, 5, 3, 20];
        let (x, f) = (rng.vec(xs.iter().product()), rng.vec(fs.iter().product()));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let conv = conv2d(&x, xs, &f, fs, 1, Padding::Same).0;
                let (cols, geo) = im2col(&x, 16, 14, 14, 3, 5, 5, 1, Padding::Same);
                let back = col2im(&cols, xs, 5, 5, 1, geo, u64::wrapping_add);
                (matmul(&a, &b, m, k, n), conv, cols, back)
            })
        };
        let one = run(1);
        assert_eq!(one, run(3));
        let mut c = vec![0u64; m * n];
        naive_acc(&a, &b, &mut c, m, k, n);
        assert_eq!(one.0, c);
        assert_eq!(one.1, naive_conv(&x, xs, &f, fs, 1, Padding::Same));
        let geo = conv_geometry(14, 14, 5, 5, 1, Padding::Same);
        let mut serial = vec![0u64; x.len()];
        col2im_images(&one.2, xs, 5, 5, 1, geo, &u64::wrapping_add, &mut serial);
        assert_eq!(one.3, serial);
    }

    #[test]
    #[should_panic(expected = "input channels")]
    fn conv2d_channel_mismatch_panics() {
        conv2d(
            &[0; 8],
            [1, 2, 2, 2],
            &[0; 3],
            [1, 1, 3, 1],
            1,
            Padding::Valid,
        );
    }
}
