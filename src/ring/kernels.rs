//! Fast kernels over Z_{2^64} (placeholder naive version, replaced by the tiled kernel).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
}

pub struct ConvGeometry {
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

pub fn matmul(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    let mut c = vec![0u64; m * n];
    matmul_acc(a, b, &mut c, m, k, n);
    c
}

pub fn matmul_acc(a: &[u64], b: &[u64], c: &mut [u64], m: usize, k: usize, n: usize) {
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p];
            for j in 0..n {
                c[i * n + j] = c[i * n + j].wrapping_add(av.wrapping_mul(b[p * n + j]));
            }
        }
    }
}

pub fn conv_geometry(
    in_h: usize,
    in_w: usize,
    fh: usize,
    fw: usize,
    stride: usize,
    padding: Padding,
) -> ConvGeometry {
    match padding {
        Padding::Valid => ConvGeometry {
            out_h: (in_h - fh) / stride + 1,
            out_w: (in_w - fw) / stride + 1,
            pad_top: 0,
            pad_left: 0,
        },
        Padding::Same => {
            let out_h = in_h.div_ceil(stride);
            let out_w = in_w.div_ceil(stride);
            let ph = ((out_h - 1) * stride + fh).saturating_sub(in_h);
            let pw = ((out_w - 1) * stride + fw).saturating_sub(in_w);
            ConvGeometry {
                out_h,
                out_w,
                pad_top: ph / 2,
                pad_left: pw / 2,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn im2col<T: Copy + Default>(
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
    let g = conv_geometry(h, w, fh, fw, stride, padding);
    let cols = fh * fw * c;
    let mut out = vec![T::default(); b * g.out_h * g.out_w * cols];
    for n in 0..b {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let row = ((n * g.out_h + oy) * g.out_w + ox) * cols;
                for dy in 0..fh {
                    for dx in 0..fw {
                        let iy = (oy * stride + dy) as isize - g.pad_top as isize;
                        let ix = (ox * stride + dx) as isize - g.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let src = ((n * h + iy as usize) * w + ix as usize) * c;
                        let dst = row + (dy * fw + dx) * c;
                        out[dst..dst + c].copy_from_slice(&x[src..src + c]);
                    }
                }
            }
        }
    }
    (out, g)
}

pub fn conv2d(
    x: &[u64],
    xs: [usize; 4],
    f: &[u64],
    fs: [usize; 4],
    stride: usize,
    padding: Padding,
) -> (Vec<u64>, [usize; 4]) {
    let [b, h, w, c] = xs;
    let [fh, fw, ci, co] = fs;
    assert_eq!(c, ci);
    let (cols, g) = im2col(x, b, h, w, c, fh, fw, stride, padding);
    let out = matmul(&cols, f, b * g.out_h * g.out_w, fh * fw * ci, co);
    (out, [b, g.out_h, g.out_w, co])
}
