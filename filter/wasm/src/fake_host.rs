//! A fake proxy-wasm host for the adapter's smoke tests, linked in place of
//! Envoy's imports (on the host target the `env` import module is ignored and
//! these definitions satisfy the names): it keeps headers, properties, a clock,
//! shared data and the HTTP calls made, and returns data the way the host does,
//! in memory it allocates through `proxy_on_memory_allocate`.
#![allow(unsafe_code)]

use crate::abi;
use meshtrace_filter_core::host::Headers;
use std::cell::RefCell;
use std::collections::HashMap;

/// An HTTP call the filter made: (cluster, headers, body).
pub type Call = (String, Vec<(String, Vec<u8>)>, Vec<u8>);

#[derive(Default)]
pub struct Fake {
    pub now: u64,
    pub config: Vec<u8>,
    pub request: Vec<(String, String)>,
    pub response: Vec<(String, String)>,
    pub call_response: Vec<(String, String)>,
    pub properties: HashMap<String, Vec<u8>>,
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    /// (cluster, headers, body) of each HTTP call; the token is the index + 1.
    pub calls: Vec<Call>,
    pub logs: Vec<(u32, String)>,
    pub metrics: Vec<(String, i64)>,
    pub tick_ms: u32,
}

thread_local! {
    pub static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

pub fn with<R>(f: impl FnOnce(&mut Fake) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

/// # Safety
/// `data`/`size` must be valid out-pointers.
unsafe fn give(bytes: &[u8], data: *mut *mut u8, size: *mut usize) -> u32 {
    let p = abi::proxy_on_memory_allocate(bytes.len());
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
    *data = p;
    *size = bytes.len();
    abi::OK
}

/// # Safety
/// `p` must point at `n` readable bytes.
unsafe fn bytes<'a>(p: *const u8, n: usize) -> &'a [u8] {
    if n == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(p, n)
    }
}

unsafe fn text(p: *const u8, n: usize) -> String {
    String::from_utf8_lossy(bytes(p, n)).into_owned()
}

fn map_of(fake: &mut Fake, map: u32) -> Option<&mut Vec<(String, String)>> {
    match map {
        0 => Some(&mut fake.request),
        2 => Some(&mut fake.response),
        6 => Some(&mut fake.call_response),
        _ => None,
    }
}

#[no_mangle]
unsafe extern "C" fn proxy_log(level: u32, data: *const u8, size: usize) -> u32 {
    let m = text(data, size);
    with(|f| f.logs.push((level, m)));
    abi::OK
}

#[no_mangle]
unsafe extern "C" fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32 {
    *out = with(|f| f.now);
    abi::OK
}

#[no_mangle]
extern "C" fn proxy_set_tick_period_milliseconds(period: u32) -> u32 {
    with(|f| f.tick_ms = period);
    abi::OK
}

#[no_mangle]
unsafe extern "C" fn proxy_get_buffer_bytes(
    buffer: u32,
    start: usize,
    max: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    let b = with(|f| match buffer {
        7 => Some(f.config.clone()),
        4 => Some(b"{}".to_vec()),
        _ => None,
    });
    match b {
        Some(b) => {
            let end = b.len().min(start.saturating_add(max));
            give(b.get(start..end).unwrap_or_default(), data, size)
        }
        None => abi::NOT_FOUND,
    }
}

#[no_mangle]
unsafe extern "C" fn proxy_get_header_map_pairs(
    map: u32,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    let encoded = with(|f| {
        map_of(f, map).map(|m| {
            let pairs: Vec<(&str, &str)> =
                m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Headers::encode(&pairs)
        })
    });
    match encoded {
        Some(e) => give(&e, data, size),
        None => abi::NOT_FOUND,
    }
}

#[no_mangle]
unsafe extern "C" fn proxy_get_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    let k = text(key, key_size);
    let v = with(|f| {
        map_of(f, map).and_then(|m| m.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
    });
    match v {
        Some(v) => give(v.as_bytes(), data, size),
        None => abi::NOT_FOUND,
    }
}

/// Sets `key: value` in `map`; with `add`, refuses a key the map holds (Envoy
/// would append a second value), so a test fails if the filter adds one.
fn put_header(map: u32, k: String, v: String, add: bool) -> u32 {
    with(|f| match map_of(f, map) {
        Some(m) if add && m.iter().any(|(n, _)| *n == k) => abi::BAD_ARGUMENT,
        Some(m) => {
            m.retain(|(n, _)| *n != k);
            m.push((k, v));
            abi::OK
        }
        None => abi::NOT_FOUND,
    })
}

#[no_mangle]
unsafe extern "C" fn proxy_replace_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    put_header(map, text(key, key_size), text(value, value_size), false)
}

#[no_mangle]
unsafe extern "C" fn proxy_add_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    put_header(map, text(key, key_size), text(value, value_size), true)
}

#[no_mangle]
unsafe extern "C" fn proxy_remove_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
) -> u32 {
    let k = text(key, key_size);
    with(|f| match map_of(f, map) {
        Some(m) => {
            m.retain(|(n, _)| *n != k);
            abi::OK
        }
        None => abi::NOT_FOUND,
    })
}

#[no_mangle]
unsafe extern "C" fn proxy_get_property(
    path: *const u8,
    path_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
) -> u32 {
    // Segments arrive NUL-separated; the fake keys them with dots.
    let key = text(path, path_size).replace('\0', ".");
    match with(|f| f.properties.get(&key).cloned()) {
        Some(v) => give(&v, data, size),
        None => abi::NOT_FOUND,
    }
}

#[no_mangle]
unsafe extern "C" fn proxy_get_shared_data(
    key: *const u8,
    key_size: usize,
    data: *mut *mut u8,
    size: *mut usize,
    cas: *mut u32,
) -> u32 {
    let k = text(key, key_size);
    match with(|f| f.shared.get(&k).cloned()) {
        Some((v, c)) => {
            *cas = c;
            give(&v, data, size)
        }
        None => abi::NOT_FOUND,
    }
}

#[no_mangle]
unsafe extern "C" fn proxy_set_shared_data(
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
    cas: u32,
) -> u32 {
    let (k, v) = (text(key, key_size), bytes(value, value_size).to_vec());
    with(|f| {
        let current = f.shared.get(&k).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return 8; // CAS_MISMATCH
        }
        f.shared.insert(k, (v, current + 1));
        abi::OK
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn proxy_http_call(
    upstream: *const u8,
    upstream_size: usize,
    headers: *const u8,
    headers_size: usize,
    body: *const u8,
    body_size: usize,
    _trailers: *const u8,
    _trailers_size: usize,
    _timeout_ms: u32,
    token: *mut u32,
) -> u32 {
    let cluster = text(upstream, upstream_size);
    let h = Headers::decode(bytes(headers, headers_size).to_vec())
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    let b = bytes(body, body_size).to_vec();
    *token = with(|f| {
        f.calls.push((cluster, h, b));
        f.calls.len() as u32
    });
    abi::OK
}

#[no_mangle]
unsafe extern "C" fn proxy_define_metric(
    _kind: u32,
    name: *const u8,
    name_size: usize,
    id: *mut u32,
) -> u32 {
    let n = text(name, name_size);
    *id = with(|f| {
        f.metrics.push((n, 0));
        f.metrics.len() as u32 - 1
    });
    abi::OK
}

#[no_mangle]
extern "C" fn proxy_increment_metric(id: u32, offset: i64) -> u32 {
    with(|f| match f.metrics.get_mut(id as usize) {
        Some((_, v)) => {
            *v += offset;
            abi::OK
        }
        None => abi::NOT_FOUND,
    })
}
