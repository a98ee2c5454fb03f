//! The proxy-wasm ABI (v0.2.1, as Envoy implements it): the host functions this
//! filter calls, behind safe wrappers, and the module-level exports (the WASI
//! initializer, the ABI version, VM start, memory allocation). The only `unsafe`
//! code of the filter; `tests/minimal-filter` builds its reference filters on
//! this same file.
//!
//! Memory the host returns (header maps, properties, buffers) is allocated by the
//! host calling [`proxy_on_memory_allocate`] inside the VM during the host call;
//! [`HostBytes`] takes ownership of it and frees it with the same layout.
#![allow(unsafe_code)]

use std::alloc::{alloc, dealloc, Layout};
use std::ptr::{null, null_mut};

/// The ABI's status codes this filter tells apart.
pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
#[allow(dead_code)] // returned by the fake host in tests
pub const BAD_ARGUMENT: u32 = 2;

/// Header maps.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Map {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    HttpCallResponseHeaders = 6,
}

/// Buffers.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const METRIC_COUNTER: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, out_data: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
        out_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        out_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, out_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// The WASI reactor's initializer: runs the module's static constructors.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once by the host before any other export, as WASI reactors require.
    unsafe {
        __wasm_call_ctors();
    }
}

/// Declares the ABI version this module speaks.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The VM starts: nothing to do before the plugin's configuration.
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

/// The host allocates what it returns in the VM through this export.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    crate::diag::allocation();
    match Layout::array::<u8>(size.max(1)) {
        // SAFETY: a non-zero size, a valid layout; freed by `HostBytes::drop` with it.
        Ok(layout) => unsafe { alloc(layout) },
        Err(_) => null_mut(),
    }
}

/// Bytes the host wrote into memory it allocated with `proxy_on_memory_allocate`.
pub struct HostBytes {
    ptr: *mut u8,
    len: usize,
}

impl HostBytes {
    fn new(ptr: *mut u8, len: usize) -> Option<HostBytes> {
        (!ptr.is_null()).then_some(HostBytes { ptr, len })
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the host wrote `len` bytes at `ptr`, allocated for at least `len`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes as a `Vec`, without a copy.
    pub fn into_vec(self) -> Vec<u8> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `proxy_on_memory_allocate` allocated `ptr` with the global
        // allocator and the layout of `[u8; len.max(1)]`, the layout a `Vec<u8>`
        // of that capacity frees with; the host initialised `len` bytes, and
        // `this` is not dropped, so the memory has one owner.
        unsafe { Vec::from_raw_parts(this.ptr, this.len, this.len.max(1)) }
    }
}

impl Drop for HostBytes {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::array::<u8>(self.len.max(1)) {
            // SAFETY: allocated by `proxy_on_memory_allocate` with this size's layout.
            unsafe { dealloc(self.ptr, layout) }
        }
    }
}

/// A host call that returns bytes: `Some` on OK with data, `None` otherwise.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<HostBytes> {
    crate::diag::host_call();
    let mut data = null_mut();
    let mut size = 0;
    match call(&mut data, &mut size) {
        OK => HostBytes::new(data, size),
        _ => None,
    }
}

pub fn log(level: u32, message: &str) {
    // SAFETY: a valid slice for the call's duration.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

pub fn now_nanos() -> u64 {
    crate::diag::host_call();
    let mut t = 0;
    // SAFETY: `t` outlives the call.
    unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    t
}

pub fn set_tick_period_ms(ms: u32) {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(ms) };
}

pub fn buffer(buffer: Buffer, max: usize) -> Option<HostBytes> {
    // SAFETY: out-pointers valid for the call.
    returned(|d, s| unsafe { proxy_get_buffer_bytes(buffer as u32, 0, max, d, s) })
}

/// A header map in the host's encoding (see `meshtrace_filter_core::host::Headers`).
pub fn header_map(map: Map) -> Option<HostBytes> {
    // SAFETY: out-pointers valid for the call.
    returned(|d, s| unsafe { proxy_get_header_map_pairs(map as u32, d, s) })
}

pub fn header_value(map: Map, name: &str) -> Option<HostBytes> {
    // SAFETY: `name` valid for the call; out-pointers valid.
    returned(|d, s| unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), d, s)
    })
}

/// Sets (`Some`) or removes (`None`) a header; the host's status.
pub fn set_header(map: Map, name: &str, value: Option<&[u8]>) -> u32 {
    crate::diag::host_call();
    // SAFETY: the slices are valid for the call.
    unsafe {
        match value {
            Some(v) => proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                v.as_ptr(),
                v.len(),
            ),
            None => proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()),
        }
    }
}

/// Adds a header the map does not hold yet (cheaper than replacing: no lookup
/// and removal first); the host's status.
pub fn add_header(map: Map, name: &str, value: &[u8]) -> u32 {
    crate::diag::host_call();
    // SAFETY: the slices are valid for the call.
    unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    }
}

/// An Envoy attribute; the path's segments are NUL-separated on the wire.
pub fn property(path: &[&str]) -> Option<HostBytes> {
    let mut p = Vec::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            p.push(0);
        }
        p.extend_from_slice(seg.as_bytes());
    }
    // SAFETY: `p` valid for the call; out-pointers valid.
    returned(|d, s| unsafe { proxy_get_property(p.as_ptr(), p.len(), d, s) })
}

/// Shared data and its CAS token; (None, None) when absent.
pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    crate::diag::host_call();
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0;
    // SAFETY: `key` and the out-pointers are valid for the call.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => (
            HostBytes::new(data, size).map(HostBytes::into_vec),
            Some(cas),
        ),
        _ => (None, None),
    }
}

/// Sets shared data if its CAS token is still `cas` (0: unconditionally).
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    crate::diag::host_call();
    // SAFETY: the slices are valid for the call.
    unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        ) == OK
    }
}

/// Starts an HTTP call to `cluster` (`headers` in the host's map encoding); its
/// token, or the host's refusal status.
pub fn http_call(cluster: &str, h: &[u8], body: &[u8], timeout_ms: u32) -> Result<u32, u32> {
    let mut token = 0;
    // SAFETY: every slice is valid for the call; no trailers.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            h.as_ptr(),
            h.len(),
            body.as_ptr(),
            body.len(),
            null(),
            0,
            timeout_ms,
            &mut token,
        )
    };
    if status == OK {
        Ok(token)
    } else {
        Err(status)
    }
}

pub fn define_counter(name: &str) -> Option<u32> {
    let mut id = 0;
    // SAFETY: `name` and `id` are valid for the call.
    let status = unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment(id: u32, by: u64) {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, by as i64) };
}
