//! `model::span_memory` — what a read charges for each span it holds — against
//! the heap a decoded span really takes, counted by a global allocator: never
//! less than it, and not more than twice it (a read cut too early answers less
//! than its budget allows).

// A test: its helpers fail it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

use meshtrace_collector::model::span_memory;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use meshtrace_proto::otlp::trace::v1::{span, Span, Status};
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes (requested sizes).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::SeqCst);
        // SAFETY: a pointer this allocator gave out, with its layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
        ..Default::default()
    }
}

fn spans() -> Vec<(&'static str, Span)> {
    let base = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        name: "GET /api/orders/{id}".into(),
        kind: 2,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    };
    let attrs = |n: usize, len: usize| -> Vec<KeyValue> {
        (0..n)
            .map(|i| kv(&format!("attr.{i}"), s(&"v".repeat(len))))
            .collect()
    };
    vec![
        ("no attributes", base.clone()),
        (
            "mesh span: 12 short attributes",
            Span {
                attributes: attrs(12, 12),
                ..base.clone()
            },
        ),
        (
            "20 attributes of 100 B",
            Span {
                attributes: attrs(20, 100),
                ..base.clone()
            },
        ),
        (
            "3 attributes of 10 KB",
            Span {
                attributes: attrs(3, 10_000),
                ..base.clone()
            },
        ),
        (
            "events, links, nested values, status",
            Span {
                attributes: vec![
                    kv(
                        "list",
                        Some(AnyValue {
                            value: Some(any_value::Value::ArrayValue(ArrayValue {
                                values: (0..10).map(|i| s(&format!("item{i}")).unwrap()).collect(),
                            })),
                        }),
                    ),
                    kv(
                        "map",
                        Some(AnyValue {
                            value: Some(any_value::Value::KvlistValue(KeyValueList {
                                values: attrs(5, 20),
                            })),
                        }),
                    ),
                    kv(
                        "n",
                        Some(AnyValue {
                            value: Some(any_value::Value::IntValue(5)),
                        }),
                    ),
                ],
                events: (0..4)
                    .map(|i| span::Event {
                        name: format!("exception {i}"),
                        attributes: attrs(3, 40),
                        ..Default::default()
                    })
                    .collect(),
                links: vec![span::Link {
                    trace_id: vec![4; 16],
                    span_id: vec![5; 8],
                    attributes: attrs(2, 10),
                    ..Default::default()
                }],
                status: Some(Status {
                    message: "upstream failed".into(),
                    code: 2,
                }),
                ..base
            },
        ),
    ]
}

#[test]
fn the_charge_covers_what_a_decoded_span_holds_and_not_twice_over() {
    for (what, span) in spans() {
        let body = span.encode_to_vec();
        let before = LIVE.load(Ordering::SeqCst);
        let decoded = Box::new(Span::decode(body.as_slice()).unwrap());
        let held = (LIVE.load(Ordering::SeqCst) - before) as u64;
        let charged = span_memory(&decoded);
        drop(decoded);
        let ratio = charged as f64 / held as f64;
        eprintln!(
            "{what}: wire {} B, held {held} B, charged {charged} B ({ratio:.2}x)",
            body.len()
        );
        assert!(charged >= held, "{what}: charged {charged} < held {held}");
        assert!(ratio <= 2.0, "{what}: charged {ratio:.2}x what it holds");
    }
}
