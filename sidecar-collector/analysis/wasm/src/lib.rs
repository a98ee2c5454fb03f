//! The analysis crate in the browser. The UI's trace view computes the critical
//! path of a trace opened from a JSON file with this (the collector computes it
//! for stored traces with the same crate): one implementation.
//!
//! The input is the file as the UI downloads it: OTLP JSON `TracesData`
//! (`resourceSpans` → `scopeSpans` → `spans`, hex ids, nanosecond times as
//! decimal strings), bare or wrapped in api_v3's `{"result": …}`. The output is
//! `/api/analysis/critical-path`'s answer, as JSON text.
//!
//! The module's interface is four functions over its memory, called by
//! `ui/analysis.js`: `mt_input(len)` gives the address of a buffer of `len`
//! bytes for the UTF-8 text, `mt_critical_path()` computes (0: the report, 1:
//! an error message), `mt_output()` and `mt_output_len()` say where the answer
//! is. No wasm-bindgen: its generated JavaScript needs the `wasm-bindgen` CLI
//! of the same version, a `cargo install` of 244 s on a fresh machine before
//! the demo could start (issue 25), for one function taking and returning text.

use std::cell::RefCell;

use meshtrace_analysis::report::{critical_path_report, process_of};
use meshtrace_analysis::Span;
use serde_json::Value;

