//! An OTLP/HTTP receiver inside the test: decodes `POST /v1/traces` with
//! prost and keeps the spans. A stand-in for the collector binary until the
//! collector issue lands; it is a real decoder of the real wire format.

use crate::http::{read_message, write_response};
use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, KeyValue};
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message as _;
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A received span with its resource.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

fn any_string(kv: &[KeyValue], key: &str) -> Option<String> {
    kv.iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            any_value::Value::IntValue(i) => i.to_string(),
            any_value::Value::BoolValue(b) => b.to_string(),
            any_value::Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<String> {
        any_string(&self.span.attributes, key)
    }
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        any_string(&self.resource, key)
    }
    pub fn service(&self) -> String {
        self.resource_attr("service.name").unwrap_or_default()
    }
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct OtlpReceiver {
    pub port: u16,
    pub spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    pub requests: Arc<AtomicUsize>,
    /// When non-zero, answer every export with this status (and keep nothing).
    pub fail_with: Arc<AtomicU16>,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> OtlpReceiver {
        Self::start_with(port, true)
    }

    /// A sink for benchmarks: counts export requests, answers 200, decodes nothing.
    pub fn start_sink() -> OtlpReceiver {
        Self::start_with(0, false)
    }

    fn start_with(port: u16, decode: bool) -> OtlpReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind otlp receiver");
        let port = listener.local_addr().expect("addr").port();
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let requests: Arc<AtomicUsize> = Arc::default();
        let fail_with: Arc<AtomicU16> = Arc::default();
        let (s, r, f) = (spans.clone(), requests.clone(), fail_with.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                conn.set_nodelay(true).ok();
                let (s, r, f) = (s.clone(), r.clone(), f.clone());
                thread::spawn(move || {
                    let Ok(mut w) = conn.try_clone() else { return };
                    let mut reader = BufReader::new(conn);
                    while let Ok(Some(m)) = read_message(&mut reader) {
                        r.fetch_add(1, Ordering::SeqCst);
                        let fail = f.load(Ordering::SeqCst);
                        if fail != 0 {
                            write_response(&mut w, fail, &[], b"");
                            continue;
                        }
                        if !decode {
                            write_response(&mut w, 200, &[], b"");
                            continue;
                        }
                        if !m.path().starts_with("/v1/traces") {
                            write_response(&mut w, 404, &[], b"");
                            continue;
                        }
                        match ExportTraceServiceRequest::decode(m.body.as_slice()) {
                            Ok(req) => {
                                let mut out = s.lock().expect("lock");
                                for rs in req.resource_spans {
                                    let resource =
                                        rs.resource.map(|r| r.attributes).unwrap_or_default();
                                    for ss in rs.scope_spans {
                                        for span in ss.spans {
                                            out.push(ReceivedSpan {
                                                span,
                                                resource: resource.clone(),
                                            });
                                        }
                                    }
                                }
                                drop(out);
                                write_response(
                                    &mut w,
                                    200,
                                    &[("content-type", "application/x-protobuf")],
                                    b"",
                                );
                            }
                            Err(e) => {
                                write_response(&mut w, 400, &[], e.to_string().as_bytes());
                            }
                        }
                    }
                });
            }
        });
        OtlpReceiver {
            port,
            spans,
            requests,
            fail_with,
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.spans.lock().expect("lock").len()
    }

    /// Waits until `pred` holds over the received spans, or `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) || Instant::now() > deadline {
                return spans;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }
}
