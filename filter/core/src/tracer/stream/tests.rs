use super::*;
use crate::config::Config;
use crate::export::CallOutcome;
use crate::testing::FakeHost;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::any_value::Value as Any;
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;

fn tracer(json: &str, host: &FakeHost) -> Tracer {
    let env = |n: &str| (n == "POD_IP").then(|| "10.1.2.3".to_string());
    Tracer::new(Config::from_json(json.as_bytes()).unwrap(), host, &env, 7).unwrap()
}

fn node() -> FakeHost {
    FakeHost::new()
        .with_property("xds.node.metadata.LABELS.app", b"checkout")
        .with_property("xds.node.metadata.LABELS.version", b"v2")
        .with_property("xds.node.metadata.NAMESPACE", b"shop")
        .with_property("xds.node.metadata.NAME", b"checkout-7d9f")
        .with_property("xds.node.metadata.CLUSTER_ID", b"east")
}

/// Runs one request through the stream and returns the exported request.
fn run(t: &mut Tracer, mut h: FakeHost) -> (FakeHost, Option<ExportTraceServiceRequest>) {
    let mut s = Stream::on_request_headers(t, &mut h, true);
    s.on_response_headers(t, &mut h, false);
    s.on_response_trailers(&h);
    h.now += 2_500_000;
    s.on_log(t, &h);
    h.now += 2_000_000_000;
    let before = h.dispatched.len();
    t.flush(&mut h);
    let req = h
        .dispatched
        .get(before)
        .map(|(_, _, body)| ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
    (h, req)
}

fn only_span(req: &ExportTraceServiceRequest) -> &Span {
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 1);
    &spans[0]
}

fn attr(span: &Span, key: &str) -> Option<Any> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

fn s(v: &str) -> Option<Any> {
    Some(Any::StringValue(v.into()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn inbound_span_continues_w3c_and_injects_itself() {
    let host = node()
        .with_request("GET", "/api/orders/123?x=1")
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_header("tracestate", "congo=t61")
        .with_header("user-agent", "curl/8")
        .with_header("x-request-id", "rid-1")
        .with_int_property("xds.listener_direction", 1)
        .with_property("source.address", b"10.0.0.5:41000")
        .with_property("upstream.address", b"127.0.0.1:8080")
        .with_property("xds.cluster_name", b"inbound|8080||")
        .with_int_property("request.size", 0)
        .with_int_property("response.size", 42)
        .with_response_header(":status", "200");
    let mut t = tracer("{}", &host);
    let (h, req) = run(&mut t, host);
    let req = req.expect("exported");
    let res = req.resource_spans[0].resource.as_ref().unwrap();
    let rattr = |k: &str| {
        res.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(rattr("service.name"), s("checkout"));
    assert_eq!(rattr("service.namespace"), s("shop"));
    assert_eq!(rattr("service.version"), s("v2"));
    assert_eq!(rattr("k8s.pod.name"), s("checkout-7d9f"));

    let span = only_span(&req);
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(span.name, "GET /api/orders/{id}");
    assert_eq!(span.trace_state, "congo=t61");
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        2_500_000
    );
    assert_eq!(
        attr(span, "url.path"),
        s("/api/orders/123"),
        "query dropped"
    );
    assert_eq!(attr(span, "http.request.method"), s("GET"));
    assert_eq!(attr(span, "server.address"), s("svc.local"));
    assert_eq!(attr(span, "server.port"), Some(Any::IntValue(8080)));
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(Any::IntValue(200))
    );
    assert_eq!(attr(span, "user_agent.original"), s("curl/8"));
    assert_eq!(attr(span, "http.request.header.x-request-id"), s("rid-1"));
    assert_eq!(attr(span, "client.address"), s("10.0.0.5"));
    assert_eq!(attr(span, "network.peer.port"), Some(Any::IntValue(41000)));
    assert_eq!(
        attr(span, "http.response.body.size"),
        Some(Any::IntValue(42))
    );
    assert_eq!(attr(span, "envoy.upstream.cluster"), s("inbound|8080||"));
    assert_eq!(
        attr(span, "envoy.upstream.host"),
        None,
        "SERVER: the upstream is the local app"
    );
    assert_eq!(attr(span, "sampler.type"), s("parent"));
    assert_eq!(span.status.as_ref().unwrap().code, 0, "unset on success");

    let tp = h.header("traceparent").unwrap();
    assert_eq!(
        tp,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&span.span_id)
        ),
        "injects its own span id"
    );
    assert_eq!(
        h.header("tracestate").as_deref(),
        Some("congo=t61"),
        "vendor tracestate kept"
    );
    assert_eq!(t.buffer.counters.spans_sampled, 1);
}

#[test]
fn probability_zero_exports_nothing_but_propagates() {
    let host = node()
        .with_request("GET", "/")
        .with_header("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1");
    let mut t = tracer(
        r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0}}}"#,
        &host,
    );
    let (h, req) = run(&mut t, host);
    assert!(req.is_none());
    // No span here, so no span id of its own: the parent's goes on, now with a decision.
    assert_eq!(
        h.header("traceparent").as_deref(),
        Some("00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-00")
    );
    assert_eq!(
        h.header("b3").as_deref(),
        Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")
    );
    assert_eq!(t.buffer.counters.spans_started, 1);
    assert_eq!(t.buffer.counters.spans_sampled, 0);
}

