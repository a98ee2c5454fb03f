use super::thrift::{agent_batch, agent_cost, batch_cost, http_batch, Protocol};
use super::*;
use crate::ingest::cost::decoded_cost;
use ::thrift::protocol::{
    TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier, TListIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};
use proptest::prelude::*;
use prost::Message;

// ---- a Thrift writer for the tests (the e2e tests use the real senders) --

#[derive(Debug, Clone)]
enum TagValue {
    Str(String),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone)]
struct TTag(String, TagValue);

#[derive(Debug, Clone, Default)]
struct TSpan {
    low: i64,
    high: i64,
    id: i64,
    parent: i64,
    name: String,
    /// (refType, traceIdLow, traceIdHigh, spanId)
    refs: Vec<(i32, i64, i64, i64)>,
    start: i64,
    duration: i64,
    tags: Vec<TTag>,
    logs: Vec<(i64, Vec<TTag>)>,
}

#[derive(Debug, Clone, Default)]
struct TBatch {
    service: String,
    process_tags: Vec<TTag>,
    spans: Vec<TSpan>,
}

fn field(o: &mut dyn TOutputProtocol, ty: TType, id: i16) {
    o.write_field_begin(&TFieldIdentifier::new("f", ty, id))
        .unwrap();
}

fn end_field(o: &mut dyn TOutputProtocol) {
    o.write_field_end().unwrap();
}

fn i64_field(o: &mut dyn TOutputProtocol, id: i16, v: i64) {
    field(o, TType::I64, id);
    o.write_i64(v).unwrap();
    end_field(o);
}

fn begin(o: &mut dyn TOutputProtocol) {
    o.write_struct_begin(&TStructIdentifier::new("s")).unwrap();
}

fn end(o: &mut dyn TOutputProtocol) {
    o.write_field_stop().unwrap();
    o.write_struct_end().unwrap();
}

fn list(o: &mut dyn TOutputProtocol, id: i16, n: usize) {
    field(o, TType::List, id);
    o.write_list_begin(&TListIdentifier::new(TType::Struct, n as i32))
        .unwrap();
}

fn end_list(o: &mut dyn TOutputProtocol) {
    o.write_list_end().unwrap();
    end_field(o);
}

fn write_tags(o: &mut dyn TOutputProtocol, id: i16, tags: &[TTag]) {
    list(o, id, tags.len());
    for TTag(k, v) in tags {
        begin(o);
        field(o, TType::String, 1);
        o.write_string(k).unwrap();
        end_field(o);
        let (ty, vid) = match v {
            TagValue::Str(_) => (0, 3),
            TagValue::Double(_) => (1, 4),
            TagValue::Bool(_) => (2, 5),
            TagValue::Long(_) => (3, 6),
            TagValue::Binary(_) => (4, 7),
        };
        field(o, TType::I32, 2);
        o.write_i32(ty).unwrap();
        end_field(o);
        match v {
            TagValue::Str(s) => {
                field(o, TType::String, vid);
                o.write_string(s).unwrap();
            }
            TagValue::Double(d) => {
                field(o, TType::Double, vid);
                o.write_double(*d).unwrap();
            }
            TagValue::Bool(b) => {
                field(o, TType::Bool, vid);
                o.write_bool(*b).unwrap();
            }
            TagValue::Long(l) => {
                field(o, TType::I64, vid);
                o.write_i64(*l).unwrap();
            }
            TagValue::Binary(b) => {
                field(o, TType::String, vid);
                o.write_bytes(b).unwrap();
            }
        }
        end_field(o);
        end(o);
    }
    end_list(o);
}

