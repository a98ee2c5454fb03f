//! Finishing a span: what the end of the stream tells, read from the host
//! (end time, kind, status and Envoy's failure flags, peer, sizes, the values of
//! attribute tags). Host reads only; [`super::encode`] writes the span.

use super::{int_le, response_flags, SpanState};
use crate::config::Direction;
use crate::host::StreamHost;
use crate::otlp::SpanKind;
use crate::tracer::Tracer;

/// What the end of a stream told.
pub(super) struct Ending {
    pub end_ns: u64,
    pub kind: SpanKind,
    pub cluster: Option<String>,
    pub status: Option<i64>,
    /// Envoy's response flags (short codes), when the request failed.
    pub flags: String,
    pub peer: Option<String>,
    pub upstream_host: Option<String>,
    pub req_size: Option<i64>,
    pub resp_size: Option<i64>,
    /// (attribute tag, raw value) for each attribute tag.
    pub attr_values: Vec<(usize, Option<Vec<u8>>)>,
    pub error: bool,
    pub status_message: String,
}

/// Reads what the span still needs from the host.
pub(super) fn read(span: &SpanState, tracer: &Tracer, host: &impl StreamHost) -> Ending {
    let end_ns = host.now_nanos();
    let prop_str = |path: &[&str]| {
        host.property(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|s| !s.is_empty())
    };
    let cluster = prop_str(&["xds", "cluster_name"]);
    let kind = match tracer.direction {
        Direction::Inbound => SpanKind::Server,
        Direction::Outbound => SpanKind::Client,
        // Istio names clusters `inbound|port||` and `outbound|port|subset|host`:
        // that answers without another host call.
        Direction::Auto
            if cluster
                .as_deref()
                .is_some_and(|c| c.starts_with("inbound|")) =>
        {
            SpanKind::Server
        }
        Direction::Auto
            if cluster
                .as_deref()
                .is_some_and(|c| c.starts_with("outbound|")) =>
        {
            SpanKind::Client
        }
        // Envoy's enum: 1 = INBOUND, 2 = OUTBOUND.
        Direction::Auto => match host
            .property(&["xds", "listener_direction"])
            .and_then(|b| int_le(&b))
        {
            Some(1) => SpanKind::Server,
            _ => SpanKind::Client,
        },
    };
    let status = span.status.or_else(|| {
        host.property(&["response", "code"])
            .and_then(|b| int_le(&b))
            .filter(|c| *c > 0)
    });
    let grpc_error = span.grpc_status.is_some_and(|g| g != 0);
    let http_error = status.is_none_or(|s| s >= 500);
    let (flags, local_failure) = if http_error || grpc_error {
        host.property(&["response", "flags"])
            .and_then(|b| int_le(&b))
            .map(|bits| response_flags(bits as u64))
            .unwrap_or_default()
    } else {
        (String::new(), false)
    };
    // SERVER: the peer is downstream; the upstream is the local app, not
    // worth a host call. CLIENT: the peer is the upstream host.
    let (peer, upstream_host) = match kind {
        SpanKind::Server => (prop_str(&["source", "address"]), None),
        SpanKind::Client => {
            let u = prop_str(&["upstream", "address"]);
            (u.clone(), u)
        }
    };
    let req_size = span
        .request_body_size
        .or_else(|| host.property(&["request", "size"]).and_then(|b| int_le(&b)));
    let resp_size = span.response_body_size.or_else(|| {
        host.property(&["response", "size"])
            .and_then(|b| int_le(&b))
    });
    let attr_values: Vec<(usize, Option<Vec<u8>>)> = tracer
        .attribute_tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let path: Vec<&str> = t.path.iter().map(String::as_str).collect();
            (i, host.property(&path))
        })
        .collect();

    let error = http_error || grpc_error || local_failure;
    let status_message = if !flags.is_empty() {
        flags.clone()
    } else if status.is_none() {
        "no response".to_string()
    } else {
        String::new()
    };
    Ending {
        end_ns,
        kind,
        cluster,
        status,
        flags,
        peer,
        upstream_host,
        req_size,
        resp_size,
        attr_values,
        error,
        status_message,
    }
}
