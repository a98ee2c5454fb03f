//! The filter-wide counters, and every Envoy stat the filter defines, in one place. Envoy shows them with
//! its `wasmcustom.` prefix, e.g. `wasmcustom.meshtrace.spans_started`. Their
//! names and help text are `meshtrace_proto::filter_stats` (the collector reads
//! those); this table adds how each is read, and a test keeps the two equal.

/// Counts kept per VM; the root pushes their deltas to Envoy stats on a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests the filter saw (a span started, sampled or not).
    pub spans_started: u64,
    /// Of those, sampled (a span was built).
    pub spans_sampled: u64,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans dropped: buffer full, or a non-retryable export failure.
    pub spans_dropped: u64,
    /// Failed export calls (any cause).
    pub export_failures: u64,
    /// Requests whose propagation headers were present but invalid.
    pub invalid_context: u64,
    /// Requests named with the overflow operation name.
    pub operations_overflow: u64,
    /// Strategy polls answered and applied.
    pub strategy_updates: u64,
    /// Strategy polls that failed (no answer, bad status, bad body): the last strategy stays.
    pub strategy_failures: u64,
}

/// Reads one counter.
pub type CounterReader = fn(&Counters) -> u64;

/// (stat name, reader) for each counter.
pub const COUNTERS: &[(&str, CounterReader)] = &[
    ("meshtrace.spans_started", |c| c.spans_started),
    ("meshtrace.spans_sampled", |c| c.spans_sampled),
    ("meshtrace.spans_exported", |c| c.spans_exported),
    ("meshtrace.spans_dropped", |c| c.spans_dropped),
    ("meshtrace.export_failures", |c| c.export_failures),
    ("meshtrace.invalid_context", |c| c.invalid_context),
    ("meshtrace.operations_overflow", |c| c.operations_overflow),
    ("meshtrace.strategy_updates", |c| c.strategy_updates),
    ("meshtrace.strategy_failures", |c| c.strategy_failures),
];

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrace_proto::filter_stats;

    #[test]
    fn the_counters_are_the_ones_declared_in_proto() {
        let here: Vec<&str> = COUNTERS.iter().map(|(n, _)| *n).collect();
        let declared: Vec<String> = filter_stats::COUNTERS
            .iter()
            .map(|(n, _)| format!("{}{n}", filter_stats::PREFIX))
            .collect();
        assert_eq!(here, declared);
    }
}
