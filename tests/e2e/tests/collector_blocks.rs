//! The blocks engine on a real S3-compatible server (`s3s-fs`): blocks reach
//! the bucket and serve a collector that has nothing on its disk; a SIGKILL
//! during uploads loses nothing acknowledged and leaves no partial block
//! visible; with the object store down, the WAL takes writes up to
//! `store.wal.max_bytes`, then ingest answers 503 + Retry-After, and once the
//! store is back, uploads resume and the WAL shrinks.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{post, post_otlp, post_to, Collector, Opts};
use meshtrace_testkit::otlp::{kv, now_ns, request};
use meshtrace_testkit::s3::S3Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SPANS_PER_TRACE: usize = 20;

fn hex(t: &[u8]) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trace of `SPANS_PER_TRACE` spans of service `svc`.
fn trace_request(cycle: u8, thread: u8, seq: u32) -> ([u8; 16], Vec<u8>) {
    let now = now_ns();
    let mut tid = [0u8; 16];
    tid[0] = 0xb0 | thread;
    tid[1] = cycle;
    tid[12..].copy_from_slice(&seq.to_be_bytes());
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
            start_time_unix_nano: now + i as u64,
            end_time_unix_nano: now + 1_000_000,
            attributes: (0..8)
                .map(|k| kv(&format!("attr{k}"), &format!("value-{k}-{seq}")))
                .collect(),
            ..Default::default()
        })
        .collect();
    (tid, request("svc", spans).encode_to_vec())
}

/// A blocks-engine collector on `s3`'s bucket `traces`, cutting blocks often.
fn collector_on(s3: &S3Server, data_dir: std::path::PathBuf, extra: &str) -> Collector {
    let yaml = format!(
        "{}    max_age: 1s\n    max_bytes: 1048576\n    poll_interval: 1s\n{extra}",
        s3.store_yaml("traces", "mesh")
    );
    Collector::start_opts(
        data_dir,
        Opts {
            yaml: Some(yaml),
            ..Opts::default()
        },
    )
}

/// Every trace in `ids` found by id, whole, and exactly once per span.
fn assert_all_found(c: &Collector, ids: &[[u8; 16]]) {
    let mut missing = Vec::new();
    for chunk in ids.chunks(50) {
        let q: Vec<String> = chunk
            .iter()
            .map(|t| format!("traceID={}", hex(t)))
            .collect();
        let (status, body) = c.get(&format!("/api/traces?{}", q.join("&")));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let traces = v["data"].as_array().unwrap();
        for t in traces {
            assert_eq!(
                t["spans"].as_array().unwrap().len(),
                SPANS_PER_TRACE,
                "every span once: {}",
                t["traceID"]
            );
        }
        let found: Vec<&str> = traces
            .iter()
            .filter_map(|t| t["traceID"].as_str())
            .collect();
        missing.extend(
            chunk
                .iter()
                .map(|t| hex(t))
                .filter(|h| !found.contains(&h.as_str())),
        );
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged traces missing, e.g. {:?}\n{}",
        missing.len(),
        ids.len(),
        &missing[..missing.len().min(3)],
        c.log()
    );
}

/// Trace ids the search finds for service `svc` (limit 10,000).
fn searched(c: &Collector) -> usize {
    let (status, body) = c.get("/api/traces?service=svc&limit=10000&lookback=2h");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"].as_array().unwrap().len()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn blocks_in_the_bucket_serve_a_collector_with_an_empty_disk() {
    let s3 = S3Server::start("traces");
    let a = collector_on(&s3, meshtrace_testkit::scratch_path("blocks-a"), "");
    let ids: Vec<[u8; 16]> = (0..200u32)
        .map(|seq| {
            let (tid, body) = trace_request(1, 0, seq);
            assert_eq!(post_otlp(a.otlp_port, &body), 200);
            tid
        })
        .collect();
    // The head is cut within a second or two; its blocks reach the bucket.
    wait_for("blocks in the bucket", Duration::from_secs(60), || {
        !s3.objects_ending("meta.json").is_empty()
            && a.get("/metrics").1.contains("meshtrace") // still serving
            && std::fs::read_dir(a.data_dir.join("wal"))
                .map(|d| d.count())
                .unwrap_or(0)
                <= 3
    });
    assert_all_found(&a, &ids);
    assert_eq!(searched(&a), ids.len());
    let _ = a.kill_keep_data();
    assert!(!s3.objects_ending("data.parquet").is_empty());

    // Another collector with an empty data directory reads everything from the bucket.
    let b = collector_on(&s3, meshtrace_testkit::scratch_path("blocks-b"), "");
    assert_all_found(&b, &ids);
    assert_eq!(searched(&b), ids.len(), "search over blocks alone");
    let (_, services) = b.get("/api/services");
    assert!(services.contains("\"svc\""), "{services}");
    // Tag filters on the blocks' tag column (AND, OR, a resource attribute).
    let tagged = |query: &str| {
        let (status, body) = b.get(&format!(
            "/api/traces?service=svc&limit=10000&lookback=2h&{query}"
        ));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"].as_array().unwrap().len()
    };
    assert_eq!(tagged("tag=attr3:value-3-17"), 1);
    assert_eq!(tagged("tag=attr3:value-3-17&tag=attr4:value-4-18"), 0);
    assert_eq!(
        tagged("tag=attr3:value-3-17&tag=attr4:value-4-18&tagsOp=or"),
        2
    );
    assert_eq!(tagged("tag=service.name:svc"), ids.len());
}

