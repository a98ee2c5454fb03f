//! Reference filters for `scripts/bench/filter` on meshtrace's own ABI layer
//! (`filter/wasm/src/abi.rs`, the same file), exporting the same callbacks
//! (request headers, response headers, log), so Envoy enters the VM as often as
//! for meshtrace. The plugin configuration names the host calls each request
//! makes, comma-separated, so the bench can price each kind of call:
//! - (none): every callback returns at once (the floor of a filter with
//!   meshtrace's exports);
//! - `map`: reads the request header map;
//! - `probe`: looks up six request headers one by one (none of them present,
//!   as for a request from outside the mesh); `probe1`: looks up `traceparent`
//!   alone (all a W3C-only filter without force headers needs);
//! - `write`: sets `traceparent` (replace); `add`: adds it (no lookup first);
//! - `traceresponse`: sets a response header;
//! - `respmap`: reads the response header map; `status`: reads `:status` alone;
//! - `code`: reads the `response.code` property at the log;
//! - `now`: reads the clock at the log.
//!
//! The names `headers` (`map,add`: the least a propagating filter does for a
//! request from outside the mesh) and `traceresponse` alone
//! (`map,add,traceresponse`) are the bench's floor configurations.

#[allow(dead_code)] // the reference filters use part of it
#[path = "../../../filter/wasm/src/abi.rs"]
mod abi;

/// The ABI layer counts VM entries in meshtrace's diagnostic build; not here.
mod diag {
    pub fn allocation() {}
    pub fn host_call() {}
}

use std::cell::Cell;

const MAP: u16 = 1;
const PROBE: u16 = 1 << 1;
const WRITE: u16 = 1 << 2;
const ADD: u16 = 1 << 3;
const TRACERESPONSE: u16 = 1 << 4;
const RESPMAP: u16 = 1 << 5;
const STATUS: u16 = 1 << 6;
const CODE: u16 = 1 << 7;
const NOW: u16 = 1 << 8;
const PROBE1: u16 = 1 << 9;

thread_local! {
    static CALLS: Cell<u16> = const { Cell::new(0) };
}

fn calls() -> u16 {
    CALLS.with(Cell::get)
}

fn parse(config: &[u8]) -> u16 {
    match config {
        b"headers" => return MAP | ADD,
        b"traceresponse" => return MAP | ADD | TRACERESPONSE,
        _ => {}
    }
    config
        .split(|b| *b == b',')
        .map(|part| match part {
            b"map" => MAP,
            b"probe" => PROBE,
            b"probe1" => PROBE1,
            b"write" => WRITE,
            b"add" => ADD,
            b"traceresponse" => TRACERESPONSE,
            b"respmap" => RESPMAP,
            b"status" => STATUS,
            b"code" => CODE,
            b"now" => NOW,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

/// What a filter looks for in a request from outside the mesh.
const PROBED: [&str; 6] = [
    "traceparent",
    "b3",
    "x-b3-traceid",
    "uber-trace-id",
    "x-meshtrace-force-trace",
    "jaeger-debug-id",
];

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let config = abi::buffer(abi::Buffer::PluginConfiguration, size);
    let set = config.as_ref().map_or(0, |c| parse(c.as_slice()));
    CALLS.with(|m| m.set(set));
    1
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
    let set = calls();
    if set & MAP != 0 {
        std::hint::black_box(abi::header_map(abi::Map::RequestHeaders));
    }
    if set & PROBE != 0 {
        for name in PROBED {
            std::hint::black_box(abi::header_value(abi::Map::RequestHeaders, name));
        }
    }
    if set & PROBE1 != 0 {
        std::hint::black_box(abi::header_value(abi::Map::RequestHeaders, "traceparent"));
    }
    if set & WRITE != 0 {
        abi::set_header(
            abi::Map::RequestHeaders,
            "traceparent",
            Some(TRACEPARENT.as_bytes()),
        );
    }
    if set & ADD != 0 {
        abi::add_header(
            abi::Map::RequestHeaders,
            "traceparent",
            TRACEPARENT.as_bytes(),
        );
    }
    0
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, _end: u32) -> u32 {
    let set = calls();
    if set & TRACERESPONSE != 0 {
        abi::set_header(
            abi::Map::ResponseHeaders,
            "traceresponse",
            Some(TRACEPARENT.as_bytes()),
        );
    }
    if set & RESPMAP != 0 {
        std::hint::black_box(abi::header_map(abi::Map::ResponseHeaders));
    }
    if set & STATUS != 0 {
        std::hint::black_box(abi::header_value(abi::Map::ResponseHeaders, ":status"));
    }
    0
}

#[allow(unsafe_code)] // `no_mangle`: an export of the ABI
#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {
    let set = calls();
    if set & CODE != 0 {
        std::hint::black_box(abi::property(&["response", "code"]));
    }
    if set & NOW != 0 {
        std::hint::black_box(abi::now_nanos());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_name_the_calls() {
        assert_eq!(parse(b""), 0);
        assert_eq!(parse(b"headers"), MAP | ADD);
        assert_eq!(parse(b"traceresponse"), MAP | ADD | TRACERESPONSE);
        assert_eq!(parse(b"map,write"), MAP | WRITE);
        assert_eq!(parse(b"probe,add"), PROBE | ADD);
        assert_eq!(
            parse(b"respmap,status,code,now"),
            RESPMAP | STATUS | CODE | NOW
        );
    }
}
