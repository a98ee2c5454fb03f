//! Envoy 1.40's dynamic-module ABI (`"v0.2.0"`), as far as the filter uses
//! it: the callbacks Envoy exports, behind safe wrappers, and the hooks the
//! module exports, each forwarding to the adapter (`crate`) inside
//! [`guard`], so that a panic never unwinds into Envoy. The only `unsafe`
//! code of the module. Signatures are those of Envoy 1.40 as measured
//! (`../shared/reference/envoy-1.40-dynamic-modules.md`); C enums travel as
//! `u32`, never as Rust enums. Every hook Envoy 1.40 requires is exported,
//! the unused ones as no-ops: it refuses a filter configuration missing one.
#![allow(unsafe_code)]

use crate::{Module, StreamCtx};
use meshtrace_filter_core::host::Headers;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

pub(crate) type EnvoyPtr = *mut c_void;
pub(crate) type ModulePtr = *const c_void;

/// Memory owned by Envoy (valid until the hook returns).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub(crate) ptr: *const c_char,
    pub(crate) length: usize,
}

impl EnvoyBuffer {
    const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, for as long as Envoy keeps them (until the hook returns or
    /// the map they come from is written): callers copy what they keep.
    fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: Envoy hands out `length` readable bytes at `ptr`, valid
            // while the hook runs; every caller copies before returning.
            unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
        }
    }
}

/// Memory owned by the module (Envoy copies it during the call).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleBuffer {
    pub(crate) ptr: *const c_char,
    pub(crate) length: usize,
}

impl ModuleBuffer {
    fn of(b: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: b.as_ptr().cast(),
            length: b.len(),
        }
    }
    /// A null buffer: `set_header` removes the header.
    const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// A header the module passes (callout headers).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleHttpHeader {
    pub(crate) key_ptr: *const c_char,
    pub(crate) key_length: usize,
    pub(crate) value_ptr: *const c_char,
    pub(crate) value_length: usize,
}

/// A header Envoy hands out.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub(crate) key_ptr: *const c_char,
    pub(crate) key_length: usize,
    pub(crate) value_ptr: *const c_char,
    pub(crate) value_length: usize,
}

impl EnvoyHttpHeader {
    const EMPTY: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
    /// The name, borrowed no longer than the listed entry.
    fn key(&self) -> &[u8] {
        EnvoyBuffer {
            ptr: self.key_ptr,
            length: self.key_length,
        }
        .bytes()
    }
    fn value(&self) -> &[u8] {
        EnvoyBuffer {
            ptr: self.value_ptr,
            length: self.value_length,
        }
        .bytes()
    }
}

