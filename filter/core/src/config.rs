//! The filter's configuration: JSON in the plugin configuration
//! (`google.protobuf.StringValue`). Parsed and validated once per VM in
//! `on_configure`; every error names the field.

use meshtrace_proto::strategy::{
    DefaultStrategy, OperationStrategy, ServiceStrategy, StrategiesFile, StrategyError,
    StrategyType,
};
use serde::Deserialize;

/// Direction of the listener the filter runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From Envoy's `xds.listener_direction` (INBOUND → SERVER span, else CLIENT).
    #[default]
    Auto,
    /// SERVER spans.
    Inbound,
    /// CLIENT spans.
    Outbound,
}

/// Propagation formats, as config strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatName {
    W3c,
    B3,
    B3Single,
    Jaeger,
}

/// The whole configuration. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `service.name`; default from node metadata (canonical name label, `app`, workload name).
    pub service_name: Option<String>,
    /// `service.namespace`; default node metadata `NAMESPACE`.
    pub service_namespace: Option<String>,
    /// `service.version`; default labels `service.istio.io/canonical-revision`, `version`.
    pub service_version: Option<String>,
    /// `k8s.pod.name`; default node metadata `NAME`.
    pub pod_name: Option<String>,
    /// SERVER or CLIENT spans: `auto` (from the listener), `inbound`, `outbound`.
    pub direction: Direction,
    /// Where spans go.
    pub collector: CollectorConfig,
    /// Batching and buffering.
    pub export: ExportConfig,
    /// Header formats.
    pub propagation: PropagationConfig,
    /// Static sampling: Jaeger strategies file format, plus force header.
    pub sampling: SamplingConfig,
    /// Operation naming.
    pub operations: OperationsConfig,
    /// Extra span attributes.
    pub custom_tags: Vec<CustomTagConfig>,
    /// Max length of any recorded header or tag value (longer values are truncated).
    pub max_tag_length: usize,
    /// Additional headers never recorded (on top of the built-in list).
    pub sensitive_headers: Vec<String>,
    /// Headers from the sensitive lists that may still be recorded.
    pub allow_sensitive_headers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            service_name: None,
            service_namespace: None,
            service_version: None,
            pod_name: None,
            direction: Direction::Auto,
            collector: CollectorConfig::default(),
            export: ExportConfig::default(),
            propagation: PropagationConfig::default(),
            sampling: SamplingConfig::default(),
            operations: OperationsConfig::default(),
            custom_tags: Vec::new(),
            max_tag_length: 256,
            sensitive_headers: Vec::new(),
            allow_sensitive_headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Envoy cluster of the collector (OTLP/HTTP).
    pub cluster: String,
    /// `:authority` of export calls.
    pub authority: String,
    /// OTLP/HTTP path.
    pub path: String,
    /// Timeout of one export call.
    pub timeout_ms: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            cluster: "meshtrace-collector".into(),
            authority: "meshtrace-collector".into(),
            path: "/v1/traces".into(),
            timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// A batch is sent once it holds this many spans...
    pub max_batch_spans: usize,
    /// ...or this many bytes...
    pub max_batch_bytes: usize,
    /// ...or its oldest span is this old.
    pub flush_interval_ms: u64,
    /// How often the VM checks the buffer (the root context's tick).
    pub tick_ms: u64,
    /// Bound on buffered (unsent) span bytes per VM; beyond it new spans are dropped and counted.
    pub max_buffer_bytes: usize,
    /// Export calls in flight at once per VM.
    pub max_in_flight: usize,
    /// First back-off after a failed call; doubles up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            max_batch_spans: 512,
            max_batch_bytes: 512 * 1024,
            flush_interval_ms: 1_000,
            tick_ms: 100,
            max_buffer_bytes: 4 * 1024 * 1024,
            max_in_flight: 4,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PropagationConfig {
    /// Formats always written upstream.
    pub inject: Vec<FormatName>,
    /// Also write back every format that arrived.
    pub inject_incoming_formats: bool,
    /// When to return W3C Trace Context Level 2's `traceresponse` header.
    pub traceresponse: TraceResponseMode,
    /// In which form the response carries this hop's context: the
    /// `traceresponse` header, the `Server-Timing: traceparent;desc="…"`
    /// entry of the current Level 2 draft (which a browser page can read), or both.
    pub response_header: ResponseHeaderForm,
}

