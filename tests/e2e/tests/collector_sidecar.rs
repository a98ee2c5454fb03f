//! Sidecar mode: Envoy → sidecar collector → central collector, and the
//! sidecar holding spans while the central one is down.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{post_otlp, Collector, Opts};
use meshtrace_testkit::envoy::{EnvoyBuilder, Filter};
use meshtrace_testkit::free_port;
use meshtrace_testkit::http::Client;
use meshtrace_testkit::upstream::Upstream;

const CFG: &str = r#"{"export":{"flush_interval_ms":100,"tick_ms":50}}"#;

#[test]
fn envoy_to_sidecar_to_central() {
    let central = Collector::start();
    let sidecar = Collector::start_sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    let app = Upstream::start();
    let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(CFG.into()), sidecar.otlp_port);
    let port = b.listener("INBOUND", app.port);
    let _envoy = b.start();
    for _ in 0..20 {
        assert_eq!(Client::connect(port).get("/via/sidecar", &[]).status(), 200);
    }
    let tp = app.last().header("traceparent").unwrap();
    let v = central.get_json_until(&format!("/api/traces/{}", &tp[3..35]), |v| {
        v["data"].is_array()
    });
    assert_eq!(
        v["data"][0]["spans"][0]["operationName"], "GET /via/sidecar",
        "{v}"
    );
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        metrics.contains("meshtrace_collector_spans_forwarded_total"),
        "{metrics}"
    );
    // The sidecar has no store and no query API.
    assert_eq!(sidecar.get("/api/services").0, 404);
}

#[test]
fn sidecar_holds_spans_while_central_is_down() {
    let central_grpc = free_port();
    let sidecar = Collector::start_sidecar(&format!("http://127.0.0.1:{central_grpc}"));
    // Export 10 traces while nothing listens upstream: the sidecar answers at once.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 0..10u8 {
        let body = one_span_request(i, t);
        assert_eq!(
            post_otlp(sidecar.otlp_port, &body),
            200,
            "accepted while upstream is down"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        metrics.contains("meshtrace_collector_spans_forwarded_total 0"),
        "{metrics}"
    );
    // The central collector comes up on the port the sidecar retries.
    let central_dir = meshtrace_testkit::scratch_path("central");
    let central = Collector::start_opts(
        central_dir,
        Opts {
            grpc_port: Some(central_grpc),
            ..Opts::default()
        },
    );
    for i in 0..10u8 {
        let id = format!("c1{i:02x}{}", "00".repeat(14));
        let v = central.get_json_until(&format!("/api/traces/{id}"), |v| v["data"].is_array());
        assert!(
            v["data"].is_array(),
            "trace {id} delivered after the outage: {v}"
        );
    }
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        metrics.contains("meshtrace_collector_spans_forwarded_total 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshtrace_collector_spans_dropped_total 0"),
        "{metrics}"
    );
}

fn one_span_request(i: u8, t: u64) -> Vec<u8> {
    use meshtrace_proto::otlp::trace::v1::Span;
    use meshtrace_proto::prost::Message;
    let mut tid = vec![0u8; 16];
    tid[0] = 0xc1;
    tid[1] = i;
    let span = Span {
        trace_id: tid,
        span_id: vec![1; 8],
        name: "op".into(),
        start_time_unix_nano: t,
        end_time_unix_nano: t + 1,
        ..Default::default()
    };
    meshtrace_testkit::otlp::request("outage", vec![span]).encode_to_vec()
}

/// A request of `spans` spans (each ~`pad` bytes) for trace `t`.
fn padded_request(t: u8, spans: u64, pad: usize) -> Vec<u8> {
    use meshtrace_proto::otlp::trace::v1::Span;
    use meshtrace_proto::prost::Message;
    let now = meshtrace_testkit::otlp::now_ns();
    meshtrace_testkit::otlp::request(
        "padded",
        (0..spans)
            .map(|i| Span {
                trace_id: vec![t; 16],
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1000,
                attributes: vec![meshtrace_testkit::otlp::kv("pad", &"p".repeat(pad))],
                ..Default::default()
            })
            .collect(),
    )
    .encode_to_vec()
}

fn metric(c: &Collector, name: &str) -> u64 {
    meshtrace_testkit::collector::metric(&c.get("/metrics").1, name)
}

