//! OTLP receivers. Both answer only after the spans are committed.
pub mod grpc;
pub mod http;
