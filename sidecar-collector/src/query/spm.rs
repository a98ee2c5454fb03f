//! Jaeger's SPM endpoints (`/api/metrics/{latencies,calls,errors,minstep}`, what
//! the Jaeger UI's Monitor tab calls), answered from the collector's own
//! per-minute history: no Prometheus needed. Parameters and defaults as
//! Jaeger's query service parses them; errors in Jaeger's envelope.

use super::{bounds, error, json_response, pretty, QueryState};
use crate::metrics::spm::{compute, Measure, SpmQuery, MIN_STEP_MS};
use crate::model::kind_from_name;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::Query;
use meshtrace_proto::jaeger_json::Envelope;
use serde::Deserialize;

/// Jaeger's query parameters (every one optional but `service`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpmParams {
    #[serde(default)]
    service: Vec<String>,
    group_by_operation: Option<String>,
    end_ts: Option<String>,
    lookback: Option<String>,
    step: Option<String>,
    rate_per: Option<String>,
    #[serde(default)]
    span_kind: Vec<String>,
    quantile: Option<String>,
    /// meshtrace: count calls adjusted for sampling.
    adjusted: Option<String>,
    pretty_print: Option<String>,
}

fn parse_error(param: &str, msg: impl std::fmt::Display) -> String {
    format!("unable to parse param '{param}': {msg}")
}

/// A time (`endTs`) or a duration in ms, bounded ([`bounds`]); absent or empty: `default`.
fn millis(param: &str, v: &Option<String>, default: i64) -> Result<i64, String> {
    let parse = if param == "endTs" {
        bounds::epoch_ms
    } else {
        bounds::positive_ms
    };
    match v.as_deref() {
        None | Some("") => Ok(default),
        Some(v) => parse(param, v).map_err(|e| {
            // Jaeger's wording first, then which bound.
            let why = e
                .split_once(": ")
                .map_or(e.as_str(), |(_, w)| w)
                .to_string();
            parse_error(param, why)
        }),
    }
}

fn boolean(param: &str, v: &Option<String>) -> Result<bool, String> {
    match v.as_deref() {
        None | Some("") => Ok(false),
        Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
        Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(parse_error(
            param,
            format!("strconv.ParseBool: parsing {v:?}: invalid syntax"),
        )),
    }
}

/// Jaeger's parameters → a query (defaults: lookback 1h, step 5s, ratePer 10m,
/// spanKind server, endTs now).
pub fn parse(p: &SpmParams, now_ms: i64) -> Result<SpmQuery, String> {
    // Distinct names, in the order given (a repeated name is read once).
    let mut services: Vec<String> = Vec::new();
    for s in p.service.iter().filter(|s| !s.is_empty()) {
        if !services.contains(s) {
            if services.len() == crate::metrics::spm::MAX_SERVICES {
                return Err(parse_error(
                    "service",
                    format!(
                        "more than {} distinct services",
                        crate::metrics::spm::MAX_SERVICES
                    ),
                ));
            }
            services.push(s.clone());
        }
    }
    if services.is_empty() {
        return Err(parse_error(
            "service",
            "please provide at least one service name",
        ));
    }
    let span_kinds = if p.span_kind.is_empty() {
        vec![2]
    } else {
        let mut kinds: Vec<i32> = Vec::new();
        for k in &p.span_kind {
            let kind = kind_from_name(k)
                .or((k == "unspecified").then_some(0))
                .ok_or_else(|| parse_error("spanKind", format!("unsupported span kind: '{k}'")))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        kinds
    };
    let q = SpmQuery {
        services,
        group_by_operation: boolean("groupByOperation", &p.group_by_operation)?,
        span_kinds,
        end_ms: millis("endTs", &p.end_ts, now_ms.clamp(0, bounds::MAX_MS))?,
        lookback_ms: millis("lookback", &p.lookback, 3_600_000)?,
        step_ms: millis("step", &p.step, 5_000)?,
        rate_per_ms: millis("ratePer", &p.rate_per, 600_000)?,
        adjusted: boolean("adjusted", &p.adjusted)?,
    };
    q.check()?;
    Ok(q)
}

fn now_ms() -> i64 {
    super::now_us() / 1000
}

async fn answer(st: QueryState, p: SpmParams, measure: Result<Measure, String>) -> Response {
    let Some(metrics) = st.metrics.clone() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "metrics querying is currently disabled (metrics.enabled is false)",
        );
    };
    let now = now_ms();
    let (q, measure) = match parse(&p, now).and_then(|q| Ok((q, measure?))) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let pretty = pretty(&p.pretty_print);
    let hold = match st.budget.begin().await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let (from, to) = q.minutes();
    let family = hold
        .run(move |ctl| {
            let rows = metrics.history(&q.services, from, to, ctl)?;
            compute(
                &rows,
                &q,
                measure,
                &metrics.settings().bounds_ms,
                now as f64 / 1000.0,
                ctl,
            )
        })
        .await;
    match family {
        Ok(family) => json_response(StatusCode::OK, &family, pretty),
        Err(r) => r,
    }
}

