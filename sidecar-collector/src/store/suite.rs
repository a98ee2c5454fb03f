//! The storage test suite every backend must pass, with shared fixtures.

use super::{ReadCtl, SpanReader, SpanStore, SpanWriter, TraceQuery};
use crate::model::SpanRecord;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

const HOUR_NS: u64 = 3_600_000_000_000;
/// 2026-11-20T00:00:00Z
pub const BASE_NS: u64 = 1_763_596_800_000_000_000;

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A span of `service` in trace `t` (byte value), span `s`, parent `p` (0 = root).
pub fn span(t: u8, s: u8, p: u8, name: &str, start_ns: u64, dur_ns: u64, status: u16) -> Span {
    Span {
        trace_id: vec![t; 16],
        span_id: vec![s; 8],
        parent_span_id: if p == 0 { vec![] } else { vec![p; 8] },
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + dur_ns,
        attributes: vec![
            kv("http.response.status_code", &status.to_string()),
            kv("http.request.method", "GET"),
            kv("custom.unindexed", "x"),
        ],
        events: vec![span::Event {
            time_unix_nano: start_ns + 1,
            name: "cache miss".into(),
            attributes: vec![kv("key", "k1")],
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: vec![0xee; 16],
            span_id: vec![0xef; 8],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service), kv("k8s.pod.name", "p-0")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The records the ingest path makes of `spans` of `service`.
pub fn records(service: &str, spans: Vec<Span>) -> Vec<SpanRecord> {
    let tags = vec!["http.response.status_code".to_string()];
    let req = request(service, spans);
    let rs = &req.resource_spans[0];
    let origin: std::sync::Arc<[u8]> =
        crate::model::Origin::encode(rs.resource.as_ref().unwrap(), None).into();
    rs.scope_spans[0]
        .spans
        .iter()
        .map(|s| {
            let origin_tags = crate::model::origin_tag_hashes(
                rs.resource.as_ref().unwrap(),
                rs.scope_spans[0].scope.as_ref(),
            );
            SpanRecord::from_span(s, service, &origin, &origin_tags, &tags).unwrap()
        })
        .collect()
}

/// Runs every check against a fresh store from `make`.
pub fn run(make: &dyn Fn() -> Box<dyn SpanStore>) {
    roundtrip_keeps_everything(make());
    services_and_operations(make());
    search(make());
    retention_drops_old_partitions(make());
    retention_never_fails_concurrent_reads(make());
    duplicate_writes_read_once(make());
    shared_span_ids_are_both_kept(make());
    many_traces_in_one_read(make());
    renamed_tags_answer_both_names(make());
    dependencies_from_parent_child_pairs(make());
}

fn dependencies_from_parent_child_pairs(store: Box<dyn SpanStore>) {
    // frontend → checkout (x2) → inventory; checkout's internal child is not an edge.
    for t in [1u8, 2] {
        store
            .write(&records(
                "frontend",
                vec![span(t, 1, 0, "GET /", BASE_NS, 10, 200)],
            ))
            .unwrap();
        store
            .write(&records(
                "checkout",
                vec![
                    span(t, 2, 1, "POST /buy", BASE_NS, 5, 200),
                    span(t, 3, 2, "internal", BASE_NS, 1, 200),
                ],
            ))
            .unwrap();
    }
    store
        .write(&records(
            "inventory",
            vec![span(1, 4, 2, "GET /stock", BASE_NS, 1, 200)],
        ))
        .unwrap();
    let from = (BASE_NS / 1000) as i64 - 1;
    let deps = store
        .dependencies(from, from + 3_600_000_000, &ReadCtl::unbounded())
        .unwrap();
    assert_eq!(
        deps,
        vec![
            ("checkout".into(), "inventory".into(), 1),
            ("frontend".into(), "checkout".into(), 2)
        ]
    );
    assert!(
        store
            .dependencies(from - 10, from - 5, &ReadCtl::unbounded())
            .unwrap()
            .is_empty(),
        "outside the window"
    );
}

fn roundtrip_keeps_everything(store: Box<dyn SpanStore>) {
    let s = span(1, 1, 0, "GET /a", BASE_NS, 5_000_000, 200);
    store.write(&records("frontend", vec![s.clone()])).unwrap();
    store
        .write(&records(
            "backend",
            vec![span(1, 2, 1, "GET /b", BASE_NS + 1000, 1000, 200)],
        ))
        .unwrap();
    let trace = store.trace(&[1; 16]).unwrap();
    assert_eq!(trace.len(), 2);
    assert_eq!(
        trace[0].span, s,
        "span stored whole: attributes, events, links"
    );
    assert_eq!(
        trace[0].origin.resource.attributes[0],
        kv("service.name", "frontend")
    );
    assert_eq!(trace[1].span.parent_span_id, vec![1; 8]);
    assert!(store.trace(&[9; 16]).unwrap().is_empty());
}

fn services_and_operations(store: Box<dyn SpanStore>) {
    store
        .write(&records(
            "a",
            vec![
                span(1, 1, 0, "op1", BASE_NS, 1, 200),
                span(1, 2, 1, "op2", BASE_NS, 1, 200),
            ],
        ))
        .unwrap();
    store
        .write(&records(
            "b",
            vec![span(2, 1, 0, "op3", BASE_NS + 2 * 24 * HOUR_NS, 1, 200)],
        ))
        .unwrap();
    assert_eq!(
        store.services(&ReadCtl::unbounded()).unwrap(),
        vec!["a", "b"],
        "across partitions"
    );
    let ops: Vec<String> = store
        .operations("a", &ReadCtl::unbounded())
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(ops, vec!["op1", "op2"]);
}

fn search(store: Box<dyn SpanStore>) {
    let mut spans = Vec::new();
    for i in 0..20u8 {
        let status = if i % 5 == 0 { 500 } else { 200 };
        spans.push(span(
            i + 1,
            1,
            0,
            if i % 2 == 0 { "even" } else { "odd" },
            BASE_NS + u64::from(i) * 1_000_000_000,
            u64::from(i) * 1_000_000,
            status,
        ));
    }
    store.write(&records("svc", spans)).unwrap();
    let q = |f: &dyn Fn(&mut TraceQuery)| {
        let mut q = TraceQuery {
            service: "svc".into(),
            start_us: (BASE_NS / 1000) as i64,
            end_us: (BASE_NS / 1000) as i64 + 3_600_000_000,
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        store.find_trace_ids(&q, &ReadCtl::unbounded()).unwrap()
    };
    assert_eq!(q(&|_| {}).len(), 20);
    assert_eq!(q(&|q| q.operation = Some("even".into())).len(), 10);
    assert_eq!(
        q(&|q| q.min_duration_us = Some(15_000)).len(),
        5,
        "durations 15..19 ms"
    );
    assert_eq!(
        q(&|q| q.max_duration_us = Some(2_000)).len(),
        3,
        "0, 1, 2 ms"
    );
    assert_eq!(
        q(&|q| q.tags = vec![("http.response.status_code".into(), "500".into())]).len(),
        4
    );
    // Keys that are not indexed are still searchable: span attribute, process
    // (resource) attribute, log (event) field, derived span.kind; all on one span.
    let tag = |k: &str, v: &str| (k.to_string(), v.to_string());
    let with = |tags: Vec<(String, String)>| q(&|q| q.tags = tags.clone()).len();
    assert_eq!(
        with(vec![tag("custom.unindexed", "x")]),
        20,
        "span attribute"
    );
    assert_eq!(
        with(vec![tag("custom.unindexed", "y")]),
        0,
        "value must match"
    );
    assert_eq!(with(vec![tag("k8s.pod.name", "p-0")]), 20, "process tag");
    assert_eq!(with(vec![tag("key", "k1")]), 20, "log field");
    assert_eq!(with(vec![tag("span.kind", "server")]), 20, "span.kind");
    assert_eq!(with(vec![tag("span.kind", "client")]), 0);
    assert_eq!(
        with(vec![
            tag("http.response.status_code", "500"),
            tag("custom.unindexed", "x"),
            tag("http.request.method", "GET"),
        ]),
        4,
        "indexed and unindexed together"
    );
    assert_eq!(
        q(&|q| {
            q.tags = vec![tag("custom.unindexed", "x")];
            q.limit = 2;
        }),
        vec![[20; 16], [19; 16]],
        "limit applies after the tag filter"
    );
    // OR (the tagsOp=or extension): any tag, where AND needs all on one span.
    let any = |tags: Vec<(String, String)>| {
        q(&|q| {
            q.tags = tags.clone();
            q.tags_any = true;
        })
        .len()
    };
    let (s500, s200) = (
        tag("http.response.status_code", "500"),
        tag("http.response.status_code", "200"),
    );
    assert_eq!(
        with(vec![s500.clone(), s200.clone()]),
        0,
        "AND: no span is both"
    );
    assert_eq!(any(vec![s500.clone(), s200]), 20, "OR: either status");
    assert_eq!(
        any(vec![s500.clone(), tag("custom.unindexed", "y")]),
        4,
        "OR: one matches"
    );
    assert_eq!(any(vec![tag("custom.unindexed", "y")]), 0);
    assert_eq!(
        any(vec![tag("key", "nope"), tag("k8s.pod.name", "p-0")]),
        20,
        "OR: a process tag"
    );
    let newest = q(&|q| q.limit = 3);
    assert_eq!(
        newest,
        vec![[20; 16], [19; 16], [18; 16]],
        "newest first, limited"
    );
    assert!(q(&|q| q.service = "other".into()).is_empty());
    assert!(q(&|q| q.end_us = q.start_us - 1).is_empty());
}

fn retention_drops_old_partitions(store: Box<dyn SpanStore>) {
    let old = BASE_NS - 10 * 24 * HOUR_NS;
    store
        .write(&records("s", vec![span(1, 1, 0, "old", old, 1, 200)]))
        .unwrap();
    store
        .write(&records("s", vec![span(2, 1, 0, "new", BASE_NS, 1, 200)]))
        .unwrap();
    let dropped = store
        .apply_retention((BASE_NS / 1000) as i64 - 7 * 86_400_000_000)
        .unwrap();
    assert_eq!(dropped, 1);
    assert!(store.trace(&[1; 16]).unwrap().is_empty());
    assert_eq!(store.trace(&[2; 16]).unwrap().len(), 1);
}

fn retention_never_fails_concurrent_reads(store: Box<dyn SpanStore>) {
    // One trace a day for 40 days; retention then drops them one day at a
    // time while two threads read: a read sees a day or not, never an error.
    for d in 0..40u8 {
        let start = BASE_NS - u64::from(d) * 24 * HOUR_NS;
        store
            .write(&records(
                "s",
                vec![span(100 + d, 1, 0, "op", start, 1, 200)],
            ))
            .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ids: Vec<[u8; 16]> = (0..40u8).map(|d| [100 + d; 16]).collect();
    let reads = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.traces(&ids).expect("trace lookup during retention");
                    store
                        .services(&ReadCtl::unbounded())
                        .expect("services during retention");
                    let q = TraceQuery {
                        service: "s".into(),
                        start_us: 0,
                        end_us: i64::MAX,
                        limit: 100,
                        ..TraceQuery::default()
                    };
                    store.find_traces(&q).expect("search during retention");
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        for d in (1..40i64).rev() {
            let cutoff = (BASE_NS / 1000) as i64 - d * 86_400_000_000;
            store.apply_retention(cutoff).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(reads.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // The cut-off day itself is kept whole (a day goes once all of it is older).
    let left = store.traces(&ids).unwrap();
    assert_eq!(
        left.iter().map(|t| t.trace_id[0]).collect::<Vec<_>>(),
        vec![100, 101],
        "today and the cut-off day left"
    );
}

fn duplicate_writes_read_once(store: Box<dyn SpanStore>) {
    let r = records("s", vec![span(3, 1, 0, "x", BASE_NS, 1, 200)]);
    store.write(&r).unwrap();
    store.write(&r).unwrap();
    assert_eq!(
        store.trace(&[3; 16]).unwrap().len(),
        1,
        "a retried export is not doubled"
    );
}

fn shared_span_ids_are_both_kept(store: Box<dyn SpanStore>) {
    // Zipkin style: the client and the server span of one call share an id.
    let mut client = span(4, 2, 1, "call", BASE_NS, 10, 200);
    client.kind = 3;
    store.write(&records("frontend", vec![client])).unwrap();
    store
        .write(&records(
            "backend",
            vec![span(4, 2, 1, "serve", BASE_NS + 1, 8, 200)],
        ))
        .unwrap();
    let trace = store.trace(&[4; 16]).unwrap();
    assert_eq!(trace.len(), 2, "same id, different spans: both kept");
}

fn many_traces_in_one_read(store: Box<dyn SpanStore>) {
    // Traces across two day partitions, asked in a given order, one unknown.
    for t in 1..=30u8 {
        let day = u64::from(t % 2) * 24 * HOUR_NS;
        store
            .write(&records(
                "s",
                vec![
                    span(t, 1, 0, "root", BASE_NS + day, 10, 200),
                    span(t, 2, 1, "child", BASE_NS + day + 1, 5, 200),
                ],
            ))
            .unwrap();
    }
    let ids: Vec<[u8; 16]> = [7u8, 99, 2, 30].iter().map(|t| [*t; 16]).collect();
    let got = store.traces(&ids).unwrap();
    assert_eq!(
        got.iter().map(|t| t.trace_id[0]).collect::<Vec<_>>(),
        vec![7, 2, 30],
        "in the order asked, unknown left out"
    );
    assert!(got.iter().all(|t| t.spans.len() == 2));
    assert_eq!(got[0].spans[0].span.name, "root", "start order");
    assert!(
        std::sync::Arc::ptr_eq(&got[0].spans[0].origin, &got[0].spans[1].origin),
        "one decoded origin shared by the spans that carry it"
    );
}

#[test]
fn sqlite_passes_the_suite() {
    let dirs = std::cell::RefCell::new(Vec::new());
    run(&|| {
        let d = tempfile::tempdir().unwrap();
        let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
        dirs.borrow_mut().push(d);
        Box::new(s)
    });
}

#[test]
fn sqlite_recovers_from_a_broken_partition() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
        s.write(&records("s", vec![span(1, 1, 0, "x", BASE_NS, 1, 200)]))
            .unwrap();
    }
    std::fs::write(
        d.path().join("spans-000001.sqlite"),
        b"this is not a database",
    )
    .unwrap();
    // Found on use: the read goes on without it, and it is moved aside.
    let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
    assert_eq!(
        s.trace(&[1; 16]).unwrap().len(),
        1,
        "good partitions still served"
    );
    assert!(
        d.path().join("spans-000001.broken").exists(),
        "bad one moved aside"
    );
    // Found by the check after start-up, before any read.
    std::fs::write(
        d.path().join("spans-000002.sqlite"),
        b"not a database either",
    )
    .unwrap();
    let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
    assert_eq!(
        s.check_partitions(),
        (2, 1),
        "two partitions checked, one set aside"
    );
    assert!(d.path().join("spans-000002.broken").exists());
    assert_eq!(s.trace(&[1; 16]).unwrap().len(), 1);
    assert_eq!(s.check_partitions(), (1, 0));
}

#[test]
fn sqlite_closes_idle_partitions_and_reopens_them() {
    let d = tempfile::tempdir().unwrap();
    let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
    for day in 0..3u64 {
        s.write(&records(
            "s",
            vec![span(
                50 + day as u8,
                1,
                0,
                "x",
                BASE_NS + day * 24 * HOUR_NS,
                1,
                200,
            )],
        ))
        .unwrap();
    }
    assert_eq!(s.open_writers(), 3);
    assert_eq!(
        s.close_idle(std::time::Duration::from_secs(3600)),
        0,
        "not idle yet"
    );
    assert_eq!(s.close_idle(std::time::Duration::ZERO), 3);
    assert_eq!(s.open_writers(), 0);
    // Reopened on demand: reads and writes go on.
    assert_eq!(s.trace(&[52; 16]).unwrap().len(), 1);
    s.write(&records("s", vec![span(53, 1, 0, "y", BASE_NS, 1, 200)]))
        .unwrap();
    assert_eq!(s.open_writers(), 1);
}

/// A trace of `n` spans alternating two services, each the child of the one
/// before (`chain`) or of the root (fan), all in one partition.
fn alternating(n: u64, chain: bool) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for (service, parity) in [("deps-a", 1u64), ("deps-b", 0)] {
        let spans: Vec<Span> = (1..=n)
            .filter(|i| i % 2 == parity)
            .map(|i| Span {
                trace_id: vec![0xd1; 16],
                span_id: i.to_be_bytes().to_vec(),
                parent_span_id: match (i, chain) {
                    (1, _) => vec![],
                    (_, true) => (i - 1).to_be_bytes().to_vec(),
                    (_, false) => 1u64.to_be_bytes().to_vec(),
                },
                name: "op".into(),
                kind: 2,
                start_time_unix_nano: BASE_NS + i,
                end_time_unix_nano: BASE_NS + i + 1,
                ..Default::default()
            })
            .collect();
        out.extend(records(service, spans));
    }
    out
}

/// This thread's CPU time, ns.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn sqlite_dependencies_grow_linearly_in_a_traces_size() {
    // The self-join looked each parent up among all its trace's spans: quadratic
    // (traces of 20k–100k spans: 60 s and on). Now one pass per partition.
    for chain in [true, false] {
        let time = |n: u64| {
            let d = tempfile::tempdir().unwrap();
            let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
            s.write(&alternating(n, chain)).unwrap();
            let ctl = ReadCtl::unbounded();
            let t = cpu_ns();
            let deps = s.dependencies(0, i64::MAX / 2, &ctl).unwrap();
            let took = (cpu_ns() - t).max(1);
            let calls: u64 = deps.iter().map(|e| e.2).sum();
            let expected = if chain { n - 1 } else { n / 2 };
            assert_eq!(calls, expected, "chain {chain}: {deps:?}");
            took
        };
        let (small, large) = (time(4_000), time(32_000));
        let growth = large as f64 / small as f64;
        eprintln!(
            "dependencies (chain {chain}): 4,000 spans {:.1} ms, 32,000 {:.1} ms: {growth:.1}x",
            small as f64 / 1e6,
            large as f64 / 1e6
        );
        assert!(growth < 20.0, "{growth:.1}x at 8x the spans");
    }
}

#[test]
fn sqlite_reads_stop_at_their_deadline() {
    let d = tempfile::tempdir().unwrap();
    let s = super::sqlite::SqliteStore::open(d.path(), Default::default()).unwrap();
    s.write(&alternating(40_000, true)).unwrap();
    // The deadline passes during the scan: SQLite's progress handler stops the
    // statement, and the read says which limit stopped it.
    let ctl = ReadCtl::new(
        Some(std::time::Instant::now() + std::time::Duration::from_micros(200)),
        u64::MAX,
        "query.timeout (test)".into(),
    );
    let t = std::time::Instant::now();
    let e = s.dependencies(0, i64::MAX / 2, &ctl).unwrap_err();
    assert!(matches!(e, super::StoreError::Stopped(_)), "{e}");
    assert!(e.to_string().contains("query.timeout"), "{e}");
    eprintln!("stopped after {:?}", t.elapsed());
    // A read given up by its owner stops too, and one past its bytes is refused.
    let ctl = ReadCtl::unbounded();
    ctl.give_up();
    assert!(matches!(
        s.services(&ctl),
        Err(super::StoreError::Stopped(_))
    ));
    let small = ReadCtl::new(None, 1024, String::new());
    let set = s.traces_within(&[[0xd1; 16]], usize::MAX, &small).unwrap();
    assert!(
        set.cut_by_bytes && set.traces[0].truncated,
        "cut by bytes, said so"
    );
    assert!(small.used() <= 1024);
}

/// A search for a tag OpenTelemetry renamed finds spans under either name
/// (`http.status_code` ↔ `http.response.status_code`, the first indexed in
/// the suite's records: its index cannot narrow a search that may find the
/// older name).
fn renamed_tags_answer_both_names(store: Box<dyn SpanStore>) {
    let current = span(1, 1, 0, "GET /", BASE_NS, 1_000, 500);
    let mut older = span(2, 1, 0, "POST /", BASE_NS + 1_000, 1_000, 0);
    older.attributes = vec![kv("http.status_code", "500"), kv("http.method", "POST")];
    store.write(&records("svc", vec![current, older])).unwrap();
    let tag = |k: &str, v: &str| (k.to_string(), v.to_string());
    let q = |tags: Vec<(String, String)>, any: bool| {
        let q = TraceQuery {
            service: "svc".into(),
            start_us: (BASE_NS / 1000) as i64,
            end_us: (BASE_NS / 1000) as i64 + 3_600_000_000,
            limit: 100,
            tags,
            tags_any: any,
            ..Default::default()
        };
        let mut ids = store.find_trace_ids(&q, &ReadCtl::unbounded()).unwrap();
        ids.sort();
        ids
    };
    let both = vec![[1u8; 16], [2; 16]];
    assert_eq!(q(vec![tag("http.status_code", "500")], false), both);
    assert_eq!(
        q(vec![tag("http.response.status_code", "500")], false),
        both
    );
    assert_eq!(
        q(vec![tag("http.status_code", "404")], false),
        Vec::<[u8; 16]>::new()
    );
    assert_eq!(q(vec![tag("http.method", "GET")], false), vec![[1; 16]]);
    assert_eq!(
        q(vec![tag("http.request.method", "POST")], false),
        vec![[2; 16]]
    );
    assert_eq!(
        q(
            vec![
                tag("http.status_code", "500"),
                tag("http.request.method", "POST")
            ],
            false
        ),
        vec![[2; 16]],
        "both conditions on one span, each under either name"
    );
    assert_eq!(
        q(
            vec![
                tag("http.request.method", "GET"),
                tag("http.method", "POST")
            ],
            true
        ),
        both
    );
}
