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
pub mod skew;
pub mod trace;
pub mod windows;

pub use critical::{critical_path, self_times, Segment};
pub use trace::{Span, Trace, TraceWarning};
