//! `scripts/bench/collector`: the collector under OTLP gRPC load.
//!
//! Phase 1 drives the release binary in all-in-one mode with batches of 512
//! spans (~10 attributes each) over several connections until `--spans`
//! spans are stored; the collector's CPU (utime+stime from /proc) per stored
//! span, spans/s, export-call latency and RSS are measured. Phase 2 measures
//! trace-by-id and search latency on that store. Phase 3 sends `--sidecar-spans`
//! through a sidecar-mode collector forwarding to the central one and
//! measures the sidecar's CPU per span and RSS. Phase D compares the two
//! `store.durability` modes (`fsync`, the default, and `os`) side by side,
//! interleaved over `--durability-rounds` rounds on fresh stores. Phase M
//! compares ingest with span metrics on and off (`metrics.enabled`) the same
//! way, then measures the memory of the metric tables at their cap: every span
//! a new operation, `metrics.max_series` 2,000 and 20,000, against metrics off.
//! `--metrics-only 1` runs phase M alone. Phase F measures stored spans per
//! second end to end through a sidecar (`sidecar.max_in_flight` 1 and 4)
//! against the central fed directly, interleaved (`--forward-rounds`,
//! `--forward-spans`, `--forward-sqlite 0` / `--forward-blocks 0` leave an
//! engine out, `--forward-pin 0` leaves the processes unpinned);
//! `--forward-only 1` runs it alone.

// A benchmark: setup that fails aborts the run with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use meshtrace_testkit::bench::{arg, clk_tck, pct};
use meshtrace_testkit::collector::{metric, Collector, Opts};
use meshtrace_testkit::envoy::cpu_ticks;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BATCH: usize = 512;
/// Phase M's cardinality run: every trace's spans get operations never seen before.
static UNIQUE_OPERATIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
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

