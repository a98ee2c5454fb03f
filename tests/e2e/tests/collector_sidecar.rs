//! Sidecar mode: Envoy → sidecar collector → central collector, and the
//! sidecar holding spans while the central one is down.

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