#[test]
fn local_failure_is_an_error_with_flags() {
    // No response headers reach the filter; Envoy reports 503 and UF (bit 5).
    let host = node()
        .with_request("POST", "/pay")
        .with_int_property("xds.listener_direction", 2)
        .with_int_property("response.code", 503)
        .with_int_property("response.flags", 1 << 5)
        .with_property("upstream.address", b"10.9.9.9:80");
    let mut t = tracer("{}", &host);
    let (_, req) = run(&mut t, host);
    let req = req.unwrap();
    let span = only_span(&req);
    assert_eq!(span.kind, 3, "CLIENT");
    assert_eq!(
        attr(span, "http.response.status_code"),
        Some(Any::IntValue(503))
    );
    assert_eq!(attr(span, "envoy.response_flags"), s("UF"));
    assert_eq!(attr(span, "network.peer.address"), s("10.9.9.9"));
    let st = span.status.as_ref().unwrap();
    assert_eq!(st.code, 2);
    assert_eq!(st.message, "UF");
}

#[test]
fn grpc_status_in_trailers_is_an_error() {
    let mut host = node()
        .with_request("POST", "/pkg.Svc/Method")
        .with_response_header(":status", "200");
    host.response_trailers
        .push(("grpc-status".into(), b"14".to_vec()));
    let mut t = tracer(r#"{"direction":"outbound"}"#, &host);
    let (_, req) = run(&mut t, host);
    let req = req.unwrap();
    let span = only_span(&req);
    assert_eq!(attr(span, "rpc.grpc.status_code"), Some(Any::IntValue(14)));
    assert_eq!(span.status.as_ref().unwrap().code, 2);
}

#[test]
fn custom_tags_from_every_source_and_no_secrets() {
    let host = node()
        .with_request("GET", "/")
        .with_header("x-user", "alice")
        .with_header("authorization", "Bearer secret")
        .with_header("cookie", "session=secret")
        .with_response_header(":status", "200")
        .with_response_header("x-cache", "HIT")
        .with_response_header("set-cookie", "a=secret")
        .with_property("connection.mtls", &[1])
        .with_property("source.principal", b"spiffe://cluster.local/ns/shop/sa/web");
    let cfg = r#"{"custom_tags":[
        {"tag":"team","literal":"payments"},
        {"tag":"pod.ip","environment":"POD_IP"},
        {"tag":"missing.env","environment":"NOPE","default":"none"},
        {"tag":"user","request_header":"x-user","max_length":3},
        {"tag":"tenant","request_header":"x-tenant","default":"public"},
        {"tag":"cache","response_header":"x-cache"},
        {"tag":"cluster.id","metadata":"CLUSTER_ID"},
        {"tag":"mtls","attribute":"connection.mtls"},
        {"tag":"principal","attribute":"source.principal"},
        {"tag":"absent.attr","attribute":"upstream.transport_failure_reason","default":"-"}]}"#;
    let mut t = tracer(cfg, &host);
    let (_, req) = run(&mut t, host);
    let req = req.unwrap();
    let span = only_span(&req);
    assert_eq!(attr(span, "team"), s("payments"));
    assert_eq!(attr(span, "pod.ip"), s("10.1.2.3"));
    assert_eq!(attr(span, "missing.env"), s("none"));
    assert_eq!(attr(span, "user"), s("ali"), "truncated to max_length");
    assert_eq!(attr(span, "tenant"), s("public"));
    assert_eq!(attr(span, "cache"), s("HIT"));
    assert_eq!(attr(span, "cluster.id"), s("east"));
    assert_eq!(attr(span, "mtls"), Some(Any::BoolValue(true)));
    assert_eq!(
        attr(span, "principal"),
        s("spiffe://cluster.local/ns/shop/sa/web")
    );
    assert_eq!(attr(span, "absent.attr"), s("-"));
    let dump = format!("{req:?}");
    assert!(!dump.contains("secret"), "a sensitive value leaked: {dump}");
}

#[test]
fn hostile_headers_start_a_new_trace() {
    let huge = "\u{fffd}".repeat(4000);
    let cases: Vec<(&str, String)> = vec![
        (
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01".into(),
        ),
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
        ),
        ("traceparent", "x".repeat(10_000)),
        ("traceparent", huge.clone()),
        ("b3", huge.clone()),
        ("uber-trace-id", huge),
        ("x-b3-traceid", "abc".into()),
    ];
    for (name, value) in cases {
        let host = node().with_request("GET", "/").with_header(name, &value);
        let mut t = tracer("{}", &host);
        let (h, req) = run(&mut t, host);
        let span = only_span(req.as_ref().unwrap()).clone();
        assert!(span.parent_span_id.is_empty(), "{name}: new root span");
        assert_eq!(t.buffer.counters.invalid_context, 1, "{name}");
        let tp = h.header("traceparent").unwrap();
        assert_eq!(tp.len(), 55, "{name}: valid traceparent injected");
        assert!(tp.contains(&hex(&span.trace_id)));
    }
}

