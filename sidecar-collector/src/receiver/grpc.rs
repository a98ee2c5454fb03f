//! OTLP gRPC `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//! A malformed message answers `INVALID_ARGUMENT` saying what is wrong; a full
//! queue or a failing store answers `UNAVAILABLE` (retryable per the OTLP
//! spec); invalid spans are reported in `partial_success`.

use crate::grpc_unary::{UnaryHandler, UnaryServer};
use crate::sink::Sink;
use bytes::Bytes;
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::sync::Arc;
use tonic::codegen::BoxFuture;
use tonic::Status;

pub struct GrpcReceiver {
    pub sink: Sink,
}

impl UnaryHandler for GrpcReceiver {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Response = ExportTraceServiceResponse;

    fn call(self: Arc<Self>, message: Bytes) -> BoxFuture<ExportTraceServiceResponse, Status> {
        Box::pin(async move {
            let request = ExportTraceServiceRequest::decode(message).map_err(|e| {
                Status::invalid_argument(format!(
                    "malformed ExportTraceServiceRequest protobuf: {e}"
                ))
            })?;
            let accepted = self
                .sink
                .accept(request)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(ExportTraceServiceResponse {
                partial_success: (accepted.rejected > 0).then_some(ExportTracePartialSuccess {
                    rejected_spans: accepted.rejected as i64,
                    error_message: accepted.message,
                }),
            })
        })
    }
}

/// The gRPC service, with the size limit and gzip.
pub fn service(receiver: GrpcReceiver, max_message_bytes: usize) -> UnaryServer<GrpcReceiver> {
    UnaryServer::new(receiver, max_message_bytes)
}
