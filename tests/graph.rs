//! The graph model and its new layers (explicit convolution padding, general pooling windows,
//! LeakyRelu, Clip, Pad2d, residual Add, Concat, per-channel Scale and Bias) on every backend:
//! the float reference against naive loops written here (PyTorch/ONNX semantics), the plaintext
//! fixed-point backend against the float reference, SecureNN and Pond against the plaintext
//! backend; model-level checks (shape errors, layouts, serde), range-analysis soundness and
//! determinism of the secure runs.
//!
//! Inputs and weights are exact multiples of 2^-13, so the plaintext backend differs from the
//! float reference only by its truncations (floor, at most one ulp each) and by the rounding of
//! public constants (1/n of an average, LeakyRelu's α); kernels are scaled to an L1 norm of
//! about 1 per output, so an error does not grow from layer to layer.

mod common;

use common::*;
use ndarray::{ArrayD, IxDyn};
use rand::RngExt;
use securenn::channel::{Ctx, P0, P1, ProtocolError};
use securenn::fixed::FixedPoint;
use securenn::nn::range::{analyse, observe};
use securenn::nn::{
    InputLayout, Layer, Model, ModelError, Weights, forward, forward_float, input_params,
};
use securenn::party::RunReport;
use securenn::protocol::{Plaintext, Pond, Protocol, ReluKind, SecureNn, TFE_RELU_9};
use securenn::ring::{Padding, RingTensor, Window};

const ULP: f64 = 1.0 / 8192.0;

fn fp() -> FixedPoint {
    FixedPoint::default()
}

fn poly() -> ReluKind {
    ReluKind::Polynomial(TFE_RELU_9.to_vec())
}

fn window(kernel: [usize; 2], stride: [usize; 2], pads: [usize; 4]) -> Window {
    Window {
        kernel,
        stride,
        pads,
    }
}

/// ResNet's stem pooling: 3×3, stride 2, padding 1 (overlapping windows).
fn stem() -> Window {
    window([3, 3], [2, 2], [1, 1, 1, 1])
}

// ---------------------------------------------------------------- data

/// A value uniform in [-range, range] on the 2^-13 grid.
fn exact(range: f64, g: &mut Prg) -> f64 {
    let m = (range * 8192.0) as i64;
    g.random_range(-m..=m) as f64 * ULP
}

/// An input batch as floats and as the ring elements encoding them exactly.
fn batch_of(shape: &[usize], values: Vec<f64>) -> (ArrayD<f64>, RingTensor) {
    let ring = fp().encode_tensor(shape, &values).unwrap();
    (ArrayD::from_shape_vec(IxDyn(shape), values).unwrap(), ring)
}

fn random_batch(shape: &[usize], range: f64, g: &mut Prg) -> (ArrayD<f64>, RingTensor) {
    let n = shape.iter().product();
    batch_of(shape, (0..n).map(|_| exact(range, g)).collect())
}

/// `[batch, ...model input]`.
fn batch_shape(model: &Model, batch: usize) -> Vec<usize> {
    let mut s = vec![batch];
    s.extend(&model.input);
    s
}

/// Random weights on the 2^-13 grid: kernels with an L1 norm of about 1 per output, biases in
/// ±0.5, scales in ±1.25.
fn random_weights(model: &Model, seed: u64) -> Weights {
    let mut g = rng(seed);
    let tensors = model
        .param_shapes()
        .unwrap()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let range = if name.ends_with(".scale") {
                1.25
            } else if shape.len() == 1 {
                0.5
            } else {
                2.0 / (n / shape[shape.len() - 1]) as f64
            };
            let v: Vec<f64> = (0..n).map(|_| exact(range, &mut g)).collect();
            (name, ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap())
        })
        .collect();
    Weights { tensors }
}

// ---------------------------------------------------------------- backends

fn plain(model: &Model, w: &Weights, x: &RingTensor, relu: ReluKind) -> RingTensor {
    try_plain(model, w, x, relu).unwrap()
}

fn try_plain(
    model: &Model,
    w: &Weights,
    x: &RingTensor,
    relu: ReluKind,
) -> Result<RingTensor, ProtocolError> {
    let p = Plaintext { relu };
    let ctx = Ctx::local(fp());
    futures::executor::block_on(async {
        let params = input_params(&p, &ctx, model, P1, Some(w)).await?;
        let xs = p.input(&ctx, P0, Some(x), x.shape(), 13).await?;
        Ok(forward(&p, &ctx, model, &params, xs).await?.value)
    })
}

/// The model run by the three parties over the in-memory transport: input from P0, weights from
/// P1; every party returns its share of the output.
fn secure<P, B>(
    model: &Model,
    w: &Weights,
    x: &RingTensor,
    seed: u64,
    backend: B,
) -> Result<RunReport<Option<RingTensor>>, ProtocolError>
where
    P: Protocol,
    P::Tensor: HasShare,
    B: Fn() -> P + Clone + Send + 'static,
{
    let (model, w, x) = (model.clone(), w.clone(), x.clone());
    run3(seed, move |ctx: Ctx| {
        let (model, w, x, backend) = (model.clone(), w.clone(), x.clone(), backend.clone());
        async move {
            let p = backend();
            let me = ctx.me();
            let params = input_params(&p, &ctx, &model, P1, (me == P1).then_some(&w)).await?;
            let xs = p
                .input(&ctx, P0, (me == P0).then_some(&x), x.shape(), 13)
                .await?;
            let y = forward(&p, &ctx, &model, &params, xs).await?;
            Ok(y.share())
        }
    })
}

fn float(model: &Model, w: &Weights, x: &ArrayD<f64>, relu: &ReluKind) -> ArrayD<f64> {
    forward_float(model, w, x, relu).unwrap()
}

/// Largest |float - fixed| in ulps.
fn ulps(f: &ArrayD<f64>, r: &RingTensor) -> f64 {
    assert_eq!(f.shape(), r.shape());
    f.iter()
        .zip(fp().decode_tensor(r))
        .map(|(a, b)| (a - b).abs() / ULP)
        .fold(0.0, f64::max)
}

/// Run `model` on the plaintext backend (exact ReLU) and SecureNN (optimised and the paper's
/// accounting), and Pond if `pond` (against the plaintext backend with Pond's polynomial):
/// plaintext within `to_float` ulps of the float reference, the secure backends within
/// `to_plain` ulps of the plaintext backend. Batches 1 and 3.
fn check_backends(
    name: &str,
    model: &Model,
    w: &Weights,
    range: f64,
    (to_float, to_plain): (f64, u64),
    pond: bool,
    seed: u64,
) {
    let mut g = rng(seed);
    for batch in [1, 3] {
        let (xf, xr) = random_batch(&batch_shape(model, batch), range, &mut g);
        let want = float(model, w, &xf, &ReluKind::Exact);
        let p = plain(model, w, &xr, ReluKind::Exact);
        let d = ulps(&want, &p);
        assert!(
            d <= to_float,
            "{name}, batch {batch}: plaintext {d} ulps from float"
        );
        for (label, backend) in [
            ("securenn", SecureNn::optimised as fn() -> SecureNn),
            ("securenn paper", SecureNn::paper),
        ] {
            let r = secure(model, w, &xr, seed, backend).unwrap();
            let s = reconstruct(&r.outputs);
            let d = max_ulp_diff(&s, &p);
            assert!(
                d <= to_plain,
                "{name}, batch {batch}: {label} {d} ulps from plaintext"
            );
        }
        if pond {
            let p = plain(model, w, &xr, poly());
            let r = secure(model, w, &xr, seed, Pond::default).unwrap();
            let d = max_ulp_diff(&reconstruct(&r.outputs), &p);
            assert!(
                d <= to_plain.max(2),
                "{name}, batch {batch}: pond {d} ulps from plaintext"
            );
        }
    }
}

