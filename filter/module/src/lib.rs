//! The dynamic-module adapter: implements `meshtrace_filter_core::host` over
//! Envoy's dynamic-module ABI ([`abi`]) and forwards each hook to the core,
//! as `filter/wasm` does over proxy-wasm. No tracing logic lives here.
//!
//! One module configuration (`config_new`, main thread) holds a tracer per
//! worker thread, keyed by the worker's index, each behind its own lock:
//! a stream's hooks run on its worker and take only that worker's lock
//! (uncontended but for the tick). A stream keeps state only when something
//! is left to do after its request headers (a sampled span, a response header
//! to write), dropped when Envoy destroys the stream.
//!
//! Export runs off the request path on the main thread: a ticker thread
//! commits an event to the configuration's scheduler every `export.tick_ms`;
//! Envoy runs [`tick`] on the main thread, which sends each worker's due
//! batches (and its sampling-strategy polls) with the configuration's HTTP
//! callout to the collector cluster and reports the counters as Envoy stats
//! (`<metrics_namespace>.meshtrace.*`; with `metrics_namespace: wasmcustom`
//! the very names the wasm build has). Envoy's callouts are asynchronous and
//! the ticker only wakes the main thread, so a stalled collector costs the
//! request path nothing: spans wait in each worker's bounded buffer.

mod abi;
#[cfg(test)]
mod fake_host;

use meshtrace_filter_core::export::CallOutcome;
use meshtrace_filter_core::host::{Headers, Host, RootHost, StreamHost};
use meshtrace_filter_core::metrics::COUNTERS;
use meshtrace_filter_core::{Config as CoreConfig, Stream, Tracer};
use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Streams with state at once per worker; beyond it a new stream's span is not kept.
const MAX_OPEN_STREAMS_PER_WORKER: usize = 10_000;

/// Completed callouts waiting for their worker's tracer: one whose id is not
/// yet recorded (Envoy answered during the call) or whose tracer is busy.
const MAX_PENDING_COMPLETIONS: usize = 4_096;

/// The core's tracer must be movable between threads: the main thread
/// exports what the workers buffered.
const _: () = {
    const fn send<T: Send>() {}
    send::<Tracer>();
};

/// A filter configuration: a tracer per worker, and what the main thread needs.
pub struct Module {
    workers: Vec<Mutex<Tracer>>,
    /// Envoy counter ids, by the core's counter names.
    counters: Vec<(&'static str, usize)>,
    /// Callouts in flight: id → the worker whose tracer made it.
    callouts: Mutex<HashMap<u64, usize>>,
    /// Callouts answered and not yet told to their tracer.
    completions: Mutex<Vec<Completion>>,
    open_streams: AtomicUsize,
    ticker: Mutex<Option<Ticker>>,
}

struct Completion {
    id: u64,
    status: Option<u32>,
    body: Vec<u8>,
}

/// The thread that wakes the main thread every tick.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

/// A stream's state in the module. Kept in a box Envoy holds the pointer
/// of; boxes are reused per worker ([`new_stream`], [`free_stream`]).
pub struct StreamCtx {
    /// The stream's configuration (`None` only while the box waits for reuse).
    module: Option<Arc<Module>>,
    worker: usize,
    stream: Option<Stream>,
}

/// Stream boxes kept for reuse per worker thread: allocating and freeing one
/// per request cost more than the rest of an unsampled stream's hooks but two.
const SPARE_STREAMS: usize = 256;

thread_local! {
    // Boxes, not values: each is the allocation whose address Envoy holds.
    #[allow(clippy::vec_box)]
    static SPARE_STREAMS_OF_THREAD: RefCell<Vec<Box<StreamCtx>>> = const { RefCell::new(Vec::new()) };
}

/// A stream of `module`'s, in a reused box if this worker has one.
fn new_stream(module: &Arc<Module>) -> Box<StreamCtx> {
    let spare = SPARE_STREAMS_OF_THREAD
        .try_with(|s| s.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten();
    match spare {
        Some(mut b) => {
            b.module = Some(module.clone());
            b
        }
        None => Box::new(StreamCtx {
            module: Some(module.clone()),
            worker: 0,
            stream: None,
        }),
    }
}

/// Envoy destroyed the stream: its state goes, its box is kept for the next.
fn free_stream(mut b: Box<StreamCtx>) {
    b.release();
    let _ = SPARE_STREAMS_OF_THREAD.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < SPARE_STREAMS {
                s.push(b);
            }
        }
    });
}

