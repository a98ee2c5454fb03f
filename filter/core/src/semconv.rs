//! The attribute names the filter writes on a span, declared once: OpenTelemetry's
//! HTTP, network and RPC semantic conventions, Envoy's own, and the ones shared with
//! the collector (re-exported from `meshtrace_proto::semconv`).

pub use meshtrace_proto::semconv::{SAMPLER_PARAM, SAMPLER_TYPE};

pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const URL_PATH: &str = "url.path";
pub const URL_SCHEME: &str = "url.scheme";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
pub const HTTP_REQUEST_HEADER_X_REQUEST_ID: &str = "http.request.header.x-request-id";
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
pub const NETWORK_PEER_PORT: &str = "network.peer.port";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const HTTP_REQUEST_BODY_SIZE: &str = "http.request.body.size";
pub const HTTP_RESPONSE_BODY_SIZE: &str = "http.response.body.size";
pub const ENVOY_UPSTREAM_CLUSTER: &str = "envoy.upstream.cluster";
pub const ENVOY_UPSTREAM_HOST: &str = "envoy.upstream.host";
pub const ENVOY_RESPONSE_FLAGS: &str = "envoy.response_flags";
/// Jaeger clients' debug header, and the tag its value is recorded as.
pub const JAEGER_DEBUG_ID: &str = "jaeger-debug-id";