// ---------------------------------------------------------------- naive references (NHWC)

fn naive_conv(
    x: &ArrayD<f64>,
    k: &ArrayD<f64>,
    b: &ArrayD<f64>,
    stride: usize,
    pads: [usize; 4],
) -> ArrayD<f64> {
    let s = x.shape();
    let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
    let (kh, kw, co) = (k.shape()[0], k.shape()[1], k.shape()[3]);
    let [pt, pl, pb, pr] = pads;
    let oh = (h + pt + pb - kh) / stride + 1;
    let ow = (w + pl + pr - kw) / stride + 1;
    ArrayD::from_shape_fn(IxDyn(&[n, oh, ow, co]), |ix| {
        let mut acc = b[[ix[3]]];
        for dy in 0..kh {
            for dx in 0..kw {
                let y = (ix[1] * stride + dy) as isize - pt as isize;
                let xx = (ix[2] * stride + dx) as isize - pl as isize;
                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                    continue;
                }
                for ci in 0..c {
                    acc += x[[ix[0], y as usize, xx as usize, ci]] * k[[dy, dx, ci, ix[3]]];
                }
            }
        }
        acc
    })
}

#[derive(Clone, Copy)]
enum Pool {
    Max,
    Avg { count_padding: bool },
}

/// PyTorch/ONNX pooling (floor output size): the maximum over the cells inside the input
/// (padding is -inf), or the sum over them divided by the window's size (count_include_pad) or
/// by their number.
fn naive_pool(x: &ArrayD<f64>, win: &Window, pool: Pool) -> ArrayD<f64> {
    let s = x.shape();
    let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
    let ([kh, kw], [sh, sw], [pt, pl, pb, pr]) = (win.kernel, win.stride, win.pads);
    let oh = (h + pt + pb - kh) / sh + 1;
    let ow = (w + pl + pr - kw) / sw + 1;
    ArrayD::from_shape_fn(IxDyn(&[n, oh, ow, c]), |ix| {
        let mut cells = Vec::new();
        for dy in 0..kh {
            for dx in 0..kw {
                let y = (ix[1] * sh + dy) as isize - pt as isize;
                let xx = (ix[2] * sw + dx) as isize - pl as isize;
                if y >= 0 && xx >= 0 && y < h as isize && xx < w as isize {
                    cells.push(x[[ix[0], y as usize, xx as usize, ix[3]]]);
                }
            }
        }
        assert!(!cells.is_empty(), "a window entirely in the padding");
        match pool {
            Pool::Max => cells.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Pool::Avg { count_padding } => {
                let n = if count_padding { kh * kw } else { cells.len() };
                cells.iter().sum::<f64>() / n as f64
            }
        }
    })
}

fn naive_pad2d(x: &ArrayD<f64>, pads: [usize; 4]) -> ArrayD<f64> {
    let s = x.shape();
    let [pt, pl, pb, pr] = pads;
    ArrayD::from_shape_fn(
        IxDyn(&[s[0], s[1] + pt + pb, s[2] + pl + pr, s[3]]),
        |ix| match (ix[1].checked_sub(pt), ix[2].checked_sub(pl)) {
            (Some(y), Some(xx)) if y < s[1] && xx < s[2] => x[[ix[0], y, xx, ix[3]]],
            _ => 0.0,
        },
    )
}

