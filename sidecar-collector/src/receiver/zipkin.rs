//! Zipkin's span API, `POST /api/v2/spans` (JSON, or `application/x-protobuf`;
//! gzip), answered `202` as Zipkin answers it, once the spans are committed
//! (or queued, in a sidecar). The spans become OTLP (`ingest::zipkin`) and go
//! the OTLP path from there: memory reserved first, credentials redacted,
//! invalid spans rejected one by one. What is not a Zipkin span list is a `400`
//! naming the span and field; a full queue or the memory limit a `503` with
//! `Retry-After`; what could never fit a `413`.

use crate::ingest::zipkin::{from_json_v2, from_proto_v2, translation_bound};
use crate::memory::RequestMemory;
use crate::receiver::http::{inflated, media_type, plain, refused};
use crate::sink::{Refusal, Sink};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
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
        .route("/api/v2/spans", post(spans))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn spans(
    State(st): State<ZipkinState>,
    memory: Option<Extension<RequestMemory>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let memory = memory.map(|Extension(m)| m);
    let protobuf = match media_type(
        &headers,
        &[
            ("application/json", false),
            ("application/x-protobuf", true),
            ("application/protobuf", true),
            ("", false),
        ],
        Some(false),
    ) {
        Ok(p) => p,
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
    // What translating takes, reserved before it is taken.
    if let Some(m) = &memory {
        if let Err(e) = m
            .grow_to(translation_bound(&raw, protobuf).saturating_add(raw.len() as u64))
            .await
        {
            return refused(Refusal::from(e));
        }
    }
    let translated = if protobuf {
        from_proto_v2(&raw)
    } else {
        from_json_v2(&raw)
    };
    let req = match translated {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    drop(raw);
    match st.sink.accept(req, memory).await {
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
