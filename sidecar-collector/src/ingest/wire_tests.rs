use super::*;
use crate::ingest::{cost, records_from_request, RawSpans};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use meshtrace_proto::otlp::trace::v1::span::{Event, Link};
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Status};
use proptest::prelude::*;

fn value(kind: u8, text: &str) -> Option<AnyValue> {
    let v = match kind % 8 {
        0 => any_value::Value::StringValue(text.into()),
        1 => any_value::Value::IntValue(text.len() as i64 - 3),
        2 => any_value::Value::BoolValue(text.len().is_multiple_of(2)),
        3 => any_value::Value::DoubleValue(text.len() as f64 / 4.0),
        4 => any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(any_value::Value::StringValue(text.into())),
            }],
        }),
        5 => any_value::Value::BytesValue(text.as_bytes().to_vec()),
        6 => return Some(AnyValue { value: None }),
        _ => return None,
    };
    Some(AnyValue { value: Some(v) })
}

type Pairs = Vec<(String, u8, String)>;

fn kvs(pairs: &Pairs) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, kind, v)| KeyValue {
            key: k.clone(),
            value: value(*kind, v),
            ..Default::default()
        })
        .collect()
}

fn pairs() -> impl Strategy<Value = Pairs> {
    // Keys that redaction, sampling and indexing look at, and others.
    let key = prop::sample::select(vec![
        "a",
        "b",
        "db.password",
        "url.full",
        "sampler.type",
        "sampler.param",
        "http.request.header.authorization",
        "http.response.status_code",
    ]);
    let val = prop::sample::select(vec![
        "x",
        "",
        "probabilistic",
        "0.25",
        "https://u:p@h/p?token=1",
        "https://h/p?q=1",
        "500",
    ]);
    prop::collection::vec(
        (
            key.prop_map(String::from),
            0u8..9,
            val.prop_map(String::from),
        ),
        0..6,
    )
}

#[derive(Debug, Clone)]
struct Gen {
    attrs: Pairs,
    event: Option<Pairs>,
    link: Option<Pairs>,
    kind: i32,
    status: Option<i32>,
    ids: u8,
    end_before_start: bool,
    trace_state: String,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        pairs(),
        prop::option::of(pairs()),
        prop::option::of(pairs()),
        0i32..7,
        prop::option::of(0i32..3),
        0u8..6,
        prop::bool::weighted(0.1),
        prop::sample::select(vec!["", "ot=th:8", "ot=th:0", "vendor=x"]).prop_map(String::from),
    )
        .prop_map(
            |(attrs, event, link, kind, status, ids, end_before_start, trace_state)| Gen {
                attrs,
                event,
                link,
                kind,
                status,
                ids,
                end_before_start,
                trace_state,
            },
        )
}

fn span(g: &Gen, i: usize) -> Span {
    let start = 1_800_000_000_000_000_000u64 + i as u64 * 1000;
    Span {
        trace_id: match g.ids {
            0 => vec![0; 16],
            1 => vec![1; 15],
            _ => vec![(i % 200) as u8 + 1; 16],
        },
        span_id: if g.ids == 2 {
            vec![1; 4]
        } else {
            vec![(i % 200) as u8 + 1; 8]
        },
        parent_span_id: if g.ids == 3 { vec![9; 8] } else { vec![] },
        trace_state: g.trace_state.clone(),
        name: format!("op{i}"),
        kind: g.kind,
        start_time_unix_nano: start,
        end_time_unix_nano: if g.end_before_start {
            start - 1
        } else {
            start + 5000
        },
        attributes: kvs(&g.attrs),
        events: g
            .event
            .iter()
            .map(|p| Event {
                name: "ev".into(),
                attributes: kvs(p),
                ..Default::default()
            })
            .collect(),
        links: g
            .link
            .iter()
            .map(|p| Link {
                trace_id: vec![3; 16],
                span_id: vec![3; 8],
                attributes: kvs(p),
                ..Default::default()
            })
            .collect(),
        status: g.status.map(|code| Status {
            code,
            message: "m".into(),
        }),
        ..Default::default()
    }
}

fn request(spans: &[Gen], resource: &Pairs) -> ExportTraceServiceRequest {
    let mut res_attrs = kvs(resource);
    res_attrs.push(KeyValue {
        key: "service.name".into(),
        value: value(0, "svc"),
        ..Default::default()
    });
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: res_attrs,
                ..Default::default()
            }),
            scope_spans: vec![
                ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        ..Default::default()
                    }),
                    spans: spans.iter().enumerate().map(|(i, g)| span(g, i)).collect(),
                    ..Default::default()
                },
                ScopeSpans::default(),
            ],
            ..Default::default()
        }],
    }
}