/// The form of the response's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ResponseHeaderForm {
    #[serde(rename = "traceresponse")]
    Traceresponse,
    #[serde(rename = "server-timing")]
    ServerTiming,
    #[serde(rename = "both")]
    Both,
}

impl ResponseHeaderForm {
    pub fn traceresponse(self) -> bool {
        self != ResponseHeaderForm::ServerTiming
    }
    pub fn server_timing(self) -> bool {
        self != ResponseHeaderForm::Traceresponse
    }
}

/// Which responses carry `traceresponse: 00-<trace id>-<this hop's span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceResponseMode {
    /// Requests that arrived without a trace context: they come from outside the
    /// mesh (every hop inside it carries one), and their caller cannot otherwise
    /// learn the trace id. Mesh-internal hops answer without it.
    Roots,
    /// Every response.
    Always,
    Never,
}

impl Default for PropagationConfig {
    fn default() -> Self {
        Self {
            inject: vec![FormatName::W3c],
            inject_incoming_formats: true,
            traceresponse: TraceResponseMode::Roots,
            // Server-Timing too costs a second response header on every answer to a
            // request from outside the mesh: +5,700 instructions per request in the
            // wasm build (its 1% ratio to Envoy's tracer 1.77 → 2.05), +2,900 native
            // (scripts/bench/filter --instructions): opt in.
            response_header: ResponseHeaderForm::Traceresponse,
        }
    }
}

/// The default force header: survives Envoy's edge, unlike `x-envoy-force-trace`.
pub const DEFAULT_FORCE_HEADER: &str = "x-meshtrace-force-trace";

/// Static sampling: the keys of Jaeger's strategies file, plus a force header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// A request with this header (any value) is always sampled. Not `x-envoy-*`:
    /// Envoy removes those from requests arriving from outside the mesh. Jaeger's
    /// `jaeger-debug-id` always forces sampling too (and is recorded as a tag).
    pub force_sample_header: Option<String>,
    pub default_strategy: Option<DefaultStrategy>,
    pub service_strategies: Vec<ServiceStrategy>,
    pub operation_strategies: Vec<OperationStrategy>,
    /// Poll this service's strategy from the collector; absent keeps the static strategies only.
    pub remote: Option<RemoteSamplingConfig>,
    /// When a sampled parent carries OpenTelemetry's `ot=th:` threshold (and random
    /// trace ids), apply this sidecar's own probability too if it is lower: it keeps
    /// a subset of what upstream kept (consistent probability sampling), at the
    /// price of traces that stop at this hop. Off: a sampled parent is always honoured.
    pub consistent_downstream: bool,
}

/// Where the filter polls its strategy (Jaeger's `/api/sampling?service=S`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteSamplingConfig {
    /// Envoy cluster of the collector's strategies port (5778).
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub poll_interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for RemoteSamplingConfig {
    fn default() -> Self {
        Self {
            cluster: "meshtrace-sampling".into(),
            authority: "meshtrace-collector".into(),
            path: "/api/sampling".into(),
            poll_interval_ms: 10_000,
            timeout_ms: 2_000,
        }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            force_sample_header: Some(DEFAULT_FORCE_HEADER.into()),
            default_strategy: Some(DefaultStrategy {
                kind: StrategyType::Probabilistic,
                param: 1.0,
                operation_strategies: Vec::new(),
            }),
            service_strategies: Vec::new(),
            operation_strategies: Vec::new(),
            remote: None,
            consistent_downstream: false,
        }
    }
}

impl SamplingConfig {
    /// The strategies-file part.
    pub fn strategies(&self) -> StrategiesFile {
        StrategiesFile {
            default_strategy: self.default_strategy.clone(),
            service_strategies: self.service_strategies.clone(),
            operation_strategies: self.operation_strategies.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsConfig {
    /// Path templates tried in order before the default naming.
    pub rules: Vec<OperationRule>,
    /// Replaces high-cardinality path segments (numbers, UUIDs, long hex, long tokens).
    pub placeholder: String,
    /// Distinct operation names per VM; later new names become `overflow_name`.
    pub max_operations: usize,
    pub overflow_name: String,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            placeholder: "{id}".into(),
            max_operations: 1_000,
            overflow_name: "overflow".into(),
        }
    }
}

/// `{"method": "GET", "path": "/users/{id}/orders", "name": "list orders"}`.
/// In `path`, `{anything}` or `*` matches one segment, a final `**` the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRule {
    /// Method to match; absent matches any.
    pub method: Option<String>,
    pub path: String,
    /// Operation name; default `METHOD path-template`.
    pub name: Option<String>,
}

