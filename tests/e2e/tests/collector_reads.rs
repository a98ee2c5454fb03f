//! Every read is bounded: the requests that hung, aborted or OOM-killed the
//! collector (issue 21's findings), sent to the real binary — the heavy ones in
//! a 1 GiB memory cgroup, the central manifest's limit — while a client keeps
//! exporting and `/healthz` is polled. Each must end with an answer (200, a
//! 400 naming the parameter, or a 503 naming the limit), no OOM kill, ingest
//! acknowledged throughout and `/healthz` answering.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_collector::config::Config;
use meshtrace_collector::store::history::{HistoryDb, MinuteRow};
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::cgroup::MemoryCgroup;
use meshtrace_testkit::collector::{get, post, Collector, Opts};
use meshtrace_testkit::load::{cgroup, get_big, hex, peak_rss_mb, send, trace_body};
use meshtrace_testkit::otlp::{kv, now_ns, request};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A span of trace `tid`: id `id`, child of `parent`, from `start` to `end` ns after `t0`.
fn span(tid: [u8; 16], id: u64, parent: Option<u64>, t0: u64, (start, end): (u64, u64)) -> Span {
    Span {
        trace_id: tid.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map_or(vec![], |p| p.to_be_bytes().to_vec()),
        name: format!("op{}", id % 5),
        kind: 2,
        start_time_unix_nano: t0 + start,
        end_time_unix_nano: t0 + end,
        ..Default::default()
    }
}

/// Exports `spans` of `service` in requests of `per` spans; each must be accepted.
fn export(port: u16, service: &str, spans: Vec<Span>, per: usize) {
    let mut spans = spans;
    while !spans.is_empty() {
        let rest = spans.split_off(spans.len().min(per));
        let (status, text) = send(port, &[], &request(service, spans).encode_to_vec());
        assert_eq!(status, 200, "{text}");
        spans = rest;
    }
}

/// A client exporting a small trace every 50 ms and a prober reading `/healthz`
/// every 100 ms, until stopped: the slowest acknowledgement, the slowest health
/// answer, and anything not 200.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default, Debug, Clone)]
struct Seen {
    acked: u64,
    slowest_ack: Duration,
    slowest_health: Duration,
    failures: Vec<String>,
}

impl Watch {
    fn start(c: &Collector) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (otlp, query) = (c.otlp_port, c.query_port);
        let ingest = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let status = post(otlp, "application/x-protobuf", &[], &trace_body(9, seq, 5))
                        .map_or(0, |m| m.status());
                    let took = t.elapsed();
                    let mut s = seen.lock().unwrap();
                    s.slowest_ack = s.slowest_ack.max(took);
                    if status == 200 {
                        s.acked += 1;
                    } else {
                        s.failures
                            .push(format!("export {seq}: {status} after {took:?}"));
                    }
                    drop(s);
                    seq += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let health = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (status, _) = get(query, "/healthz");
                    let took = t.elapsed();
                    let mut s = seen.lock().unwrap();
                    s.slowest_health = s.slowest_health.max(took);
                    if status != 200 {
                        s.failures
                            .push(format!("/healthz: {status} after {took:?}"));
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Watch {
            stop,
            seen,
            threads: vec![ingest, health],
        }
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let s = self.seen.lock().unwrap().clone();
        s
    }
}

/// A central collector in a 1 GiB memory cgroup (the central manifest's
/// limit), with `yaml`; `None` (the test skips, saying why) without cgroups.
fn central_in_1gib(
    name: &str,
    dir: std::path::PathBuf,
    yaml: Option<&str>,
) -> Option<(MemoryCgroup, Collector)> {
    let cg = cgroup(name, 1 << 30)?;
    let c = Collector::start_opts(
        dir,
        Opts {
            wrapper: cg.wrapper(),
            yaml: yaml.map(String::from),
            ..Opts::default()
        },
    );
    Some((cg, c))
}