/// `/api/metrics/latencies?quantile=Q&service=S…`
pub async fn latencies(State(st): State<QueryState>, Query(p): Query<SpmParams>) -> Response {
    let q = match p.quantile.as_deref() {
        None | Some("") => Err(parse_error("quantile", "a quantile in (0, 1] is required")),
        Some(v) => match v.trim().parse::<f64>() {
            // NaN fails both comparisons.
            Ok(q) if q > 0.0 && q <= 1.0 => Ok(Measure::Latency(q)),
            _ => Err(parse_error(
                "quantile",
                format!("{v:?} is not a quantile in (0, 1]"),
            )),
        },
    };
    answer(st, p, q).await
}

/// `/api/metrics/calls?service=S…`: calls per second.
pub async fn calls(State(st): State<QueryState>, Query(p): Query<SpmParams>) -> Response {
    answer(st, p, Ok(Measure::Calls)).await
}

/// `/api/metrics/errors?service=S…`: errors per call.
pub async fn errors(State(st): State<QueryState>, Query(p): Query<SpmParams>) -> Response {
    answer(st, p, Ok(Measure::Errors)).await
}

/// `/api/metrics/minstep`: the history's resolution, in milliseconds.
pub async fn minstep(State(st): State<QueryState>) -> Response {
    if st.metrics.is_none() {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "metrics querying is currently disabled (metrics.enabled is false)",
        );
    }
    json_response(StatusCode::OK, &Envelope::new(MIN_STEP_MS, 0), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> SpmParams {
        serde_html_form::from_str(q).unwrap()
    }

    #[test]
    fn jaegers_defaults_and_repeated_parameters() {
        let q = parse(&params("service=a&service=b"), 10_000_000).unwrap();
        assert_eq!(q.services, ["a", "b"]);
        assert_eq!(q.span_kinds, [2], "server spans by default");
        assert_eq!(
            (q.end_ms, q.lookback_ms, q.step_ms, q.rate_per_ms),
            (10_000_000, 3_600_000, 5_000, 600_000)
        );
        let q = parse(
            &params("service=a&spanKind=client&spanKind=server&groupByOperation=true&endTs=5000000&lookback=60000&step=1000&ratePer=60000"),
            0,
        )
        .unwrap();
        assert_eq!(q.span_kinds, [3, 2]);
        assert!(q.group_by_operation);
        assert_eq!(
            (q.end_ms, q.lookback_ms, q.step_ms, q.rate_per_ms),
            (5_000_000, 60_000, 1_000, 60_000)
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, param) in [
            ("", "'service'"),
            ("service=a&spanKind=sideways", "'spanKind'"),
            ("service=a&endTs=yesterday", "'endTs'"),
            ("service=a&lookback=1h", "'lookback'"),
            ("service=a&step=0", "'step'"),
            ("service=a&groupByOperation=maybe", "'groupByOperation'"),
            ("service=a&ratePer=-5", "'ratePer'"),
        ] {
            let e = parse(&params(query), 0).unwrap_err();
            assert!(e.contains(param), "{query}: {e}");
        }
    }
}
