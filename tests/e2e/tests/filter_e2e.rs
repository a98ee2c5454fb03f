//! The filter in a real Envoy 1.40, with an echo upstream, exporting to the real collector
//! binary (read back through its query API) or, where a test asserts on the exact OTLP the
//! filter emits, to a decoding receiver.
//! Needs `scripts/setup` (Envoy) and `scripts/build-wasm` (the filter).

use meshtrace_testkit::collector::{jaeger_process, jaeger_span_of, jaeger_tag, Collector, Opts};
use meshtrace_testkit::envoy::{Envoy, EnvoyBuilder, Filter, TwoSidecars};
use meshtrace_testkit::free_port;
use meshtrace_testkit::http::Client;
use meshtrace_testkit::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use meshtrace_testkit::upstream::Upstream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Fast flushing so tests don't wait.
const FAST: &str = r#""export":{"flush_interval_ms":100,"tick_ms":50}"#;

fn cfg(extra: &str) -> String {
    if extra.is_empty() {
        format!("{{{FAST}}}")
    } else {
        format!("{{{FAST},{extra}}}")
    }
}

/// One inbound sidecar in front of an echo app.
fn inbound(config: &str, receiver: &OtlpReceiver) -> (Envoy, u16, Upstream) {
    let app = Upstream::start();
    let mut b = EnvoyBuilder::new(
        "backend",
        Filter::Meshtrace(config.to_string()),
        receiver.port,
    );
    let port = b.listener("INBOUND", app.port);
    (b.start(), port, app)
}

fn wait_spans(r: &OtlpReceiver, n: usize) -> Vec<ReceivedSpan> {
    r.wait_for(Duration::from_secs(10), |s| s.len() >= n)
}

/// A span's tag value in Jaeger's JSON as text (numbers and bools printed).
fn tag(span: &Value, key: &str) -> Option<String> {
    let v = &jaeger_tag(span, key)?["value"];
    Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
}

