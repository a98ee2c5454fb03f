//! No open doors: TLS on every listener, client certificates for ingest,
//! bearer tokens for ingest and queries, the sidecar reaching the central
//! collector over TLS with a token — with real clients (Python grpcio, the
//! OpenTelemetry SDK's exporters, Python's TLS stack, the collector's own
//! sidecar).

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{grpc_raw_with, metric, post_otlp, Collector, Opts};
use meshtrace_testkit::otlp::{now_ns, request};
use meshtrace_testkit::python_client;
use meshtrace_testkit::tls::Pki;
use std::time::{Duration, Instant};

const INGEST: &str = "ingest-token-0123456789abcdef";
const QUERY: &str = "query-token-0123456789abcdef";
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

fn secured_central(pki: &Pki) -> Collector {
    let yaml = format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\nauth:\n  ingest_tokens: [{INGEST}]\n  query_tokens: [{QUERY}]\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    Collector::start_opts(
        meshtrace_testkit::scratch_path("secured"),
        Opts {
            yaml: Some(yaml),
            tls: true,
            ..Opts::default()
        },
    )
}

fn one_span(t: u8) -> Vec<u8> {
    let now = now_ns();
    request(
        "secured",
        vec![Span {
            trace_id: vec![t; 16],
            span_id: vec![t; 8],
            name: "op".into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1000,
            ..Default::default()
        }],
    )
    .encode_to_vec()
}

fn https_get(url: &str, opts: &[&str]) -> (u64, String) {
    let mut args = vec![url];
    args.extend_from_slice(opts);
    let (v, _) = python_client("https_get.py", &args, b"");
    (
        v["status"].as_u64().unwrap_or(0),
        v["body"].as_str().unwrap_or("").to_string() + v["error"].as_str().unwrap_or(""),
    )
}

#[test]
fn every_listener_speaks_tls_and_asks_for_certificates_and_tokens() {
    let pki = Pki::make();
    let c = secured_central(&pki);
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    // gRPC ingest: TLS + client certificate + token.
    let (code, details, _) = grpc_raw_with(
        c.grpc_port,
        EXPORT,
        &one_span(1),
        &["--ca", ca, "--cert", cert, "--key", key, "--token", INGEST],
    );
    assert_eq!(code, "OK", "{details}");
    // No token: UNAUTHENTICATED. The query token is not an ingest token.
    for token in [None, Some(QUERY)] {
        let mut opts = vec!["--ca", ca, "--cert", cert, "--key", key];
        if let Some(t) = token {
            opts.extend(["--token", t]);
        }
        let (code, details, _) = grpc_raw_with(c.grpc_port, EXPORT, &one_span(2), &opts);
        assert_eq!(code, "UNAUTHENTICATED", "{details}");
        assert!(details.contains("bearer token"), "{details}");
    }
    // No client certificate, or one from another CA: the handshake fails.
    let stranger = [
        "--ca",
        ca,
        "--cert",
        pki.stranger_cert.to_str().unwrap(),
        "--key",
        pki.stranger_key.to_str().unwrap(),
        "--token",
        INGEST,
    ];
    for opts in [&["--ca", ca, "--token", INGEST][..], &stranger[..]] {
        let (code, details, _) = grpc_raw_with(c.grpc_port, EXPORT, &one_span(3), opts);
        assert_eq!(code, "UNAVAILABLE", "refused at the handshake: {details}");
    }
    // Plain text on a TLS port: no answer.
    assert_eq!(post_otlp(c.otlp_port, &one_span(4)), 0);

    // The OpenTelemetry SDK's exporters, both protocols, with TLS, certificate and token.
    for (protocol, port) in [("http", c.otlp_port), ("grpc", c.grpc_port)] {
        let endpoint = format!("https://localhost:{port}");
        let (v, err) = python_client(
            "otel_send.py",
            &[
                protocol, &endpoint, "--ca", ca, "--cert", cert, "--key", key, "--token", INGEST,
            ],
            b"",
        );
        let tid = v["trace_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = https_get(
                &format!("https://localhost:{}/api/traces/{tid}", c.query_port),
                &["--ca", ca, "--token", QUERY],
            );
            if status == 200 {
                assert!(body.contains("POST /checkout"), "{body}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{protocol}: not stored ({status} {body}): {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Query API: TLS and the query token; the ingest token does not read.
    let services = format!("https://localhost:{}/api/services", c.query_port);
    let (status, body) = https_get(&services, &["--ca", ca, "--token", QUERY]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("secured"), "{body}");
    for opts in [&["--ca", ca][..], &["--ca", ca, "--token", INGEST][..]] {
        let (status, body) = https_get(&services, opts);
        assert_eq!(status, 401, "{body}");
    }
    // Probes and the scrape need no token (still TLS).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = https_get(
            &format!("https://localhost:{}{path}", c.query_port),
            &["--ca", ca],
        );
        assert_eq!(status, 200, "{path}");
    }
    // Strategies: TLS and the ingest token, on HTTP and gRPC.
    let sampling = format!(
        "https://localhost:{}/api/sampling?service=x",
        c.sampling_port
    );
    assert_eq!(
        https_get(&sampling, &["--ca", ca, "--token", INGEST]).0,
        200
    );
    assert_eq!(https_get(&sampling, &["--ca", ca]).0, 401);
    let (code, details, _) = grpc_raw_with(
        c.sampling_grpc_port,
        "/jaeger.api_v2.SamplingManager/GetSamplingStrategy",
        &[0x0a, 0x01, b'x'],
        &["--ca", ca, "--token", INGEST],
    );
    assert_eq!(code, "OK", "{details}");
}

#[test]
fn the_sidecar_reaches_the_central_collector_over_mutual_tls_with_a_token() {
    let pki = Pki::make();
    let central = secured_central(&pki);
    let token_file = pki.dir.join("token");
    let sidecar_for = |token: &str| {
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let yaml = format!(
            "sidecar:\n  ca_file: {}\n  client_cert_file: {}\n  client_key_file: {}\n  token_file: {}\n  retry_initial_ms: 50\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
            token_file.display()
        );
        let mut opts = Opts::sidecar(&format!("https://127.0.0.1:{}", central.grpc_port));
        opts.yaml = Some(yaml);
        opts.args.extend([
            "--sampling-upstream".into(),
            format!("https://127.0.0.1:{}", central.sampling_grpc_port),
        ]);
        Collector::start_opts(meshtrace_testkit::scratch_path("sidecar"), opts)
    };
    let sidecar = sidecar_for(INGEST);
    assert_eq!(post_otlp(sidecar.otlp_port, &one_span(7)), 200);
    let (ca, q) = (pki.ca.to_str().unwrap(), ["--token", QUERY]);
    let url = format!(
        "https://localhost:{}/api/traces/{}",
        central.query_port,
        "07".repeat(16)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while https_get(&url, &["--ca", ca, q[0], q[1]]).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not delivered over TLS:\n{}",
            sidecar.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Strategies come over TLS with the token too.
    let (status, body) = sidecar.get_sampling("/api/sampling?service=checkout");
    assert_eq!(status, 200, "{body}\n{}", sidecar.log());
    drop(sidecar);

    // A wrong token: the central refuses for good, the sidecar drops, counts and says why.
    let wrong = sidecar_for("wrong-token-0123456789abcdef");
    assert_eq!(post_otlp(wrong.otlp_port, &one_span(8)), 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(
        &wrong.get("/metrics").1,
        "meshtrace_collector_spans_dropped_total",
    ) < 1
    {
        assert!(Instant::now() < deadline, "{}", wrong.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(wrong.log().contains("Unauthenticated"), "{}", wrong.log());
}