fn wait_for(what: &str, within: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_batch_refused_for_good_is_dropped_and_the_queue_keeps_flowing() {
    // The central takes messages up to 64 KiB; the sidecar batches up to 1 MiB.
    let central = Collector::start_with_config("otlp:\n  max_message_bytes: 65536\n");
    let sidecar = Collector::start_opts(
        meshtrace_testkit::scratch_path("sidecar"),
        Opts {
            yaml: Some(
                "sidecar:\n  retry_initial_ms: 50\n  retry_max_ms: 200\n  max_retry_time: 5m\n"
                    .into(),
            ),
            ..Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port))
        },
    );
    // 200 KB in one request: under the sidecar's batch, over the central's limit.
    assert_eq!(
        post_otlp(sidecar.otlp_port, &padded_request(0xa1, 100, 2000)),
        200
    );
    for t in 0..5u8 {
        assert_eq!(
            post_otlp(sidecar.otlp_port, &padded_request(0xb0 + t, 2, 10)),
            200
        );
    }
    // Dropped at once (not retried for 5 minutes), and what follows is delivered.
    wait_for(
        "the queue behind the refused batch flows",
        std::time::Duration::from_secs(30),
        || metric(&central, "meshtrace_collector_spans_stored_total") >= 10,
    );
    assert_eq!(
        metric(&sidecar, "meshtrace_collector_spans_dropped_total"),
        100
    );
    let log = sidecar.log();
    assert_eq!(
        log.matches("spans dropped").count(),
        1,
        "logged once with the reason:\n{log}"
    );
    assert!(log.contains("ResourceExhausted"), "{log}");
}

#[test]
fn oversized_requests_are_split_and_one_that_never_fits_is_refused_for_good() {
    let central = Collector::start_with_config("otlp:\n  max_message_bytes: 131072\n");
    let sidecar = Collector::start_opts(
        meshtrace_testkit::scratch_path("sidecar"),
        Opts {
            yaml: Some(
                "sidecar:\n  batch_bytes: 65536\n  queue_bytes: 1048576\n  retry_initial_ms: 50\n"
                    .into(),
            ),
            ..Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port))
        },
    );
    // 600 KB in one request: split into exports of at most 64 KiB, all delivered.
    assert_eq!(
        post_otlp(sidecar.otlp_port, &padded_request(0xc1, 300, 2000)),
        200
    );
    wait_for(
        "every split part delivered",
        std::time::Duration::from_secs(30),
        || metric(&central, "meshtrace_collector_spans_stored_total") >= 300,
    );
    assert_eq!(
        metric(&sidecar, "meshtrace_collector_spans_dropped_total"),
        0
    );
    let (status, body) = central.get(&format!("/api/traces/{}", "c1".repeat(16)));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["spans"].as_array().unwrap().len(), 300);
    // 1.5 MB can never fit the 1 MiB queue: 413 naming the key, not 503 forever.
    let m = meshtrace_testkit::collector::post(
        sidecar.otlp_port,
        "application/x-protobuf",
        &[],
        &padded_request(0xc2, 750, 2000),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&m.body);
    assert_eq!(m.status(), 413, "{text}");
    assert!(text.contains("sidecar.queue_bytes"), "{text}");
}

#[test]
fn sigterm_with_the_central_down_keeps_trying_for_the_grace_then_counts_what_it_drops() {
    let central_grpc = free_port();
    let sidecar = Collector::start_opts(
        meshtrace_testkit::scratch_path("sidecar"),
        Opts {
            yaml: Some(
                "sidecar:\n  retry_initial_ms: 50\n  retry_max_ms: 200\n  shutdown_grace: 3s\n"
                    .into(),
            ),
            ..Opts::sidecar(&format!("http://127.0.0.1:{central_grpc}"))
        },
    );
    for t in 0..5u8 {
        assert_eq!(
            post_otlp(sidecar.otlp_port, &padded_request(0xd0 + t, 20, 10)),
            200
        );
    }
    let t0 = std::time::Instant::now();
    let (status, _, log) = sidecar.terminate_keep_data();
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        took >= std::time::Duration::from_secs(3),
        "kept trying for the grace: {took:?}"
    );
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    assert!(log.contains("shutdown grace"), "says why:\n{log}");
    assert!(
        log.contains("dropped=100"),
        "counts what it dropped:\n{log}"
    );
}

#[test]
fn sigterm_with_the_central_back_within_the_grace_delivers_everything() {
    let central_grpc = free_port();
    let sidecar = Collector::start_opts(
        meshtrace_testkit::scratch_path("sidecar"),
        Opts {
            yaml: Some(
                "sidecar:\n  retry_initial_ms: 50\n  retry_max_ms: 200\n  shutdown_grace: 30s\n"
                    .into(),
            ),
            ..Opts::sidecar(&format!("http://127.0.0.1:{central_grpc}"))
        },
    );
    for t in 0..5u8 {
        assert_eq!(
            post_otlp(sidecar.otlp_port, &padded_request(0xe0 + t, 20, 10)),
            200
        );
    }
    let pid = sidecar.child.id();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let central = Collector::start_opts(
        meshtrace_testkit::scratch_path("central"),
        Opts {
            grpc_port: Some(central_grpc),
            ..Opts::default()
        },
    );
    let (status, _, log) = sidecar.terminate_keep_data();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("forwarded=100") && log.contains("dropped=0"),
        "{log}"
    );
    assert_eq!(
        metric(&central, "meshtrace_collector_spans_stored_total"),
        100
    );
}

/// The process's CPU time (user + system) so far, in clock ticks.
fn cpu_ticks(c: &Collector) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.child.id())).unwrap();
    // Fields after the command name (in parentheses): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Issue 21, finding 12: a saturated sidecar decoded, redacted and validated