#[test]
fn export_outcomes_update_counters() {
    let host = node().with_request("GET", "/");
    let mut t = tracer("{}", &host);
    let (mut h, req) = run(&mut t, host);
    assert!(req.is_some());
    let (cluster, headers, _) = &h.dispatched[0];
    assert_eq!(cluster, "meshtrace-collector");
    assert!(headers.contains(&(":path".into(), "/v1/traces".into())));
    assert!(headers.contains(&(":authority".into(), "meshtrace-collector".into())));
    t.export_completed(1, CallOutcome::Status(200), h.now);
    assert_eq!(t.buffer.counters.spans_exported, 1);
    let deltas = t.counter_deltas();
    assert!(deltas.contains(&("meshtrace.spans_exported", 1)));
    assert!(t.counter_deltas().is_empty(), "deltas are reported once");
    // The host refuses the call (no such cluster): the span stays buffered.
    h.refuse_dispatch = true;
    let mut s = Stream::on_request_headers(&mut t, &mut h, true);
    s.on_response_headers(&t, &mut h, false);
    s.on_log(&mut t, &h);
    h.now += 2_000_000_000;
    t.flush(&mut h);
    assert_eq!(t.buffer.buffered_spans(), 1);
    assert_eq!(t.buffer.counters.export_failures, 1);
}

#[test]
fn force_header_and_debug_sample_at_zero() {
    let cfg = r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0}}}"#;
    let host = node()
        .with_request("GET", "/")
        .with_header("x-meshtrace-force-trace", "1");
    let mut t = tracer(cfg, &host);
    let (_, req) = run(&mut t, host);
    assert_eq!(
        attr(only_span(req.as_ref().unwrap()), "sampler.type"),
        s("const")
    );
    let host = node().with_request("GET", "/").with_header("b3", "d");
    let mut t = tracer(cfg, &host);
    let (h, req) = run(&mut t, host);
    assert!(req.is_some());
    assert!(h.header("b3").unwrap().ends_with("-d"), "debug propagated");
}

/// Issue 14 item 5: Jaeger clients' `jaeger-debug-id` forces sampling, is recorded
/// as the span's `jaeger-debug-id` tag (Jaeger's UI and search find it) and sends
/// a debug decision downstream; an empty one does nothing.
#[test]
fn jaeger_debug_id_forces_sampling_and_is_recorded() {
    let cfg = r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0}},
                  "propagation":{"inject":["w3c","jaeger"]}}"#;
    let host = node()
        .with_request("GET", "/")
        .with_header("jaeger-debug-id", "ticket-4711");
    let mut t = tracer(cfg, &host);
    let (h, req) = run(&mut t, host);
    let span = only_span(req.as_ref().expect("sampled at p = 0")).clone();
    assert_eq!(attr(&span, "jaeger-debug-id"), s("ticket-4711"));
    assert_eq!(attr(&span, "sampler.type"), s("const"));
    assert!(
        h.header("traceparent").unwrap().ends_with("-03"),
        "sampled downstream"
    );
    assert!(
        h.header("uber-trace-id").unwrap().ends_with(":3"),
        "Jaeger's debug flag"
    );

    // Behind a sampled-out parent too (a curl through an ingress that decided no).
    let host = node()
        .with_request("GET", "/")
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .with_header("jaeger-debug-id", "x");
    let mut t = tracer(cfg, &host);
    let (_, req) = run(&mut t, host);
    assert!(req.is_some());

    let host = node()
        .with_request("GET", "/")
        .with_header("jaeger-debug-id", "");
    let mut t = tracer(cfg, &host);
    let (_, req) = run(&mut t, host);
    assert!(req.is_none(), "an empty debug id does not force");
}

/// Issue 14 item 4, W3C Trace Context Level 2 §4 (`traceresponse`): a request
/// that arrived without a context (from outside the mesh) is answered with the
/// trace id, this hop's span id and the sampled flag; a mesh-internal hop (a
/// context arrived) is not, unless configured `always`; `never` turns it off.
#[test]
fn traceresponse_for_requests_from_outside_the_mesh() {
    for (p, traceparent, mode, expect) in [
        (1.0, None, "", true),
        (0.0, None, "", true),
        (
            1.0,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "",
            false,
        ),
        (
            1.0,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            r#","traceresponse":"always""#,
            true,
        ),
        (1.0, None, r#","traceresponse":"never""#, false),
    ] {
        let cfg = format!(
            r#"{{"sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}},
                "propagation":{{"inject":["w3c"]{mode}}}}}"#
        );
        let mut host = node().with_request("GET", "/");
        if let Some(tp) = traceparent {
            host = host.with_header("traceparent", tp);
        }
        let mut t = tracer(&cfg, &host);
        let (h, req) = run(&mut t, host);
        let got: Vec<&(String, String)> = h
            .response_edits
            .iter()
            .filter(|(n, _)| n == "traceresponse")
            .collect();
        assert_eq!(
            got.len(),
            usize::from(expect),
            "p={p} {traceparent:?} {mode}: {:?}",
            h.response_edits
        );
        if let Some((_, v)) = got.first() {
            let parsed = crate::propagation::w3c::parse_traceparent(v.as_bytes()).unwrap();
            let sent = h.header("traceparent").unwrap();
            assert_eq!(
                &v[..52],
                &sent[..52],
                "the trace id and this hop's span id: {v}"
            );
            assert_eq!(parsed.flags & 1, u8::from(p > 0.5), "{v}");
            if let Some(req) = &req {
                assert_eq!(hex(&only_span(req).span_id), &v[36..52]);
            }
        }
    }
}