fn write_batch(o: &mut dyn TOutputProtocol, b: &TBatch) {
    begin(o);
    field(o, TType::Struct, 1);
    begin(o);
    field(o, TType::String, 1);
    o.write_string(&b.service).unwrap();
    end_field(o);
    write_tags(o, 2, &b.process_tags);
    end(o);
    end_field(o);
    list(o, 2, b.spans.len());
    for s in &b.spans {
        begin(o);
        i64_field(o, 1, s.low);
        i64_field(o, 2, s.high);
        i64_field(o, 3, s.id);
        i64_field(o, 4, s.parent);
        field(o, TType::String, 5);
        o.write_string(&s.name).unwrap();
        end_field(o);
        if !s.refs.is_empty() {
            list(o, 6, s.refs.len());
            for (kind, low, high, id) in &s.refs {
                begin(o);
                field(o, TType::I32, 1);
                o.write_i32(*kind).unwrap();
                end_field(o);
                i64_field(o, 2, *low);
                i64_field(o, 3, *high);
                i64_field(o, 4, *id);
                end(o);
            }
            end_list(o);
        }
        field(o, TType::I32, 7);
        o.write_i32(1).unwrap();
        end_field(o);
        i64_field(o, 8, s.start);
        i64_field(o, 9, s.duration);
        write_tags(o, 10, &s.tags);
        list(o, 11, s.logs.len());
        for (ts, fields) in &s.logs {
            begin(o);
            i64_field(o, 1, *ts);
            write_tags(o, 2, fields);
            end(o);
        }
        end_list(o);
        end(o);
    }
    end_list(o);
    end(o);
}

/// An agent's packet: `emitBatch(batch)`, oneway.
fn agent_packet(b: &TBatch, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut compact;
        let mut binary;
        let o: &mut dyn TOutputProtocol = match protocol {
            Protocol::Compact => {
                compact = TCompactOutputProtocol::new(&mut out);
                &mut compact
            }
            Protocol::Binary => {
                binary = TBinaryOutputProtocol::new(&mut out, true);
                &mut binary
            }
        };
        o.write_message_begin(&TMessageIdentifier::new(
            "emitBatch",
            TMessageType::OneWay,
            1,
        ))
        .unwrap();
        begin(o);
        field(o, TType::Struct, 1);
        write_batch(o, b);
        end_field(o);
        end(o);
        o.write_message_end().unwrap();
        o.flush().unwrap();
    }
    out
}

/// An HTTP body: the batch, binary.
fn http_body(b: &TBatch) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut o = TBinaryOutputProtocol::new(&mut out, true);
        write_batch(&mut o, b);
        o.flush().unwrap();
    }
    out
}

// ---- reading the results --------------------------------------------------

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn spans(req: &ExportTraceServiceRequest) -> Vec<&Span> {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect()
}

fn tag(k: &str, v: TagValue) -> TTag {
    TTag(k.into(), v)
}

/// What `jaeger-client` and OpenTelemetry's Jaeger exporter send: a server
/// span and its client child, tags of every type, a log, a FOLLOWS_FROM.
fn fixture() -> TBatch {
    use TagValue::*;
    TBatch {
        service: "legacy".into(),
        process_tags: vec![
            tag("jaeger.version", Str("Python-4.8.0".into())),
            tag("hostname", Str("pod-1".into())),
        ],
        spans: vec![
            TSpan {
                low: 0x1234,
                high: 0,
                id: 7,
                name: "GET /".into(),
                start: 1_700_000_000_000_000,
                duration: 2_500,
                tags: vec![
                    tag("span.kind", Str("server".into())),
                    tag("http.status_code", Long(500)),
                    tag("error", Bool(true)),
                    tag("ratio", Double(0.5)),
                    tag("cache.hit", Bool(false)),
                    tag("blob", Binary(vec![1, 2, 3])),
                    tag("otel.library.name", Str("flask".into())),
                    tag("otel.library.version", Str("0.42b0".into())),
                ],
                logs: vec![(
                    1_700_000_000_001_000,
                    vec![tag("event", Str("retry".into())), tag("attempt", Long(2))],
                )],
                ..Default::default()
            },
            TSpan {
                low: 0x1234,
                high: 0,
                id: 8,
                parent: 7,
                name: "SELECT".into(),
                refs: vec![(1, 0x99, 0x1, 3)],
                start: 1_700_000_000_000_500,
                duration: 1_000,
                tags: vec![
                    tag("span.kind", Str("client".into())),
                    tag("otel.status_code", Str("OK".into())),
                ],
                ..Default::default()
            },
        ],
    }
}