fn max_gap(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The windows the tests pool with on a 5×7 input: the stem (overlapping), asymmetric padding on
/// both axes with unequal strides, windows that do not divide the input, a 1×1 window with
/// stride, a window as large as the padded input.
fn windows() -> Vec<Window> {
    vec![
        stem(),
        window([2, 3], [1, 2], [0, 2, 1, 0]),
        window([3, 3], [2, 2], [0; 4]),
        Window::square(2),
        window([3, 2], [3, 1], [2, 1, 0, 0]),
        window([1, 1], [2, 3], [0; 4]),
        window([6, 8], [1, 1], [1, 0, 0, 1]),
    ]
}

// ---------------------------------------------------------------- the float reference against naive loops

#[test]
fn float_reference_matches_naive_loops() {
    let mut g = rng(1);
    let (x, _) = random_batch(&[2, 5, 7, 3], 2.0, &mut g);
    for win in windows() {
        for (layer, pool) in [
            (Layer::MaxPool { window: win }, Pool::Max),
            (
                Layer::AvgPool {
                    window: win,
                    count_padding: true,
                },
                Pool::Avg {
                    count_padding: true,
                },
            ),
            (
                Layer::AvgPool {
                    window: win,
                    count_padding: false,
                },
                Pool::Avg {
                    count_padding: false,
                },
            ),
        ] {
            let m = Model::new(&[5, 7, 3]).then(layer.clone());
            let w = Weights { tensors: vec![] };
            let got = float(&m, &w, &x, &ReluKind::Exact);
            let want = naive_pool(&x, &win, pool);
            assert!(max_gap(&got, &want) < 1e-12, "{layer:?}");
            assert_eq!(
                m.output_shape().unwrap(),
                want.shape()[1..].to_vec(),
                "{layer:?}"
            );
        }
    }
    // Explicit asymmetric convolution padding, strides 1 and 2, against the naive convolution.
    for (kernel, stride, pads) in [
        (3, 1, [1, 0, 2, 1]),
        (3, 2, [0, 2, 1, 0]),
        (2, 2, [1, 1, 0, 0]),
        (5, 1, [2, 2, 2, 2]),
        (1, 3, [0, 0, 0, 1]),
    ] {
        let m = Model::new(&[5, 7, 3]).conv2d(4, kernel, stride, Padding::Explicit(pads));
        let w = random_weights(&m, 2);
        let got = float(&m, &w, &x, &ReluKind::Exact);
        let want = naive_conv(
            &x,
            w.get("0.conv2d.kernel").unwrap(),
            w.get("0.conv2d.bias").unwrap(),
            stride,
            pads,
        );
        assert!(
            max_gap(&got, &want) < 1e-12,
            "conv {kernel} {stride} {pads:?}"
        );
        // The ring kernel computes the same on the exact encoding (within its truncation).
        let (_, xr) = batch_of(x.shape(), x.iter().copied().collect());
        assert!(ulps(&want, &plain(&m, &w, &xr, ReluKind::Exact)) <= 1.0);
    }
    // Pad2d, Scale, Bias, Concat, Add, LeakyRelu, Clip elementwise.
    let pads = [1, 0, 2, 3];
    let m = Model::new(&[5, 7, 3]).then(Layer::Pad2d { pads });
    let w = Weights { tensors: vec![] };
    assert_eq!(
        float(&m, &w, &x, &ReluKind::Exact),
        naive_pad2d(&x, pads),
        "pad2d"
    );
    let mut m = Model::new(&[5, 7, 3]);
    let s = m.push(Layer::Scale, vec![0]);
    let b = m.push(Layer::Bias, vec![s]);
    let l = m.push(Layer::LeakyRelu { alpha: 0.1 }, vec![b]);
    let c = m.push(Layer::Clip { max: 0.75 }, vec![0]);
    let a = m.push(Layer::Add, vec![l, c]);
    m.push(Layer::Concat, vec![c, a, 0]);
    let w = random_weights(&m, 3);
    let (sc, bi) = (
        w.get("0.scale.scale").unwrap(),
        w.get("1.bias.bias").unwrap(),
    );
    let got = float(&m, &w, &x, &ReluKind::Exact);
    assert_eq!(got.shape(), &[2, 5, 7, 9]);
    for (ix, &v) in got.indexed_iter() {
        let (n, y, xx, ch) = (ix[0], ix[1], ix[2], ix[3]);
        let input = |ch: usize| x[[n, y, xx, ch]];
        let clip = |ch: usize| input(ch).clamp(0.0, 0.75);
        let leaky = |ch: usize| {
            let t = input(ch) * sc[[ch]] + bi[[ch]];
            if t >= 0.0 { t } else { 0.1 * t }
        };
        let want = match ch {
            0..3 => clip(ch),
            3..6 => leaky(ch - 3) + clip(ch - 3),
            _ => input(ch - 6),
        };
        assert!((v - want).abs() < 1e-12, "{ix:?}: {v} vs {want}");
    }
}

// ---------------------------------------------------------------- every new layer on every backend

#[test]
fn conv2d_with_explicit_padding_on_every_backend() {
    for (i, (kernel, stride, pads)) in [
        (3, 1, [1, 0, 2, 1]),
        (3, 2, [0, 2, 1, 0]),
        (2, 1, [1, 1, 0, 0]),
    ]
    .into_iter()
    .enumerate()
    {
        let m = Model::new(&[5, 7, 3]).conv2d(4, kernel, stride, Padding::Explicit(pads));
        let w = random_weights(&m, 10 + i as u64);
        check_backends("conv2d", &m, &w, 2.0, (1.0, 1), true, 10 + i as u64);
    }
}

#[test]
fn pooling_windows_on_every_backend() {
    for (i, win) in windows().into_iter().enumerate() {
        let seed = 20 + i as u64;
        // Max pooling is exact on SecureNN; Pond refuses it (checked below).
        let m = Model::new(&[5, 7, 3]).then(Layer::MaxPool { window: win });
        check_backends(
            "maxpool",
            &m,
            &random_weights(&m, seed),
            4.0,
            (0.0, 0),
            false,
            seed,
        );
        for count_padding in [true, false] {
            let m = Model::new(&[5, 7, 3]).then(Layer::AvgPool {
                window: win,
                count_padding,
            });
            // A public 1/n: a pre-shift and a truncation, and the constant kept to 12
            // significant bits (a relative error up to 2^-13: |average| ulps, at most 2 here).
            check_backends(
                "avgpool",
                &m,
                &random_weights(&m, seed),
                2.0,
                (4.0, 2),
                true,
                seed,
            );
        }
    }
}

#[test]
fn count_padding_divides_by_the_whole_window() {
    // All ones: averages that count the padding are below 1 along the edges, the others are 1.
    let m = |count_padding| {
        Model::new(&[5, 7, 1]).then(Layer::AvgPool {
            window: stem(),
            count_padding,
        })
    };
    let (xf, xr) = batch_of(&[1, 5, 7, 1], vec![1.0; 35]);
    let w = Weights { tensors: vec![] };
    let outside = plain(&m(false), &w, &xr, ReluKind::Exact);
    assert!(ulps(&ArrayD::ones(IxDyn(&[1, 3, 4, 1])), &outside) <= 1.0);
    let inside = float(&m(true), &w, &xf, &ReluKind::Exact);
    // Corner windows hold 4 of 9 cells, edge windows 6, the two interior ones ((1, 1) and
    // (1, 2) of the 3×4 outputs) all 9.
    assert_eq!(inside[[0, 0, 0, 0]], 4.0 / 9.0);
    assert_eq!(inside[[0, 0, 1, 0]], 6.0 / 9.0);
    assert_eq!(inside[[0, 1, 1, 0]], 1.0);
    assert_eq!(inside[[0, 2, 3, 0]], 4.0 / 9.0);
    let p = plain(&m(true), &w, &xr, ReluKind::Exact);
    assert!(ulps(&inside, &p) <= 1.0);
    let r = secure(&m(true), &w, &xr, 30, SecureNn::default).unwrap();
    assert!(max_ulp_diff(&reconstruct(&r.outputs), &p) <= 2);
    assert_eq!(r.traffic.total_bytes(), 0, "average pooling is local");
}

#[test]
fn max_pooling_of_negative_values_next_to_padding() {
    // Every value negative: a zero from the padding would win every edge window.
    let mut g = rng(31);
    let n = 3 * 5 * 7 * 2;
    let values: Vec<f64> = (0..n).map(|_| -3.0 - exact(2.0, &mut g).abs()).collect();
    let (xf, xr) = batch_of(&[3, 5, 7, 2], values);
    for win in windows() {
        let m = Model::new(&[5, 7, 2]).then(Layer::MaxPool { window: win });
        let w = Weights { tensors: vec![] };
        let want = naive_pool(&xf, &win, Pool::Max);
        assert!(want.iter().all(|&v| v < 0.0));
        assert_eq!(float(&m, &w, &xf, &ReluKind::Exact), want, "{win:?}");
        let p = plain(&m, &w, &xr, ReluKind::Exact);
        assert_eq!(ulps(&want, &p), 0.0, "{win:?}");
        for backend in [SecureNn::optimised as fn() -> SecureNn, SecureNn::paper] {
            let r = secure(&m, &w, &xr, 31, backend).unwrap();
            assert_eq!(reconstruct(&r.outputs), p, "{win:?}");
        }
    }
    // Pond has no comparison: refused by name, for padded windows too.
    let m = Model::new(&[5, 7, 2]).then(Layer::MaxPool { window: stem() });
    let w = Weights { tensors: vec![] };
    let err = secure(&m, &w, &xr, 31, Pond::default).unwrap_err();
    assert!(
        matches!(&err, ProtocolError::Unsupported { op, .. } if op.contains("maxpool")),
        "{err}"
    );
    let m = Model::new(&[5, 7, 2]).flatten().argmax();
    let err = secure(&m, &w, &xr, 31, Pond::default).unwrap_err();
    assert!(matches!(err, ProtocolError::Unsupported { .. }), "{err}");
}

#[test]
fn clip_at_zero_and_at_max() {
    for max in [0.75, 6.0] {
        let specials = [
            0.0,
            max,
            -ULP,
            ULP,
            max - ULP,
            max + ULP,
            -max,
            2.0 * max,
            -100.0,
            100.0,
        ];
        let want_of = |v: f64| v.clamp(0.0, max);
        let mut g = rng(40);
        let n = 2 * 5 * 7 * 3;
        let values: Vec<f64> = (0..n)
            .map(|i| {
                specials
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| exact(2.0 * max, &mut g))
            })
            .collect();
        let want = ArrayD::from_shape_vec(
            IxDyn(&[2, 5, 7, 3]),
            values.iter().map(|&v| want_of(v)).collect(),
        )
        .unwrap();
        let (xf, xr) = batch_of(&[2, 5, 7, 3], values);
        let m = Model::new(&[5, 7, 3]).then(Layer::Clip { max });
        let w = Weights { tensors: vec![] };
        assert_eq!(float(&m, &w, &xf, &ReluKind::Exact), want);
        let p = plain(&m, &w, &xr, ReluKind::Exact);
        assert_eq!(ulps(&want, &p), 0.0, "clip {max} is exact");
        let r = secure(&m, &w, &xr, 40, SecureNn::default).unwrap();
        assert_eq!(reconstruct(&r.outputs), p, "clip {max} on securenn");
        // Two exact ReLUs in one call: the rounds and bytes of one ReLU on twice the values.
        let (_, double) = random_batch(&[2, 5, 7, 6], 1.0, &mut g);
        let relu = Model::new(&[5, 7, 6]).relu();
        let relu = secure(&relu, &w, &double, 40, SecureNn::default).unwrap();
        assert_eq!(r.traffic.rounds, relu.traffic.rounds);
        assert_eq!(r.traffic.total_bytes(), relu.traffic.total_bytes());
    }
    // Small inputs under Pond's polynomial.
    let m = Model::new(&[5, 7, 3]).then(Layer::Clip { max: 0.75 });
    check_backends(
        "clip",
        &m,
        &random_weights(&m, 41),
        2.0,
        (0.0, 0),
        false,
        41,
    );
    let mut g = rng(42);
    let (_, xr) = random_batch(&[2, 5, 7, 3], 2.0, &mut g);
    let w = Weights { tensors: vec![] };
    let p = plain(&m, &w, &xr, poly());
    let r = secure(&m, &w, &xr, 42, Pond::default).unwrap();
    assert!(max_ulp_diff(&reconstruct(&r.outputs), &p) <= 32);
}