/// Client → sidecar A (outbound) → sidecar B (inbound) → app, both sidecars exporting to
/// the real collector binary; the trace is read back through its Jaeger query API.
#[test]
fn a_two_sidecars_give_one_trace() {
    let collector = Collector::start();
    let config = cfg("");
    let mesh = TwoSidecars::start(&config, &config, collector.otlp_port);
    let (a_out, b_in, app) = (mesh.entry_port, mesh.backend_port, &mesh.app);

    let resp = Client::connect(a_out).get("/api/items/42?verbose=1", &[("user-agent", b"e2e/1")]);
    assert_eq!(resp.status(), 200);
    // The app sees B's span as its parent: that gives the trace id to look up.
    let tp = app.last().header("traceparent").unwrap();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "03"), "{tp}");
    let (trace_id, b_span_id) = (parts[1], parts[2]);

    let body = collector.get_json_until(&format!("/api/traces/{trace_id}"), |v| {
        v["data"][0]["spans"].as_array().map_or(0, Vec::len) >= 2
    });
    let trace = &body["data"][0];
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{body:#}");
    let service = |s: &Value| {
        jaeger_process(trace, s)["serviceName"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (client, server) = (
        jaeger_span_of(trace, "frontend"),
        jaeger_span_of(trace, "backend"),
    );

    assert_eq!(server["spanID"], b_span_id, "the app's parent is B's span");
    assert_eq!(client["traceID"], trace_id);
    assert_eq!(server["traceID"], trace_id, "one trace");
    assert_eq!(
        server["references"],
        json!([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": client["spanID"]}]),
        "B's server span is a child of A's client span"
    );
    assert_eq!(client["references"], json!([]), "A started the trace");
    assert_eq!(tag(client, "span.kind").as_deref(), Some("client"));
    assert_eq!(tag(server, "span.kind").as_deref(), Some("server"));
    for s in [client, server] {
        assert_eq!(s["operationName"], "GET /api/items/{id}");
        assert_eq!(tag(s, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(tag(s, "url.path").as_deref(), Some("/api/items/42"));
        assert_eq!(tag(s, "url.scheme").as_deref(), Some("http"));
        assert_eq!(tag(s, "server.address").as_deref(), Some("svc.test"));
        assert_eq!(tag(s, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(tag(s, "user_agent.original").as_deref(), Some("e2e/1"));
        assert!(
            tag(s, "http.request.header.x-request-id").is_some(),
            "x-request-id recorded"
        );
        assert_eq!(tag(s, "network.peer.address").as_deref(), Some("127.0.0.1"));
        assert!(
            tag(s, "http.response.body.size")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        let expected_sampler = if service(s) == "frontend" {
            "probabilistic"
        } else {
            "parent"
        };
        assert_eq!(tag(s, "sampler.type").as_deref(), Some(expected_sampler));
        assert!(tag(s, "error").is_none(), "status unset: no error tag");
        let process = jaeger_process(trace, s);
        assert_eq!(tag(process, "service.namespace").as_deref(), Some("demo"));
        assert_eq!(tag(process, "service.version").as_deref(), Some("v1"));
        assert_eq!(
            tag(process, "k8s.pod.name"),
            Some(format!("{}-pod-0", service(s)))
        );
        let dur = s["duration"].as_u64().unwrap();
        assert!(dur > 0 && dur < 5_000_000, "duration {dur} µs");
    }
    let (cs, ss) = (
        client["startTime"].as_u64().unwrap(),
        server["startTime"].as_u64().unwrap(),
    );
    assert!(cs <= ss, "client starts first");
    assert!(
        cs + client["duration"].as_u64().unwrap() + 1 >= ss + server["duration"].as_u64().unwrap(),
        "client ends last (µs rounding allowed)"
    );
    assert_eq!(tag(server, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        tag(server, "envoy.upstream.cluster"),
        Some(format!("inbound|{}||", app.port))
    );
    assert_eq!(
        tag(client, "envoy.upstream.cluster"),
        Some(format!("outbound|{b_in}||up0.demo.svc.cluster.local"))
    );
    assert_eq!(
        tag(client, "envoy.upstream.host"),
        Some(format!("127.0.0.1:{b_in}"))
    );
    // And the collector derived the dependency edge from the pair.
    let deps = collector.get_json_until("/api/dependencies", |v| {
        v["data"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(
        deps["data"],
        json!([{"parent": "frontend", "child": "backend", "callCount": 1}]),
        "{deps:#}"
    );
}

#[test]
fn b_each_incoming_format_continues_and_is_reinjected() {
    let receiver = OtlpReceiver::start();
    let (_envoy, port, app) = inbound(&cfg(""), &receiver);
    let mut c = Client::connect(port);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let w3c = format!("00-{trace}-{parent}-01");
    let b3s = format!("{trace}-{parent}-1");
    let jaeger = format!("{trace}:{parent}:0:1");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "w3c",
            vec![
                ("traceparent", w3c.as_bytes()),
                ("tracestate", b"vendor=abc,other=1"),
            ],
            "traceparent",
        ),
        ("b3 single", vec![("b3", b3s.as_bytes())], "b3"),
        (
            "b3 multi",
            vec![
                ("x-b3-traceid", trace.as_bytes()),
                ("x-b3-spanid", parent.as_bytes()),
                ("x-b3-sampled", b"1"),
            ],
            "x-b3-spanid",
        ),
        (
            "jaeger",
            vec![
                ("uber-trace-id", jaeger.as_bytes()),
                ("uberctx-user", b"alice"),
            ],
            "uber-trace-id",
        ),
    ];
    for (i, (why, headers, reinjected)) in cases.iter().enumerate() {
        assert_eq!(c.get(&format!("/fmt/{i}"), headers).status(), 200);
        let spans = wait_spans(&receiver, i + 1);
        let span = spans
            .iter()
            .find(|s| s.attr("url.path") == Some(format!("/fmt/{i}")))
            .expect(why);
        assert_eq!(span.trace_id(), trace, "{why}: continues the trace");
        assert_eq!(
            span.parent_id(),
            parent,
            "{why}: child of the incoming span"
        );
        let seen = app.last();
        let tp = seen.header("traceparent").unwrap_or_default();
        assert_eq!(
            tp,
            format!("00-{trace}-{}-01", span.span_id()),
            "{why}: W3C always injected"
        );
        let again = seen.header(reinjected).unwrap();
        assert!(
            again.contains(&span.span_id()),
            "{why}: {reinjected} carries the new span: {again}"
        );
        match *why {
            "w3c" => assert_eq!(
                seen.header("tracestate").as_deref(),
                Some("vendor=abc,other=1")
            ),
            "b3 multi" => {
                assert_eq!(seen.header("x-b3-traceid").as_deref(), Some(trace));
                assert_eq!(seen.header("x-b3-parentspanid").as_deref(), Some(parent));
                assert_eq!(seen.header("x-b3-sampled").as_deref(), Some("1"));
            }
            "jaeger" => assert_eq!(
                seen.header("uberctx-user").as_deref(),
                Some("alice"),
                "baggage passed through"
            ),
            _ => {}
        }
    }

    // Configured formats are injected even when none arrived.
    let receiver2 = OtlpReceiver::start();
    let (_e2, port2, app2) = inbound(
        &cfg(r#""propagation":{"inject":["w3c","b3","b3_single","jaeger"]}"#),
        &receiver2,
    );
    assert_eq!(Client::connect(port2).get("/new", &[]).status(), 200);
    let span = wait_spans(&receiver2, 1).pop().unwrap();
    let seen = app2.last();
    let (t, s) = (span.trace_id(), span.span_id());
    assert_eq!(
        seen.header("traceparent").unwrap(),
        format!("00-{t}-{s}-03")
    );
    assert_eq!(seen.header("b3").unwrap(), format!("{t}-{s}-1"));
    assert_eq!(seen.header("x-b3-traceid").unwrap(), t);
    assert_eq!(seen.header("x-b3-spanid").unwrap(), s);
    assert_eq!(
        seen.header("uber-trace-id").unwrap(),
        format!("{t}:{s}:0:1")
    );
}

#[test]
fn c_malformed_and_hostile_headers_start_a_new_trace() {
    let receiver = OtlpReceiver::start();
    let (envoy, port, app) = inbound(&cfg(""), &receiver);
    let mut c = Client::connect(port);
    let long = vec![b'a'; 10 * 1024];
    let non_ascii: Vec<u8> = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}"
        .bytes()
        .collect();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "short trace id",
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".to_vec(),
        ),
        (
            "long span id",
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7a-01".to_vec(),
        ),
        (
            "uppercase",
            "traceparent",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".to_vec(),
        ),
        (
            "all zero trace",
            "traceparent",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_vec(),
        ),
        (
            "all zero span",
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_vec(),
        ),
        (
            "version ff",
            "traceparent",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
        ),
        ("10 KB traceparent", "traceparent", long.clone()),
        ("10 KB b3", "b3", long.clone()),
        ("10 KB uber-trace-id", "uber-trace-id", long),
        ("non-ascii", "traceparent", non_ascii.clone()),
        ("non-ascii b3", "b3", non_ascii),
        (
            "b3 bad sampling",
            "b3",
            b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-x".to_vec(),
        ),
        ("jaeger zero", "uber-trace-id", b"0:0:0:1".to_vec()),
    ];
    for (i, (why, name, value)) in cases.iter().enumerate() {
        let path = format!("/hostile/{i}");
        let resp = c.get(&path, &[(name, value.as_slice())]);
        assert_eq!(resp.status(), 200, "{why}: the request goes through");
        let spans = receiver.wait_for(Duration::from_secs(10), |s| {
            s.iter()
                .any(|x| x.attr("url.path").as_deref() == Some(path.as_str()))
        });
        let span = spans
            .iter()
            .find(|s| s.attr("url.path").as_deref() == Some(path.as_str()))
            .unwrap_or_else(|| panic!("{why}: no span"));
        assert!(span.span.parent_span_id.is_empty(), "{why}: a new trace");
        assert_ne!(span.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{why}");
        let tp = app.last().header("traceparent").unwrap();
        assert_eq!(
            tp,
            format!("00-{}-{}-03", span.trace_id(), span.span_id()),
            "{why}: a valid context goes upstream"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(envoy.counter("invalid_context"), cases.len() as u64);
}

/// Sends `n` requests to `path` with `headers`; all must succeed.
fn send(port: u16, path: &str, n: usize, headers: &[(&str, &[u8])]) {
    let mut c = Client::connect(port);
    for _ in 0..n {
        assert_eq!(c.get(path, headers).status(), 200);
    }
}

/// Waits until the receiver count is stable, then returns it.
fn settled_count(r: &OtlpReceiver) -> usize {
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = r.count();
        if now == last {
            return now;
        }
        last = now;
    }
}

#[test]
fn d_sampling() {
    // Probability 0: nothing exported, context still propagated with sampled=0.
    let r0 = OtlpReceiver::start();
    let (e0, p0, app0) = inbound(
        &cfg(r#""sampling":{"default_strategy":{"type":"probabilistic","param":0}}"#),
        &r0,
    );
    send(p0, "/zero", 200, &[]);
    let tp = app0.last().header("traceparent").unwrap();
    assert!(
        tp.starts_with("00-") && tp.ends_with("-02"),
        "sampled flag off: {tp}"
    );
    // A sampled parent is honoured even at probability 0.
    send(
        p0,
        "/parent",
        1,
        &[(
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    );
    assert_eq!(
        settled_count(&r0),
        1,
        "only the sampled-parent request is exported"
    );
    assert_eq!(r0.spans()[0].trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e0.counter("spans_started"), 201);
    assert_eq!(e0.counter("spans_sampled"), 1);

    // Probability 1 exports all; an unsampled parent is honoured.
    let r1 = OtlpReceiver::start();
    let (e1, p1, app1) = inbound(&cfg(""), &r1);
    send(p1, "/all", 300, &[]);
    send(
        p1,
        "/unsampled-parent",
        50,
        &[(
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )],
    );
    assert_eq!(
        app1.last().header("traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        "an unsampled context goes on unchanged"
    );
    assert_eq!(settled_count(&r1), 300);
    assert_eq!(e1.counter("spans_exported"), 300);

    // Per-operation override, over 2000 requests per operation.
    let r2 = OtlpReceiver::start();
    let (_e2, p2, _) = inbound(
        &cfg(
            r#""service_name":"shop","sampling":{"default_strategy":{"type":"probabilistic","param":0.5},
            "service_strategies":[{"service":"shop","type":"probabilistic","param":0.5,
              "operation_strategies":[{"operation":"GET /rare","type":"probabilistic","param":0.05}]}]}"#,
        ),
        &r2,
    );
    let n = 2000;
    send(p2, "/rare", n, &[]);
    send(p2, "/common", n, &[]);
    settled_count(&r2);
    let spans = r2.spans();
    for (op, p) in [("GET /rare", 0.05), ("GET /common", 0.5)] {
        let k = spans.iter().filter(|s| s.span.name == op).count() as f64;
        let want = p * n as f64;
        let tol = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (k - want).abs() <= tol,
            "{op}: {k} sampled, want {want} ± {tol}"
        );
        for s in spans.iter().filter(|s| s.span.name == op) {
            assert_eq!(
                s.attr("sampler.param"),
                Some(p.to_string()),
                "probability recorded"
            );
        }
    }
}

#[test]
fn e_custom_tags_and_sensitive_headers() {
    let receiver = OtlpReceiver::start();
    let app = Upstream::start();
    let config = cfg(r#""custom_tags":[
        {"tag":"team","literal":"payments"},
        {"tag":"pod.ip","environment":"POD_IP"},
        {"tag":"user","request_header":"x-user"},
        {"tag":"tenant","request_header":"x-tenant","default":"public"},
        {"tag":"cache","response_header":"x-cache"},
        {"tag":"cluster.id","metadata":"CLUSTER_ID"},
        {"tag":"mtls","attribute":"connection.mtls"},
        {"tag":"downstream","attribute":"source.address"},
        {"tag":"long","request_header":"x-long","max_length":8}]"#);
    let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(config), receiver.port);
    b.env.push(("POD_IP".into(), "10.1.2.3".into()));
    // Plain cluster names: the span kind comes from xds.listener_direction.
    b.istio_cluster_names = false;
    let port = b.listener("INBOUND", app.port);
    let _e = b.start();
    let resp = Client::connect(port).get(
        "/tags",
        &[
            ("x-user", b"alice"),
            ("x-long", b"0123456789abcdef"),
            ("authorization", b"Bearer SECRET-TOKEN"),
            ("cookie", b"session=SECRET-COOKIE"),
            ("x-api-key", b"SECRET-KEY"),
        ],
    );
    assert_eq!(resp.status(), 200);
    let span = wait_spans(&receiver, 1).pop().unwrap();
    assert_eq!(span.span.kind, 2, "SERVER from xds.listener_direction");
    assert_eq!(span.attr("envoy.upstream.cluster").as_deref(), Some("up0"));
    assert_eq!(span.attr("team").as_deref(), Some("payments"));
    assert_eq!(span.attr("pod.ip").as_deref(), Some("10.1.2.3"));
    assert_eq!(span.attr("user").as_deref(), Some("alice"));
    assert_eq!(span.attr("tenant").as_deref(), Some("public"));
    assert_eq!(span.attr("cache").as_deref(), Some("HIT"));
    assert_eq!(span.attr("cluster.id").as_deref(), Some("test-cluster"));
    assert_eq!(span.attr("mtls").as_deref(), Some("false"));
    assert!(span.attr("downstream").unwrap().starts_with("127.0.0.1:"));
    assert_eq!(span.attr("long").as_deref(), Some("01234567"));
    let dump = format!("{:?}", span.span);
    assert!(
        !dump.contains("SECRET"),
        "a sensitive header was recorded: {dump}"
    );
    // The app still receives them: tracing never strips the request.
    assert!(app.last().header("authorization").is_some());
}

#[test]
fn f_collector_down_traffic_unaffected_then_export_resumes() {
    let dead = free_port();
    let config = cfg(r#""export":{"flush_interval_ms":100,"tick_ms":50,"max_batch_bytes":4096,"max_buffer_bytes":8192,"backoff_initial_ms":100,"backoff_max_ms":400}"#)
        .replacen(FAST, r#""collector":{"timeout_ms":1000}"#, 1);
    let up = Collector::start();
    let (down_envoy, down_port, _) = {
        let app = Upstream::start();
        let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(config.clone()), dead);
        let port = b.listener("INBOUND", app.port);
        (b.start(), port, app)
    };
    let (_up_envoy, up_port, _up_app) = {
        let app = Upstream::start();
        let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(config.clone()), up.otlp_port);
        let port = b.listener("INBOUND", app.port);
        (b.start(), port, app)
    };

    // Interleave: the same requests through a sidecar whose collector is up and one whose collector is down.
    let (mut lat_up, mut lat_down) = (Vec::new(), Vec::new());
    let (mut cu, mut cd) = (Client::connect(up_port), Client::connect(down_port));
    for _ in 0..10 {
        for (c, lat) in [(&mut cu, &mut lat_up), (&mut cd, &mut lat_down)] {
            for _ in 0..50 {
                let t = Instant::now();
                assert_eq!(
                    c.get("/x", &[]).status(),
                    200,
                    "requests succeed with the collector down"
                );
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mu, md) = (median(&mut lat_up), median(&mut lat_down));
    eprintln!("median latency: collector up {mu:.3} ms, down {md:.3} ms");
    assert!(
        md <= mu * 2.0 + 0.5,
        "collector down slowed requests: {md:.3} ms vs {mu:.3} ms"
    );
    std::thread::sleep(Duration::from_millis(600));
    let dropped = down_envoy.counter("spans_dropped");
    assert!(down_envoy.counter("export_failures") > 0);
    assert!(dropped > 0, "buffer bound reached, drops counted");

    // The real collector comes back on the same port: export resumes, and what the
    // filter sends from then on is stored and queryable.
    let back = Collector::start_opts(
        meshtrace_testkit::scratch_path("back"),
        Opts {
            http_port: Some(dead),
            ..Opts::default()
        },
    );
    let spans_of = |path: &str| {
        let v = back.get_json_until(
            &format!("/api/traces?service=backend&tag=url.path:{path}&limit=100"),
            |v| v["data"].as_array().is_some_and(|a| !a.is_empty()),
        );
        v["data"].as_array().map_or(0, Vec::len)
    };
    assert!(spans_of("/x") > 0, "export resumed: buffered spans arrive");
    send(down_port, "/after", 5, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while spans_of("/after") < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        spans_of("/after"),
        5,
        "every request after the return is stored"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(down_envoy.counter("spans_exported") >= 5);
    assert_eq!(
        down_envoy.counter("spans_dropped"),
        dropped,
        "no drops once the collector is back"
    );
}

#[test]
fn g_invalid_config_is_rejected_naming_the_field() {
    let cases = [
        (
            r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":10}}}"#,
            "sampling.default_strategy.param",
        ),
        (
            r#"{"export":{"max_batch_spans":0}}"#,
            "export.max_batch_spans",
        ),
        (
            r#"{"custom_tags":[{"tag":"auth","request_header":"authorization"}]}"#,
            "custom_tags[0].request_header",
        ),
        (r#"{"colector":{}}"#, "colector"),
    ];
    for (config, field) in cases {
        let app = Upstream::start();
        let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(config.into()), free_port());
        b.listener("INBOUND", app.port);
        match b.try_start() {
            Ok(_) => panic!("envoy accepted an invalid config: {config}"),
            Err(log) => {
                assert!(log.contains("invalid meshtrace config"), "{log}");
                assert!(log.contains(field), "log must name {field}: {log}");
            }
        }
    }
}

/// Consistent probability sampling across two real sidecars: A (outbound, p = 0.5)
/// writes `ot=th:8`; B (inbound, p = 0.1, `consistent_downstream`) keeps only traces
/// whose randomness clears its own threshold — a subset of A's, about 10% of all.
#[test]
fn h_consistent_downstream_keeps_a_subset_of_upstream() {
    let receiver = OtlpReceiver::start();
    let mesh = TwoSidecars::start(
        &cfg(r#""sampling":{"default_strategy":{"type":"probabilistic","param":0.5}}"#),
        &cfg(
            r#""sampling":{"consistent_downstream":true,"default_strategy":{"type":"probabilistic","param":0.1}}"#,
        ),
        receiver.port,
    );
    let (a_out, app) = (mesh.entry_port, &mesh.app);

    const N: usize = 1000;
    send(a_out, "/pay", N, &[]);
    settled_count(&receiver);
    let spans = receiver.spans();
    let ids = |svc: &str| -> std::collections::HashSet<String> {
        spans
            .iter()
            .filter(|s| s.service() == svc)
            .map(|s| s.trace_id())
            .collect()
    };
    let (up, down) = (ids("frontend"), ids("backend"));
    eprintln!(
        "of {N}: frontend kept {}, backend kept {}",
        up.len(),
        down.len()
    );
    assert!(down.is_subset(&up), "backend kept traces frontend dropped");
    let sd = |p: f64| (N as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (up.len() as f64 - 500.0).abs() <= 5.0 * sd(0.5),
        "{}",
        up.len()
    );
    assert!(
        (down.len() as f64 - 100.0).abs() <= 5.0 * sd(0.1),
        "{}",
        down.len()
    );
    // B records the probability that applied to it, and writes its threshold on.
    let b_span = spans.iter().find(|s| s.service() == "backend").unwrap();
    assert_eq!(
        b_span.attr("sampler.type").as_deref(),
        Some("probabilistic")
    );
    assert!(b_span.attr("sampler.param").unwrap().starts_with("0.1"));
    let last_ts = app.last().header("tracestate");
    assert!(
        matches!(last_ts.as_deref(), Some("ot=th:e6666666666668") | None),
        "{last_ts:?}"
    );
}

/// W3C Trace Context Level 2 on the wire through a real Envoy (issue 14 items 1–3):
/// other vendors' tracestate keys valid under Level 2's grammar go on untouched,
/// unknown trace-flags and higher versions never go on, and an unsampled hop sends
/// the parent's id on whichever headers the app forwarded.
#[test]
fn i_w3c_level_2_on_the_wire_and_one_pass_through_rule() {
    let receiver = OtlpReceiver::start();
    let (_envoy, port, app) = inbound(&cfg(r#""propagation":{"inject":["w3c","b3"]}"#), &receiver);
    let mut c = Client::connect(port);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";

    // Item 1: Level 2 keys (Level 1 dropped all four of these members).
    let tenant = format!("{}@sys=1", "t".repeat(242));
    let ts = format!("foo@=1,foo@@bar=1,1special=1,{tenant},vendor=x");
    let tp = format!("00-{trace}-{parent}-01");
    assert_eq!(
        c.get(
            "/l2/keys",
            &[
                ("traceparent", tp.as_bytes()),
                ("tracestate", ts.as_bytes())
            ]
        )
        .status(),
        200
    );
    assert_eq!(
        app.last().header("tracestate").as_deref(),
        Some(ts.as_str())
    );

    // Item 2: unknown flags zeroed, any version written as 00.
    for (i, (incoming, out_flags)) in [
        (format!("00-{trace}-{parent}-05"), "01"),
        (format!("00-{trace}-{parent}-ff"), "03"),
        (format!("cc-{trace}-{parent}-ff-future"), "03"),
        (format!("00-{trace}-{parent}-04"), "00"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            c.get(
                &format!("/l2/flags/{i}"),
                &[("traceparent", incoming.as_bytes())]
            )
            .status(),
            200
        );
        let out = app.last().header("traceparent").unwrap_or_default();
        assert!(
            out.starts_with(&format!("00-{trace}-"))
                && out.ends_with(&format!("-{out_flags}"))
                && out.len() == 55,
            "{incoming} went on as {out}"
        );
    }

    // Item 3: an unsampled context, from an app forwarding only W3C's header and from
    // one forwarding Istio's whole list: the same parent id goes on in both formats.
    let unsampled = format!("00-{trace}-{parent}-00");
    let w3c_only: Vec<(&str, &[u8])> = vec![("traceparent", unsampled.as_bytes())];
    let istio: Vec<(&str, &[u8])> = vec![
        ("traceparent", unsampled.as_bytes()),
        ("x-request-id", b"5f1b0c3e"),
        ("x-b3-traceid", trace.as_bytes()),
        ("x-b3-spanid", parent.as_bytes()),
        ("x-b3-parentspanid", b"1111111111111111"),
        ("x-b3-sampled", b"0"),
    ];
    for (app_kind, headers) in [("W3C only", &w3c_only), ("Istio's list", &istio)] {
        assert_eq!(c.get("/l2/unsampled", headers).status(), 200);
        let seen = app.last();
        assert_eq!(
            seen.header("traceparent").as_deref(),
            Some(unsampled.as_str()),
            "{app_kind}"
        );
        assert_eq!(
            seen.header("x-b3-spanid").as_deref(),
            Some(parent),
            "{app_kind}"
        );
        assert_eq!(
            seen.header("x-b3-sampled").as_deref(),
            Some("0"),
            "{app_kind}"
        );
    }
}

/// Issue 14 items 4 and 5 on the wire through a real Envoy, sampling at 0: a request
/// from outside the mesh (no context) gets `traceresponse` naming its trace; one with
/// `jaeger-debug-id` is traced anyway, tagged with the id; a mesh-internal hop (a
/// context arrived) answers without `traceresponse`.
#[test]
fn j_traceresponse_and_jaeger_debug_id() {
    let receiver = OtlpReceiver::start();
    let never = r#""sampling":{"default_strategy":{"type":"probabilistic","param":0}},
        "propagation":{"response_header":"both"}"#;
    let (_envoy, port, _app) = inbound(&cfg(never), &receiver);
    let mut c = Client::connect(port);

    let plain = c.get("/edge/plain", &[]);
    let tr = plain
        .header("traceresponse")
        .expect("traceresponse for a request from outside");
    assert!(
        tr.starts_with("00-") && tr.ends_with("-02") && tr.len() == 55,
        "not sampled: {tr}"
    );

    // And in the Level 2 draft's form, which a browser page reads (`both`).
    assert_eq!(
        plain.header("server-timing"),
        Some(format!("traceparent;desc=\"{tr}\"")),
        "Server-Timing carries the same context"
    );
    // A browser's cross-origin request answered with CORS: traceresponse is exposed.
    let cors = c.get("/edge/cors", &[("origin", b"https://shop.example")]);
    assert_eq!(
        cors.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        cors.header("access-control-expose-headers").as_deref(),
        Some("traceresponse")
    );
    assert_eq!(
        plain.header("access-control-expose-headers"),
        None,
        "no CORS, nothing exposed"
    );

    let debug = c.get("/edge/debug", &[("jaeger-debug-id", b"ticket-4711")]);
    let tr = debug.header("traceresponse").expect("traceresponse");
    assert!(tr.ends_with("-03"), "sampled: {tr}");
    assert_eq!(
        debug.header("server-timing"),
        Some(format!("traceparent;desc=\"{tr}\""))
    );
    let spans = wait_spans(&receiver, 1);
    assert_eq!(spans.len(), 1, "only the debug request is traced");
    let span = &spans[0];
    assert_eq!(span.attr("jaeger-debug-id").as_deref(), Some("ticket-4711"));
    assert_eq!(tr, format!("00-{}-{}-03", span.trace_id(), span.span_id()));

    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let inner = c.get("/inner", &[("traceparent", tp.as_bytes())]);
    assert_eq!(inner.header("traceresponse"), None, "mesh-internal hop");
}
