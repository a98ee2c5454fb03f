//! The filter follows the collector's strategies: real Envoy, real collector,
//! a real strategies file changed on disk.

use meshtrace_tests::collector::{Collector, Opts};
use meshtrace_tests::envoy::{Envoy, EnvoyBuilder, Filter};
use meshtrace_tests::free_port;
use meshtrace_tests::http::Client;
use meshtrace_tests::upstream::Upstream;
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

#[test]
fn filter_applies_remote_strategies_and_keeps_them_when_the_collector_goes() {
    let file = std::env::temp_dir().join(format!("meshtrace-remote-{}.json", free_port()));
    std::fs::write(&file, strategies(1.0)).unwrap();
    let dir = std::env::temp_dir().join(format!("meshtrace-remote-{}", free_port()));
    let collector = Collector::start_opts(
        dir,
        Opts {
            yaml: Some("sampling:\n  reload_interval: 1s\n".into()),
            args: vec!["--sampling-strategies".into(), file.display().to_string()],
            ..Opts::default()
        },
    );
    let app = Upstream::start();
    // The static config samples nothing; the collector says 1 for "backend": every
    // sampled request below proves the remote strategy is the one in force.
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50},
        "sampling":{"default_strategy":{"type":"probabilistic","param":0.0},"remote":{"poll_interval_ms":300}}}"#;
    let mut b = EnvoyBuilder::new(
        "backend",
        Filter::Meshtrace(cfg.into()),
        collector.otlp_port,
    );
    b.sampling_port = Some(collector.sampling_port);
    let port = b.listener("INBOUND", app.port);
    let envoy = b.start();

    wait_updates(&envoy, 2);
    assert_eq!(
        sampled_of(&envoy, port, 200),
        200,
        "the collector's p=1 is in force"
    );

    // Change the file to 0, then back to 1: each within a reload and a couple of polls.
    for (p, want) in [(0.0, 0), (1.0, 20)] {
        std::fs::write(&file, strategies(p)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let k = sampled_of(&envoy, port, 20);
            if k == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "strategy {p} not applied ({k}/20 sampled)"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
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
    let _ = std::fs::remove_file(&file);
}
