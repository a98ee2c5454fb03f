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
