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
    let rounds = arg("--rounds", 10) as usize;
    let secs = arg("--seconds", 3);
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
        // What `traceresponse` (on by default for requests from outside the mesh, as
        // all of wrk's are) adds to an unsampled request: one header write.
        setup(
            "meshtrace_no_traceresponse_1pct",
            Filter::Meshtrace(
                r#"{"service_name":"bench","sampling":{"default_strategy":{"type":"probabilistic","param":0.01}},"propagation":{"traceresponse":"never"}}"#.into(),
            ),
            json!({}),
        ),
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
    // Every configuration's Envoy is started once and stays up (all on CPU 0, idle
    // but for their timers while another is measured); a round measures each group
    // (plain Envoy, Envoy's native tracer and meshtrace at one sampling rate)
    // back to back, `secs` each under wrk on CPU 1, so the overheads and ratios of a
    // round come from measurements seconds apart: the drift of a shared machine
    // (plain Envoy has moved by 2x within minutes here) cancels out of them.
    // Groups and members rotate from round to round.
    let group_of = |name: &str| {
        if name.ends_with("_1pct") {
            1
        } else if name.contains("_10pct") {
            2
        } else if name.contains("_100pct") {
            3
        } else {
            0
        }
    };
    let groups: Vec<Vec<usize>> = (0..4)
        .map(|g| {
            (0..setups.len())
                .filter(|&i| setups[i].name == "plain" || group_of(setups[i].name) == g)
                .collect::<Vec<_>>()
        })
        .filter(|members| members.len() > 1)
        .collect();
    let envoys: Vec<(Envoy, u16)> = setups
        .iter()
        .map(|s| start(s, upstream.port, sink.port))
        .collect();
    for (_, port) in &envoys {
        wrk(*port, 1, conns);
    }
    // samples[i]: CPU µs per request; over[i]: minus plain of the same group and round.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut over: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut ratios: Vec<(&str, Vec<f64>)> =
        vec![("1pct", vec![]), ("10pct", vec![]), ("100pct", vec![])];
    let mut base_ratios = ratios.clone();
    println!(
        "# {rounds} rounds x {} groups (plain Envoy in each), {secs}s per configuration, wrk -c{conns} on CPU 1, each Envoy --concurrency 1 on CPU 0",
        groups.len()
    );
    for round in 0..rounds {
        for k in 0..groups.len() {
            let mut members = groups[(k + round) % groups.len()].clone();
            let len = members.len();
            members.rotate_left(round % len);
            let mut n = Vec::new();
            let mut ticks = Vec::new();
            for &i in &members {
                let (e, port) = &envoys[i];
                let t0 = cpu_ticks(e.pid());
                n.push(wrk(*port, secs, conns));
                ticks.push(cpu_ticks(e.pid()) - t0);
            }
            let us: Vec<f64> = (0..members.len())
                .map(|j| ticks[j] as f64 / tck * 1e6 / n[j].max(1) as f64)
                .collect();
            let plain_at = members
                .iter()
                .position(|&i| setups[i].name == "plain")
                .unwrap_or(0);
            for (j, &i) in members.iter().enumerate() {
                samples[i].push(us[j]);
                over[i].push(us[j] - us[plain_at]);
                let (e, _) = &envoys[i];
                let extra = if setups[i].name.starts_with("meshtrace") {
                    format!(
                        " sampled={} dropped={}",
                        e.counter("spans_sampled"),
                        e.counter("spans_dropped")
                    )
                } else {
                    String::new()
                };
                println!(
                    "round {round} {:<24} {:>8} req  {:7.2} cpu_us/req  {:+7.2}{extra}",
                    setups[i].name,
                    n[j],
                    us[j],
                    us[j] - us[plain_at]
                );
            }
            // This round's ratio at this group's rate: meshtrace over the cheaper native.
            let of = |name: &str| {
                members
                    .iter()
                    .position(|&i| setups[i].name == name)
                    .map(|j| us[j] - us[plain_at])
            };
            for (build, list) in [("meshtrace", &mut ratios), ("baseline", &mut base_ratios)] {
                for (rate, v) in list.iter_mut() {
                    let natives: Vec<f64> = [
                        format!("native_{rate}"),
                        format!("native_{rate}_flush5"),
                        format!("native_{rate}_flush100"),
                    ]
                    .iter()
                    .filter_map(|n| of(n))
                    .collect();
                    if let (Some(m), false) = (of(&format!("{build}_{rate}")), natives.is_empty()) {
                        v.push(m / natives.iter().copied().fold(f64::INFINITY, f64::min));
                    }
                }
            }
        }
    }
    drop(envoys);
    let med: Vec<f64> = samples.iter_mut().map(|v| median(v)).collect();
    let med_over: Vec<f64> = over.iter_mut().map(|v| median(v)).collect();
    println!(
        "# medians: cpu µs per request, and overhead over plain Envoy of the same group and round"
    );
    for (i, s) in setups.iter().enumerate() {
        println!("{:<24} {:7.2}  {:+7.2}", s.name, med[i], med_over[i]);
    }
    let mut ratio_med = std::collections::HashMap::new();
    for (rate, v) in ratios.iter_mut() {
        if !v.is_empty() {
            let shown: Vec<String> = v.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "# meshtrace / native overhead at {rate}, round by round: {}",
                shown.join(" ")
            );
            ratio_med.insert(*rate, median(v));
        }
    }
    let find = |n: &str| setups.iter().position(|s| s.name == n).map(|i| med_over[i]);
    if baseline.is_some() {
        let mut shown = Vec::new();
        for (rate, v) in base_ratios.iter_mut() {
            if !v.is_empty() {
                let rounds: Vec<String> = v.iter().map(|r| format!("{r:.2}")).collect();
                println!(
                    "# baseline / native overhead at {rate}, round by round: {}",
                    rounds.join(" ")
                );
                shown.push(format!("ratio_{rate}={:.2}", median(v)));
            }
        }
        println!(
            "RESULT_BASELINE {} unsampled_overhead_us={} (the MESHTRACE_BASELINE_WASM build, same run)",
            shown.join(" "),
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
    let r = |rate: &str| ratio_med.get(rate).copied().unwrap_or(f64::NAN);
    println!(
        "# ratios of the median overheads: 1% {:.2}, 10% {:.2}, 100% {:.2} (the RESULT gives the median of the per-round ratios)",
        mesh_1 / native_1,
        mesh_10 / native_10,
        mesh_100 / native_100
    );
    println!(
        "RESULT ratio_1pct={:.2} ratio_10pct={:.2} ratio_100pct={:.2} unsampled_overhead_us={mesh_1:.2} native_1pct_overhead_us={native_1:.2} floor_overhead_us={floor:.2} rss_growth_mb={:.1}",
        r("1pct"),
        r("10pct"),
        r("100pct"),
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
