//! Hostile inputs are rejected without large allocations.
//!
//! A counting global allocator records the peak bytes live on the current thread while
//! `decode` runs; each test thread counts only its own allocations.
//!
// NOTE: libjpeg allocates with C `malloc`, which this allocator does not see, so for JPEG
// only the Rust-side buffers are counted; its dimension check still runs before decoding.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{cases, corpus_file};
use effnet_imaging::{Limits, decode};

struct CountingAllocator;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + layout.size());
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
        // SAFETY: forwards the caller's layout unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Peak bytes allocated on this thread above the level at the start of `run`.
fn peak_allocation(run: impl FnOnce()) -> usize {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    run();
    PEAK.with(Cell::get) - start
}

#[test]
fn hostile_cases_allocate_little() {
    for case in cases().iter().filter(|case| case.expect != "ok") {
        let bytes = corpus_file(&case.file);
        let peak = peak_allocation(|| {
            let result = decode(&bytes, &Limits::default());
            assert!(result.is_err(), "{} decoded", case.file);
        });
        println!("{:<20} peak {peak} bytes", case.file);
        assert!(
            peak < 1 << 20,
            "{}: peak allocation {peak} bytes",
            case.file
        );
    }
}

#[test]
fn decode_peak_near_output() {
    // A 64x48 RGB8 PNG: the decode should hold little beyond the 9216-byte image.
    let bytes = corpus_file("rgb8.png");
    let peak = peak_allocation(|| {
        let image = decode(&bytes, &Limits::default()).expect("rgb8.png decodes");
        assert_eq!(image.dimensions(), (64, 48));
    });
    println!("rgb8.png peak {peak} bytes");
    assert!(peak < 1 << 20, "peak allocation {peak} bytes");
}