/// every request before refusing it (its CPU per accepted span went from 7 to
/// 15–28 µs under pressure). Now a request a full queue would refuse is
/// refused from its size, before its body is read or decoded: the CPU of a
/// refused request is a small fraction of an accepted one's.
#[test]
fn a_saturated_sidecar_refuses_before_decoding_for_a_fraction_of_the_cpu() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut opts = Opts::sidecar(&dead);
    opts.yaml = Some(
        "sidecar:\n  retry_initial_ms: 50\n  retry_max_ms: 200\n  queue_bytes: 33554432\n  max_retry_time: 1h\n"
            .into(),
    );
    let c = Collector::start_opts(meshtrace_testkit::scratch_path("saturated"), opts);
    let body = padded_request(7, 2000, 150);
    eprintln!("request: {} KB", body.len() / 1024);
    // Accepted until the queue (32 MiB) is full: the upstream is down, nothing leaves.
    let t = cpu_ticks(&c);
    let mut accepted = 0u64;
    loop {
        match post_otlp(c.otlp_port, &body) {
            200 => accepted += 1,
            503 => break,
            s => panic!("status {s}"),
        }
        assert!(accepted < 1000, "the queue never filled");
    }
    let accepted_ticks = cpu_ticks(&c) - t;
    // Saturated: every further request is refused.
    let refused_n = 10 * accepted;
    let t = cpu_ticks(&c);
    for _ in 0..refused_n {
        assert_eq!(post_otlp(c.otlp_port, &body), 503);
    }
    let refused_ticks = cpu_ticks(&c) - t;
    let (per_accepted, per_refused) = (
        accepted_ticks as f64 / accepted as f64,
        refused_ticks as f64 / refused_n as f64,
    );
    eprintln!(
        "accepted {accepted} requests in {accepted_ticks} ticks ({per_accepted:.2}/request), refused {refused_n} in {refused_ticks} ticks ({per_refused:.3}/request): {:.1}%",
        100.0 * per_refused / per_accepted
    );
    assert!(metric(&c, "meshtrace_collector_exports_refused_undecoded_total") >= refused_n);
    assert!(
        per_refused < 0.25 * per_accepted,
        "a refused request costs {per_refused:.3} ticks, an accepted one {per_accepted:.2}"
    );
}

/// A sidecar forwards an export with nothing to redact or refuse as its bytes
/// (issue 23, item 6: decoding and encoding it again was most of its CPU), and
/// one with a credential or an invalid span the old way: the central stores
/// both exports' spans, the credential redacted, the invalid span refused.
#[test]
fn plain_exports_go_as_they_are_and_credentials_are_still_redacted() {
    use meshtrace_proto::otlp::trace::v1::Span;
    use meshtrace_proto::prost::Message;
    let central = Collector::start();
    let sidecar = Collector::start_sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    let now = meshtrace_testkit::otlp::now_ns();
    let span = |t: u8, i: u64, attrs| Span {
        trace_id: vec![t; 16],
        span_id: (i + 1).to_be_bytes().to_vec(),
        name: format!("op{i}"),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1000,
        attributes: attrs,
        ..Default::default()
    };
    let kv = meshtrace_testkit::otlp::kv;
    let plain = meshtrace_testkit::otlp::request(
        "plain",
        (0..20)
            .map(|i| {
                span(
                    0xa1,
                    i,
                    vec![kv("http.request.method", "GET"), kv("k", "v")],
                )
            })
            .collect(),
    );
    assert_eq!(post_otlp(sidecar.otlp_port, &plain.encode_to_vec()), 200);
    let mut spans: Vec<Span> = (0..5).map(|i| span(0xa2, i, vec![kv("k", "v")])).collect();
    spans[1].attributes.push(kv("db.password", "hunter2"));
    spans[2].end_time_unix_nano = now - 1;
    let mixed = meshtrace_testkit::otlp::request("mixed", spans);
    assert_eq!(post_otlp(sidecar.otlp_port, &mixed.encode_to_vec()), 200);
    let v = central.get_json_until(&format!("/api/traces/{}", "a1".repeat(16)), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| s.len() == 20)
    });
    let tags = &v["data"][0]["spans"][0]["tags"];
    assert!(tags.to_string().contains("http.request.method"), "{v}");
    let v = central.get_json_until(&format!("/api/traces/{}", "a2".repeat(16)), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| s.len() == 4)
    });
    let text = v.to_string();
    assert!(
        !text.contains("hunter2") && text.contains("[REDACTED]"),
        "{text}"
    );
    let m = central.get("/metrics").1;
    assert_eq!(
        meshtrace_testkit::collector::metric(&m, "meshtrace_collector_spans_stored_total"),
        24
    );
    let s = sidecar.get("/metrics").1;
    assert_eq!(
        meshtrace_testkit::collector::metric(&s, "meshtrace_collector_spans_rejected_total"),
        1
    );
    assert_eq!(
        meshtrace_testkit::collector::metric(&s, "meshtrace_collector_attributes_redacted_total"),
        1
    );
}