/// Kind of an Envoy attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributeType {
    String,
    Int,
    Bool,
}

/// A custom tag. Exactly one source key must be set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTagConfig {
    /// Attribute name on the span.
    pub tag: String,
    pub literal: Option<String>,
    /// Environment variable of the VM (`vm_config.environment_variables`).
    pub environment: Option<String>,
    pub request_header: Option<String>,
    pub response_header: Option<String>,
    /// Key of Istio node metadata (`xds.node.metadata.KEY`).
    pub metadata: Option<String>,
    /// Envoy attribute path, dot-separated (`connection.mtls`, `source.principal`).
    pub attribute: Option<String>,
    /// Value type of `attribute`; default from a table of known attributes, else string.
    #[serde(rename = "type")]
    pub value_type: Option<AttributeType>,
    /// Used when the source has no value.
    pub default: Option<String>,
    /// Truncation length for this tag (default `max_tag_length`).
    pub max_length: Option<usize>,
}

/// Headers never recorded unless in `allow_sensitive_headers` (the collector
/// redacts attributes by the same list).
pub use meshtrace_proto::semconv::SENSITIVE_HEADERS;

/// A configuration error naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid meshtrace config: {path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl From<StrategyError> for ConfigError {
    fn from(e: StrategyError) -> Self {
        ConfigError {
            path: e.path,
            message: e.message,
        }
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

impl Config {
    /// Parses Envoy's plugin configuration bytes: JSON text (a `StringValue`, as Istio's
    /// `WasmPlugin` sends it) or a protobuf `google.protobuf.Struct` (an `EnvoyFilter`
    /// writing the configuration as YAML). Empty means all defaults.
    pub fn from_plugin_bytes(raw: &[u8]) -> Result<Config, ConfigError> {
        match raw.iter().find(|c| !c.is_ascii_whitespace()) {
            None | Some(b'{') => Config::from_json(raw),
            Some(_) => {
                let value = crate::pbstruct::struct_to_json(raw).map_err(|e| {
                    err(
                        "(root)",
                        format!("the configuration is neither a JSON object nor a {e}"),
                    )
                })?;
                Config::from_json(value.to_string().as_bytes())
            }
        }
    }

    /// Parses and validates. An empty configuration means all defaults.
    pub fn from_json(text: &[u8]) -> Result<Config, ConfigError> {
        let trimmed = text.iter().all(|c| c.is_ascii_whitespace());
        let config: Config = if trimmed {
            Config::default()
        } else if text.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{') {
            return Err(err("(root)", "the configuration must be a JSON object"));
        } else {
            let de = &mut serde_json::Deserializer::from_slice(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                err(
                    if path == "." { "(root)".into() } else { path },
                    inner.to_string(),
                )
            })?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |path: &str, v: u64| {
            if v == 0 {
                Err(err(path, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("collector.timeout_ms", self.collector.timeout_ms)?;
        if self.collector.cluster.is_empty() {
            return Err(err("collector.cluster", "must not be empty"));
        }
        if !self.collector.path.starts_with('/') {
            return Err(err("collector.path", "must start with '/'"));
        }
        let e = &self.export;
        positive("export.max_batch_spans", e.max_batch_spans as u64)?;
        positive("export.max_batch_bytes", e.max_batch_bytes as u64)?;
        positive("export.flush_interval_ms", e.flush_interval_ms)?;
        positive("export.tick_ms", e.tick_ms)?;
        positive("export.max_in_flight", e.max_in_flight as u64)?;
        positive("export.backoff_initial_ms", e.backoff_initial_ms)?;
        if e.max_buffer_bytes < e.max_batch_bytes {
            return Err(err(
                "export.max_buffer_bytes",
                format!(
                    "{} is smaller than export.max_batch_bytes ({})",
                    e.max_buffer_bytes, e.max_batch_bytes
                ),
            ));
        }
        if e.backoff_max_ms < e.backoff_initial_ms {
            return Err(err(
                "export.backoff_max_ms",
                "must be >= export.backoff_initial_ms",
            ));
        }
        self.sampling.strategies().validate("sampling")?;
        if let Some(r) = &self.sampling.remote {
            if r.cluster.is_empty() {
                return Err(err("sampling.remote.cluster", "must not be empty"));
            }
            if !r.path.starts_with('/') {
                return Err(err("sampling.remote.path", "must start with '/'"));
            }
            positive("sampling.remote.poll_interval_ms", r.poll_interval_ms)?;
            positive("sampling.remote.timeout_ms", r.timeout_ms)?;
        }
        if let Some(h) = &self.sampling.force_sample_header {
            check_header_name("sampling.force_sample_header", h)?;
            if h.starts_with("x-envoy-") {
                return Err(err(
                    "sampling.force_sample_header",
                    format!(
                        "{h:?}: Envoy removes x-envoy-* headers from requests arriving from outside \
                         the mesh, so a request from there could never force a trace; use another \
                         name (the default is {DEFAULT_FORCE_HEADER:?}; jaeger-debug-id works too)"
                    ),
                ));
            }
        }
        positive(
            "operations.max_operations",
            self.operations.max_operations as u64,
        )?;
        for (i, r) in self.operations.rules.iter().enumerate() {
            if !r.path.starts_with('/') {
                return Err(err(
                    format!("operations.rules[{i}].path"),
                    "must start with '/'",
                ));
            }
            if let Some(pos) = r.path.find("**") {
                if pos + 2 != r.path.len() {
                    return Err(err(
                        format!("operations.rules[{i}].path"),
                        "'**' may only end the template",
                    ));
                }
            }
        }
        positive("max_tag_length", self.max_tag_length as u64)?;
        for (i, h) in self.sensitive_headers.iter().enumerate() {
            check_header_name(&format!("sensitive_headers[{i}]"), h)?;
        }
        for (i, t) in self.custom_tags.iter().enumerate() {
            self.validate_tag(i, t)?;
        }
        Ok(())
    }

    fn validate_tag(&self, i: usize, t: &CustomTagConfig) -> Result<(), ConfigError> {
        let p = format!("custom_tags[{i}]");
        if t.tag.is_empty() {
            return Err(err(format!("{p}.tag"), "must not be empty"));
        }
        let sources = [
            t.literal.is_some(),
            t.environment.is_some(),
            t.request_header.is_some(),
            t.response_header.is_some(),
            t.metadata.is_some(),
            t.attribute.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources != 1 {
            return Err(err(
                p,
                format!("tag {:?} needs exactly one of literal, environment, request_header, response_header, metadata, attribute (found {sources})", t.tag),
            ));
        }
        if t.max_length == Some(0) {
            return Err(err(format!("{p}.max_length"), "must be greater than 0"));
        }
        if t.value_type.is_some() && t.attribute.is_none() {
            return Err(err(format!("{p}.type"), "only applies to an attribute tag"));
        }
        for (key, header) in [
            ("request_header", &t.request_header),
            ("response_header", &t.response_header),
        ] {
            if let Some(h) = header {
                check_header_name(&format!("{p}.{key}"), h)?;
                if self.is_sensitive(h) {
                    return Err(err(
                        format!("{p}.{key}"),
                        format!("{h:?} is a sensitive header and is never recorded; list it in allow_sensitive_headers to record it anyway"),
                    ));
                }
            }
        }
        if let Some(a) = &t.attribute {
            if a.is_empty() || a.split('.').any(str::is_empty) {
                return Err(err(
                    format!("{p}.attribute"),
                    format!("{a:?} is not a dot-separated attribute path"),
                ));
            }
        }
        Ok(())
    }

    /// Whether header `name` must not be recorded.
    pub fn is_sensitive(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let listed = SENSITIVE_HEADERS.contains(&name.as_str())
            || self
                .sensitive_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name));
        listed
            && !self
                .allow_sensitive_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name))
    }
}

fn check_header_name(path: &str, h: &str) -> Result<(), ConfigError> {
    let ok = !h.is_empty()
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        && !h.bytes().any(|c| c.is_ascii_uppercase());
    if ok || (h.starts_with(':') && h.len() > 1) {
        Ok(())
    } else {
        Err(err(
            path,
            format!("{h:?} is not a lowercase HTTP header name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_defaults() {
        let c = Config::from_json(b"").unwrap();
        assert_eq!(c.collector.cluster, "meshtrace-collector");
        let c = Config::from_json(b"{}").unwrap();
        assert_eq!(c.export.max_batch_spans, 512);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"colector":{}}"#,
                "unknown field `colector`",
                "typo at root",
            ),
            (
                r#"{"export":{"max_batch_spans":"ten"}}"#,
                "export.max_batch_spans",
                "wrong type",
            ),
            (
                r#"{"export":{"max_batch_spans":0}}"#,
                "export.max_batch_spans",
                "zero",
            ),
            (
                r#"{"export":{"max_buffer_bytes":10}}"#,
                "export.max_buffer_bytes",
                "buffer below batch",
            ),
            (
                r#"{"collector":{"path":"v1/traces"}}"#,
                "collector.path",
                "relative path",
            ),
            (
                r#"{"sampling":{"service_strategies":[{"service":"a","type":"probabilistic","param":10}]}}"#,
                "sampling.service_strategies[0]",
                "percentage param",
            ),
            (
                r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":2}}}"#,
                "sampling.default_strategy.param",
                "param 2",
            ),
            (
                r#"{"custom_tags":[{"tag":"a"}]}"#,
                "custom_tags[0]",
                "no source",
            ),
            (
                r#"{"custom_tags":[{"tag":"a","literal":"x","environment":"Y"}]}"#,
                "custom_tags[0]",
                "two sources",
            ),
            (
                r#"{"custom_tags":[{"tag":"a","request_header":"authorization"}]}"#,
                "custom_tags[0].request_header",
                "sensitive",
            ),
            (
                r#"{"custom_tags":[{"tag":"a","request_header":"X-User"}]}"#,
                "custom_tags[0].request_header",
                "uppercase header",
            ),
            (
                r#"{"custom_tags":[{"tag":"a","literal":"x","type":"int"}]}"#,
                "custom_tags[0].type",
                "type without attribute",
            ),
            (
                r#"{"custom_tags":[{"tag":"a","attribute":"source..address"}]}"#,
                "custom_tags[0].attribute",
                "empty segment",
            ),
            (
                r#"{"operations":{"rules":[{"path":"/a/**/b"}]}}"#,
                "operations.rules[0].path",
                "inner **",
            ),
            (
                r#"{"sampling":{"default_strategy":{"type":"probabilistic","param":0.5},"sevice_strategies":[]}}"#,
                "sampling.sevice_strategies",
                "typo in sampling",
            ),
            (r#"{"direction":"sideways"}"#, "direction", "bad enum"),
            (
                r#"{"sampling":{"force_sample_header":"x-envoy-force-trace"}}"#,
                "sampling.force_sample_header",
                "Envoy removes x-envoy-* headers",
            ),
            (
                r#"{"propagation":{"traceresponse":"sometimes"}}"#,
                "propagation.traceresponse",
                "unknown variant",
            ),
            (r#"[1,2]"#, "(root)", "not an object"),
            (r#"{"#, "EOF", "truncated json"),
            (
                r#"{"max_tag_length":1,}"#,
                "trailing comma",
                "trailing comma",
            ),
        ];
        for (json, want, why) in cases {
            let e = Config::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{why}: {e}");
        }
    }

    #[test]
    fn sensitive_can_be_allowed() {
        let c = Config::from_json(
            br#"{"custom_tags":[{"tag":"auth","request_header":"authorization"}],"allow_sensitive_headers":["authorization"]}"#,
        )
        .unwrap();
        assert!(!c.is_sensitive("authorization"));
        assert!(c.is_sensitive("cookie"));
        let c = Config::from_json(br#"{"sensitive_headers":["x-secret"]}"#).unwrap();
        assert!(c.is_sensitive("X-Secret"));
    }
}
