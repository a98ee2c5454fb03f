//! Reference filters for `scripts/bench/filter` on meshtrace's own ABI layer
//! (`filter/wasm/src/abi.rs`, the same file), exporting the same callbacks
//! (request headers, response headers, log), so Envoy enters the VM as often as
//! for meshtrace:
//! - no configuration: every callback returns at once (the floor of a filter
//!   with meshtrace's exports);
//! - configuration `headers`: reads the request header map and sets one header,
//!   the least any propagating filter does;
//! - configuration `traceresponse`: `headers`, and one response header too
//!   (what meshtrace does for a request from outside the mesh).

#[allow(dead_code)] // the reference filters use part of it
#[path = "../../../filter/wasm/src/abi.rs"]
mod abi;

/// The ABI layer counts VM entries in meshtrace's diagnostic build; not here.
mod diag {
    pub fn allocation() {}
    pub fn host_call() {}
}

use std::cell::Cell;

thread_local! {
    /// 0: nothing, 1: headers, 2: headers and a response header.
    static MODE: Cell<u8> = const { Cell::new(0) };
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let config = abi::buffer(abi::Buffer::PluginConfiguration, size);
    let mode = match config.as_ref().map(abi::HostBytes::as_slice) {
        Some(b"headers") => 1,
        Some(b"traceresponse") => 2,
        _ => 0,
    };
    MODE.with(|m| m.set(mode));
    1
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
    if MODE.with(Cell::get) > 0 {
        let headers = abi::header_map(abi::Map::RequestHeaders);
        std::hint::black_box(&headers);
        abi::set_header(abi::Map::RequestHeaders, "traceparent", Some(TRACEPARENT));
    }
    0
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
    if MODE.with(Cell::get) > 1 {
        abi::set_header(
            abi::Map::ResponseHeaders,
            "traceresponse",
            Some(TRACEPARENT),
        );
    }
    0
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {}
