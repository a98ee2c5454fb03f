//! OTLP/HTTP `POST /v1/traces` (protobuf or JSON, gzip or zstd). Answers after the
//! spans are committed; a full queue, a failing store or the memory limit
//! answers 503 with `Retry-After` (retryable per the OTLP spec), never a
//! silent drop; what could never fit in memory 413. A compressed body is
//! inflated in steps, each reserved in memory first.

use crate::memory::RequestMemory;
use crate::sink::{Encoding, Refusal, Sink};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Buf;
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use std::io::Read;

#[derive(Clone)]
pub struct HttpState {
    pub sink: Sink,
    pub max_message_bytes: usize,
}

pub fn router(state: HttpState) -> Router {
    let limit = state.max_message_bytes;
    Router::new()
        .route("/v1/traces", post(export))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

pub(crate) fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], msg.into()).into_response()
}

/// The body's encoding by the request's `Content-Type` (its media type,
/// parameters ignored): one of `accepted`, or `absent` when the header is
/// missing; anything else is the `415` naming what is accepted.
// The error is the answer itself, returned once per refused request, as `inflated`'s.
#[allow(clippy::result_large_err)]
pub(crate) fn media_type<T: Copy>(
    headers: &HeaderMap,
    accepted: &[(&str, T)],
    absent: Option<T>,
) -> Result<T, Response> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = given.as_deref().map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let found = match &essence {
        None => absent,
        Some(e) => accepted.iter().find(|(m, _)| m == e).map(|(_, t)| *t),
    };
    found.ok_or_else(|| {
        let names: Vec<&str> = accepted.iter().map(|(m, _)| *m).collect();
        plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type {:?} is not supported: send {}",
                given.unwrap_or_default(),
                names.join(" or ")
            ),
        )
    })
}

/// A body's `Content-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContentEncoding {
    Identity,
    Gzip,
    Zstd,
}

/// The body's `Content-Encoding`, or the `415` naming what is accepted.
#[allow(clippy::result_large_err)]
fn content_encoding(headers: &HeaderMap) -> Result<ContentEncoding, Response> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(ContentEncoding::Identity);
    };
    let given = String::from_utf8_lossy(v.as_bytes())
        .trim()
        .to_ascii_lowercase();
    match given.as_str() {
        "" | "identity" => Ok(ContentEncoding::Identity),
        "gzip" | "x-gzip" => Ok(ContentEncoding::Gzip),
        "zstd" => Ok(ContentEncoding::Zstd),
        _ => Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-encoding {given:?} is not supported: send gzip, zstd or identity"),
        )),
    }
}

/// Inflates a gzip or zstd body in steps, growing the request's memory
/// reservation before each step; at most `max` bytes. zstd's window (the
/// decoder's own buffer) is at most `max` rounded up to a power of two, and
/// no more than the frame says it holds: reserved first too. Each step runs
/// on a blocking thread: inflating is CPU work the async runtime must not do.
async fn inflate(
    encoding: ContentEncoding,
    body: Bytes,
    max: usize,
    memory: Option<&RequestMemory>,
) -> Result<Vec<u8>, Response> {
    const STEP: usize = 256 * 1024;
    let name = match encoding {
        ContentEncoding::Zstd => "zstd",
        _ => "gzip",
    };
    let invalid =
        |e: std::io::Error| plain(StatusCode::BAD_REQUEST, format!("invalid {name} body: {e}"));
    let window_log = max.max(1 << 10).next_power_of_two().trailing_zeros();
    let body_len = body.len();
    let (mut dec, window): (Box<dyn Read + Send>, usize) = match encoding {
        ContentEncoding::Zstd => {
            let content = zstd::zstd_safe::get_frame_content_size(&body)
                .ok()
                .flatten()
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
            let mut d = zstd::stream::read::Decoder::with_buffer(body.reader()).map_err(invalid)?;
            d.window_log_max(window_log).map_err(invalid)?;
            (
                Box::new(d.take(max as u64 + 1)),
                content.min(1 << window_log),
            )
        }
        _ => (
            Box::new(flate2::read::GzDecoder::new(body.reader()).take(max as u64 + 1)),
            0,
        ),
    };
    let mut out = Vec::new();
    loop {
        if let Some(m) = memory {
            m.grow_to((body_len + window + out.len() + STEP) as u64)
                .await
                .map_err(|e| refused(Refusal::from(e)))?;
        }
        let before = out.len();
        out.resize(before + STEP, 0);
        let step = tokio::task::spawn_blocking(move || {
            let n = read_some(&mut dec, &mut out[before..]);
            (dec, out, n)
        })
        .await;
        let n;
        (dec, out, n) = step.map_err(|e| {
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("inflating the {name} body failed: {e}"),
            )
        })?;
        let n = n.map_err(invalid)?;
        out.truncate(before + n);
        if out.len() > max {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body exceeds otlp.max_message_bytes ({max} bytes)"),
            ));
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Fills as much of `buf` as the reader gives before it ends.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The body, inflated if it is gzip or zstd (`Content-Encoding`); refused first if
/// the sink's queue has no room for it (it inflates to no less).
pub(crate) async fn inflated(
    sink: &Sink,
    headers: &HeaderMap,
    body: Bytes,
    max: usize,
    memory: Option<&RequestMemory>,
) -> Result<Bytes, Response> {
    sink.room_for(body.len() as u64).map_err(refused)?;
    match content_encoding(headers)? {
        ContentEncoding::Identity => Ok(body),
        e => Ok(Bytes::from(inflate(e, body, max, memory).await?)),
    }
}

