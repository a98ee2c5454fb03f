//! `ratelimiting` holds for the whole Envoy, not per worker: 4 workers at
//! `maxTracesPerSecond: 10` sample about 10 traces/s (plus the initial burst
//! of 10), not 40.

use meshtrace_testkit::envoy::{EnvoyBuilder, Filter};
use meshtrace_testkit::http::Client;
use meshtrace_testkit::otlp_receiver::OtlpReceiver;
use meshtrace_testkit::upstream::Upstream;
use std::time::{Duration, Instant};

#[test]
fn four_workers_share_one_budget() {
    let receiver = OtlpReceiver::start();
    let app = Upstream::start();
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50},
        "sampling":{"service_strategies":[{"service":"backend","type":"ratelimiting","param":10}]}}"#;
    let mut b = EnvoyBuilder::new("backend", Filter::Meshtrace(cfg.into()), receiver.port);
    b.concurrency = 4;
    let port = b.listener("INBOUND", app.port);
    let envoy = b.start();

    let started = Instant::now();
    let run_for = Duration::from_secs(3);
    let senders: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                let mut n = 0u64;
                while started.elapsed() < run_for {
                    assert_eq!(c.get("/limited", &[]).status(), 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let requests: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(400));
    let sampled = envoy.counter("spans_sampled");

    // The load really was spread over the workers.
    let busy_workers = envoy
        .stats("downstream_cx_total")
        .iter()
        .filter(|(k, v)| k.contains(".worker_") && **v > 0)
        .count();
    assert!(
        busy_workers >= 3,
        "connections reached only {busy_workers} workers"
    );

    let ceiling = 10.0 + 10.0 * secs * 1.2 + 3.0;
    let floor = 10.0 * secs * 0.6;
    eprintln!("{requests} requests over {secs:.1} s on {busy_workers} workers: {sampled} sampled (Envoy-wide budget ≤ {ceiling:.0})");
    assert!(requests > 500, "too little load: {requests}");
    assert!(
        (sampled as f64) <= ceiling,
        "{sampled} sampled: the budget is not shared across workers"
    );
    assert!(
        (sampled as f64) >= floor,
        "{sampled} sampled: budget under-used"
    );
}
