//! Pooling windows over NHWC tensors (kernel, stride, zero padding: ONNX's MaxPool and
//! AveragePool geometry) and index maps (gathers), the local data movement that pooling, padding,
//! concatenation and broadcasting share on every backend: a gather applied to each share is the
//! gather of the secret, because shares of zero are zeros.

use serde::{Deserialize, Serialize};

/// A 2-D pooling window: kernel (height, width), stride (vertical, horizontal) and zero padding
/// (top, left, bottom, right), as ONNX writes them (`pads` = [top, left, bottom, right]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pads: [usize; 4],
}

/// What a padded cell of a window holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadCell {
    /// Zero (sums and averages).
    Zero,
    /// A copy of the window's first cell inside the input (maxima: a repeated value cannot
    /// change a maximum, whereas a zero would beat a window of negative values).
    Repeat,
}

impl Window {
    /// Non-overlapping k×k windows without padding (the paper's pooling).
    pub fn square(k: usize) -> Self {
        Self {
            kernel: [k, k],
            stride: [k, k],
            pads: [0; 4],
        }
    }

    /// The k of [`Window::square`], if this window is one.
    pub fn as_square(&self) -> Option<usize> {
        (*self == Self::square(self.kernel[0])).then_some(self.kernel[0])
    }

    /// Number of cells of a window.
    pub fn cells(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Output (height, width) on an input of (h, w), or why the window does not fit.
    pub fn output(&self, h: usize, w: usize) -> Result<(usize, usize), String> {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [pt, pl, pb, pr] = self.pads;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return Err(format!(
                "kernel {kh}x{kw} and stride {sh}x{sw} must be at least 1"
            ));
        }
        if pt >= kh || pb >= kh || pl >= kw || pr >= kw {
            return Err(format!(
                "padding {:?} must be smaller than the {kh}x{kw} kernel",
                self.pads
            ));
        }
        let (ph, pw) = (h + pt + pb, w + pl + pr);
        if ph < kh || pw < kw {
            return Err(format!(
                "a {kh}x{kw} window does not fit a {h}x{w} input padded by {:?}",
                self.pads
            ));
        }
        Ok(((ph - kh) / sh + 1, (pw - kw) / sw + 1))
    }

    /// Input cell (y, x) of cell `t` (= dy·kw + dx) of the window at output (oy, ox), or `None`
    /// where it falls in the padding.
    fn source(&self, h: usize, w: usize, oy: usize, ox: usize, t: usize) -> Option<(usize, usize)> {
        let (dy, dx) = (t / self.kernel[1], t % self.kernel[1]);
        let y = (oy * self.stride[0] + dy).checked_sub(self.pads[0])?;
        let x = (ox * self.stride[1] + dx).checked_sub(self.pads[1])?;
        (y < h && x < w).then_some((y, x))
    }

    /// Number of cells inside the input of the window at output (oy, ox).
    pub fn inside(&self, h: usize, w: usize, oy: usize, ox: usize) -> usize {
        (0..self.cells())
            .filter(|&t| self.source(h, w, oy, ox, t).is_some())
            .count()
    }

    /// The gather that takes cell `t` of every window of an NHWC tensor of shape `[b, h, w, c]`
    /// (the window must fit: see [`Window::output`]).
    pub fn part(&self, shape: &[usize], t: usize, pad: PadCell) -> Gather {
        let [b, h, w, c]: [usize; 4] = shape.try_into().expect("NHWC shape");
        let (oh, ow) = self.output(h, w).expect("window fits");
        let mut index = Vec::with_capacity(b * oh * ow * c);
        for n in 0..b {
            for oy in 0..oh {
                for ox in 0..ow {
                    let cell = self.source(h, w, oy, ox, t).or_else(|| match pad {
                        PadCell::Zero => None,
                        PadCell::Repeat => {
                            (0..self.cells()).find_map(|u| self.source(h, w, oy, ox, u))
                        }
                    });
                    match cell {
                        Some((y, x)) => {
                            let base = ((n * h + y) * w + x) * c;
                            index.extend(base..base + c);
                        }
                        None => index.extend(std::iter::repeat_n(Gather::ZERO, c)),
                    }
                }
            }
        }
        Gather {
            shape: vec![b, oh, ow, c],
            index,
        }
    }
}

/// A local data movement: output element i is input element `index[i]`, or zero where
/// `index[i]` is [`Gather::ZERO`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gather {
    pub shape: Vec<usize>,
    pub index: Vec<usize>,
}

impl Gather {
    /// The index of a zero output element.
    pub const ZERO: usize = usize::MAX;

    /// Apply to a flat slice (`default` for zeros).
    pub fn apply<T: Copy>(&self, x: &[T], zero: T) -> Vec<T> {
        self.index
            .iter()
            .map(|&i| if i == Self::ZERO { zero } else { x[i] })
            .collect()
    }

