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
    /// A request header every request carries (`name: value`), e.g. a trace
    /// context arriving at an inner hop.
    header: Option<&'static str>,
}

/// An unsampled W3C context, as an inner hop of an unsampled trace receives it.
const UNSAMPLED_CONTEXT: &str =
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

/// Runs wrk on CPU 1 for `secs`; returns the number of completed requests.
fn wrk(port: u16, secs: u64, conns: u64) -> u64 {
    wrk_with(port, secs, conns, None)
}

/// `wrk`, every request carrying `header` if given.
fn wrk_with(port: u16, secs: u64, conns: u64, header: Option<&str>) -> u64 {
    let mut cmd = Command::new("taskset");
    if let Some(h) = header {
        cmd.args(["-c", "1", "wrk", "-H", h, "-t1"]);
    } else {
        cmd.args(["-c", "1", "wrk", "-t1"]);
    }
    let out = cmd
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

/// Prints each rate's per-round ratios of `build`; their medians, by rate.
fn round_ratios<'a>(build: &str, ratios: &mut [(&'a str, Vec<f64>)]) -> Vec<(&'a str, f64)> {
    let mut out = Vec::new();
    for (rate, v) in ratios.iter_mut() {
        if !v.is_empty() {
            let shown: Vec<String> = v.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "# {build} / native overhead at {rate}, round by round: {}",
                shown.join(" ")
            );
            out.push((*rate, median(v)));
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    meshtrace_testkit::bench::guard();
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
    let minimal =
        workspace_root().join("target/wasm32-wasip1/release/meshtrace_minimal_filter.wasm");
    assert!(
        minimal.exists(),
        "build the minimal-ABI reference filter first: scripts/bench/filter does"
    );
    let mesh = |p: f64| {
        Filter::Meshtrace(format!(
            r#"{{"service_name":"bench","sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#
        ))
    };
    let module = |p: f64| {
        Filter::Module(format!(
            r#"{{"service_name":"bench","sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#
        ))
    };
    let setup = |name: &'static str, filter: Filter, runtime: serde_json::Value| Setup {
        name,
        filter,
        runtime,
        header: None,
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
        // The same floors on meshtrace's own ABI layer and exports (3 VM entries
        // per request): nothing; the header map read and one header written; and
        // a response header too, as for a request from outside the mesh.
        setup("minimal_abi_empty", Filter::Wasm(minimal.clone(), None), json!({})),
        setup("minimal_abi_headers", Filter::Wasm(minimal.clone(), Some("headers".into())), json!({})),
        setup(
            "minimal_abi_traceresponse",
            Filter::Wasm(minimal.clone(), Some("traceresponse".into())),
            json!({}),
        ),
        // Looking headers up one by one instead of reading the map: the six names
        // meshtrace must look for in a request from outside the mesh (four
        // formats, the force header, Jaeger's debug id), or `traceparent` alone.
        setup(
            "minimal_abi_probe6_add",
            Filter::Wasm(minimal.clone(), Some("probe,add".into())),
            json!({}),
        ),
        setup(
            "minimal_abi_probe1_add",
            Filter::Wasm(minimal.clone(), Some("probe1,add".into())),
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
        // An inner hop of an unsampled trace (most hops of a mesh at 1%): the
        // context arrives, nothing is recorded, the decision goes on.
        Setup {
            header: Some(UNSAMPLED_CONTEXT),
            ..setup("native_inner_unsampled", Filter::NativeOtel(1.0), json!({}))
        },
        Setup {
            header: Some(UNSAMPLED_CONTEXT),
            ..setup("meshtrace_inner_unsampled", mesh(0.01), json!({}))
        },
        // The same filter as a native Envoy dynamic module (filter/module).
        setup("module_1pct", module(0.01), json!({})),
        setup("module_10pct", module(0.1), json!({})),
        setup("module_100pct", module(1.0), json!({})),
        Setup {
            header: Some(UNSAMPLED_CONTEXT),
            ..setup("module_inner_unsampled", module(0.01), json!({}))
        },
    ];
    // `--calls "probe,add;respmap"`: the minimal filter making these host calls
    // per request (see tests/minimal-filter), to price each kind of call.
    let args: Vec<String> = std::env::args().collect();
    let mut priced = Vec::new();
    if let Some(sets) = args
        .iter()
        .position(|a| a == "--calls")
        .and_then(|i| args.get(i + 1))
    {
        for set in sets.split(';') {
            let name: &'static str = Box::leak(format!("minimal_abi_{set}").into_boxed_str());
            priced.push(name);
            setups.push(setup(
                name,
                Filter::Wasm(minimal.clone(), Some(set.into())),
                json!({}),
            ));
        }
    }
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
        setups.push(Setup {
            header: Some(UNSAMPLED_CONTEXT),
            ..setup(
                "baseline_inner_unsampled",
                Filter::Wasm(b.clone(), Some(cfg(0.01))),
                json!({}),
            )
        });
    }
    // `--only a,b`: measure these configurations (plain is always measured).
    if let Some(only) = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
    {
        let keep: Vec<&str> = only.split(',').collect();
        setups.retain(|s| s.name == "plain" || keep.contains(&s.name) || priced.contains(&s.name));
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
    // `--instructions`: instructions per request under valgrind instead of CPU time.
    if args.iter().any(|a| a == "--instructions") {
        instructions(&setups, upstream.port, sink.port, arg("--requests", 2000));
        return;
    }
    // `--rss`: only Envoy's RSS growth over `--rss-requests` requests at 100%.
    if args.iter().any(|a| a == "--rss") {
        if let Some(at_100) = setups.iter().find(|s| s.name == "meshtrace_100pct") {
            let (rss0, rss1) = rss_growth(at_100, upstream.port, sink.port, conns, rss_requests);
            println!("RESULT_RSS rss_growth_mb={:.1}", rss1 - rss0);
        }
        if let Some(at_100) = setups.iter().find(|s| s.name == "module_100pct") {
            let (rss0, rss1) = rss_growth(at_100, upstream.port, sink.port, conns, rss_requests);
            println!("RESULT_RSS_MODULE module_rss_growth_mb={:.1}", rss1 - rss0);
        }
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
        if name.ends_with("_inner_unsampled") {
            4
        } else if name.ends_with("_1pct") {
            1
        } else if name.contains("_10pct") {
            2
        } else if name.contains("_100pct") {
            3
        } else {
            0
        }
    };
    let groups: Vec<Vec<usize>> = (0..5)
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
    for ((_, port), s) in envoys.iter().zip(&setups) {
        wrk_with(*port, 1, conns, s.header);
    }
    // samples[i]: CPU µs per request; over[i]: minus plain of the same group and round.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut over: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut ratios: Vec<(&str, Vec<f64>)> = vec![
        ("1pct", vec![]),
        ("10pct", vec![]),
        ("100pct", vec![]),
        ("inner_unsampled", vec![]),
    ];
    let mut base_ratios = ratios.clone();
    let mut module_ratios = ratios.clone();
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
                n.push(wrk_with(*port, secs, conns, setups[i].header));
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
                let extra = if setups[i].name.starts_with("meshtrace")
                    || setups[i].name.starts_with("module")
                {
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
            for (build, list) in [
                ("meshtrace", &mut ratios),
                ("baseline", &mut base_ratios),
                ("module", &mut module_ratios),
            ] {
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
    let ratio_med = round_ratios("meshtrace", &mut ratios);
    let module_med = round_ratios("module", &mut module_ratios);
    let find = |n: &str| setups.iter().position(|s| s.name == n).map(|i| med_over[i]);
    if baseline.is_some() {
        let shown: Vec<String> = round_ratios("baseline", &mut base_ratios)
            .iter()
            .map(|(rate, r)| format!("ratio_{rate}={r:.2}"))
            .collect();
        println!(
            "RESULT_BASELINE {} unsampled_overhead_us={} (the MESHTRACE_BASELINE_WASM build, same run)",
            shown.join(" "),
            find("baseline_1pct").map_or("-".into(), |x| format!("{x:.2}")),
        );
    }
    let module_line: Vec<String> = module_med
        .iter()
        .map(|(rate, r)| format!("module_ratio_{rate}={r:.2}"))
        .collect();
    if args.iter().any(|a| a == "--only") {
        if !module_line.is_empty() {
            println!("RESULT_MODULE {}", module_line.join(" "));
        }
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

    let at_100 = setups
        .iter()
        .find(|s| s.name == "meshtrace_100pct")
        .expect("configured");
    let (rss0, rss1) = rss_growth(at_100, upstream.port, sink.port, conns, rss_requests);
    let module_rss = setups
        .iter()
        .find(|s| s.name == "module_100pct")
        .map(|s| rss_growth(s, upstream.port, sink.port, conns, rss_requests));
    let r = |rate: &str| {
        ratio_med
            .iter()
            .find(|(k, _)| *k == rate)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    println!(
        "# ratios of the median overheads: 1% {:.2}, 10% {:.2}, 100% {:.2} (the RESULT gives the median of the per-round ratios)",
        mesh_1 / native_1,
        mesh_10 / native_10,
        mesh_100 / native_100
    );
    println!(
        "RESULT ratio_1pct={:.2} ratio_10pct={:.2} ratio_100pct={:.2} unsampled_overhead_us={mesh_1:.2} native_1pct_overhead_us={native_1:.2} floor_overhead_us={floor:.2} rss_growth_mb={:.1} ratio_inner_unsampled={:.2}",
        r("1pct"),
        r("10pct"),
        r("100pct"),
        rss1 - rss0,
        r("inner_unsampled")
    );
    println!(
        "RESULT_MODULE {} module_rss_growth_mb={}",
        module_line.join(" "),
        module_rss.map_or("-".into(), |(a, b)| format!("{:.1}", b - a))
    );
}

/// Envoy's RSS (MB) after a warm-up and after `n` more requests with `setup`
/// (meshtrace at 100%: every request makes a span); prints both.
fn rss_growth(setup: &Setup, upstream: u16, sink: u16, conns: u64, n: u64) -> (f64, f64) {
    let (envoy, port) = start(setup, upstream, sink);
    wrk(port, 2, conns);
    let rss0 = envoy.rss_mb();
    let mut done = 0;
    while done < n {
        done += wrk(port, 10, conns);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rss1 = envoy.rss_mb();
    println!(
        "# rss at 100%: {rss0:.1} MB after warm-up, {rss1:.1} MB after {done} more requests (exported {}, dropped {})",
        envoy.counter("spans_exported"),
        envoy.counter("spans_dropped")
    );
    (rss0, rss1)
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
    for (what, p, extra, header) in [
        (
            "unsampled, from outside the mesh (traceresponse written)",
            0.0,
            "",
            None,
        ),
        (
            "unsampled, traceresponse off",
            0.0,
            r#","propagation":{"traceresponse":"never"}"#,
            None,
        ),
        (
            "unsampled inner hop (an unsampled context arrives)",
            0.0,
            "",
            Some(UNSAMPLED_CONTEXT),
        ),
        ("sampled", 1.0, "", None),
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
            n += wrk_with(port, 2, conns, header);
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

/// Envoy's instructions per request for each configuration, counted by valgrind
/// (callgrind): the count does not depend on what else the machine runs, so
/// configurations compare within a percent where CPU time drifts by 2x. Each
/// Envoy runs under callgrind; after a warm-up the counters are zeroed, `n`
/// requests are sent one after another on one connection, and the counters are
/// dumped (`callgrind_control`). Background work in that window (timers, the
/// export of spans) is counted too, as part of what the requests cost.
fn instructions(setups: &[Setup], upstream: u16, sink: u16, n: u64) {
    use meshtrace_testkit::http::Client;
    println!(
        "# instructions per request under callgrind, {n} requests each (Envoy --concurrency 1)"
    );
    let mut plain = None;
    let mut results = Vec::new();
    for s in setups {
        let dir =
            std::env::temp_dir().join(format!("meshtrace-cg-{}-{}", std::process::id(), s.name));
        let _ = std::fs::create_dir_all(&dir);
        let mut b = EnvoyBuilder::new("bench", s.filter.clone(), sink);
        b.runtime = s.runtime.clone();
        b.wrapper = vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--smc-check=all-non-file".into(),
            format!("--callgrind-out-file={}/cg.%p", dir.display()),
        ];
        b.ready_timeout = std::time::Duration::from_secs(600);
        let port = b.listener("INBOUND", upstream);
        let envoy = b.start();
        let mut c = Client::connect(port);
        let header: Vec<(&str, &[u8])> = s
            .header
            .and_then(|h| h.split_once(": "))
            .map(|(k, v)| vec![(k, v.as_bytes())])
            .unwrap_or_default();
        for _ in 0..200 {
            c.get("/api/items/42", &header);
        }
        let control = |flag: &str| {
            Command::new("callgrind_control")
                .arg(flag)
                .arg(envoy.pid().to_string())
                .output()
                .expect("callgrind_control (Debian valgrind)");
        };
        control("-z");
        for _ in 0..n {
            c.get("/api/items/42", &header);
        }
        control("-d");
        let total: u64 = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".1"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| {
                        l.strip_prefix("totals: ")
                            .or_else(|| l.strip_prefix("summary: "))
                    })
                    .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .max()
            })
            .sum();
        drop(envoy);
        if std::env::var_os("MESHTRACE_KEEP_CALLGRIND").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            println!("# callgrind output kept in {}", dir.display());
        }
        let per = total as f64 / n as f64;
        let over = plain.map(|p: f64| per - p);
        if s.name == "plain" {
            plain = Some(per);
        }
        println!(
            "{:<32} {per:10.0} instructions/request  {}",
            s.name,
            over.map_or(String::new(), |o| format!("{o:+10.0}"))
        );
        results.push((s.name, per));
    }
    let over = |n: &str| {
        let p = results.iter().find(|(k, _)| *k == "plain")?.1;
        results.iter().find(|(k, _)| *k == n).map(|(_, v)| v - p)
    };
    let min_of = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| over(n))
            .fold(f64::INFINITY, f64::min)
    };
    let ratio = |build: &str, rate: &str, natives: &[&str]| {
        // `-` when either side was not measured (`--only`).
        let native = min_of(natives);
        match over(&format!("{build}_{rate}")) {
            Some(m) if native.is_finite() => format!("{:.2}", m / native),
            _ => "-".into(),
        }
    };
    let line = |build: &str| {
        format!(
            "ratio_1pct={} ratio_10pct={} ratio_100pct={} ratio_inner_unsampled={}",
            ratio(build, "1pct", &["native_1pct"]),
            ratio(
                build,
                "10pct",
                &["native_10pct_flush5", "native_10pct_flush100"]
            ),
            ratio(
                build,
                "100pct",
                &["native_100pct_flush5", "native_100pct_flush100"]
            ),
            ratio(build, "inner_unsampled", &["native_inner_unsampled"]),
        )
    };
    let show = |n: &str| over(n).map_or("-".into(), |v| format!("{v:.0}"));
    if over("baseline_1pct").is_some() {
        println!(
            "RESULT_INSTRUCTIONS_BASELINE {} unsampled_overhead_instr={}",
            line("baseline"),
            show("baseline_1pct")
        );
    }
    println!(
        "RESULT_INSTRUCTIONS {} {} unsampled_overhead_instr={} native_1pct_overhead_instr={} floor_overhead_instr={} abi_floor_instr={} propagation_floor_instr={}",
        line("meshtrace"),
        line("module").replace("ratio_", "module_ratio_"),
        show("meshtrace_1pct"),
        show("native_1pct"),
        show("empty_wasm"),
        show("minimal_abi_empty"),
        show("minimal_abi_headers")
    );
}
