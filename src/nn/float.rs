//! The float reference: the model evaluated in f64, with the exact ReLU or a polynomial.

use super::model::{Layer, Model, ModelError, Weights, walk_graph};
use crate::protocol::ReluKind;
use crate::ring::kernels::im2col;
use crate::ring::{Gather, PadCell, Window, numel};
use ndarray::{Array2, ArrayD, Ix2, IxDyn};

/// Logits of `model` on a batch `x` of shape [batch, ...input].
pub fn forward_float(
    model: &Model,
    w: &Weights,
    x: &ArrayD<f64>,
    relu: &ReluKind,
) -> Result<ArrayD<f64>, ModelError> {
    model.validate(w)?;
    let infos = model.describe()?;
    let batch = x.shape()[0];
    let relu_of = |v: f64| match relu {
        ReluKind::Exact => v.max(0.0),
        ReluKind::Polynomial(terms) => terms.iter().map(|&(k, c)| c * v.powi(k as i32)).sum(),
    };
    let full = |s: &[usize]| {
        let mut v = vec![batch];
        v.extend_from_slice(s);
        v
    };
    walk_graph(model, &infos, x.clone(), |_, node, info, ins| {
        let x = ins[0];
        let param = |i: usize| w.get(&info.params[i].0).expect("validated");
        let gather = |x: &ArrayD<f64>, g: &Gather| {
            let data: Vec<f64> = x.iter().copied().collect();
            ArrayD::from_shape_vec(IxDyn(&g.shape), g.apply(&data, 0.0)).expect("gather shape")
        };
        Ok(match &node.layer {
            Layer::Dense { units } => {
                let k = param(0)
                    .clone()
                    .into_dimensionality::<Ix2>()
                    .expect("2-D kernel");
                let xm = x.clone().into_dimensionality::<Ix2>().expect("flat input");
                let y: Array2<f64> =
                    xm.dot(&k) + param(1).view().into_shape_with_order(*units).expect("bias");
                y.into_dyn()
            }
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            } => {
                let s = x.shape().to_vec();
                let data: Vec<f64> = x.iter().copied().collect();
                let (cols, g) = im2col(
                    &data, s[0], s[1], s[2], s[3], *kernel, *kernel, *stride, *padding,
                );
                let rows = s[0] * g.out_h * g.out_w;
                let cm = Array2::from_shape_vec((rows, kernel * kernel * s[3]), cols)
                    .expect("im2col shape");
                let k = param(0)
                    .view()
                    .into_shape_with_order((kernel * kernel * s[3], *filters))
                    .expect("kernel");
                let y = cm.dot(&k)
                    + param(1)
                        .view()
                        .into_shape_with_order(*filters)
                        .expect("bias");
                y.into_shape_with_order(IxDyn(&[s[0], g.out_h, g.out_w, *filters]))
                    .expect("conv out")
            }
            Layer::Relu => x.mapv(relu_of),
            Layer::LeakyRelu { alpha } => x.mapv(|v| alpha * v + (1.0 - alpha) * relu_of(v)),
            Layer::Clip { max } => x.mapv(|v| relu_of(v) - relu_of(v - max)),
            Layer::AvgPool {
                window,
                count_padding,
            } => {
                let sum = window_cells(x, window, PadCell::Zero, gather)
                    .into_iter()
                    .reduce(|a, b| a + b)
                    .expect("a window has cells");
                let (h, w) = (x.shape()[1], x.shape()[2]);
                let mut out = sum;
                for (ix, v) in out.indexed_iter_mut() {
                    let n = match count_padding {
                        true => window.cells(),
                        false => window.inside(h, w, ix[1], ix[2]),
                    };
                    *v /= n as f64;
                }
                out
            }
            Layer::MaxPool { window } => window_cells(x, window, PadCell::Repeat, gather)
                .into_iter()
                .reduce(|a, b| {
                    ndarray::Zip::from(&a)
                        .and(&b)
                        .map_collect(|&p, &q| p.max(q))
                })
                .expect("a window has cells"),
            Layer::PadTo { n } => {
                let w = x.shape()[1];
                ArrayD::from_shape_fn(IxDyn(&[batch, *n]), |ix| {
                    if ix[1] < w { x[[ix[0], ix[1]]] } else { 0.0 }
                })
            }
            Layer::Pad2d { pads } => gather(x, &Gather::pad2d(x.shape(), *pads)),
            Layer::Add => x + ins[1],
            Layer::Concat => {
                let views: Vec<_> = ins.iter().map(|a| a.view()).collect();
                ndarray::concatenate(ndarray::Axis(x.ndim() - 1), &views).expect("checked shapes")
            }
            Layer::Scale => x * &param(0).view(),
            Layer::Bias => x + &param(0).view(),
            Layer::Argmax => ArrayD::from_shape_fn(IxDyn(&[batch]), |ix| {
                let row = x.index_axis(ndarray::Axis(0), ix[0]);
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v >= row[best] {
                        best = i;
                    }
                }
                best as f64
            }),
            // In standard order: a concatenation (and what maps it elementwise) is not.
            Layer::Flatten => x
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&full(&[numel(&info.output)])))
                .expect("flatten"),
        })
    })
}

/// Cell t of every window, one tensor per cell.
fn window_cells(
    x: &ArrayD<f64>,
    window: &Window,
    pad: PadCell,
    gather: impl Fn(&ArrayD<f64>, &Gather) -> ArrayD<f64>,
) -> Vec<ArrayD<f64>> {
    (0..window.cells())
        .map(|t| gather(x, &window.part(x.shape(), t, pad)))
        .collect()
}
