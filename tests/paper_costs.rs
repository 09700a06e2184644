//! Byte-exact reproduction of the SecureNN paper's inference communication (Table 7, all parties
//! summed, one forward pass plus argmax) by running the secure protocol in the paper's cost
//! layout, and the same closed-form cost model at other batch sizes. The batch-128 runs of B and
//! C move 1.07 and 1.55 GB through the in-memory transport (about 30 s and 0.6 GB of memory in a
//! release build on the 2-core build machine).

mod common;

use common::*;
use securenn::channel::{Ctx, P0, P1};
use securenn::nn::{Layer, Model, forward, input_params};
use securenn::protocol::{Protocol, SecureNn};
use securenn::ring::kernels::conv_geometry;

/// Bytes of one forward pass plus argmax of `model` (paper layout) at `batch`, run by the
/// three parties: images from P0, weights from P1 (sharing either costs nothing: the owner and
/// the other server derive the mask from their common seed), nothing revealed.
fn run_paper(model: &Model, batch: usize) -> securenn_transports::MeterSnapshot {
    let model = model.paper_layout();
    let weights = model.init_weights(1).unwrap();
    let mut shape = vec![batch];
    shape.extend(&model.input);
    let mut g = rng(batch as u64);
    let x = random_fixed(&shape, 1.0, &mut g);
    let r = run3(batch as u64, move |ctx: Ctx| {
        let (model, weights, x, shape) = (model.clone(), weights.clone(), x.clone(), shape.clone());
        async move {
            let p = SecureNn::paper();
            let me = ctx.me();
            let params = input_params(&p, &ctx, &model, P1, (me == P1).then_some(&weights)).await?;
            let xs = p
                .input(&ctx, P0, (me == P0).then_some(&x), &shape, 13)
                .await?;
            forward(&p, &ctx, &model, &params, xs).await?;
            Ok(())
        }
    })
    .unwrap();
    r.traffic
}

/// The paper's closed-form cost model (reference §4.5): Linear/Conv = 8(2|X_im2col| + 2|W| +
/// |Z|), ReLU 704 per element, maxpool 744(n - 1) per output, argmax 744·9 per image.
fn cost_model(model: &Model, batch: usize) -> u64 {
    let model = model.paper_layout();
    let b = batch as u64;
    let mut total = 0u64;
    for (layer, info) in model.layers().zip(model.describe().unwrap()) {
        let inp: u64 = info.input.iter().product::<usize>() as u64;
        let out: u64 = info.output.iter().product::<usize>() as u64;
        total += match layer {
            Layer::Dense { units } => {
                8 * (2 * b * inp + 2 * inp * *units as u64 + b * *units as u64)
            }
            Layer::Conv2d {
                filters,
                kernel,
                stride,
                padding,
            } => {
                let g = conv_geometry(
                    info.input[0],
                    info.input[1],
                    *kernel,
                    *kernel,
                    *stride,
                    *padding,
                );
                let rows = b * (g.out_h * g.out_w) as u64;
                let cols = (kernel * kernel * info.input[2]) as u64;
                8 * (2 * rows * cols + 2 * cols * *filters as u64 + rows * *filters as u64)
            }
            Layer::Relu => 704 * b * inp,
            Layer::MaxPool { window } => 744 * (window.cells() - 1) as u64 * b * out,
            Layer::Argmax => 744 * (inp - 1) * b,
            _ => 0,
        };
    }
    total
}

fn networks() -> [(&'static str, Model, u64, u64); 4] {
    use securenn::models::*;
    [
        ("A", network_a(), 2_100_984, 29_117_440),
        ("B", network_b(), 8_863_192, 1_066_619_776),
        ("C", network_c(), 18_943_256, 1_549_960_768),
        (
            "D as benchmarked",
            network_d_as_benchmarked(),
            4_055_656,
            317_701_968,
        ),
    ]
}

#[test]
fn batch_1_matches_the_paper_to_the_byte() {
    for (name, model, paper, _) in networks() {
        assert_eq!(cost_model(&model, 1), paper, "{name}: the cost model");
        assert_eq!(
            run_paper(&model, 1).total_bytes(),
            paper,
            "{name}: the protocol run"
        );
    }
}

#[test]
fn small_batch_matches_the_cost_model() {
    for (name, model, _, paper128) in networks() {
        assert_eq!(
            cost_model(&model, 128),
            paper128,
            "{name}: the cost model at 128"
        );
        assert_eq!(
            run_paper(&model, 3).total_bytes(),
            cost_model(&model, 3),
            "{name}: batch 3"
        );
    }
}

#[test]
fn batch_128_of_a_and_d_match_the_paper() {
    let [(_, a, _, a128), _, _, (_, d, _, d128)] = networks();
    assert_eq!(run_paper(&a, 128).total_bytes(), a128);
    assert_eq!(run_paper(&d, 128).total_bytes(), d128);
}

#[test]
fn batch_128_of_b_and_c_match_the_paper() {
    let [_, (_, b, _, b128), (_, c, _, c128), _] = networks();
    assert_eq!(run_paper(&b, 128).total_bytes(), b128);
    assert_eq!(run_paper(&c, 128).total_bytes(), c128);
}

/// Network D as the paper describes it (stride-2 SAME conv, 980 features) costs 2,464,456 bytes
/// at batch 1 and 114,028,368 at batch 128 in the paper's layout (reference §2.2).
#[test]
fn network_d_as_described() {
    let d = securenn::models::network_d();
    assert_eq!(cost_model(&d, 1), 2_464_456);
    assert_eq!(cost_model(&d, 128), 114_028_368);
    assert_eq!(run_paper(&d, 1).total_bytes(), 2_464_456);
}
