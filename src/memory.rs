//! Peak memory per party: a counting global allocator that attributes every live allocation to
//! the party whose thread allocated it, even when another thread frees it (messages cross
//! threads), so the three parties of one process (threads of a [`crate::party::LocalCluster`])
//! each get their own figure where the process's RSS would lump them together.
//!
//! How: every allocation carries a small header in front of it holding a pointer to the
//! [`MemoryCounter`] of the thread that allocated it (null on threads that belong to no party:
//! the driver, the QUIC and simulator threads, tests' threads). A party's thread is tagged with
//! its counter when the party starts ([`set_thread_counter`]); the counter adds the requested
//! bytes of each allocation and takes them off when the block is freed, wherever, and keeps the
//! peak of the live bytes. A reallocation moves the block to the reallocating thread's counter.
//! Counters are relaxed atomics, one cache line each.
//!
//! The allocator ([`CountingAlloc`]) is the library's `#[global_allocator]` (declared in
//! `lib.rs`), so the binary, the tests and the benches all count. Sizes only: it never looks
//! at what a block holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Live and peak bytes of one party (or of whatever threads are tagged with it).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct MemoryCounter {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryCounter {
    /// A fresh counter for the life of the process. Allocations tagged with it may outlive
    /// whatever started them (a job's outputs, a transport's buffers), so a counter is never
    /// freed: one per party of each cluster, 128 bytes each.
    pub fn leak() -> &'static MemoryCounter {
        Box::leak(Box::default())
    }

    /// Bytes allocated by the counter's threads and not yet freed (requested sizes, headers
    /// excluded).
    pub fn live(&self) -> u64 {
        self.live.load(Relaxed) as u64
    }

    /// The most [`MemoryCounter::live`] has been since the counter was made or last reset.
    pub fn peak(&self) -> u64 {
        self.peak.load(Relaxed).max(self.live.load(Relaxed)) as u64
    }

    /// Start a new peak from the bytes live now (at a job's start).
    pub fn reset_peak(&self) {
        self.peak.store(self.live.load(Relaxed), Relaxed);
    }

    #[inline]
    fn add(&self, n: usize) {
        let now = self.live.fetch_add(n, Relaxed) + n;
        if now > self.peak.load(Relaxed) {
            self.peak.fetch_max(now, Relaxed);
        }
    }

    #[inline]
    fn sub(&self, n: usize) {
        self.live.fetch_sub(n, Relaxed);
    }
}

thread_local! {
    /// The counter this thread's allocations go to; null: none. Const-initialised and without a
    /// destructor, so the allocator may read it at any point of the thread's life.
    static COUNTER: Cell<*const MemoryCounter> = const { Cell::new(ptr::null()) };
}

/// Tag this thread's allocations from now on with `counter` (`None`: count them nowhere);
/// returns the previous tag.
pub fn set_thread_counter(
    counter: Option<&'static MemoryCounter>,
) -> Option<&'static MemoryCounter> {
    let new = counter.map_or(ptr::null(), |c| c as *const MemoryCounter);
    let old = COUNTER.with(|c| c.replace(new));
    // SAFETY: only `&'static MemoryCounter`s (or null) are ever stored.
    unsafe { old.as_ref() }
}

/// Whether the counting allocator is this process's global allocator (it is wherever the
/// library is linked; `false` would mean figures of zero are no measurement).
pub fn installed() -> bool {
    let c = MemoryCounter::leak();
    let prev = set_thread_counter(Some(c));
    let probe = std::hint::black_box(Box::new(0u64));
    set_thread_counter(prev);
    let counted = c.live() >= 8;
    drop(probe);
    counted
}

/// Run `f` with this thread's allocations counted by a fresh counter (its peak from the start);
/// returns `f`'s value and the peak live bytes.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let c = MemoryCounter::leak();
    let prev = set_thread_counter(Some(c));
    let out = f();
    set_thread_counter(prev);
    (out, c.peak())
}

/// Header bytes in front of a block of alignment `align`: at least 16, and a multiple of the
/// alignment so the block stays aligned. The counter pointer sits in the 8 bytes just before
/// the block.
#[inline]
fn header(align: usize) -> usize {
    align.max(16)
}

/// The alignment asked of System: the block's, and at least 8 for the header's pointer.
#[inline]
fn outer_align(align: usize) -> usize {
    align.max(8)
}

#[inline]
fn outer(layout: Layout) -> Option<(Layout, usize)> {
    let h = header(layout.align());
    let size = layout.size().checked_add(h)?;
    Some((
        Layout::from_size_align(size, outer_align(layout.align())).ok()?,
        h,
    ))
}

#[inline]
fn current() -> *const MemoryCounter {
    COUNTER.with(Cell::get)
}