#[test]
fn direction_from_istio_cluster_names_without_listener_direction() {
    for (cluster, kind) in [
        ("inbound|8080||", 2),
        ("outbound|80||reviews.shop.svc.cluster.local", 3),
    ] {
        // No xds.listener_direction property: the cluster name decides.
        let host = node()
            .with_request("POST", "/upload")
            .with_header("content-length", "11")
            .with_property("xds.cluster_name", cluster.as_bytes())
            .with_response_header(":status", "201")
            .with_response_header("content-length", "7");
        let mut t = tracer("{}", &host);
        let mut h = host;
        let mut st = Stream::on_request_headers(&mut t, &mut h, false);
        st.on_response_headers(&t, &mut h, false);
        st.on_log(&mut t, &h);
        h.now += 2_000_000_000;
        t.flush(&mut h);
        let req = ExportTraceServiceRequest::decode(h.dispatched[0].2.as_slice()).unwrap();
        let span = only_span(&req);
        assert_eq!(span.kind, kind, "{cluster}");
        assert_eq!(
            attr(span, "http.request.body.size"),
            Some(Any::IntValue(11)),
            "from content-length"
        );
        assert_eq!(
            attr(span, "http.response.body.size"),
            Some(Any::IntValue(7))
        );
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        ":method",
        ":path",
        ":authority",
        ":scheme",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
        "uber-trace-id",
        "x-meshtrace-force-trace",
        "jaeger-debug-id",
        "content-length",
        "user-agent",
        "x-request-id",
        "x-user",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any header bytes through a whole stream: no panic, valid OTLP out,
        /// and a valid traceparent always goes upstream.
        #[test]
        fn arbitrary_headers_never_panic(
            headers in proptest::collection::vec((0usize..17, proptest::collection::vec(any::<u8>(), 0..80)), 0..12),
            response in proptest::collection::vec((0usize..3, proptest::collection::vec(any::<u8>(), 0..20)), 0..4),
            end_of_stream in any::<bool>(),
        ) {
            let mut host = node();
            for (n, v) in &headers {
                host.request_headers.push((NAMES[*n].to_string(), v.clone()));
            }
            for (n, v) in &response {
                host.response_headers.push(([":status", "grpc-status", "content-length"][*n].to_string(), v.clone()));
            }
            let mut t = tracer(r#"{"custom_tags":[{"tag":"u","request_header":"x-user"}]}"#, &host);
            let mut s = Stream::on_request_headers(&mut t, &mut host, end_of_stream);
            s.on_response_headers(&t, &mut host, false);
            s.on_log(&mut t, &host);
            host.now += 2_000_000_000;
            t.flush(&mut host);
            for (_, _, body) in &host.dispatched {
                prop_assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_ok());
            }
            let tp = host.header("traceparent").unwrap_or_default();
            prop_assert!(crate::propagation::w3c::parse_traceparent(tp.as_bytes()).is_ok(), "{}", tp);
        }
    }
}

#[test]
fn unsampled_parent_passes_headers_through_unchanged() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let host = node()
        .with_request("GET", "/")
        .with_header("traceparent", tp);
    let mut t = tracer("{}", &host);
    let (h, req) = run(&mut t, host);
    assert!(req.is_none());
    assert_eq!(
        h.header("traceparent").as_deref(),
        Some(tp),
        "forwarded as is"
    );
    assert!(h.edits.is_empty(), "no host call: {:?}", h.edits);

    // Sampled upstream: our span becomes the parent.
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let host = node()
        .with_request("GET", "/")
        .with_header("traceparent", sampled);
    let mut t = tracer("{}", &host);
    let (h, req) = run(&mut t, host);
    let span = only_span(req.as_ref().unwrap()).clone();
    assert!(h
        .header("traceparent")
        .unwrap()
        .contains(&hex(&span.span_id)));
}

