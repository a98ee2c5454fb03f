//! What a request costs at the VM boundary, counted by the filter itself in the
//! diagnostic build (`--features diagnostics`; `scripts/bench/filter` builds and
//! reads it): stream callbacks the host entered the VM for, memory allocations
//! the host entered it for while returning data, and host calls made during
//! stream callbacks. Exported as the counters `meshtrace.diag_*`. Without the
//! feature every function here is empty.

#[cfg(feature = "diagnostics")]
mod on {
    use std::cell::Cell;

    thread_local! {
        static IN_STREAM: Cell<bool> = const { Cell::new(false) };
        pub static CALLBACKS: Cell<u64> = const { Cell::new(0) };
        pub static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
        pub static HOST_CALLS: Cell<u64> = const { Cell::new(0) };
    }

    fn bump(c: &'static std::thread::LocalKey<Cell<u64>>) {
        c.with(|v| v.set(v.get() + 1));
    }

    /// A stream callback is running until the guard drops.
    pub struct Stream;
    impl Drop for Stream {
        fn drop(&mut self) {
            IN_STREAM.with(|s| s.set(false));
        }
    }
    pub fn stream_callback() -> Stream {
        bump(&CALLBACKS);
        IN_STREAM.with(|s| s.set(true));
        Stream
    }
    pub fn allocation() {
        if IN_STREAM.with(Cell::get) {
            bump(&ALLOCATIONS);
        }
    }
    pub fn host_call() {
        if IN_STREAM.with(Cell::get) {
            bump(&HOST_CALLS);
        }
    }
    /// The counters' names and totals so far.
    pub fn totals() -> [(&'static str, u64); 3] {
        [
            ("meshtrace.diag_vm_entries", CALLBACKS.with(Cell::get)),
            ("meshtrace.diag_allocations", ALLOCATIONS.with(Cell::get)),
            ("meshtrace.diag_host_calls", HOST_CALLS.with(Cell::get)),
        ]
    }
}

#[cfg(feature = "diagnostics")]
pub use on::{allocation, host_call, stream_callback, totals};

#[cfg(not(feature = "diagnostics"))]
mod off {
    pub struct Stream;
    #[inline(always)]
    pub fn stream_callback() -> Stream {
        Stream
    }
    #[inline(always)]
    pub fn allocation() {}
    #[inline(always)]
    pub fn host_call() {}
    pub fn totals() -> [(&'static str, u64); 0] {
        []
    }
}

#[cfg(not(feature = "diagnostics"))]
pub use off::{allocation, host_call, stream_callback, totals};
