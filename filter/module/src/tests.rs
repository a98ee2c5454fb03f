//! The adapter through its hooks, against `fake_host` (each test thread has
//! its own fake Envoy state).
#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::abi::*;
use crate::fake_host::{with, DELETED};
use std::ffi::c_void;

thread_local! {
    /// Makes the next `request_headers` panic (the hook must catch it).
    pub static PANIC_NEXT: Cell<bool> = const { Cell::new(false) };
}

fn dummy() -> *mut c_void {
    std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
}

fn eb(s: &str) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: s.as_ptr().cast(),
        length: s.len(),
    }
}

fn configure(json: &str) -> *const c_void {
    envoy_dynamic_module_on_http_filter_config_new(dummy(), eb("meshtrace"), eb(json))
}

fn request(extra: &[(&str, &str)]) {
    with(|f| {
        let mut req: Vec<(String, String)> = [
            (":method", "GET"),
            (":path", "/smoke/1"),
            (":authority", "app"),
            (":scheme", "http"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        f.headers.insert(REQUEST_HEADERS, std::mem::take(&mut req));
        f.headers
            .insert(RESPONSE_HEADERS, vec![(":status".into(), "503".into())]);
        f.ints.insert(15, 503);
    });
}

fn header(kind: u32, name: &str) -> Option<String> {
    with(|f| {
        f.headers
            .get(&kind)?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

fn counter(name: &str) -> Option<u64> {
    with(|f| f.counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
}

fn answer(cfgm: *const c_void, id: u64, status: &str) {
    let mut headers = [EnvoyHttpHeader {
        key_ptr: ":status".as_ptr().cast(),
        key_length: 7,
        value_ptr: status.as_ptr().cast(),
        value_length: status.len(),
    }];
    envoy_dynamic_module_on_http_filter_config_http_callout_done(
        dummy(),
        cfgm,
        id,
        0,
        headers.as_mut_ptr(),
        1,
        std::ptr::null_mut(),
        0,
    );
}

fn stream_state(fm: *const c_void) -> bool {
    // SAFETY: `fm` is a live `StreamCtx` made by `on_http_filter_new`.
    unsafe { (*fm.cast::<StreamCtx>()).stream.is_some() }
}

#[test]
fn the_abi_version_is_envoy_1_40s() {
    let v = envoy_dynamic_module_on_program_init();
    // SAFETY: a NUL-terminated static string.
    let s = unsafe { std::ffi::CStr::from_ptr(v) };
    assert_eq!(s.to_str().unwrap(), "v0.2.0");
}

#[test]
fn a_sampled_request_is_traced_answered_and_exported_from_the_main_thread() {
    let cfgm = configure(r#"{"service_name":"smoke","export":{"flush_interval_ms":1}}"#);
    assert!(!cfgm.is_null());
    assert!(
        counter("meshtrace.spans_started").is_some(),
        "counters defined"
    );
    request(&[]);
    let fm = envoy_dynamic_module_on_http_filter_new(cfgm, dummy());
    assert_eq!(
        envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true),
        0
    );
    let tp = header(REQUEST_HEADERS, "traceparent").expect("traceparent injected");
    assert!(tp.starts_with("00-") && tp.ends_with("-03"), "{tp}");
    assert!(stream_state(fm), "a sampled stream keeps its span");
    assert_eq!(
        envoy_dynamic_module_on_http_filter_response_headers(dummy(), fm, false),
        0
    );
    assert_eq!(header(RESPONSE_HEADERS, "traceresponse"), Some(tp));
    envoy_dynamic_module_on_http_filter_stream_complete(dummy(), fm);
    assert!(!stream_state(fm), "dropped once finished");
    envoy_dynamic_module_on_http_filter_destroy(fm);
    std::thread::sleep(Duration::from_millis(5));
    envoy_dynamic_module_on_http_filter_config_scheduled(dummy(), cfgm, 1);
    let (cluster, headers, body) = with(|f| f.callouts.first().cloned()).expect("an export");
    assert_eq!(cluster, "meshtrace-collector");
    let has_header = |k: &str, v: &str| headers.iter().any(|(a, b)| a == k && b == v);
    assert!(has_header(":path", "/v1/traces"), "{headers:?}");
    assert!(has_header(":method", "POST"), "{headers:?}");
    assert!(
        headers.iter().any(|(k, _)| k == "host") && !headers.iter().any(|(k, _)| k == ":authority"),
        "Envoy's callouts take `host`: {headers:?}"
    );
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"smoke") && has(b"/smoke/1"),
        "the span is in the OTLP body"
    );
    answer(cfgm, 1, "200");
    envoy_dynamic_module_on_http_filter_config_scheduled(dummy(), cfgm, 1);
    assert_eq!(counter("meshtrace.spans_exported"), Some(1));
    assert_eq!(counter("meshtrace.spans_started"), Some(1));
    envoy_dynamic_module_on_http_filter_config_destroy(cfgm);
}

#[test]
fn an_unsampled_inner_hop_keeps_no_state_and_writes_nothing() {
    let never = r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0}}}"#;
    let cfgm = configure(never);
    assert!(!cfgm.is_null());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    request(&[("traceparent", tp)]);
    let before = with(|f| f.headers.clone());
    let fm = envoy_dynamic_module_on_http_filter_new(cfgm, dummy());
    envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true);
    assert!(!stream_state(fm));
    envoy_dynamic_module_on_http_filter_response_headers(dummy(), fm, false);
    envoy_dynamic_module_on_http_filter_stream_complete(dummy(), fm);
    envoy_dynamic_module_on_http_filter_destroy(fm);
    assert_eq!(
        with(|f| f.headers.clone()),
        before,
        "headers go on as they came"
    );
    envoy_dynamic_module_on_http_filter_config_destroy(cfgm);
}

