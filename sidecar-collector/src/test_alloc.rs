//! Test only: the library tests' allocator counts, per thread, the bytes live
//! and their peak while [`measure`] runs, so that a test can hold a memory
//! bound (what a receiver reserves before translating) against what the code
//! really allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note(delta: i64) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// The workspace denies unsafe code; an allocator is nothing but.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (System) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc` and `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f`; its result, and the most bytes this thread had allocated at
/// once meanwhile (counted from zero at the start, the result included).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
    LIVE.set(0);
    PEAK.set(0);
    ON.set(true);
    let r = f();
    ON.set(false);
    (r, PEAK.get().max(0) as u64)
}

#[test]
fn measure_sees_what_is_allocated_and_freed() {
    let (v, peak) = measure(|| {
        let big = vec![1u8; 100_000];
        drop(big);
        vec![2u8; 10_000]
    });
    assert!((100_000..110_000).contains(&peak), "{peak}");
    assert_eq!(v.len(), 10_000);
    let ((), peak) = measure(|| ());
    assert_eq!(peak, 0);
}