/// Issue 14 item 3: whether an unsampled hop re-parents must not depend on which
/// headers the app forwarded. An app forwarding only W3C's headers and one
/// forwarding Istio's whole list (W3C, B3 multi, x-request-id, …) send the same
/// parent id on, in every format the filter writes, for every inject setting.
#[test]
fn an_unsampled_hop_keeps_the_parent_id_whatever_the_app_forwarded() {
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{parent}-00");
    let w3c_only: Vec<(&str, String)> = vec![("traceparent", tp.clone())];
    let istio_list: Vec<(&str, String)> = vec![
        ("traceparent", tp.clone()),
        ("tracestate", "congo=t61rcWkgMzE".into()),
        ("x-request-id", "5f1b0c3e-1".into()),
        ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ("x-b3-spanid", parent.into()),
        ("x-b3-parentspanid", "1111111111111111".into()),
        ("x-b3-sampled", "0".into()),
        ("x-ot-span-context", "x".into()),
    ];
    for inject in [
        r#"["w3c"]"#,
        r#"["w3c","b3"]"#,
        r#"["w3c","b3","b3_single","jaeger"]"#,
    ] {
        for (app, forwarded) in [("W3C only", &w3c_only), ("Istio's list", &istio_list)] {
            let mut host = node().with_request("GET", "/");
            for (k, v) in forwarded {
                host = host.with_header(k, v);
            }
            let mut t = tracer(
                &format!(r#"{{"propagation":{{"inject":{inject}}}}}"#),
                &host,
            );
            let (h, req) = run(&mut t, host);
            assert!(req.is_none(), "{inject}, {app}: unsampled");
            let ids = [
                h.header("traceparent").map(|v| v[36..52].to_string()),
                h.header("x-b3-spanid"),
                h.header("b3").map(|v| v[33..49].to_string()),
                h.header("uber-trace-id")
                    .map(|v| v.split(':').nth(1).unwrap_or_default().to_string()),
            ];
            for id in ids.into_iter().flatten() {
                assert_eq!(id, parent, "{inject}, {app}: {:?}", h.edits);
            }
            assert_eq!(
                h.header("traceparent").as_deref(),
                Some(tp.as_str()),
                "{inject}, {app}"
            );
        }
    }
}

/// Issue 14 item 2, W3C Trace Context Level 2 §3.2.2.5.3 ("Other Flags": MUST be
/// set to zero) and §3.2.4 (a higher version is read as 00 and written as 00).
#[test]
fn unknown_trace_flags_and_versions_never_go_on() {
    let ids = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    for (incoming, sampled, flags_out) in [
        (format!("00-{ids}-04"), false, "00"),
        (format!("00-{ids}-06"), false, "02"),
        (format!("00-{ids}-05"), true, "01"),
        (format!("00-{ids}-09"), true, "01"),
        (format!("00-{ids}-ff"), true, "03"),
        (format!("cc-{ids}-ff-more-fields"), true, "03"),
        (format!("cc-{ids}-00"), false, "00"),
    ] {
        let host = node()
            .with_request("GET", "/")
            .with_header("traceparent", &incoming);
        let mut t = tracer("{}", &host);
        let (h, req) = run(&mut t, host);
        let out = h.header("traceparent").unwrap_or_default();
        assert_eq!(req.is_some(), sampled, "{incoming}");
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{incoming} → {out}"
        );
        assert!(
            out.ends_with(&format!("-{flags_out}")),
            "{incoming} → {out}"
        );
        assert_eq!(out.len(), 55, "{incoming} → {out}");
        if !sampled {
            assert_eq!(
                &out[36..52],
                "00f067aa0ba902b7",
                "{incoming}: no span, the parent's id"
            );
        }
    }
}

#[test]
fn remote_strategy_polled_applied_and_kept_when_the_collector_fails() {
    let host = node();
    let mut t = tracer(
        r#"{"sampling":{"remote":{"poll_interval_ms":1000}}}"#,
        &host,
    );
    let mut h = host;
    let sampled = |t: &mut Tracer, h: &mut FakeHost| {
        let mut req = h.clone().with_request("GET", "/x");
        Stream::on_request_headers(t, &mut req, true).is_sampled()
    };
    assert!(
        sampled(&mut t, &mut h),
        "static config (p=1) until the first answer"
    );

    t.poll_strategy(&mut h);
    let (cluster, headers, _) = h.dispatched.last().unwrap().clone();
    assert_eq!(cluster, "meshtrace-sampling");
    assert!(headers.contains(&(":path".into(), "/api/sampling?service=checkout".into())));
    assert!(headers.contains(&(":method".into(), "GET".into())));
    let token = h.dispatched.len() as u32;
    assert!(t.is_strategy_call(token));
    t.poll_strategy(&mut h);
    assert_eq!(
        h.dispatched.len(),
        token as usize,
        "one poll in flight at a time"
    );

    t.strategy_response(
        Some(200),
        br#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0}}"#,
        h.now,
    )
    .unwrap();
    assert!(!sampled(&mut t, &mut h), "the remote strategy applies");

    // The collector fails: the last strategy stays.
    h.now += 2_000_000_000;
    t.poll_strategy(&mut h);
    assert!(t.strategy_response(None, b"", h.now).is_err());
    assert!(t.strategy_response(Some(503), b"", h.now).is_err());
    assert!(t.strategy_response(Some(200), b"{garbage", h.now).is_err());
    assert!(!sampled(&mut t, &mut h), "still the last known strategy");
    assert_eq!(t.buffer.counters.strategy_updates, 1);
    assert_eq!(t.buffer.counters.strategy_failures, 3);
}

/// One request through a tracer; (sampled, traceparent out, tracestate out).
fn hop(
    t: &mut Tracer,
    host: &FakeHost,
    headers: &[(&str, &str)],
) -> (bool, String, Option<String>) {
    let mut h = host.clone().with_request("GET", "/pay");
    for (k, v) in headers {
        h = h.with_header(k, v);
    }
    let sampled = Stream::on_request_headers(t, &mut h, true).is_sampled();
    (
        sampled,
        h.header("traceparent").unwrap_or_default(),
        h.header("tracestate"),
    )
}

#[test]
fn probabilistic_decisions_write_the_otel_threshold() {
    let host = node();
    let mut t = tracer(
        r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0.5}}}"#,
        &host,
    );
    let mut seen = 0;
    for _ in 0..200 {
        let (sampled, tp, ts) = hop(&mut t, &host, &[]);
        if sampled {
            seen += 1;
            assert_eq!(ts.as_deref(), Some("ot=th:8"), "p = 0.5 is threshold 0x8…");
            assert!(tp.ends_with("-03"), "sampled and random: {tp}");
        } else {
            assert_eq!(ts, None, "nothing written for a trace not sampled");
        }
    }
    assert!(seen > 50 && seen < 150, "{seen}");
    // A parent decision keeps the tracestate as it came (other vendors' members too).
    let (sampled, _, ts) = hop(
        &mut t,
        &host,
        &[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
            ),
            ("tracestate", "ot=th:c,vendor=x"),
        ],
    );
    assert!(sampled);
    assert_eq!(
        ts.as_deref(),
        Some("ot=th:c,vendor=x"),
        "header left as it came"
    );
}