/// What every heavy test ends with: no OOM kill, every export acknowledged
/// within an OTel SDK's 10 s, every `/healthz` answered (within `health`).
fn assert_served(seen: &Seen, cg: &MemoryCgroup, c: &Collector, health: Duration) {
    eprintln!(
        "{seen:?}; cgroup peak {} MB, process peak {} MB, OOM kills {}",
        cg.peak_bytes() / MIB,
        peak_rss_mb(c),
        cg.oom_kills()
    );
    assert_eq!(cg.oom_kills(), 0);
    assert!(seen.failures.is_empty(), "{:?}", seen.failures);
    assert!(seen.acked > 0);
    assert!(seen.slowest_ack < Duration::from_secs(10), "{seen:?}");
    assert!(seen.slowest_health < health, "{seen:?}");
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {}", &body[..body.len().min(400)]))
}

/// The error message of a v1 or v3 error answer.
fn message(body: &str) -> String {
    let v = json(body);
    v["errors"][0]["msg"]
        .as_str()
        .or(v["error"]["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn spm_parameters_that_hung_or_aborted_the_collector_are_refused_by_name() {
    let c = Collector::start();
    assert_eq!(c.post_otlp(&trace_body(1, 1, 5)), 200);
    let now_ms = now_ns() / 1_000_000;
    let max_ms = 253_402_300_799_999u64;
    let far = max_ms - now_ms;
    // (request, expected status, the parameter its error names)
    let cases: Vec<(String, u16, &str)> = vec![
        // Finding 1: `t += step` wrapped and looped forever on a runtime thread.
        ("/api/metrics/errors?service=steady&lookback=1&step=9223372036854775807".into(), 400, "'step'"),
        ("/api/metrics/calls?service=steady&lookback=1&step=9223372036854775807".into(), 400, "'step'"),
        ("/api/metrics/calls?service=steady&step=60000&ratePer=9223372036854775807".into(), 400, "'ratePer'"),
        ("/api/metrics/calls?service=steady&endTs=-9223372036854775808".into(), 400, "'endTs'"),
        ("/api/metrics/calls?service=steady&lookback=9223372036854775807&step=9223372036854775807".into(), 400, "'lookback'"),
        // Finding 2: a point past year 9999 aborted the process.
        ("/api/metrics/calls?service=steady&endTs=253402304400000&lookback=60000&step=60000".into(), 400, "'endTs'"),
        (format!("/api/metrics/latencies?quantile=0.5&service=steady&endTs={max_ms}&lookback={far}&step={}", far / 10_000 + 1), 200, ""),
        ("/api/metrics/latencies?quantile=NaN&service=steady".into(), 400, "'quantile'"),
        ("/api/metrics/latencies?quantile=inf&service=steady".into(), 400, "'quantile'"),
        ("/api/metrics/calls?service=steady&step=0".into(), 400, "'step'"),
        // The service map, the dependencies and the comparison take times the same way.
        ("/api/dependencies?endTs=253402304400000".into(), 400, "endTs"),
        ("/api/dependencies?endTs=1&lookback=-5".into(), 400, "lookback"),
        ("/api/analysis/service-map?end=9223372036854775807".into(), 400, "end"),
        ("/api/analysis/service-map?lookback=99999999999h".into(), 400, "lookback"),
        ("/api/analysis/compare-windows?service=steady&start=-1".into(), 400, "start"),
        ("/api/analysis/compare-windows?service=steady&baselineOffset=9999999999h".into(), 400, "baselineOffset"),
        ("/api/analysis/compare-windows?service=steady&limit=99999999999999999999".into(), 400, "limit"),
        ("/api/analysis/sampling?lookback=0".into(), 400, "lookback"),
    ];
    for (path, want, name) in &cases {
        let t = Instant::now();
        let (status, body) = c.get(path);
        eprintln!(
            "{path}: {status} in {:?}: {}",
            t.elapsed(),
            &body[..body.len().min(200)]
        );
        assert_eq!(status, *want, "{path}: {body}");
        if *want == 400 {
            assert!(message(&body).contains(name), "{path}: {body}");
        }
    }
    // `service=` repeated 3,000 times (a 39 KB URL): read once, answered at once.
    let repeated = "service=steady&".repeat(3000);
    let t = Instant::now();
    let (status, body) = c.get(&format!("/api/metrics/calls?{repeated}step=60000"));
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(json(&body)["metrics"].as_array().unwrap().len(), 1);
    // 3,000 distinct names: refused, naming the parameter.
    let distinct: String = (0..3000).map(|i| format!("service=s{i}&")).collect();
    let (status, body) = c.get(&format!("/api/metrics/calls?{distinct}step=60000"));
    assert_eq!(status, 400);
    assert!(message(&body).contains("'service'"), "{body}");
    // Still alive and serving; SIGTERM still stops it.
    assert_eq!(c.get("/healthz").0, 200);
    assert_eq!(c.post_otlp(&trace_body(1, 2, 5)), 200);
    let (status, _, log) = c.terminate_keep_data();
    assert!(status.success(), "{status}: {log}");
}

/// 2,000 operations of one service with a minute of history every 16 hours over
/// 8 days (12 minutes each), written into the history file before the collector
/// starts: what a long-running mesh leaves for the Monitor tab.
fn seed_history(dir: &std::path::Path) -> u64 {
    let bounds = Config::default().metrics.duration_buckets_ms;
    let db = HistoryDb::open(dir, &bounds).unwrap();
    let now_minute = (now_ns() / 1_000_000_000 / 60 * 60) as i64;
    let mut rows = Vec::new();
    for k in 1..=12i64 {
        let minute = now_minute - k * 16 * 3600;
        for op in 0..2000 {
            let mut buckets = vec![0u64; bounds.len() + 1];
            buckets[op % bounds.len()] = 30;
            rows.push(MinuteRow {
                minute,
                service: "monitored".into(),
                operation: format!("GET /op/{op}"),
                kind: 2,
                calls: 30,
                errors: 1,
                adjusted_calls: 30.0,
                adjusted_errors: 1.0,
                buckets,
            });
        }
    }
    db.add(&rows).unwrap();
    rows.len() as u64
}

#[test]
fn spm_over_a_week_of_2000_operations_stays_within_its_budget_in_1gib() {
    let dir = meshtrace_testkit::scratch_path("spm-week");
    let rows = seed_history(&dir);
    let Some((cg, c)) = central_in_1gib(
        "meshtrace-spm",
        dir,
        Some("metrics:\n  history_retention: 9d\n"),
    ) else {
        return;
    };
    let watch = Watch::start(&c);
    let week = 7 * 86_400_000 + 14 * 3_600_000; // 7.6 days
    for path in [
        // Finding 4: one such request was OOM-killed; points per series are at most 11,000.
        format!("/api/metrics/calls?service=monitored&groupByOperation=true&lookback={week}&step=60000"),
        format!("/api/metrics/latencies?quantile=0.95&service=monitored&groupByOperation=true&lookback={week}&step=60000"),
        format!("/api/metrics/errors?service=monitored&groupByOperation=true&lookback={week}&step=60000&ratePer=3600000"),
        "/api/metrics/calls?service=monitored&groupByOperation=true&lookback=86400000&step=60000".to_string(),
    ] {
        let t = Instant::now();
        let (status, body) = get_big(c.query_port, &path);
        let took = t.elapsed();
        if status == 200 {
            let v = json(&body);
            let series = v["metrics"].as_array().unwrap();
            let points: usize = series
                .iter()
                .map(|m| m["metricPoints"].as_array().unwrap().len())
                .sum();
            eprintln!(
                "{path}: {} series, {points} points, {} MB in {took:?}",
                series.len(),
                body.len() as u64 / MIB
            );
            assert_eq!(series.len(), 2000);
            // No zero-filled points: only windows that hold one of the 12 minutes.
            assert!(points <= 2000 * 12 * 72, "{points}");
        } else {
            eprintln!("{path}: {status} in {took:?}: {}", message(&body));
            assert_eq!(status, 503, "{body}");
            assert!(message(&body).contains("query.max_bytes"), "{body}");
        }
    }
    eprintln!("{rows} history rows");
    assert_served(&watch.stop(), &cg, &c, Duration::from_secs(1));
}

#[test]
fn pathological_traces_are_analysed_while_the_collector_keeps_serving_in_1gib() {
    let Some((cg, c)) = central_in_1gib(
        "meshtrace-shapes",
        meshtrace_testkit::scratch_path("shapes"),
        None,
    ) else {
        return;
    };
    let t0 = now_ns() - 60_000_000_000;
    // Two chains 3,000 deep (finding 3: OOM-killed), nested in time.
    let chain = |tid: [u8; 16], slower: u64| -> Vec<Span> {
        (1..=3000u64)
            .map(|i| {
                span(
                    tid,
                    i,
                    (i > 1).then(|| i - 1),
                    t0,
                    (i * 10, (7000 - i) * 10 * slower),
                )
            })
            .collect()
    };
    let (a, b) = ([0xa1; 16], [0xb2; 16]);
    export(c.otlp_port, "chain", chain(a, 1), 3000);
    export(c.otlp_port, "chain", chain(b, 2), 3000);
    // A root with 100,000 sequential children (finding 6: 6.8 s of CPU on a runtime thread).
    let fan_id = [0xfa; 16];
    let mut fan = vec![span(fan_id, 1, None, t0, (0, 2_000_000_000))];
    fan.extend(
        (2..=100_001u64).map(|i| span(fan_id, i, Some(1), t0, (i * 10_000, i * 10_000 + 5_000))),
    );
    export(c.otlp_port, "fan", fan, 10_000);
    // Two traces of 20,000 and 100,000 spans, every child in another service than its
    // parent (finding 7: the self-join ran 60 s and on after the answer).
    let deps_ids = [[0xd1; 16], [0xd2; 16]];
    for (tid, n) in deps_ids.iter().zip([20_000u64, 100_000]) {
        for (service, parity) in [("deps-a", 1), ("deps-b", 0)] {
            let spans: Vec<Span> = (1..=n)
                .filter(|i| i % 2 == parity)
                .map(|i| span(*tid, i, (i > 1).then(|| i - 1), t0, (i, i + 1)))
                .collect();
            export(c.otlp_port, service, spans, 10_000);
        }
    }
    let watch = Watch::start(&c);

    let t = Instant::now();
    let (status, body) = get_big(
        c.query_port,
        &format!("/api/analysis/diff?a={}&b={}", hex(&a), hex(&b)),
    );
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let nodes = json(&body)["nodes"].as_array().unwrap().len();
    eprintln!(
        "diff of two 3,000-deep chains: {nodes} nodes in {:?}",
        t.elapsed()
    );
    assert_eq!(nodes, 3000);

    let t = Instant::now();
    let (status, body) = get_big(
        c.query_port,
        &format!("/api/analysis/critical-path/{}", hex(&fan_id)),
    );
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let v = json(&body);
    eprintln!(
        "critical path of a 100,000-child fan: {} segments in {:?}",
        v["criticalPath"].as_array().unwrap().len(),
        t.elapsed()
    );
    assert!(v["criticalPath"].as_array().unwrap().len() > 100_000);

    let t = Instant::now();
    let (status, body) = get_big(c.query_port, "/api/dependencies?lookback=3600000");
    assert_eq!(status, 200, "{body}");
    let edges = json(&body)["data"].as_array().unwrap().clone();
    eprintln!(
        "dependencies over traces of 20,000 and 100,000 spans: {edges:?} in {:?}",
        t.elapsed()
    );
    let calls = |p: &str, ch: &str| {
        edges
            .iter()
            .find(|e| e["parent"] == p && e["child"] == ch)
            .map_or(0, |e| e["callCount"].as_u64().unwrap())
    };
    // Spans 2..=n alternate services with their parents: n - 1 calls per trace.
    assert_eq!(
        calls("deps-a", "deps-b") + calls("deps-b", "deps-a"),
        19_999 + 99_999
    );

    // The bound: /healthz within 1 s while the analyses run.
    assert_served(&watch.stop(), &cg, &c, Duration::from_secs(1));
}

#[test]
fn wide_answers_two_at_once_and_a_window_against_itself_stay_bounded_in_1gib() {
    let Some((cg, c)) = central_in_1gib(
        "meshtrace-wide",
        meshtrace_testkit::scratch_path("wide"),
        None,
    ) else {
        return;
    };
    // Finding 5: 100 traces of 1,000 spans with 20 attributes of 100 B: a 340 MB answer.
    let t0 = now_ns() - 600_000_000_000;
    for trace in 0..100u8 {
        let tid = [trace.wrapping_add(1); 16];
        let spans: Vec<Span> = (1..=1000u64)
            .map(|i| {
                let mut s = span(tid, i, (i > 1).then_some(1), t0, (i * 1000, i * 1000 + 500));
                s.attributes = (0..20)
                    .map(|k| kv(&format!("attr.{k}"), &format!("{k:03}{}", "v".repeat(97))))
                    .collect();
                s
            })
            .collect();
        export(c.otlp_port, "wide", spans, 1000);
    }
    let watch = Watch::start(&c);
    let start_us = t0 / 1000 - 1_000_000;
    let end_us = now_ns() / 1000;
    let paths = [
        "/api/traces?service=wide&limit=100&lookback=1h".to_string(),
        "/api/traces?service=wide&limit=100&lookback=1h".to_string(),
        "/api/analysis/hotspots?service=wide&limit=100&lookback=1h".to_string(),
        "/api/analysis/hotspots?service=wide&limit=100&lookback=1h".to_string(),
        format!("/api/analysis/compare-windows?service=wide&start={start_us}&end={end_us}&baselineStart={start_us}&baselineEnd={end_us}"),
        "/api/v3/traces?query.serviceName=wide&query.startTimeMin=2020-01-01T00:00:00Z&query.startTimeMax=9999-01-01T00:00:00Z&query.searchDepth=100".to_string(),
    ];
    let answers: Vec<(u16, String, usize, Duration)> = std::thread::scope(|s| {
        let hs: Vec<_> = paths
            .iter()
            .map(|p| {
                s.spawn(|| {
                    let t = Instant::now();
                    let (status, body) = get_big(c.query_port, p);
                    let summary = if status == 200 {
                        let v = json(&body);
                        v["data"][0]["warnings"][0]
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| format!("{} bytes", body.len()))
                    } else {
                        message(&body)
                    };
                    (status, summary, body.len(), t.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, (status, summary, bytes, took)) in paths.iter().zip(&answers) {
        eprintln!(
            "{p}: {status}, {} MB in {took:?}: {summary}",
            *bytes as u64 / MIB
        );
        assert!(*status == 200 || *status == 503, "{p}: {status} {summary}");
        if *status == 503 {
            assert!(
                summary.contains("query.max_concurrent")
                    || summary.contains("query.max_bytes")
                    || summary.contains("memory.limit_bytes"),
                "{summary}"
            );
        }
    }
    assert!(answers.iter().any(|a| a.0 == 200));
    // Alone, each is answered: a trace search is cut by bytes and says so.
    let (status, body) = get_big(c.query_port, &paths[0]);
    assert_eq!(status, 200, "{}", message(&body));
    let v = json(&body);
    let warning = v["data"][0]["warnings"][0].as_str().unwrap_or_default();
    let spans: usize = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["spans"].as_array().unwrap().len())
        .sum();
    eprintln!(
        "alone: {spans} spans, {} MB: {warning}",
        body.len() as u64 / MIB
    );
    assert!(
        spans < 100_000 && warning.contains("query.max_bytes"),
        "{spans}: {warning}"
    );
    let (status, body) = get_big(c.query_port, &paths[4]);
    assert!(status == 200 || status == 503, "{body}");
    assert_served(&watch.stop(), &cg, &c, Duration::from_secs(1));
}
