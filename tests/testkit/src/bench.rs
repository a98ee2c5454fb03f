//! Helpers shared by the benchmark binaries.

use std::process::Command;
use std::sync::atomic::Ordering;

/// Call first in a benchmark's `main`: a panic kills every collector and Envoy
/// the run started (the release profile aborts on panic, so `Drop` never
/// runs), and collectors are waited for as long as a cold start on a large
/// store may take (5 minutes, not the tests' 20 s).
pub fn guard() {
    crate::collector::READY_TIMEOUT_S.store(300, Ordering::Relaxed);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        crate::kill_children();
        default(info);
    }));
}

/// The value after `--name` on the command line, else `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Clock ticks per second of /proc/PID/stat times.
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The `p`-quantile of `v` (nearest rank; `v` is sorted in place); 0 when empty.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}