/// Write the tag before the block at `base + h`, count the block, return the block.
///
/// # Safety
/// `base` must be null or a live allocation of at least `h + size` bytes, `h` a multiple of
/// 16, aligned to 8.
#[inline]
unsafe fn tag(base: *mut u8, h: usize, size: usize) -> *mut u8 {
    if base.is_null() {
        return base;
    }
    let counter = current();
    // SAFETY: `base + h - 8 .. base + h` is inside the allocation and 8-aligned (h is a
    // multiple of 16, base aligned to at least 8).
    unsafe {
        let block = base.add(h);
        (block.sub(8) as *mut *const MemoryCounter).write(counter);
        if let Some(c) = counter.as_ref() {
            c.add(size);
        }
        block
    }
}

/// Take the block at `ptr` off its counter; returns the allocation's start.
///
/// # Safety
/// `ptr` must be a block this allocator returned with header `h`.
#[inline]
unsafe fn untag(ptr: *mut u8, h: usize, size: usize) -> *mut u8 {
    // SAFETY: the tag was written by `tag` in the same allocation.
    unsafe {
        let counter = (ptr.sub(8) as *const *const MemoryCounter).read();
        if let Some(c) = counter.as_ref() {
            c.sub(size);
        }
        ptr.sub(h)
    }
}

/// The system allocator, counting live bytes per party (see the module's documentation).
pub struct CountingAlloc;

// SAFETY: every block is a System block with a header in front; the layouts passed to System
// on free and realloc are those it allocated with (same size + header, same alignment).
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((outer, h)) = outer(layout) else {
            return ptr::null_mut();
        };
        // SAFETY: `outer` has a nonzero size; `tag` gets an allocation of h + size bytes.
        unsafe { tag(System.alloc(outer), h, layout.size()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some((outer, h)) = outer(layout) else {
            return ptr::null_mut();
        };
        // SAFETY: as `alloc`.
        unsafe { tag(System.alloc_zeroed(outer), h, layout.size()) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let h = header(layout.align());
        // SAFETY: `ptr` came from `alloc` with this layout, so the outer layout is valid.
        unsafe {
            let base = untag(ptr, h, layout.size());
            System.dealloc(
                base,
                Layout::from_size_align_unchecked(layout.size() + h, outer_align(layout.align())),
            );
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let h = header(layout.align());
        let Some(new_outer) = new_size.checked_add(h) else {
            return ptr::null_mut();
        };
        let align = outer_align(layout.align());
        if Layout::from_size_align(new_outer, align).is_err() {
            return ptr::null_mut();
        }
        // SAFETY: `ptr` came from `alloc` with `layout`; System reallocates the whole block,
        // header included, keeping its alignment. On failure the old block stays as it was,
        // counted where it was.
        unsafe {
            let old = Layout::from_size_align_unchecked(layout.size() + h, align);
            let base = ptr.sub(h);
            let moved = System.realloc(base, old, new_outer);
            if moved.is_null() {
                return moved;
            }
            // The old size off its counter, the new one onto this thread's.
            untag(moved.add(h), h, layout.size());
            tag(moved, h, new_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_counts_its_allocations() {
        assert!(installed());
    }

    #[test]
    fn a_block_freed_on_another_thread_leaves_its_counter() {
        let c = MemoryCounter::leak();
        let prev = set_thread_counter(Some(c));
        let block = std::hint::black_box(vec![7u8; 1 << 20]);
        set_thread_counter(prev);
        assert!(c.live() >= 1 << 20, "live {}", c.live());
        let before = c.live();
        // Freed on a thread of no party (as a message is, at its receiver).
        std::thread::spawn(move || drop(block)).join().unwrap();
        assert_eq!(
            c.live(),
            before - (1 << 20),
            "the free reached the allocating counter"
        );
        assert!(c.peak() >= 1 << 20);
        c.reset_peak();
        assert_eq!(c.peak(), c.live());
    }

    #[test]
    fn a_reallocation_moves_to_the_reallocating_thread() {
        let (a, b) = (MemoryCounter::leak(), MemoryCounter::leak());
        let prev = set_thread_counter(Some(a));
        let mut v: Vec<u64> = Vec::with_capacity(100);
        v.push(1);
        set_thread_counter(prev);
        assert_eq!(a.live(), 800);
        let v = std::thread::spawn(move || {
            set_thread_counter(Some(b));
            v.reserve_exact(1000);
            set_thread_counter(None);
            v
        })
        .join()
        .unwrap();
        assert_eq!(a.live(), 0);
        assert_eq!(b.live(), 8 * v.capacity() as u64);
        drop(v);
        assert_eq!(b.live(), 0);
        assert_eq!(b.peak(), 8 * 1001);
    }

    #[test]
    fn large_alignments_stay_aligned_and_counted() {
        #[repr(align(4096))]
        struct Page([u8; 4096]);
        let (page, peak) = measure(|| {
            // black_box: unobserved, the optimiser would drop the allocation.
            let p = std::hint::black_box(Box::new(Page([1; 4096])));
            assert_eq!(&*p as *const Page as usize % 4096, 0);
            p.0[4095]
        });
        assert_eq!(page, 1);
        assert!(peak >= 4096);
    }
}
