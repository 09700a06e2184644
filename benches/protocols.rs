//! Benchmarks of SecureNN's comparison protocols with all three parties in this process (one
//! thread each, on however many cores the machine has): DReLU and ReLU on 128×128 (the paper's
//! Table 8 row) and 10^5 elements, and PrivateCompare per element. Times are wall time of the
//! whole three-party protocol, measured inside the job (session setup excluded).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use securenn::channel::{Ctx, P0, P1, P2};
use securenn::party::{LocalCluster, PartyConfig, SeedSource, spmd};
use securenn::protocol::securenn::bits::bit_shares;
use securenn::protocol::securenn::private_compare::private_compare;
use securenn::protocol::securenn::relu::{drelu, relu};
use securenn::protocol::{Costing, SharedTensor};
use securenn::ring::RingTensor;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Op {
    Drelu,
    Relu,
    PrivateCompare,
}

/// Run `iters` sequential instances of `op` on `n` elements; the wall time at P0.
fn run(op: Op, n: usize, iters: u64) -> Duration {
    let r = LocalCluster::run_once(
        PartyConfig::default(),
        SeedSource::Fixed(1),
        "bench",
        spmd(move |ctx: Ctx| async move {
            let mut rng = <securenn::share::Prg as rand::SeedableRng>::seed_from_u64(9);
            let x = RingTensor::random(&[n], &mut rng).map(|v| ((v as i64) >> 2) as u64);
            let share = match ctx.me() {
                P0 => Some(x.clone()),
                P1 => Some(RingTensor::zeros(&[n])),
                _ => None,
            };
            let t = SharedTensor::new(&[n], 13, share);
            let (b0, b1) = bit_shares(x.as_slice(), &mut rng);
            let bits = match ctx.me() {
                P0 => Some(b0),
                P1 => Some(b1),
                _ => None,
            };
            let (r, beta) = if ctx.me() == P2 {
                (vec![], vec![])
            } else {
                (x.as_slice().to_vec(), vec![0u8; n])
            };
            let t0 = Instant::now();
            for _ in 0..iters {
                match op {
                    Op::Drelu => {
                        drelu(&ctx, &t, Costing::PAPER).await?;
                    }
                    Op::Relu => {
                        relu(&ctx, &t, Costing::PAPER).await?;
                    }
                    Op::PrivateCompare => {
                        private_compare(&ctx, n, bits.as_ref(), &r, &beta, Costing::PAPER).await?;
                    }
                }
            }
            Ok(t0.elapsed())
        }),
    )
    .expect("protocol runs");
    r.outputs[0]
}

fn comparisons(c: &mut Criterion) {
    let mut g = c.benchmark_group("securenn");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, op) in [
        ("drelu", Op::Drelu),
        ("relu", Op::Relu),
        ("private_compare", Op::PrivateCompare),
    ] {
        for n in [128 * 128, 100_000] {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter_custom(|iters| run(op, n, iters))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, comparisons);
criterion_main!(benches);