fn check_fixture(req: &ExportTraceServiceRequest) {
    assert_eq!(req.resource_spans.len(), 1);
    let res = req.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        attr(&res.attributes, "service.name"),
        Some(&any_value::Value::StringValue("legacy".into()))
    );
    assert_eq!(
        attr(&res.attributes, "hostname"),
        Some(&any_value::Value::StringValue("pod-1".into()))
    );
    let scopes = &req.resource_spans[0].scope_spans;
    assert_eq!(scopes.len(), 2, "flask's span and the unscoped one");
    assert_eq!(scopes[0].scope.as_ref().unwrap().name, "flask");
    assert_eq!(scopes[0].scope.as_ref().unwrap().version, "0.42b0");
    let all = spans(req);
    let server = all.iter().find(|s| s.name == "GET /").unwrap();
    let client = all.iter().find(|s| s.name == "SELECT").unwrap();
    let mut tid = vec![0u8; 14];
    tid.extend_from_slice(&[0x12, 0x34]);
    assert_eq!(server.trace_id, tid, "a 64-bit trace id is the low half");
    assert_eq!(server.span_id, 7u64.to_be_bytes());
    assert!(server.parent_span_id.is_empty());
    assert_eq!(server.kind, span::SpanKind::Server as i32);
    assert_eq!(
        server.status.as_ref().unwrap().code,
        status::StatusCode::Error as i32
    );
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(server.end_time_unix_nano, 1_700_000_000_002_500_000);
    let a = &server.attributes;
    assert_eq!(
        attr(a, "http.status_code"),
        Some(&any_value::Value::IntValue(500))
    );
    assert_eq!(attr(a, "ratio"), Some(&any_value::Value::DoubleValue(0.5)));
    assert_eq!(
        attr(a, "cache.hit"),
        Some(&any_value::Value::BoolValue(false))
    );
    assert_eq!(
        attr(a, "blob"),
        Some(&any_value::Value::BytesValue(vec![1, 2, 3]))
    );
    for gone in [
        "span.kind",
        "error",
        "otel.library.name",
        "otel.library.version",
    ] {
        assert!(attr(a, gone).is_none(), "{gone} is not an attribute");
    }
    assert_eq!(server.events.len(), 1);
    assert_eq!(server.events[0].name, "retry");
    assert_eq!(server.events[0].time_unix_nano, 1_700_000_000_001_000_000);
    assert_eq!(
        attr(&server.events[0].attributes, "attempt"),
        Some(&any_value::Value::IntValue(2))
    );
    assert_eq!(client.parent_span_id, 7u64.to_be_bytes(), "parentSpanId");
    assert_eq!(client.kind, span::SpanKind::Client as i32);
    assert_eq!(
        client.status.as_ref().unwrap().code,
        status::StatusCode::Ok as i32
    );
    assert_eq!(client.links.len(), 1, "the FOLLOWS_FROM into another trace");
    let link = &client.links[0];
    let mut other = 1u64.to_be_bytes().to_vec();
    other.extend_from_slice(&0x99u64.to_be_bytes());
    assert_eq!(link.trace_id, other);
    assert_eq!(link.span_id, 3u64.to_be_bytes());
    assert_eq!(
        attr(&link.attributes, "opentracing.ref_type"),
        Some(&any_value::Value::StringValue("follows_from".into()))
    );
}

#[test]
fn thrift_batches_become_otlp_by_the_collectors_rules() {
    let b = fixture();
    for protocol in [Protocol::Compact, Protocol::Binary] {
        let packet = agent_packet(&b, protocol);
        let batch = agent_batch(&packet, protocol).unwrap();
        check_fixture(&to_otlp(vec![batch]));
    }
    check_fixture(&to_otlp(vec![http_batch(&http_body(&b)).unwrap()]));
}

