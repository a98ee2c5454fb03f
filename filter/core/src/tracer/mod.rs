//! The per-VM tracer: built once from the config and the node metadata in
//! `on_configure`, shared by every stream of the VM. Its fields are private:
//! the adapter starts streams and finishes spans through [`Tracer::start`] and
//! [`Tracer::finish`] (the per-request code lives in the child module
//! [`stream`], which sees them), and runs the export and the strategy polls on
//! the root tick.

pub mod stream;

use stream::Stream;

use crate::config::{AttributeType, Config, ConfigError, Direction, FormatName};
use crate::export::{CallOutcome, ExportBuffer};
use crate::host::{Host, RootHost, StreamHost};
use crate::metrics::Counters;
use crate::metrics::COUNTERS;
use crate::operation::OperationNamer;
use crate::otlp::{self, Value};
use crate::propagation::Formats;
use crate::rng::Rng;
use crate::sampling::Sampler;
use meshtrace_proto::semconv;

/// A header-sourced custom tag.
#[derive(Debug, Clone)]
pub struct HeaderTag {
    pub header: String,
    pub tag: String,
    pub default: Option<String>,
    pub max_length: usize,
}

/// An Envoy-attribute-sourced custom tag (read at the end of the stream).
#[derive(Debug, Clone)]
pub struct AttributeTag {
    pub path: Vec<String>,
    pub tag: String,
    pub value_type: AttributeType,
    pub default: Option<String>,
    pub max_length: usize,
}

/// Resource identity of this workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub service_name: String,
    pub service_namespace: Option<String>,
    pub service_version: Option<String>,
    pub pod_name: Option<String>,
}

const SCOPE_NAME: &str = "meshtrace";

