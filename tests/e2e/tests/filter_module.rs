//! The native build of the filter (`filter/module`, an Envoy dynamic module)
//! in the real Envoy 1.40: every callback it imports is one that Envoy
//! exports, Envoy loads it with its own ABI version, and a request through it
//! is propagated and exported to the real collector. The filter suites
//! (`filter_e2e.rs`, …) run against this build too with
//! `MESHTRACE_FILTER_BUILD=module` (scripts/test does).
//! Needs `scripts/setup` (Envoy) and `scripts/build-module`.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::{jaeger_process, Collector};
use meshtrace_testkit::envoy::{EnvoyBuilder, Filter};
use meshtrace_testkit::http::Client;
use meshtrace_testkit::upstream::Upstream;
use meshtrace_testkit::{envoy_bin, module_path};
use std::collections::BTreeSet;
use std::process::Command;

/// `nm -D` of `path`: the dynamic symbols of `kind` (`U` undefined, `T` defined).
fn dynamic_symbols(path: &std::path::Path, kind: &str) -> BTreeSet<String> {
    let out = Command::new("nm")
        .arg("-D")
        .arg(path)
        .output()
        .expect("nm (binutils)");
    assert!(out.status.success(), "nm -D {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            match parts.as_slice() {
                [k, name] | [_, k, name] if *k == kind => Some(name.to_string()),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn every_callback_the_module_imports_is_exported_by_envoy() {
    let imported: BTreeSet<String> = dynamic_symbols(&module_path(), "U")
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert!(imported.len() >= 10, "{imported:?}");
    let exported = dynamic_symbols(&envoy_bin(), "T");
    let missing: Vec<&String> = imported.difference(&exported).collect();
    assert!(missing.is_empty(), "Envoy 1.40 does not export {missing:?}");
    // And the module exports every hook Envoy 1.40 requires of an HTTP filter.
    let hooks = dynamic_symbols(&module_path(), "T");
    for h in [
        "program_init",
        "http_filter_config_new",
        "http_filter_config_destroy",
        "http_filter_new",
        "http_filter_request_headers",
        "http_filter_request_body",
        "http_filter_request_trailers",
        "http_filter_response_headers",
        "http_filter_response_body",
        "http_filter_response_trailers",
        "http_filter_stream_complete",
        "http_filter_destroy",
        "http_filter_http_callout_done",
        "http_filter_http_stream_headers",
        "http_filter_http_stream_data",
        "http_filter_http_stream_trailers",
        "http_filter_http_stream_complete",
        "http_filter_http_stream_reset",
        "http_filter_scheduled",
        "http_filter_downstream_above_write_buffer_high_watermark",
        "http_filter_downstream_below_write_buffer_low_watermark",
    ] {
        let name = format!("envoy_dynamic_module_on_{h}");
        assert!(hooks.contains(&name), "{name} is not exported");
    }
}

#[test]
fn envoy_loads_the_module_which_propagates_and_exports() {
    let collector = Collector::start();
    let app = Upstream::start();
    let cfg = r#"{"export":{"flush_interval_ms":100,"tick_ms":50}}"#;
    let mut b = EnvoyBuilder::new("checkout", Filter::Module(cfg.into()), collector.otlp_port);
    let port = b.listener("INBOUND", app.port);
    let envoy = b.start();
    let log = envoy.log();
    assert!(
        log.contains("Dynamic module ABI version v0.2.0 matched."),
        "{log}"
    );
    assert!(
        log.contains(r#"meshtrace: configured for service "checkout""#),
        "the service from the node metadata Istio gives in the environment:\n{log}"
    );
    let r = Client::connect(port).get("/api/items/42", &[]);
    assert_eq!(r.status(), 200);
    let tp = app
        .last()
        .header("traceparent")
        .expect("traceparent injected");
    let trace_id = tp.split('-').nth(1).unwrap().to_string();
    assert!(
        r.header("traceresponse")
            .is_some_and(|t| t.contains(&trace_id)),
        "{:?}",
        r.header("traceresponse")
    );
    let body = collector.get_json_until(&format!("/api/traces/{trace_id}"), |v| {
        v["data"][0]["spans"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    });
    let trace = &body["data"][0];
    let span = &trace["spans"][0];
    assert_eq!(
        jaeger_process(trace, span)["serviceName"],
        "checkout",
        "{body:#}"
    );
    assert_eq!(span["operationName"], "GET /api/items/{id}", "{body:#}");
    // Its counters under the names the wasm build has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stats = envoy.stats("wasmcustom.meshtrace.");
        if stats.get("wasmcustom.meshtrace.spans_exported").copied() == Some(1) {
            assert_eq!(stats.get("wasmcustom.meshtrace.spans_started"), Some(&1));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
