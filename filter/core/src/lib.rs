//! The meshtrace filter's logic, independent of proxy-wasm.
//!
//! `filter/wasm` implements [`host`]'s traits over the proxy-wasm ABI and
//! forwards each callback here; everything else lives and is tested here.

pub mod budget;
pub mod config;
pub mod export;
pub mod host;
pub mod metrics;
pub mod operation;
/// OpenTelemetry's `ot` tracestate member: shared with the collector, which reads `th`.
pub use meshtrace_proto::otel_ts;
pub mod otlp;
pub mod pbstruct;
pub mod propagation;
pub mod remote;
pub mod rng;
pub mod sampling;
pub mod semconv;
pub mod tracer;

#[cfg(test)]
pub mod testing;

pub use config::{Config, ConfigError};
pub use tracer::stream::{self, Stream};
pub use tracer::Tracer;
