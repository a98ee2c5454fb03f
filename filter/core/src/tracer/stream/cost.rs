//! The per-request path's cost on the host, counted in instructions by
//! `scripts/bench/filter-instructions` under valgrind (callgrind counts the same
//! total whatever else the machine does). Ignored in normal test runs.

use super::*;
use crate::config::Config;
use crate::testing::FakeHost;

#[test]
#[ignore = "a benchmark: scripts/bench/filter-instructions runs it under callgrind"]
fn cost_of_requests() {
    let p: f64 = std::env::var("MESHTRACE_COST_P")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    let n: u64 = std::env::var("MESHTRACE_COST_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // MESHTRACE_COST_PARENT: a `traceparent` every request carries (an inner hop).
    let parent = std::env::var("MESHTRACE_COST_PARENT").ok();
    let root = FakeHost::new().with_property("xds.node.metadata.LABELS.app", b"checkout");
    let config =
        format!(r#"{{"sampling":{{"default_strategy":{{"type":"probabilistic","param":{p}}}}}}}"#);
    let env = |_: &str| None;
    let mut t = Tracer::new(
        Config::from_json(config.as_bytes()).unwrap(),
        &root,
        &env,
        7,
    )
    .unwrap();
    let mut sampled = 0;
    for i in 0..n {
        let mut h = FakeHost::new()
            .with_request("GET", &format!("/api/items/{}", i % 50))
            .with_response_header(":status", "200");
        if let Some(p) = &parent {
            h = h.with_header("traceparent", p);
        }
        let mut s = Stream::on_request_headers(&mut t, &mut h, true);
        s.on_response_headers(&t, &mut h, false);
        s.on_log(&mut t, &h);
        if i % 256 == 0 {
            let before = h.dispatched.len();
            t.flush(&mut h);
            sampled += h.dispatched.len() - before;
        }
    }
    assert!(
        p < 0.5 || n == 0 || sampled > 0,
        "nothing exported at p = {p}"
    );
}
