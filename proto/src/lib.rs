//! Types shared by the filter and the collector.
//!
//! - [`filter_stats`]: the filter's Envoy counters, names and help text.
//! - [`ids`]: `TraceId` / `SpanId` newtypes with strict hex parsing.
//! - [`strategy`]: Jaeger's sampling-strategies file model and its merge rules.
//! - [`sampling_json`]: Jaeger's remote-sampling answer as JSON (collector writes, filter reads).
//! - [`semconv`]: attribute keys shared by the filter and the collector.
//! - [`otel_ts`]: OpenTelemetry's `ot` tracestate member (`th`, `rv`): the filter writes it,
//!   the collector reads the sampling probability from it.
//! - [`jaeger_json`]: Jaeger's query JSON model (`/api/traces` and friends).
//! - `otlp` (feature): the OTLP prost messages, for host-side crates, and [`jaeger`]:
//!   Jaeger's remote sampling messages (`proto/jaeger/api_v2/sampling.proto`) and its span
//!   model and collector service (`model.proto`, `collector.proto`).

pub mod filter_stats;
pub mod ids;
#[cfg(feature = "otlp")]
pub mod jaeger;
pub mod jaeger_json;
pub mod otel_ts;
pub mod sampling_json;
pub mod semconv;
pub mod strategy;

pub use ids::{IdError, SpanId, TraceId};

#[cfg(feature = "otlp")]
pub use opentelemetry_proto::tonic as otlp;
#[cfg(feature = "otlp")]
pub use prost;