/// Phase E: ids, request ids and start times with the entropy real spans have
/// (random 64-bit span ids, 128-bit request ids, µs-spread starts), so bytes
/// at rest are not flattered by sequential values.
static REAL_ENTROPY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn mix(tid: &[u8; 16], s: u64) -> u64 {
    // splitmix64 over the trace id and the span's index.
    let mut z = u64::from_be_bytes(tid[8..].try_into().unwrap())
        .wrapping_add(s.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Span `s` of trace `tid`: span 1 is the root, every other span its child.
fn span_in_trace(
    tid: &[u8; 16],
    s: u64,
    name: String,
    kind: i32,
    start_ns: u64,
    dur_ns: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    let real = REAL_ENTROPY.load(Ordering::Relaxed);
    let id = |s: u64| if real { mix(tid, s) | 1 } else { s + 1 };
    let start_ns = if real {
        start_ns + mix(tid, s + 1000) % 1_000_000
    } else {
        start_ns
    };
    Span {
        trace_id: tid.to_vec(),
        span_id: id(s).to_be_bytes().to_vec(),
        parent_span_id: if s == 0 {
            vec![]
        } else {
            id(0).to_be_bytes().to_vec()
        },
        name,
        kind,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + dur_ns,
        attributes,
        ..Default::default()
    }
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
            let name = if UNIQUE_OPERATIONS.load(Ordering::Relaxed) {
                format!("GET /api/v1/c{conn}/s{seq}/t{t}/s{s}")
            } else {
                format!("GET /api/v1/op{op}")
            };
            spans.push(span_in_trace(
                &tid,
                s,
                name,
                if s == 0 { 2 } else { 3 },
                now_ns,
                dur,
                vec![
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
                        if REAL_ENTROPY.load(Ordering::Relaxed) {
                            format!("{:016x}{:016x}", mix(&tid, s + 2000), mix(&tid, s + 3000))
                        } else {
                            format!("{conn}-{seq}-{t}-{s}")
                        },
                    ),
                    kv("sampler.type", "probabilistic".into()),
                    kv("team", "bench".into()),
                ],
            ));
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

const READBACK_TRACES: usize = 100;
const READBACK_SPANS: usize = 100;

/// 100 traces of 100 spans in service `readback`, one export per trace.
async fn write_readback(grpc_port: u16) {
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .expect("connect");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for t in 0..READBACK_TRACES as u64 {
        let tid = trace_id((0xfe << 40) | t);
        let spans = (0..READBACK_SPANS as u64)
            .map(|s| {
                span_in_trace(
                    &tid,
                    s,
                    format!("readback op{}", s % 10),
                    2,
                    now + s * 1000,
                    5_000_000,
                    vec![
                        kv("http.request.method", "GET".into()),
                        kv("url.path", format!("/readback/{t}/{s}")),
                        kv("http.response.status_code", "200".into()),
                    ],
                )
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "readback".into()),
                        kv("k8s.pod.name", "readback-0".into()),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        client.export(req).await.expect("readback export");
    }
}

struct QueryStats {
    id_p50: f64,
    id_p99: f64,
    s_p50: f64,
    s_p99: f64,
    /// Median time to read the 100×100 traces back in one search.
    readback_s: f64,
}

/// `queries` trace-by-id lookups and searches (service + operation +
/// minDuration, limit 20) of the traces `drive` sent: their latencies in ms.
fn id_and_search(c: &Collector, queries: usize, conns: u64, batches: u64) -> (Vec<f64>, Vec<f64>) {
    let mut by_id = Vec::new();
    let mut search = Vec::new();
    for i in 0..queries as u64 {
        let conn = i % conns;
        // Every connection sent at least half the average number of batches.
        let seq = (i * 7919) % (batches / 2).max(1);
        let tid = trace_id((conn << 40) | (seq << 8) | (i % 64));
        let hex: String = tid.iter().map(|b| format!("{b:02x}")).collect();
        let t = Instant::now();
        let (status, body) = c.get(&format!("/api/traces/{hex}"));
        by_id.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "trace {hex}: {}", &body[..body.len().min(200)]);
        let svc = i as usize % SERVICES;
        let op = (i as usize * 3) % OPERATIONS;
        let t = Instant::now();
        let (status, _) = c.get(&format!(
            "/api/traces?service=svc{svc}&operation=GET%20/api/v1/op{op}&lookback=24h&limit=20&minDuration=10ms"
        ));
        search.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200);
    }
    (by_id, search)
}

fn query_phase(c: &Collector, queries: usize, conns: u64, batches: u64) -> QueryStats {
    let (mut by_id, mut search) = id_and_search(c, queries, conns, batches);
    let mut readback = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = c.get("/api/traces?service=readback&lookback=24h&limit=100");
        readback.push(t.elapsed().as_secs_f64());
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let spans: usize = v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| t["spans"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(
            (v["data"].as_array().map_or(0, Vec::len), spans),
            (READBACK_TRACES, READBACK_TRACES * READBACK_SPANS),
            "every read-back trace whole"
        );
    }
    QueryStats {
        id_p50: pct(&mut by_id, 0.5),
        id_p99: pct(&mut by_id, 0.99),
        s_p50: pct(&mut search, 0.5),
        s_p99: pct(&mut search, 0.99),
        readback_s: pct(&mut readback, 0.5),
    }
}

/// Sends batches from `conns` connections until `total` spans are acknowledged.
/// Returns (acked spans, export latencies in ms, refused calls).
async fn drive(grpc_port: u16, conns: u64, total: u64, id_base: u64) -> (u64, Vec<f64>, u64) {
    drive_with(grpc_port, conns, total, id_base, Duration::from_millis(20)).await
}

/// [`drive`], each client waiting `backoff` after a refusal (zero: a client that
/// hammers a saturated collector).
async fn drive_with(
    grpc_port: u16,
    conns: u64,
    total: u64,
    id_base: u64,
    backoff: Duration,
) -> (u64, Vec<f64>, u64) {
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
                        if backoff.is_zero() {
                            tokio::task::yield_now().await;
                        } else {
                            tokio::time::sleep(backoff).await;
                        }
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

/// One ingest measure of one build: (central CPU µs per stored span, export ack p99 ms,
/// sidecar CPU µs per forwarded span), each on a fresh store.
async fn ingest_round(
    bin: Option<std::path::PathBuf>,
    spans: u64,
    sidecar_spans: u64,
    conns: u64,
    tag: &str,
) -> (f64, f64, f64) {
    let tck = clk_tck();
    let dir = std::env::temp_dir().join(format!("meshtrace-bench-{}-{tag}", std::process::id()));
    let central = Collector::start_opts(
        dir.clone(),
        Opts {
            args: vec!["--retention".into(), "30d".into()],
            bin: bin.clone(),
            ..Opts::default()
        },
    );
    let pid = central.child.id();
    let c0 = cpu_ticks(pid);
    let (_, mut lat, _) = drive(central.grpc_port, conns, spans, 0).await;
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / tck;
    let (_, m) = central.get("/metrics");
    let stored = metric(&m, "meshtrace_collector_spans_stored_total");
    let sidecar = Collector::start_opts(
        dir.join("sidecar"),
        Opts {
            bin,
            ..Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port))
        },
    );
    let spid = sidecar.child.id();
    let s0 = cpu_ticks(spid);
    let (sacked, _, _) = drive(sidecar.grpc_port, conns, sidecar_spans, 1 << 20).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(
        &sidecar.get("/metrics").1,
        "meshtrace_collector_spans_forwarded_total",
    ) < sacked
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sidecar_cpu = (cpu_ticks(spid) - s0) as f64 / tck * 1e6 / sacked.max(1) as f64;
    drop(sidecar);
    drop(central);
    let _ = std::fs::remove_dir_all(&dir);
    (
        cpu_s * 1e6 / stored.max(1) as f64,
        pct(&mut lat, 0.99),
        sidecar_cpu,
    )
}

