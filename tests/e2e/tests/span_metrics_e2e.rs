//! Metrics derived from spans, end to end: the real filter in Envoy samples at
//! p = 0.1, the real collector counts what it stores, observed and adjusted for
//! sampling, and a real Prometheus answers the seed's PromQL from it; Jaeger's
//! SPM endpoints answer from the collector's own history, across a restart.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::{status::StatusCode, Span, Status};
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{Collector, Opts};
use meshtrace_testkit::envoy::{EnvoyBuilder, Filter};
use meshtrace_testkit::http::Client;
use meshtrace_testkit::otlp::{now_ns, request};
use meshtrace_testkit::prometheus::{Job, Prometheus};
use meshtrace_testkit::upstream::Upstream;
use std::time::{Duration, Instant};

/// The sum of a family's samples whose line contains every one of `labels`.
fn sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn adjusted_counts_estimate_the_traffic_and_prometheus_answers_the_seeds_queries() {
    let collector = Collector::start_opts(
        meshtrace_testkit::scratch_path("span-metrics"),
        Opts::default(),
    );
    let app = Upstream::start();
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50},
        "sampling":{"default_strategy":{"type":"probabilistic","param":0.1}}}"#;
    let mut b = EnvoyBuilder::new(
        "backend",
        Filter::Meshtrace(cfg.into()),
        collector.otlp_port,
    );
    let port = b.listener("INBOUND", app.port);
    let envoy = b.start();
    let prometheus = Prometheus::start(
        &[
            Job {
                name: "meshtrace",
                targets: vec![format!("127.0.0.1:{}", collector.query_port)],
                path: "/metrics",
            },
            Job {
                name: "envoy",
                targets: vec![format!("{}:{}", envoy.admin_address, envoy.admin_port)],
                path: "/stats/prometheus",
            },
        ],
        &[],
    );

    // 10,000 requests, each its own trace, each sampled with p = 0.1.
    const N: f64 = 10_000.0;
    let mut c = Client::connect(port);
    for i in 0..N as usize {
        let path = if i % 2 == 0 { "/a" } else { "/b" };
        assert_eq!(c.get(path, &[]).status(), 200);
    }
    // Everything the filter sampled reaches the collector's metrics.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (observed, adjusted, text) = loop {
        std::thread::sleep(Duration::from_millis(300));
        let sampled = envoy.counter("spans_sampled") as f64;
        let (_, text) = collector.get("/metrics");
        let observed = sum(
            &text,
            "traces_span_metrics_calls_total",
            &["service_name=\"backend\""],
        );
        if (observed == sampled && sampled > 0.0) || Instant::now() > deadline {
            let adjusted = sum(
                &text,
                "meshtrace_span_calls_adjusted_total",
                &["service_name=\"backend\""],
            );
            break (observed, adjusted, text);
        }
    };
    // Sampling is Bernoulli(p) per trace: the observed count is N·p ± √(N·p(1−p)),
    // and the adjusted count (each span 1/p) is N ± √(N(1−p)/p).
    let p = 0.1;
    let (sd_obs, sd_adj) = ((N * p * (1.0 - p)).sqrt(), (N * (1.0 - p) / p).sqrt());
    eprintln!("observed {observed} (expected {} ± {sd_obs:.0}), adjusted {adjusted} (expected {N} ± {sd_adj:.0})", N * p);
    assert!(
        (observed - N * p).abs() <= 5.0 * sd_obs,
        "observed {observed}\n{text}"
    );
    assert!(
        (adjusted - N).abs() <= 5.0 * sd_adj,
        "adjusted {adjusted}\n{text}"
    );
    assert!(
        (adjusted - observed / p).abs() < 1e-6 * adjusted,
        "every span weighs 1/p: {adjusted} vs {observed}/{p}"
    );
    // The seed's names carry the same spans.
    assert_eq!(
        sum(&text, "jaeger_spans_total", &["service=\"backend\""]),
        observed
    );
    assert_eq!(
        sum(
            &text,
            "jaeger_traces_per_service_total",
            &["service=\"backend\""]
        ),
        observed
    );
    assert!(
        (sum(
            &text,
            "meshtrace_traces_per_service_adjusted_total",
            &["service=\"backend\""]
        ) - adjusted)
            .abs()
            < 1e-6 * adjusted
    );

    // The seed's three queries, and its alert's expression, against real Prometheus.
    for expr in [
        "rate(jaeger_traces_per_service_total[5m])",
        "histogram_quantile(0.95, rate(jaeger_span_duration_milliseconds_bucket[5m]))",
        "rate(jaeger_spans_total{error=\"false\"}[5m])",
        "histogram_quantile(0.95, rate(jaeger_span_duration_milliseconds_bucket{service=\"backend\"}[5m]))",
        "sum(rate(meshtrace_span_calls_adjusted_total[5m])) by (service_name)",
        "sum(rate(traces_span_metrics_calls_total[5m])) by (service_name, span_name)",
    ] {
        let r = prometheus.query_until(expr, Duration::from_secs(60));
        assert!(
            r.iter().any(|s| s["metric"].to_string().contains("backend") || s["metric"].as_object().is_some_and(|m| m.is_empty())),
            "{expr}: {r:?}"
        );
    }
    // Every counter the filter defines (filter/core/src/metrics.rs) reaches Prometheus
    // from Envoy's /stats/prometheus as meshtrace_<name>, and docs/filter.md documents it.
    let root = meshtrace_testkit::workspace_root();
    let defined = std::fs::read_to_string(root.join("filter/core/src/metrics.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("docs/filter.md")).unwrap();
    let names: Vec<&str> = defined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(\"meshtrace.")?.split('"').next())
        .collect();
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        let r = prometheus.query_until(
            &format!("meshtrace_{name}{{job=\"envoy\"}}"),
            Duration::from_secs(30),
        );
        eprintln!("envoy stat meshtrace_{name}: {}", r[0]["value"][1]);
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "docs/filter.md's Envoy stats table lacks {name}"
        );
    }
    // Prometheus scrapes every second; Envoy's counter is what it converges to.
    let want = envoy.counter("spans_sampled") as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = prometheus.query("meshtrace_spans_sampled{job=\"envoy\"}");
        let got = r
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
        if got == Some(want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has {got:?}, Envoy {want}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_sampled_parent_carries_its_probability_in_tracestate() {
    // The inner hop decides nothing (parent-based): its spans say `sampler.type=parent`,
    // and the probability comes from OpenTelemetry's `th` the first hop wrote.
    let collector = Collector::start_opts(
        meshtrace_testkit::scratch_path("span-metrics-th"),
        Opts::default(),
    );
    let app = Upstream::start();
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50}}"#;
    let mut b = EnvoyBuilder::new("inner", Filter::Meshtrace(cfg.into()), collector.otlp_port);
    let port = b.listener("INBOUND", app.port);
    let envoy = b.start();
    let mut c = Client::connect(port);
    for i in 0..100u32 {
        let tp = format!("00-{:032x}-{:016x}-01", 0xabc000 + i, 0x1000 + i);
        let h: [(&str, &[u8]); 2] = [("traceparent", tp.as_bytes()), ("tracestate", b"ot=th:e")];
        assert_eq!(c.get("/inner", &h).status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = collector.get("/metrics");
        let observed = sum(
            &text,
            "traces_span_metrics_calls_total",
            &["service_name=\"inner\""],
        );
        if observed == 100.0 {
            // th:e keeps 1/8 of traces: each span weighs 8.
            let adjusted = sum(
                &text,
                "meshtrace_span_calls_adjusted_total",
                &["service_name=\"inner\""],
            );
            assert_eq!(adjusted, 800.0, "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{observed} of 100 spans counted: {}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` server spans of `service`/`op`, `errors` of them failed, each `ms` long, ending now.
fn spans(service: &str, op: &str, n: usize, errors: usize, ms: u64, seed: u8) -> Vec<u8> {
    let end = now_ns();
    let spans = (0..n)
        .map(|i| Span {
            trace_id: [&[seed; 8][..], &(i as u64 + 1).to_be_bytes()[..]].concat(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: op.into(),
            kind: 2,
            start_time_unix_nano: end - ms * 1_000_000,
            end_time_unix_nano: end,
            status: (i < errors).then(|| Status {
                code: StatusCode::Error as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    request(service, spans).encode_to_vec()
}

fn json(c: &Collector, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = c.get(path);
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

/// The last point of the only (or the first) series.
fn last_point(v: &serde_json::Value) -> f64 {
    let points = v["metrics"][0]["metricPoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    points.last().unwrap_or_else(|| panic!("no points: {v}"))["gaugeValue"]["doubleValue"]
        .as_f64()
        .unwrap()
}

#[test]
fn spm_endpoints_answer_in_jaegers_shape_from_history_that_survives_a_restart() {
    let dir = meshtrace_testkit::scratch_path("spm");
    let collector = Collector::start_opts(dir.clone(), Opts::default());
    // Sent early in a minute (not across a minute's end), so the series starts at
    // this minute's start: `born`.
    while now_ns() / 1_000_000_000 % 60 > 40 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let born_s = (now_ns() / 1_000_000_000 / 60 * 60) as f64;
    // 120 calls of GET /a (30 failed, 15 ms each) and 60 of GET /b (40 ms), all server spans.
    assert_eq!(
        collector.post_otlp(&spans("shop", "GET /a", 120, 30, 15, 1)),
        200
    );
    assert_eq!(
        collector.post_otlp(&spans("shop", "GET /b", 60, 0, 40, 2)),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sum(
        &collector.get("/metrics").1,
        "traces_span_metrics_calls_total",
        &["shop"],
    ) < 180.0
    {
        assert!(Instant::now() < deadline, "spans not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A 10-minute rate window covering every span. The series exists since
    // `born` (less than 10 minutes ago): the rate is over that part of the window,
    // as Jaeger's Monitor averages points (a steady service that started
    // mid-window reads its true rate), so rate × (point time − born) = the calls.
    let base = "service=shop&lookback=120000&step=60000&ratePer=600000";
    let over_existence = |v: &serde_json::Value| {
        let p = v["metrics"][0]["metricPoints"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let t_s = meshtrace_collector::query::v3::parse_rfc3339_us(p["timestamp"].as_str().unwrap())
            .unwrap() as f64
            / 1e6;
        p["gaugeValue"]["doubleValue"].as_f64().unwrap() * (t_s - born_s)
    };
    let check = |c: &Collector| {
        let (s, calls) = json(c, &format!("/api/metrics/calls?{base}"));
        assert_eq!(s, 200, "{calls}");
        assert_eq!(calls["name"], "service_call_rate");
        assert_eq!(calls["type"], "GAUGE");
        assert_eq!(
            calls["metrics"][0]["labels"][0],
            serde_json::json!({"name": "service_name", "value": "shop"})
        );
        let ts = calls["metrics"][0]["metricPoints"][0]["timestamp"]
            .as_str()
            .unwrap();
        assert!(
            ts.starts_with("20") && ts.ends_with('Z') && ts.contains('T'),
            "RFC 3339: {ts}"
        );
        let calls_in_window = over_existence(&calls);
        assert!(
            (calls_in_window - 180.0).abs() < 1.0,
            "{calls_in_window}: {calls}"
        );

        let (_, by_op) = json(
            c,
            &format!("/api/metrics/calls?{base}&groupByOperation=true"),
        );
        assert_eq!(by_op["name"], "service_operation_call_rate");
        let ops = by_op["metrics"].as_array().unwrap();
        assert_eq!(ops.len(), 2, "{by_op}");
        assert_eq!(ops[0]["labels"][1]["name"], "operation");

        let (_, errors) = json(c, &format!("/api/metrics/errors?{base}"));
        assert_eq!(errors["name"], "service_error_rate");
        assert!(
            (last_point(&errors) - 30.0 / 180.0).abs() < 1e-9,
            "{errors}"
        );

        // The median is among the 15 ms spans: in the (10, 20] ms bucket.
        let (_, p50) = json(c, &format!("/api/metrics/latencies?{base}&quantile=0.5"));
        assert_eq!(p50["name"], "service_latencies");
        let v = last_point(&p50);
        assert!((10.0..=20.0).contains(&v), "{p50}");
        let (_, p95) = json(c, &format!("/api/metrics/latencies?{base}&quantile=0.95"));
        assert!((20.0..=50.0).contains(&last_point(&p95)), "{p95}");

        // Client spans only: none.
        let (_, client) = json(c, &format!("/api/metrics/calls?{base}&spanKind=client"));
        assert_eq!(client["metrics"], serde_json::json!([]));
    };
    check(&collector);
    let (s, min) = json(&collector, "/api/metrics/minstep");
    assert_eq!((s, min["data"].as_i64()), (200, Some(60_000)));
    for (path, param) in [
        ("/api/metrics/calls", "'service'"),
        ("/api/metrics/latencies?service=shop", "'quantile'"),
        (
            "/api/metrics/calls?service=shop&spanKind=sideways",
            "'spanKind'",
        ),
        ("/api/metrics/calls?service=shop&lookback=1h", "'lookback'"),
        (
            "/api/metrics/errors?service=shop&step=1&lookback=86400000",
            "step",
        ),
    ] {
        let (s, e) = json(&collector, path);
        assert_eq!(s, 400, "{path}: {e}");
        assert_eq!(e["errors"][0]["code"], 400, "{e}");
        assert!(
            e["errors"][0]["msg"].as_str().unwrap().contains(param),
            "{path}: {e}"
        );
    }
    // A restart keeps the history (the minute in progress is written at shutdown).
    let (status, dir, log) = collector.terminate_keep_data();
    assert!(status.success(), "{log}");
    let again = Collector::start_opts(dir, Opts::default());
    check(&again);
}

#[test]
fn the_sidecar_collector_re_exports_the_filters_counters_with_help_text() {
    // Envoy's /stats/prometheus has no HELP lines; the sidecar collector beside it
    // (--envoy-admin) exports the filter's counters with theirs.
    let central = Collector::start_opts(
        meshtrace_testkit::scratch_path("filter-stats-central"),
        Opts::default(),
    );
    let admin = meshtrace_testkit::free_port();
    let mut opts = Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    opts.args
        .extend(["--envoy-admin".into(), format!("127.0.0.1:{admin}")]);
    let sidecar = Collector::start_opts(
        meshtrace_testkit::scratch_path("filter-stats-sidecar"),
        opts,
    );
    let app = Upstream::start();
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50},
        "sampling":{"default_strategy":{"type":"probabilistic","param":1.0}}}"#;
    let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(cfg.into()), sidecar.otlp_port);
    b.admin_port = Some(admin);
    let port = b.listener("INBOUND", app.port);
    let envoy = b.start();
    let mut c = Client::connect(port);
    for _ in 0..50 {
        assert_eq!(c.get("/x", &[]).status(), 200);
    }
    let prometheus = Prometheus::start(
        &[Job {
            name: "meshtrace-sidecar-collector",
            targets: vec![format!("127.0.0.1:{}", sidecar.query_port)],
            path: "/metrics",
        }],
        &[],
    );
    // The poll runs every 5 s: wait for the counters to catch up with Envoy's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = sidecar.get("/metrics").1;
        let want = envoy.counter("spans_sampled");
        if want >= 50 && text.contains(&format!("meshtrace_filter_spans_sampled_total {want}")) {
            assert!(text.contains("meshtrace_filter_stats_up 1"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{want} sampled by Envoy; the sidecar says:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Prometheus has the help text of every one of them.
    for (name, help) in meshtrace_proto::filter_stats::COUNTERS {
        let metric = format!("meshtrace_filter_{name}_total");
        prometheus.query_until(&metric, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let meta = prometheus.api(&format!("/api/v1/metadata?metric=meshtrace_filter_{name}"));
            let got = meta["data"][format!("meshtrace_filter_{name}")][0]["help"].clone();
            if got == *help {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: help {got} in {meta}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