// envoy_dynamic_module_type_http_header_type
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const RESPONSE_TRAILERS: u32 = 3;
// envoy_dynamic_module_type_log_level
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
/// Every status hook's `Continue`.
const CONTINUE: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result::Success`.
const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_init_result::Success`.
const CALLOUT_SUCCESS: u32 = 0;

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_get_concurrency() -> u32;
    fn envoy_dynamic_module_callback_http_get_headers_size(fe: EnvoyPtr, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        fe: EnvoyPtr,
        kind: u32,
        result: *mut EnvoyHttpHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        fe: EnvoyPtr,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        fe: EnvoyPtr,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        fe: EnvoyPtr,
        id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        fe: EnvoyPtr,
        id: u32,
        result: *mut u64,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_bool(
        fe: EnvoyPtr,
        id: u32,
        result: *mut bool,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_worker_index(fe: EnvoyPtr) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        cfge: EnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        cfge: EnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        cfge: EnvoyPtr,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        cfge: EnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
}

/// Logs through Envoy's logger (`[dynamic_modules]`).
pub fn log(level: u32, msg: &str) {
    // SAFETY: Envoy copies the message during the call.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(msg.as_bytes())) }
}

/// A stream's Envoy side (`filter_envoy_ptr`): valid until the stream's
/// filter is destroyed, used only from the hooks of that stream.
#[derive(Clone, Copy)]
pub struct Stream(pub(crate) EnvoyPtr);

/// A filter configuration's Envoy side (`filter_config_envoy_ptr`), as the
/// main-thread hooks receive it.
#[derive(Clone, Copy)]
pub struct Config(pub(crate) EnvoyPtr);

impl Stream {
    /// A header map (request, response headers or trailers), copied out of
    /// Envoy: one call for the whole map.
    pub fn headers(self, kind: u32) -> Headers {
        self.with_list(kind, |list| {
            Headers::from_list(list.iter().map(|h| (h.key(), h.value())))
        })
    }

    /// Whether a header map holds `name`, looked up in Envoy's list in place
    /// (nothing copied).
    pub fn has_header(self, kind: u32, name: &str) -> bool {
        self.with_list(kind, |list| list.iter().any(|h| h.key() == name.as_bytes()))
    }

    /// Runs `f` over a header map as Envoy lists it (one call for the whole
    /// map); the entries point into Envoy's map and do not outlive `f`.
    fn with_list<R>(self, kind: u32, f: impl FnOnce(&[EnvoyHttpHeader]) -> R) -> R {
        // SAFETY: `self.0` is this stream's pointer, inside one of its hooks.
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, kind) };
        if n == 0 {
            return f(&[]);
        }
        // Small maps (all but odd ones) listed on the stack, left
        // uninitialised (Envoy writes every entry): no allocation, no memset.
        let mut stack = [const { MaybeUninit::<EnvoyHttpHeader>::uninit() }; 32];
        let mut heap = Vec::new();
        let list: *mut EnvoyHttpHeader = if n <= stack.len() {
            stack.as_mut_ptr().cast()
        } else {
            heap.resize(n, EnvoyHttpHeader::EMPTY);
            heap.as_mut_ptr()
        };
        // SAFETY: room for the `n` entries Envoy said the map has (the stack
        // array when `n` fits it, else `heap`, both alive until the end).
        let ok = unsafe { envoy_dynamic_module_callback_http_get_headers(self.0, kind, list) };
        if !ok {
            return f(&[]);
        }
        // SAFETY: Envoy wrote the map's `n` entries (it answered `true` for a
        // map of the size it gave); the buffers they point to stay valid while
        // `f` runs (nothing writes the map meanwhile) and `f` cannot keep them.
        let list = unsafe { std::slice::from_raw_parts(list.cast_const(), n) };
        f(list)
    }

    /// Replaces every value of `name` (`None`: removes it).
    pub fn set_header(self, kind: u32, name: &str, value: Option<&[u8]>) -> bool {
        let v = value.map_or(ModuleBuffer::NULL, ModuleBuffer::of);
        // SAFETY: this stream's pointer; Envoy copies both buffers.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                v,
            )
        }
    }

    /// Appends a value of `name`.
    pub fn add_header(self, kind: u32, name: &str, value: &[u8]) -> bool {
        // SAFETY: this stream's pointer; Envoy copies both buffers.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.0,
                kind,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        }
    }

    pub fn attribute_string(self, id: u32) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::NULL;
        // SAFETY: this stream's pointer; the result is copied at once.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut out)
        };
        ok.then(|| out.bytes().to_vec())
    }

    pub fn attribute_int(self, id: u32) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: this stream's pointer.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut out)
        };
        ok.then_some(out)
    }

    pub fn attribute_bool(self, id: u32) -> Option<bool> {
        let mut out = false;
        // SAFETY: this stream's pointer.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_bool(self.0, id, &mut out)
        };
        ok.then_some(out)
    }

    /// The index of the worker thread that runs this stream.
    pub fn worker_index(self) -> u32 {
        // SAFETY: this stream's pointer.
        unsafe { envoy_dynamic_module_callback_http_filter_get_worker_index(self.0) }
    }
}

impl Config {
    /// Defines a counter (only while the configuration is being made).
    pub fn define_counter(self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: the configuration's pointer, in `config_new`; no labels.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (r == METRICS_SUCCESS).then_some(id)
    }

    pub fn increment_counter(self, id: usize, by: u64) {
        // SAFETY: the configuration's pointer, on the main thread; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                by,
            );
        }
    }

    /// A scheduler of this configuration's main-thread events.
    pub fn scheduler(self) -> Option<Scheduler> {
        // SAFETY: the configuration's pointer, in `config_new`.
        let s = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!s.is_null()).then_some(Scheduler(s))
    }

    /// POSTs (or GETs) to `cluster` from the main thread: the callout's id,
    /// or Envoy's reason for refusing it.
    pub fn callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, u32> {
        let mut list: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        let mut id = 0u64;
        // SAFETY: the configuration's pointer, on the main thread; Envoy
        // copies the headers and the body during the call.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.0,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                list.as_mut_ptr(),
                list.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        if r == CALLOUT_SUCCESS {
            Ok(id)
        } else {
            Err(r)
        }
    }
}

/// The number of worker threads (main thread only, while configuring).
pub fn concurrency() -> u32 {
    // SAFETY: called from `config_new`, on the main thread.
    unsafe { envoy_dynamic_module_callback_get_concurrency() }
}

/// A configuration's scheduler: events committed from any thread run
/// `on_http_filter_config_scheduled` on the main thread.
pub struct Scheduler(*mut c_void);

// SAFETY: Envoy's config scheduler is made to be committed from any thread;
// it is deleted once, by `Drop`, after the threads that commit are joined.
unsafe impl Send for Scheduler {}
// SAFETY: as above: `commit` is thread-safe on Envoy's side.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event: u64) {
        // SAFETY: a live scheduler (deleted only when dropped).
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: deleted once; nothing commits after (the ticker is joined first).
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}

