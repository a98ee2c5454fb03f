//! Issue 21, finding 12: the benchmarks inherit `panic = "abort"`, so a failed
//! run never dropped its collectors and left them running. `bench::guard`'s
//! panic hook (which runs before an abort too) kills every child the harness
//! started. Its own test binary: the hook is process-wide.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::Collector;
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    // A zombie (killed, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn a_panicking_benchmark_leaves_no_collector_behind() {
    meshtrace_testkit::bench::guard();
    let c = Collector::start();
    let pid = c.child.id();
    assert!(alive(pid));
    // What a failed benchmark does: panic with its collectors running (the release
    // profile aborts right after the hook; `Drop` never runs).
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        panic!("a benchmark step failed");
    }));
    assert!(caught.is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "collector {pid} still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A collector stopped normally is no longer the hook's.
    let d = Collector::start();
    let pid = d.child.id();
    drop(d);
    drop(c);
    assert!(!alive(pid));
}