#[test]
fn api_v2_batches_become_otlp_and_spans_may_carry_their_own_process() {
    let thrift = http_batch(&http_body(&fixture())).unwrap();
    let mut alone = thrift.spans[1].clone();
    alone.process = Some(model::Process {
        service_name: "db".into(),
        tags: vec![],
    });
    let mut batch = thrift.clone();
    batch.spans.push(alone);
    let wire = model::PostSpansRequest { batch: Some(batch) }.encode_to_vec();
    assert!(proto_cost(&wire).unwrap() > 0);
    let decoded = model::PostSpansRequest::decode(wire.as_slice()).unwrap();
    let req = to_otlp(vec![decoded.batch.unwrap()]);
    assert_eq!(req.resource_spans.len(), 2);
    let db = &req.resource_spans[0];
    assert_eq!(
        attr(&db.resource.as_ref().unwrap().attributes, "service.name"),
        Some(&any_value::Value::StringValue("db".into()))
    );
    let mut rest = req.clone();
    rest.resource_spans.remove(0);
    check_fixture(&rest);
}

#[test]
fn calls_other_than_emit_batch_and_bad_bytes_are_named() {
    let mut out = Vec::new();
    {
        let mut o = TCompactOutputProtocol::new(&mut out);
        o.write_message_begin(&TMessageIdentifier::new(
            "emitZipkinBatch",
            TMessageType::OneWay,
            1,
        ))
        .unwrap();
        begin(&mut o);
        end(&mut o);
        o.write_message_end().unwrap();
    }
    let e = agent_batch(&out, Protocol::Compact).unwrap_err().0;
    assert!(
        e.contains("emitZipkinBatch") && e.contains("receivers.zipkin"),
        "{e}"
    );
    let e = agent_batch(b"hello", Protocol::Compact).unwrap_err().0;
    assert!(e.contains("not a Jaeger Thrift compact batch"), "{e}");
    // A binary packet read as compact, and the other way round.
    let packet = agent_packet(&fixture(), Protocol::Binary);
    assert!(agent_batch(&packet, Protocol::Compact).is_err());
    let packet = agent_packet(&fixture(), Protocol::Compact);
    assert!(agent_batch(&packet, Protocol::Binary).is_err());
}

#[test]
fn claims_larger_than_the_input_are_refused_before_allocating() {
    // A compact string claiming 2 GiB, a list claiming 2^31 spans.
    let mut packet = agent_packet(&TBatch::default(), Protocol::Compact);
    let at = packet.len() - 12;
    packet.truncate(at);
    packet.extend_from_slice(&[0x18, 0xff, 0xff, 0xff, 0xff, 0x07]);
    assert!(agent_cost(&packet, Protocol::Compact).is_err());
    assert!(agent_batch(&packet, Protocol::Compact).is_err());
    let mut body = Vec::new();
    {
        let mut o = TBinaryOutputProtocol::new(&mut body, true);
        begin(&mut o);
        list(&mut o, 2, i32::MAX as usize);
    }
    let e = batch_cost(&body).unwrap_err().0;
    assert!(e.contains("not a Jaeger Thrift binary batch"), "{e}");
    assert!(http_batch(&body).is_err());
}

// ---- memory: the cost bounds what reading and translating take -------------

fn string_bytes(s: &String) -> u64 {
    s.capacity() as u64
}

/// What the `api_v2` model of a batch holds (struct sizes of every element,
/// what its strings and ids hold).
fn model_bytes(b: &model::Batch) -> u64 {
    let kvs = |v: &Vec<model::KeyValue>| -> u64 {
        v.iter()
            .map(|t| {
                size_of::<model::KeyValue>() as u64
                    + string_bytes(&t.key)
                    + string_bytes(&t.v_str)
                    + t.v_binary.capacity() as u64
            })
            .sum()
    };
    let process = |p: &Option<model::Process>| {
        p.as_ref().map_or(0, |p| {
            size_of::<model::Process>() as u64 + string_bytes(&p.service_name) + kvs(&p.tags)
        })
    };
    size_of::<model::Batch>() as u64
        + process(&b.process)
        + b.spans
            .iter()
            .map(|s| {
                size_of::<model::Span>() as u64
                    + s.trace_id.capacity() as u64
                    + s.span_id.capacity() as u64
                    + string_bytes(&s.operation_name)
                    + s.references
                        .iter()
                        .map(|r| {
                            (size_of::<model::SpanRef>()
                                + r.trace_id.capacity()
                                + r.span_id.capacity()) as u64
                        })
                        .sum::<u64>()
                    + kvs(&s.tags)
                    + s.logs
                        .iter()
                        .map(|l| size_of::<model::Log>() as u64 + kvs(&l.fields))
                        .sum::<u64>()
                    + process(&s.process)
            })
            .sum::<u64>()
}