/// Runs a hook's body; a panic is logged and answered with `fallback`
/// instead of unwinding into Envoy.
fn guard<R>(hook: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let _ = catch_unwind(|| {
                log(
                    LOG_ERROR,
                    &format!("meshtrace: the {hook} hook failed (a bug: please report it); the request goes on"),
                );
            });
            fallback
        }
    }
}

/// The module's state of a stream, from its pointer.
fn stream_ctx<'a>(fm: ModulePtr) -> Option<&'a mut StreamCtx> {
    // SAFETY: `fm` is the `Box<StreamCtx>` made by `on_http_filter_new` and
    // freed only by `on_http_filter_destroy`; a stream's hooks run on one
    // thread, one at a time.
    unsafe { fm.cast_mut().cast::<StreamCtx>().as_mut() }
}

/// The module's configuration, from its pointer.
fn module<'a>(cfgm: ModulePtr) -> Option<&'a Arc<Module>> {
    // SAFETY: `cfgm` is the `Box<Arc<Module>>` made by `config_new`, freed
    // only by `config_destroy`, after every stream of it.
    unsafe { cfgm.cast::<Arc<Module>>().as_ref() }
}

// ---- hooks --------------------------------------------------------------

/// Envoy 1.40's ABI version.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    cfge: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    guard("config_new", std::ptr::null(), || {
        match crate::config_new(Config(cfge), name.bytes(), config.bytes()) {
            Some(m) => Box::into_raw(Box::new(m)).cast_const().cast(),
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(cfgm: ModulePtr) {
    guard("config_destroy", (), || {
        if !cfgm.is_null() {
            // SAFETY: made by `config_new` with `Box::into_raw`; destroyed once.
            let m = unsafe { Box::from_raw(cfgm.cast_mut().cast::<Arc<Module>>()) };
            crate::config_destroy(*m);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    cfge: EnvoyPtr,
    cfgm: ModulePtr,
    _event_id: u64,
) {
    guard("config_scheduled", (), || {
        if let Some(m) = module(cfgm) {
            crate::tick(Config(cfge), m);
        }
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    cfge: EnvoyPtr,
    cfgm: ModulePtr,
    callout_id: u64,
    _result: u32,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    guard("config_http_callout_done", (), || {
        let Some(m) = module(cfgm) else { return };
        let headers: &[EnvoyHttpHeader] = if headers.is_null() {
            &[]
        } else {
            // SAFETY: `headers_size` entries, valid during the hook.
            unsafe { std::slice::from_raw_parts(headers, headers_size) }
        };
        let status = headers
            .iter()
            .find(|h| h.key() == b":status")
            .and_then(|h| std::str::from_utf8(h.value()).ok()?.parse::<u32>().ok());
        let chunks: &[EnvoyBuffer] = if body_chunks.is_null() {
            &[]
        } else {
            // SAFETY: `body_chunks_size` buffers, valid during the hook.
            unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) }
        };
        let body: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.bytes().iter().copied())
            .collect();
        crate::callout_done(Config(cfge), m, callout_id, status, &body);
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    cfgm: ModulePtr,
    _fe: EnvoyPtr,
) -> ModulePtr {
    guard("filter_new", std::ptr::null(), || match module(cfgm) {
        Some(m) => Box::into_raw(crate::new_stream(m)).cast_const().cast(),
        None => std::ptr::null(),
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    fe: EnvoyPtr,
    fm: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    guard("request_headers", CONTINUE, || {
        if let Some(s) = stream_ctx(fm) {
            crate::request_headers(Stream(fe), s, end_of_stream);
        }
        CONTINUE
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    fe: EnvoyPtr,
    fm: ModulePtr,
    end_of_stream: bool,
) -> u32 {
    guard("response_headers", CONTINUE, || {
        if let Some(s) = stream_ctx(fm) {
            crate::response_headers(Stream(fe), s, end_of_stream);
        }
        CONTINUE
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    fe: EnvoyPtr,
    fm: ModulePtr,
) -> u32 {
    guard("response_trailers", CONTINUE, || {
        if let Some(s) = stream_ctx(fm) {
            crate::response_trailers(Stream(fe), s);
        }
        CONTINUE
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(fe: EnvoyPtr, fm: ModulePtr) {
    guard("stream_complete", (), || {
        if let Some(s) = stream_ctx(fm) {
            crate::stream_complete(Stream(fe), s);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: ModulePtr) {
    guard("filter_destroy", (), || {
        if !fm.is_null() {
            // SAFETY: made by `on_http_filter_new` with `Box::into_raw`; destroyed once.
            crate::free_stream(unsafe { Box::from_raw(fm.cast_mut().cast::<StreamCtx>()) });
        }
    })
}

// Hooks the filter does not use: Envoy 1.40 requires them all.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: EnvoyPtr,
    _fm: ModulePtr,
) {
}