/// Types of well-known Envoy attributes (others are strings).
pub fn known_attribute_type(path: &str) -> AttributeType {
    match path {
        "connection.mtls" => AttributeType::Bool,
        "source.port"
        | "destination.port"
        | "upstream.port"
        | "response.code"
        | "connection.id"
        | "request.size"
        | "request.total_size"
        | "response.size"
        | "response.total_size"
        | "response.flags"
        | "upstream.request_attempt_count" => AttributeType::Int,
        _ => AttributeType::String,
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub struct Tracer {
    config: Config,
    identity: Identity,
    direction: Direction,
    inject_formats: Formats,
    force_header: Option<String>,
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// Pre-encoded span attributes that never change (literal, env, metadata tags).
    static_attrs: Vec<u8>,
    request_header_tags: Vec<HeaderTag>,
    response_header_tags: Vec<HeaderTag>,
    attribute_tags: Vec<AttributeTag>,
    namer: OperationNamer,
    sampler: Sampler,
    /// Shared-data key of this service's Envoy-wide rate-limit budget.
    budget_key: String,
    rng: Rng,
    buffer: ExportBuffer,
    reported: Counters,
    request_body: Vec<u8>,
    remote: Option<RemoteState>,
}

/// Polling state of remote sampling.
#[derive(Debug)]
struct RemoteState {
    cfg: crate::config::RemoteSamplingConfig,
    /// `path?service=...`, built once.
    path: String,
    next_poll_ns: u64,
    in_flight: Option<u32>,
}

fn string_property(host: &impl Host, path: &[&str]) -> Option<String> {
    host.property(path)
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

fn metadata(host: &impl Host, key: &str) -> Option<String> {
    string_property(host, &["xds", "node", "metadata", key])
}

fn label(host: &impl Host, key: &str) -> Option<String> {
    string_property(host, &["xds", "node", "metadata", "LABELS", key])
}

impl Tracer {
    /// Builds the tracer. Reads node metadata once (never the whole node: it is large).
    pub fn new(
        config: Config,
        host: &impl Host,
        env: &dyn Fn(&str) -> Option<String>,
        seed: u64,
    ) -> Result<Tracer, ConfigError> {
        let identity = Identity {
            service_name: config
                .service_name
                .clone()
                .or_else(|| label(host, "service.istio.io/canonical-name"))
                .or_else(|| label(host, "app"))
                .or_else(|| metadata(host, "WORKLOAD_NAME"))
                .or_else(|| string_property(host, &["xds", "node", "cluster"]))
                .unwrap_or_else(|| "unknown_service:envoy".into()),
            service_namespace: config
                .service_namespace
                .clone()
                .or_else(|| metadata(host, "NAMESPACE")),
            service_version: config
                .service_version
                .clone()
                .or_else(|| label(host, "service.istio.io/canonical-revision"))
                .or_else(|| label(host, "version")),
            pod_name: config.pod_name.clone().or_else(|| metadata(host, "NAME")),
        };
        let mut res = vec![(
            semconv::SERVICE_NAME.to_string(),
            identity.service_name.clone(),
        )];
        if let Some(ns) = &identity.service_namespace {
            res.push((semconv::SERVICE_NAMESPACE.into(), ns.clone()));
            res.push(("k8s.namespace.name".into(), ns.clone()));
        }
        if let Some(v) = &identity.service_version {
            res.push(("service.version".into(), v.clone()));
        }
        if let Some(p) = &identity.pod_name {
            res.push((semconv::K8S_POD_NAME.into(), p.clone()));
        }
        res.push(("telemetry.sdk.name".into(), "meshtrace".into()));
        res.push(("telemetry.sdk.language".into(), "rust".into()));
        res.push((
            "telemetry.sdk.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ));

        let mut static_attrs = Vec::new();
        let mut request_header_tags = Vec::new();
        let mut response_header_tags = Vec::new();
        let mut attribute_tags = Vec::new();
        for t in &config.custom_tags {
            let max_length = t.max_length.unwrap_or(config.max_tag_length);
            let fixed = if let Some(v) = &t.literal {
                Some(Some(v.clone()))
            } else if let Some(name) = &t.environment {
                Some(env(name))
            } else {
                t.metadata.as_ref().map(|key| metadata(host, key))
            };
            if let Some(value) = fixed {
                if let Some(v) = value.or_else(|| t.default.clone()) {
                    otlp::put_attr(
                        &mut static_attrs,
                        otlp::span_field::ATTRIBUTES,
                        &t.tag,
                        &Value::Str(truncate(&v, max_length)),
                    );
                }
                continue;
            }
            let header_tag = |h: &String| HeaderTag {
                header: h.clone(),
                tag: t.tag.clone(),
                default: t.default.clone(),
                max_length,
            };
            if let Some(h) = &t.request_header {
                request_header_tags.push(header_tag(h));
            } else if let Some(h) = &t.response_header {
                response_header_tags.push(header_tag(h));
            } else if let Some(a) = &t.attribute {
                attribute_tags.push(AttributeTag {
                    path: a.split('.').map(str::to_string).collect(),
                    tag: t.tag.clone(),
                    value_type: t.value_type.unwrap_or_else(|| known_attribute_type(a)),
                    default: t.default.clone(),
                    max_length,
                });
            }
        }

        let mut inject_formats = Formats::NONE;
        for f in &config.propagation.inject {
            inject_formats.insert(match f {
                FormatName::W3c => Formats::W3C,
                FormatName::B3 => Formats::B3_MULTI,
                FormatName::B3Single => Formats::B3_SINGLE,
                FormatName::Jaeger => Formats::JAEGER,
            });
        }
        let now = host.now_nanos();
        let sampler = Sampler::new(
            &config
                .sampling
                .strategies()
                .for_service(&identity.service_name),
            now,
        );
        Ok(Tracer {
            direction: config.direction,
            inject_formats,
            force_header: config.sampling.force_sample_header.clone(),
            resource: otlp::encode_resource(&res),
            scope: otlp::encode_scope(SCOPE_NAME, env!("CARGO_PKG_VERSION")),
            static_attrs,
            request_header_tags,
            response_header_tags,
            attribute_tags,
            namer: OperationNamer::new(&config.operations),
            budget_key: format!("meshtrace.ratelimit.{}", identity.service_name),
            sampler,
            rng: Rng::new(seed),
            buffer: ExportBuffer::new(&config.export),
            reported: Counters::default(),
            request_body: Vec::new(),
            remote: config.sampling.remote.clone().map(|cfg| RemoteState {
                path: crate::remote::query_path(&cfg.path, &identity.service_name),
                cfg,
                next_poll_ns: 0,
                in_flight: None,
            }),
            identity,
            config,
        })
    }

    /// Request headers arrived: extract, decide, inject; what is left to do for
    /// this stream. `end_of_stream`: the request has no body.
    pub fn start(&mut self, host: &mut impl StreamHost, end_of_stream: bool) -> Stream {
        Stream::on_request_headers(self, host, end_of_stream)
    }

    /// The stream is over: finish its span (if sampled) and buffer it.
    pub fn finish(&mut self, stream: Stream, host: &impl StreamHost) {
        stream.on_log(self, host);
    }

    /// This workload's `service.name`.
    pub fn service_name(&self) -> &str {
        &self.identity.service_name
    }

    /// Sends what is due. Called on the root tick.
    pub fn flush(&mut self, host: &mut impl RootHost) {
        let now = host.now_nanos();
        while let Some(batch) = self.buffer.next_batch(now) {
            otlp::encode_request(
                &self.resource,
                &self.scope,
                &batch.spans,
                &mut self.request_body,
            );
            let c = &self.config.collector;
            let headers = [
                (":method", "POST"),
                (":path", c.path.as_str()),
                (":authority", c.authority.as_str()),
                ("content-type", "application/x-protobuf"),
            ];
            match host.dispatch(&c.cluster, &headers, &self.request_body, c.timeout_ms) {
                Some(token) => self.buffer.dispatched(token, batch),
                None => {
                    self.buffer.dispatch_failed(batch, now);
                    break;
                }
            }
        }
    }

    /// Asks the collector for this service's strategy when a poll is due (root tick).
    pub fn poll_strategy(&mut self, host: &mut impl RootHost) {
        let Some(r) = &mut self.remote else { return };
        let now = host.now_nanos();
        if r.in_flight.is_some() || now < r.next_poll_ns {
            return;
        }
        r.next_poll_ns = now + r.cfg.poll_interval_ms * 1_000_000;
        let headers = [
            (":method", "GET"),
            (":path", r.path.as_str()),
            (":authority", r.cfg.authority.as_str()),
        ];
        match host.dispatch(&r.cfg.cluster, &headers, &[], r.cfg.timeout_ms) {
            Some(token) => r.in_flight = Some(token),
            None => self.buffer.counters.strategy_failures += 1,
        }
    }

    /// Whether `token` is the strategy poll (not an export).
    pub fn is_strategy_call(&self, token: u32) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|r| r.in_flight == Some(token))
    }

    /// The strategy poll answered. On any failure the strategy in force stays.
    pub fn strategy_response(
        &mut self,
        status: Option<u32>,
        body: &[u8],
        now_ns: u64,
    ) -> Result<(), String> {
        if let Some(r) = &mut self.remote {
            r.in_flight = None;
        }
        let result = match status {
            Some(200) => crate::remote::parse_strategy_response(body),
            Some(s) => Err(format!("collector answered {s}")),
            None => Err("no answer from the collector".into()),
        };
        match result {
            Ok(s) => {
                self.sampler = Sampler::new(&s, now_ns);
                self.buffer.counters.strategy_updates += 1;
                Ok(())
            }
            Err(e) => {
                self.buffer.counters.strategy_failures += 1;
                Err(e)
            }
        }
    }

    /// An export call finished.
    pub fn export_completed(&mut self, token: u32, outcome: CallOutcome, now_ns: u64) {
        self.buffer.completed(token, outcome, now_ns);
    }

    /// Counter increments since the last call, by stat name (for Envoy stats).
    pub fn counter_deltas(&mut self) -> Vec<(&'static str, u64)> {
        let now = self.buffer.counters;
        let out = COUNTERS
            .iter()
            .map(|(name, read)| (*name, read(&now) - read(&self.reported)))
            .filter(|(_, d)| *d > 0)
            .collect();
        self.reported = now;
        out
    }
}
