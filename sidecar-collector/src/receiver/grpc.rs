//! OTLP gRPC `opentelemetry.proto.collector.trace.v1.TraceService/Export` on
//! the generated tonic server. A malformed message answers `INVALID_ARGUMENT`
//! saying what is wrong (the codec in `crate::grpc`); an oversized one
//! `OUT_OF_RANGE`; a full queue or a failing store `UNAVAILABLE` (retryable per
//! the OTLP spec); invalid spans are reported in `partial_success`.

use crate::grpc::trace::trace_service_server::{TraceService, TraceServiceServer};
use crate::sink::Sink;
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
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
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let accepted = self
            .sink
            .accept(request.into_inner())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
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
