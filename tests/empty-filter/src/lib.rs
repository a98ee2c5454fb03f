//! Reference filters for `scripts/bench/filter`:
//! - no configuration: every callback continues (the V8 floor);
//! - configuration `headers`: reads the request header map and sets one
//!   header, the least any propagating filter must do (a lower bound for
//!   meshtrace's unsampled path);
//! - configuration `span`: `headers` plus exactly the host calls meshtrace
//!   makes for a sampled SERVER span (clock at start and end, the response
//!   header map, `xds.cluster_name`, `source.address`) and no logic: a lower
//!   bound for the sampled path with meshtrace's attribute set.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Empty }) });
}}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Empty,
    Headers,
    Span,
}

struct Root {
    mode: Mode,
}
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.mode = match self.get_plugin_configuration().as_deref() {
            Some(b"headers") => Mode::Headers,
            Some(b"span") => Mode::Span,
            _ => Mode::Empty,
        };
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            mode: self.mode,
            sink: 0,
        }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    mode: Mode,
    /// Keeps the results alive so the calls are not optimised away.
    sink: usize,
}
impl Context for Stream {}
impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.mode != Mode::Empty {
            let n = self.get_http_request_headers_bytes().len();
            if self.mode == Mode::Span {
                self.sink += self
                    .get_current_time()
                    .elapsed()
                    .map_or(0, |d| d.as_nanos() as usize);
            }
            let value = if n > 0 {
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            } else {
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            };
            self.set_http_request_header("traceparent", Some(value));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if self.mode == Mode::Span {
            self.sink += self.get_http_response_headers_bytes().len();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.mode == Mode::Span {
            self.sink += self
                .get_current_time()
                .elapsed()
                .map_or(0, |d| d.as_nanos() as usize);
            self.sink += self
                .get_property(vec!["xds", "cluster_name"])
                .map_or(0, |v| v.len());
            self.sink += self
                .get_property(vec!["source", "address"])
                .map_or(0, |v| v.len());
            if self.sink == usize::MAX {
                proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Trace, "unreachable").ok();
            }
        }
    }
}
