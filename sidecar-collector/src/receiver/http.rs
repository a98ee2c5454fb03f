//! OTLP/HTTP `POST /v1/traces` (protobuf, gzip). Answers after the spans are
//! committed; a full queue or a failing store answers 503 with `Retry-After`
//! (retryable per the OTLP spec), never a silent drop.

use crate::sink::Sink;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
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

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], msg.into()).into_response()
}

async fn export(State(st): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" => false,
        "application/json" => true,
        _ => {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-type {content_type:?} is not supported: send application/x-protobuf or application/json"
                ),
            )
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let raw = if gzip {
        let mut out = Vec::new();
        let mut dec =
            flate2::read::GzDecoder::new(body.as_ref()).take(st.max_message_bytes as u64 + 1);
        if let Err(e) = dec.read_to_end(&mut out) {
            return plain(StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}"));
        }
        if out.len() > st.max_message_bytes {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body exceeds {} bytes", st.max_message_bytes),
            );
        }
        Bytes::from(out)
    } else {
        body
    };
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&raw).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(raw).map_err(|e| e.to_string())
    };
    let req = match decoded {
        Ok(r) => r,
        Err(e) => {
            let kind = if json { "OTLP/JSON" } else { "protobuf" };
            return plain(
                StatusCode::BAD_REQUEST,
                format!("body is not a {kind} ExportTraceServiceRequest: {e}"),
            );
        }
    };
    let accepted = match st.sink.accept(req).await {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::RETRY_AFTER, "1"),
                    (header::CONTENT_TYPE, "text/plain"),
                ],
                e.to_string(),
            )
                .into_response();
        }
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
