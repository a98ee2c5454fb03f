//! The collector's own metrics, read from the real binary in each mode: the
//! span counters move in central mode as in sidecar mode, process and query
//! latency series exist, and `promtool check metrics` (Debian's Prometheus
//! tools) finds nothing wrong with any mode's `/metrics`.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{metric, Collector, Opts};
use meshtrace_testkit::otlp::{now_ns, request};
use std::process::Command;
use std::time::{Duration, Instant};

/// One valid span and one whose span id is 3 bytes long.
fn valid_and_invalid() -> Vec<u8> {
    let span = |sid: Vec<u8>| Span {
        trace_id: vec![7; 16],
        span_id: sid,
        name: "GET /metrics-test".into(),
        kind: 2,
        start_time_unix_nano: now_ns(),
        end_time_unix_nano: now_ns() + 1_000_000,
        ..Default::default()
    };
    request("metrics-test", vec![span(vec![1; 8]), span(vec![1; 3])]).encode_to_vec()
}

fn promtool_check(text: &str, mode: &str) {
    // promtool: Debian package prometheus; scripts/setup installs it.
    let out = meshtrace_testkit::run_with_stdin(
        Command::new("promtool").args(["check", "metrics"]),
        text.as_bytes(),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The two duration histograms keep the names users query (the seed's
    // jaeger_span_duration_milliseconds, the OpenTelemetry spanmetrics connector's
    // traces_span_metrics_duration_milliseconds) although promtool's lint prefers
    // seconds; that lint, for those two names only, is expected. Anything else fails.
    let mandated = [
        "jaeger_span_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"",
        "traces_span_metrics_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"",
    ];
    let other: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty() && !mandated.contains(&l.trim()))
        .collect();
    assert!(
        other.is_empty()
            && (out.status.success() || said.lines().any(|l| mandated.contains(&l.trim()))),
        "promtool check metrics on the {mode} collector: {said}\n{text}"
    );
}

fn metrics_until(c: &Collector, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = c.get("/metrics");
        assert_eq!(status, 200);
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn central_mode_counts_what_it_receives_and_every_mode_passes_promtool() {
    let central = Collector::start_opts(
        meshtrace_testkit::scratch_path("central"),
        Opts {
            args: vec!["--mode".into(), "central".into()],
            ..Opts::default()
        },
    );
    assert_eq!(central.post_otlp(&valid_and_invalid()), 200);
    assert_eq!(
        central.get("/api/traces?service=metrics-test&limit=1").0,
        200
    );
    assert_eq!(central.get("/api/traces/zz").0, 400);
    let text = metrics_until(&central, |t| {
        metric(t, "meshtrace_collector_spans_stored_total") == 1
    });
    for (name, want) in [
        ("meshtrace_collector_spans_received_total", 2),
        ("meshtrace_collector_spans_rejected_total", 1),
        ("meshtrace_collector_spans_accepted_total", 1),
        ("meshtrace_collector_spans_stored_total", 1),
        ("meshtrace_collector_spans_refused_total", 0),
    ] {
        assert_eq!(metric(&text, name), want, "{name} in central mode:\n{text}");
    }
    for series in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "meshtrace_collector_query_duration_seconds_count{endpoint=\"/api/traces\",status=\"2xx\"} 1",
        "meshtrace_collector_query_duration_seconds_count{endpoint=\"/api/traces/{id}\",status=\"4xx\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    promtool_check(&text, "central");

    let all_in_one = Collector::start_with_config("log_summary_interval: 1s\n");
    all_in_one.post_otlp(&valid_and_invalid());
    let text = metrics_until(&all_in_one, |t| {
        metric(t, "meshtrace_collector_spans_stored_total") == 1
    });
    assert_eq!(metric(&text, "meshtrace_collector_spans_received_total"), 2);
    promtool_check(&text, "all-in-one");
    // The log says what flowed, in plain text (no colour codes in a file).
    let deadline = Instant::now() + Duration::from_secs(30);
    let summary = loop {
        let log = all_in_one.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("spans since the last summary") && l.contains("received=2"))
        {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no summary line:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        summary.contains("stored=1") && summary.contains("rejected=1"),
        "{summary}"
    );
    assert!(
        !all_in_one.log().contains('\u{1b}'),
        "ANSI codes in the log file"
    );

    let sidecar = Collector::start_sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    sidecar.post_otlp(&valid_and_invalid());
    let text = metrics_until(&sidecar, |t| {
        metric(t, "meshtrace_collector_spans_forwarded_total") == 1
    });
    assert_eq!(metric(&text, "meshtrace_collector_spans_received_total"), 2);
    assert_eq!(metric(&text, "meshtrace_collector_spans_rejected_total"), 1);
    promtool_check(&text, "sidecar");

    // OpenMetrics for scrapers that ask for it (Prometheus does).
    let (status, om) = meshtrace_testkit::collector::get_with_headers(
        central.query_port,
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(status, 200);
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
}
