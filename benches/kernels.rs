//! Benchmarks of the kernels: Z_{2^64} `matmul` against ndarray's f64 `dot` (matrixmultiply)
//! on the same shapes, `conv2d` on the networks' convolution layers, PRG throughput (ChaCha
//! 8/12/20) and envelope framing. PrivateCompare per element is in `benches/protocols.rs`.
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

/// PRG throughput: ChaCha12 (what the protocols use) beside ChaCha8 and ChaCha20, filling 1 MiB.
fn bench_prg(c: &mut Criterion) {
    use rand::SeedableRng;
    use rand_core::Rng;
    let mut group = configure(c, "prg");
    let mut buf = vec![0u8; 1 << 20];
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("chacha12", |bench| {
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(1);
        bench.iter(|| rng.fill_bytes(black_box(&mut buf)))
    });
    group.bench_function("chacha8", |bench| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        bench.iter(|| rng.fill_bytes(black_box(&mut buf)))
    });
    group.bench_function("chacha20", |bench| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        bench.iter(|| rng.fill_bytes(black_box(&mut buf)))
    });
    group.finish();
}

/// Envelope framing (bincode header + raw payload) and parsing, at a PrivateCompare message of
/// 128 comparisons (8 KiB) and a batch-128 mask of network A's first layer (800 KiB).
fn bench_envelope(c: &mut Criterion) {
    use securenn_transports::{Envelope, PartyId};
    let mut group = configure(c, "envelope");
    for len in [8 << 10, 800 << 10] {
        let env = Envelope {
            session: 1,
            from: PartyId(0),
            to: PartyId(2),
            key: "infer/batch~3/2.relu/relu/drelu/share_convert/private_compare#0".into(),
            depth: 42,
            arrival: 0,
            payload: vec![7u8; len],
        };
        group.throughput(Throughput::Bytes(len as u64));
        let mut frame = Vec::new();
        group.bench_with_input(BenchmarkId::new("encode", len), &(), |bench, _| {
            bench.iter(|| {
                frame.clear();
                black_box(&env).encode_frame(&mut frame);
            })
        });
        frame.clear();
        env.encode_frame(&mut frame);
        group.bench_with_input(BenchmarkId::new("decode", len), &(), |bench, _| {
            bench.iter(|| Envelope::decode_frame(black_box(&frame)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_matmul,
    bench_conv2d,
    bench_prg,
    bench_envelope
);
criterion_main!(benches);
