//! Receivers: OTLP (gRPC, HTTP) and the senders teams already run (Zipkin, Jaeger).
//! Each answers only after the spans are committed (or queued, in a sidecar).
pub mod grpc;
pub mod http;
pub mod jaeger;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod zipkin;
