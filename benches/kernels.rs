//! Benchmarks of the Z_{2^64} kernels: `matmul` against ndarray's f64 `dot` (matrixmultiply)
//! on the same shapes, and `conv2d` on the network's convolution layers.
//!
//! Each matmul shape is measured twice in a row, `u64/<shape>` then `f64/<shape>`, and the
//! throughput is reported in elements = 2·m·k·n operations, so "Gelem/s" reads as GOP/s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use securenn::ring::kernels::{Padding, conv2d, matmul};

/// (m, k, n) of the products that matter: dense layers (batch 128 and 1), the im2col products
/// of the two conv layers (batch 1 and 128), and a tiny one dominated by call overhead.
const SHAPES: &[(usize, usize, usize)] = &[
    (128, 784, 128),
    (1, 784, 128),
    (128, 128, 128),
    (576, 25, 16),
    (73728, 25, 16),
    (64, 400, 100),
    (8192, 400, 100),
    (1, 100, 10),
];

/// Deterministic full-range u64 data (xorshift64).
fn data(len: usize, seed: u64) -> Vec<u64> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        })
        .collect()
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group
}

fn bench_matmul(c: &mut Criterion) {
    let mut group = configure(c, "matmul");
    for &(m, k, n) in SHAPES {
        let shape = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));

        let (a, b) = (data(m * k, 1), data(k * n, 2));
        group.bench_with_input(BenchmarkId::new("u64", &shape), &(), |bench, _| {
            bench.iter(|| matmul(black_box(&a), black_box(&b), m, k, n))
        });

        let fa = Array2::from_shape_fn((m, k), |(i, j)| a[i * k + j] as f64);
        let fb = Array2::from_shape_fn((k, n), |(i, j)| b[i * n + j] as f64);
        group.bench_with_input(BenchmarkId::new("f64", &shape), &(), |bench, _| {
            bench.iter(|| black_box(&fa).dot(black_box(&fb)))
        });
    }
    group.finish();
}

fn bench_conv2d(c: &mut Criterion) {
    let mut group = configure(c, "conv2d");
    // (input NHWC without batch, filter HWIO): the two conv layers, VALID, stride 1.
    let layers = [([28, 28, 1], [5, 5, 1, 16]), ([12, 12, 16], [5, 5, 16, 16])];
    for batch in [1, 128] {
        for ([h, w, ci], fs) in layers {
            let xs = [batch, h, w, ci];
            let (x, f) = (data(xs.iter().product(), 3), data(fs.iter().product(), 4));
            let out_pixels = batch * (h - fs[0] + 1) * (w - fs[1] + 1);
            group.throughput(Throughput::Elements(
                (2 * out_pixels * fs[0] * fs[1] * ci * fs[3]) as u64,
            ));
            let id = format!(
                "b{batch}_{h}x{w}x{ci}_f{}x{}x{}x{}",
                fs[0], fs[1], fs[2], fs[3]
            );
            group.bench_with_input(BenchmarkId::new("u64", id), &(), |bench, _| {
                bench.iter(|| conv2d(black_box(&x), xs, black_box(&f), fs, 1, Padding::Valid))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_conv2d);
criterion_main!(benches);
