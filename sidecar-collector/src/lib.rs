//! The meshtrace collector: OTLP ingest, an embedded span store and a
//! Jaeger-compatible query API.
//!
//! Layers, bottom up (a module imports only modules below it; checked by the
//! `layers` test): `model`, `telemetry` → `ingest`, `store`, `sampling` →
//! `metrics` (span metrics, service graph, SPM history) → `pipeline`,
//! `forward`, `query` → `sink` → `receiver`; `listen` (every listener's limits
//! and timeouts) on `telemetry`; `config` stands alone; `main` wires them.

pub mod config;
pub mod filter_stats;
pub mod forward;
pub mod grpc;
pub mod ingest;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(test)]
mod layers;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod sampling;
pub mod security;
pub mod sink;
pub mod store;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_alloc;
pub mod ui;
