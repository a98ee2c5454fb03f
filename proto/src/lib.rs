//! Types shared by the filter and the collector.
//!
//! - [`ids`]: `TraceId` / `SpanId` newtypes with strict hex parsing.
//! - [`strategy`]: Jaeger's sampling-strategies file model and its merge rules.
//! - `otlp` (feature): the OTLP prost messages, for host-side crates.

pub mod ids;
pub mod strategy;

pub use ids::{IdError, SpanId, TraceId};

#[cfg(feature = "otlp")]
pub use opentelemetry_proto::tonic as otlp;
#[cfg(feature = "otlp")]
pub use prost;