#[test]
fn sigkill_during_uploads_loses_nothing_and_shows_no_partial_block() {
    let s3 = S3Server::start("traces");
    let mut dir = meshtrace_testkit::scratch_path("blocks-kill");
    let mut acked = Vec::new();
    for cycle in 0..3u8 {
        let c = collector_on(&s3, dir.clone(), "");
        let port = c.otlp_port;
        let got: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..4u8)
            .map(|t| {
                let (got, stop) = (got.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seq = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let (tid, body) = trace_request(cycle, t, seq);
                        match post_otlp(port, &body) {
                            200 => got.lock().unwrap().push(tid),
                            0 => break,
                            _ => {}
                        }
                        seq += 1;
                    }
                })
            })
            .collect();
        // Heads of 1 MiB are cut and uploaded continuously: the kill lands
        // while blocks are written and uploaded.
        std::thread::sleep(Duration::from_millis(2500 + 700 * u64::from(cycle)));
        dir = c.kill_keep_data();
        stop.store(true, Ordering::SeqCst);
        for s in senders {
            s.join().unwrap();
        }
        acked.extend(got.lock().unwrap().iter().copied());
    }
    assert!(acked.len() > 100, "too little load: {}", acked.len());
    let t = Instant::now();
    let c = collector_on(&s3, dir, "");
    eprintln!(
        "{} traces acknowledged; restarted in {:?}; {} blocks",
        acked.len(),
        t.elapsed(),
        s3.objects_ending("meta.json").len()
    );
    assert!(
        !s3.objects_ending("meta.json").is_empty(),
        "blocks were uploaded during the load"
    );
    // Every visible block is whole: its data object is there at the size its index says.
    for meta in s3.objects_ending("meta.json") {
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        let data = meta.with_file_name("data.parquet");
        assert_eq!(
            std::fs::metadata(&data).map(|m| m.len()).ok(),
            m["data_bytes"].as_u64(),
            "{} has its whole data",
            meta.display()
        );
    }
    let t = Instant::now();
    assert_all_found(&c, &acked);
    eprintln!("all found in {:?}", t.elapsed());
}

#[test]
fn object_store_down_fills_the_wal_then_refuses_and_recovers() {
    let mut s3 = S3Server::start("traces");
    let c = collector_on(
        &s3,
        meshtrace_testkit::scratch_path("blocks-down"),
        "  wal:\n    max_bytes: 2097152\n",
    );
    s3.stop();
    // Acknowledged into the WAL while the store is down, up to its limit.
    let mut acked = Vec::new();
    let mut refusal = None;
    for seq in 0..2000u32 {
        let (tid, body) = trace_request(7, 0, seq);
        let m = post(c.otlp_port, "application/x-protobuf", &[], &body).expect("an answer");
        let text = String::from_utf8_lossy(&m.body).to_string();
        match m.status() {
            200 => acked.push(tid),
            503 => {
                refusal = Some((m.header("retry-after"), text));
                break;
            }
            s => panic!("unexpected {s}: {text}"),
        }
    }
    let (retry_after, text) = refusal.expect("a full WAL refuses");
    assert!(
        acked.len() > 20,
        "the WAL took writes first: {}",
        acked.len()
    );
    assert!(retry_after.is_some(), "503 with Retry-After: {text}");
    assert!(text.contains("wal.max_bytes"), "names the limit: {text}");
    // Reads keep working from the WAL's head and pending blocks.
    assert_all_found(&c, &acked[..10]);

    s3.restart();
    // Uploads resume (the block thread retries with a backoff of at most 30 s)
    // and the WAL shrinks: writes are taken again.
    wait_for("writes accepted again", Duration::from_secs(90), || {
        let (_, body) = trace_request(8, 0, 0);
        post_otlp(c.otlp_port, &body) == 200
    });
    wait_for("the WAL released", Duration::from_secs(90), || {
        std::fs::read_dir(c.data_dir.join("wal"))
            .map(|d| d.count())
            .unwrap_or(99)
            <= 3
    });
    assert_all_found(&c, &acked);
}

