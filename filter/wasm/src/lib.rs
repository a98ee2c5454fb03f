//! The proxy-wasm adapter: implements `meshtrace_filter_core::host` over the ABI
//! ([`abi`]) and forwards each callback to the core. No logic lives here.
//!
//! The module exports only the callbacks the filter needs, because the host
//! enters the VM for every callback a module exports (the Rust SDK exports all
//! of them): per request Envoy enters it for the request headers, the response
//! headers and the log, nothing else (no context create, bodies, request
//! trailers, done or delete; response trailers only when a response has them).
//! A stream's state exists only when something is left to do after its request
//! headers (a sampled span, a `traceresponse` to write); it is created there and
//! dropped at the log callback, the last one Envoy makes for a stream (its
//! access-log phase). One plugin configuration per VM: a second root context in
//! the same VM is refused with a log line (give each its own `vm_id`).
//!
//! All export calls are made from the root context: Envoy cancels a context's
//! pending calls when the context goes away. Streams only append encoded spans
//! to the VM's buffer; the root's tick sends them.

mod abi;
mod diag;
#[cfg(test)]
mod fake_host;

use abi::{Buffer, Map};
use meshtrace_filter_core::export::CallOutcome;
use meshtrace_filter_core::host::{Headers, Host, RootHost, StreamHost};
use meshtrace_filter_core::metrics::COUNTERS;
use meshtrace_filter_core::{Config, Stream, Tracer};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Streams with state at once per VM; beyond it a new stream's span is not kept.
const MAX_OPEN_STREAMS: usize = 10_000;
const CONTINUE: u32 = 0;

