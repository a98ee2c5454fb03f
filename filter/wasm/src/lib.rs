//! proxy-wasm adapter: implements `meshtrace_filter_core::host` over the ABI
//! and forwards every callback. No logic lives here.
//!
//! All export calls are made from the root context: Envoy cancels a
//! context's pending calls when the context goes away, and the SDK routes a
//! call's answer to the context that made it. Streams only append encoded
//! spans to the VM's buffer; the root's tick sends them.

use meshtrace_filter_core::export::CallOutcome;
use meshtrace_filter_core::host::{Headers, Host, RootHost, StreamHost};
use meshtrace_filter_core::metrics::COUNTERS;
use meshtrace_filter_core::{Config, Stream, Tracer};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { tracer: None, metrics: Vec::new() })
    });
}}

type Shared = Rc<RefCell<Tracer>>;

/// Host calls common to all contexts.
struct Abi;

impl Host for Abi {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

impl StreamHost for Abi {
    fn request_headers(&self) -> Headers {
        hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpRequestHeaders).unwrap_or_default()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ =
            hostcalls::set_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, name, value);
    }
    fn response_headers(&self) -> Headers {
        hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpResponseHeaders)
            .unwrap_or_default()
    }
    fn set_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(
            proxy_wasm::types::MapType::HttpResponseHeaders,
            name,
            Some(value),
        );
    }
    fn response_trailers(&self) -> Headers {
        hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpResponseTrailers)
            .unwrap_or_default()
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
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
        match hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            Some(body),
            Vec::new(),
            Duration::from_millis(timeout_ms),
        ) {
            Ok(token) => Some(token),
            Err(status) => {
                log::warn!("meshtrace: export call to cluster {cluster:?} refused: {status:?}");
                None
            }
        }
    }
}

struct Root {
    tracer: Option<Shared>,
    metrics: Vec<(&'static str, u32)>,
}

fn seed() -> u64 {
    // std's RandomState keys come from WASI random_get: one entropy read per VM.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(Abi.now_nanos());
    h.finish()
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        if tracer.borrow().is_strategy_call(token) {
            let status = hostcalls::get_map_value(
                proxy_wasm::types::MapType::HttpCallResponseHeaders,
                ":status",
            )
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
            let body = hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body_size,
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            let result = tracer
                .borrow_mut()
                .strategy_response(status, &body, Abi.now_nanos());
            if let Err(e) = result {
                log::warn!(
                    "meshtrace: sampling strategy not updated, keeping the current one: {e}"
                );
            }
            return;
        }
        // A failed call (reset, timeout, no upstream) has no `:status`.
        let outcome = hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u32>().ok())
        .map_or(CallOutcome::NoResponse, CallOutcome::Status);
        if let CallOutcome::Status(code) = outcome {
            if !(200..300).contains(&code) {
                log::warn!("meshtrace: collector answered {code}");
            }
        }
        let mut t = tracer.borrow_mut();
        t.export_completed(token, outcome, Abi.now_nanos());
        // Keep the pipe full under load: send what is ready now, not at the next tick.
        t.flush(&mut Abi);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let raw = if size == 0 {
            Vec::new()
        } else {
            self.get_plugin_configuration().unwrap_or_default()
        };
        let config = match Config::from_plugin_bytes(&raw) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let tick = config.export.tick_ms;
        let env = |name: &str| std::env::var(name).ok();
        match Tracer::new(config, &Abi, &env, seed()) {
            Ok(t) => {
                log::info!(
                    "meshtrace: configured for service {:?}",
                    t.identity.service_name
                );
                self.tracer = Some(Rc::new(RefCell::new(t)));
            }
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        }
        if self.metrics.is_empty() {
            self.metrics = COUNTERS
                .iter()
                .filter_map(|(name, _)| {
                    hostcalls::define_metric(MetricType::Counter, name)
                        .ok()
                        .map(|id| (*name, id))
                })
                .collect();
        }
        self.set_tick_period(Duration::from_millis(tick));
        true
    }

    fn on_tick(&mut self) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        let mut t = tracer.borrow_mut();
        t.flush(&mut Abi);
        t.poll_strategy(&mut Abi);
        for (name, delta) in t.counter_deltas() {
            if let Some((_, id)) = self.metrics.iter().find(|(n, _)| *n == name) {
                let _ = hostcalls::increment_metric(*id, delta as i64);
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            tracer: self.tracer.clone(),
            stream: Stream::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    tracer: Option<Shared>,
    stream: Stream,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if let Some(t) = &self.tracer {
            self.stream = Stream::on_request_headers(&mut t.borrow_mut(), &mut Abi, end_of_stream);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if self.stream.wants_response_headers() {
            if let Some(t) = &self.tracer {
                self.stream
                    .on_response_headers(&t.borrow(), &mut Abi, end_of_stream);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        if self.stream.is_sampled() {
            self.stream.on_response_trailers(&Abi);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.stream.is_sampled() {
            if let Some(t) = &self.tracer {
                std::mem::take(&mut self.stream).on_log(&mut t.borrow_mut(), &Abi);
            }
        }
    }
}