/// The old path: prost decodes the whole export, redaction, records.
fn by_prost(raw: &Bytes, r: &Redaction, indexed: &[String]) -> (Ingested, u64) {
    let mut req = ExportTraceServiceRequest::decode(raw.clone()).unwrap();
    let (_, ranges) = cost::decoded_cost_and_spans(raw).unwrap();
    let mut rs = RawSpans {
        bytes: raw.clone(),
        ranges,
        changed: Vec::new(),
    };
    let n = r.apply_marking(&mut req, &mut rs.changed);
    (records_from_request(req, indexed, None, Some(rs)), n)
}

fn assert_same(a: &Ingested, b: &Ingested) {
    assert_eq!(a.rejected, b.rejected);
    assert_eq!(a.message, b.message);
    assert_eq!(a.records.len(), b.records.len());
    for (x, y) in a.records.iter().zip(&b.records) {
        assert_eq!(x.trace_id, y.trace_id);
        assert_eq!(x.span_id, y.span_id);
        assert_eq!(x.parent_span_id, y.parent_span_id);
        assert_eq!(x.service, y.service);
        assert_eq!(x.operation, y.operation);
        assert_eq!(x.kind, y.kind);
        assert_eq!(x.start_us, y.start_us);
        assert_eq!(x.duration_us, y.duration_us);
        assert_eq!(x.error, y.error);
        assert_eq!(x.status_code, y.status_code);
        assert_eq!(x.indexed_tags, y.indexed_tags);
        assert_eq!(x.sampled_probability, y.sampled_probability);
        assert_eq!(x.sampler_decided, y.sampler_decided);
        assert_eq!(x.origin, y.origin);
        assert_eq!(x.tags, y.tags);
        assert_eq!(
            Span::decode(x.body.clone()).unwrap(),
            Span::decode(y.body.clone()).unwrap()
        );
    }
}

/// The default redaction, with two value patterns when `patterns`.
fn redaction(patterns: bool) -> Redaction {
    let r = Redaction::default();
    if !patterns {
        return r;
    }
    r.with_patterns(&["p=[0-9]".to_string(), "^x$".to_string()])
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// Read in place or decoded by prost, an export gives the same records.
    #[test]
    fn records_from_wire_are_those_prost_gives(
        spans in prop::collection::vec(gen(), 0..6),
        resource in pairs(),
        patterns in prop::bool::ANY,
    ) {
        let r = redaction(patterns);
        let indexed = vec!["http.response.status_code".to_string(), "error".to_string(), "a".to_string()];
        let raw = Bytes::from(request(&spans, &resource).encode_to_vec());
        let (old, n_old) = by_prost(&raw, &r, &indexed);
        let new = records_from_wire(&raw, &r, &indexed, None).unwrap();
        assert_same(&new.ingested, &old);
        prop_assert_eq!(new.redacted, n_old);
    }
}

/// The sidecar's old way: decode, redact, keep the valid spans; (what it
/// would encode and send, values redacted, spans rejected).
fn forwarded_by_prost(raw: &[u8], r: &Redaction) -> (ExportTraceServiceRequest, u64, u64) {
    let mut req = ExportTraceServiceRequest::decode(raw).unwrap();
    let redacted = r.apply(&mut req);
    let (rejected, _) = crate::ingest::retain_valid(&mut req);
    (req, redacted, rejected)
}

fn forwards(raw: &[u8], r: &Redaction) -> Option<u64> {
    let budget = wire_budget(raw.len(), shape(raw)?.spans);
    forwards_as_is(raw, layout(raw)?, r, budget)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// An export a sidecar forwards as its bytes is one the old way would
    /// have sent unchanged: nothing redacted, no span refused, the same spans.
    #[test]
    fn an_export_forwarded_as_it_is_is_what_the_old_way_sends(
        spans in prop::collection::vec(gen(), 0..6),
        resource in pairs(),
        patterns in prop::bool::ANY,
    ) {
        let r = redaction(patterns);
        let raw = request(&spans, &resource).encode_to_vec();
        if let Some(n) = forwards(&raw, &r) {
            let (sent, redacted, rejected) = forwarded_by_prost(&raw, &r);
            prop_assert_eq!((redacted, rejected), (0, 0));
            prop_assert_eq!(n, crate::ingest::span_count(&sent));
            prop_assert_eq!(ExportTraceServiceRequest::decode(&raw[..]).unwrap(), sent);
        }
    }
}