#[derive(Default)]
struct Vm {
    root: Option<u32>,
    tracer: Option<Tracer>,
    metrics: Vec<(&'static str, u32)>,
    streams: FxHashMap<u32, Stream>,
    /// Diagnostic counters: (name, id, total already reported).
    diag: Vec<(&'static str, u32, u64)>,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
    /// When each kind of host error was last logged (ns), for rate limiting;
    /// apart from `VM`, which is borrowed while the errors happen.
    static LOGGED: RefCell<Vec<(&'static str, u64)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the VM's state. Callbacks never nest (host calls do not call back
/// into the filter), so the borrow always succeeds; if it did not, the callback
/// is skipped rather than the request failed.
fn with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VM.with(|vm| vm.try_borrow_mut().ok().map(|mut v| f(&mut v)))
}

/// Logs a host error at most once a minute per kind.
fn host_error(kind: &'static str, detail: &str) {
    let now = abi::now_nanos();
    let due = LOGGED.with(|l| {
        l.try_borrow_mut()
            .is_ok_and(|mut logged| meshtrace_filter_core::host::log_due(&mut logged, kind, now))
    });
    if due {
        abi::log(
            abi::LOG_WARN,
            &format!("meshtrace: {kind}: {detail} (logged at most once a minute)"),
        );
    }
}

/// Host calls, for every context.
struct Abi;

/// A header map, indexed in the buffer the host filled (no copy).
fn headers(map: Map) -> Headers {
    abi::header_map(map).map_or_else(Headers::default, |b| Headers::decode(b.into_vec()))
}

/// Logs (rate-limited) a header edit the host refused.
fn edited(what: &'static str, name: &str, status: u32) {
    if status != abi::OK {
        host_error(what, &format!("{name}: status {status}"));
    }
}

impl Host for Abi {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path).map(abi::HostBytes::into_vec)
    }
    fn now_nanos(&self) -> u64 {
        abi::now_nanos()
    }
}

impl StreamHost for Abi {
    fn request_headers(&self) -> Headers {
        headers(Map::RequestHeaders)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>) {
        let status = abi::set_header(Map::RequestHeaders, name, value);
        // Removing a header that is not there is no error.
        if !(value.is_none() && status == abi::NOT_FOUND) {
            edited("setting a request header", name, status);
        }
    }
    fn add_request_header(&mut self, name: &str, value: &[u8]) {
        let status = abi::add_header(Map::RequestHeaders, name, value);
        edited("adding a request header", name, status);
    }
    fn response_headers(&self) -> Headers {
        headers(Map::ResponseHeaders)
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        let status = abi::set_header(Map::ResponseHeaders, name, Some(value));
        edited("setting a response header", name, status);
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        let status = abi::add_header(Map::ResponseHeaders, name, value);
        edited("adding a response header", name, status);
    }
    fn append_response_header(&mut self, name: &str, value: &[u8]) {
        let status = abi::add_header(Map::ResponseHeaders, name, value);
        edited("appending a response header", name, status);
    }
    fn response_trailers(&self) -> Headers {
        headers(Map::ResponseTrailers)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        abi::shared_get(key)
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        abi::shared_set(key, value, cas)
    }
}

impl RootHost for Abi {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
        match abi::http_call(cluster, &Headers::encode(headers), body, timeout) {
            Ok(token) => Some(token),
            Err(status) => {
                host_error(
                    "export call refused",
                    &format!("cluster {cluster:?}: status {status}"),
                );
                None
            }
        }
    }
}

fn seed() -> u64 {
    // std's RandomState keys come from WASI random_get: one entropy read per VM.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(abi::now_nanos());
    h.finish()
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> u32 {
    let raw = if size == 0 {
        Vec::new()
    } else {
        abi::buffer(Buffer::PluginConfiguration, size)
            .map(|b| b.as_slice().to_vec())
            .unwrap_or_default()
    };
    let ok = with_vm(|vm| configure(vm, root, &raw)).unwrap_or(false);
    u32::from(ok)
}

fn configure(vm: &mut Vm, root: u32, raw: &[u8]) -> bool {
    if vm.root.is_some_and(|r| r != root) {
        abi::log(
            abi::LOG_ERROR,
            "meshtrace: a second plugin configuration in the same VM is not supported: give each its own vm_id",
        );
        return false;
    }
    let config = match Config::from_plugin_bytes(raw) {
        Ok(c) => c,
        Err(e) => {
            abi::log(abi::LOG_ERROR, &e.to_string());
            return false;
        }
    };
    let tick = config.export.tick_ms;
    let env = |name: &str| std::env::var(name).ok();
    let tracer = match Tracer::new(config, &Abi, &env, seed()) {
        Ok(t) => t,
        Err(e) => {
            abi::log(abi::LOG_ERROR, &e.to_string());
            return false;
        }
    };
    abi::log(
        abi::LOG_INFO,
        &format!(
            "meshtrace: configured for service {:?}",
            tracer.service_name()
        ),
    );
    vm.root = Some(root);
    vm.tracer = Some(tracer);
    if vm.metrics.is_empty() {
        vm.metrics = COUNTERS
            .iter()
            .filter_map(|(name, _)| abi::define_counter(name).map(|id| (*name, id)))
            .collect();
        vm.diag = diag::totals()
            .iter()
            .filter_map(|(name, _)| abi::define_counter(name).map(|id| (*name, id, 0)))
            .collect();
    }
    abi::set_tick_period_ms(u32::try_from(tick).unwrap_or(u32::MAX));
    true
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {
    with_vm(|vm| {
        let Some(t) = vm.tracer.as_mut() else {
            return;
        };
        t.flush(&mut Abi);
        t.poll_strategy(&mut Abi);
        for (name, delta) in t.counter_deltas() {
            if let Some((_, id)) = vm.metrics.iter().find(|(n, _)| *n == name) {
                abi::increment(*id, delta);
            }
        }
        for (name, total) in diag::totals() {
            if let Some((_, id, reported)) = vm.diag.iter_mut().find(|(n, _, _)| *n == name) {
                abi::increment(*id, total - *reported);
                *reported = total;
            }
        }
    });
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _root: u32,
    token: u32,
    _headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    // A failed call (reset, timeout, no upstream) has no `:status`.
    let status = abi::header_value(Map::HttpCallResponseHeaders, ":status")
        .and_then(|v| std::str::from_utf8(v.as_slice()).ok()?.parse::<u32>().ok());
    with_vm(|vm| {
        let Some(t) = vm.tracer.as_mut() else {
            return;
        };
        if t.is_strategy_call(token) {
            let body = abi::buffer(Buffer::HttpCallResponseBody, body_size)
                .map(abi::HostBytes::into_vec)
                .unwrap_or_default();
            if let Err(e) = t.strategy_response(status, &body, abi::now_nanos()) {
                abi::log(
                    abi::LOG_WARN,
                    &format!(
                        "meshtrace: sampling strategy not updated, keeping the current one: {e}"
                    ),
                );
            }
            return;
        }
        let outcome = status.map_or(CallOutcome::NoResponse, CallOutcome::Status);
        if let CallOutcome::Status(code) = outcome {
            if !(200..300).contains(&code) {
                abi::log(
                    abi::LOG_WARN,
                    &format!("meshtrace: collector answered {code}"),
                );
            }
        }
        t.export_completed(token, outcome, abi::now_nanos());
        // Keep the pipe full under load: send what is ready now, not at the next tick.
        t.flush(&mut Abi);
    });
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context: u32, _headers: usize, end: u32) -> u32 {
    let _entry = diag::stream_callback();
    with_vm(|vm| {
        let Some(t) = vm.tracer.as_mut() else {
            return;
        };
        let stream = t.start(&mut Abi, end != 0);
        if stream.wants_response_headers() {
            if vm.streams.len() < MAX_OPEN_STREAMS {
                vm.streams.insert(context, stream);
            } else {
                abi::log(
                    abi::LOG_WARN,
                    "meshtrace: too many open streams in this VM; this request's span is not kept",
                );
            }
        }
    });
    CONTINUE
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context: u32, _headers: usize, end: u32) -> u32 {
    let _entry = diag::stream_callback();
    with_vm(|vm| {
        let (Some(t), Some(s)) = (vm.tracer.as_ref(), vm.streams.get_mut(&context)) else {
            return;
        };
        s.on_response_headers(t, &mut Abi, end != 0);
        if !s.is_sampled() {
            vm.streams.remove(&context);
        }
    });
    CONTINUE
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context: u32, _trailers: usize) -> u32 {
    let _entry = diag::stream_callback();
    with_vm(|vm| {
        if let Some(s) = vm.streams.get_mut(&context) {
            s.on_response_trailers(&Abi);
        }
    });
    CONTINUE
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_log(context: u32) {
    let _entry = diag::stream_callback();
    with_vm(|vm| {
        let Some(stream) = vm.streams.remove(&context) else {
            return;
        };
        if let Some(t) = vm.tracer.as_mut() {
            if stream.is_sampled() {
                t.finish(stream, &Abi);
            }
        }
    });
}

/// Smoke tests of the callbacks through the ABI, against `fake_host` (each test
/// thread has its own VM state and fake host).
#[cfg(test)]
mod tests {
    use super::*;
    use fake_host::with;

    fn configure(json: &str) -> u32 {
        with(|f| {
            f.now = 1_700_000_000_000_000_000;
            f.config = json.as_bytes().to_vec();
        });
        assert_eq!(abi::proxy_on_vm_start(1, 0), 1);
        proxy_on_configure(1, json.len())
    }

    fn request(extra: &[(&str, &str)]) {
        with(|f| {
            f.request = [
                (":method", "GET"),
                (":path", "/smoke/1"),
                (":authority", "app"),
                (":scheme", "http"),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            f.response = vec![(":status".into(), "503".into())];
        });
    }

    fn header(list: &[(String, String)], name: &str) -> Option<String> {
        list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_sampled_request_is_traced_answered_and_exported() {
        assert_eq!(
            configure(r#"{"service_name":"smoke","export":{"flush_interval_ms":1}}"#),
            1
        );
        assert_eq!(with(|f| f.tick_ms), 100, "the export tick is set");
        request(&[]);
        assert_eq!(proxy_on_request_headers(2, 4, 1), CONTINUE);
        let tp = with(|f| header(&f.request, "traceparent")).expect("traceparent injected");
        assert!(tp.starts_with("00-") && tp.ends_with("-03"), "{tp}");
        assert_eq!(proxy_on_response_headers(2, 1, 0), CONTINUE);
        let tr = with(|f| header(&f.response, "traceresponse")).expect("traceresponse");
        assert_eq!(tr, tp, "the trace id and this hop's span id, sampled");
        proxy_on_log(2);
        assert_eq!(
            with_vm(|vm| vm.streams.len()),
            Some(0),
            "state dropped at the log"
        );
        with(|f| f.now += 2_000_000_000);
        proxy_on_tick(1);
        let (cluster, headers, body) = with(|f| f.calls.first().cloned()).expect("an export call");
        assert_eq!(cluster, "meshtrace-collector");
        assert!(
            headers.contains(&(":path".to_string(), b"/v1/traces".to_vec())),
            "{headers:?}"
        );
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(
            has(b"smoke") && has(b"/smoke/1"),
            "the span is in the OTLP body"
        );
        with(|f| f.call_response = vec![(":status".into(), "200".into())]);
        proxy_on_http_call_response(1, 1, 1, 0, 0);
        proxy_on_tick(1);
        let exported = with(|f| {
            f.metrics
                .iter()
                .find(|(n, _)| n == "meshtrace.spans_exported")
                .map(|(_, v)| *v)
        });
        assert_eq!(exported, Some(1));
    }

    #[test]
    fn an_unsampled_inner_hop_keeps_no_state_and_writes_nothing() {
        let never = r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0}}}"#;
        assert_eq!(configure(never), 1);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        request(&[("traceparent", tp)]);
        let before = with(|f| f.request.clone());
        proxy_on_request_headers(3, 5, 1);
        assert_eq!(with_vm(|vm| vm.streams.len()), Some(0));
        proxy_on_response_headers(3, 1, 0);
        proxy_on_log(3);
        assert_eq!(
            with(|f| f.request.clone()),
            before,
            "headers go on as they came"
        );
        assert_eq!(with(|f| header(&f.response, "traceresponse")), None);
    }

    #[test]
    fn a_bad_configuration_and_a_second_root_are_refused_with_a_log_line() {
        assert_eq!(configure(r#"{"export":{"max_batch_spans":0}}"#), 0);
        let logs = with(|f| f.logs.clone());
        assert!(
            logs.iter()
                .any(|(l, m)| *l == abi::LOG_ERROR && m.contains("export.max_batch_spans")),
            "{logs:?}"
        );
        assert_eq!(configure("{}"), 1);
        assert_eq!(proxy_on_configure(7, 2), 0, "another root in this VM");
        assert!(with(|f| f.logs.iter().any(|(_, m)| m.contains("vm_id"))));
    }
}
