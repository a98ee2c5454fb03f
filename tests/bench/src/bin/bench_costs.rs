//! What issue 21's read and ingest guards cost, side by side with what was
//! there before, in one process, interleaved round by round (the machines are
//! noisy: compare the ratios, not the absolute times):
//!
//! - **redaction per span**: today's engine (`Redaction`: names, URLs, nested
//!   values) with its default rules, and with two `redaction.patterns`, against
//!   the engine it replaced (five names, top-level keys only; kept here as the
//!   reference), over mesh-like spans (12 attributes, a URL with a query, an
//!   event) and their resource. CPU time of this thread per span.
//! - **query budget checks per span**: what a read adds for each span it holds
//!   (`model::span_memory` + the atomic charge), against reading that span
//!   (`traces_within` from a real store: SQLite row, protobuf decode).
//!
//! Options: `--rounds R` (default 15), `--spans N` per round (default 20000).
//! Ends with a RESULT line.

// A benchmark: a setup that fails ends it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_collector::ingest::Redaction;
use meshtrace_collector::model::span_memory;
use meshtrace_collector::store::sqlite::{SqliteStore, StoreSettings};
use meshtrace_collector::store::{ReadCtl, SpanReader, SpanWriter};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use meshtrace_testkit::bench::{arg, pct};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// `n` mesh-like spans in one export (one resource).
fn export(n: usize, seq: u64) -> ExportTraceServiceRequest {
    let now = 1_796_000_000_000_000_000u64;
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: (seq * 1_000_000 + i / 10).to_be_bytes().repeat(2),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: if i % 10 == 0 {
                vec![]
            } else {
                (i - i % 10 + 1).to_be_bytes().to_vec()
            },
            name: format!("GET /api/orders/{{id}} {}", i % 7),
            kind: 2,
            start_time_unix_nano: now + i * 1000,
            end_time_unix_nano: now + i * 1000 + 700,
            attributes: vec![
                kv("http.request.method", "GET"),
                kv(
                    "url.full",
                    &format!("http://orders.shop.svc:8080/api/orders/{i}?page=2&sort=desc"),
                ),
                kv("http.route", "/api/orders/{id}"),
                kv("http.response.status_code", "200"),
                kv(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                ),
                kv("server.address", "orders.shop.svc"),
                kv("network.peer.address", "10.1.2.3"),
                kv(
                    "upstream_cluster",
                    "outbound|8080||orders.shop.svc.cluster.local",
                ),
                kv("istio.canonical_service", "orders"),
                kv("guid:x-request-id", "a3f1c2d4-5e6f-7081-92a3-b4c5d6e7f809"),
                kv("component", "proxy"),
                kv("sampler.type", "probabilistic"),
            ],
            events: vec![span::Event {
                name: "retry".into(),
                attributes: vec![
                    kv("attempt", "2"),
                    kv("reason", "upstream reset before headers"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "orders"),
                    kv("k8s.pod.name", "orders-7d9f8b6c5-x2x9z"),
                    kv("k8s.namespace.name", "shop"),
                    kv("host.name", "node-3"),
                    kv("telemetry.sdk.name", "meshtrace"),
                    kv("service.version", "1.4.2"),
                ],
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

/// The redaction engine issue 21 replaced: five names, matched on a key's last
/// segment or whole, top-level attributes only. The reference "before".
struct Before {
    names: Vec<String>,
}

impl Before {
    fn new() -> Before {
        Before {
            names: meshtrace_proto::semconv::SENSITIVE_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
    fn same(a: &str, b: &str) -> bool {
        let norm = |c: u8| match c.to_ascii_lowercase() {
            b'_' => b'-',
            c => c,
        };
        a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
    }
    fn redact(&self, attrs: &mut [KeyValue]) -> u64 {
        let mut n = 0;
        for a in attrs.iter_mut() {
            let last = a.key.rsplit('.').next().unwrap_or(&a.key);
            if self
                .names
                .iter()
                .any(|x| Self::same(x, last) || Self::same(x, &a.key))
            {
                a.value = Some(AnyValue {
                    value: Some(any_value::Value::StringValue("[REDACTED]".into())),
                });
                n += 1;
            }
        }
        n
    }
    fn apply(&self, req: &mut ExportTraceServiceRequest) -> u64 {
        let mut n = 0;
        for rs in &mut req.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                n += self.redact(&mut r.attributes);
            }
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    n += self.redact(&mut s.attributes);
                    for e in &mut s.events {
                        n += self.redact(&mut e.attributes);
                    }
                    for l in &mut s.links {
                        n += self.redact(&mut l.attributes);
                    }
                }
            }
        }
        n
    }
}

/// This thread's CPU time, ns.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

fn median(v: &mut [f64]) -> f64 {
    pct(v, 0.5)
}

fn main() {
    meshtrace_testkit::bench::guard();
    let rounds = arg("--rounds", 15) as usize;
    let n = arg("--spans", 20_000) as usize;
    let before = Before::new();
    let default = Redaction::default();
    let patterns = Redaction::default()
        .with_patterns(&[
            r"(?i)bearer\s+[a-z0-9._~+/-]+=*".into(),
            r"AKIA[0-9A-Z]{16}".into(),
        ])
        .unwrap();
    let req = export(n, 1);
    println!("redaction: {rounds} rounds × {n} spans (12 attributes, a URL, an event; 6 resource attributes), interleaved");
    let mut t: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        // A fresh copy each time (redaction rewrites in place); the copy is not timed.
        let order: [usize; 3] = [round % 3, (round + 1) % 3, (round + 2) % 3];
        for which in order {
            let mut r = req.clone();
            let c = cpu_ns();
            let changed = match which {
                0 => before.apply(&mut r),
                1 => default.apply(&mut r),
                _ => patterns.apply(&mut r),
            };
            let ns = (cpu_ns() - c) as f64 / n as f64;
            std::hint::black_box(changed);
            t[which].push(ns);
        }
    }
    let [mut b, mut d, mut p] = t;
    let (b, d, p) = (median(&mut b), median(&mut d), median(&mut p));
    println!("  before (5 names, top level): {b:.0} ns/span");
    println!(
        "  now, default rules:          {d:.0} ns/span ({:.2}x)",
        d / b
    );
    println!(
        "  now, + 2 patterns:           {p:.0} ns/span ({:.2}x)",
        p / b
    );

    // Reads: a store of `n` spans, read back whole; and the checks alone on the same spans.
    let dir = meshtrace_testkit::scratch_path("bench-costs");
    let store = SqliteStore::open(&dir, StoreSettings::default()).unwrap();
    let records =
        meshtrace_collector::ingest::records_from_request(export(n, 2), &[], None, None).records;
    store.write(&records).unwrap();
    let ids: Vec<[u8; 16]> = {
        let mut v: Vec<[u8; 16]> = records.iter().map(|r| r.trace_id).collect();
        v.dedup();
        v
    };
    let decoded: Vec<Span> = export(n, 2).resource_spans[0].scope_spans[0].spans.clone();
    println!("query budget: {rounds} rounds, {} traces of 10 spans read back whole, interleaved with the checks alone", ids.len());
    let (mut read, mut checks) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let ctl = ReadCtl::new(None, u64::MAX, String::new());
        let c = cpu_ns();
        let set = store.traces_within(&ids, usize::MAX, &ctl).unwrap();
        read.push((cpu_ns() - c) as f64 / n as f64);
        assert_eq!(set.traces.iter().map(|t| t.spans.len()).sum::<usize>(), n);
        drop(set);
        let ctl = ReadCtl::new(
            Some(std::time::Instant::now() + std::time::Duration::from_secs(3600)),
            u64::MAX,
            String::new(),
        );
        let c = cpu_ns();
        for s in &decoded {
            std::hint::black_box(ctl.try_charge(span_memory(s)));
        }
        checks.push((cpu_ns() - c) as f64 / n as f64);
    }
    let (r, k) = (median(&mut read), median(&mut checks));
    println!("  reading a span (SQLite row + decode): {r:.0} ns/span");
    println!(
        "  the budget's checks on it:            {k:.0} ns/span ({:.1}% of the read)",
        100.0 * k / r
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RESULT redaction_before_ns={b:.0} redaction_ns={d:.0} redaction_patterns_ns={p:.0} ratio_default={:.2} ratio_patterns={:.2} read_ns={r:.0} budget_ns={k:.0} budget_share_pct={:.1}",
        d / b,
        p / b,
        100.0 * k / r
    );
}