/// Zipkin's and Jaeger's answer once the sink took the spans: `202`, saying
/// how many were rejected, if any; a refusal as [`refused`].
pub(crate) fn accepted(taken: Result<crate::sink::Accepted, Refusal>) -> Response {
    match taken {
        Ok(a) if a.rejected > 0 => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{} spans rejected: {}", a.rejected, a.message),
        )
            .into_response(),
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => refused(e),
    }
}

pub(crate) fn refused(e: Refusal) -> Response {
    let (status, m) = match e {
        Refusal::Malformed(m) => (StatusCode::BAD_REQUEST, m),
        Refusal::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
        Refusal::Retry(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    };
    crate::grpc::refusal(false, tonic::Code::Unknown, status, m)
}

async fn export(
    State(st): State<HttpState>,
    memory: Option<Extension<RequestMemory>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let memory = memory.map(|Extension(m)| m);
    let encoding = match media_type(
        &headers,
        &[
            ("application/x-protobuf", Encoding::Protobuf),
            ("application/json", Encoding::Json),
        ],
        None,
    ) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let raw = match inflated(
        &st.sink,
        &headers,
        body,
        st.max_message_bytes,
        memory.as_ref(),
    )
    .await
    {
        Ok(raw) => raw,
        Err(r) => return r,
    };
    let json = encoding == Encoding::Json;
    let accepted = match st.sink.accept_encoded(raw, encoding, memory).await {
        Ok(a) => a,
        Err(Refusal::Malformed(m)) => {
            let kind = if json { "OTLP/JSON" } else { "protobuf" };
            return plain(
                StatusCode::BAD_REQUEST,
                format!("body is not a {kind} ExportTraceServiceRequest: {m}"),
            );
        }
        Err(e) => return refused(e),
    };
    let resp = ExportTraceServiceResponse {
        partial_success: (accepted.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: accepted.rejected as i64,
            error_message: accepted.message,
        }),
    };
    if json {
        let body = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec());
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        resp.encode_to_vec(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Inflating runs on blocking threads: on a single-threaded runtime,
    /// another task keeps running while a large body inflates (before, the
    /// whole body inflated without yielding once).
    #[test]
    fn inflating_leaves_the_runtime_free() {
        let zeros = vec![0u8; 48 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&zeros).unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        let mut zst = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        zst.include_contentsize(false).unwrap();
        zst.write_all(&zeros).unwrap();
        let zst = Bytes::from(zst.finish().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (encoding, body) in [(ContentEncoding::Gzip, gz), (ContentEncoding::Zstd, zst)] {
            let ticks = Arc::new(AtomicU64::new(0));
            let out = rt.block_on(async {
                let t = ticks.clone();
                // A task woken by the timer every millisecond: it runs only
                // when the runtime thread is free.
                let ticker = tokio::spawn(async move {
                    loop {
                        t.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                });
                tokio::task::yield_now().await;
                let before = ticks.load(Ordering::Relaxed);
                let out = inflate(encoding, body, 64 << 20, None).await;
                let during = ticks.load(Ordering::Relaxed) - before;
                ticker.abort();
                (out.map(|v| v.len()).ok(), during)
            });
            assert_eq!(out.0, Some(48 << 20));
            // 48 MiB in 256 KiB steps (tens of milliseconds at least): the
            // ticker ran between steps; inflated on the runtime thread, it
            // could not run once.
            assert!(out.1 >= 3, "the runtime was blocked: {} ticks", out.1);
        }
    }
}