/// The text handed in and the answer handed out.
#[derive(Debug, Default)]
pub struct Exchange {
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Exchange {
    /// A buffer of `len` bytes for the input (the previous answer is freed).
    pub fn input(&mut self, len: usize) -> &mut [u8] {
        self.output = Vec::new();
        self.input = vec![0; len];
        &mut self.input
    }

    /// Computes the report of the input; false if the answer is an error message.
    pub fn critical_path(&mut self) -> bool {
        let input = std::mem::take(&mut self.input);
        let (ok, text) = match std::str::from_utf8(&input) {
            Ok(t) => match report_json(t) {
                Ok(r) => (true, r),
                Err(e) => (false, e),
            },
            Err(e) => (false, format!("not UTF-8 text: {e}")),
        };
        self.output = text.into_bytes();
        ok
    }

    pub fn output(&self) -> &[u8] {
        &self.output
    }
}

thread_local! {
    static EXCHANGE: RefCell<Exchange> = RefCell::default();
}

/// The address of a buffer of `len` bytes for the input.
#[allow(unsafe_code)] // `no_mangle`: exported under the name analysis.js calls.
#[no_mangle]
pub extern "C" fn mt_input(len: usize) -> *mut u8 {
    EXCHANGE.with_borrow_mut(|x| x.input(len).as_mut_ptr())
}

/// Computes the critical-path report of the input: 0, or 1 if the answer is an error.
#[allow(unsafe_code)] // `no_mangle`: exported under the name analysis.js calls.
#[no_mangle]
pub extern "C" fn mt_critical_path() -> u32 {
    u32::from(!EXCHANGE.with_borrow_mut(Exchange::critical_path))
}

/// The address of the answer.
#[allow(unsafe_code)] // `no_mangle`: exported under the name analysis.js calls.
#[no_mangle]
pub extern "C" fn mt_output() -> *const u8 {
    EXCHANGE.with_borrow(|x| x.output().as_ptr())
}

/// The answer's length in bytes.
#[allow(unsafe_code)] // `no_mangle`: exported under the name analysis.js calls.
#[no_mangle]
pub extern "C" fn mt_output_len() -> usize {
    EXCHANGE.with_borrow(|x| x.output().len())
}

/// The report of an OTLP JSON trace, as JSON text.
pub fn report_json(traces_data: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(traces_data).map_err(|e| format!("not JSON: {e}"))?;
    let data = v.get("result").unwrap_or(&v);
    let (trace_id, spans) = spans_of(data)?;
    serde_json::to_string(&critical_path_report(trace_id, spans)).map_err(|e| e.to_string())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An OTLP JSON `AnyValue` as text (strings, numbers, booleans).
fn any_value(v: &Value) -> Option<String> {
    let v = v.as_object()?;
    v.get("stringValue")
        .or_else(|| v.get("intValue"))
        .or_else(|| v.get("doubleValue"))
        .or_else(|| v.get("boolValue"))
        .and_then(|x| match x {
            Value::Bool(b) => Some(b.to_string()),
            other => text(other),
        })
}

fn attribute(attrs: Option<&Value>, key: &str) -> Option<String> {
    attrs?
        .as_array()?
        .iter()
        .find(|kv| kv.get("key").and_then(Value::as_str) == Some(key))
        .and_then(|kv| any_value(kv.get("value")?))
}

fn span_id(v: Option<&Value>) -> Option<u64> {
    let s = v?.as_str()?;
    if s.is_empty() {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn nanos(v: Option<&Value>, what: &str, at: usize) -> Result<i64, String> {
    v.and_then(text)
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| format!("span {at}: {what} is missing or not a decimal number"))
}

/// The trace id and the spans of `data` (`TracesData`).
fn spans_of(data: &Value) -> Result<(String, Vec<Span>), String> {
    let resource_spans = data
        .get("resourceSpans")
        .and_then(Value::as_array)
        .ok_or("no resourceSpans: not an OTLP JSON trace")?;
    let mut spans = Vec::new();
    let mut trace_id = String::new();
    for rs in resource_spans {
        let attrs = rs.get("resource").and_then(|r| r.get("attributes"));
        let service =
            attribute(attrs, "service.name").unwrap_or_else(|| "unknown_service".to_string());
        let process = process_of(&service, |k| attribute(attrs, k));
        let scopes = rs.get("scopeSpans").and_then(Value::as_array);
        for s in scopes.into_iter().flatten().flat_map(|ss| {
            ss.get("spans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        }) {
            let at = spans.len();
            let id = span_id(s.get("spanId"))
                .ok_or_else(|| format!("span {at}: spanId is missing or not 16 hex digits"))?;
            if trace_id.is_empty() {
                trace_id = s.get("traceId").and_then(text).unwrap_or_default();
            }
            spans.push(Span {
                id,
                parent: span_id(s.get("parentSpanId")),
                start: nanos(s.get("startTimeUnixNano"), "startTimeUnixNano", at)?,
                end: nanos(s.get("endTimeUnixNano"), "endTimeUnixNano", at)?,
                // SPAN_KIND_CONSUMER: the producer does not wait for it (as the collector reads it).
                asynchronous: s.get("kind").and_then(Value::as_i64) == Some(5),
                service: service.clone(),
                operation: s.get("name").and_then(text).unwrap_or_default(),
                process: process.clone(),
            });
        }
    }
    if spans.is_empty() {
        return Err("the trace has no spans".into());
    }
    Ok((trace_id, spans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(service: &str, pod: &str, spans: Value) -> Value {
        json!({
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
                {"key": "k8s.pod.name", "value": {"stringValue": pod}},
            ]},
            "scopeSpans": [{"scope": {}, "spans": spans}],
        })
    }

    fn span(id: &str, parent: &str, start: u64, end: u64, kind: i64) -> Value {
        json!({"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": id,
               "parentSpanId": parent, "name": format!("op-{id}"), "kind": kind,
               "startTimeUnixNano": start.to_string(), "endTimeUnixNano": end.to_string()})
    }

    #[test]
    fn a_wrapped_api_v3_answer_gives_the_same_report_as_the_collector() {
        // frontend 0..100 ms calls backend 10..60 ms and sends a message (consumer,
        // 20..150 ms: outlives the root and is asynchronous, so never on the path).
        let ms = 1_000_000u64;
        let data = json!({"result": {"resourceSpans": [
            resource("frontend", "fe-1", json!([span("00000000000000a1", "", 1000 * ms, 1100 * ms, 2)])),
            resource("backend", "be-1", json!([
                span("00000000000000b1", "00000000000000a1", 1010 * ms, 1060 * ms, 2),
                span("00000000000000c1", "00000000000000a1", 1020 * ms, 1150 * ms, 5),
            ])),
        ]}});
        let out: Value = serde_json::from_str(&report_json(&data.to_string()).unwrap()).unwrap();
        assert_eq!(out["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(out["durationNs"], 100 * ms);
        let path: Vec<&str> = out["criticalPath"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["spanId"].as_str().unwrap())
            .collect();
        assert_eq!(
            path,
            ["00000000000000a1", "00000000000000b1", "00000000000000a1"] /* chronological */
        );
        assert_eq!(out["spans"][2]["criticalNs"], 0);
        // Self time is what no child covers, asynchronous ones too (as Jaeger counts it).
        assert_eq!(out["spans"][0]["selfNs"], 10 * ms);
        assert_eq!(out["spans"][0]["criticalNs"], 50 * ms);
        // A consumer outliving its producer is not clock skew: not shifted.
        assert_eq!(
            out["spans"][2]["adjustedStartUnixNano"],
            (1020 * ms).to_string()
        );
    }

    #[test]
    fn the_exchange_hands_the_report_or_the_error_out() {
        let mut x = Exchange::default();
        let text = json!({"resourceSpans": [resource("a", "p", json!([span("00000000000000a1", "", 1, 5, 2)]))]}).to_string();
        x.input(text.len()).copy_from_slice(text.as_bytes());
        assert!(x.critical_path());
        let out: Value = serde_json::from_slice(x.output()).unwrap();
        assert_eq!(out["durationNs"], 4);
        let bad = [0xff, 0xfe];
        x.input(2).copy_from_slice(&bad);
        assert!(x.output().is_empty(), "a new input frees the last answer");
        assert!(!x.critical_path());
        assert!(String::from_utf8_lossy(x.output()).starts_with("not UTF-8"));
        x.input(1).copy_from_slice(b"{");
        assert!(!x.critical_path());
        assert!(String::from_utf8_lossy(x.output()).starts_with("not JSON"));
        x.input(0);
        assert!(!x.critical_path());
    }

    #[test]
    fn what_is_not_a_trace_is_named() {
        assert!(report_json("{").unwrap_err().starts_with("not JSON"));
        assert!(report_json("{}").unwrap_err().contains("resourceSpans"));
        let bad = json!({"resourceSpans": [resource("a", "p", json!([{"spanId": "zz"}]))]});
        assert!(report_json(&bad.to_string())
            .unwrap_err()
            .contains("span 0: spanId"));
        let no_time =
            json!({"resourceSpans": [resource("a", "p", json!([{"spanId": "00000000000000a1"}]))]});
        assert!(report_json(&no_time.to_string())
            .unwrap_err()
            .contains("startTimeUnixNano"));
        let empty = json!({"resourceSpans": []});
        assert_eq!(
            report_json(&empty.to_string()).unwrap_err(),
            "the trace has no spans"
        );
    }
}
