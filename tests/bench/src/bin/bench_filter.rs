//! `scripts/bench/filter`: Envoy CPU per request, side by side, interleaved.
//!
//! Envoy runs with `--concurrency 1` pinned to CPU 0; wrk, the upstream and
//! the OTLP sink share CPU 1. For each configuration the Envoy process's
//! utime+stime (from /proc/PID/stat) over a fixed-length wrk run gives CPU µs
//! per request. Rounds are interleaved (the order rotates each round) and the
//! median of the rounds is reported; overheads are relative to plain Envoy
//! measured in the same rounds.

// A benchmark: setup that fails aborts the run with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::bench::{arg, clk_tck};
use meshtrace_testkit::envoy::{cpu_ticks, Envoy, EnvoyBuilder, Filter};
use meshtrace_testkit::otlp_receiver::OtlpReceiver;
use meshtrace_testkit::upstream::Upstream;
use meshtrace_testkit::workspace_root;
use serde_json::json;
use std::process::Command;

struct Setup {
    name: &'static str,
    filter: Filter,
    runtime: serde_json::Value,
}

/// Runs wrk on CPU 1 for `secs`; returns the number of completed requests.
fn wrk(port: u16, secs: u64, conns: u64) -> u64 {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg(format!("http://127.0.0.1:{port}/api/items/42"))
        .output()
        .expect("run wrk (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(e) = errors {
        eprintln!("wrk reported: {e}");
    }
    requests
}

