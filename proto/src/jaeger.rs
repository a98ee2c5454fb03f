//! Jaeger's remote sampling messages (`jaeger.api_v2`, `proto/jaeger/api_v2/sampling.proto`),
//! written out as prost types so that no protoc runs at build time. Field numbers and
//! names follow the .proto file; `tests/clients/sampling_grpc.py` compiles that file
//! with grpcio-tools and calls the collector, so a mismatch fails a test.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SamplingStrategyType {
    Probabilistic = 0,
    RateLimiting = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbabilisticSamplingStrategy {
    #[prost(double, tag = "1")]
    pub sampling_rate: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitingSamplingStrategy {
    #[prost(int32, tag = "1")]
    pub max_traces_per_second: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperationSamplingStrategy {
    #[prost(string, tag = "1")]
    pub operation: String,
    #[prost(message, optional, tag = "2")]
    pub probabilistic_sampling: Option<ProbabilisticSamplingStrategy>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PerOperationSamplingStrategies {
    #[prost(double, tag = "1")]
    pub default_sampling_probability: f64,
    #[prost(double, tag = "2")]
    pub default_lower_bound_traces_per_second: f64,
    #[prost(message, repeated, tag = "3")]
    pub per_operation_strategies: Vec<OperationSamplingStrategy>,
    #[prost(double, tag = "4")]
    pub default_upper_bound_traces_per_second: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingStrategyResponse {
    #[prost(enumeration = "SamplingStrategyType", tag = "1")]
    pub strategy_type: i32,
    #[prost(message, optional, tag = "2")]
    pub probabilistic_sampling: Option<ProbabilisticSamplingStrategy>,
    #[prost(message, optional, tag = "3")]
    pub rate_limiting_sampling: Option<RateLimitingSamplingStrategy>,
    #[prost(message, optional, tag = "4")]
    pub operation_sampling: Option<PerOperationSamplingStrategies>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingStrategyParameters {
    #[prost(string, tag = "1")]
    pub service_name: String,
}

impl From<&SamplingStrategyResponse> for crate::sampling_json::StrategyResponse {
    /// The answer in Jaeger's JSON shape (what `/api/sampling` serves).
    fn from(r: &SamplingStrategyResponse) -> Self {
        use crate::sampling_json as json;
        let probabilistic = |p: &Option<ProbabilisticSamplingStrategy>| json::Probabilistic {
            sampling_rate: p.as_ref().map_or(0.0, |x| x.sampling_rate),
        };
        let rate_limiting = r.strategy_type == SamplingStrategyType::RateLimiting as i32;
        json::StrategyResponse {
            strategy_type: if rate_limiting {
                json::StrategyKind::RateLimiting
            } else {
                json::StrategyKind::Probabilistic
            },
            probabilistic_sampling: (!rate_limiting)
                .then(|| probabilistic(&r.probabilistic_sampling)),
            rate_limiting_sampling: rate_limiting.then(|| json::RateLimiting {
                max_traces_per_second: f64::from(
                    r.rate_limiting_sampling
                        .as_ref()
                        .map_or(0, |x| x.max_traces_per_second),
                ),
            }),
            operation_sampling: r
                .operation_sampling
                .as_ref()
                .map(|o| json::OperationSampling {
                    default_sampling_probability: Some(o.default_sampling_probability),
                    default_lower_bound_traces_per_second: o.default_lower_bound_traces_per_second,
                    default_upper_bound_traces_per_second: o.default_upper_bound_traces_per_second,
                    per_operation_strategies: o
                        .per_operation_strategies
                        .iter()
                        .map(|s| json::OperationStrategy {
                            operation: s.operation.clone(),
                            probabilistic_sampling: probabilistic(&s.probabilistic_sampling),
                        })
                        .collect(),
                }),
        }
    }
}

/// Jaeger's span model and collector service (`proto/jaeger/api_v2/model.proto`,
/// `collector.proto`), the messages of `CollectorService/PostSpans`, mirrored by
/// hand as the sampling messages are; `tests/clients/jaeger_grpc.py` compiles
/// the .proto files and sends through them, so a mismatch fails a test.
/// `Timestamp` and `Duration` have `google.protobuf`'s two fields.
pub mod model {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ValueType {
        String = 0,
        Bool = 1,
        Int64 = 2,
        Float64 = 3,
        Binary = 4,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(enumeration = "ValueType", tag = "2")]
        pub v_type: i32,
        #[prost(string, tag = "3")]
        pub v_str: String,
        #[prost(bool, tag = "4")]
        pub v_bool: bool,
        #[prost(int64, tag = "5")]
        pub v_int64: i64,
        #[prost(double, tag = "6")]
        pub v_float64: f64,
        #[prost(bytes = "vec", tag = "7")]
        pub v_binary: Vec<u8>,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `google.protobuf.Duration`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Log {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(message, repeated, tag = "2")]
        pub fields: Vec<KeyValue>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum SpanRefType {
        ChildOf = 0,
        FollowsFrom = 1,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SpanRef {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(enumeration = "SpanRefType", tag = "3")]
        pub ref_type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Process {
        #[prost(string, tag = "1")]
        pub service_name: String,
        #[prost(message, repeated, tag = "2")]
        pub tags: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub operation_name: String,
        #[prost(message, repeated, tag = "4")]
        pub references: Vec<SpanRef>,
        #[prost(uint32, tag = "5")]
        pub flags: u32,
        #[prost(message, optional, tag = "6")]
        pub start_time: Option<Timestamp>,
        #[prost(message, optional, tag = "7")]
        pub duration: Option<Duration>,
        #[prost(message, repeated, tag = "8")]
        pub tags: Vec<KeyValue>,
        #[prost(message, repeated, tag = "9")]
        pub logs: Vec<Log>,
        /// The batch's process when unset.
        #[prost(message, optional, tag = "10")]
        pub process: Option<Process>,
        #[prost(string, tag = "11")]
        pub process_id: String,
        #[prost(string, repeated, tag = "12")]
        pub warnings: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Batch {
        #[prost(message, repeated, tag = "1")]
        pub spans: Vec<Span>,
        #[prost(message, optional, tag = "2")]
        pub process: Option<Process>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PostSpansRequest {
        #[prost(message, optional, tag = "1")]
        pub batch: Option<Batch>,
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct PostSpansResponse {}
}
