//! `scripts/bench/ui`: how fast the trace view shows the first screen of a
//! 10,000-span trace in Debian's chromium (playwright-core), against the release
//! collector: `--rounds` fresh page loads; prints each and the median and p95
//! of the view's own time (fetch, parse, critical path, first rows) and of
//! navigation to rows. Target: ≤ 2 s to the first screen.

// A benchmark: setup that fails aborts the run with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::bench::{arg, pct};
use meshtrace_testkit::collector::{Collector, Opts};
use meshtrace_testkit::otlp::{now_ns, request};
use meshtrace_testkit::workspace_root;
use std::process::Command;

fn main() {
    meshtrace_testkit::bench::guard();
    let rounds = arg("--rounds", 10);
    let c = Collector::start_opts(
        std::env::temp_dir().join(format!("meshtrace-bench-ui-{}", std::process::id())),
        Opts::default(),
    );
    let t0 = now_ns() - 60_000_000_000;
    let id = [0xb1; 16];
    let span = |sid: u64, parent: Option<u64>, a: u64, b: u64, name: String| Span {
        trace_id: id.to_vec(),
        span_id: sid.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name,
        kind: 2,
        start_time_unix_nano: t0 + a * 1_000_000,
        end_time_unix_nano: t0 + b * 1_000_000,
        ..Default::default()
    };
    // 10,000 spans: a root, 99 children, 100 grandchildren each.
    let mut spans = vec![span(1, None, 0, 20_000, "GET /report".into())];
    for k in 0..99u64 {
        let cid = 2 + k * 101;
        spans.push(span(
            cid,
            Some(1),
            k * 200,
            k * 200 + 190,
            format!("part {k}"),
        ));
        for g in 0..100u64 {
            spans.push(span(
                cid + 1 + g,
                Some(cid),
                k * 200 + g,
                k * 200 + g + 50,
                format!("row {g}"),
            ));
        }
    }
    assert_eq!(
        c.post_otlp(&request("bench-ui", spans).encode_to_vec()),
        200
    );
    let out = Command::new("node")
        .arg(workspace_root().join("tests/node/ui_bench.mjs"))
        .arg(format!("http://127.0.0.1:{}", c.query_port))
        .arg("b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1")
        .arg(rounds.to_string())
        .current_dir(workspace_root().join("tests/node"))
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let get = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (mut view, mut nav) = (get("view"), get("nav"));
    println!("first screen of a 10,000-span trace, {rounds} fresh page loads (ms): view {view:?}, navigation {nav:?}");
    println!(
        "RESULT ui_first_screen_p50_ms={:.0} ui_first_screen_p95_ms={:.0} ui_navigation_to_rows_p50_ms={:.0} ui_navigation_to_rows_p95_ms={:.0}",
        pct(&mut view, 0.5),
        pct(&mut view, 0.95),
        pct(&mut nav, 0.5),
        pct(&mut nav, 0.95)
    );
}
