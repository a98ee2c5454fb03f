//! Memory bounded by configuration, proven in memory cgroups sized like the
//! Istio manifests (central 1 GiB, sidecar 64 MiB): protobuf amplification,
//! gzip bombs and oversized exports are refused before they are decoded; the
//! collector stays alive, keeps serving other clients and loses nothing it
//! acknowledged. Each test skips, saying why, where no memory cgroup can be
//! created (these machines run the tests as root, so they run here).

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flate2::write::GzEncoder;
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{grpc_raw, metric, post, Collector, Opts};
use meshtrace_testkit::load::{
    assert_all_found, cgroup, get_big, hex, peak_rss_mb, send, trace_body, trace_body_padded,
    trace_id, Steady,
};
use meshtrace_testkit::otlp::{kv, now_ns, request};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// `n` bytes of empty `ResourceSpans`: a valid export, two bytes each on the wire.
fn empty_resource_spans(n: usize) -> Vec<u8> {
    [0x0a, 0x00].repeat(n / 2)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn central_in_1gib_refuses_amplification_keeps_serving_and_loses_nothing() {
    let Some(cg) = cgroup("meshtrace-central", 1 << 30) else {
        return;
    };
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("central-1g"),
        Opts {
            wrapper: cg.wrapper(),
            ..Opts::default()
        },
    );
    assert!(c.log().contains("memory limits"), "{}", c.log());
    let steady = Steady::start(c.otlp_port, 2);
    let t0 = Instant::now();

    // 16 MiB of empty ResourceSpans (under otlp.max_message_bytes), gzipped to ~16 KB
    // (and in zstd to less), four at once, three times: each decodes to gigabytes.
    let bomb = gzip(&empty_resource_spans(16 * MIB - 64));
    let zstd_bomb = zstd::bulk::compress(&empty_resource_spans(16 * MIB - 64), 19).unwrap();
    eprintln!(
        "gzip bomb: {} bytes on the wire, zstd: {}",
        bomb.len(),
        zstd_bomb.len()
    );
    for _ in 0..3 {
        let answers: Vec<(u16, String)> = std::thread::scope(|s| {
            let hs: Vec<_> = [("gzip", &bomb), ("zstd", &zstd_bomb)]
                .repeat(2)
                .into_iter()
                .map(|(encoding, body)| {
                    let port = c.otlp_port;
                    s.spawn(move || send(port, &[("content-encoding", encoding)], body))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (status, text) in answers {
            assert_eq!(status, 413, "{text}");
            assert!(
                text.contains("memory.decode_bytes"),
                "names the limit: {text}"
            );
        }
    }
    // The same over gRPC, uncompressed: RESOURCE_EXHAUSTED with no retry information (final), naming the limit.
    let raw = empty_resource_spans(16 * MIB - 64);
    let answers: Vec<(String, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (code, details, _) = grpc_raw(
                        c.grpc_port,
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                        &raw,
                    );
                    (code, details)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, details) in answers {
        assert_eq!(code, "RESOURCE_EXHAUSTED", "final: {details}");
        assert!(details.contains("memory.decode_bytes"), "{details}");
    }
    // One large resource (1 MB) shared by 100 spans: accepted, stored once.
    let mut big = request("big-resource", vec![]);
    big.resource_spans[0].resource = Some(Resource {
        attributes: vec![
            kv("service.name", "big-resource"),
            kv("blob", &"x".repeat(MIB)),
        ],
        ..Default::default()
    });
    let tid = [0xbb; 16];
    big.resource_spans[0].scope_spans[0].spans = (0..100u64)
        .map(|i| Span {
            trace_id: tid.to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "op".into(),
            start_time_unix_nano: now_ns(),
            end_time_unix_nano: now_ns() + 1000,
            ..Default::default()
        })
        .collect();
    for _ in 0..10 {
        let (status, text) = send(c.otlp_port, &[], &big.encode_to_vec());
        assert_eq!(status, 200, "{text}");
    }
    // Other clients were served throughout.
    assert_eq!(c.get("/api/services").0, 200);
    let acked = steady.stop();
    eprintln!("attacks took {:?}", t0.elapsed());
    assert!(
        acked.len() > 10,
        "the steady client got through: {}",
        acked.len()
    );
    assert_all_found(&c, &acked, 20);
    let m = c.get("/metrics").1;
    let refused: u64 = m
        .lines()
        .filter(|l| l.starts_with("meshtrace_collector_memory_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let peak = cg.peak_bytes();
    eprintln!(
        "central in 1 GiB: cgroup peak {} MB (page cache included), process peak {} MB, refused by the memory limits {refused}, OOM kills {}",
        peak / MIB as u64,
        peak_rss_mb(&c),
        cg.oom_kills()
    );
    assert_eq!(cg.oom_kills(), 0);
    assert!(c.get("/healthz").0 == 200, "alive");
    drop(c);
}

#[test]
fn sidecar_in_64mib_refuses_what_cannot_fit_and_delivers_what_it_acknowledged() {
    let Some(cg) = cgroup("meshtrace-sidecar", 64 << 20) else {
        return;
    };
    let central_port = meshtrace_testkit::free_port();
    let mut opts = Opts::sidecar(&format!("http://127.0.0.1:{central_port}"));
    opts.wrapper = cg.wrapper();
    let sidecar = Collector::start_opts(meshtrace_testkit::scratch_path("sidecar-64m"), opts);
    let log = sidecar.log();
    assert!(log.contains("memory limits"), "{log}");
    // 2,000 spans acknowledged and queued while the central collector is down.
    let mut acked = Vec::new();
    for seq in 0..100u32 {
        let (status, text) = send(sidecar.otlp_port, &[], &trace_body(9, seq, 20));
        assert_eq!(status, 200, "{text}");
        acked.push(trace_id(9, seq));
    }
    // A 1.5 KB gzip body inflating to 1.5 MB of empty ResourceSpans (~100 MB decoded).
    let bomb = gzip(&empty_resource_spans(3 * MIB / 2));
    eprintln!("sidecar gzip bomb: {} bytes", bomb.len());
    for _ in 0..5 {
        let (status, text) = send(sidecar.otlp_port, &[("content-encoding", "gzip")], &bomb);
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("memory.decode_bytes"), "{text}");
    }
    // A 7 MiB export of ordinary spans: more than a 64 MiB sidecar can decode.
    let mut seven = Vec::new();
    let mut seq = 1000;
    while seven.len() < 7 * MIB {
        seven.extend(trace_body(10, seq, 200));
        seq += 1;
    }
    let (status, text) = send(sidecar.otlp_port, &[], &seven);
    eprintln!("7 MiB export: {status} {text}");
    assert!(status == 413 || status == 200, "{status} {text}");
    assert_eq!(sidecar.get("/healthz").0, 200, "alive:\n{}", sidecar.log());
    // The central collector comes up: everything acknowledged arrives.
    let central = Collector::start_opts(
        meshtrace_testkit::scratch_path("central-for-sidecar"),
        Opts {
            grpc_port: Some(central_port),
            ..Opts::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(
        &central.get("/metrics").1,
        "meshtrace_collector_spans_stored_total",
    ) < 2000
    {
        assert!(
            Instant::now() < deadline,
            "sidecar never delivered:\n{}",
            sidecar.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_all_found(&central, &acked, 20);
    let peak = cg.peak_bytes();
    eprintln!(
        "sidecar in 64 MiB: cgroup peak {} MB, process peak {} MB, OOM kills {}",
        peak / MIB as u64,
        peak_rss_mb(&sidecar),
        cg.oom_kills()
    );
    assert_eq!(cg.oom_kills(), 0);
    drop(sidecar);
}

/// `n` spans of one trace in one request.
fn big_trace_body(tid: [u8; 16], from: u64, n: u64) -> Vec<u8> {
    let now = now_ns();
    let spans = (from..from + n)
        .map(|i| Span {
            trace_id: tid.to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("op{}", i % 7),
            kind: 2,
            start_time_unix_nano: now + i,
            end_time_unix_nano: now + i + 1000,
            attributes: (0..5)
                .map(|k| kv(&format!("attr.{k}"), &format!("value-{i}-{k}")))
                .collect(),
            ..Default::default()
        })
        .collect();
    request("huge", spans).encode_to_vec()
}

#[test]
fn central_in_1gib_answers_huge_queries_within_budget_while_ingest_goes_on() {
    let Some(cg) = cgroup("meshtrace-queries", 1 << 30) else {
        return;
    };
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("central-queries"),
        Opts {
            wrapper: cg.wrapper(),
            ..Opts::default()
        },
    );
    // A trace of 120,000 spans (over query.max_spans, 100,000), and 2,000 small traces.
    let huge = [0x77; 16];
    for part in 0..24 {
        let (status, text) = send(c.otlp_port, &[], &big_trace_body(huge, part * 5000, 5000));
        assert_eq!(status, 200, "{text}");
    }
    let mut small = Vec::new();
    for seq in 0..100u32 {
        let mut body = Vec::new();
        for k in 0..20 {
            let s = seq * 20 + k;
            body.extend(trace_body(3, s, 5));
            small.push(trace_id(3, s));
        }
        let (status, text) = send(c.otlp_port, &[], &body);
        assert_eq!(status, 200, "{text}");
    }
    let steady = Steady::start(c.otlp_port, 1);
    let by_id = format!("/api/traces/{}", hex(&huge));
    // Jaeger's api_v3 (what the current Jaeger UI, Grafana's v3 mode and meshtrace's
    // own UI read): the same budget.
    let v3_by_id = format!("/api/v3/traces/{}", hex(&huge));
    let unbounded = "/api/traces?service=steady&lookback=1h&limit=1000000000".to_string();
    let thousand_ids = format!(
        "/api/traces?{}",
        small[..1000]
            .iter()
            .map(|t| format!("traceID={}", hex(t)))
            .collect::<Vec<_>>()
            .join("&")
    );
    // One at a time: each answers within its budget, saying what it left out.
    let (status, body) = get_big(c.query_port, &by_id);
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let spans = v["data"][0]["spans"].as_array().unwrap().len();
    let warning = v["data"][0]["warnings"][0]
        .as_str()
        .unwrap_or("")
        .to_string();
    eprintln!(
        "120k-span trace by id: {spans} spans, {} MB of JSON; warning: {warning}",
        body.len() / MIB
    );
    // Cut by query.max_spans (100,000) or, first, by the bytes one read may hold
    // (query.max_bytes / query.max_concurrent: ~100 MiB in 1 GiB), and said.
    assert!((50_000..=100_000).contains(&spans), "{spans}");
    assert!(
        warning.contains("query.max_spans") || warning.contains("query.max_bytes"),
        "{warning}"
    );
    drop((body, v));
    let (status, body) = get_big(c.query_port, &v3_by_id);
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let v3_spans: usize = v["result"]["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["scopeSpans"].as_array().unwrap())
        .map(|s| s["spans"].as_array().unwrap().len())
        .sum();
    eprintln!(
        "120k-span trace by id over api_v3: {v3_spans} spans, {} MB of JSON, process peak so far {} MB",
        body.len() / MIB,
        peak_rss_mb(&c)
    );
    assert_eq!(v3_spans, spans, "the same budget holds for api_v3");
    drop((body, v));
    let (status, body) = get_big(c.query_port, &thousand_ids);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1000);
    let (status, body) = get_big(c.query_port, &unbounded);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = v["data"].as_array().unwrap().len();
    assert!((1..=1500).contains(&n), "query.max_traces: {n}");
    // Eight at once: they run four at a time; each is answered, or told to retry.
    let paths = [
        &by_id,
        &thousand_ids,
        &unbounded,
        &v3_by_id,
        &thousand_ids,
        &by_id,
        &v3_by_id,
        &v3_by_id,
    ];
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = paths
            .iter()
            .map(|p| s.spawn(|| get_big(c.query_port, p).0))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("eight heavy queries at once: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    let acked = steady.stop();
    assert!(!acked.is_empty(), "ingest went on during the queries");
    assert_all_found(&c, &acked, 20);
    eprintln!(
        "central in 1 GiB with huge queries: cgroup peak {} MB (page cache included), process peak {} MB, OOM kills {}",
        cg.peak_bytes() / MIB as u64,
        peak_rss_mb(&c),
        cg.oom_kills()
    );
    assert_eq!(cg.oom_kills(), 0);
    assert_eq!(c.get("/healthz").0, 200);
}

#[test]
fn central_in_1gib_under_1500_connections_acknowledges_in_time_and_loses_nothing() {
    let Some(cg) = cgroup("meshtrace-overload", 1 << 30) else {
        return;
    };
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("central-overload"),
        Opts {
            wrapper: cg.wrapper(),
            ..Opts::default()
        },
    );
    let port = c.otlp_port;
    let stop = Arc::new(AtomicBool::new(false));
    // (trace id, seconds to its acknowledgement)
    type Acked = Vec<([u8; 16], f64)>;
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let statuses: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Arc::default();
    let senders: Vec<_> = (0..1500u32)
        .map(|i| {
            let (stop, acked, statuses) = (stop.clone(), acked.clone(), statuses.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut seq = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let s = i * 100_000 + seq;
                        // ~85 KB each: 1,500 of them in flight are ~130 MB on the wire.
                        let body = trace_body_padded(4, s, 20, 4096);
                        let t = Instant::now();
                        let status = post(port, "application/x-protobuf", &[], &body)
                            .map_or(0, |m| m.status());
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                        if status == 200 {
                            acked
                                .lock()
                                .unwrap()
                                .push((trace_id(4, s), t.elapsed().as_secs_f64()));
                        } else {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        seq += 1;
                    }
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    // Other clients are still served while the 1,500 press on.
    let (status, _) = c.get("/api/services");
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(status, 200, "the query port answered during the overload");
    let acked = acked.lock().unwrap().clone();
    let mut lat: Vec<f64> = acked.iter().map(|a| a.1).collect();
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "1,500 senders for 10 s: answers {:?} (0: connection closed at the limit); {} acknowledged, ack latency p50 {:.2} s p99 {:.2} s max {:.2} s",
        statuses.lock().unwrap(),
        acked.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert!(acked.len() > 100, "some got through");
    // The latencies are printed, not asserted (a busy machine stretches them): that an
    // export is answered within server.request_timeout or not acknowledged at all is
    // shown by collector_resources.rs (a trickling body gets 503 at the timeout).
    let ids: Vec<[u8; 16]> = acked.iter().map(|a| a.0).collect();
    assert_all_found(&c, &ids, 20);
    eprintln!(
        "central in 1 GiB under 1,500 connections: cgroup peak {} MB (page cache included), process peak {} MB, OOM kills {}",
        cg.peak_bytes() / MIB as u64,
        peak_rss_mb(&c),
        cg.oom_kills()
    );
    assert_eq!(cg.oom_kills(), 0);
    assert_eq!(c.get("/healthz").0, 200);
}
