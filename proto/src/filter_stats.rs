//! The filter's Envoy counters, declared once: their names (the filter defines
//! them; Envoy shows them as `wasmcustom.meshtrace.<name>`, and on
//! `/stats/prometheus` as `meshtrace_<name>`) and what each counts (the sidecar
//! collector re-exports them with this help text, which Envoy's Prometheus output
//! has no place for).

/// The stat prefix after Envoy's `wasmcustom.` namespace.
pub const PREFIX: &str = "meshtrace.";

/// (name, help) of every counter.
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "spans_started",
        "Requests the filter saw (a span was started, sampled or not)",
    ),
    (
        "spans_sampled",
        "Requests sampled: a span was built and queued for export",
    ),
    ("spans_exported", "Spans the collector accepted"),
    (
        "spans_dropped",
        "Spans dropped: the export buffer was full or an export failed for good",
    ),
    ("export_failures", "Failed export calls to the collector"),
    (
        "invalid_context",
        "Requests with present but invalid propagation headers (a new trace was started)",
    ),
    (
        "operations_overflow",
        "Requests named `overflow`: more distinct operation names than the filter keeps",
    ),
    (
        "strategy_updates",
        "Sampling strategy polls answered and applied",
    ),
    (
        "strategy_failures",
        "Sampling strategy polls that failed (the strategy in force stays)",
    ),
];
