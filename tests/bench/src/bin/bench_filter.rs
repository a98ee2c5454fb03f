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
    let rounds = arg("--rounds", 7) as usize;
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
    let setup = |name: &'static str, filter: Filter, runtime: serde_json::Value| Setup {
        name,
        filter,
        runtime,
    };
    // Envoy's native tracer flushes every 5 spans by default; 100 is its cheapest
    // sensible setting. Both are measured where flushing costs something (10%, 100%).
    let flush100 = || json!({"tracing.opentelemetry.min_flush_spans": 100});
    let mut setups = vec![
        setup("plain", Filter::None, json!({})),
        setup("empty_wasm", Filter::Wasm(empty.clone(), None), json!({})),
        setup(
            "wasm_headers_only",
            Filter::Wasm(empty.clone(), Some("headers".into())),
            json!({}),
        ),
        setup(
            "wasm_span_calls_only",
            Filter::Wasm(empty, Some("span".into())),
            json!({}),
        ),
        setup("native_1pct", Filter::NativeOtel(1.0), json!({})),
        setup("native_10pct_flush5", Filter::NativeOtel(10.0), json!({})),
        setup(
            "native_10pct_flush100",
            Filter::NativeOtel(10.0),
            flush100(),
        ),
        setup("native_100pct_flush5", Filter::NativeOtel(100.0), json!({})),
        setup(
            "native_100pct_flush100",
            Filter::NativeOtel(100.0),
            flush100(),
        ),
        setup("meshtrace_1pct", mesh(0.01), json!({})),
        setup("meshtrace_10pct", mesh(0.1), json!({})),
        setup("meshtrace_100pct", mesh(1.0), json!({})),
    ];
    // MESHTRACE_BASELINE_WASM: another build of the filter, measured beside this one.
    let baseline = std::env::var_os("MESHTRACE_BASELINE_WASM").map(std::path::PathBuf::from);
    if let Some(b) = &baseline {
        let cfg = |p: f64| {
            format!(
                r#"{{"service_name":"bench","sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#
            )
        };
        for (name, p) in [
            ("baseline_1pct", 0.01),
            ("baseline_10pct", 0.1),
            ("baseline_100pct", 1.0),
        ] {
            setups.push(setup(
                name,
                Filter::Wasm(b.clone(), Some(cfg(p))),
                json!({}),
            ));
        }
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
    // `--counts`: only the VM entries and host calls per request.
    if args.iter().any(|a| a == "--counts") {
        match diagnostic_counts(upstream.port, sink.port, conns) {
            Some(d) => println!("{d}"),
            None => println!("no diagnostic build: scripts/bench/filter builds it"),
        }
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
                "round {round} {:<24} {n:>8} req  {us:7.2} cpu_us/req{extra}",
                s.name
            );
            samples[i].push(us);
        }
    }
    // Per-round overheads (each against plain Envoy of the same round) before the
    // medians sort the samples.
    let per_round = |a: &str, b: &[&str]| -> Vec<f64> {
        let idx = |n: &str| setups.iter().position(|s| s.name == n);
        let (Some(ia), Some(ip)) = (idx(a), idx("plain")) else {
            return Vec::new();
        };
        let ib: Vec<usize> = b.iter().filter_map(|n| idx(n)).collect();
        if ib.is_empty() {
            return Vec::new();
        }
        (0..rounds)
            .map(|r| {
                let plain = samples[ip][r];
                let native = ib
                    .iter()
                    .map(|&i| samples[i][r] - plain)
                    .fold(f64::INFINITY, f64::min);
                (samples[ia][r] - plain) / native
            })
            .collect()
    };
    let round_ratios = [
        ("1pct", per_round("meshtrace_1pct", &["native_1pct"])),
        (
            "10pct",
            per_round(
                "meshtrace_10pct",
                &["native_10pct_flush5", "native_10pct_flush100"],
            ),
        ),
        (
            "100pct",
            per_round(
                "meshtrace_100pct",
                &["native_100pct_flush5", "native_100pct_flush100"],
            ),
        ),
    ];
    let med: Vec<f64> = samples.iter_mut().map(|v| median(v)).collect();
    println!("# medians (cpu µs per request) and overhead over plain Envoy");
    for (s, m) in setups.iter().zip(&med) {
        println!("{:<24} {m:7.2}  {:+7.2}", s.name, m - med[0]);
    }
    for (rate, v) in &round_ratios {
        if !v.is_empty() {
            let shown: Vec<String> = v.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "# meshtrace / native overhead at {rate}, round by round: {}",
                shown.join(" ")
            );
        }
    }
    let over = |i: usize| med[i] - med[0];
    let find = |n: &str| setups.iter().position(|s| s.name == n).map(over);
    if baseline.is_some() {
        let ratio = |a: &str, natives: &[&str]| {
            let native = natives
                .iter()
                .filter_map(|n| find(n))
                .fold(f64::INFINITY, f64::min);
            find(a).map_or("-".into(), |x| format!("{:.2}", x / native))
        };
        println!(
            "RESULT_BASELINE ratio_1pct={} ratio_10pct={} ratio_100pct={} unsampled_overhead_us={} (the MESHTRACE_BASELINE_WASM build, same run)",
            ratio("baseline_1pct", &["native_1pct"]),
            ratio("baseline_10pct", &["native_10pct_flush5", "native_10pct_flush100"]),
            ratio("baseline_100pct", &["native_100pct_flush5", "native_100pct_flush100"]),
            find("baseline_1pct").map_or("-".into(), |x| format!("{x:.2}")),
        );
    }
    if args.iter().any(|a| a == "--only") {
        return;
    }
    let by_name = |n: &str| find(n).expect("configured");
    let floor = by_name("empty_wasm");
    let headers_only = by_name("wasm_headers_only");
    let span_calls = by_name("wasm_span_calls_only");
    let native_1 = by_name("native_1pct");
    let native_10 = by_name("native_10pct_flush5").min(by_name("native_10pct_flush100"));
    let native_100 = by_name("native_100pct_flush5").min(by_name("native_100pct_flush100"));
    let mesh_1 = by_name("meshtrace_1pct");
    let mesh_10 = by_name("meshtrace_10pct");
    let mesh_100 = by_name("meshtrace_100pct");
    println!(
        "# lower bound for a sampled SERVER span with the SDK adapter's host calls, no logic: +{span_calls:.2} µs = {:.2}x native at 100%",
        span_calls / native_100
    );
    println!(
        "# lower bound for any propagating wasm filter (read header map + set one header): +{headers_only:.2} µs = {:.2}x the floor, {:.2}x native at 1%",
        headers_only / floor,
        headers_only / native_1
    );
    if let Some(diag) = diagnostic_counts(upstream.port, sink.port, conns) {
        println!("{diag}");
    }

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
        "RESULT ratio_1pct={:.2} ratio_10pct={:.2} ratio_100pct={:.2} unsampled_overhead_us={mesh_1:.2} native_1pct_overhead_us={native_1:.2} floor_overhead_us={floor:.2} rss_growth_mb={:.1}",
        mesh_1 / native_1,
        mesh_10 / native_10,
        mesh_100 / native_100,
        rss1 - rss0
    );
}

