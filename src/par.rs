//! Parallel sections inside a party: a closure over fixed chunks of a range (or of an output
//! slice) on rayon's pool, each chunk's CPU time charged to the party that asked for it.
//!
//! # Determinism
//! How a range is cut depends only on its length and the caller's `min_chunk` ([`chunk_len`]),
//! never on the number of threads, and every chunk's result lands in its own place (a slice of
//! the output, or its index in [`map_chunks`]'s vector). So a section gives the same bytes on
//! one thread or sixty-four, as long as each chunk's work is a pure function of its range. Draw
//! randomness before the section (or derive it from the chunk index), never from a PRG shared
//! across chunks: the order chunks run in is not fixed.
//!
//! # Small inputs and nesting
//! A range shorter than two `min_chunk`s is one chunk and runs inline on the calling thread, as
//! does every section opened inside a chunk of another one (no nested parallelism: the outer
//! chunk's measured CPU time then covers it). Pick `min_chunk` so that a chunk is at least
//! ~50 µs of work: a hand-off between threads costs tens of µs on a busy VM.
//!
//! # Time
//! Each chunk of a section of two or more chunks measures its thread's CPU time, and the section
//! reports them to [`securenn_transports::offload`] on the calling thread (the party's), so the
//! simulator charges the party the chunks' makespan on its `cores` cores instead of missing the
//! work done on pool threads. The charge does not depend on which threads ran the chunks.
//!
//! The pool is rayon's global one, shared by the parties of one process (`RAYON_NUM_THREADS`
//! sets its size; by default one thread per core of the machine). On a small machine the wall
//! time therefore does not scale with the simulated cores; the virtual time does.

use rayon::prelude::*;
use securenn_transports::offload;
use securenn_transports::sim::thread_cpu_time;
use std::cell::Cell;
use std::ops::Range;
use std::thread::ThreadId;
use std::time::Duration;

/// Most chunks a section is cut into: enough to keep 64 cores busy, few enough that the
/// per-chunk bookkeeping (two clock reads) stays negligible.
pub const MAX_CHUNKS: usize = 64;

thread_local! {
    /// Set while this thread runs a chunk: a section opened inside one runs inline.
    static IN_CHUNK: Cell<bool> = const { Cell::new(false) };
}

/// The length of the chunks `n` items are cut into (the last may be shorter): `n` itself below
/// `2 * min_chunk`, else `n` spread evenly over `min(n / min_chunk, MAX_CHUNKS)` chunks. A
/// function of `n` and `min_chunk` only.
pub fn chunk_len(n: usize, min_chunk: usize) -> usize {
    let min = min_chunk.max(1);
    if n < 2 * min {
        return n.max(1);
    }
    n.div_ceil((n / min).min(MAX_CHUNKS))
}

/// Whether a section of `chunks` chunks runs inline, unmeasured (its CPU time is the calling
/// thread's own, or the enclosing chunk's).
fn inline(chunks: usize) -> bool {
    chunks <= 1 || IN_CHUNK.with(Cell::get)
}

/// Runs `f` as one chunk, returning its result, its CPU time and whether it ran on `caller`.
fn measured<R>(caller: ThreadId, f: impl FnOnce() -> R) -> (R, Duration, bool) {
    let t0 = thread_cpu_time();
    IN_CHUNK.with(|c| c.set(true));
    let r = f();
    IN_CHUNK.with(|c| c.set(false));
    let dt = thread_cpu_time().saturating_sub(t0);
    (r, dt, std::thread::current().id() == caller)
}

/// Reports a finished section's chunk times to the calling thread's compute account.
fn report(times: impl IntoIterator<Item = (Duration, bool)>) {
    let (mut chunks, mut own) = (Vec::new(), Duration::ZERO);
    for (dt, on_caller) in times {
        chunks.push(dt);
        if on_caller {
            own += dt;
        }
    }
    offload::report(&chunks, own);
}

/// Whether to hand chunks to the pool: not with a one-thread pool (the chunks then run on the
/// calling thread, still measured one by one, so the charge is the same).
fn use_pool() -> bool {
    rayon::current_num_threads() > 1
}

/// Calls `f` on consecutive ranges covering `0..n`, cut by [`chunk_len`], in parallel.
pub fn for_chunks(n: usize, min_chunk: usize, f: impl Fn(Range<usize>) + Sync) {
    map_chunks(n, min_chunk, f);
}

/// [`for_chunks`] that collects each chunk's result, in chunk order.
pub fn map_chunks<R: Send>(
    n: usize,
    min_chunk: usize,
    f: impl Fn(Range<usize>) -> R + Sync,
) -> Vec<R> {
    if n == 0 {
        return Vec::new();
    }
    let len = chunk_len(n, min_chunk);
    let chunks = n.div_ceil(len);
    let range = |i: usize| i * len..((i + 1) * len).min(n);
    if inline(chunks) {
        return (0..chunks).map(|i| f(range(i))).collect();
    }
    let caller = std::thread::current().id();
    let run = |i: usize| measured(caller, || f(range(i)));
    let out: Vec<(R, Duration, bool)> = if use_pool() {
        (0..chunks).into_par_iter().map(run).collect()
    } else {
        (0..chunks).map(run).collect()
    };
    let mut results = Vec::with_capacity(chunks);
    report(out.into_iter().map(|(r, dt, own)| {
        results.push(r);
        (dt, own)
    }));
    results
}

/// Fills `out` by chunks in parallel: `f(range, chunk)` gets a range of indices of `out`, cut
/// by [`chunk_len`], and `&mut out[range]`.
pub fn fill<T: Send>(out: &mut [T], min_chunk: usize, f: impl Fn(Range<usize>, &mut [T]) + Sync) {
    fill_rows(out, 1, min_chunk, f);
}

