//! Compute a thread hands to helper threads (a parallel section), reported back to the thread
//! it was done for, so a per-thread CPU clock still sees it.
//!
//! A party's virtual clock in the simulator advances by the CPU time of the party's thread
//! ([`crate::sim::thread_cpu_time`]). Work that a parallel section runs on pool workers is not
//! on that thread, so the section reports it here, on the party's thread, once it finishes: the
//! CPU time each of its chunks measured on the thread that ran it, in chunk order, and how much
//! of it the calling thread ran itself (that part is already in its own CPU time).
//!
//! **The cost model.** A party has `cores` cores ([`crate::sim::SimConfig::cores`]). A section's
//! chunks are list-scheduled in order onto `cores` identical workers (each chunk goes to the
//! worker that frees up first) and the party is charged the schedule's makespan. With one core
//! that is the sum of the chunks, the section's total CPU time, so the clock reads as if the
//! party's thread had done the work itself; with `cores` ≥ the chunk count it is the longest
//! chunk; with many equal chunks it is total / `cores`. The serial work around the sections is
//! charged as before. The charge does not depend on which threads ran the chunks, or how many
//! the machine has: the same section costs the same virtual time on 2 cores or 64. The model assumes the cores are otherwise idle (a party's other work
//! waits for the section) and ignores memory bandwidth shared between cores.
//!
//! The counters are cumulative and per thread, so any number of readers (the simulator's
//! clock, a party's CPU report, a tracing span) take differences without disturbing each other.
//! This module knows nothing of what the sections compute.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// Cores the simulator gives the party running on this thread (1 until a simulated
    /// transport says otherwise).
    static CORES: Cell<u32> = const { Cell::new(1) };
    /// Sum of every reported chunk's CPU time.
    static TOTAL: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// Sum over reported sections of (makespan on `CORES` cores − the part the thread ran
    /// itself), in nanoseconds: what the thread's own CPU time lacks. Negative when the thread
    /// ran chunks that several cores would have overlapped.
    static CHARGED: Cell<i64> = const { Cell::new(0) };
}

/// The longest a party would take for `chunks` (CPU times, in chunk order) on `cores` cores:
/// each chunk goes, in order, to the core that frees up first.
pub fn makespan(chunks: &[Duration], cores: u32) -> Duration {
    let cores = cores.max(1) as usize;
    if cores == 1 || chunks.len() <= 1 {
        return chunks.iter().sum();
    }
    if cores >= chunks.len() {
        return chunks.iter().copied().max().unwrap_or_default();
    }
    let mut free = vec![Duration::ZERO; cores];
    for &c in chunks {
        let first = free.iter_mut().min().expect("at least one core");
        *first += c;
    }
    free.into_iter().max().unwrap_or_default()
}

/// Report a parallel section run on behalf of the calling thread: the CPU time of each of its
/// chunks in chunk order, wherever it ran, and `on_caller`, the sum of those the calling thread
/// ran itself (already in its own CPU time).
pub fn report(chunks: &[Duration], on_caller: Duration) {
    if chunks.is_empty() {
        return;
    }
    let total: Duration = chunks.iter().sum();
    let on_caller = on_caller.min(total);
    TOTAL.with(|t| t.set(t.get() + (total - on_caller)));
    let span = makespan(chunks, CORES.with(Cell::get));
    let ns = |d: Duration| d.as_nanos() as i64;
    CHARGED.with(|c| c.set(c.get() + ns(span) - ns(on_caller)));
}

/// CPU time of every reported chunk that ran on another thread than this one.
pub fn offloaded_cpu_time() -> Duration {
    TOTAL.with(Cell::get)
}

/// CPU time spent for this thread: its own plus what its parallel sections ran elsewhere.
pub fn cpu_time() -> Duration {
    crate::sim::thread_cpu_time() + offloaded_cpu_time()
}

/// Makespans charged for this thread's sections so far, at the cores in force when each ran,
/// minus the part of them the thread ran itself (nanoseconds; a difference of two readings
/// plus the thread's CPU time over the same interval is never negative).
pub(crate) fn charged() -> i64 {
    CHARGED.with(Cell::get)
}

/// Set the cores of the party running on this thread (the simulator does, on the party's
/// thread, each time it reads the party's clock).
pub(crate) fn set_cores(cores: u32) {
    CORES.with(|c| c.set(cores.max(1)));
}

/// The cores in force on this thread.
pub fn cores() -> u32 {
    CORES.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn makespan_is_total_on_one_core_and_total_over_n_for_equal_chunks() {
        let eq = vec![ms(10); 16];
        assert_eq!(makespan(&eq, 1), ms(160));
        assert_eq!(makespan(&eq, 4), ms(40));
        assert_eq!(makespan(&eq, 16), ms(10));
        assert_eq!(makespan(&eq, 64), ms(10));
        // 17 chunks on 16 cores: one core runs two.
        assert_eq!(makespan(&[ms(10); 17], 16), ms(20));
        // Unequal: the long chunk bounds it.
        assert_eq!(makespan(&[ms(50), ms(1), ms(1)], 2), ms(50));
        assert_eq!(makespan(&[], 4), Duration::ZERO);
    }

    #[test]
    fn reports_accumulate_per_thread() {
        std::thread::spawn(|| {
            set_cores(4);
            report(&[ms(10); 8], Duration::ZERO);
            assert_eq!(offloaded_cpu_time(), ms(80));
            assert_eq!(charged(), 20_000_000);
            set_cores(1);
            report(&[ms(10); 2], Duration::ZERO);
            assert_eq!(offloaded_cpu_time(), ms(100));
            assert_eq!(charged(), 40_000_000);
            // Chunks the thread ran itself: only the overlap four cores would win is taken off.
            set_cores(4);
            report(&[ms(10); 8], ms(80));
            assert_eq!(offloaded_cpu_time(), ms(100));
            assert_eq!(charged(), 40_000_000 + 20_000_000 - 80_000_000);
        })
        .join()
        .unwrap();
        // Another thread's counters are untouched.
        assert_eq!(cores(), 1);
    }
}