#[test]
fn consistent_downstream_keeps_a_subset_of_what_upstream_kept() {
    let host = node();
    let mut up = tracer(
        r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0.5}}}"#,
        &host,
    );
    let mut down = tracer(
        r#"{"sampling":{"consistent_downstream":true,"default_strategy":{"type":"probabilistic","param":0.1}}}"#,
        &host,
    );
    let mut parent_only = tracer(
        r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0.1}}}"#,
        &host,
    );
    let (mut kept_up, mut kept_down) = (0, 0);
    for _ in 0..2000 {
        let (s_up, tp, ts) = hop(&mut up, &host, &[]);
        let mut fwd = vec![("traceparent", tp.as_str())];
        if let Some(ts) = &ts {
            fwd.push(("tracestate", ts.as_str()));
        }
        let (s_down, tp2, ts2) = hop(&mut down, &host, &fwd);
        assert!(!s_down || s_up, "downstream kept a trace upstream dropped");
        if s_up {
            kept_up += 1;
            // Honouring the parent (the default) keeps every one upstream kept.
            assert!(hop(&mut parent_only, &host, &fwd).0);
        }
        if s_down {
            kept_down += 1;
            assert_eq!(
                ts2.as_deref(),
                Some("ot=th:e6666666666668"),
                "raised threshold written"
            );
            assert!(tp2.ends_with("-03"));
        } else if s_up {
            assert!(
                tp2.ends_with("-02"),
                "dropped here: flag off downstream: {tp2}"
            );
            assert_eq!(ts2, None, "th removed with the sampled flag: {ts2:?}");
        }
    }
    let ratio = kept_down as f64 / 2000.0;
    assert!((900..1100).contains(&kept_up), "{kept_up}");
    assert!(
        (ratio - 0.1).abs() < 5.0 * (0.1f64 * 0.9 / 2000.0).sqrt(),
        "{ratio}"
    );
    assert_eq!(down.buffer.counters.spans_sampled, kept_down);

    // Without a threshold from upstream (not an OTel consistent sampler), the parent wins.
    let (s, _, _) = hop(
        &mut down,
        &host,
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
        )],
    );
    assert!(s, "no ot=th: parent honoured");
    // Explicit randomness (rv) is used instead of the trace id's bits.
    let (s, _, _) = hop(
        &mut down,
        &host,
        &[
            (
                "traceparent",
                "00-0af7651916cd43dd84ffffffffffffff-b7ad6b7169203331-03",
            ),
            ("tracestate", "ot=th:8;rv:00000000000001"),
        ],
    );
    assert!(
        !s,
        "rv 1 is below the 0.1 threshold although the trace id's bits are high"
    );
}