    /// Zero padding of the spatial axes of an NHWC tensor by (top, left, bottom, right).
    pub fn pad2d(shape: &[usize], pads: [usize; 4]) -> Self {
        let [b, h, w, c]: [usize; 4] = shape.try_into().expect("NHWC shape");
        let [pt, pl, pb, pr] = pads;
        let (oh, ow) = (h + pt + pb, w + pl + pr);
        let mut index = Vec::with_capacity(b * oh * ow * c);
        for n in 0..b {
            for y in 0..oh {
                for x in 0..ow {
                    match (y.checked_sub(pt), x.checked_sub(pl)) {
                        (Some(sy), Some(sx)) if sy < h && sx < w => {
                            let base = ((n * h + sy) * w + sx) * c;
                            index.extend(base..base + c);
                        }
                        _ => index.extend(std::iter::repeat_n(Self::ZERO, c)),
                    }
                }
            }
        }
        Self {
            shape: vec![b, oh, ow, c],
            index,
        }
    }

    /// A vector of `shape`'s last axis repeated over the leading axes (a per-channel value
    /// broadcast to every position).
    pub fn broadcast_last(shape: &[usize]) -> Self {
        let c = *shape.last().expect("at least one axis");
        let n: usize = shape.iter().product();
        Self {
            shape: shape.to_vec(),
            index: (0..n).map(|i| i % c).collect(),
        }
    }

    /// Element `choose[p]` of a stack of `m` equal-shaped tensors concatenated along their last
    /// axis (shape [..., m·c]), for every position p of the original shape [..., c].
    pub fn pick_stacked(shape: &[usize], choose: &[usize]) -> Self {
        let c = *shape.last().expect("at least one axis");
        let rows: usize = shape.iter().product::<usize>() / c.max(1);
        let m = choose.iter().max().map_or(1, |&k| k + 1);
        let mut index = Vec::with_capacity(rows * c);
        for r in 0..rows {
            for ch in 0..c {
                let p = r * c + ch;
                index.push(r * m * c + choose[p] * c + ch);
            }
        }
        Self {
            shape: shape.to_vec(),
            index,
        }
    }
}

