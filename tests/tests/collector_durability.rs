//! Nothing acknowledged is lost: send under load, SIGKILL the collector,
//! restart it on the same data directory, find every acknowledged span.

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use meshtrace_proto::prost::Message;
use meshtrace_tests::collector::{post_otlp, Collector};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Large requests and several senders keep the writer busy inside big commits, so a
// kill lands mid-commit: acknowledging before the commit would lose spans here.
const SPANS_PER_TRACE: usize = 100;

fn trace_request(cycle: u8, thread: u8, seq: u32) -> ([u8; 16], Vec<u8>) {
    let mut tid = [0u8; 16];
    tid[0] = 0xd0 | thread;
    tid[1] = cycle;
    tid[12..].copy_from_slice(&seq.to_be_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..SPANS_PER_TRACE)
        .map(|i| Span {
            trace_id: tid.to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("op{}", i % 3),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: (0..10)
                .map(|k| KeyValue {
                    key: format!("attr{k}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("value-{k}-{seq}"))),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("load".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (tid, req.encode_to_vec())
}

/// Sends from 6 threads until the collector dies; returns the acknowledged trace ids.
fn load_until_killed(collector: Collector, cycle: u8) -> (std::path::PathBuf, Vec<[u8; 16]>) {
    load_until_stopped(collector, cycle, |c| c.kill_keep_data())
}

fn load_until_stopped(
    collector: Collector,
    cycle: u8,
    stop_it: impl FnOnce(Collector) -> std::path::PathBuf,
) -> (std::path::PathBuf, Vec<[u8; 16]>) {
    let port = collector.otlp_port;
    let acked: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6u8)
        .map(|t| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let (tid, body) = trace_request(cycle, t, seq);
                    match post_otlp(port, &body) {
                        200 => acked.lock().unwrap().push(tid),
                        0 => break, // the collector is gone
                        _ => {}     // 503: not acknowledged, not counted
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    let data_dir = stop_it(collector);
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    (data_dir, acked)
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    // Three kill/restart cycles: each SIGKILL lands at a random point of the
    // write path, so the cycles together cover commits in progress.
    let mut acked = Vec::new();
    let (mut dir, first) = load_until_killed(Collector::start(), 0);
    acked.extend(first);
    for cycle in 1..3u8 {
        let (d, more) = load_until_killed(Collector::start_in(dir), cycle);
        dir = d;
        acked.extend(more);
    }
    assert!(
        acked.len() > 50,
        "too little load to mean anything: {} traces",
        acked.len()
    );

    assert_all_stored(dir, &acked);
}

/// Restarts on `dir` and checks every acknowledged trace is there, whole.
fn assert_all_stored(dir: std::path::PathBuf, acked: &[[u8; 16]]) {
    let restarted = Collector::start_in(dir);
    let mut missing = 0;
    for chunk in acked.chunks(100) {
        let q: Vec<String> = chunk
            .iter()
            .map(|t| {
                format!(
                    "traceID={}",
                    t.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            })
            .collect();
        let (status, body) = restarted.get(&format!("/api/traces?{}", q.join("&")));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let traces = v["data"].as_array().unwrap();
        for t in traces {
            assert_eq!(
                t["spans"].as_array().unwrap().len(),
                SPANS_PER_TRACE,
                "a trace lost spans"
            );
        }
        missing += chunk.len() - traces.len();
    }
    eprintln!(
        "acknowledged {} traces ({} spans) before the stop; missing after restart: {missing}",
        acked.len(),
        acked.len() * SPANS_PER_TRACE
    );
    assert_eq!(missing, 0, "acknowledged traces lost");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut status = None;
    let mut log = String::new();
    let (dir, acked) = load_until_stopped(Collector::start(), 9, |c| {
        let (st, dir, l) = c.terminate_keep_data();
        status = Some(st);
        log = l;
        dir
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}\n{log}"
    );
    assert!(log.contains("draining") && log.contains("stopped"), "{log}");
    assert!(acked.len() > 10, "too little load: {}", acked.len());
    assert_all_stored(dir, &acked);
}
