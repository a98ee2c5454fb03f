//! OTLP receivers.
pub mod http;