fn tag_strategy() -> impl Strategy<Value = TTag> {
    let value = prop_oneof![
        ".{0,12}".prop_map(TagValue::Str),
        any::<f64>().prop_map(TagValue::Double),
        any::<bool>().prop_map(TagValue::Bool),
        any::<i64>().prop_map(TagValue::Long),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(TagValue::Binary),
    ];
    // Short keys, including the special ones: the cheapest tags on the wire.
    let key = prop_oneof![
        "[a-z]{0,3}",
        Just("span.kind".to_string()),
        Just("error".to_string()),
        Just("event".to_string()),
        Just("otel.library.name".to_string()),
    ];
    (key, value).prop_map(|(k, v)| TTag(k, v))
}

fn span_strategy() -> impl Strategy<Value = TSpan> {
    (
        (any::<i64>(), 0..3i64, any::<i64>(), 0..3i64, ".{0,8}"),
        proptest::collection::vec((0..2i32, any::<i64>(), 0..2i64, any::<i64>()), 0..3),
        proptest::collection::vec(tag_strategy(), 0..6),
        proptest::collection::vec(
            (
                any::<i64>(),
                proptest::collection::vec(tag_strategy(), 0..3),
            ),
            0..3,
        ),
        (any::<i64>(), any::<i64>()),
    )
        .prop_map(
            |((low, high, id, parent, name), refs, tags, logs, (start, duration))| TSpan {
                low,
                high,
                id,
                parent,
                name,
                refs,
                start,
                duration,
                tags,
                logs,
            },
        )
}

