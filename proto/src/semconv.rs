//! Attribute keys and derived tag names written or read by more than one crate
//! (the filter writes them, the collector reads them), declared once.

/// Resource attribute naming the service (OpenTelemetry semantic conventions).
pub const SERVICE_NAME: &str = "service.name";
/// Resource attribute: the service's namespace.
pub const SERVICE_NAMESPACE: &str = "service.namespace";
/// Resource attribute: the pod's name.
pub const K8S_POD_NAME: &str = "k8s.pod.name";
/// The service name used when a resource carries none (what OTel SDKs default to).
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// The sampler that decided a trace (`probabilistic`, `ratelimiting`, `parent`, …),
/// as Jaeger clients tag root spans.
pub const SAMPLER_TYPE: &str = "sampler.type";
/// The sampler's parameter: the probability for `probabilistic`.
pub const SAMPLER_PARAM: &str = "sampler.param";
/// `sampler.type` of a probabilistic decision.
pub const SAMPLER_TYPE_PROBABILISTIC: &str = "probabilistic";
/// Jaeger's derived tag for the span kind.
pub const SPAN_KIND: &str = "span.kind";
/// Jaeger's derived tag for a span whose status is an error.
pub const ERROR: &str = "error";
/// OTLP status code as a Jaeger tag (`OK`, `ERROR`).
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// OTLP status message as a Jaeger tag.
pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
/// Instrumentation scope name as a Jaeger tag.
pub const OTEL_SCOPE_NAME: &str = "otel.scope.name";
/// Instrumentation scope version as a Jaeger tag.
pub const OTEL_SCOPE_VERSION: &str = "otel.scope.version";
/// The W3C `tracestate` of a span as a Jaeger tag.
pub const W3C_TRACESTATE: &str = "w3c.tracestate";
/// The event name inside a Jaeger log's fields.
pub const EVENT: &str = "event";

/// Header and attribute names that carry credentials: the filter never records
/// these headers, and the collector replaces attributes named so by [`REDACTED`]
/// before storing or forwarding them (unless allowed). One list for both.
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
/// What a redacted attribute's value becomes.
pub const REDACTED: &str = "[REDACTED]";