#[test]
fn leaky_relu_with_negative_inputs() {
    let mut g = rng(50);
    for alpha in [0.1, 0.01, -0.25, 1.0, 0.0] {
        let n = 2 * 5 * 7 * 3;
        // Mostly negative, with 0 and ±1 ulp.
        let mut values: Vec<f64> = (0..n).map(|_| exact(4.0, &mut g) - 2.0).collect();
        values[..3].copy_from_slice(&[0.0, -ULP, ULP]);
        let want = ArrayD::from_shape_vec(
            IxDyn(&[2, 5, 7, 3]),
            values
                .iter()
                .map(|&v| if v >= 0.0 { v } else { alpha * v })
                .collect(),
        )
        .unwrap();
        let (xf, xr) = batch_of(&[2, 5, 7, 3], values);
        let m = Model::new(&[5, 7, 3]).then(Layer::LeakyRelu { alpha });
        let w = Weights { tensors: vec![] };
        assert!(max_gap(&float(&m, &w, &xf, &ReluKind::Exact), &want) < 1e-12);
        // α·x + (1 - α)·ReLU(x): two public products, each within about an ulp and a half.
        let p = plain(&m, &w, &xr, ReluKind::Exact);
        let d = ulps(&want, &p);
        assert!(d <= 3.0, "alpha {alpha}: plaintext {d} ulps from float");
        let r = secure(&m, &w, &xr, 50, SecureNn::default).unwrap();
        let d = max_ulp_diff(&reconstruct(&r.outputs), &p);
        assert!(d <= 4, "alpha {alpha}: securenn {d} ulps from plaintext");
    }
    let m = Model::new(&[5, 7, 3]).then(Layer::LeakyRelu { alpha: 0.1 });
    check_backends(
        "leaky relu",
        &m,
        &random_weights(&m, 51),
        2.0,
        (3.0, 4),
        false,
        51,
    );
    let (_, xr) = random_batch(&[2, 5, 7, 3], 2.0, &mut g);
    let w = Weights { tensors: vec![] };
    let p = plain(&m, &w, &xr, poly());
    let r = secure(&m, &w, &xr, 52, Pond::default).unwrap();
    assert!(max_ulp_diff(&reconstruct(&r.outputs), &p) <= 32);
}

#[test]
fn pad_scale_bias_add_concat_on_every_backend() {
    let m = Model::new(&[5, 7, 3]).then(Layer::Pad2d { pads: [1, 0, 2, 3] });
    check_backends(
        "pad2d",
        &m,
        &random_weights(&m, 60),
        4.0,
        (0.0, 0),
        true,
        60,
    );
    let m = Model::new(&[5, 7, 3]).then(Layer::Scale);
    check_backends(
        "scale",
        &m,
        &random_weights(&m, 61),
        4.0,
        (1.0, 1),
        true,
        61,
    );
    let m = Model::new(&[5, 7, 3]).then(Layer::Bias);
    check_backends("bias", &m, &random_weights(&m, 62), 4.0, (0.0, 0), true, 62);
    // Add of the input and a convolution of it; Concat of three values of different widths,
    // one read twice.
    let mut m = Model::new(&[5, 7, 3]);
    let c = m.push(
        Layer::Conv2d {
            filters: 3,
            kernel: 3,
            stride: 1,
            padding: Padding::Explicit([1, 1, 1, 1]),
        },
        vec![0],
    );
    m.push(Layer::Add, vec![0, c]);
    check_backends("add", &m, &random_weights(&m, 63), 2.0, (1.0, 1), true, 63);
    let mut m = Model::new(&[5, 7, 3]);
    let c = m.push(
        Layer::Conv2d {
            filters: 2,
            kernel: 1,
            stride: 1,
            padding: Padding::Valid,
        },
        vec![0],
    );
    let s = m.push(Layer::Scale, vec![c]);
    m.push(Layer::Concat, vec![s, 0, c, 0]);
    assert_eq!(m.output_shape().unwrap(), vec![5, 7, 10]);
    // The convolution's ulp, scaled by up to 1.25, and the scale's own truncation.
    check_backends(
        "concat",
        &m,
        &random_weights(&m, 64),
        2.0,
        (3.0, 3),
        true,
        64,
    );
}

