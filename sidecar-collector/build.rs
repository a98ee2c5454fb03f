//! Generates the tonic servers and clients of the two gRPC services the
//! collector speaks (OTLP `TraceService`, Jaeger `SamplingManager`) with
//! `tonic-build`'s manual builder: no protoc, the messages are the prost types
//! `meshtrace-proto` already has, and the codec is `crate::grpc::StrictCodec`,
//! which answers an undecodable message `INVALID_ARGUMENT` (tonic's prost
//! codec says `INTERNAL`, which OTLP clients would retry forever).

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    let trace = Service::builder()
        .name("TraceService")
        .package("opentelemetry.proto.collector.trace.v1")
        .method(
            Method::builder()
                .name("export")
                .route_name("Export")
                .input_type(
                    "meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest",
                )
                .output_type(
                    "meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceResponse",
                )
                .codec_path("crate::grpc::StrictCodec")
                .build(),
        )
        .build();
    let sampling = Service::builder()
        .name("SamplingManager")
        .package("jaeger.api_v2")
        .method(
            Method::builder()
                .name("get_sampling_strategy")
                .route_name("GetSamplingStrategy")
                .input_type("meshtrace_proto::jaeger::SamplingStrategyParameters")
                .output_type("meshtrace_proto::jaeger::SamplingStrategyResponse")
                .codec_path("crate::grpc::StrictCodec")
                .build(),
        )
        .build();
    Builder::new().compile(&[trace, sampling]);
    println!("cargo::rerun-if-changed=build.rs");
}