/// One span of service `svc` in trace `tid`, started `ago_s` seconds ago.
fn one_span(tid: [u8; 16], ago_s: u64) -> Vec<u8> {
    let start = now_ns() - ago_s * 1_000_000_000;
    let (_, body) = trace_request(0, 0, 0);
    let mut req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans.truncate(1);
    spans[0].trace_id = tid.to_vec();
    spans[0].start_time_unix_nano = start;
    spans[0].end_time_unix_nano = start + 1_000_000;
    req.encode_to_vec()
}

#[test]
fn an_archived_trace_outlives_retention() {
    let s3 = S3Server::start("traces");
    let extra = "retention: 2d\nmax_span_age: 10d\n";
    let c = collector_on(
        &s3,
        meshtrace_testkit::scratch_path("blocks-archive"),
        extra,
    );
    let (old, new) = ([0xa1; 16], [0xa2; 16]);
    assert_eq!(post_otlp(c.otlp_port, &one_span(old, 5 * 86_400)), 200);
    assert_eq!(post_otlp(c.otlp_port, &one_span(new, 10)), 200);
    let archive = |id: &str| {
        let m = post_to(
            c.query_port,
            &format!("/api/archive/{id}"),
            "application/json",
            &[],
            b"",
        )
        .expect("an answer");
        (m.status(), String::from_utf8_lossy(&m.body).to_string())
    };
    let (status, body) = archive(&hex(&old));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"data\":[]"), "Jaeger's answer: {body}");
    assert_eq!(archive(&"ff".repeat(16)).0, 404);
    assert_eq!(archive("not-hex").0, 400);
    assert!(
        !s3.objects_ending(&format!("{}/data.parquet", hex(&old)))
            .is_empty(),
        "archived into the bucket"
    );
    let lookback = "/api/traces?service=svc&lookback=240h&limit=100";
    assert!(
        c.get(lookback).1.contains(&hex(&old)),
        "stored before retention runs"
    );
    // A restart runs retention at once: the old trace's day goes from the store.
    let dir = c.kill_keep_data();
    let c = collector_on(&s3, dir, extra);
    wait_for(
        "retention to drop the old day",
        Duration::from_secs(60),
        || !c.get(lookback).1.contains(&hex(&old)),
    );
    assert!(
        c.get(lookback).1.contains(&hex(&new)),
        "today's trace stays"
    );
    // The archive still has it: a lookup by id falls back to it.
    let (status, body) = c.get(&format!("/api/traces/{}", hex(&old)));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("op0"), "{body}");
    let (status, _) = c.get(&format!("/api/traces/{}", hex(&[0xa3; 16])));
    assert_eq!(status, 404, "unknown everywhere");
}

/// A request with one span (`span` 1-based) of trace `tid` for `service`.
fn span_of(tid: [u8; 16], span: u64, service: &str) -> Vec<u8> {
    let (_, body) = trace_request(0, 0, 0);
    let mut req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    req.resource_spans[0].resource.as_mut().unwrap().attributes[0]
        .value
        .as_mut()
        .unwrap()
        .value = Some(any_value::Value::StringValue(service.into()));
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans.truncate(1);
    spans[0].trace_id = tid.to_vec();
    spans[0].span_id = span.to_be_bytes().to_vec();
    spans[0].parent_span_id = if span == 1 {
        vec![]
    } else {
        1u64.to_be_bytes().to_vec()
    };
    req.encode_to_vec()
}