// ---------------------------------------------------------------- DAGs

/// conv → ReLU → conv, plus the block's input, ReLU.
fn residual_block() -> Model {
    let conv = |filters| Layer::Conv2d {
        filters,
        kernel: 3,
        stride: 1,
        padding: Padding::Explicit([1, 1, 1, 1]),
    };
    let mut m = Model::new(&[5, 7, 3]);
    let a = m.push(conv(3), vec![0]);
    let r = m.push(Layer::Relu, vec![a]);
    let b = m.push(conv(3), vec![r]);
    let s = m.push(Layer::Add, vec![b, 0]);
    m.push(Layer::Relu, vec![s]);
    m
}

/// Two convolution branches of different widths and paddings, concatenated, ReLU.
fn two_branches() -> Model {
    let mut m = Model::new(&[5, 7, 3]);
    let a = m.push(
        Layer::Conv2d {
            filters: 2,
            kernel: 1,
            stride: 1,
            padding: Padding::Valid,
        },
        vec![0],
    );
    let b = m.push(
        Layer::Conv2d {
            filters: 4,
            kernel: 2,
            stride: 1,
            padding: Padding::Explicit([0, 0, 1, 1]),
        },
        vec![0],
    );
    let c = m.push(Layer::Concat, vec![a, b]);
    m.push(Layer::Relu, vec![c]);
    m
}

/// Every new layer in one graph (inputs [5, 7, 3]), ending with a dense layer.
fn every_layer() -> Model {
    let mut m = Model::new(&[5, 7, 3]);
    let conv = m.push(
        Layer::Conv2d {
            filters: 4,
            kernel: 3,
            stride: 1,
            padding: Padding::Explicit([1, 0, 2, 1]),
        },
        vec![0],
    ); // [6, 6, 4]
    let leaky = m.push(Layer::LeakyRelu { alpha: 0.1 }, vec![conv]);
    let clip = m.push(Layer::Clip { max: 0.3 }, vec![leaky]);
    let pad = m.push(Layer::Pad2d { pads: [1, 0, 0, 1] }, vec![clip]); // [7, 7, 4]
    let max = m.push(Layer::MaxPool { window: stem() }, vec![pad]); // [4, 4, 4]
    let avg = m.push(
        Layer::AvgPool {
            window: window([2, 3], [1, 1], [0, 1, 1, 1]),
            count_padding: false,
        },
        vec![max],
    ); // [4, 4, 4]
    let scale = m.push(Layer::Scale, vec![max]);
    let bias = m.push(Layer::Bias, vec![scale]);
    let avg2 = m.push(
        Layer::AvgPool {
            window: window([3, 3], [1, 1], [1, 1, 1, 1]),
            count_padding: true,
        },
        vec![bias],
    );
    let add = m.push(Layer::Add, vec![avg2, max]);
    let twice = m.push(Layer::Add, vec![avg, avg]);
    let cat = m.push(Layer::Concat, vec![add, twice, max]); // [4, 4, 12]
    let relu = m.push(Layer::Relu, vec![cat]);
    let flat = m.push(Layer::Flatten, vec![relu]);
    m.push(Layer::Dense { units: 5 }, vec![flat]);
    m
}

#[test]
fn residual_block_on_every_backend() {
    let m = residual_block();
    assert!(!m.is_chain());
    assert_eq!(m.readers(), vec![2, 1, 1, 1, 1, 0]);
    let w = random_weights(&m, 70);
    // Two convolutions (an ulp each; the second also carries the first's) and the sum.
    check_backends("residual", &m, &w, 2.0, (3.0, 4), false, 70);
    // Against the same block written out by hand in floats.
    let mut g = rng(71);
    let (xf, _) = random_batch(&[2, 5, 7, 3], 2.0, &mut g);
    let conv = |x: &ArrayD<f64>, i: usize| {
        naive_conv(
            x,
            w.get(&format!("{i}.conv2d.kernel")).unwrap(),
            w.get(&format!("{i}.conv2d.bias")).unwrap(),
            1,
            [1, 1, 1, 1],
        )
    };
    let relu = |x: ArrayD<f64>| x.mapv(|v| v.max(0.0));
    let want = relu(conv(&relu(conv(&xf, 0)), 2) + &xf);
    assert!(max_gap(&float(&m, &w, &xf, &ReluKind::Exact), &want) < 1e-12);
    // Pond with its polynomial ReLU on small values.
    let (_, xr) = random_batch(&[2, 5, 7, 3], 1.0, &mut g);
    let p = plain(&m, &w, &xr, poly());
    let r = secure(&m, &w, &xr, 72, Pond::default).unwrap();
    let d = max_ulp_diff(&reconstruct(&r.outputs), &p);
    assert!(d <= 48, "pond residual: {d} ulps");
}

#[test]
fn concat_of_branches_on_every_backend() {
    let m = two_branches();
    assert_eq!(m.output_shape().unwrap(), vec![5, 7, 6]);
    assert_eq!(m.readers(), vec![2, 1, 1, 1, 0]);
    let w = random_weights(&m, 80);
    check_backends("branches", &m, &w, 2.0, (1.0, 1), false, 80);
    let mut g = rng(81);
    let (xf, _) = random_batch(&[2, 5, 7, 3], 2.0, &mut g);
    let conv = |i: usize, stride, pads| {
        naive_conv(
            &xf,
            w.get(&format!("{i}.conv2d.kernel")).unwrap(),
            w.get(&format!("{i}.conv2d.bias")).unwrap(),
            stride,
            pads,
        )
    };
    let (a, b) = (conv(0, 1, [0; 4]), conv(1, 1, [0, 0, 1, 1]));
    let want = ndarray::concatenate(ndarray::Axis(3), &[a.view(), b.view()])
        .unwrap()
        .mapv(|v| v.max(0.0));
    assert!(max_gap(&float(&m, &w, &xf, &ReluKind::Exact), &want) < 1e-12);
}

#[test]
fn every_layer_in_one_graph_on_securenn() {
    let m = every_layer();
    assert_eq!(m.output_shape().unwrap(), vec![5]);
    let w = random_weights(&m, 90);
    // Convolution (1), LeakyRelu (3 from float, 4 from plaintext), averages (2 each), scale
    // (1.25 times its input's, plus 1), dense (1); the Adds sum two branches' errors.
    check_backends("every layer", &m, &w, 1.0, (16.0, 24), false, 90);
    // Pond on the same graph with average pooling in place of max pooling.
    let m = m.with_avg_pooling();
    let mut g = rng(91);
    let (_, xr) = random_batch(&[2, 5, 7, 3], 1.0, &mut g);
    let p = plain(&m, &w, &xr, poly());
    let r = secure(&m, &w, &xr, 91, Pond::default).unwrap();
    let d = max_ulp_diff(&reconstruct(&r.outputs), &p);
    assert!(d <= 64, "pond: {d} ulps");
}