/// Fills the rows of `out` (row-major, `row_len` items a row) by chunks of whole rows in
/// parallel: `f(rows, chunk)` gets a range of row indices, cut by [`chunk_len`] of the row
/// count and `min_rows`, and those rows of `out`.
pub fn fill_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    min_rows: usize,
    f: impl Fn(Range<usize>, &mut [T]) + Sync,
) {
    let row_len = row_len.max(1);
    assert_eq!(
        out.len() % row_len,
        0,
        "par::fill_rows: {} items are not whole rows of {row_len}",
        out.len()
    );
    let rows = out.len() / row_len;
    if rows == 0 {
        return;
    }
    let len = chunk_len(rows, min_rows);
    let chunks = rows.div_ceil(len);
    let range = |i: usize| i * len..((i + 1) * len).min(rows);
    if inline(chunks) {
        for (i, c) in out.chunks_mut(len * row_len).enumerate() {
            f(range(i), c);
        }
        return;
    }
    let caller = std::thread::current().id();
    let run = |(i, c): (usize, &mut [T])| measured(caller, || f(range(i), c));
    let times: Vec<((), Duration, bool)> = if use_pool() {
        out.par_chunks_mut(len * row_len)
            .enumerate()
            .map(run)
            .collect()
    } else {
        out.chunks_mut(len * row_len).enumerate().map(run).collect()
    };
    report(times.into_iter().map(|((), dt, own)| (dt, own)));
}

/// `out[i] = f(a[i], b[i])` by chunks in parallel (`out`, `a` and `b` of one length).
pub fn zip_into<T: Send + Sync + Copy>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    min_chunk: usize,
    f: impl Fn(T, T) -> T + Sync,
) {
    assert!(
        a.len() == out.len() && b.len() == out.len(),
        "par::zip_into: lengths {}, {} and {}",
        out.len(),
        a.len(),
        b.len()
    );
    fill(out, min_chunk, |r, o| {
        for ((o, &x), &y) in o.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
            *o = f(x, y);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn chunking_depends_on_length_and_minimum_only() {
        assert_eq!(chunk_len(0, 10), 1);
        assert_eq!(chunk_len(19, 10), 19);
        assert_eq!(chunk_len(20, 10), 10);
        assert_eq!(chunk_len(25, 10), 13);
        assert_eq!(
            chunk_len(1_000_000, 10),
            1_000_000usize.div_ceil(MAX_CHUNKS)
        );
        assert_eq!(chunk_len(5, 0), 1); // min_chunk 0 acts as 1
        let cuts = |t| pool(t).install(|| map_chunks(1003, 10, |r| r));
        assert_eq!(cuts(1), cuts(4));
        let ranges = cuts(3);
        assert_eq!(ranges.len(), 1003usize.div_ceil(chunk_len(1003, 10)));
        assert!(ranges.len() <= MAX_CHUNKS);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, 1003);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    }

    /// A mixing function whose result depends on every bit of its input.
    fn mix(i: usize, x: u64) -> u64 {
        let mut h = x ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20 {
            h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        }
        h
    }

    #[test]
    fn the_same_results_on_one_thread_and_many() {
        let input: Vec<u64> = (0..100_003u64).map(|i| i * i).collect();
        let run = |threads| {
            pool(threads).install(|| {
                let mut out = vec![0u64; input.len()];
                fill(&mut out, 1000, |r, o| {
                    for (i, o) in r.zip(o) {
                        *o = mix(i, input[i]);
                    }
                });
                let mut rows = vec![0u64; 7 * 1001];
                fill_rows(&mut rows, 7, 10, |r, o| {
                    for (k, o) in o.iter_mut().enumerate() {
                        *o = mix(r.start * 7 + k, 1);
                    }
                });
                let sums = map_chunks(input.len(), 1000, |r| {
                    r.fold(0u64, |s, i| s.wrapping_add(mix(i, input[i])))
                });
                let mut zipped = vec![0u64; input.len()];
                zip_into(&mut zipped, &input, &out, 1000, u64::wrapping_add);
                (out, rows, sums, zipped)
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(5));
        // Serially, outside any pool.
        let serial: Vec<u64> = (0..input.len()).map(|i| mix(i, input[i])).collect();
        assert_eq!(one.0, serial);
        assert_eq!(
            one.2.iter().fold(0u64, |s, &x| s.wrapping_add(x)),
            serial.iter().fold(0u64, |s, &x| s.wrapping_add(x))
        );
    }

    #[test]
    fn nested_sections_run_inline() {
        let inner = pool(3).install(|| {
            map_chunks(8, 1, |r| {
                let ids = map_chunks(100, 10, |_| std::thread::current().id());
                (r, ids.iter().all(|&t| t == std::thread::current().id()))
            })
        });
        assert!(inner.iter().all(|(_, same)| *same));
    }

    #[test]
    fn chunks_run_elsewhere_are_reported_to_the_caller() {
        // Outside the pool (a party's thread): every chunk runs on a worker and is reported.
        std::thread::spawn(|| {
            let before = offload::offloaded_cpu_time();
            for_chunks(4, 1, |_| {
                let t0 = thread_cpu_time();
                while thread_cpu_time() - t0 < Duration::from_millis(5) {}
            });
            let moved = offload::offloaded_cpu_time() - before;
            if rayon::current_num_threads() > 1 {
                assert!(moved >= Duration::from_millis(19), "{moved:?}");
            } else {
                assert_eq!(moved, Duration::ZERO);
            }
        })
        .join()
        .unwrap();
    }
}