/// VM entries and host calls per request, from the diagnostic build of the filter
/// (`--features diagnostics`, which scripts/bench/filter builds into target/diag):
/// stream callbacks and host calls counted by the filter itself, at 0% (every
/// request unsampled) and 100%, over 20,000 requests each. `None` without that build.
fn diagnostic_counts(upstream: u16, sink: u16, conns: u64) -> Option<String> {
    let wasm = workspace_root().join("target/diag/wasm32-wasip1/release/meshtrace_filter.wasm");
    if !wasm.exists() {
        return None;
    }
    let mut lines = vec!["# per request, counted by the diagnostic build: VM entries (stream callbacks, and allocations the host makes in the VM to return data) and host calls:".to_string()];
    for (what, p, extra) in [
        (
            "unsampled, from outside the mesh (traceresponse written)",
            0.0,
            "",
        ),
        (
            "unsampled, traceresponse off",
            0.0,
            r#","propagation":{"traceresponse":"never"}"#,
        ),
        ("sampled", 1.0, ""),
    ] {
        let cfg = format!(
            r#"{{"service_name":"bench","sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}{extra}}}"#
        );
        let mut b = EnvoyBuilder::new("bench", Filter::Wasm(wasm.clone(), Some(cfg)), sink);
        let port = b.listener("INBOUND", upstream);
        let envoy = b.start();
        let read = || {
            [
                envoy.counter("diag_vm_entries"),
                envoy.counter("diag_allocations"),
                envoy.counter("diag_host_calls"),
            ]
        };
        let before = read();
        let mut n = 0;
        while n < 20_000 {
            n += wrk(port, 2, conns);
        }
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let after = read();
        let per = |i: usize| after[i].saturating_sub(before[i]) as f64 / n as f64;
        lines.push(format!(
            "#   {what:<56} {:5.2} callbacks + {:5.2} allocations  {:5.2} host calls",
            per(0),
            per(1),
            per(2)
        ));
    }
    Some(lines.join("\n"))
}
