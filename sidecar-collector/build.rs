//! Generates the tonic servers and clients of the gRPC services the
//! collector speaks (OTLP `TraceService`, Jaeger `SamplingManager` and
//! `CollectorService`) with
//! `tonic-build`'s manual builder: no protoc, the messages are the prost types
//! `meshtrace-proto` already has, and the codec is `crate::grpc::StrictCodec`,
//! which answers an undecodable message `INVALID_ARGUMENT` (tonic's prost
//! codec says `INTERNAL`, which OTLP clients would retry forever).
//!
//! The OTLP server is generated apart from the client: it takes the request's
//! bytes (`crate::grpc::EncodedExport`), so the receiver can reserve what the
//! message costs decoded before decoding it; so does Jaeger's collector server.

use tonic_build::manual::{Builder, Method, Service};

/// OTLP's `TraceService/Export` taking `input` through `codec`.
fn trace_service(input: &str, codec: &str) -> Service {
    Service::builder()
        .name("TraceService")
        .package("opentelemetry.proto.collector.trace.v1")
        .method(
            Method::builder()
                .name("export")
                .route_name("Export")
                .input_type(input)
                .output_type(
                    "meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceResponse",
                )
                .codec_path(codec)
                .build(),
        )
        .build()
}

fn main() {
    let trace = trace_service(
        "meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest",
        "crate::grpc::StrictCodec",
    );
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
    let trace_server = trace_service("crate::grpc::EncodedExport", "crate::grpc::EncodedCodec");
    // Jaeger's collector service, taking the request's bytes as OTLP's does.
    let jaeger_collector = Service::builder()
        .name("CollectorService")
        .package("jaeger.api_v2")
        .method(
            Method::builder()
                .name("post_spans")
                .route_name("PostSpans")
                .input_type("crate::grpc::EncodedExport")
                .output_type("meshtrace_proto::jaeger::model::PostSpansResponse")
                .codec_path("crate::grpc::EncodedCodec")
                .build(),
        )
        .build();
    Builder::new().build_server(false).compile(&[trace]);
    Builder::new().compile(&[sampling]);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("raw");
    if let Err(e) = std::fs::create_dir_all(&out) {
        println!("cargo::error=creating {}: {e}", out.display());
    }
    Builder::new()
        .build_client(false)
        .out_dir(&out)
        .compile(&[trace_server, jaeger_collector]);
    println!("cargo::rerun-if-changed=build.rs");
    // The UI is embedded by include_dir!, which cannot tell cargo that its files changed.
    println!("cargo::rerun-if-changed=ui");
    wait_for_the_ui_wasm();
}

/// scripts/demo builds the UI's analysis wasm (scripts/build-ui-wasm) beside the
/// collector, not before it: while the file `MESHTRACE_UI_WASM_BUILDING` names
/// exists and the process whose PID it holds lives, that build runs. The
/// collector's crate compiles after this script, so waiting here holds back only
/// that crate (its dependencies go on compiling), and it embeds the wasm. At most
/// 15 minutes; then it is built without it (the UI says so when a file is opened).
fn wait_for_the_ui_wasm() {
    println!("cargo::rerun-if-env-changed=MESHTRACE_UI_WASM_BUILDING");
    let Some(marker) = std::env::var_os("MESHTRACE_UI_WASM_BUILDING") else {
        return;
    };
    let marker = std::path::PathBuf::from(marker);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    let building = || {
        // Written just after the file is made: an empty file is a builder starting.
        std::fs::read_to_string(&marker).is_ok_and(|pid| {
            let pid = pid.trim();
            pid.is_empty() || std::path::Path::new("/proc").join(pid).exists()
        })
    };
    while building() {
        if std::time::Instant::now() >= deadline {
            println!(
                "cargo::warning=the UI's analysis wasm was still building after 15 minutes ({}): built without it",
                marker.display()
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