#[test]
fn a_bad_configuration_is_refused_with_a_log_line_and_a_panic_never_reaches_envoy() {
    assert!(configure(r#"{"export":{"max_batch_spans":0}}"#).is_null());
    let logs = with(|f| f.logs.clone());
    assert!(
        logs.iter()
            .any(|(l, m)| *l == LOG_ERROR && m.contains("export.max_batch_spans")),
        "{logs:?}"
    );
    let cfgm = configure("{}");
    assert!(!cfgm.is_null());
    request(&[]);
    let fm = envoy_dynamic_module_on_http_filter_new(cfgm, dummy());
    PANIC_NEXT.with(|p| p.set(true));
    assert_eq!(
        envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true),
        0,
        "the request goes on"
    );
    assert!(with(|f| f.logs.iter().any(
        |(l, m)| *l == LOG_ERROR && m.contains("request_headers hook failed")
    )));
    // The next request is traced as usual.
    envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true);
    assert!(header(REQUEST_HEADERS, "traceparent").is_some());
    envoy_dynamic_module_on_http_filter_destroy(fm);
    envoy_dynamic_module_on_http_filter_config_destroy(cfgm);
}

#[test]
fn refused_exports_are_logged_once_and_the_spans_wait() {
    let cfgm = configure(r#"{"export":{"flush_interval_ms":1}}"#);
    with(|f| f.refuse_callouts = Some(2));
    for _ in 0..3 {
        request(&[]);
        let fm = envoy_dynamic_module_on_http_filter_new(cfgm, dummy());
        envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true);
        envoy_dynamic_module_on_http_filter_response_headers(dummy(), fm, false);
        envoy_dynamic_module_on_http_filter_stream_complete(dummy(), fm);
        envoy_dynamic_module_on_http_filter_destroy(fm);
        std::thread::sleep(Duration::from_millis(2));
        envoy_dynamic_module_on_http_filter_config_scheduled(dummy(), cfgm, 1);
    }
    let refusals = with(|f| {
        f.logs
            .iter()
            .filter(|(_, m)| m.contains("export call refused"))
            .count()
    });
    assert_eq!(refusals, 1, "logged at most once a minute");
    with(|f| f.refuse_callouts = None);
    // A later tick sends what waited (after the retry delay).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while with(|f| f.callouts.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "never sent");
        std::thread::sleep(Duration::from_millis(20));
        envoy_dynamic_module_on_http_filter_config_scheduled(dummy(), cfgm, 1);
    }
    envoy_dynamic_module_on_http_filter_config_destroy(cfgm);
}

#[test]
fn the_ticker_wakes_the_main_thread_and_stops_with_its_configuration() {
    let cfgm = configure(r#"{"export":{"tick_ms":10}}"#);
    // SAFETY: the live `Arc<Module>` made by `config_new`.
    let module = unsafe { (*cfgm.cast::<Arc<Module>>()).clone() };
    let before = fake_host::COMMITS.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        fake_host::COMMITS.load(Ordering::Relaxed) > before,
        "ticks committed"
    );
    let deleted = DELETED.load(Ordering::Relaxed);
    envoy_dynamic_module_on_http_filter_config_destroy(cfgm);
    assert!(lock(&module.ticker).is_none(), "the ticker is joined");
    assert!(
        DELETED.load(Ordering::Relaxed) > deleted,
        "its scheduler deleted"
    );
    assert_eq!(Arc::strong_count(&module), 1);
}