#[test]
fn batch_rows_are_independent() {
    // Image i of a batch of 3 gives what it gives alone (the gathers index the batch right).
    let m = every_layer();
    let w = random_weights(&m, 100);
    let mut g = rng(100);
    let (_, xr) = random_batch(&[3, 5, 7, 3], 1.0, &mut g);
    let all = plain(&m, &w, &xr, ReluKind::Exact);
    let per = 5 * 7 * 3;
    for i in 0..3 {
        let one = RingTensor::from_vec(
            &[1, 5, 7, 3],
            xr.as_slice()[i * per..(i + 1) * per].to_vec(),
        );
        let y = plain(&m, &w, &one, ReluKind::Exact);
        assert_eq!(
            y.as_slice(),
            &all.as_slice()[i * 5..(i + 1) * 5],
            "image {i}"
        );
    }
}

// ---------------------------------------------------------------- model-level checks

fn shape_error(m: &Model) -> (String, String) {
    match m.describe().unwrap_err() {
        ModelError::Shape { layer, reason } => {
            assert!(!reason.contains("  "), "a gap in the message: {reason:?}");
            (layer, reason)
        }
        e => panic!("not a shape error: {e}"),
    }
}

#[test]
fn describe_refuses_bad_graphs() {
    let conv = |filters, kernel| Layer::Conv2d {
        filters,
        kernel,
        stride: 1,
        padding: Padding::Valid,
    };
    // Add of different shapes.
    let mut m = Model::new(&[4, 4, 2]);
    let c = m.push(conv(3, 1), vec![0]);
    m.push(Layer::Add, vec![0, c]);
    let (layer, reason) = shape_error(&m);
    assert_eq!(layer, "1.add");
    assert!(
        reason.contains("[4, 4, 2]") && reason.contains("[4, 4, 3]"),
        "{reason}"
    );
    // Concat of values whose leading axes differ.
    let mut m = Model::new(&[4, 4, 2]);
    let c = m.push(conv(3, 3), vec![0]);
    m.push(Layer::Concat, vec![0, c]);
    assert_eq!(shape_error(&m).0, "1.concat");
    // Concat of a flat and an image value.
    let mut m = Model::new(&[4, 4, 2]);
    let f = m.push(Layer::Flatten, vec![0]);
    m.push(Layer::Concat, vec![f, 0]);
    assert_eq!(shape_error(&m).0, "1.concat");
    // A node reading its own output or a later value.
    for v in [1, 2, 7] {
        let mut m = Model::new(&[4, 4, 2]);
        m.push(Layer::Relu, vec![v]);
        m.push(Layer::Relu, vec![1]);
        let (layer, reason) = shape_error(&m);
        assert_eq!(layer, "0.relu", "reads {v}");
        assert!(reason.contains(&format!("value {v}")), "{reason}");
    }
    // Argmax anywhere but last.
    let m = Model::new(&[6]).argmax().relu();
    assert_eq!(shape_error(&m).0, "0.argmax");
    let mut m = Model::new(&[6]);
    let a = m.push(Layer::Argmax, vec![0]);
    m.push(Layer::Add, vec![0, 0]);
    let _ = a;
    assert_eq!(shape_error(&m).0, "0.argmax");
    // Arity: Add takes two, others one, Concat at least one.
    for (layer, inputs) in [
        (Layer::Add, vec![0]),
        (Layer::Add, vec![0, 0, 0]),
        (Layer::Relu, vec![0, 0]),
        (Layer::Concat, vec![]),
        (Layer::Relu, vec![]),
    ] {
        let mut m = Model::new(&[4, 4, 2]);
        m.push(layer.clone(), inputs.clone());
        assert!(m.describe().is_err(), "{layer:?} reading {inputs:?}");
    }
    // Windows and clips that do not fit.
    for layer in [
        Layer::MaxPool {
            window: window([2, 2], [1, 1], [0, 2, 0, 0]),
        },
        Layer::AvgPool {
            window: Window::square(5),
            count_padding: false,
        },
        Layer::MaxPool {
            window: window([2, 2], [0, 1], [0; 4]),
        },
        Layer::Clip { max: 0.0 },
        Layer::Clip { max: f64::NAN },
        Layer::LeakyRelu {
            alpha: f64::INFINITY,
        },
        conv(2, 5),
        Layer::Conv2d {
            filters: 2,
            kernel: 7,
            stride: 1,
            padding: Padding::Explicit([1, 1, 1, 1]),
        },
    ] {
        let m = Model::new(&[4, 4, 2]).then(layer.clone());
        assert_eq!(
            shape_error(&m).0,
            format!("0.{}", layer.kind()),
            "{layer:?}"
        );
    }
    // The forward passes refuse the same graphs instead of panicking.
    let mut m = Model::new(&[4, 4, 2]);
    let c = m.push(conv(3, 1), vec![0]);
    m.push(Layer::Add, vec![0, c]);
    let w = Weights { tensors: vec![] };
    let (xf, xr) = random_batch(&[1, 4, 4, 2], 1.0, &mut rng(110));
    assert!(forward_float(&m, &w, &xf, &ReluKind::Exact).is_err());
    assert!(try_plain(&m, &w, &xr, ReluKind::Exact).is_err());
}

/// Conv → ReLU → padded overlapping max pool (swapped), and a ReLU read by a max pool and an Add
/// (kept: the Add needs the ReLU's output).
fn pooled_graph() -> Model {
    let conv = |filters| Layer::Conv2d {
        filters,
        kernel: 3,
        stride: 1,
        padding: Padding::Explicit([1, 1, 1, 1]),
    };
    let mut m = Model::new(&[7, 7, 2]);
    let c = m.push(conv(3), vec![0]);
    let r = m.push(Layer::Relu, vec![c]);
    let p = m.push(Layer::MaxPool { window: stem() }, vec![r]); // [4, 4, 3]
    let c2 = m.push(conv(3), vec![p]);
    let r2 = m.push(Layer::Relu, vec![c2]);
    let p2 = m.push(
        Layer::MaxPool {
            window: window([2, 2], [1, 1], [0, 0, 1, 1]),
        },
        vec![r2],
    ); // [4, 4, 3]
    let s = m.push(Layer::Add, vec![p2, r2]);
    let r3 = m.push(Layer::Relu, vec![s]);
    let p3 = m.push(
        Layer::MaxPool {
            window: window([3, 2], [2, 1], [1, 0, 1, 1]),
        },
        vec![r3],
    );
    let f = m.push(Layer::Flatten, vec![p3]);
    m.push(Layer::Dense { units: 4 }, vec![f]);
    m
}

