//! The OTLP exporter: a collector stores and sends every accepted span on to
//! another collector (OTLP gRPC, gzip, headers); a dead endpoint never holds
//! ingest or the store (its spans are dropped for it alone, counted); with
//! its store off a collector is a gateway.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::Collector;
use meshtrace_testkit::free_port;
use meshtrace_testkit::otlp::{kv, now_ns, request};
use std::time::{Duration, Instant};

fn span(t: u8, id: u8, start: u64) -> Span {
    Span {
        trace_id: vec![t; 16],
        span_id: vec![t, 0, 0, 0, 0, 0, 0, id],
        name: format!("op-{id}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        attributes: vec![kv("padding", &"x".repeat(2000))],
        ..Default::default()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn has_trace(c: &Collector, t: u8) -> bool {
    let v = c.get_json_until(&format!("/api/traces/{}", hex(&[t; 16])), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    });
    v["data"][0]["spans"]
        .as_array()
        .is_some_and(|s| !s.is_empty())
}

fn series(c: &Collector, name: &str) -> u64 {
    let (_, m) = c.get("/metrics");
    m.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_collector_stores_and_exports_to_another_and_a_dead_endpoint_holds_nothing() {
    let second = Collector::start_in(meshtrace_testkit::scratch_path("otlp-second"));
    let dead = free_port();
    let first = Collector::start_with_config(&format!(
        "exporters:\n  otlp:\n    - endpoint: http://127.0.0.1:{}\n      headers:\n        x-tenant: e2e\n    - endpoint: http://127.0.0.1:{dead}\n      queue_bytes: 1048576\n      compression: zstd\n",
        second.grpc_port
    ));
    let now = now_ns();
    assert_eq!(
        first.post_otlp(&request("exported", vec![span(1, 1, now)]).encode_to_vec()),
        200
    );
    assert!(has_trace(&first, 1), "stored locally");
    assert!(has_trace(&second, 1), "exported to the second collector");
    // A span the store's time window rejects (a year old) is told to the
    // sender in partial_success, exporters or not.
    let old = now - 365 * 24 * 3600 * 1_000_000_000;
    let m = meshtrace_testkit::collector::post(
        first.otlp_port,
        "application/x-protobuf",
        &[],
        &request("exported", vec![span(1, 2, now), span(1, 3, old)]).encode_to_vec(),
    )
    .unwrap();
    assert_eq!(m.status(), 200);
    let ps = meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceResponse::decode(
        m.body.as_slice(),
    )
    .unwrap()
    .partial_success
    .expect("partial_success");
    assert_eq!(ps.rejected_spans, 1, "{}", ps.error_message);
    assert!(
        ps.error_message.contains("start_time_unix_nano"),
        "{}",
        ps.error_message
    );
    // The dead endpoint's queue (1 MiB) fills: ingest and the store go on.
    let started = Instant::now();
    for t in 2..40u8 {
        let spans = (0..40).map(|i| span(t, i, now)).collect();
        assert_eq!(
            first.post_otlp(&request("exported", spans).encode_to_vec()),
            200
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(has_trace(&first, 39));
    assert!(has_trace(&second, 39));
    let deadline = Instant::now() + Duration::from_secs(30);
    while series(&first, "meshtrace_collector_otlp_export_spans_dropped{") == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing counted as dropped for the dead endpoint"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(series(&first, "meshtrace_collector_otlp_export_spans_sent{") > 38 * 40);
    assert!(
        first.log().contains("spans dropped for this endpoint"),
        "{}",
        first.log()
    );
}

#[test]
fn with_its_store_off_a_collector_is_a_gateway() {
    let second = Collector::start_in(meshtrace_testkit::scratch_path("otlp-behind"));
    let gateway = Collector::start_with_config(&format!(
        "mode: central\nstore:\n  enabled: false\nexporters:\n  otlp:\n    - endpoint: http://127.0.0.1:{}\n",
        second.grpc_port
    ));
    let now = now_ns();
    assert_eq!(
        gateway.post_otlp(&request("through", vec![span(7, 1, now)]).encode_to_vec()),
        200
    );
    assert!(has_trace(&second, 7));
    assert_eq!(
        gateway.get("/api/services").0,
        404,
        "the gateway serves no queries"
    );
}

/// OTLP over HTTP (`http/protobuf`): to one collector in zstd with a header,
/// to another in gzip at a full `/v1/traces` URL; an endpoint that answers
/// `404` is refused for good at once (the specification retries only 429,
/// 502, 503 and 504), counted and named in the log, and the others go on.
#[test]
fn otlp_over_http_in_zstd_and_gzip_and_a_final_refusal() {
    let zstd_to = Collector::start_in(meshtrace_testkit::scratch_path("otlp-http-zstd"));
    let gzip_to = Collector::start_in(meshtrace_testkit::scratch_path("otlp-http-gzip"));
    let first = Collector::start_with_config(&format!(
        "exporters:\n  otlp:\n\
         \x20   - endpoint: http://127.0.0.1:{}\n      protocol: http/protobuf\n      compression: zstd\n      headers:\n        x-tenant: e2e\n\
         \x20   - endpoint: http://127.0.0.1:{}/v1/traces\n      protocol: http/protobuf\n      compression: gzip\n\
         \x20   - endpoint: http://127.0.0.1:{}/nothing-here\n      protocol: http/protobuf\n",
        zstd_to.otlp_port, gzip_to.otlp_port, zstd_to.query_port
    ));
    let now = now_ns();
    for t in 20..30u8 {
        let spans = (0..20).map(|i| span(t, i, now)).collect();
        assert_eq!(
            first.post_otlp(&request("over-http", spans).encode_to_vec()),
            200
        );
    }
    for t in 20..30u8 {
        assert!(has_trace(&first, t), "stored locally");
        assert!(has_trace(&zstd_to, t), "exported in zstd");
        assert!(has_trace(&gzip_to, t), "exported in gzip");
    }
    let v = zstd_to.get_json_until(&format!("/api/traces/{}", hex(&[29; 16])), |v| {
        v["data"][0]["spans"].as_array().map(Vec::len) == Some(20)
    });
    assert_eq!(v["data"][0]["spans"].as_array().map(Vec::len), Some(20));
    let deadline = Instant::now() + Duration::from_secs(60);
    while series(&first, "meshtrace_collector_otlp_export_spans_dropped{") < 200 {
        assert!(
            Instant::now() < deadline,
            "the refused endpoint's spans are not counted as dropped:\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = first.log();
    assert!(
        log.contains("HTTP 404") || log.contains("HTTP 405"),
        "{log}"
    );
    assert!(
        !log.contains("retrying"),
        "a final refusal is not retried: {log}"
    );
    assert!(series(&first, "meshtrace_collector_otlp_export_spans_sent{") >= 400);
}

/// `queue: disk`: spans for an endpoint that is down wait in files; the
/// collector stops (SIGTERM) with them still there, and once started again
/// it sends them to the endpoint, now up — every span, once.
#[test]
fn a_disk_queue_sends_after_a_restart_what_the_endpoint_missed() {
    use meshtrace_testkit::collector::Opts;
    let port = free_port();
    let yaml = format!(
        "sidecar:\n  shutdown_grace: 1s\n  retry_initial_ms: 50\n  retry_max_ms: 200\n\
         exporters:\n  otlp:\n    - endpoint: http://127.0.0.1:{port}\n      protocol: http/protobuf\n      queue: disk\n"
    );
    let opts = Opts {
        yaml: Some(yaml),
        ..Opts::default()
    };
    let first = Collector::start_opts(meshtrace_testkit::scratch_path("disk-queue"), opts.clone());
    let now = now_ns();
    for t in 40..45u8 {
        let spans = (0..10).map(|i| span(t, i, now)).collect();
        assert_eq!(
            first.post_otlp(&request("queued-on-disk", spans).encode_to_vec()),
            200
        );
    }
    assert!(has_trace(&first, 44), "stored locally meanwhile");
    let (status, dir, log) = first.terminate_keep_data();
    assert!(status.success(), "{log}");
    let queue = dir.join("export-queue");
    let files: usize = std::fs::read_dir(&queue)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert!(files > 0, "the batches wait on disk:\n{log}");
    assert!(!log.contains("spans dropped"), "kept, not dropped:\n{log}");

    let endpoint = Collector::start_opts(
        meshtrace_testkit::scratch_path("disk-queue-endpoint"),
        Opts {
            http_port: Some(port),
            ..Opts::default()
        },
    );
    let again = Collector::start_opts(dir, opts);
    assert!(again.log().contains("sent first"), "{}", again.log());
    for t in 40..45u8 {
        assert!(
            has_trace(&endpoint, t),
            "trace {t} arrives after the restart"
        );
    }
    let v = endpoint.get_json_until(&format!("/api/traces/{}", hex(&[44; 16])), |v| {
        v["data"][0]["spans"].as_array().map(Vec::len) == Some(10)
    });
    assert_eq!(v["data"][0]["spans"].as_array().map(Vec::len), Some(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    while series(&again, "meshtrace_collector_otlp_export_spans_sent{") < 50 {
        assert!(Instant::now() < deadline, "{}", again.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let left: usize = std::fs::read_dir(&queue)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(left, 0, "sent batches are removed");
}