impl StreamCtx {
    /// The stream's configuration, worker and state slot (`None` while the
    /// box waits for reuse).
    fn parts(&mut self) -> Option<(&Arc<Module>, usize, &mut Option<Stream>)> {
        Some((self.module.as_ref()?, self.worker, &mut self.stream))
    }

    /// Drops the stream's state and its hold on the configuration.
    fn release(&mut self) {
        if let Some(m) = self.module.take() {
            if self.stream.take().is_some() {
                m.open_streams.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.stream = None;
    }
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        self.release();
    }
}

/// A lock, whatever a panic elsewhere left it in: the tracer's state is
/// counters and buffers, valid at every step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn seed(worker: usize) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_nanos());
    h.write_usize(worker);
    h.finish()
}

/// Envoy's attributes by the proxy-wasm path the core asks for, with the id
/// Envoy 1.40 answers them under and how the value comes.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    /// A boolean Envoy leaves out when it is false (`connection.mtls`
    /// without TLS: proxy-wasm says `false`).
    BoolOrFalse,
}

const ATTRIBUTES: &[(&str, u32, Kind)] = &[
    ("request.path", 0, Kind::Text),
    ("request.url_path", 1, Kind::Text),
    ("request.host", 2, Kind::Text),
    ("request.scheme", 3, Kind::Text),
    ("request.method", 4, Kind::Text),
    ("request.referer", 6, Kind::Text),
    ("request.useragent", 7, Kind::Text),
    ("request.id", 9, Kind::Text),
    ("request.protocol", 10, Kind::Text),
    ("request.query", 11, Kind::Text),
    ("request.size", 13, Kind::Int),
    ("request.total_size", 14, Kind::Int),
    ("response.code", 15, Kind::Int),
    ("response.code_details", 16, Kind::Text),
    ("response.flags", 17, Kind::Int),
    ("response.grpc_status", 18, Kind::Int),
    ("response.size", 21, Kind::Int),
    ("response.total_size", 22, Kind::Int),
    ("source.address", 24, Kind::Text),
    ("source.port", 25, Kind::Int),
    ("destination.address", 26, Kind::Text),
    ("destination.port", 27, Kind::Int),
    ("connection.id", 28, Kind::Int),
    ("connection.mtls", 29, Kind::BoolOrFalse),
    ("connection.requested_server_name", 30, Kind::Text),
    ("connection.tls_version", 31, Kind::Text),
    ("connection.subject_local_certificate", 32, Kind::Text),
    ("connection.subject_peer_certificate", 33, Kind::Text),
    ("connection.dns_san_local_certificate", 34, Kind::Text),
    ("connection.dns_san_peer_certificate", 35, Kind::Text),
    ("connection.uri_san_local_certificate", 36, Kind::Text),
    ("connection.uri_san_peer_certificate", 37, Kind::Text),
    ("connection.sha256_peer_certificate_digest", 38, Kind::Text),
    ("upstream.address", 41, Kind::Text),
    ("upstream.port", 42, Kind::Int),
    ("upstream.local_address", 51, Kind::Text),
    ("upstream.request_attempt_count", 53, Kind::Int),
    ("xds.cluster_name", 57, Kind::Text),
    ("xds.listener_direction", 59, Kind::Int),
    ("xds.route_name", 61, Kind::Text),
    ("xds.virtual_host_name", 63, Kind::Text),
    ("xds.filter_chain_name", 66, Kind::Text),
    ("health_check", 67, Kind::Bool),
];

/// An attribute the way proxy-wasm gives it (integers as 8 little-endian
/// bytes, booleans as one byte), or `None` where Envoy's module ABI has
/// none (node metadata: name the service in the configuration).
fn attribute(s: abi::Stream, path: &[&str]) -> Option<Vec<u8>> {
    let name = path.join(".");
    let (_, id, kind) = ATTRIBUTES.iter().find(|(n, _, _)| *n == name)?;
    match kind {
        Kind::Text => s.attribute_string(*id),
        Kind::Int => s.attribute_int(*id).map(|v| v.to_le_bytes().to_vec()),
        Kind::Bool => s.attribute_bool(*id).map(|b| vec![u8::from(b)]),
        Kind::BoolOrFalse => Some(vec![u8::from(s.attribute_bool(*id).unwrap_or(false))]),
    }
}

/// Shared data of the whole Envoy (every worker and configuration): the
/// rate limiter's budgets, as proxy-wasm's shared data holds them.
static SHARED: Mutex<Option<SharedData>> = Mutex::new(None);

/// Key → (value, compare-and-swap token).
type SharedData = HashMap<String, (Vec<u8>, u32)>;