#[test]
fn pool_before_relu_keeps_the_function() {
    let m = pooled_graph();
    let swapped = m.pool_before_relu();
    let kinds = |m: &Model| m.layers().map(|l| l.kind()).collect::<Vec<_>>();
    assert_eq!(
        kinds(&swapped),
        [
            "conv2d", "maxpool", "relu", "conv2d", "relu", "maxpool", "add", "maxpool", "relu",
            "flatten", "dense"
        ]
    );
    assert_eq!(swapped.output_shape().unwrap(), m.output_shape().unwrap());
    // Bias pushed negative so that many windows are all negative.
    let mut w = random_weights(&m, 120);
    for (name, t) in &mut w.tensors {
        if name.ends_with("conv2d.bias") {
            t.mapv_inplace(|v| v - 0.5);
        }
    }
    let mut g = rng(120);
    for batch in [1, 2] {
        let (xf, xr) = random_batch(&batch_shape(&m, batch), 2.0, &mut g);
        assert_eq!(
            float(&m, &w, &xf, &ReluKind::Exact),
            float(&swapped, &w, &xf, &ReluKind::Exact)
        );
        assert_eq!(
            plain(&m, &w, &xr, ReluKind::Exact),
            plain(&swapped, &w, &xr, ReluKind::Exact)
        );
        let a = reconstruct(&secure(&m, &w, &xr, 121, SecureNn::default).unwrap().outputs);
        let b = reconstruct(
            &secure(&swapped, &w, &xr, 121, SecureNn::default)
                .unwrap()
                .outputs,
        );
        assert!(max_ulp_diff(&a, &b) <= 6);
    }
}

#[test]
fn paper_layout_of_a_graph_keeps_every_reader() {
    // The last dense layer's output is read by a Scale and an Add after it: the paper layout
    // puts a ReLU after it, and both must read the ReLU.
    let mut m = pooled_graph();
    let d = m.nodes.len();
    let s = m.push(Layer::Scale, vec![d]);
    m.push(Layer::Add, vec![s, d]);
    let paper = m.paper_layout();
    // What it should be: the swapped graph with the ReLU written in by hand.
    let mut want = m.pool_before_relu();
    want.nodes.truncate(d);
    let r = want.push(Layer::Relu, vec![d]);
    let s = want.push(Layer::Scale, vec![r]);
    want.push(Layer::Add, vec![s, r]);
    assert_eq!(paper, want);
    // The same function with the ReLU on the dense layer's output, and the same parameters
    // (names follow node indices, so they shift by one after the ReLU).
    let w = random_weights(&m, 130);
    let renamed = Weights {
        tensors: w
            .tensors
            .iter()
            .map(|(n, t)| {
                let name = match n.as_str() {
                    n if n.starts_with(&format!("{d}.")) => {
                        n.replacen(&d.to_string(), &(d + 1).to_string(), 1)
                    }
                    n => n.to_string(),
                };
                (name, t.clone())
            })
            .collect(),
    };
    paper.validate(&renamed).unwrap();
    let mut g = rng(130);
    let (xf, _) = random_batch(&batch_shape(&m, 2), 2.0, &mut g);
    // The reference: the original graph up to the dense layer, clamped at 0, then the Scale and
    // the Add by hand.
    let mut dense_only = m.clone();
    dense_only.nodes.truncate(d);
    let dense_weights = Weights {
        tensors: dense_only
            .param_shapes()
            .unwrap()
            .iter()
            .map(|(n, _)| (n.clone(), w.get(n).unwrap().clone()))
            .collect(),
    };
    let logits = float(&dense_only, &dense_weights, &xf, &ReluKind::Exact).mapv(|v| v.max(0.0));
    let scale = w.get(&format!("{d}.scale.scale")).unwrap();
    let expected = &logits * scale + &logits;
    let got = float(&paper, &renamed, &xf, &ReluKind::Exact);
    assert!(max_gap(&got, &expected) < 1e-12);
    // A chain ending in a dense layer gets a final ReLU; one ending in dense → ReLU does not.
    let chain = Model::new(&[4]).dense(3).relu().dense(2);
    assert_eq!(chain.paper_layout(), chain.clone().relu());
    assert_eq!(chain.clone().relu().paper_layout(), chain.clone().relu());
    assert!(chain.paper_layout().is_chain());
}

