//! Trace analysis, one implementation for the collector's API and the UI:
//!
//! - [`trace`]: a trace as a tree of spans (ids, parents, times), built from any
//!   span list; orphans and several roots are reported, not hidden.
//! - [`skew`]: clock-skew adjustment between sidecars (a child from another
//!   process that starts before its parent or ends after it is shifted into it).
//! - [`critical`]: the critical path (Jaeger's definition: from the root's end,
//!   walk back through the last-finishing synchronous child), and self time.
//! - [`hotspots`]: critical-path time aggregated by (service, operation) across
//!   many traces, in bounded memory.
//! - [`diff`]: two traces merged by their (service, operation) paths: counts,
//!   durations and what exists on one side only.
//! - [`windows`]: a window against a baseline: percentiles, error rate and
//!   throughput with deltas, and the attribute values over-represented in the
//!   window's slow or failed spans.
//!
//! No I/O and no dependency beyond serde, so it compiles to WebAssembly as it is.

pub mod critical;
pub mod diff;
pub mod hotspots;
pub mod report;
pub mod skew;
pub mod trace;
pub mod windows;

pub use critical::{critical_path, self_times, Segment};

/// The `p`-quantile of `v` (nearest rank; `v` is sorted in place); 0 when empty.
pub(crate) fn percentile(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}
pub use trace::{Span, Trace, TraceWarning};