/// The common case goes as it is; a credential, an invalid span or a tight
/// budget sends it the old way.
#[test]
fn a_plain_export_is_forwarded_as_it_is_and_the_rest_the_old_way() {
    let r = Redaction::default();
    let plain: Vec<Gen> = (0..50)
        .map(|i| Gen {
            attrs: vec![
                ("http.response.status_code".into(), 1, "200".into()),
                ("url.full".into(), 0, format!("https://h/p?q={i}")),
            ],
            event: Some(vec![("a".into(), 0, "x".into())]),
            ..request_gen()
        })
        .collect();
    let raw = request(&plain, &Vec::new()).encode_to_vec();
    assert_eq!(forwards(&raw, &r), Some(50));
    let l = layout(&raw).unwrap();
    assert_eq!(forwards_as_is(&raw, l, &r, 64), None, "past its budget");
    // A credential in a span, in an event, in the resource.
    let mut secret = plain.clone();
    secret[7]
        .attrs
        .push(("db.password".into(), 0, "hunter2".into()));
    assert_eq!(
        forwards(&request(&secret, &Vec::new()).encode_to_vec(), &r),
        None
    );
    let mut secret = plain.clone();
    secret[9].event = Some(vec![("url.full".into(), 0, "https://u:p@h/".into())]);
    assert_eq!(
        forwards(&request(&secret, &Vec::new()).encode_to_vec(), &r),
        None
    );
    let resource = vec![(
        "http.request.header.authorization".to_string(),
        0,
        "x".to_string(),
    )];
    assert_eq!(
        forwards(&request(&plain, &resource).encode_to_vec(), &r),
        None
    );
    // A span with an end before its start.
    let mut bad = plain.clone();
    bad[3].end_before_start = true;
    assert_eq!(
        forwards(&request(&bad, &Vec::new()).encode_to_vec(), &r),
        None
    );
}

#[test]
fn unusual_exports_go_the_old_way_and_malformed_ones_are_refused() {
    let r = Redaction::default();
    let g = Gen {
        attrs: vec![("a".into(), 0, "x".into())],
        event: None,
        link: None,
        kind: 2,
        status: None,
        ids: 5,
        end_before_start: false,
        trace_state: String::new(),
    };
    let good = request(&[g], &Vec::new()).encode_to_vec();
    // Truncated: no records (prost names the problem).
    assert!(
        records_from_wire(&Bytes::from(good[..good.len() - 3].to_vec()), &r, &[], None).is_none()
    );
    // A resource given twice (prost merges them): the old way.
    let mut twice = good.clone();
    let res = Resource::default().encode_to_vec();
    let mut rs = vec![0x0a, res.len() as u8];
    rs.extend_from_slice(&res);
    // A ResourceSpans holding two resources.
    let mut export = vec![0x0a, (rs.len() * 2) as u8];
    export.extend_from_slice(&rs);
    export.extend_from_slice(&rs);
    twice.extend_from_slice(&export);
    assert!(records_from_wire(&Bytes::from(twice), &r, &[], None).is_none());
    // A span name that is not UTF-8: the span is decoded by prost, which refuses it.
    let mut s = span(&request_gen(), 0).encode_to_vec();
    let at = s.windows(3).position(|w| w == b"op0").unwrap();
    s[at] = 0xff;
    let mut ss = vec![0x12, s.len() as u8];
    ss.extend_from_slice(&s);
    let mut rs = vec![0x12, ss.len() as u8];
    rs.extend_from_slice(&ss);
    let mut export = vec![0x0a, rs.len() as u8];
    export.extend_from_slice(&rs);
    assert!(records_from_wire(&Bytes::from(export), &r, &[], None).is_none());
    assert!(ExportTraceServiceRequest::decode(&good[..]).is_ok());
}

fn request_gen() -> Gen {
    Gen {
        attrs: Vec::new(),
        event: None,
        link: None,
        kind: 1,
        status: None,
        ids: 5,
        end_before_start: false,
        trace_state: String::new(),
    }
}

#[test]
fn unchanged_spans_are_slices_of_the_export() {
    let spans: Vec<Gen> = (0..4).map(|_| request_gen()).collect();
    let raw = Bytes::from(request(&spans, &Vec::new()).encode_to_vec());
    let got = records_from_wire(&raw, &Redaction::default(), &[], None).unwrap();
    assert_eq!(got.ingested.records.len(), 4);
    for r in &got.ingested.records {
        let p = r.body.as_ptr() as usize;
        let w = raw.as_ptr() as usize;
        assert!(p >= w && p < w + raw.len(), "a slice, not a copy");
    }
}