/// Concatenate row-major tensors along their last axis (all leading axes equal).
pub fn concat_last<T: Copy>(parts: &[(&[T], usize)], rows: usize) -> Vec<T> {
    let width: usize = parts.iter().map(|(_, c)| c).sum();
    let mut out = Vec::with_capacity(rows * width);
    for r in 0..rows {
        for (data, c) in parts {
            out.extend_from_slice(&data[r * c..(r + 1) * c]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_windows_tile() {
        let w = Window::square(2);
        assert_eq!(w.output(4, 6), Ok((2, 3)));
        assert_eq!(w.as_square(), Some(2));
        let g = w.part(&[1, 2, 2, 1], 3, PadCell::Zero);
        assert_eq!(g.index, vec![3]);
    }

    #[test]
    fn padded_windows_zero_or_repeat() {
        // 3x3 stride 2 pad 1 on a 3x3 image: 2x2 outputs.
        let w = Window {
            kernel: [3, 3],
            stride: [2, 2],
            pads: [1, 1, 1, 1],
        };
        assert_eq!(w.output(3, 3), Ok((2, 2)));
        // Cell 0 of the first window is padding.
        let z = w.part(&[1, 3, 3, 1], 0, PadCell::Zero);
        assert_eq!(z.index[0], Gather::ZERO);
        let r = w.part(&[1, 3, 3, 1], 0, PadCell::Repeat);
        assert_eq!(
            r.index[0], 0,
            "first inside cell of window (0, 0) is (0, 0)"
        );
        assert_eq!(w.inside(3, 3, 0, 0), 4);
        assert_eq!(w.inside(3, 3, 1, 1), 4);
        assert!(
            Window {
                pads: [3, 0, 0, 0],
                ..w
            }
            .output(3, 3)
            .is_err()
        );
    }

    #[test]
    fn pad_and_broadcast() {
        let g = Gather::pad2d(&[1, 1, 1, 2], [0, 1, 1, 0]);
        assert_eq!(g.shape, vec![1, 2, 2, 2]);
        assert_eq!(g.apply(&[5, 6], 0), vec![0, 0, 5, 6, 0, 0, 0, 0]);
        let b = Gather::broadcast_last(&[2, 3]);
        assert_eq!(b.apply(&[1, 2, 3], 0), vec![1, 2, 3, 1, 2, 3]);
        let p = Gather::pick_stacked(&[1, 2], &[1, 0]);
        // stack [a0 a1 | b0 b1]: position 0 from b, position 1 from a.
        assert_eq!(p.apply(&[10, 11, 20, 21], 0), vec![20, 11]);
        assert_eq!(
            concat_last(&[(&[1, 2][..], 1), (&[3, 4, 5, 6][..], 2)], 2),
            vec![1, 3, 4, 2, 5, 6]
        );
    }

    /// Every small window geometry against a direct reading of the definition: output size as
    /// PyTorch's floor((in + pads - kernel) / stride) + 1, cell t of window (oy, ox) at input
    /// (oy·stride + dy - pad_top, ox·stride + dx - pad_left) or padding, a repeated cell inside
    /// the same window, and no window entirely in the padding.
    #[test]
    fn small_windows_match_the_definition() {
        for (kh, kw, sh, sw) in (1..=3).flat_map(|kh| {
            (1..=3).flat_map(move |kw| {
                (1..=3).flat_map(move |sh| (1..=2).map(move |sw| (kh, kw, sh, sw)))
            })
        }) {
            for pads in (0..kh).flat_map(|pt| {
                (0..kw).flat_map(move |pl| {
                    (0..kh).flat_map(move |pb| (0..kw).map(move |pr| [pt, pl, pb, pr]))
                })
            }) {
                let win = Window {
                    kernel: [kh, kw],
                    stride: [sh, sw],
                    pads,
                };
                for (h, w) in [(1, 1), (1, 4), (3, 2), (5, 7)] {
                    let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
                    let Ok((oh, ow)) = win.output(h, w) else {
                        assert!(ph < kh || pw < kw, "{win:?} on {h}x{w}");
                        continue;
                    };
                    assert_eq!((oh, ow), ((ph - kh) / sh + 1, (pw - kw) / sw + 1));
                    let shape = [2, h, w, 2];
                    let zero: Vec<Gather> = (0..win.cells())
                        .map(|t| win.part(&shape, t, PadCell::Zero))
                        .collect();
                    let repeat: Vec<Gather> = (0..win.cells())
                        .map(|t| win.part(&shape, t, PadCell::Repeat))
                        .collect();
                    for n in 0..2 {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut inside = 0;
                                for t in 0..win.cells() {
                                    let (dy, dx) = (t / kw, t % kw);
                                    let y = (oy * sh + dy) as isize - pads[0] as isize;
                                    let x = (ox * sw + dx) as isize - pads[1] as isize;
                                    let within =
                                        y >= 0 && x >= 0 && y < h as isize && x < w as isize;
                                    inside += usize::from(within);
                                    for ch in 0..2 {
                                        let o = ((n * oh + oy) * ow + ox) * 2 + ch;
                                        let want = within.then(|| {
                                            ((n * h + y as usize) * w + x as usize) * 2 + ch
                                        });
                                        let z = zero[t].index[o];
                                        assert_eq!(
                                            (z != Gather::ZERO).then_some(z),
                                            want,
                                            "{win:?} on {h}x{w}, window ({oy}, {ox}) cell {t}"
                                        );
                                        // A repeated cell: same image and channel, inside this
                                        // window.
                                        let r = repeat[t].index[o];
                                        assert_ne!(r, Gather::ZERO);
                                        let (rn, rest) = (r / (h * w * 2), r % (h * w * 2));
                                        let (ry, rx, rc) = (rest / (w * 2), rest / 2 % w, rest % 2);
                                        assert_eq!((rn, rc), (n, ch));
                                        let (y0, x0) = (
                                            (oy * sh) as isize - pads[0] as isize,
                                            (ox * sw) as isize - pads[1] as isize,
                                        );
                                        assert!(
                                            (y0..y0 + kh as isize).contains(&(ry as isize))
                                                && (x0..x0 + kw as isize).contains(&(rx as isize)),
                                            "{win:?}: repeated cell outside window ({oy}, {ox})"
                                        );
                                        if within {
                                            assert_eq!(r, z);
                                        }
                                    }
                                }
                                assert!(inside > 0, "{win:?}: window ({oy}, {ox}) is all padding");
                                assert_eq!(win.inside(h, w, oy, ox), inside);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn windows_that_do_not_fit_are_errors() {
        let w = Window::square(3);
        assert!(w.output(2, 5).is_err());
        assert_eq!(w.output(3, 5), Ok((1, 1)));
        // Floor: a 5x7 input under 2x2 windows drops the last row and column.
        assert_eq!(Window::square(2).output(5, 7), Ok((2, 3)));
        for bad in [
            Window {
                stride: [0, 1],
                ..w
            },
            Window {
                kernel: [0, 3],
                ..w
            },
            Window {
                pads: [0, 0, 3, 0],
                ..w
            },
            Window {
                pads: [0, 0, 0, 3],
                ..w
            },
        ] {
            assert!(bad.output(9, 9).is_err(), "{bad:?}");
        }
        assert_eq!(
            Window {
                pads: [1, 0, 0, 0],
                ..w
            }
            .as_square(),
            None
        );
    }
}