/// Host calls of a stream, on its worker.
struct Native(abi::Stream);

impl Host for Native {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        attribute(self.0, path)
    }
    fn now_nanos(&self) -> u64 {
        now_nanos()
    }
}

impl StreamHost for Native {
    fn request_headers(&self) -> Headers {
        self.0.headers(abi::REQUEST_HEADERS)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>) {
        self.0.set_header(abi::REQUEST_HEADERS, name, value);
    }
    fn add_request_header(&mut self, name: &str, value: &[u8]) {
        self.0.add_header(abi::REQUEST_HEADERS, name, value);
    }
    fn response_headers(&self) -> Headers {
        self.0.headers(abi::RESPONSE_HEADERS)
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        self.0.set_header(abi::RESPONSE_HEADERS, name, Some(value));
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        self.0.add_header(abi::RESPONSE_HEADERS, name, value);
    }
    fn append_response_header(&mut self, name: &str, value: &[u8]) {
        self.0.add_header(abi::RESPONSE_HEADERS, name, value);
    }
    fn reads_maps_cheaply(&self) -> bool {
        true
    }
    fn response_has_header(&self, name: &str) -> bool {
        self.0.has_header(abi::RESPONSE_HEADERS, name)
    }
    fn response_trailers(&self) -> Headers {
        self.0.headers(abi::RESPONSE_TRAILERS)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match lock(&SHARED).as_ref().and_then(|m| m.get(key)) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut shared = lock(&SHARED);
        let map = shared.get_or_insert_with(HashMap::new);
        let current = map.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        let next = current.map_or(1, |c| c.wrapping_add(1));
        map.insert(key.to_string(), (value.to_vec(), next));
        true
    }
}

/// Where Istio's pilot-agent keeps the pod's labels (its downward-API volume).
const POD_LABELS_FILE: &str = "/etc/istio/pod/labels";

/// Node metadata, which the module ABI does not give: read where Istio's
/// pilot-agent makes it from — `ISTIO_META_<KEY>` variables of the proxy's
/// environment (`NAMESPACE` and `NAME` also from `POD_NAMESPACE` and
/// `POD_NAME`), the labels from `ISTIO_METAJSON_LABELS` (a JSON object) or
/// the pod's labels file (`key="value"` lines).
fn node_metadata(
    path: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    file: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<u8>> {
    let value = match path {
        ["xds", "node", "metadata", "LABELS", key] => {
            let from_json = env("ISTIO_METAJSON_LABELS").and_then(|j| {
                let v: serde_json::Value = serde_json::from_str(&j).ok()?;
                v.get(*key)?.as_str().map(str::to_string)
            });
            from_json.or_else(|| {
                file(POD_LABELS_FILE)?.lines().find_map(|line| {
                    let (k, v) = line.split_once('=')?;
                    (k.trim() == *key).then(|| v.trim().trim_matches('"').to_string())
                })
            })
        }
        ["xds", "node", "metadata", key] => {
            env(&format!("ISTIO_META_{key}")).or_else(|| match *key {
                "NAMESPACE" => env("POD_NAMESPACE"),
                "NAME" => env("POD_NAME"),
                _ => None,
            })
        }
        _ => None,
    };
    value.map(String::into_bytes)
}

/// Host calls of the configuration, on the main thread: no stream, no
/// attributes; node metadata from the environment ([`node_metadata`]).
struct Main<'a> {
    cfg: abi::Config,
    module: &'a Module,
    worker: usize,
}

impl Host for Main<'_> {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        node_metadata(path, &|k| std::env::var(k).ok(), &|p| {
            std::fs::read_to_string(p).ok()
        })
    }
    fn now_nanos(&self) -> u64 {
        now_nanos()
    }
}

impl RootHost for Main<'_> {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32> {
        // Envoy's callouts want `host`, not `:authority`.
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (if *k == ":authority" { "host" } else { *k }, *v))
            .collect();
        match self.cfg.callout(cluster, &headers, body, timeout_ms) {
            Ok(id) => {
                lock(&self.module.callouts).insert(id, self.worker);
                Some(token(id))
            }
            Err(reason) => {
                warn_limited(
                    "export call refused",
                    &format!("cluster {cluster:?}: Envoy's reason {reason} (2: no such cluster)"),
                );
                None
            }
        }
    }
}

/// The core's token for a callout (ids count up from 1 per configuration).
fn token(id: u64) -> u32 {
    (id & u64::from(u32::MAX)) as u32
}

