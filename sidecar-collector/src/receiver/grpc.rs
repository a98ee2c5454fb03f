//! OTLP gRPC `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//! A full queue or a failing store answers `UNAVAILABLE` (retryable per the
//! OTLP spec); invalid spans are reported in `partial_success`.

use crate::ingest::records_from_request;
use crate::pipeline::Pipeline;
use meshtrace_proto::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use meshtrace_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

pub struct GrpcReceiver {
    pub pipeline: Pipeline,
    pub indexed_tags: Arc<Vec<String>>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let ingested = records_from_request(request.into_inner(), &self.indexed_tags);
        let c = &self.pipeline.counters;
        c.spans_received.fetch_add(
            ingested.records.len() as u64 + ingested.rejected,
            Ordering::Relaxed,
        );
        c.spans_rejected
            .fetch_add(ingested.rejected, Ordering::Relaxed);
        if !ingested.records.is_empty() {
            self.pipeline
                .submit(ingested.records)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (ingested.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: ingested.rejected as i64,
                error_message: ingested.message,
            }),
        }))
    }
}

/// The tonic service, with the size limit and gzip.
pub fn service(
    receiver: GrpcReceiver,
    max_message_bytes: usize,
) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(receiver)
        .max_decoding_message_size(max_message_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
}
