//! The UI in a real browser (Debian's chromium driven by npm playwright-core,
//! tests/node/ui_test.mjs) against the real collector filled through OTLP: search
//! finds a known trace, the trace view marks the critical path computed by hand
//! (and not the parallel span that is off it), keyboard use, find, deep links on
//! reload, a 10,000-span trace rendered virtualized, compare marking the span
//! only one trace has, the service map with the edge between two services,
//! the window-vs-baseline comparison surfacing the attribute planted only in
//! the window's slow spans,
//! hotspots ranking the known
//! trace's critical-path time as computed by hand, a wide screen, no console
//! errors. Screenshots go to target/ui-artifacts/.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{Collector, Opts};
use meshtrace_testkit::otlp::{now_ns, request};
use meshtrace_testkit::workspace_root;
use std::process::Command;

fn span(
    trace: [u8; 16],
    id: u64,
    parent: Option<u64>,
    name: &str,
    start_ms: u64,
    end_ms: u64,
    t0: u64,
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: if parent.is_none() { 2 } else { 1 },
        start_time_unix_nano: t0 + start_ms * 1_000_000,
        end_time_unix_nano: t0 + end_ms * 1_000_000,
        ..Default::default()
    }
}

#[test]
fn the_ui_in_a_real_browser() {
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("ui-browser"),
        Opts::default(),
    );
    let t0 = now_ns() - 60_000_000_000;
    // GET /checkout 0..100 ms calls reserve 10..40 and pay 20..90 in parallel: pay
    // finishes last, and reserve ends after pay starts, so by hand the critical path
    // is checkout 0..20, pay 20..90, checkout 90..100; reserve is off it.
    let known = [0x5a; 16];
    let mut spans = vec![
        span(known, 1, None, "GET /checkout", 0, 100, t0),
        span(known, 2, Some(1), "reserve", 10, 40, t0),
        span(known, 3, Some(1), "pay", 20, 90, t0),
    ];
    // `reserve` failed (the one error: sorting search results by errors puts this
    // trace first), and only its event says "StockError": find in trace must see it.
    // The root answered 502: its row shows the status and its kind (server).
    spans[0]
        .attributes
        .push(meshtrace_proto::otlp::common::v1::KeyValue {
            key: "http.response.status_code".into(),
            value: Some(meshtrace_proto::otlp::common::v1::AnyValue {
                value: Some(meshtrace_proto::otlp::common::v1::any_value::Value::IntValue(502)),
            }),
            ..Default::default()
        });
    spans[1].status = Some(meshtrace_proto::otlp::trace::v1::Status {
        code: 2,
        message: "out of stock".into(),
    });
    spans[1]
        .events
        .push(meshtrace_proto::otlp::trace::v1::span::Event {
            name: "exception".into(),
            time_unix_nano: t0 + 30_000_000,
            attributes: vec![meshtrace_testkit::otlp::kv("exception.type", "StockError")],
            ..Default::default()
        });
    assert_eq!(c.post_otlp(&request("ui-shop", spans).encode_to_vec()), 200);
    // The same request with a fraud check added: what compare must mark.
    let other = [0x5b; 16];
    let spans = vec![
        span(other, 1, None, "GET /checkout", 0, 160, t0),
        span(other, 2, Some(1), "reserve", 10, 40, t0),
        span(other, 3, Some(1), "pay", 20, 90, t0),
        span(other, 4, Some(1), "fraud-check", 95, 150, t0),
    ];
    assert_eq!(c.post_otlp(&request("ui-shop", spans).encode_to_vec()), 200);
    // A call between two services: ui-web's client span is the parent of ui-api's
    // server span, so the service map has the edge ui-web → ui-api.
    let call = [0xca; 16];
    let mut client = span(call, 1, None, "GET ui-api", 0, 30, t0);
    client.kind = 3;
    let server = span(call, 2, Some(1), "GET /items", 5, 25, t0);
    let mut server = server;
    server.kind = 2;
    assert_eq!(
        c.post_otlp(&request("ui-web", vec![client]).encode_to_vec()),
        200
    );
    assert_eq!(
        c.post_otlp(&request("ui-api", vec![server]).encode_to_vec()),
        200
    );
    // ui-db `query` now (40 spans, 10 of them slow and all of those on shard 7) and a
    // day earlier (40 fast spans on shards 1 and 2): the comparison must surface
    // db.shard=7.
    let mut spans = Vec::new();
    for i in 0..40u64 {
        let slow = i % 4 == 0;
        let mut s = span(
            [0xd0, i as u8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            1,
            None,
            "query",
            i,
            i + if slow { 200 } else { 5 },
            t0,
        );
        s.attributes = vec![meshtrace_testkit::otlp::kv(
            "db.shard",
            if slow {
                "7"
            } else if i % 2 == 0 {
                "1"
            } else {
                "2"
            },
        )];
        spans.push(s);
        let day = 86_400_000_000_000;
        let mut b = span(
            [0xd1, i as u8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
            1,
            None,
            "query",
            i,
            i + 5,
            t0 - day,
        );
        b.attributes = vec![meshtrace_testkit::otlp::kv(
            "db.shard",
            if i % 2 == 0 { "1" } else { "2" },
        )];
        spans.push(b);
    }
    assert_eq!(c.post_otlp(&request("ui-db", spans).encode_to_vec()), 200);
    // 10,000 spans: a root, 99 children, 100 grandchildren each.
    let big = [0xb1; 16];
    let mut spans = vec![span(big, 1, None, "GET /report", 0, 20_000, t0)];
    for c in 0..99u64 {
        let cid = 2 + c * 101;
        spans.push(span(
            big,
            cid,
            Some(1),
            &format!("part {c}"),
            c * 200,
            c * 200 + 190,
            t0,
        ));
        for g in 0..100u64 {
            spans.push(span(
                big,
                cid + 1 + g,
                Some(cid),
                &format!("row {g}"),
                c * 200 + g,
                c * 200 + g + 50,
                t0,
            ));
        }
    }
    assert_eq!(spans.len(), 10_000);
    assert_eq!(c.post_otlp(&request("ui-shop", spans).encode_to_vec()), 200);

    let artifacts = workspace_root().join("target/ui-artifacts");
    let cfg = serde_json::json!({
        "base": format!("http://127.0.0.1:{}", c.query_port),
        "service": "ui-shop",
        "trace": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        "critical": ["0000000000000001", "0000000000000003"],
        "offPath": ["0000000000000002"],
        "findText": "pay",
        "findInEvent": "stockerror",
        "hotspot": {"operation": "pay", "criticalP50": "70.00 ms"},
        "monitorOperation": "GET /checkout",
        "mapEdge": "ui-web->ui-api",
        "comparison": {"service": "ui-db", "top": "db.shard=7"},
        "compare": {"a": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", "b": "5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b5b", "onlyB": "fraud-check"},
        "big": "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1",
        "artifacts": artifacts.display().to_string(),
    });
    let out = Command::new("node")
        .arg(workspace_root().join("tests/node/ui_test.mjs"))
        .arg(cfg.to_string())
        .current_dir(workspace_root().join("tests/node"))
        .output()
        .expect("node (scripts/setup installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\n{stdout}\ncollector log:\n{}",
        c.log()
    );
    let results: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    eprintln!("browser results: {results}");
    assert_eq!(results["console_errors"], 0);
    assert!(results["views"]["big"]["rows_in_dom"].as_u64().unwrap() > 10);
    // The Archive button copied the trace to the archive (beside the SQLite
    // store, or in the blocks engine's backend).
    let archived = "archive/5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a/data.parquet";
    assert!(
        c.data_dir.join(archived).exists() || c.data_dir.join("blocks").join(archived).exists(),
        "the archived trace is in data_dir/archive"
    );
    for shot in [
        "search",
        "trace",
        "big-trace",
        "hotspots",
        "performance",
        "trace-wide",
    ] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}
