use super::*;
use proptest::prelude::*;
use serde_json::json;

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(s: &Span, key: &str) -> Option<String> {
    match attr(s, key)? {
        any_value::Value::StringValue(v) => Some(v.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn service(rs: &ResourceSpans) -> String {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Zipkin's own example shape: a client span and the server's shared half,
/// then a child of the server on another service.
fn fixture() -> serde_json::Value {
    json!([
        {
            "traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get /api",
            "kind": "CLIENT", "timestamp": 1_700_000_000_000_000u64, "duration": 207_000,
            "localEndpoint": {"serviceName": "frontend", "ipv4": "172.17.0.13", "port": 8080},
            "remoteEndpoint": {"serviceName": "backend", "ipv4": "172.17.0.9", "port": 9000},
            "annotations": [{"timestamp": 1_700_000_000_001_000u64, "value": "ws"}],
            "tags": {"http.method": "GET", "http.path": "/api", "otel.library.name": "brave", "otel.library.version": "6.0"}
        },
        {
            "traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get /api",
            "kind": "SERVER", "shared": true, "timestamp": 1_700_000_000_010_000u64, "duration": 190_000,
            "localEndpoint": {"serviceName": "backend", "ipv6": "2001:db8::c001"},
            "tags": {"error": "connection reset", "http.status_code": "500"}
        },
        {
            "traceId": "5af7183fb1d4cf5f", "parentId": "6b221d5bc9e6496c", "id": "352bff9a74ca9ad2",
            "name": "query", "timestamp": 1_700_000_000_020_000u64, "duration": 1_500,
            "localEndpoint": {"serviceName": "backend"},
            "tags": {"otel.status_code": "OK", "db.system": "postgresql", "count": 3}
        }
    ])
}

#[test]
fn zipkin_v2_json_becomes_otlp_by_the_collectors_rules() {
    let req = from_json_v2(fixture().to_string().as_bytes()).unwrap();
    // One resource per local service, in order of first appearance.
    let services: Vec<String> = req.resource_spans.iter().map(service).collect();
    assert_eq!(services, ["frontend", "backend"]);
    let fe = &req.resource_spans[0];
    assert_eq!(fe.scope_spans.len(), 1);
    let scope = fe.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("brave", "6.0")
    );
    let client = &fe.scope_spans[0].spans[0];
    // A 64-bit trace id is the low half of the 128-bit one.
    let mut tid = [0u8; 16];
    tid[8..].copy_from_slice(&[0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f]);
    assert_eq!(client.trace_id, tid);
    assert_eq!(
        client.span_id,
        [0x6b, 0x22, 0x1d, 0x5b, 0xc9, 0xe6, 0x49, 0x6c]
    );
    assert!(client.parent_span_id.is_empty());
    assert_eq!(client.kind, span::SpanKind::Client as i32);
    assert_eq!(client.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(
        client.end_time_unix_nano - client.start_time_unix_nano,
        207_000_000
    );
    assert_eq!(text(client, "http.method").as_deref(), Some("GET"));
    assert_eq!(
        text(client, "otel.library.name"),
        None,
        "it names the scope"
    );
    assert_eq!(
        text(client, "network.local.address").as_deref(),
        Some("172.17.0.13")
    );
    assert_eq!(text(client, "network.local.port").as_deref(), Some("8080"));
    assert_eq!(text(client, "peer.service").as_deref(), Some("backend"));
    assert_eq!(
        text(client, "network.peer.address").as_deref(),
        Some("172.17.0.9")
    );
    assert_eq!(text(client, "network.peer.port").as_deref(), Some("9000"));
    assert_eq!(client.events.len(), 1);
    assert_eq!(client.events[0].name, "ws");
    assert_eq!(client.events[0].time_unix_nano, 1_700_000_000_001_000_000);
    assert_eq!(client.status, None);

    let be = &req.resource_spans[1].scope_spans;
    assert_eq!(be.len(), 1, "no scope named: one unnamed scope");
    assert_eq!(be[0].scope, None);
    let (server, query) = (&be[0].spans[0], &be[0].spans[1]);
    // The shared server half keeps the client's id; the store keeps both.
    assert_eq!(server.span_id, client.span_id);
    assert_eq!(server.kind, span::SpanKind::Server as i32);
    assert_eq!(
        text(server, "network.local.address").as_deref(),
        Some("2001:db8::c001")
    );
    let st = server.status.as_ref().unwrap();
    assert_eq!(st.code, status::StatusCode::Error as i32);
    assert_eq!(st.message, "connection reset");
    assert_eq!(
        text(server, "error"),
        None,
        "the error tag becomes the status"
    );
    assert_eq!(query.parent_span_id, client.span_id);
    assert_eq!(query.kind, span::SpanKind::Unspecified as i32);
    assert_eq!(
        query.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Ok as i32)
    );
    assert_eq!(
        text(query, "count").as_deref(),
        Some("3"),
        "a number tag as text"
    );
    assert_eq!(text(query, "otel.status_code"), None);
}

#[test]
fn zipkin_protobuf_gives_what_the_same_spans_in_json_give() {
    let json = from_json_v2(fixture().to_string().as_bytes()).unwrap();
    let ep = |name: &str, v4: Vec<u8>, v6: Vec<u8>, port| proto::Endpoint {
        service_name: name.into(),
        ipv4: v4,
        ipv6: v6,
        port,
    };
    let tags = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let list = proto::ListOfSpans {
        spans: vec![
            proto::Span {
                trace_id: vec![0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f],
                id: vec![0x6b, 0x22, 0x1d, 0x5b, 0xc9, 0xe6, 0x49, 0x6c],
                kind: 1,
                name: "get /api".into(),
                timestamp: 1_700_000_000_000_000,
                duration: 207_000,
                local_endpoint: Some(ep("frontend", vec![172, 17, 0, 13], vec![], 8080)),
                remote_endpoint: Some(ep("backend", vec![172, 17, 0, 9], vec![], 9000)),
                annotations: vec![proto::Annotation {
                    timestamp: 1_700_000_000_001_000,
                    value: "ws".into(),
                }],
                tags: tags(&[
                    ("http.method", "GET"),
                    ("http.path", "/api"),
                    ("otel.library.name", "brave"),
                    ("otel.library.version", "6.0"),
                ]),
                ..Default::default()
            },
            proto::Span {
                trace_id: vec![0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f],
                id: vec![0x6b, 0x22, 0x1d, 0x5b, 0xc9, 0xe6, 0x49, 0x6c],
                kind: 2,
                shared: true,
                name: "get /api".into(),
                timestamp: 1_700_000_000_010_000,
                duration: 190_000,
                local_endpoint: Some(ep(
                    "backend",
                    vec![],
                    "2001:db8::c001"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                        .to_vec(),
                    0,
                )),
                tags: tags(&[("error", "connection reset"), ("http.status_code", "500")]),
                ..Default::default()
            },
            proto::Span {
                trace_id: vec![0x5a, 0xf7, 0x18, 0x3f, 0xb1, 0xd4, 0xcf, 0x5f],
                parent_id: vec![0x6b, 0x22, 0x1d, 0x5b, 0xc9, 0xe6, 0x49, 0x6c],
                id: vec![0x35, 0x2b, 0xff, 0x9a, 0x74, 0xca, 0x9a, 0xd2],
                name: "query".into(),
                timestamp: 1_700_000_000_020_000,
                duration: 1_500,
                local_endpoint: Some(ep("backend", vec![], vec![], 0)),
                tags: tags(&[
                    ("otel.status_code", "OK"),
                    ("db.system", "postgresql"),
                    ("count", "3"),
                ]),
                ..Default::default()
            },
        ],
    };
    let proto = from_proto_v2(&prost::Message::encode_to_vec(&list)).unwrap();
    assert_eq!(proto, json);
}

#[test]
fn what_is_not_a_zipkin_span_is_named() {
    let bad = |v: serde_json::Value| {
        from_json_v2(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    };
    let ok = json!({"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "timestamp": 1});
    assert!(from_json_v2(b"{")
        .unwrap_err()
        .to_string()
        .starts_with("not a Zipkin v2 JSON span list"));
    assert!(from_json_v2(b"{}")
        .unwrap_err()
        .to_string()
        .starts_with("not a Zipkin v2 JSON span list"));
    assert!(bad(json!([{"id": "6b221d5bc9e6496c"}])).contains("traceId"));
    let mut s = ok.clone();
    s["traceId"] = json!("5af7183fb1d4cf5");
    assert_eq!(
        bad(json!([ok, s])),
        "span 1: traceId: \"5af7183fb1d4cf5\" is not 16 or 32 hex digits"
    );
    let mut s = ok.clone();
    s["id"] = json!("zzzzzzzzzzzzzzzz");
    assert!(bad(json!([s])).starts_with("span 0: id:"));
    let mut s = ok.clone();
    s["parentId"] = json!("12");
    assert!(bad(json!([s])).starts_with("span 0: parentId:"));
    let mut s = ok.clone();
    s["kind"] = json!("LOCAL");
    assert!(bad(json!([s])).starts_with("span 0: kind:"));
    let mut s = ok.clone();
    s["timestamp"] = json!(-5);
    assert!(bad(json!([s])).starts_with("span 0: timestamp:"));
    let mut s = ok.clone();
    s["duration"] = json!(1e300);
    assert!(bad(json!([s])).starts_with("span 0: duration:"));
    let mut s = ok.clone();
    s["localEndpoint"] = json!({"serviceName": "a", "port": 70000});
    assert!(bad(json!([s])).starts_with("span 0: localEndpoint: port 70000"));
    let mut s = ok.clone();
    s["traceId"] = json!("é".repeat(16));
    assert!(
        bad(json!([s])).starts_with("span 0: traceId:"),
        "multi-byte text is refused, not split"
    );
    // Protobuf: lengths are checked.
    let list = proto::ListOfSpans {
        spans: vec![proto::Span {
            trace_id: vec![1; 12],
            id: vec![1; 8],
            ..Default::default()
        }],
    };
    assert_eq!(
        from_proto_v2(&prost::Message::encode_to_vec(&list))
            .unwrap_err()
            .to_string(),
        "span 0: trace_id: 12 bytes, not 8 or 16"
    );
    assert!(from_proto_v2(&[0xff, 0xff, 0xff])
        .unwrap_err()
        .to_string()
        .starts_with("not a Zipkin ListOfSpans"));
    // Empty lists are fine: nothing to store.
    assert_eq!(
        from_json_v2(b"[]").unwrap(),
        ExportTraceServiceRequest::default()
    );
}

#[test]
fn status_and_kind_follow_the_tags() {
    let one = |tags: serde_json::Value| {
        let req = from_json_v2(
            json!([{"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "tags": tags}])
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        req.resource_spans[0].scope_spans[0].spans[0].clone()
    };
    let s = one(json!({"error": "true"}));
    assert_eq!(
        s.status.as_ref().unwrap().code,
        status::StatusCode::Error as i32
    );
    assert_eq!(s.status.as_ref().unwrap().message, "");
    let s = one(json!({"error": "false"}));
    assert_eq!(s.status, None);
    let s =
        one(json!({"error": "", "otel.status_code": "ERROR", "otel.status_description": "boom"}));
    assert_eq!(s.status.as_ref().unwrap().message, "boom");
    let s = one(json!({"otel.status_code": "STATUS_CODE_UNSET"}));
    assert_eq!(
        s.status.as_ref().unwrap().code,
        status::StatusCode::Unset as i32
    );
    let s = one(json!({"span.kind": "internal"}));
    assert_eq!(s.kind, span::SpanKind::Internal as i32);
    assert_eq!(text(&s, "span.kind"), None);
    let s = one(json!({"w3c.tracestate": "rojo=00f067aa0ba902b7"}));
    assert_eq!(s.trace_state, "rojo=00f067aa0ba902b7");
    // No timestamp: start 0, which validation rejects with its reason.
    assert_eq!(s.start_time_unix_nano, 0);
    let window = crate::ingest::TimeWindow {
        max_age: std::time::Duration::from_secs(7 * 86_400),
        max_future: std::time::Duration::from_secs(3600),
    };
    assert!(window.refuse(0, 1_700_000_000_000_000).is_some());
    // A span naming itself as its parent is a root; no service is unknown_service.
    let req = from_json_v2(
        json!([{"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "parentId": "6b221d5bc9e6496c"}])
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert!(req.resource_spans[0].scope_spans[0].spans[0]
        .parent_span_id
        .is_empty());
    assert_eq!(service(&req.resource_spans[0]), "unknown_service");
}

#[test]
fn the_translation_bound_counts_spans_before_decoding() {
    // Two thousand empty spans in 4 KB of protobuf: each is counted.
    let list = proto::ListOfSpans {
        spans: vec![proto::Span::default(); 2000],
    };
    let body = prost::Message::encode_to_vec(&list);
    assert_eq!(body.len(), 4000);
    assert!(
        translation_bound(&body, true) > 2000 * 500,
        "{}",
        translation_bound(&body, true)
    );
    // Cut short or garbage: its text is all (it will not decode).
    assert_eq!(translation_bound(&body[..3], true), 9);
    assert_eq!(translation_bound(&[0xff; 20], true), 60);
    let json = fixture().to_string();
    assert!(translation_bound(json.as_bytes(), false) >= 3 * json.len() as u64);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

prop_compose! {
    fn zspan()(
        trace in prop::array::uniform16(any::<u8>()),
        short_trace in any::<bool>(),
        id in prop::array::uniform8(any::<u8>()),
        parent in prop::option::of(prop::array::uniform8(1u8..)),
        name in "[a-z /]{0,12}",
        kind in 0i32..5,
        ts in 0u64..4_000_000_000_000_000,
        dur in 0u64..100_000_000,
        service in "[a-z]{0,6}",
        ip in prop::option::of(prop::array::uniform4(any::<u8>())),
        port in 0u16..,
        remote in prop::option::of(("[a-z]{0,6}", 0u16..)),
        annotations in prop::collection::vec((0u64..4_000_000_000_000_000, "[a-z]{1,6}"), 0..3),
        tags in prop::collection::btree_map("[a-z.]{1,8}", "[ -~]{0,10}", 0..5),
    ) -> proto::Span {
        let mut trace = trace;
        if short_trace {
            trace[..8].fill(0);
        }
        proto::Span {
            trace_id: if short_trace { trace[8..].to_vec() } else { trace.to_vec() },
            parent_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            id: id.to_vec(),
            kind,
            name,
            timestamp: ts,
            duration: dur,
            local_endpoint: Some(proto::Endpoint {
                service_name: service,
                ipv4: ip.map(|a| a.to_vec()).unwrap_or_default(),
                ipv6: vec![],
                port: i32::from(port),
            }),
            remote_endpoint: remote.map(|(name, port)| proto::Endpoint {
                service_name: name,
                port: i32::from(port),
                ..Default::default()
            }),
            annotations: annotations
                .into_iter()
                .map(|(timestamp, value)| proto::Annotation { timestamp, value })
                .collect(),
            tags,
            debug: false,
            shared: false,
        }
    }
}

/// A protobuf span as Zipkin's JSON writes it.
fn as_json(s: &proto::Span) -> serde_json::Value {
    let endpoint = |e: &proto::Endpoint| {
        let mut v = json!({"serviceName": e.service_name});
        if e.ipv4.len() == 4 {
            v["ipv4"] = json!(
                std::net::Ipv4Addr::new(e.ipv4[0], e.ipv4[1], e.ipv4[2], e.ipv4[3]).to_string()
            );
        }
        if e.port != 0 {
            v["port"] = json!(e.port);
        }
        v
    };
    let mut v = json!({
        "traceId": hex(&s.trace_id), "id": hex(&s.id), "name": s.name,
        "timestamp": s.timestamp, "duration": s.duration,
        "annotations": s.annotations.iter().map(|a| json!({"timestamp": a.timestamp, "value": a.value})).collect::<Vec<_>>(),
        "tags": s.tags,
    });
    if !s.parent_id.is_empty() {
        v["parentId"] = json!(hex(&s.parent_id));
    }
    if let Some(k) = ["", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]
        .get(s.kind as usize)
        .filter(|k| !k.is_empty())
    {
        v["kind"] = json!(k);
    }
    if let Some(e) = &s.local_endpoint {
        v["localEndpoint"] = endpoint(e);
    }
    if let Some(e) = &s.remote_endpoint {
        v["remoteEndpoint"] = endpoint(e);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Both encodings of the same spans give the same export, and the export
    /// holds each span once with its ids, times (×1000) and every tag that
    /// names neither a status, a kind, a trace state nor a scope.
    #[test]
    fn both_encodings_give_one_export_that_keeps_every_span(spans in prop::collection::vec(zspan(), 0..6)) {
        let list = proto::ListOfSpans { spans: spans.clone() };
        let from_proto = from_proto_v2(&prost::Message::encode_to_vec(&list)).unwrap();
        let body = serde_json::Value::Array(spans.iter().map(as_json).collect()).to_string();
        let from_json = from_json_v2(body.as_bytes()).unwrap();
        prop_assert_eq!(&from_proto, &from_json);
        let out: Vec<&Span> = from_json
            .resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
            .collect();
        prop_assert_eq!(out.len(), spans.len());
        for z in &spans {
            let s = out
                .iter()
                .find(|s| s.span_id == z.id && s.start_time_unix_nano == z.timestamp * 1000 && s.name == z.name)
                .unwrap();
            prop_assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, z.duration * 1000);
            prop_assert_eq!(&s.trace_id[16 - z.trace_id.len()..], z.trace_id.as_slice());
            for (k, v) in &z.tags {
                let consumed = matches!(k.as_str(), "error" | "otel.status_code" | "otel.status_description" | "span.kind" | "w3c.tracestate")
                    || is_scope_tag(k)
                    || is_resource_tag(k);
                if !consumed {
                    let got = text(s, k);
                    prop_assert_eq!(got.as_deref(), Some(v.as_str()));
                }
            }
        }
    }

    /// Whatever bytes arrive, the answer is an export or an error, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = from_json_v2(&body);
        let _ = from_proto_v2(&body);
    }
}

/// Bodies made to translate into as much as they can: many tiny tags, many
/// tiny annotations, many empty spans.
fn dense_bodies() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let tiny = |tags: usize, annotations: usize, spans: usize| {
        let span = proto::Span {
            trace_id: vec![1; 16],
            id: vec![2; 8],
            timestamp: 1,
            tags: (0..tags)
                .map(|i| (format!("{i:x}"), String::new()))
                .collect(),
            annotations: (0..annotations)
                .map(|i| proto::Annotation {
                    timestamp: i as u64,
                    value: "a".into(),
                })
                .collect(),
            ..Default::default()
        };
        let list = proto::ListOfSpans {
            spans: vec![span; spans],
        };
        let json = serde_json::Value::Array(list.spans.iter().map(as_json).collect()).to_string();
        (
            format!("{tags} tags, {annotations} annotations, {spans} spans"),
            json.into_bytes(),
            prost::Message::encode_to_vec(&list),
        )
    };
    vec![
        tiny(2000, 0, 1),
        tiny(0, 2000, 1),
        tiny(0, 0, 2000),
        tiny(40, 40, 50),
    ]
}

#[test]
fn the_translation_bound_holds_what_translating_allocates() {
    use crate::test_alloc::measure;
    let mut over = Vec::new();
    for (what, json, proto) in dense_bodies() {
        let (r, peak) = measure(|| from_json_v2(&json));
        r.unwrap();
        let bound = translation_bound(&json, false);
        if peak > bound {
            over.push(format!(
                "{what}, JSON ({} bytes): {peak} allocated, bound {bound}",
                json.len()
            ));
        }
        let (r, peak) = measure(|| from_proto_v2(&proto));
        r.unwrap();
        let bound = translation_bound(&proto, true);
        if peak > bound {
            over.push(format!(
                "{what}, protobuf ({} bytes): {peak} allocated, bound {bound}",
                proto.len()
            ));
        }
    }
    // v1: a span may become two sides; the receiver reserves twice the bound.
    let be = json!({"serviceName": "b"});
    let v1 = json!([{
        "traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "timestamp": 1,
        "annotations": (0..1000).map(|i| json!({"timestamp": i, "value": "a", "endpoint": be}))
            .chain(["cs", "sr"].iter().map(|v| json!({"timestamp": 1, "value": v})))
            .collect::<Vec<_>>(),
        "binaryAnnotations": (0..1000).map(|i| json!({"key": format!("{i:x}"), "value": "", "endpoint": be}))
            .collect::<Vec<_>>(),
    }])
    .to_string();
    let (r, peak) = measure(|| from_json_v1(v1.as_bytes()));
    r.unwrap();
    let bound = 2 * translation_bound(v1.as_bytes(), false);
    if peak > bound {
        over.push(format!("v1 JSON: {peak} allocated, bound {bound}"));
    }
    assert!(over.is_empty(), "{over:#?}");
}

/// Zipkin's classic v1 shape: one span id for both sides of an RPC, its
/// core annotations from two services, a `sa` address, a tag of each side.
#[test]
fn a_v1_span_with_both_sides_becomes_a_client_and_a_shared_server_span() {
    let fe = json!({"serviceName": "frontend", "ipv4": "10.0.0.1", "port": 8080});
    let be = json!({"serviceName": "backend", "ipv4": "10.0.0.2"});
    let body = json!([{
        "traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get /api",
        "timestamp": 1_700_000_000_000_000u64, "duration": 207_000,
        "annotations": [
            {"timestamp": 1_700_000_000_000_000u64, "value": "cs", "endpoint": fe},
            {"timestamp": 1_700_000_000_010_000u64, "value": "sr", "endpoint": be},
            {"timestamp": 1_700_000_000_150_000u64, "value": "cache miss", "endpoint": be},
            {"timestamp": 1_700_000_000_200_000u64, "value": "ss", "endpoint": be},
            {"timestamp": 1_700_000_000_207_000u64, "value": "cr", "endpoint": fe}
        ],
        "binaryAnnotations": [
            {"key": "http.path", "value": "/api", "endpoint": fe},
            {"key": "db.rows", "value": 3, "endpoint": be},
            {"key": "sa", "value": true, "endpoint": {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 9000}}
        ]
    }, {
        "traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "parentId": "6b221d5bc9e6496c",
        "name": "local work", "timestamp": 1_700_000_000_020_000u64, "duration": 1_000,
        "binaryAnnotations": [{"key": "lc", "value": "worker", "endpoint": be}]
    }]);
    let req = from_json_v1(body.to_string().as_bytes()).unwrap();
    let find = |service: &str, name: &str| {
        req.resource_spans
            .iter()
            .filter(|rs| super::tests::service(rs) == service)
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {service} {name} in {req:?}"))
    };
    let client = find("frontend", "get /api");
    let server = find("backend", "get /api");
    assert_eq!(client.kind, span::SpanKind::Client as i32);
    assert_eq!(server.kind, span::SpanKind::Server as i32);
    assert_eq!(
        client.span_id, server.span_id,
        "the server half keeps the id"
    );
    assert_eq!(client.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(
        client.end_time_unix_nano - client.start_time_unix_nano,
        207_000_000
    );
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_010_000_000);
    assert_eq!(
        server.end_time_unix_nano - server.start_time_unix_nano,
        190_000_000
    );
    assert_eq!(text(&client, "http.path").as_deref(), Some("/api"));
    assert_eq!(text(&server, "db.rows").as_deref(), Some("3"));
    assert_eq!(text(&client, "peer.service").as_deref(), Some("backend"));
    assert_eq!(text(&client, "network.peer.port").as_deref(), Some("9000"));
    assert_eq!(server.events.len(), 1, "the backend's annotation");
    assert_eq!(server.events[0].name, "cache miss");
    assert!(client.events.is_empty());
    let local = find("backend", "local work");
    assert_eq!(local.kind, span::SpanKind::Unspecified as i32);
    assert_eq!(text(&local, "lc").as_deref(), Some("worker"));
    assert_eq!(local.parent_span_id, client.span_id);
    // Not v1 JSON: named as such.
    let e = from_json_v1(b"{}").unwrap_err().to_string();
    assert!(e.starts_with("not a Zipkin v1 JSON span list"), "{e}");
}