/// Logs a warning at most once a minute per kind (main thread only).
fn warn_limited(kind: &'static str, detail: &str) {
    static LOGGED: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());
    let now = now_nanos();
    let due = meshtrace_filter_core::host::log_due(&mut lock(&LOGGED), kind, now);
    if due {
        abi::log(
            abi::LOG_WARN,
            &format!("meshtrace: {kind}: {detail} (logged at most once a minute)"),
        );
    }
}

/// A filter configuration from its JSON (the same as the wasm build's
/// plugin configuration), or `None` (logged) when it is not one.
fn config_new(cfg: abi::Config, _name: &[u8], raw: &[u8]) -> Option<Arc<Module>> {
    let config = match CoreConfig::from_plugin_bytes(raw) {
        Ok(c) => c,
        Err(e) => {
            abi::log(abi::LOG_ERROR, &e.to_string());
            return None;
        }
    };
    let workers = abi::concurrency().max(1) as usize;
    let env = |name: &str| std::env::var(name).ok();
    let no_stream = Main {
        cfg,
        module: &Module::empty(),
        worker: 0,
    };
    let mut tracers = Vec::with_capacity(workers);
    for w in 0..workers {
        match Tracer::new(config.clone(), &no_stream, &env, seed(w)) {
            Ok(t) => tracers.push(Mutex::new(t)),
            Err(e) => {
                abi::log(abi::LOG_ERROR, &e.to_string());
                return None;
            }
        }
    }
    let counters = COUNTERS
        .iter()
        .filter_map(|(name, _)| cfg.define_counter(name).map(|id| (*name, id)))
        .collect();
    let service = tracers
        .first()
        .map(|t| lock(t).service_name().to_string())
        .unwrap_or_default();
    let module = Arc::new(Module {
        workers: tracers,
        counters,
        callouts: Mutex::new(HashMap::new()),
        completions: Mutex::new(Vec::new()),
        open_streams: AtomicUsize::new(0),
        ticker: Mutex::new(None),
    });
    let Some(scheduler) = cfg.scheduler() else {
        abi::log(
            abi::LOG_ERROR,
            "meshtrace: Envoy gave no scheduler for the export",
        );
        return None;
    };
    *lock(&module.ticker) = Some(start_ticker(scheduler, config.export.tick_ms));
    abi::log(
        abi::LOG_INFO,
        &format!(
            "meshtrace: configured for service {service:?} ({workers} workers, native module)"
        ),
    );
    Some(module)
}

impl Module {
    /// A module with no workers: the host of tracers being made.
    fn empty() -> Module {
        Module {
            workers: Vec::new(),
            counters: Vec::new(),
            callouts: Mutex::new(HashMap::new()),
            completions: Mutex::new(Vec::new()),
            open_streams: AtomicUsize::new(0),
            ticker: Mutex::new(None),
        }
    }

    fn tracer(&self, worker: usize) -> Option<MutexGuard<'_, Tracer>> {
        self.workers.get(worker).map(lock)
    }
}

fn start_ticker(scheduler: abi::Scheduler, tick_ms: u64) -> Ticker {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let flag = stop.clone();
    let period = Duration::from_millis(tick_ms.max(1));
    let thread = std::thread::spawn(move || {
        let (m, cv) = &*flag;
        let mut stopped = lock(m);
        loop {
            stopped = match cv.wait_timeout(stopped, period) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
            if *stopped {
                break;
            }
            scheduler.commit(1);
        }
        // The scheduler is deleted here, after its last commit.
        drop(scheduler);
    });
    Ticker { stop, thread }
}

/// The configuration goes: the ticker stops (and its scheduler with it).
fn config_destroy(module: Arc<Module>) {
    if let Some(t) = lock(&module.ticker).take() {
        *lock(&t.stop.0) = true;
        t.stop.1.notify_all();
        let _ = t.thread.join();
    }
}

/// The main thread's tick: each worker's due batches and strategy polls go
/// out; counters are reported.
fn tick(cfg: abi::Config, module: &Module) {
    tell_completions(cfg, module);
    for w in 0..module.workers.len() {
        let Some(mut t) = module.tracer(w) else {
            continue;
        };
        let mut host = Main {
            cfg,
            module,
            worker: w,
        };
        t.flush(&mut host);
        t.poll_strategy(&mut host);
        for (name, delta) in t.counter_deltas() {
            if let Some((_, id)) = module.counters.iter().find(|(n, _)| *n == name) {
                cfg.increment_counter(*id, delta);
            }
        }
    }
    tell_completions(cfg, module);
}