fn start(setup: &Setup, upstream: u16, sink: u16) -> (Envoy, u16) {
    let mut b = EnvoyBuilder::new("bench", setup.filter.clone(), sink);
    b.cpu = Some(0);
    b.runtime = setup.runtime.clone();
    let port = b.listener("INBOUND", upstream);
    (b.start(), port)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = arg("--rounds", 3) as usize;
    let secs = arg("--seconds", 5);
    let conns = arg("--connections", 16);
    let rss_requests = arg("--rss-requests", 500_000);
    let tck = clk_tck();
    let empty = workspace_root().join("target/wasm32-wasip1/release/meshtrace_empty_filter.wasm");
    assert!(
        empty.exists(),
        "build the empty filter first: scripts/bench/filter does"
    );
    let mesh = |p: f64| {
        Filter::Meshtrace(format!(
            r#"{{"service_name":"bench","sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#
        ))
    };
    let mut setups = vec![
        Setup {
            name: "plain",
            filter: Filter::None,
            runtime: json!({}),
        },
        Setup {
            name: "empty_wasm",
            filter: Filter::Wasm(empty.clone(), None),
            runtime: json!({}),
        },
        Setup {
            name: "wasm_headers_only",
            filter: Filter::Wasm(empty.clone(), Some("headers".into())),
            runtime: json!({}),
        },
        Setup {
            name: "wasm_span_calls_only",
            filter: Filter::Wasm(empty, Some("span".into())),
            runtime: json!({}),
        },
        Setup {
            name: "native_otel_flush5",
            filter: Filter::NativeOtel,
            runtime: json!({}),
        },
        Setup {
            name: "native_otel_flush100",
            filter: Filter::NativeOtel,
            runtime: json!({"tracing.opentelemetry.min_flush_spans": 100}),
        },
        Setup {
            name: "meshtrace_100pct",
            filter: mesh(1.0),
            runtime: json!({}),
        },
        Setup {
            name: "meshtrace_100pct_batch32",
            filter: Filter::Meshtrace(
                r#"{"service_name":"bench","export":{"max_batch_spans":32}}"#.into(),
            ),
            runtime: json!({}),
        },
        Setup {
            name: "meshtrace_1pct",
            filter: mesh(0.01),
            runtime: json!({}),
        },
    ];
    // MESHTRACE_BASELINE_WASM: another build of the filter, measured beside this one.
    let baseline = std::env::var_os("MESHTRACE_BASELINE_WASM").map(std::path::PathBuf::from);
    if let Some(b) = &baseline {
        let cfg = |p: f64| {
            format!(
                r#"{{"service_name":"bench","sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#
            )
        };
        setups.push(Setup {
            name: "baseline_100pct",
            filter: Filter::Wasm(b.clone(), Some(cfg(1.0))),
            runtime: json!({}),
        });
        setups.push(Setup {
            name: "baseline_1pct",
            filter: Filter::Wasm(b.clone(), Some(cfg(0.01))),
            runtime: json!({}),
        });
    }
    // `--only a,b`: measure these configurations (plain is always measured).
    let args: Vec<String> = std::env::args().collect();
    if let Some(only) = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
    {
        let keep: Vec<&str> = only.split(',').collect();
        setups.retain(|s| s.name == "plain" || keep.contains(&s.name));
    }
    let upstream = Upstream::start();
    let sink = OtlpReceiver::start_sink();
    // `--profile NAME`: record one configuration with perf (call graphs) instead.
    if let Some(name) = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
    {
        let s = setups
            .iter()
            .find(|s| s.name == name)
            .expect("unknown configuration");
        let (envoy, port) = start(s, upstream.port, sink.port);
        wrk(port, 1, conns);
        let out = format!("/tmp/perf-{name}.data");
        let mut perf = Command::new("perf")
            .args([
                "record",
                "-q",
                "-g",
                "-o",
                &out,
                "-p",
                &envoy.pid().to_string(),
                "--",
                "sleep",
                &secs.to_string(),
            ])
            .spawn()
            .expect("perf (Debian linux-perf)");
        let n = wrk(port, secs, conns);
        let _ = perf.wait();
        println!("profiled {name}: {n} requests, data in {out}");
        return;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    println!("# {rounds} rounds x {} configurations, {secs}s each, wrk -c{conns}; Envoy --concurrency 1 on CPU 0, load on CPU 1", setups.len());
    for round in 0..rounds {
        for k in 0..setups.len() {
            let i = (k + round) % setups.len();
            let s = &setups[i];
            let (envoy, port) = start(s, upstream.port, sink.port);
            wrk(port, 1, conns);
            let t0 = cpu_ticks(envoy.pid());
            let n = wrk(port, secs, conns);
            let t1 = cpu_ticks(envoy.pid());
            let us = (t1 - t0) as f64 / tck * 1e6 / n.max(1) as f64;
            let mut extra = String::new();
            if s.name.starts_with("meshtrace") {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                extra = format!(
                    " sampled={} exported={} dropped={}",
                    envoy.counter("spans_sampled"),
                    envoy.counter("spans_exported"),
                    envoy.counter("spans_dropped")
                );
            }
            println!(
                "round {round} {:<22} {n:>8} req  {us:7.2} cpu_us/req{extra}",
                s.name
            );
            samples[i].push(us);
        }
    }
    let med: Vec<f64> = samples.iter_mut().map(|v| median(v)).collect();
    println!("# medians (cpu µs per request) and overhead over plain Envoy");
    for (s, m) in setups.iter().zip(&med) {
        println!("{:<22} {m:7.2}  {:+7.2}", s.name, m - med[0]);
    }
    let over = |i: usize| med[i] - med[0];
    let find = |n: &str| setups.iter().position(|s| s.name == n).map(over);
    if baseline.is_some() {
        let pair = |a: &str, b: &str| match (find(a), find(b)) {
            (Some(x), Some(y)) => format!("{:.2}", x / y),
            _ => "-".into(),
        };
        println!(
            "RESULT_BASELINE overhead_ratio_100pct={} overhead_ratio_1pct={} (this build / baseline, overhead over plain Envoy)",
            pair("meshtrace_100pct", "baseline_100pct"),
            pair("meshtrace_1pct", "baseline_1pct")
        );
    }
    if args.iter().any(|a| a == "--only") {
        return;
    }
    let by_name = |n: &str| find(n).expect("configured");
    let floor = by_name("empty_wasm");
    let headers_only = by_name("wasm_headers_only");
    let span_calls = by_name("wasm_span_calls_only");
    let native = by_name("native_otel_flush5").min(by_name("native_otel_flush100"));
    let sampled = by_name("meshtrace_100pct");
    let batch32 = by_name("meshtrace_100pct_batch32");
    let unsampled = by_name("meshtrace_1pct");
    println!(
        "# lower bound for a sampled SERVER span with meshtrace's host calls, no logic: +{span_calls:.2} µs = {:.2}x native",
        span_calls / native
    );
    println!(
        "# export call cost per request: 32-span batches +{batch32:.2} µs vs 512-span batches +{sampled:.2} µs"
    );
    println!(
        "# lower bound for any propagating wasm filter (read header map + set one header): +{headers_only:.2} µs = {:.2}x the floor",
        headers_only / floor
    );

    // RSS before and after `rss_requests` requests at 100%.
    let at_100 = setups
        .iter()
        .find(|s| s.name == "meshtrace_100pct")
        .expect("configured");
    let (envoy, port) = start(at_100, upstream.port, sink.port);
    wrk(port, 2, conns);
    let rss0 = envoy.rss_mb();
    let mut done = 0;
    while done < rss_requests {
        done += wrk(port, 10, conns);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rss1 = envoy.rss_mb();
    println!(
        "# rss at 100%: {rss0:.1} MB after warm-up, {rss1:.1} MB after {done} more requests (exported {}, dropped {})",
        envoy.counter("spans_exported"),
        envoy.counter("spans_dropped")
    );
    drop(envoy);
    println!(
        "RESULT sampled_overhead_us={sampled:.2} native_overhead_us={native:.2} ratio_vs_native={:.2} unsampled_overhead_us={unsampled:.2} floor_overhead_us={floor:.2} unsampled_vs_floor={:.2} rss_growth_mb={:.1}",
        sampled / native,
        unsampled / floor,
        rss1 - rss0
    );
}
