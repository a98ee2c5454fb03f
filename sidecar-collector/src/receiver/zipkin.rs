//! Zipkin's span API, `POST /api/v2/spans` (JSON, or `application/x-protobuf`;
//! gzip) and `POST /api/v1/spans` (v1 JSON), answered `202` as Zipkin answers it, once the spans are committed
//! (or queued, in a sidecar). The spans become OTLP (`ingest::zipkin`) and go
//! the OTLP path from there: memory reserved first, credentials redacted,
//! invalid spans rejected one by one. What is not a Zipkin span list is a `400`
//! naming the span and field; a full queue or the memory limit a `503` with
//! `Retry-After`; what could never fit a `413`.

use crate::ingest::zipkin::{from_json_v1, from_json_v2, from_proto_v2, translation_bound};
use crate::memory::RequestMemory;
use crate::receiver::http::{accepted, inflated, media_type, plain, refused};
use crate::sink::{Refusal, Sink};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;

#[derive(Clone)]
pub struct ZipkinState {
    pub sink: Sink,
    pub max_message_bytes: usize,
}

pub fn router(state: ZipkinState) -> Router {
    let limit = state.max_message_bytes;
    Router::new()
        .route("/api/v2/spans", post(spans_v2))
        .route("/api/v1/spans", post(spans_v1))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The body's format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonV2,
    ProtoV2,
    JsonV1,
}

async fn spans_v2(
    State(st): State<ZipkinState>,
    memory: Option<Extension<RequestMemory>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match media_type(
        &headers,
        &[
            ("application/json", Format::JsonV2),
            ("application/x-protobuf", Format::ProtoV2),
            ("application/protobuf", Format::ProtoV2),
            ("", Format::JsonV2),
        ],
        Some(Format::JsonV2),
    ) {
        Ok(format) => take(st, memory, headers, body, format).await,
        Err(r) => r,
    }
}

/// Zipkin v1: JSON only (v1 Thrift is a `415` naming JSON).
async fn spans_v1(
    State(st): State<ZipkinState>,
    memory: Option<Extension<RequestMemory>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match media_type(
        &headers,
        &[("application/json", Format::JsonV1), ("", Format::JsonV1)],
        Some(Format::JsonV1),
    ) {
        Ok(format) => take(st, memory, headers, body, format).await,
        Err(r) => r,
    }
}

async fn take(
    st: ZipkinState,
    memory: Option<Extension<RequestMemory>>,
    headers: HeaderMap,
    body: Bytes,
    format: Format,
) -> Response {
    let memory = memory.map(|Extension(m)| m);
    let protobuf = format == Format::ProtoV2;
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
    // What translating takes, reserved before it is taken; a v1 span may
    // become two (a client and a server side).
    let bound = match format {
        Format::JsonV1 => translation_bound(&raw, false).saturating_mul(2),
        _ => translation_bound(&raw, protobuf),
    };
    if let Some(m) = &memory {
        if let Err(e) = m.grow_to(bound.saturating_add(raw.len() as u64)).await {
            return refused(Refusal::from(e));
        }
    }
    let translated = match format {
        Format::ProtoV2 => from_proto_v2(&raw),
        Format::JsonV2 => from_json_v2(&raw),
        Format::JsonV1 => from_json_v1(&raw),
    };
    let req = match translated {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    drop(raw);
    accepted(st.sink.accept(req, memory).await)
}
