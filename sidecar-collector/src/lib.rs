//! The meshtrace collector: OTLP ingest, an embedded span store and a
//! Jaeger-compatible query API.

pub mod config;
pub mod forward;
pub mod grpc_unary;
pub mod ingest;
pub mod pipeline;
pub mod query;
pub mod receiver;
pub mod sampling;
pub mod sink;
pub mod store;
