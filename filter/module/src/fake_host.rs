//! A fake Envoy for the adapter's tests: definitions of every callback the
//! module imports (in Envoy they are the executable's exports), keeping
//! headers, attributes, counters, logs, scheduler commits and callouts in a
//! thread-local state the tests read and write.
#![allow(unsafe_code, clippy::unwrap_used)]

use crate::abi::{EnvoyBuffer, EnvoyHttpHeader, EnvoyPtr, ModuleBuffer, ModuleHttpHeader};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

/// A callout the module made: (cluster, headers, body).
pub type Callout = (String, Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
pub struct Fake {
    pub concurrency: u32,
    pub worker: u32,
    /// Header maps by the ABI's kind (0 request, 2 response, 3 response trailers).
    pub headers: HashMap<u32, Vec<(String, String)>>,
    pub strings: HashMap<u32, Vec<u8>>,
    pub ints: HashMap<u32, u64>,
    pub counters: Vec<(String, u64)>,
    pub logs: Vec<(u32, String)>,
    pub callouts: Vec<Callout>,
    /// Refuse callouts with this reason.
    pub refuse_callouts: Option<u32>,
}

thread_local! {
    pub static FAKE: RefCell<Fake> = RefCell::new(Fake {
        concurrency: 1,
        ..Fake::default()
    });
}

pub fn with<R>(f: impl FnOnce(&mut Fake) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

fn text(b: ModuleBuffer) -> String {
    if b.ptr.is_null() {
        return String::new();
    }
    // SAFETY: the module passes `length` readable bytes.
    let s = unsafe { std::slice::from_raw_parts(b.ptr.cast::<u8>(), b.length) };
    String::from_utf8_lossy(s).into_owned()
}

fn give(bytes: &[u8]) -> EnvoyBuffer {
    EnvoyBuffer {
        ptr: bytes.as_ptr().cast(),
        length: bytes.len(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer) {
    with(|f| f.logs.push((level, text(message))));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_get_concurrency() -> u32 {
    with(|f| f.concurrency)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    _fe: EnvoyPtr,
    kind: u32,
) -> usize {
    with(|f| f.headers.get(&kind).map_or(0, Vec::len))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _fe: EnvoyPtr,
    kind: u32,
    result: *mut EnvoyHttpHeader,
) -> bool {
    FAKE.with(|fake| {
        let f = fake.borrow();
        let Some(list) = f.headers.get(&kind) else {
            return false;
        };
        for (i, (k, v)) in list.iter().enumerate() {
            // SAFETY: the module gave room for `get_headers_size` entries; the
            // strings live in the thread-local state until the map is written.
            unsafe {
                *result.add(i) = EnvoyHttpHeader {
                    key_ptr: k.as_ptr().cast(),
                    key_length: k.len(),
                    value_ptr: v.as_ptr().cast(),
                    value_length: v.len(),
                };
            }
        }
        true
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_add_header(
    _fe: EnvoyPtr,
    kind: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    with(|f| {
        f.headers
            .entry(kind)
            .or_default()
            .push((text(key), text(value)))
    });
    true
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _fe: EnvoyPtr,
    kind: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    let k = text(key);
    let remove = value.ptr.is_null();
    let v = text(value);
    with(|f| {
        let list = f.headers.entry(kind).or_default();
        list.retain(|(n, _)| *n != k);
        if !remove {
            list.push((k, v));
        }
    });
    true
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
    _fe: EnvoyPtr,
    id: u32,
    result: *mut EnvoyBuffer,
) -> bool {
    FAKE.with(|fake| {
        let f = fake.borrow();
        match f.strings.get(&id) {
            Some(v) => {
                // SAFETY: a valid out-pointer; the bytes live in the state.
                unsafe { *result = give(v) };
                true
            }
            None => false,
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
    _fe: EnvoyPtr,
    id: u32,
    result: *mut u64,
) -> bool {
    match with(|f| f.ints.get(&id).copied()) {
        Some(v) => {
            // SAFETY: a valid out-pointer.
            unsafe { *result = v };
            true
        }
        None => false,
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_bool(
    _fe: EnvoyPtr,
    _id: u32,
    _result: *mut bool,
) -> bool {
    false
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_worker_index(_fe: EnvoyPtr) -> u32 {
    with(|f| f.worker)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _cfge: EnvoyPtr,
    name: ModuleBuffer,
    _label_names: *mut ModuleBuffer,
    _label_names_length: usize,
    id: *mut usize,
) -> u32 {
    with(|f| {
        f.counters.push((text(name), 0));
        // SAFETY: a valid out-pointer.
        unsafe { *id = f.counters.len() - 1 };
    });
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
    _cfge: EnvoyPtr,
    id: usize,
    _label_values: *mut ModuleBuffer,
    _label_values_length: usize,
    value: u64,
) -> u32 {
    with(|f| f.counters[id].1 += value);
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    _cfge: EnvoyPtr,
) -> *mut c_void {
    // Any non-null pointer: the fake keeps no per-scheduler state.
    std::ptr::NonNull::<u8>::dangling().as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    _scheduler: *mut c_void,
    _event_id: u64,
) {
    // Commits come from the ticker thread, whose thread-local state is its own.
    COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Commits from every thread.
pub static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
    _scheduler: *mut c_void,
) {
    DELETED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Schedulers deleted (on whichever thread).
pub static DELETED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _cfge: EnvoyPtr,
    callout_id: *mut u64,
    cluster: ModuleBuffer,
    headers: *mut ModuleHttpHeader,
    headers_size: usize,
    body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    if let Some(reason) = with(|f| f.refuse_callouts) {
        return reason;
    }
    // SAFETY: `headers_size` entries the module passes for the call.
    let list = unsafe { std::slice::from_raw_parts(headers, headers_size) };
    let headers = list
        .iter()
        .map(|h| {
            (
                text(ModuleBuffer {
                    ptr: h.key_ptr,
                    length: h.key_length,
                }),
                text(ModuleBuffer {
                    ptr: h.value_ptr,
                    length: h.value_length,
                }),
            )
        })
        .collect();
    let body = if body.ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: `length` readable bytes.
        unsafe { std::slice::from_raw_parts(body.ptr.cast::<u8>(), body.length) }.to_vec()
    };
    with(|f| {
        f.callouts.push((text(cluster), headers, body));
        // SAFETY: a valid out-pointer; ids count from 1.
        unsafe { *callout_id = f.callouts.len() as u64 };
    });
    0
}
