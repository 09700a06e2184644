//! The float reference: the model evaluated in f64, with the exact ReLU or a polynomial.

use super::model::{Layer, ModelError, Sequential, Weights};
use crate::protocol::ReluKind;
use crate::ring::kernels::im2col;
use crate::ring::numel;
use ndarray::{Array2, ArrayD, Ix2, IxDyn};

/// Logits of `model` on a batch `x` of shape [batch, ...input].
pub fn forward_float(
    model: &Sequential,
    w: &Weights,
    x: &ArrayD<f64>,
    relu: &ReluKind,
) -> Result<ArrayD<f64>, ModelError> {
    model.validate(w)?;
    let infos = model.describe()?;
    let batch = x.shape()[0];
    let mut x = x.clone();
    for (layer, info) in model.layers.iter().zip(&infos) {
        let param = |i: usize| w.get(&info.params[i].0).expect("validated");
        x = match layer {
            Layer::Dense { units } => {
                let k = param(0)
                    .clone()
                    .into_dimensionality::<Ix2>()
                    .expect("2-D kernel");
                let xm = x.into_dimensionality::<Ix2>().expect("flat input");
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
            Layer::Relu => match relu {
                ReluKind::Exact => x.mapv(|v| v.max(0.0)),
                ReluKind::Polynomial(terms) => {
                    x.mapv(|v| terms.iter().map(|&(k, c)| c * v.powi(k as i32)).sum())
                }
            },
            Layer::AvgPool { k } | Layer::MaxPool { k } => {
                let s = x.shape().to_vec();
                let (oh, ow) = (s[1] / k, s[2] / k);
                let is_max = matches!(layer, Layer::MaxPool { .. });
                ArrayD::from_shape_fn(IxDyn(&[s[0], oh, ow, s[3]]), |ix| {
                    let vals =
                        (0..k * k).map(|t| x[[ix[0], ix[1] * k + t / k, ix[2] * k + t % k, ix[3]]]);
                    if is_max {
                        vals.fold(f64::NEG_INFINITY, f64::max)
                    } else {
                        vals.sum::<f64>() / (k * k) as f64
                    }
                })
            }
            Layer::PadTo { n } => {
                let w = x.shape()[1];
                ArrayD::from_shape_fn(IxDyn(&[batch, *n]), |ix| {
                    if ix[1] < w { x[[ix[0], ix[1]]] } else { 0.0 }
                })
            }
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
            Layer::Flatten => x
                .into_shape_with_order(IxDyn(&[batch, numel(&info.output)]))
                .expect("flatten"),
        };
    }
    Ok(x)
}