/// One ingest measure with `yaml` on a fresh store: (CPU µs per stored span,
/// ack p50 ms, ack p99 ms, stored spans per second, peak RSS MB).
async fn config_round(yaml: &str, spans: u64, conns: u64, tag: &str) -> [f64; 5] {
    let tck = clk_tck();
    let dir = std::env::temp_dir().join(format!("meshtrace-bench-{}-{tag}", std::process::id()));
    let c = Collector::start_opts(
        dir.clone(),
        Opts {
            yaml: Some(format!("retention: 30d\n{yaml}")),
            ..Opts::default()
        },
    );
    let pid = c.child.id();
    let c0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let (_, mut lat, _) = drive(c.grpc_port, conns, spans, 0).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / tck;
    // Peak resident size before anything scrapes /metrics (the tables), then after.
    let rss = vm_kb(pid, "VmHWM:") / 1024.0;
    let m = c.get("/metrics").1;
    let stored = metric(&m, "meshtrace_collector_spans_stored_total");
    let scrape_rss = vm_kb(pid, "VmHWM:") / 1024.0;
    if yaml.contains("max_series") {
        println!(
            "    /metrics: {:.1} MB of text, peak rss {rss:.0} MB before the scrape, {scrape_rss:.0} MB after",
            m.len() as f64 / 1e6
        );
    }
    if yaml.contains("max_series") {
        for l in m.lines().filter(|l| {
            l.starts_with("meshtrace_metrics_series{")
                || l.starts_with("meshtrace_metrics_overflow_spans_total{")
        }) {
            println!("    {l}");
        }
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
    [
        cpu_s * 1e6 / stored.max(1) as f64,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        stored as f64 / wall,
        rss,
    ]
}

async fn durability_round(durability: &str, spans: u64, conns: u64, tag: &str) -> [f64; 4] {
    let r = config_round(
        &format!("store:\n  durability: {durability}\n"),
        spans,
        conns,
        tag,
    )
    .await;
    [r[0], r[1], r[2], r[3]]
}

/// Phase M: span metrics on vs off, interleaved; then the tables' memory at the cap.
async fn metrics_phase(conns: u64) -> String {
    let rounds = arg("--metrics-rounds", 5);
    let n = arg("--metrics-spans", 200_000);
    println!("# phase M: metrics.enabled true vs false, interleaved over {rounds} rounds ({n} spans each: 10 services x 20 operations, {conns} connections, fresh stores)");
    let mut by_mode: [Vec<[f64; 5]>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, on) in [true, false].iter().enumerate() {
            let r = config_round(
                &format!("metrics:\n  enabled: {on}\n"),
                n,
                conns,
                &format!("m-{round}-{on}"),
            )
            .await;
            println!(
                "round {round} metrics {}: {:.2} cpu µs/span, ack p50 {:.1} ms p99 {:.1} ms, {:.0} spans/s, peak rss {:.0} MB",
                if *on { "on " } else { "off" }, r[0], r[1], r[2], r[3], r[4]
            );
            by_mode[i].push(r);
        }
    }
    let med = |v: &[[f64; 5]], k: usize| {
        let mut x: Vec<f64> = v.iter().map(|r| r[k]).collect();
        pct(&mut x, 0.5)
    };
    let [on, off] = &by_mode;
    let ratios: Vec<f64> = on
        .iter()
        .zip(off)
        .map(|(a, b)| a[0] / b[0].max(1e-9))
        .collect();
    println!(
        "medians: on {:.2} vs off {:.2} cpu µs/span (per-round ratios {}), {:.0} vs {:.0} spans/s",
        med(on, 0),
        med(off, 0),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        med(on, 3),
        med(off, 3)
    );
    let cap_spans = arg("--cap-spans", 400_000);
    println!("# phase M, memory at the cap: {cap_spans} spans, every trace's spans new operations (one label set each)");
    UNIQUE_OPERATIONS.store(true, Ordering::Relaxed);
    let mut rss = Vec::new();
    for (label, yaml) in [
        ("off", "metrics:\n  enabled: false\n".to_string()),
        (
            "max_series 2000",
            "metrics:\n  max_series: 2000\n".to_string(),
        ),
        (
            "max_series 20000",
            "metrics:\n  max_series: 20000\n".to_string(),
        ),
    ] {
        let r = config_round(&yaml, cap_spans, conns, &format!("cap-{}", rss.len())).await;
        println!(
            "  {label}: peak rss {:.0} MB, {:.2} cpu µs/span",
            r[4], r[0]
        );
        rss.push(r[4]);
    }
    UNIQUE_OPERATIONS.store(false, Ordering::Relaxed);
    let per_series_kb = (rss[2] - rss[1]) * 1024.0 / 18_000.0;
    println!(
        "  at the cap: +{:.0} MB (2,000 series per table) and +{:.0} MB (20,000) over metrics off: ~{per_series_kb:.1} KB per label set across the span, history and trace tables",
        rss[1] - rss[0], rss[2] - rss[0]
    );
    format!(
        " metrics_cpu_ratio={:.2} metrics_on_cpu_us_per_span={:.2} metrics_off_cpu_us_per_span={:.2} metrics_rss_at_cap_2000_mb={:.0} metrics_rss_at_cap_20000_mb={:.0} metrics_off_rss_mb={:.0}",
        med(on, 0) / med(off, 0).max(1e-9), med(on, 0), med(off, 0), rss[1], rss[2], rss[0]
    )
}