/// Reading in place allocates within the budget reserved for it, or gives up
/// (the export is then decoded under prost's estimate): many small spans under
/// a resource of many attributes, whose tag hashes every record copies, need
/// more than their wire bytes suggest.
#[test]
fn reading_in_place_stops_at_its_budget() {
    let spans: Vec<Gen> = (0..200).map(|_| request_gen()).collect();
    let typical = Bytes::from(request(&spans, &Vec::new()).encode_to_vec());
    let budget = wire_budget(typical.len(), 200);
    let l = layout(&typical).unwrap();
    assert_eq!(l.spans(), 200);
    let got = records_in_layout(&typical, l, &Redaction::default(), &[], None, budget).unwrap();
    assert_eq!(got.ingested.records.len(), 200);
    let heap: u64 = got.ingested.records.iter().map(record_heap).sum();
    assert!(heap < budget, "{heap} of {budget}");
    // The same export with a budget below what its records take.
    let l = layout(&typical).unwrap();
    assert!(records_in_layout(&typical, l, &Redaction::default(), &[], None, heap / 2).is_none());

    let resource: Pairs = (0..400)
        .map(|i| (format!("k{i}"), 0, "v".to_string()))
        .collect();
    let amplifying = Bytes::from(request(&spans, &resource).encode_to_vec());
    let needed = 200 * 8 * 400;
    assert!(wire_budget(amplifying.len(), 200) < needed);
    assert!(records_from_wire(&amplifying, &Redaction::default(), &[], None).is_none());
    // Prost's way takes it (under its own estimate).
    let req = ExportTraceServiceRequest::decode(&amplifying[..]).unwrap();
    assert_eq!(
        records_from_request(req, &[], None, None).records.len(),
        200
    );
}

/// The memo gives what reading an attribute again gives (its key and value,
/// redaction's verdict, its tag hash), holds at most what its budget allows
/// (then only looks up), and with no room reads every attribute.
#[test]
fn the_attribute_memo_reads_as_reading_again_within_its_share_of_the_budget() {
    let pairs: Pairs = (0..300u32)
        .map(|i| {
            let key = ["k", "db.password", "url.full"][(i % 3) as usize];
            let v = ["https://u:p@h/p", "x", "500"][(i % 7 % 3) as usize];
            (
                format!("{key}{}", i % 2),
                (i % 8) as u8,
                format!("{v}{}", i % 11),
            )
        })
        .collect();
    let kvs: Vec<Vec<u8>> = kvs(&pairs).iter().map(|kv| kv.encode_to_vec()).collect();
    let r = Redaction::default();
    for budget in [0, 16 * AttrMemo::ENTRY_BYTES * 10, u64::MAX] {
        let (mut memo, bytes) = AttrMemo::within(budget);
        assert!(bytes <= budget / 16, "{bytes} of {budget}");
        assert!(memo.max <= AttrMemo::MAX);
        for _ in 0..2 {
            for kv in &kvs {
                let read = memo.read(kv, &r);
                let again = key_value(kv);
                assert_eq!(read.is_some(), again.is_some());
                let (Some(read), Some(a)) = (read, again) else {
                    continue;
                };
                assert_eq!(read.attr.key, a.key);
                assert_eq!(read.attr.value, a.value);
                let text = match a.value {
                    Val::Str(s) => Some(s),
                    _ => None,
                };
                assert_eq!(
                    read.changes,
                    r.would_change(a.key, text, &mut String::new())
                );
                let want = val_text(&a.value).map(|t| tag_hash(a.key, &t));
                assert_eq!(read.hash, want, "{a:?}");
                assert!(memo.seen.len() <= memo.max);
            }
        }
        if budget == u64::MAX {
            let distinct: std::collections::HashSet<&Vec<u8>> =
                kvs.iter().filter(|kv| key_value(kv).is_some()).collect();
            assert!(distinct.len() > 50);
            assert_eq!(memo.seen.len(), distinct.len());
        }
    }
}

/// An export's shape is counted before its layout is built: 16 MiB of empty
/// `ResourceSpans` (two bytes each) is 8 million entries, whose layout would
/// take hundreds of megabytes, and says so.
#[test]
fn the_shape_of_an_amplifying_export_is_counted_before_it_is_laid_out() {
    let bomb: Vec<u8> = [0x0a, 0x00].repeat(8 << 20);
    let s = shape(&bomb).unwrap();
    assert_eq!(
        s,
        Shape {
            resources: 8 << 20,
            scopes: 0,
            spans: 0
        }
    );
    assert!(s.layout_bytes() >= (8 << 20) * 64, "{}", s.layout_bytes());
    let spans: Vec<Gen> = (0..5).map(|_| request_gen()).collect();
    let raw = request(&spans, &Vec::new()).encode_to_vec();
    let s = shape(&raw).unwrap();
    assert_eq!((s.resources, s.spans), (1, 5));
    assert!(s.scopes >= 1);
    assert_eq!(layout(&raw).unwrap().spans(), 5);
    assert!(shape(&raw[..raw.len() - 2]).is_none(), "malformed");
}