#[test]
fn readers_count_every_read() {
    assert_eq!(every_layer().readers(), {
        // value: 0 input, 1 conv, 2 leaky, 3 clip, 4 pad, 5 max (avg, scale, add, concat),
        // 6 avg (twice by one Add), 7 scale, 8 bias, 9 avg2, 10 add, 11 twice, 12 concat,
        // 13 relu, 14 flatten, 15 dense.
        vec![1, 1, 1, 1, 1, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    });
    assert_eq!(Model::new(&[3]).readers(), vec![0]);
    assert!(Model::new(&[3]).dense(2).relu().is_chain());
}

#[test]
fn models_survive_a_serde_round_trip() {
    let mut m = every_layer();
    m.push(Layer::Argmax, vec![m.nodes.len()]);
    m.input_layout = InputLayout::ChannelsFirst;
    for model in [
        m,
        residual_block(),
        two_branches(),
        pooled_graph().paper_layout(),
        Model::new(&[3, 3, 1]).then(Layer::LeakyRelu { alpha: 0.1 + 0.2 }),
    ] {
        let json = serde_json::to_string(&model).unwrap();
        let back: Model = serde_json::from_str(&json).unwrap();
        assert_eq!(back, model, "{json}");
        assert_eq!(back.describe().unwrap(), model.describe().unwrap());
    }
    // A model written before `input_layout` existed reads as channels last.
    let mut v: serde_json::Value = serde_json::to_value(residual_block()).unwrap();
    v.as_object_mut().unwrap().remove("input_layout");
    let back: Model = serde_json::from_value(v).unwrap();
    assert_eq!(back.input_layout, InputLayout::ChannelsLast);
    assert_eq!(back, residual_block());
}

// ---------------------------------------------------------------- range analysis

/// `analyse`'s bound for each layer is at least what `observe` sees.
fn assert_sound(m: &Model, w: &Weights, input: (f64, f64), batches: &[RingTensor]) {
    let obs = observe(m, w, fp(), &ReluKind::Exact, batches).unwrap();
    let r = analyse(m, w, fp(), input, &ReluKind::Exact, 1, Some(&obs)).unwrap();
    assert_eq!(r.layers.len(), m.nodes.len());
    for (l, o) in r.layers.iter().zip(&obs) {
        let seen = o.iter().copied().fold(0.0, f64::max);
        assert!(
            l.bound >= seen,
            "{} on [{}, {}]: bound {} below the observed {seen}",
            l.name,
            input.0,
            input.1,
            l.bound
        );
        assert!(l.bound.is_finite() && l.ring_bits.is_finite(), "{l:?}");
    }
}

/// Random batches in [lo, hi] and the constant images at either end.
fn range_batches(m: &Model, (lo, hi): (f64, f64), g: &mut Prg) -> Vec<RingTensor> {
    let shape = batch_shape(m, 4);
    let n: usize = shape.iter().product();
    let mid = (lo + hi) / 2.0;
    let mut out: Vec<RingTensor> = (0..3)
        .map(|_| {
            let v = (0..n).map(|_| mid + exact((hi - lo) / 2.0, g)).collect();
            batch_of(&shape, v).1
        })
        .collect();
    for c in [lo, hi] {
        out.push(batch_of(&batch_shape(m, 1), vec![c; n / 4]).1);
    }
    // Alternating ends: the largest differences for max pooling.
    let v = (0..n).map(|i| if i % 2 == 0 { lo } else { hi }).collect();
    out.push(batch_of(&shape, v).1);
    out
}

#[test]
fn range_bounds_are_sound_on_every_layer() {
    let mut g = rng(140);
    let mut m = every_layer();
    m.push(Layer::Argmax, vec![m.nodes.len()]);
    for (seed, input) in [
        (140, (-1.0, 1.0)),
        (141, (0.0, 1.0)),
        (142, (-300.0, 300.0)),
    ] {
        let w = random_weights(&m, seed);
        assert_sound(&m, &w, input, &range_batches(&m, input, &mut g));
        for model in [residual_block(), two_branches(), pooled_graph()] {
            let w = random_weights(&model, seed);
            assert_sound(&model, &w, input, &range_batches(&model, input, &mut g));
        }
    }
    // Each layer with a public constant, straight on the input (constant images reach the
    // corners of the interval).
    let layers = [
        Layer::LeakyRelu { alpha: 0.1 },
        Layer::LeakyRelu { alpha: 0.01 },
        Layer::LeakyRelu { alpha: -0.3 },
        Layer::Clip { max: 0.3 },
        Layer::Clip { max: 6.1 },
        Layer::AvgPool {
            window: Window::square(3),
            count_padding: false,
        },
        Layer::AvgPool {
            window: stem(),
            count_padding: false,
        },
        Layer::AvgPool {
            window: stem(),
            count_padding: true,
        },
        Layer::AvgPool {
            window: window([2, 3], [1, 2], [0, 2, 1, 0]),
            count_padding: false,
        },
    ];
    for layer in layers {
        let m = Model::new(&[5, 7, 3]).then(layer);
        let w = Weights { tensors: vec![] };
        for input in [(-1.0, 1.0), (-300.0, 300.0), (-1000.0, 7.0)] {
            assert_sound(&m, &w, input, &range_batches(&m, input, &mut g));
        }
    }
}

#[test]
fn range_counts_a_truncation_per_element() {
    // Every element of a LeakyRelu is scaled twice (with a pre-shift for the small α): as many
    // truncations per element as an average pooling has per output.
    let m = Model::new(&[5, 7, 3]).then(Layer::LeakyRelu { alpha: 0.1 });
    let w = Weights { tensors: vec![] };
    let r = analyse(&m, &w, fp(), (-1.0, 1.0), &ReluKind::Exact, 1, None).unwrap();
    let pre = u64::from(fp().constant_plan(0.1).unwrap().pre_shift > 0)
        + u64::from(fp().constant_plan(0.9).unwrap().pre_shift > 0);
    assert_eq!(r.layers[0].truncations, (2 + pre) * 105);
    let m = Model::new(&[5, 7, 3]).then(Layer::Scale);
    let w = random_weights(&m, 150);
    let r = analyse(&m, &w, fp(), (-1.0, 1.0), &ReluKind::Exact, 1, None).unwrap();
    assert_eq!(r.layers[0].truncations, 105);
}

// ---------------------------------------------------------------- determinism

#[test]
fn same_seed_same_shares_bytes_and_rounds() {
    let m = residual_block();
    let w = random_weights(&m, 160);
    let mut g = rng(160);
    let (_, xr) = random_batch(&[2, 5, 7, 3], 2.0, &mut g);
    let a = secure(&m, &w, &xr, 160, SecureNn::default).unwrap();
    let b = secure(&m, &w, &xr, 160, SecureNn::default).unwrap();
    let c = secure(&m, &w, &xr, 161, SecureNn::default).unwrap();
    assert_eq!(a.outputs, b.outputs, "same seed, same shares");
    assert_eq!(a.traffic, b.traffic, "same seed, same bytes and rounds");
    assert!(a.traffic.total_bytes() > 0 && a.traffic.rounds > 0);
    assert_ne!(a.outputs[0], c.outputs[0], "another seed, other shares");
    assert_eq!(
        (a.traffic.total_bytes(), a.traffic.rounds),
        (c.traffic.total_bytes(), c.traffic.rounds),
        "the costs do not depend on the seed"
    );
    assert!(max_ulp_diff(&reconstruct(&a.outputs), &reconstruct(&c.outputs)) <= 6);
    // The graph with every layer, on Pond too.
    let m = every_layer().with_avg_pooling();
    let w = random_weights(&m, 162);
    let (_, xr) = random_batch(&[1, 5, 7, 3], 1.0, &mut g);
    let paper = || secure(&m, &w, &xr, 162, SecureNn::paper).unwrap();
    let (a, b) = (paper(), paper());
    assert_eq!((a.outputs, a.traffic), (b.outputs, b.traffic), "securenn");
    let pond = || secure(&m, &w, &xr, 162, Pond::default).unwrap();
    let (a, b) = (pond(), pond());
    assert_eq!((a.outputs, a.traffic), (b.outputs, b.traffic), "pond");
}

// ---------------------------------------------------------------- DMaxpool on floor-sized windows

/// Pooling windows now floor (k need not divide the input): DMaxpool's one-hot tensor still has
/// the input's shape, with zeros where no window reaches.
#[test]
fn dmaxpool_of_an_input_that_k_does_not_divide() {
    use securenn::protocol::securenn::maxpool::dmaxpool;
    use securenn::protocol::{Costing, SharedTensor};
    let mut g = rng(180);
    let shape = [2, 5, 7, 2];
    // k = 2: Algorithm 10 (n divides 2^64); k = 3: Algorithm 12.
    for k in [2, 3] {
        let (xf, xr) = random_batch(&shape, 4.0, &mut g);
        let shares = securenn::share::share(&xr, &mut rng(181));
        let r = run3(180, move |ctx: Ctx| {
            let shares = shares.clone();
            async move {
                let mine = match ctx.me() {
                    P0 => Some(shares.0.clone()),
                    P1 => Some(shares.1.clone()),
                    _ => None,
                };
                let x = SharedTensor::new(&shape, 13, mine);
                Ok(dmaxpool(&ctx, &x, k, Costing::OPTIMISED)
                    .await?
                    .share()
                    .cloned())
            }
        })
        .unwrap();
        let mut want = ArrayD::<f64>::zeros(IxDyn(&shape));
        for n in 0..2 {
            for oy in 0..5 / k {
                for ox in 0..7 / k {
                    for ch in 0..2 {
                        let at = |t: usize| [n, oy * k + t / k, ox * k + t % k, ch];
                        // The later one among equal values.
                        let best = (0..k * k)
                            .reduce(|b, t| if xf[at(t)] >= xf[at(b)] { t } else { b })
                            .unwrap();
                        want[at(best)] = 1.0;
                    }
                }
            }
        }
        let got = reconstruct(&r.outputs);
        assert_eq!(got.shape(), &shape);
        let got: Vec<f64> = got.as_slice().iter().map(|&v| v as f64).collect();
        assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "k = {k}");
    }
}