/// Phase D: `fsync` vs `os` durability, interleaved; the RESULT fields.
async fn durability_phase(conns: u64) -> String {
    let rounds = arg("--durability-rounds", 3);
    let n = arg("--durability-spans", 200_000);
    println!("# phase D: store.durability fsync vs os, interleaved over {rounds} rounds ({n} spans each, {conns} connections, fresh stores)");
    let mut by_mode: [Vec<[f64; 4]>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, mode) in ["fsync", "os"].iter().enumerate() {
            let r = durability_round(mode, n, conns, &format!("dur-{round}-{mode}")).await;
            println!(
                "round {round} {mode}: {:.2} cpu µs/span, ack p50 {:.1} ms p99 {:.1} ms, {:.0} spans/s",
                r[0], r[1], r[2], r[3]
            );
            by_mode[i].push(r);
        }
    }
    let med = |v: &[[f64; 4]], k: usize| {
        let mut x: Vec<f64> = v.iter().map(|r| r[k]).collect();
        pct(&mut x, 0.5)
    };
    let [f, o] = &by_mode;
    println!(
        "medians: fsync {:.2} vs os {:.2} cpu µs/span, ack p50 {:.1} vs {:.1} ms, p99 {:.1} vs {:.1} ms, {:.0} vs {:.0} spans/s",
        med(f, 0), med(o, 0), med(f, 1), med(o, 1), med(f, 2), med(o, 2), med(f, 3), med(o, 3)
    );
    format!(
        " fsync_vs_os_cpu_ratio={:.2} fsync_vs_os_ack_p50_ratio={:.2} fsync_vs_os_ack_p99_ratio={:.2} fsync_vs_os_throughput_ratio={:.2}",
        med(f, 0) / med(o, 0).max(1e-9),
        med(f, 1) / med(o, 1).max(1e-9),
        med(f, 2) / med(o, 2).max(1e-9),
        med(f, 3) / med(o, 3).max(1e-9)
    )
}

