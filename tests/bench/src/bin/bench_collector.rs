//! `scripts/bench/collector`: the collector under OTLP gRPC load.
//!
//! Phase 1 drives the release binary in all-in-one mode with batches of 512
//! spans (~10 attributes each) over several connections until `--spans`
//! spans are stored; the collector's CPU (utime+stime from /proc) per stored
//! span, spans/s, export-call latency and RSS are measured. Phase 2 measures
//! trace-by-id and search latency on that store. Phase 3 sends `--sidecar-spans`
//! through a sidecar-mode collector forwarding to the central one and
//! measures the sidecar's CPU per span and RSS.

// A benchmark: setup that fails aborts the run with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use meshtrace_testkit::bench::{arg, clk_tck};
use meshtrace_testkit::collector::{metric, Collector, Opts};
use meshtrace_testkit::envoy::cpu_ticks;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCH: usize = 512;
const SPANS_PER_TRACE: usize = 8;
const SERVICES: usize = 10;
const OPERATIONS: usize = 20;

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

fn trace_id(n: u64) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[0] = 0xbe;
    t[8..].copy_from_slice(&n.to_be_bytes());
    t
}

/// One export: 512 spans (64 traces of 8 spans), one service per request.
fn request(conn: u64, seq: u64, now_ns: u64) -> ExportTraceServiceRequest {
    let service = (seq as usize + conn as usize) % SERVICES;
    let mut spans = Vec::with_capacity(BATCH);
    for t in 0..(BATCH / SPANS_PER_TRACE) as u64 {
        let tid = trace_id((conn << 40) | (seq << 8) | t);
        for s in 0..SPANS_PER_TRACE as u64 {
            let op = ((seq + t + s) as usize) % OPERATIONS;
            let dur = 1_000_000 * (1 + (t * 7 + s * 13) % 50);
            spans.push(Span {
                trace_id: tid.to_vec(),
                span_id: (s + 1).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    vec![]
                } else {
                    1u64.to_be_bytes().to_vec()
                },
                name: format!("GET /api/v1/op{op}"),
                kind: if s == 0 { 2 } else { 3 },
                start_time_unix_nano: now_ns,
                end_time_unix_nano: now_ns + dur,
                attributes: vec![
                    kv("http.request.method", "GET".into()),
                    kv("url.path", format!("/api/v1/op{op}/{seq}")),
                    kv(
                        "http.response.status_code",
                        if t % 20 == 0 {
                            "500".into()
                        } else {
                            "200".into()
                        },
                    ),
                    kv(
                        "server.address",
                        format!("svc{service}.bench.svc.cluster.local"),
                    ),
                    kv("user_agent.original", "bench/1.0".into()),
                    kv("network.peer.address", "10.0.0.7".into()),
                    kv(
                        "envoy.upstream.cluster",
                        format!("outbound|80||svc{service}"),
                    ),
                    kv(
                        "http.request.header.x-request-id",
                        format!("{conn}-{seq}-{t}-{s}"),
                    ),
                    kv("sampler.type", "probabilistic".into()),
                    kv("team", "bench".into()),
                ],
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", format!("svc{service}")),
                    kv("k8s.pod.name", format!("svc{service}-0")),
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

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn vm_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// Sends batches from `conns` connections until `total` spans are acknowledged.
/// Returns (acked spans, export latencies in ms, refused calls).
async fn drive(grpc_port: u16, conns: u64, total: u64, id_base: u64) -> (u64, Vec<f64>, u64) {
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (acked, refused, lat) = (acked.clone(), refused.clone(), lat.clone());
        let url = format!("http://127.0.0.1:{grpc_port}");
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.expect("connect");
            let mut seq = 0u64;
            while acked.load(Ordering::Relaxed) < total {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                let req = request(id_base + c, seq, now);
                let t = Instant::now();
                match client.export(req).await {
                    Ok(_) => {
                        acked.fetch_add(BATCH as u64, Ordering::Relaxed);
                        lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                        seq += 1;
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let lat = lat.lock().unwrap().clone();
    (
        acked.load(Ordering::Relaxed),
        lat,
        refused.load(Ordering::Relaxed),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = arg("--spans", 10_000_000);
    let conns = arg("--connections", 4);
    let sidecar_total = arg("--sidecar-spans", 1_000_000);
    let queries = arg("--queries", 200) as usize;
    let tck = clk_tck();
    let dir = std::env::temp_dir().join(format!("meshtrace-bench-{}", std::process::id()));
    let central = Collector::start_opts(
        dir.clone(),
        Opts {
            args: vec!["--retention".into(), "30d".into()],
            ..Opts::default()
        },
    );
    let pid = central.child.id();
    println!("# phase 1: {total} spans in batches of {BATCH} over {conns} OTLP gRPC connections");
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    let (acked, mut lat, refused) = drive(central.grpc_port, conns, total, 0).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / tck;
    let (_, metrics) = central.get("/metrics");
    let stored = metric(&metrics, "meshtrace_collector_spans_stored_total");
    let cpu_us_per_span = cpu_s * 1e6 / stored.max(1) as f64;
    let spans_per_s = acked as f64 / wall;
    let (ack_p50, ack_p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let rss_mb = vm_kb(pid, "VmHWM:") / 1024.0;
    let disk_mb = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / 1e6;
    println!(
        "stored {stored} spans in {wall:.1} s: {spans_per_s:.0} spans/s, {cpu_us_per_span:.2} collector cpu µs/span, ack p50 {ack_p50:.1} ms p99 {ack_p99:.1} ms, peak rss {rss_mb:.0} MB, {disk_mb:.0} MB on disk, {refused} refused calls"
    );

    println!("# phase 2: {queries} trace-by-id and {queries} searches on {stored} stored spans");
    let batches = acked / BATCH as u64 / conns.max(1);
    let mut by_id = Vec::new();
    let mut search = Vec::new();
    for i in 0..queries as u64 {
        let conn = i % conns;
        // Every connection sent at least half the average number of batches.
        let seq = (i * 7919) % (batches / 2).max(1);
        let tid = trace_id((conn << 40) | (seq << 8) | (i % 64));
        let hex: String = tid.iter().map(|b| format!("{b:02x}")).collect();
        let t = Instant::now();
        let (status, body) = central.get(&format!("/api/traces/{hex}"));
        by_id.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "trace {hex}: {}", &body[..body.len().min(200)]);
        let svc = i as usize % SERVICES;
        let op = (i as usize * 3) % OPERATIONS;
        let t = Instant::now();
        let (status, _) = central.get(&format!(
            "/api/traces?service=svc{svc}&operation=GET%20/api/v1/op{op}&lookback=24h&limit=20&minDuration=10ms"
        ));
        search.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200);
    }
    let (id_p50, id_p99) = (pct(&mut by_id, 0.5), pct(&mut by_id, 0.99));
    let (s_p50, s_p99) = (pct(&mut search, 0.5), pct(&mut search, 0.99));
    println!("trace by id p50 {id_p50:.1} ms p99 {id_p99:.1} ms; search (service+operation+minDuration, limit 20) p50 {s_p50:.1} ms p99 {s_p99:.1} ms");

    println!("# phase 3: {sidecar_total} spans through a sidecar collector to the central one");
    let sidecar = Collector::start_sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    let spid = sidecar.child.id();
    let c0 = cpu_ticks(spid);
    let (sacked, _, _) = drive(sidecar.grpc_port, conns, sidecar_total, 1 << 20).await;
    // Wait until it has forwarded everything it accepted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, m) = sidecar.get("/metrics");
        let fwd = metric(&m, "meshtrace_collector_spans_forwarded_total");
        if fwd >= sacked || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sidecar_cpu = (cpu_ticks(spid) - c0) as f64 / tck * 1e6 / sacked.max(1) as f64;
    let sidecar_rss = vm_kb(spid, "VmHWM:") / 1024.0;
    println!("sidecar: {sacked} spans, {sidecar_cpu:.2} cpu µs/span, peak rss {sidecar_rss:.1} MB");
    drop(sidecar);
    drop(central);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RESULT cpu_us_per_span={cpu_us_per_span:.2} spans_per_s={spans_per_s:.0} ack_p99_ms={ack_p99:.1} rss_mb={rss_mb:.0} stored_spans={stored} trace_by_id_p99_ms={id_p99:.1} search_p99_ms={s_p99:.1} sidecar_cpu_us_per_span={sidecar_cpu:.2} sidecar_rss_mb={sidecar_rss:.1}"
    );
}