#[test]
fn three_replicas_on_one_bucket_find_every_trace() {
    let s3 = S3Server::start("traces");
    let ports: Vec<u16> = (0..3).map(|_| meshtrace_testkit::free_port()).collect();
    let replica = |i: usize| {
        let peers: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("      - 127.0.0.1:{}\n", ports[j]))
            .collect();
        // Heads are not cut during the test: every read needs the peers.
        let yaml = format!(
            "{}    max_age: 10m\n    replica: r{i}\n    peer_timeout: 2s\n    peers:\n{}",
            s3.store_yaml("traces", "mesh"),
            peers.concat()
        );
        Collector::start_opts(
            meshtrace_testkit::scratch_path(&format!("replica-{i}")),
            Opts {
                yaml: Some(yaml),
                query_port: Some(ports[i]),
                ..Opts::default()
            },
        )
    };
    let mut replicas: Vec<Collector> = (0..3).map(replica).collect();
    // One trace on each replica, and one whose spans went to all three.
    let own: Vec<[u8; 16]> = (0..3u8).map(|i| [0xc0 + i; 16]).collect();
    for (i, tid) in own.iter().enumerate() {
        assert_eq!(
            post_otlp(replicas[i].otlp_port, &span_of(*tid, 1, "svc")),
            200
        );
    }
    let split = [0xcf; 16];
    for (i, r) in replicas.iter().enumerate() {
        let body = span_of(split, i as u64 + 1, &format!("svc{i}"));
        assert_eq!(post_otlp(r.otlp_port, &body), 200);
    }
    for r in &replicas {
        for tid in &own {
            let (status, body) = r.get(&format!("/api/traces/{}", hex(tid)));
            assert_eq!(
                status,
                200,
                "replica on {} finds {}: {body}",
                r.query_port,
                hex(tid)
            );
        }
        let (_, body) = r.get(&format!("/api/traces/{}", hex(&split)));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["data"][0]["spans"].as_array().map_or(0, Vec::len),
            3,
            "the split trace whole from any replica: {body}"
        );
        let (_, found) = r.get("/api/traces?service=svc&lookback=1h&limit=10");
        for tid in &own {
            assert!(
                found.contains(&hex(tid)),
                "search on {} finds {}",
                r.query_port,
                hex(tid)
            );
        }
        let (_, services) = r.get("/api/services");
        for s in ["svc0", "svc1", "svc2"] {
            assert!(services.contains(s), "{services}");
        }
    }
    // A replica down: the others answer with what they have, and say what may be missing.
    let down = replicas.pop().unwrap();
    let _ = down.kill_keep_data();
    let (status, body) = replicas[0].get(&format!("/api/traces/{}", hex(&split)));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["spans"].as_array().map_or(0, Vec::len), 2);
    assert!(
        body.contains("did not answer") && body.contains(&ports[2].to_string()),
        "a partial-result warning naming the replica: {body}"
    );
}

/// `n` spans of service `svc`, operation `GET /x`, each sampled with probability 0.5.
fn sampled(n: usize, seq: u32) -> Vec<u8> {
    let (_, body) = trace_request(9, 9, seq);
    let mut req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    let template = spans[0].clone();
    spans.clear();
    for i in 0..n {
        let mut s = template.clone();
        s.trace_id[..4].copy_from_slice(&seq.to_be_bytes());
        s.trace_id[4..8].copy_from_slice(&(i as u32).to_be_bytes());
        s.parent_span_id.clear();
        s.name = "GET /x".into();
        s.attributes = vec![
            KeyValue {
                key: "sampler.type".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("probabilistic".into())),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "sampler.param".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(0.5)),
                }),
                ..Default::default()
            },
        ];
        spans.push(s);
    }
    req.encode_to_vec()
}

#[test]
fn replicas_on_one_bucket_serve_the_same_adaptive_probabilities() {
    let s3 = S3Server::start("traces");
    let start = |i: usize| {
        let yaml = format!(
            "{}    replica: a{i}\nsampling:\n  adaptive:\n    services: [svc]\n    calculation_interval: 2s\n    smoothing: 1\n    target_traces_per_second: 1\n    min_sampling_probability: 0.0001\n",
            s3.store_yaml("traces", "mesh")
        );
        Collector::start_opts(
            meshtrace_testkit::scratch_path(&format!("adaptive-{i}")),
            Opts {
                yaml: Some(yaml),
                ..Opts::default()
            },
        )
    };
    let replicas: Vec<Collector> = (0..3).map(start).collect();
    // Uneven load: 30 spans/s to the first, 10/s to the second, none to the third.
    let probability = |c: &Collector| -> f64 {
        let (_, est) = c.get_sampling("/api/sampling/adaptive");
        let v: serde_json::Value = serde_json::from_str(&est).unwrap_or_default();
        v["operations"]
            .as_array()
            .and_then(|ops| ops.iter().find(|o| o["operation"] == "GET /x"))
            .and_then(|o| o["probability"].as_f64())
            .unwrap_or(-1.0)
    };
    let t0 = Instant::now();
    let mut seq = 0;
    let mut agreed = None;
    while t0.elapsed() < Duration::from_secs(40) {
        let tick = Instant::now();
        assert_eq!(post_otlp(replicas[0].otlp_port, &sampled(30, seq)), 200);
        assert_eq!(post_otlp(replicas[1].otlp_port, &sampled(10, seq)), 200);
        seq += 1;
        if t0.elapsed() > Duration::from_secs(8) {
            let ps: Vec<f64> = replicas.iter().map(probability).collect();
            if ps.iter().all(|p| *p > 0.0) && ps.iter().all(|p| (p - ps[0]).abs() < 1e-12) {
                agreed = Some(ps[0]);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1000).saturating_sub(tick.elapsed()));
    }
    let p = agreed.unwrap_or_else(|| {
        panic!(
            "the replicas never agreed: {:?}",
            replicas.iter().map(probability).collect::<Vec<_>>()
        )
    });
    // 40 spans/s sampled at 0.5 stand for 80 requests/s: p = 1/80 for one trace/s,
    // which no replica would compute from its own spans (1/60, 1/20, none).
    assert!(
        (1.0 / 120.0..=1.0 / 50.0).contains(&p),
        "p {p}: from the sum of the replicas' counts (about 1/80)"
    );
}

