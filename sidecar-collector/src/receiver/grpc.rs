//! OTLP gRPC `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
//! the generated tonic server, which hands over the message's bytes: the sink
//! reserves what they cost decoded before decoding them. A malformed message
//! answers `INVALID_ARGUMENT` saying what is wrong; an oversized one, or one
//! that could never fit in memory, `RESOURCE_EXHAUSTED` with no retry
//! information (not retried by OTLP clients; `OUT_OF_RANGE`, which tonic
//! answers for a message over its size limit, is retryable in OTLP and is
//! rewritten by [`never_fits_is_final`]); a full queue, a failing
//! store or the memory limit `UNAVAILABLE` (retryable per the OTLP spec);
//! invalid spans are reported in `partial_success`.

use crate::grpc::trace_server::trace_service_server::{TraceService, TraceServiceServer};
use crate::grpc::EncodedExport;
use crate::memory::RequestMemory;
use crate::sink::{Encoding, Refusal, Sink};
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

pub struct GrpcReceiver {
    pub sink: Sink,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<EncodedExport>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let memory = request.extensions().get::<RequestMemory>().cloned();
        let raw = request.into_inner().0;
        let accepted = self
            .sink
            .accept_encoded(raw, Encoding::Protobuf, memory)
            .await
            .map_err(|e| match e {
                Refusal::Malformed(m) => Status::invalid_argument(format!(
                    "malformed ExportTraceServiceRequest protobuf: {m}"
                )),
                Refusal::TooLarge(m) => Status::resource_exhausted(m),
                Refusal::Retry(m) => Status::unavailable(m),
            })?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (accepted.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: accepted.rejected as i64,
                error_message: accepted.message,
            }),
        }))
    }
}

/// The gRPC service, with the size limit and gzip both ways.
pub fn service(
    receiver: GrpcReceiver,
    max_message_bytes: usize,
) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(receiver)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}

/// Rewrites tonic's `OUT_OF_RANGE` (a message over `otlp.max_message_bytes`,
/// retryable per OTLP) to `RESOURCE_EXHAUSTED` without retry information
/// (final): a message that large will never be taken.
pub async fn never_fits_is_final(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut r = next.run(req).await;
    let code = tonic::Code::OutOfRange as i32;
    if r.headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == code.to_string().as_bytes())
    {
        let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(v) = axum::http::HeaderValue::from_str(&exhausted) {
            r.headers_mut().insert("grpc-status", v);
        }
    }
    r
}