/// Issue 24 item 5: the response context in each form — `traceresponse`,
/// the Level 2 draft's `Server-Timing: traceparent;desc="…"` (w3c/trace-context#560),
/// or both — with the same value (`traceresponse` alone by default: measured dear); and for a browser's
/// cross-origin request (`origin`) answered with CORS, `traceresponse` is
/// exposed (`Access-Control-Expose-Headers`) unless it already is.
#[test]
fn the_response_context_as_traceresponse_server_timing_or_both() {
    for p in [0.0, 1.0] {
        for (form, tr, st) in [
            ("", true, false),
            (r#","response_header":"both""#, true, true),
            (r#","response_header":"traceresponse""#, true, false),
            (r#","response_header":"server-timing""#, false, true),
        ] {
            let cfg = format!(
                r#"{{"sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}},
                    "propagation":{{"inject":["w3c"]{form}}}}}"#
            );
            let mut t = tracer(&cfg, &node());
            let host = FakeHost::new()
                .with_request("GET", "/")
                .with_response_header(":status", "200")
                .with_response_header("server-timing", "app;dur=12");
            let (h, _) = run(&mut t, host);
            let sent = h.header("traceparent").unwrap();
            let traceresponse: Vec<&String> = h
                .response_edits
                .iter()
                .filter(|(n, _)| n == "traceresponse")
                .map(|(_, v)| v)
                .collect();
            assert_eq!(traceresponse.len(), usize::from(tr), "p={p} {form}");
            let timing: Vec<&String> = h
                .appended
                .iter()
                .filter(|(n, _)| n == "server-timing")
                .map(|(_, v)| v)
                .collect();
            assert_eq!(
                timing.len(),
                usize::from(st),
                "p={p} {form}: {:?}",
                h.appended
            );
            if let Some(v) = timing.first() {
                // Beside the app's entry, this hop's context, as the traceresponse says it.
                assert!(v.starts_with("traceparent;desc=\"00-"), "{v}");
                assert!(v.ends_with('"'), "{v}");
                let value = &v["traceparent;desc=\"".len()..v.len() - 1];
                crate::propagation::w3c::parse_traceparent(value.as_bytes()).unwrap();
                assert_eq!(&value[..52], &sent[..52], "{v}");
                if let Some(tr) = traceresponse.first() {
                    assert_eq!(value, tr.as_str());
                }
            }
        }
    }
    // CORS: a browser's cross-origin request, answered with CORS.
    let cors = |p: f64, expose: Option<&str>, origin: bool| {
        let cfg = format!(
            r#"{{"sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}},
                "propagation":{{"response_header":"both"}}}}"#
        );
        let mut t = tracer(&cfg, &node());
        let mut host = FakeHost::new()
            .with_request("GET", "/")
            .with_response_header(":status", "200")
            .with_response_header("access-control-allow-origin", "https://shop.example");
        if origin {
            host = host.with_header("origin", "https://shop.example");
        }
        if let Some(e) = expose {
            host = host.with_response_header("access-control-expose-headers", e);
        }
        let (h, _) = run(&mut t, host);
        h.appended
            .iter()
            .filter(|(n, _)| n == "access-control-expose-headers")
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    for p in [0.0, 1.0] {
        assert_eq!(cors(p, None, true), ["traceresponse"], "p={p}");
        assert_eq!(
            cors(p, Some("x-a, Traceresponse"), true),
            Vec::<String>::new()
        );
        assert_eq!(cors(p, Some("*"), true), Vec::<String>::new());
        assert_eq!(cors(p, Some("x-a"), true), ["traceresponse"]);
    }
    // Without `origin`, an unsampled response is not read (no CORS to serve).
    assert_eq!(cors(0.0, None, false), Vec::<String>::new());
    let bad = Config::from_json(br#"{"propagation":{"response_header":"header"}}"#).unwrap_err();
    assert!(
        bad.to_string().contains("propagation.response_header"),
        "{bad}"
    );
}

/// Envoy adds a header for ~3,000 instructions less than it replaces one (no
/// lookup and removal first): headers the request or response did not carry
/// are added, the others set (the fake host fails a test that adds a header
/// the map holds).
#[test]
fn absent_headers_are_added_present_ones_set() {
    let cfg = |p: f64| {
        format!(r#"{{"sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#)
    };
    // From outside the mesh, unsampled: traceparent added; the response map is
    // not read, so traceresponse is set.
    let mut t = tracer(&cfg(0.0), &node());
    let (h, _) = run(&mut t, FakeHost::new().with_request("GET", "/a"));
    assert_eq!(h.added, ["traceparent"]);
    assert_eq!(h.response_edits.len(), 1);
    // Sampled: traceparent and tracestate (ot=th:0) added, traceresponse added
    // after the response map showed none.
    let mut t = tracer(&cfg(1.0), &node());
    let (h, _) = run(
        &mut t,
        FakeHost::new()
            .with_request("GET", "/a")
            .with_response_header(":status", "200"),
    );
    assert_eq!(h.added, ["traceparent", "tracestate", "traceresponse"]);
    // The app answered with its own traceresponse: set, not added.
    let (h, _) = run(
        &mut t,
        FakeHost::new()
            .with_request("GET", "/a")
            .with_response_header(":status", "200")
            .with_response_header("traceresponse", "00-app"),
    );
    assert_eq!(h.added, ["traceparent", "tracestate"]);
    assert_eq!(
        h.response_edits.last().map(|(n, _)| n.as_str()),
        Some("traceresponse")
    );
    // A traceparent that must be rewritten (another version) is set.
    let (h, _) = run(
        &mut t,
        FakeHost::new()
            .with_request("GET", "/a")
            .with_header(
                "traceparent",
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_response_header(":status", "200"),
    );
    assert!(
        !h.added.contains(&"traceparent".to_string()),
        "{:?}",
        h.added
    );
    assert!(h
        .header("traceparent")
        .is_some_and(|v| v.starts_with("00-4bf92f")));
}

/// Issue 24 item 6: one `tracestate` rule for every hop. The W3C test
/// suite's `tracestate` cases (test/test.py, STRICT_LEVEL 2), each with an
/// unsampled parent (`-00`) through an unsampled hop that leaves that
/// `traceparent` as it came: a valid list goes on (joined, OWS dropped), an
/// invalid one is discarded whole. Three of the suite's vendor-format and
/// key-length cases were written for Level 1's `tenant@system` keys, which
/// Level 2 made valid (`foo@=1`, `foo@@bar=1`, `foo@bar@baz=1`, a 242-character
/// tenant, a 15-character system): those lists go on, as other vendors' valid keys.
#[test]
fn the_w3c_suites_tracestate_cases_at_strict_2_with_unsampled_parents() {
    let tp = "00-12345678901234567890123456789012-1234567890123456-00";
    let cfg = r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0}},
        "propagation":{"inject":["w3c"]}}"#;
    // The tracestate the next hop gets: its members (key, value), in order.
    let through = |headers: &[&str]| -> Vec<(String, String)> {
        let mut t = tracer(cfg, &node());
        let mut host = FakeHost::new()
            .with_request("GET", "/")
            .with_header("traceparent", tp);
        for h in headers {
            host = host.with_header("tracestate", h);
        }
        let (h, req) = run(&mut t, host);
        assert!(req.is_none(), "unsampled");
        assert_eq!(
            h.header("traceparent").as_deref(),
            Some(tp),
            "left as it came"
        );
        let sent: Vec<String> = h
            .request_headers
            .iter()
            .filter(|(n, _)| n == "tracestate")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        sent.iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                let (k, v) = m.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let has = |members: &[(String, String)], k: &str, v: &str| {
        members.iter().any(|(a, b)| a == k && b == v)
    };
    let keys =
        |members: &[(String, String)]| members.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    // test_tracestate_empty_header
    assert!(through(&[""]).is_empty());
    assert!(has(&through(&["foo=1", ""]), "foo", "1"));
    assert!(has(&through(&["", "foo=1"]), "foo", "1"));
    // test_tracestate_multiple_headers_different_keys
    assert_eq!(
        keys(&through(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"])),
        ["foo", "bar", "rojo", "congo", "baz"]
    );
    // test_tracestate_duplicated_keys (STRICT 2)
    for h in [
        &["foo=1,foo=1"][..],
        &["foo=1,foo=2"],
        &["foo=1", "foo=1"],
        &["foo=1", "foo=2"],
    ] {
        assert!(through(h).is_empty(), "{h:?}");
    }
    // test_tracestate_all_allowed_characters
    let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let value: String = (0x20u8..=0x2b)
        .chain(0x2d..=0x3c)
        .chain(0x3e..=0x7e)
        .map(char::from)
        .collect();
    for k in [key.to_string(), format!("{key}@a-z0-9_-*/")] {
        assert!(has(&through(&[&format!("{k}={value}")]), &k, &value), "{k}");
    }
    // test_tracestate_ows_handling
    for h in [
        "foo=1 \t , \t bar=2, \t baz=3",
        "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
    ] {
        let m = through(&[h]);
        assert!(
            has(&m, "foo", "1") && has(&m, "bar", "2") && has(&m, "baz", "3"),
            "{h:?}: {m:?}"
        );
    }
    for h in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
        assert!(has(&through(&[h]), "foo", "1"), "{h:?}");
    }
    // test_tracestate_key_illegal_characters (STRICT 2)
    for h in ["foo =1", "FOO=1", "foo.bar=1"] {
        assert!(through(&[h]).is_empty(), "{h:?}");
    }
    // test_tracestate_key_illegal_vendor_format (STRICT 2): `@foo` is invalid
    // under Level 2 too; the other three are Level 2 keys.
    assert!(through(&["@foo=1,bar=2"]).is_empty());
    for h in ["foo@=1,bar=2", "foo@@bar=1,bar=2", "foo@bar@baz=1,bar=2"] {
        assert!(has(&through(&[h]), "bar", "2"), "{h:?}");
    }
    // test_tracestate_member_count_limit (STRICT 2)
    let group = |from: usize, to: usize| {
        (from..=to)
            .map(|i| format!("bar{i:02}={i:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (a, b, c) = (group(1, 10), group(11, 20), group(21, 30));
    let m = through(&[&a, &b, &c, &group(31, 32)]);
    assert_eq!(m.len(), 32);
    assert!(has(&m, "bar01", "01"));
    assert!(
        through(&[&a, &b, &c, &group(31, 33)]).is_empty(),
        "33 members"
    );
    // test_tracestate_key_length_limit (STRICT 2)
    assert!(has(
        &through(&["foo=1", &format!("{}=1", "z".repeat(256))]),
        "foo",
        "1"
    ));
    assert!(through(&["foo=1", &format!("{}=1", "z".repeat(257))]).is_empty());
    let tenant = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
    assert!(has(&through(&["foo=1", &tenant]), "foo", "1"));
    for level_2 in [
        format!("{}@v=1", "t".repeat(242)),
        format!("t@{}=1", "v".repeat(15)),
    ] {
        assert!(has(&through(&["foo=1", &level_2]), "foo", "1"), "{level_2}");
    }
    // test_tracestate_value_illegal_characters (STRICT 2)
    assert!(through(&["foo=bar=baz"]).is_empty());
    assert!(through(&["foo=,bar=3"]).is_empty());
    // Not in the suite: a valid list past 512 bytes is shortened by this hop
    // too, though it leaves traceparent alone (long members first).
    let long = format!(
        "big={},{}",
        "x".repeat(200),
        group(1, 30).replace("=", "=yyyyyyyyyy")
    );
    let m = through(&[&long]);
    let size = m.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() + m.len() - 1;
    assert!(size <= 512 && !m.is_empty(), "{size}");
    assert!(!m.iter().any(|(k, _)| k == "big"), "long members go first");
}

#[test]
fn a_host_with_cheap_maps_looks_traceresponse_up_without_reading_the_response_map() {
    let never = r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0.0}}}"#;
    let mut t = tracer(never, &node());
    let cheap = |h: FakeHost| FakeHost {
        cheap_maps: true,
        ..h
    };
    // Unsampled, no app `traceresponse`: added, the response map not read.
    let (h, _) = run(&mut t, cheap(FakeHost::new().with_request("GET", "/a")));
    assert_eq!(h.added, ["traceparent", "traceresponse"]);
    assert_eq!(h.response_map_reads.get(), 0);
    // The app answered with its own: replaced, not added.
    let (h, _) = run(
        &mut t,
        cheap(
            FakeHost::new()
                .with_request("GET", "/a")
                .with_response_header("traceresponse", "00-app"),
        ),
    );
    assert_eq!(h.added, ["traceparent"]);
    assert_eq!(h.response_edits.len(), 1);
    assert_eq!(h.response_map_reads.get(), 0);
    // A browser's cross-origin request: the whole map is read for CORS.
    let (h, _) = run(
        &mut t,
        cheap(
            FakeHost::new()
                .with_request("GET", "/a")
                .with_header("origin", "https://page.example")
                .with_response_header("access-control-allow-origin", "*"),
        ),
    );
    assert_eq!(h.response_map_reads.get(), 1);
    assert_eq!(
        h.appended,
        [(
            "access-control-expose-headers".to_string(),
            "traceresponse".to_string()
        )]
    );
}