fn batch_strategy() -> impl Strategy<Value = TBatch> {
    (
        ".{0,8}",
        proptest::collection::vec(tag_strategy(), 0..4),
        proptest::collection::vec(span_strategy(), 0..12),
    )
        .prop_map(|(service, process_tags, spans)| TBatch {
            service,
            process_tags,
            spans,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the batch, in every encoding: the cost counted from the
    /// bytes is at least what its model and its OTLP translation hold.
    #[test]
    fn the_cost_bounds_what_a_batch_takes(b in batch_strategy()) {
        let compact = agent_packet(&b, Protocol::Compact);
        let binary = agent_packet(&b, Protocol::Binary);
        let body = http_body(&b);
        let (_, peak) = crate::test_alloc::measure(|| {
            to_otlp(vec![agent_batch(&compact, Protocol::Compact).unwrap()])
        });
        let compact_cost = agent_cost(&compact, Protocol::Compact).unwrap();
        prop_assert!(peak <= compact_cost, "{} allocated, cost {}", peak, compact_cost);
        let model = agent_batch(&compact, Protocol::Compact).unwrap();
        prop_assert_eq!(&agent_batch(&binary, Protocol::Binary).unwrap(), &model);
        prop_assert_eq!(&http_batch(&body).unwrap(), &model);
        let proto = model::PostSpansRequest { batch: Some(model.clone()) }.encode_to_vec();
        let held = model_bytes(&model);
        let otlp = to_otlp(vec![model.clone()]);
        prop_assert_eq!(spans(&otlp).len(), b.spans.len());
        let translated = decoded_cost(&otlp.encode_to_vec()).unwrap();
        let need = held + translated;
        for (what, cost) in [
            ("compact", agent_cost(&compact, Protocol::Compact).unwrap()),
            ("binary", agent_cost(&binary, Protocol::Binary).unwrap()),
            ("http", batch_cost(&body).unwrap()),
            ("proto", proto_cost(&proto).unwrap()),
        ] {
            prop_assert!(cost >= need, "{}: cost {} < {} held + {} translated", what, cost, held, translated);
        }
    }

    /// Arbitrary bytes, and valid packets with bytes changed: an error or a
    /// batch, never a panic, and a batch is never larger than its cost.
    #[test]
    fn arbitrary_bytes_never_panic(
        b in batch_strategy(),
        noise in proptest::collection::vec(any::<u8>(), 0..200),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        let mut inputs = vec![noise];
        for protocol in [Protocol::Compact, Protocol::Binary] {
            let mut p = agent_packet(&b, protocol);
            for (at, byte) in &flips {
                let n = p.len();
                p[at % n] = *byte;
            }
            inputs.push(p);
        }
        for bytes in &inputs {
            for protocol in [Protocol::Compact, Protocol::Binary] {
                let cost = agent_cost(bytes, protocol);
                if let Ok(model) = agent_batch(bytes, protocol) {
                    let cost = cost.unwrap();
                    prop_assert!(cost >= model_bytes(&model));
                    let _ = to_otlp(vec![model]);
                }
            }
            let _ = batch_cost(bytes);
            let _ = http_batch(bytes);
            if proto_cost(bytes).is_ok() {
                if let Ok(r) = model::PostSpansRequest::decode(bytes.as_slice()) {
                    let _ = to_otlp(r.batch.into_iter().collect());
                }
            }
        }
    }
}

/// Batches made to take as much as they can: many tiny tags, logs,
/// references, empty spans.
fn dense_batches() -> Vec<(&'static str, TBatch)> {
    let tiny_tags = |n: usize| {
        (0..n)
            .map(|i| tag(&format!("{:x}", i % 16), TagValue::Bool(true)))
            .collect::<Vec<_>>()
    };
    let span = |tags: usize, logs: usize, refs: usize| TSpan {
        low: 1,
        id: 2,
        start: 1,
        tags: tiny_tags(tags),
        logs: (0..logs).map(|i| (i as i64, vec![])).collect(),
        refs: (0..refs).map(|i| (1, 1, 0, i as i64)).collect(),
        ..Default::default()
    };
    let batch = |spans: Vec<TSpan>, process_tags: usize| TBatch {
        service: String::new(),
        process_tags: tiny_tags(process_tags),
        spans,
    };
    vec![
        ("2000 tags", batch(vec![span(2000, 0, 0)], 0)),
        ("2000 logs", batch(vec![span(0, 2000, 0)], 0)),
        ("2000 references", batch(vec![span(0, 0, 2000)], 0)),
        ("2000 empty spans", batch(vec![TSpan::default(); 2000], 0)),
        ("2000 process tags", batch(vec![span(0, 0, 0)], 2000)),
        ("mixed", batch(vec![span(20, 20, 3); 50], 10)),
    ]
}

#[test]
fn the_cost_holds_what_reading_and_translating_allocate() {
    use crate::test_alloc::measure;
    let mut over = Vec::new();
    for (what, b) in dense_batches() {
        for protocol in [Protocol::Compact, Protocol::Binary] {
            let packet = agent_packet(&b, protocol);
            let cost = agent_cost(&packet, protocol).unwrap();
            let (r, peak) = measure(|| to_otlp(vec![agent_batch(&packet, protocol).unwrap()]));
            assert_eq!(spans(&r).len(), b.spans.len());
            if peak > cost {
                over.push(format!(
                    "{what} {protocol:?}: {peak} allocated, cost {cost}"
                ));
            }
        }
        let body = http_body(&b);
        let cost = batch_cost(&body).unwrap();
        let (_, peak) = measure(|| to_otlp(vec![http_batch(&body).unwrap()]));
        if peak > cost {
            over.push(format!("{what} HTTP: {peak} allocated, cost {cost}"));
        }
        let model = http_batch(&body).unwrap();
        let wire = model::PostSpansRequest { batch: Some(model) }.encode_to_vec();
        let cost = proto_cost(&wire).unwrap();
        let (_, peak) = measure(|| {
            let r = model::PostSpansRequest::decode(wire.as_slice()).unwrap();
            to_otlp(r.batch.into_iter().collect())
        });
        if peak > cost {
            over.push(format!("{what} protobuf: {peak} allocated, cost {cost}"));
        }
    }
    assert!(over.is_empty(), "{over:#?}");
}