/// Bytes of the files under `dir` whose path contains `part` (all when empty).
fn du(dir: &std::path::Path, part: &str) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += du(&p, part);
        } else if part.is_empty() || p.to_string_lossy().contains(part) {
            total += e.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

/// One engine, fresh store: ingest `spans`, wait until they are at rest (the
/// blocks engine: cut into blocks and uploaded), then query. Returns (CPU µs
/// per stored span, ingest and cutting included; stored spans/s; peak RSS MB;
/// bytes per span at rest; trace-by-id p99 ms; search p99 ms; time to open
/// after a SIGKILL at full head, s).
async fn engine_round(engine: &str, spans: u64, conns: u64, queries: usize, tag: &str) -> [f64; 7] {
    let tck = clk_tck();
    let dir = std::env::temp_dir().join(format!("meshtrace-bench-{}-{tag}", std::process::id()));
    // `blocks-s3`: the blocks engine on a real S3-compatible server (s3s-fs).
    let s3 = (engine == "blocks-s3").then(|| meshtrace_testkit::s3::S3Server::start("bench"));
    let yaml = match &s3 {
        Some(s3) => format!(
            "retention: 30d\nmetrics:\n  enabled: false\n{}    max_age: 3s\n",
            s3.store_yaml("bench", "b")
        ),
        None => format!(
            "retention: 30d\nmetrics:\n  enabled: false\nstore:\n  engine: {}\n  blocks:\n    max_age: 3s\n",
            engine.trim_end_matches("-baseline")
        ),
    };
    let blocks = engine != "sqlite";
    // `blocks-baseline`: the blocks engine run by $MESHTRACE_BASELINE_BIN.
    let bin = (engine == "blocks-baseline")
        .then(|| std::env::var_os("MESHTRACE_BASELINE_BIN").map(std::path::PathBuf::from))
        .flatten();
    let c = Collector::start_opts(
        dir.clone(),
        Opts {
            yaml: Some(yaml.clone()),
            bin: bin.clone(),
            ..Opts::default()
        },
    );
    let pid = c.child.id();
    let c0 = cpu_ticks(pid);
    let t0 = Instant::now();
    drive(c.grpc_port, conns, spans, 0).await;
    let wall = t0.elapsed().as_secs_f64();
    // At rest: the head cut, its blocks uploaded, the WAL released (empty).
    let deadline = Instant::now() + Duration::from_secs(300);
    while blocks
        && (du(&dir.join("wal"), ".wal") > 0 || du(&dir.join("pending"), "") > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / tck;
    let rss = vm_kb(pid, "VmHWM:") / 1024.0;
    let stored = metric(
        &c.get("/metrics").1,
        "meshtrace_collector_spans_stored_total",
    );
    let at_rest = match (&s3, blocks) {
        (Some(s3), _) => du(&s3.root, ""),
        (None, true) => du(&dir.join("blocks"), ""),
        (None, false) => du(&dir, "spans-"),
    };
    let batches = stored / BATCH as u64 / conns;
    let (mut by_id, mut search) = id_and_search(&c, queries, conns, batches);
    if let Some(keep) = std::env::var_os("BENCH_KEEP_LOG") {
        let _ = std::fs::copy(&c.log_path, format!("{}-{tag}.log", keep.to_string_lossy()));
    }
    println!(
        "  {engine}: trace by id p50 {:.1} p90 {:.1} max {:.1} ms; search p50 {:.1} p90 {:.1} max {:.1} ms",
        pct(&mut by_id, 0.5), pct(&mut by_id, 0.9), pct(&mut by_id, 1.0),
        pct(&mut search, 0.5), pct(&mut search, 0.9), pct(&mut search, 1.0)
    );
    // Recovery: a full head (one block's worth of spans in the WAL) and a SIGKILL.
    let replay_s = if blocks {
        drive(c.grpc_port, conns, spans.min(200_000), 1 << 30).await;
        let dir = c.kill_keep_data();
        let t = Instant::now();
        let again = Collector::start_opts(
            dir,
            Opts {
                yaml: Some(yaml),
                bin,
                ..Opts::default()
            },
        );
        let took = t.elapsed().as_secs_f64();
        drop(again);
        took
    } else {
        drop(c);
        0.0
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(s3) = s3 {
        let _ = std::fs::remove_dir_all(&s3.root);
    }
    [
        cpu_s * 1e6 / stored.max(1) as f64,
        stored as f64 / wall,
        rss,
        at_rest as f64 / stored.max(1) as f64,
        pct(&mut by_id, 0.99),
        pct(&mut search, 0.99),
        replay_s,
    ]
}

/// One end-to-end round of phase F on a fresh central of `engine`: `spans` sent
/// directly (`in_flight` 0) or through a sidecar with `sidecar.max_in_flight:
/// in_flight`; returns (spans stored per second, from the first export until
/// the central has stored every acknowledged span; central CPU µs per span;
/// sidecar CPU µs per span). With `pin`, the central runs on CPU 0 and the
/// sidecar on CPU 1 (as on two nodes; the load generator is not pinned).
async fn forward_round(
    engine: &str,
    in_flight: u64,
    spans: u64,
    conns: u64,
    pin: bool,
    tag: &str,
) -> [f64; 3] {
    let tck = clk_tck();
    let dir = std::env::temp_dir().join(format!("meshtrace-bench-{}-{tag}", std::process::id()));
    let on_cpu = |cpu: &str| -> Vec<String> {
        if pin {
            vec!["taskset".into(), "-c".into(), cpu.into()]
        } else {
            Vec::new()
        }
    };
    let central = Collector::start_opts(
        dir.join("central"),
        Opts {
            yaml: Some(format!(
                "retention: 30d\nmetrics:\n  enabled: false\nstore:\n  engine: {engine}\n"
            )),
            wrapper: on_cpu("0"),
            ..Opts::default()
        },
    );
    let sidecar = (in_flight > 0).then(|| {
        let mut opts = Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
        opts.yaml = Some(format!(
            "sidecar:\n  max_in_flight: {in_flight}\n  queue_bytes: 33554432\n"
        ));
        opts.wrapper = on_cpu("1");
        Collector::start_opts(dir.join("sidecar"), opts)
    });
    let (cpid, spid) = (central.child.id(), sidecar.as_ref().map(|s| s.child.id()));
    let (c0, s0) = (cpu_ticks(cpid), spid.map_or(0, cpu_ticks));
    let port = sidecar.as_ref().map_or(central.grpc_port, |s| s.grpc_port);
    let t0 = Instant::now();
    let (acked, _, _) = drive(port, conns, spans, 0).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let stored = loop {
        let stored = metric(
            &central.get("/metrics").1,
            "meshtrace_collector_spans_stored_total",
        );
        if stored >= acked || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall = t0.elapsed().as_secs_f64();
    let central_cpu = (cpu_ticks(cpid) - c0) as f64 / tck * 1e6 / stored.max(1) as f64;
    let sidecar_cpu = spid.map_or(0.0, |p| {
        (cpu_ticks(p) - s0) as f64 / tck * 1e6 / acked.max(1) as f64
    });
    drop(sidecar);
    drop(central);
    let _ = std::fs::remove_dir_all(&dir);
    [stored as f64 / wall, central_cpu, sidecar_cpu]
}

/// Phase F: stored spans/s end to end through a sidecar (`sidecar.max_in_flight`
/// 1, as before issue 23, and the default 4) against the central fed directly,
/// interleaved; the RESULT fields.
async fn forward_phase(conns: u64) -> String {
    let rounds = arg("--forward-rounds", 3);
    let n = arg("--forward-spans", 300_000);
    let pin = arg("--forward-pin", 1) == 1
        && std::thread::available_parallelism().map_or(1, |p| p.get()) >= 2
        && std::process::Command::new("taskset")
            .arg("-V")
            .output()
            .is_ok();
    let mut fields = String::new();
    for engine in ["sqlite", "blocks"] {
        if arg(&format!("--forward-{engine}"), 1) == 0 {
            continue;
        }
        println!("# phase F ({engine}): {n} spans stored end to end, direct vs through a sidecar (max_in_flight 1 and 4), interleaved over {rounds} rounds{}", if pin { "; central on CPU 0, sidecar on CPU 1" } else { "" });
        let configs = [
            (0u64, "direct"),
            (1, "sidecar, 1 in flight"),
            (4, "sidecar, 4 in flight"),
        ];
        let mut by: Vec<Vec<[f64; 3]>> = vec![Vec::new(); configs.len()];
        for round in 1..=rounds {
            for (i, (in_flight, label)) in configs.iter().enumerate() {
                let r = forward_round(
                    engine,
                    *in_flight,
                    n,
                    conns,
                    pin,
                    &format!("fwd-{engine}-{round}-{in_flight}"),
                )
                .await;
                println!(
                    "round {round} {label}: {:.0} stored spans/s, central {:.2} cpu µs/span, sidecar {:.2} cpu µs/span",
                    r[0], r[1], r[2]
                );
                by[i].push(r);
            }
        }
        let med = |v: &[[f64; 3]], k: usize| {
            let mut x: Vec<f64> = v.iter().map(|r| r[k]).collect();
            pct(&mut x, 0.5)
        };
        let direct = med(&by[0], 0).max(1e-9);
        println!(
            "medians ({engine}): direct {:.0}, sidecar 1 in flight {:.0} ({:.2}x), sidecar 4 in flight {:.0} ({:.2}x) stored spans/s; sidecar {:.2} / {:.2} cpu µs/span",
            direct, med(&by[1], 0), med(&by[1], 0) / direct, med(&by[2], 0), med(&by[2], 0) / direct, med(&by[1], 2), med(&by[2], 2)
        );
        fields += &format!(
            " forward_{engine}_direct_spans_per_s={direct:.0} forward_{engine}_in_flight_1_ratio={:.2} forward_{engine}_in_flight_4_ratio={:.2} forward_{engine}_sidecar_cpu_us_per_span={:.2}",
            med(&by[1], 0) / direct,
            med(&by[2], 0) / direct,
            med(&by[2], 2)
        );
    }
    fields
}

/// Phase E: the SQLite and blocks engines side by side, interleaved; the RESULT fields.
async fn engine_phase(conns: u64) -> String {
    let rounds = arg("--engine-rounds", 3);
    let n = arg("--engine-spans", 500_000);
    let queries = arg("--engine-queries", 100) as usize;
    println!("# phase E: store.engine sqlite vs blocks (local directory) vs blocks on s3s-fs (--engine-s3 0 leaves it out), interleaved over {rounds} rounds ({n} spans each, {conns} connections, fresh stores, span metrics off)");
    REAL_ENTROPY.store(true, Ordering::Relaxed);
    let mut by: [Vec<[f64; 7]>; 4] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    // `--engine-sqlite 0` / `--engine-local 0` / `--engine-s3 0` leave one out.
    let baseline = u64::from(std::env::var_os("MESHTRACE_BASELINE_BIN").is_some());
    let engines: Vec<(usize, &str)> = [
        (arg("--engine-sqlite", 1), "sqlite"),
        (arg("--engine-local", 1), "blocks"),
        (arg("--engine-s3", 1), "blocks-s3"),
        (baseline, "blocks-baseline"),
    ]
    .into_iter()
    .enumerate()
    .filter(|(_, (on, _))| *on == 1)
    .map(|(i, (_, e))| (i, e))
    .collect();
    for round in 1..=rounds {
        for &(i, engine) in &engines {
            let r = engine_round(engine, n, conns, queries, &format!("eng-{round}-{engine}")).await;
            println!(
                "round {round} {engine:>6}: {:.2} cpu µs/span (cutting and uploading included), {:.0} spans/s, peak rss {:.0} MB, {:.0} bytes/span at rest, trace by id p99 {:.1} ms, search p99 {:.1} ms{}",
                r[0], r[1], r[2], r[3], r[4], r[5],
                if engine != "sqlite" { format!(", restart after SIGKILL at full head {:.2} s", r[6]) } else { String::new() }
            );
            by[i].push(r);
        }
    }
    let med = |v: &[[f64; 7]], k: usize| {
        let mut x: Vec<f64> = v.iter().map(|r| r[k]).collect();
        pct(&mut x, 0.5)
    };
    REAL_ENTROPY.store(false, Ordering::Relaxed);
    let [sq, bl, s3, base] = &by;
    let ratio = |k: usize| med(bl, k) / med(sq, k).max(1e-9);
    let s3_fields = if s3.is_empty() {
        String::new()
    } else {
        println!(
            "medians, blocks on s3s-fs: {:.2} cpu µs/span, {:.0} bytes/span at rest, trace by id p99 {:.1} ms, search p99 {:.1} ms",
            med(s3, 0), med(s3, 3), med(s3, 4), med(s3, 5)
        );
        format!(
            " blocks_s3_cpu_us_per_span={:.2} blocks_s3_trace_by_id_p99_ms={:.1} blocks_s3_search_p99_ms={:.1}",
            med(s3, 0),
            med(s3, 4),
            med(s3, 5)
        )
    };
    let mut fields = String::new();
    if !bl.is_empty() {
        println!(
            "medians, blocks (local directory): {:.2} cpu µs/span, {:.0} bytes/span at rest, trace by id p99 {:.1} ms, search p99 {:.1} ms, restart {:.2} s",
            med(bl, 0), med(bl, 3), med(bl, 4), med(bl, 5), med(bl, 6)
        );
        fields += &format!(
            " blocks_cpu_us_per_span={:.2} blocks_bytes_per_span={:.0} blocks_trace_by_id_p99_ms={:.1} blocks_search_p99_ms={:.1} blocks_restart_s={:.2}",
            med(bl, 0), med(bl, 3), med(bl, 4), med(bl, 5), med(bl, 6)
        );
    }
    if !sq.is_empty() && !bl.is_empty() {
        println!(
            "medians: blocks vs sqlite {:.2} vs {:.2} cpu µs/span (ratio {:.2}), {:.0} vs {:.0} bytes/span at rest (ratio {:.2}), trace by id p99 {:.1} vs {:.1} ms, search p99 {:.1} vs {:.1} ms",
            med(bl, 0), med(sq, 0), ratio(0), med(bl, 3), med(sq, 3), ratio(3), med(bl, 4), med(sq, 4), med(bl, 5), med(sq, 5)
        );
        fields += &format!(
            " blocks_vs_sqlite_cpu_ratio={:.2} sqlite_cpu_us_per_span={:.2} blocks_vs_sqlite_bytes_ratio={:.2} sqlite_bytes_per_span={:.0}",
            ratio(0), med(sq, 0), ratio(3), med(sq, 3)
        );
    }
    if !base.is_empty() && !bl.is_empty() {
        println!(
            "medians: this build vs $MESHTRACE_BASELINE_BIN, blocks engine: {:.2} vs {:.2} cpu µs/span (ratio {:.2}), peak rss {:.0} vs {:.0} MB, trace by id p99 {:.1} vs {:.1} ms, search p99 {:.1} vs {:.1} ms",
            med(bl, 0), med(base, 0), med(bl, 0) / med(base, 0).max(1e-9), med(bl, 2), med(base, 2), med(bl, 4), med(base, 4), med(bl, 5), med(base, 5)
        );
        fields += &format!(
            " blocks_vs_baseline_cpu_ratio={:.2} baseline_blocks_cpu_us_per_span={:.2}",
            med(bl, 0) / med(base, 0).max(1e-9),
            med(base, 0)
        );
    }
    fields + &s3_fields
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    meshtrace_testkit::bench::guard();
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
    let baseline = std::env::var_os("MESHTRACE_BASELINE_BIN").map(std::path::PathBuf::from);
    let mut ingest_comparison = String::new();
    if let Some(base) = &baseline {
        let rounds = arg("--rounds", 3);
        let n = arg("--compare-spans", 300_000);
        let ns = arg("--compare-sidecar-spans", 200_000);
        println!("# phase 0: ingest, this build and {} interleaved over {rounds} rounds ({n} spans stored, {ns} through a sidecar, fresh stores)", base.display());
        let (mut this_build, mut base_build) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            for (label, bin) in [("this build", None), ("baseline", Some(base.clone()))] {
                let is_base = bin.is_some();
                let r = ingest_round(bin, n, ns, conns, &format!("cmp-{round}-{is_base}")).await;
                println!(
                    "round {round} {label}: {:.2} cpu µs/span stored, ack p99 {:.1} ms, sidecar {:.2} cpu µs/span",
                    r.0, r.1, r.2
                );
                if is_base {
                    base_build.push(r)
                } else {
                    this_build.push(r)
                }
            }
        }
        let med = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            pct(&mut x, 0.5)
        };
        let (a, b) = (med(&this_build, |r| r.0), med(&base_build, |r| r.0));
        let (c, d) = (med(&this_build, |r| r.1), med(&base_build, |r| r.1));
        let (e, f) = (med(&this_build, |r| r.2), med(&base_build, |r| r.2));
        println!("medians: stored {a:.2} vs {b:.2} cpu µs/span, ack p99 {c:.1} vs {d:.1} ms, sidecar {e:.2} vs {f:.2} cpu µs/span (this build vs baseline)");
        ingest_comparison = format!(
            " ingest_cpu_ratio={:.2} ack_p99_ratio={:.2} sidecar_cpu_ratio={:.2}",
            a / b.max(1e-9),
            c / d.max(1e-9),
            e / f.max(1e-9)
        );
    }
    if arg("--engine-only", 0) == 1 {
        println!("RESULT{}", engine_phase(conns).await);
        return;
    }
    if arg("--forward-only", 0) == 1 {
        println!("RESULT{}", forward_phase(conns).await);
        return;
    }
    let engine_comparison = engine_phase(conns).await;
    let forward_comparison = forward_phase(conns).await;
    if arg("--metrics-only", 0) == 1 {
        println!("RESULT{}", metrics_phase(conns).await);
        return;
    }
    let metrics_comparison = metrics_phase(conns).await;
    let durability_comparison = durability_phase(conns).await;
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

    println!(
        "# phase 1b: {READBACK_TRACES} traces of {READBACK_SPANS} spans for the read-back measure"
    );
    write_readback(central.grpc_port).await;
    let (_, dir, _) = central.terminate_keep_data();

    let batches = acked / BATCH as u64 / conns.max(1);
    let rounds = if baseline.is_some() {
        arg("--rounds", 3)
    } else {
        1
    };
    println!(
        "# phase 2: {queries} trace-by-id and {queries} searches on {stored} stored spans, and {READBACK_TRACES}×{READBACK_SPANS} read back{}",
        match &baseline {
            Some(b) => format!(", this build and {} interleaved over {rounds} rounds", b.display()),
            None => String::new(),
        }
    );
    let mut this_build: Vec<QueryStats> = Vec::new();
    let mut base_build: Vec<QueryStats> = Vec::new();
    for round in 1..=rounds {
        for (label, bin) in [("this build", None), ("baseline", baseline.clone())] {
            if label == "baseline" && bin.is_none() {
                continue;
            }
            let c = Collector::start_opts(
                dir.clone(),
                Opts {
                    args: vec!["--retention".into(), "30d".into()],
                    bin,
                    ..Opts::default()
                },
            );
            let q = query_phase(&c, queries, conns, batches);
            println!(
                "round {round} {label}: trace by id p50 {:.1} ms p99 {:.1} ms; search (service+operation+minDuration, limit 20) p50 {:.1} ms p99 {:.1} ms; {READBACK_TRACES}×{READBACK_SPANS} read back in {:.3} s",
                q.id_p50, q.id_p99, q.s_p50, q.s_p99, q.readback_s
            );
            c.terminate_keep_data();
            if label == "baseline" {
                base_build.push(q);
            } else {
                this_build.push(q);
            }
        }
    }
    let med = |v: &[QueryStats], f: fn(&QueryStats) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        pct(&mut x, 0.5)
    };
    let id_p99 = med(&this_build, |q| q.id_p99);
    let s_p99 = med(&this_build, |q| q.s_p99);
    let readback_s = med(&this_build, |q| q.readback_s);
    let comparison = if base_build.is_empty() {
        String::new()
    } else {
        let (b_id, b_s, b_rb) = (
            med(&base_build, |q| q.id_p99),
            med(&base_build, |q| q.s_p99),
            med(&base_build, |q| q.readback_s),
        );
        println!(
            "medians over {rounds} rounds: trace by id p99 {id_p99:.1} vs {b_id:.1} ms, search p99 {s_p99:.1} vs {b_s:.1} ms, read back {readback_s:.3} vs {b_rb:.3} s (this build vs baseline)"
        );
        format!(
            " baseline_trace_by_id_p99_ms={b_id:.1} baseline_search_p99_ms={b_s:.1} baseline_readback_100x100_s={b_rb:.3} trace_by_id_p99_ratio={:.2} search_p99_ratio={:.2} readback_ratio={:.2}",
            id_p99 / b_id.max(1e-9),
            s_p99 / b_s.max(1e-9),
            readback_s / b_rb.max(1e-9)
        )
    };

    println!("# phase 3: {sidecar_total} spans through a sidecar collector to the central one");
    let central = Collector::start_opts(
        dir.clone(),
        Opts {
            args: vec!["--retention".into(), "30d".into()],
            ..Opts::default()
        },
    );
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
    // Saturated: a 4 MiB forward queue and twice the clients, none backing off
    // on a refusal; what the sidecar spends per span it accepts.
    let mut opts = Opts::sidecar(&format!("http://127.0.0.1:{}", central.grpc_port));
    opts.yaml = Some(
        "sidecar:\n  retry_initial_ms: 50\n  retry_max_ms: 200\n  queue_bytes: 4194304\n".into(),
    );
    let sat = Collector::start_opts(dir.join("sidecar-saturated"), opts);
    let spid = sat.child.id();
    let c0 = cpu_ticks(spid);
    let (sat_acked, _, sat_refused) = drive_with(
        sat.grpc_port,
        2 * conns,
        sidecar_total,
        2 << 20,
        Duration::ZERO,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(
        &sat.get("/metrics").1,
        "meshtrace_collector_spans_forwarded_total",
    ) < sat_acked
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sat_cpu = (cpu_ticks(spid) - c0) as f64 / tck * 1e6 / sat_acked.max(1) as f64;
    println!(
        "sidecar saturated: {sat_acked} spans accepted, {sat_refused} requests refused, {sat_cpu:.2} cpu µs per accepted span ({:.2}x the paced figure)",
        sat_cpu / sidecar_cpu.max(1e-9)
    );
    drop(sat);
    drop(central);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RESULT cpu_us_per_span={cpu_us_per_span:.2} spans_per_s={spans_per_s:.0} ack_p99_ms={ack_p99:.1} rss_mb={rss_mb:.0} stored_spans={stored} trace_by_id_p99_ms={id_p99:.1} search_p99_ms={s_p99:.1} readback_100x100_s={readback_s:.3} sidecar_cpu_us_per_span={sidecar_cpu:.2} sidecar_saturated_cpu_us_per_span={sat_cpu:.2} sidecar_rss_mb={sidecar_rss:.1}{comparison}{ingest_comparison}{durability_comparison}{metrics_comparison}{engine_comparison}{forward_comparison}"
    );
}