#[test]
fn node_metadata_comes_from_where_istio_puts_it() {
    let env = |k: &str| match k {
        "ISTIO_META_WORKLOAD_NAME" => Some("reviews-v1".to_string()),
        "POD_NAMESPACE" => Some("shop".to_string()),
        "ISTIO_METAJSON_LABELS" => Some(r#"{"app":"reviews","version":"v1"}"#.to_string()),
        _ => None,
    };
    let no_file = |_: &str| None;
    let get =
        |path: &[&str]| node_metadata(path, &env, &no_file).map(|b| String::from_utf8(b).unwrap());
    assert_eq!(
        get(&["xds", "node", "metadata", "WORKLOAD_NAME"]).as_deref(),
        Some("reviews-v1")
    );
    assert_eq!(
        get(&["xds", "node", "metadata", "NAMESPACE"]).as_deref(),
        Some("shop")
    );
    assert_eq!(
        get(&["xds", "node", "metadata", "LABELS", "app"]).as_deref(),
        Some("reviews")
    );
    assert_eq!(get(&["xds", "node", "metadata", "LABELS", "team"]), None);
    assert_eq!(get(&["xds", "node", "cluster"]), None);
    // Without the JSON variable: the pod's labels file.
    let bare = |_: &str| None;
    let file = |p: &str| {
        (p == POD_LABELS_FILE)
            .then(|| "app=\"ratings\"\nservice.istio.io/canonical-name=\"ratings\"\n".to_string())
    };
    let label = node_metadata(
        &[
            "xds",
            "node",
            "metadata",
            "LABELS",
            "service.istio.io/canonical-name",
        ],
        &bare,
        &file,
    );
    assert_eq!(label, Some(b"ratings".to_vec()));
}

#[test]
fn a_header_map_larger_than_the_stack_list_is_read_whole() {
    let cfgm = configure(
        r#"{"custom_tags":[{"tag":"last_header","request_header":"x-h39"}],"export":{"flush_interval_ms":1}}"#,
    );
    let extra: Vec<(String, String)> = (0..40)
        .map(|i| (format!("x-h{i}"), format!("v{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request(&refs);
    let fm = envoy_dynamic_module_on_http_filter_new(cfgm, dummy());
    envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true);
    assert!(header(REQUEST_HEADERS, "traceparent").is_some());
    // SAFETY: `fm` is a live `StreamCtx`.
    let ctx = unsafe { &*fm.cast::<StreamCtx>() };
    assert!(ctx.stream.is_some(), "sampled, with the 44-header map read");
    envoy_dynamic_module_on_http_filter_response_headers(dummy(), fm, true);
    envoy_dynamic_module_on_http_filter_stream_complete(dummy(), fm);
    envoy_dynamic_module_on_http_filter_destroy(fm);
    std::thread::sleep(Duration::from_millis(5));
    envoy_dynamic_module_on_http_filter_config_scheduled(dummy(), cfgm, 1);
    let (_, _, body) = with(|f| f.callouts.last().cloned()).expect("an export");
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"last_header") && has(b"v39"),
        "the map's last header (beyond the stack list) tagged the span"
    );
    envoy_dynamic_module_on_http_filter_config_destroy(cfgm);
}

#[test]
fn reused_stream_boxes_start_clean_under_their_own_configuration() {
    let sampled = configure(
        r#"{"service_name":"all","sampling":{"default_strategy":{"type":"probabilistic","param":1.0}}}"#,
    );
    let none = configure(
        r#"{"service_name":"none","sampling":{"default_strategy":{"type":"probabilistic","param":0.0}},"propagation":{"traceresponse":"never"}}"#,
    );
    assert!(!sampled.is_null() && !none.is_null());
    let module_of = |fm: *const c_void| {
        // SAFETY: `fm` is a live `StreamCtx`.
        let ctx = unsafe { &*fm.cast::<StreamCtx>() };
        ctx.module
            .as_ref()
            .map(|m| lock(&m.workers[0]).service_name().to_string())
    };
    let open = |cfgm: *const c_void| {
        // SAFETY: made by `configure` and not destroyed yet.
        let m = unsafe { &*cfgm.cast::<Arc<Module>>() };
        m.open_streams.load(Ordering::Relaxed)
    };
    for round in 0..3 {
        // A sampled stream destroyed mid-way (no `stream_complete`: a reset).
        request(&[]);
        let fm = envoy_dynamic_module_on_http_filter_new(sampled, dummy());
        envoy_dynamic_module_on_http_filter_request_headers(dummy(), fm, true);
        assert!(stream_state(fm), "{round}");
        assert_eq!(open(sampled), 1);
        envoy_dynamic_module_on_http_filter_destroy(fm);
        assert_eq!(
            open(sampled),
            0,
            "a destroyed stream's state is counted out"
        );
        // The next stream, of the other configuration, reuses that box.
        request(&[]);
        let again = envoy_dynamic_module_on_http_filter_new(none, dummy());
        assert_eq!(again, fm, "the box is reused on this worker");
        assert!(!stream_state(again), "no state carried over");
        assert_eq!(module_of(again).as_deref(), Some("none"));
        envoy_dynamic_module_on_http_filter_request_headers(dummy(), again, true);
        assert!(!stream_state(again), "an unsampled stream keeps nothing");
        envoy_dynamic_module_on_http_filter_destroy(again);
    }
    envoy_dynamic_module_on_http_filter_config_destroy(sampled);
    envoy_dynamic_module_on_http_filter_config_destroy(none);
}