/// A callout answered (main thread): told to the tracer that made it.
fn callout_done(cfg: abi::Config, module: &Module, id: u64, status: Option<u32>, body: &[u8]) {
    {
        let mut pending = lock(&module.completions);
        if pending.len() >= MAX_PENDING_COMPLETIONS {
            pending.remove(0);
        }
        pending.push(Completion {
            id,
            status,
            body: body.to_vec(),
        });
    }
    tell_completions(cfg, module);
}

/// Tells each answered callout to its tracer, unless that tracer is busy
/// (Envoy answered during a call the tick is making) or its id is not
/// recorded yet: those wait for the next tick.
fn tell_completions(cfg: abi::Config, module: &Module) {
    let pending = std::mem::take(&mut *lock(&module.completions));
    let mut left = Vec::new();
    for c in pending {
        let worker = lock(&module.callouts).get(&c.id).copied();
        let tracer = worker.and_then(|w| module.workers.get(w)?.try_lock().ok().map(|t| (w, t)));
        let Some((w, mut t)) = tracer else {
            left.push(c);
            continue;
        };
        lock(&module.callouts).remove(&c.id);
        let tok = token(c.id);
        if t.is_strategy_call(tok) {
            if let Err(e) = t.strategy_response(c.status, &c.body, now_nanos()) {
                abi::log(
                    abi::LOG_WARN,
                    &format!(
                        "meshtrace: sampling strategy not updated, keeping the current one: {e}"
                    ),
                );
            }
            continue;
        }
        let outcome = c
            .status
            .map_or(CallOutcome::NoResponse, CallOutcome::Status);
        if let CallOutcome::Status(code) = outcome {
            if !(200..300).contains(&code) {
                warn_limited("collector answered", &code.to_string());
            }
        }
        t.export_completed(tok, outcome, now_nanos());
        // Keep the pipe full under load: send what is ready now.
        t.flush(&mut Main {
            cfg,
            module,
            worker: w,
        });
    }
    if !left.is_empty() {
        let mut pending = lock(&module.completions);
        left.append(&mut pending);
        *pending = left;
    }
}

thread_local! {
    /// This thread's worker index, asked once.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

fn worker_of(s: abi::Stream) -> usize {
    WORKER.with(|w| match w.get() {
        Some(i) => i,
        None => {
            let i = s.worker_index() as usize;
            w.set(Some(i));
            i
        }
    })
}

fn request_headers(s: abi::Stream, ctx: &mut StreamCtx, end_of_stream: bool) {
    #[cfg(test)]
    #[allow(clippy::panic)]
    if tests::PANIC_NEXT.with(|p| p.replace(false)) {
        panic!("injected by a test");
    }
    let Some(module) = ctx.module.as_ref() else {
        return;
    };
    let worker = worker_of(s) % module.workers.len().max(1);
    let Some(mut t) = module.tracer(worker) else {
        return;
    };
    let stream = t.start(&mut Native(s), end_of_stream);
    drop(t);
    if stream.wants_response_headers() {
        let open = module.open_streams.fetch_add(1, Ordering::Relaxed);
        if open >= MAX_OPEN_STREAMS_PER_WORKER * module.workers.len() {
            module.open_streams.fetch_sub(1, Ordering::Relaxed);
            warn_limited("too many open streams", "this request's span is not kept");
            return;
        }
        ctx.worker = worker;
        ctx.stream = Some(stream);
    }
}

fn response_headers(s: abi::Stream, ctx: &mut StreamCtx, end_of_stream: bool) {
    let Some((module, worker, slot)) = ctx.parts() else {
        return;
    };
    let Some(stream) = slot.as_mut() else {
        return;
    };
    if let Some(t) = module.tracer(worker) {
        stream.on_response_headers(&t, &mut Native(s), end_of_stream);
    }
    if !stream.is_sampled() {
        *slot = None;
        module.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

fn response_trailers(s: abi::Stream, ctx: &mut StreamCtx) {
    if let Some(stream) = ctx.stream.as_mut() {
        stream.on_response_trailers(&Native(s));
    }
}

fn stream_complete(s: abi::Stream, ctx: &mut StreamCtx) {
    let Some((module, worker, slot)) = ctx.parts() else {
        return;
    };
    let Some(stream) = slot.take() else {
        return;
    };
    module.open_streams.fetch_sub(1, Ordering::Relaxed);
    if stream.is_sampled() {
        if let Some(mut t) = module.tracer(worker) {
            t.finish(stream, &Native(s));
        }
    }
}

#[cfg(test)]
mod tests;
