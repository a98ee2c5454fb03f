//! The filter follows the collector's strategies: real Envoy, real collector,
//! a real strategies file changed on disk.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{Collector, Opts};
use meshtrace_testkit::envoy::{Envoy, EnvoyBuilder, Filter};
use meshtrace_testkit::http::Client;
use meshtrace_testkit::upstream::Upstream;
use std::time::{Duration, Instant};

fn strategies(p: f64) -> String {
    format!(
        r#"{{"service_strategies":[{{"service":"backend","type":"probabilistic","param":{p}}}]}}"#
    )
}

/// Waits until every VM (main thread + 1 worker) has applied at least `n` answers in total.
fn wait_updates(envoy: &Envoy, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while envoy.counter("strategy_updates") < n {
        assert!(
            Instant::now() < deadline,
            "strategy not applied: {}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `n` requests; returns how many the filter sampled.
fn sampled_of(envoy: &Envoy, port: u16, n: usize) -> u64 {
    let before = envoy.counter("spans_sampled");
    let mut c = Client::connect(port);
    for _ in 0..n {
        assert_eq!(c.get("/work", &[]).status(), 200);
    }
    std::thread::sleep(Duration::from_millis(300)); // counters reach Envoy on the tick
    envoy.counter("spans_sampled") - before
}

/// A strategies file, removed when dropped.
struct StrategiesFile(std::path::PathBuf);

impl StrategiesFile {
    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for StrategiesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The real collector serving a strategies file (plus `yaml`), and one `backend`
/// sidecar in front of an echo app that polls it every 300 ms; until its first
/// answer the filter samples with its static probability `static_p`.
struct Remote {
    file: StrategiesFile,
    collector: Collector,
    envoy: Envoy,
    port: u16,
    _app: Upstream,
}

fn remote(strategies_json: &str, yaml: &str, static_p: f64) -> Remote {
    let file = StrategiesFile(meshtrace_testkit::scratch_path("remote.json"));
    file.write(strategies_json);
    let collector = Collector::start_opts(
        meshtrace_testkit::scratch_path("remote"),
        Opts {
            yaml: (!yaml.is_empty()).then(|| yaml.to_string()),
            args: vec!["--sampling-strategies".into(), file.0.display().to_string()],
            ..Opts::default()
        },
    );
    let app = Upstream::start();
    let cfg = format!(
        r#"{{"export":{{"flush_interval_ms":100,"tick_ms":50}},
        "sampling":{{"default_strategy":{{"type":"probabilistic","param":{static_p:?}}},"remote":{{"poll_interval_ms":300}}}}}}"#
    );
    let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(cfg), collector.otlp_port);
    b.sampling_port = Some(collector.sampling_port);
    let port = b.listener("INBOUND", app.port);
    Remote {
        file,
        collector,
        envoy: b.start(),
        port,
        _app: app,
    }
}

#[test]
fn filter_applies_remote_strategies_and_keeps_them_when_the_collector_goes() {
    // The static config samples nothing; the collector says 1 for "backend": every
    // sampled request below proves the remote strategy is the one in force.
    let Remote {
        file,
        collector,
        envoy,
        port,
        _app,
    } = remote(&strategies(1.0), "sampling:\n  reload_interval: 1s\n", 0.0);
    wait_updates(&envoy, 2);
    assert_eq!(
        sampled_of(&envoy, port, 200),
        200,
        "the collector's p=1 is in force"
    );

    // Change the file to 0, then back to 1: each within a reload and a couple of polls.
    // (a) The change must be in force within the collector's reload (1 s) plus two
    // poll intervals (2 × 300 ms), plus 1.5 s for the probe itself (20 requests and
    // the counters' tick) on a loaded machine.
    let bound = Duration::from_millis(1000 + 2 * 300 + 1500);
    for (p, want) in [(0.0, 0), (1.0, 20)] {
        file.write(&strategies(p));
        let written = Instant::now();
        loop {
            let k = sampled_of(&envoy, port, 20);
            if k == want {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(15),
                "strategy {p} not applied ({k}/20 sampled)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = written.elapsed();
        eprintln!(
            "strategy {p} in force {} ms after the file changed",
            took.as_millis()
        );
        assert!(took <= bound, "took {took:?}, bound {bound:?}");
    }
    assert_eq!(sampled_of(&envoy, port, 200), 200);

    // The collector goes away: traffic is unaffected and the last strategy stays.
    let failures_before = envoy.counter("strategy_failures");
    drop(collector);
    let deadline = Instant::now() + Duration::from_secs(15);
    while envoy.counter("strategy_failures") <= failures_before {
        assert!(Instant::now() < deadline, "failed polls not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sampled_of(&envoy, port, 200),
        200,
        "last known strategy (p=1) still in force, not the static p=0"
    );
}

/// Sampled traces of `operation` stored with a start in [from_us, to_us].
fn stored(c: &Collector, operation: &str, from_us: u128, to_us: u128) -> usize {
    let (_, body) = c.get(&format!(
        "/api/traces?service=backend&operation={}&start={from_us}&end={to_us}&limit=100000",
        operation.replace(' ', "%20")
    ));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"].as_array().map_or(0, Vec::len)
}

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// (g) Adaptive: 200 req/s on one operation, 5 req/s on another; the collector's
/// computed probabilities bring both to about the 1 trace/s target.
#[test]
fn adaptive_sampling_brings_busy_and_rare_operations_to_the_target() {
    // Bound whole: fields left out of a pattern would drop (Envoy, file) at once.
    let r = remote(
        &strategies(1.0),
        "sampling:\n  reload_interval: 1s\n  adaptive:\n    services: [backend]\n    calculation_interval: 2s\n    smoothing: 0.3\n    target_traces_per_second: 1\n",
        1.0,
    );
    let (collector, port) = (&r.collector, r.port);

    // Paced traffic: /busy every 5 ms (200/s), /rare every 200 ms (5/s).
    let mut c = Client::connect(port);
    // Paced traffic: /busy every 5 ms (200/s), /rare every 200 ms (5/s), each on its
    // own schedule; returns the rates actually reached (a loaded machine may fall short).
    let run = |c: &mut Client, secs: u64| -> (f64, f64) {
        let start = Instant::now();
        let (mut busy, mut rare) = (0u64, 0u64);
        while start.elapsed() < Duration::from_secs(secs) {
            let next_busy = start + Duration::from_millis(5 * busy);
            let next_rare = start + Duration::from_millis(200 * rare);
            let due = next_busy.min(next_rare);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if next_rare <= next_busy {
                assert_eq!(c.get("/rare", &[]).status(), 200);
                rare += 1;
            } else {
                assert_eq!(c.get("/busy", &[]).status(), 200);
                busy += 1;
            }
        }
        let t = start.elapsed().as_secs_f64();
        (busy as f64 / t, rare as f64 / t)
    };
    // Each 2 s interval sees ~2 sampled spans per operation: the smoothed estimate
    // has a relative spread of about 30%, which the bounds below allow for.
    run(&mut c, 12); // converge
    let from = now_us();
    let (busy_rps, rare_rps) = run(&mut c, 15); // measure
    let to = now_us();
    std::thread::sleep(Duration::from_millis(500)); // last exports land
    let secs = (to - from) as f64 / 1e6;
    let busy = stored(collector, "GET /busy", from, to) as f64 / secs;
    let rare = stored(collector, "GET /rare", from, to) as f64 / secs;
    let (_, est) = collector.get_sampling("/api/sampling/adaptive");
    eprintln!(
        "sampled traces/s: busy {busy:.2} (of {busy_rps:.0}/s), rare {rare:.2} (of {rare_rps:.1}/s); {est}"
    );
    assert!(
        busy_rps > 10.0 * rare_rps,
        "traffic too even to mean anything: {busy_rps:.0}/s vs {rare_rps:.1}/s"
    );
    for (name, rate) in [("busy", busy), ("rare", rare)] {
        assert!(
            (0.3..=2.5).contains(&rate),
            "{name}: {rate:.2} sampled traces/s, target 1 ({est})"
        );
    }
    let v: serde_json::Value = serde_json::from_str(&est).unwrap();
    let p = |op: &str| {
        v["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["operation"] == op)
            .and_then(|o| o["probability"].as_f64())
            .unwrap_or(-1.0)
    };
    // The probabilities follow the traffic actually sent: target / rate, within 4×.
    for (op, rps) in [("GET /busy", busy_rps), ("GET /rare", rare_rps)] {
        let want = (1.0 / rps).min(1.0);
        let got = p(op);
        assert!(
            got >= want / 4.0 && got <= (want * 4.0).min(1.0),
            "{op}: p {got} for {rps:.1} req/s, want about {want:.4} ({est})"
        );
    }
    let (_, metrics) = collector.get("/metrics");
    assert!(
        metrics.contains(
            "meshtrace_sampling_adaptive_probability{service=\"backend\",operation=\"GET /busy\"}"
        ),
        "{metrics}"
    );
}

/// (b) Two operations at 0.5 and 0.05, set in the collector's file and polled by the
/// filter: over 2000 requests each, the stored traces match within 5 sigma.
#[test]
fn per_operation_probabilities_from_the_collector_hold_statistically() {
    // Static config samples everything: any shortfall is the remote strategy at work.
    let r = remote(
        r#"{"service_strategies":[{"service":"backend","type":"probabilistic","param":0.0,
            "operation_strategies":[
              {"operation":"GET /half","type":"probabilistic","param":0.5},
              {"operation":"GET /twentieth","type":"probabilistic","param":0.05}]}]}"#,
        "",
        1.0,
    );
    let (collector, envoy, port) = (&r.collector, &r.envoy, r.port);
    wait_updates(envoy, 2);

    let from = now_us();
    let mut c = Client::connect(port);
    for _ in 0..2000 {
        assert_eq!(c.get("/half", &[]).status(), 200);
        assert_eq!(c.get("/twentieth", &[]).status(), 200);
    }
    std::thread::sleep(Duration::from_millis(800));
    let to = now_us();
    for (op, p) in [("GET /half", 0.5f64), ("GET /twentieth", 0.05)] {
        let k = stored(collector, op, from, to) as f64;
        let (mean, sd) = (2000.0 * p, (2000.0 * p * (1.0 - p)).sqrt());
        eprintln!("{op}: {k} of 2000 sampled (expected {mean} ± {sd:.1})");
        assert!(
            (k - mean).abs() <= 5.0 * sd,
            "{op}: {k} of 2000, expected {mean} ± 5×{sd:.1}"
        );
        let (_, body) = collector.get(&format!(
            "/api/traces?service=backend&operation={}&limit=1",
            op.replace(' ', "%20")
        ));
        assert!(
            body.contains(&format!(
                "\"key\":\"sampler.param\",\"type\":\"float64\",\"value\":{p}"
            )),
            "spans carry the probability that applied: {body}"
        );
    }
}