#[test]
fn replicas_on_one_bucket_show_the_whole_mesh_in_the_monitor_tab() {
    let s3 = S3Server::start("traces");
    let start = |i: usize| {
        let yaml = format!("{}    replica: m{i}\n", s3.store_yaml("traces", "mesh"));
        Collector::start_opts(
            meshtrace_testkit::scratch_path(&format!("spm-{i}")),
            Opts {
                yaml: Some(yaml),
                ..Opts::default()
            },
        )
    };
    let replicas: Vec<Collector> = (0..2).map(start).collect();
    // Both replicas' spans land in the same minute (not its last seconds).
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
        > 45
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(post_otlp(replicas[0].otlp_port, &sampled(30, 1)), 200);
    assert_eq!(post_otlp(replicas[1].otlp_port, &sampled(10, 2)), 200);
    // The call rate (per second) of the last closed minutes, as the Monitor tab reads it.
    let calls = |c: &Collector| -> f64 {
        let (_, body) = c.get(
            "/api/metrics/calls?service=svc&groupByOperation=true&step=60000&ratePer=60000&lookback=600000",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["metricPoints"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["gaugeValue"]["doubleValue"].as_f64())
            .fold(0.0, f64::max)
    };
    // 40 calls in one minute: 40/60 per second. Alone, the replicas would show
    // 30/60 and 10/60.
    const WHOLE: f64 = 40.0 / 60.0;
    let mut seen = (0.0, 0.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        seen = (calls(&replicas[0]), calls(&replicas[1]));
        // (While the minute is in progress its rate is over the seconds so far.)
        if (seen.0 - WHOLE).abs() < 0.01 && (seen.1 - WHOLE).abs() < 0.01 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        (seen.0 - WHOLE).abs() < 0.01 && (seen.1 - WHOLE).abs() < 0.01,
        "both replicas count the mesh's 40 calls of that minute (30 + 10): {seen:?}"
    );
}

#[test]
fn migrate_converts_sqlite_partitions_into_blocks() {
    let s3 = S3Server::start("traces");
    let sqlite = Collector::start_opts(
        meshtrace_testkit::scratch_path("sqlite"),
        meshtrace_testkit::collector::Opts {
            args: vec!["--store-engine".into(), "sqlite".into()],
            ..Default::default()
        },
    );
    let ids: Vec<[u8; 16]> = (0..100u32)
        .map(|seq| {
            let (tid, body) = trace_request(3, 0, seq);
            assert_eq!(post_otlp(sqlite.otlp_port, &body), 200);
            tid
        })
        .collect();
    // One trace on another day: one block per day.
    let old = [0xd7; 16];
    assert_eq!(post_otlp(sqlite.otlp_port, &one_span(old, 2 * 86_400)), 200);
    let (status, dir, log) = sqlite.terminate_keep_data();
    assert!(status.success(), "{log}");
    let yaml = format!("{}    max_age: 1m\n", s3.store_yaml("traces", "mesh"));
    let config = dir.join("blocks.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let out = meshtrace_testkit::collector::command()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&dir)
        .arg("migrate")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("migration done"), "{text}");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("spans-"))
        .collect();
    assert!(left.iter().all(|n| n.ends_with(".migrated")), "{left:?}");
    assert_eq!(left.len(), 2, "two day partitions set aside: {left:?}");
    assert!(
        s3.objects_ending("meta.json").len() >= 2,
        "blocks in the bucket"
    );
    // The blocks engine on the same directory serves everything.
    let c = Collector::start_opts(
        dir,
        Opts {
            yaml: Some(format!("max_span_age: 10d\n{yaml}")),
            ..Opts::default()
        },
    );
    assert_all_found(&c, &ids);
    assert_eq!(searched(&c), ids.len());
    let (status, _) = c.get(&format!("/api/traces/{}", hex(&old)));
    assert_eq!(status, 200);
}
