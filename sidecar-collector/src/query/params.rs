//! `/api/traces` parameters: read by axum-extra's `Query` (repeated
//! `traceID=` and `tag=` included), validated here with errors that name the
//! parameter.

use super::duration::parse_go_duration_us;
use crate::store::TraceQuery;
use serde::Deserialize;

/// Jaeger's default search limit.
pub const DEFAULT_LIMIT: usize = 100;

/// What `/api/traces` may carry. Values stay text so that errors name the parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchParams {
    #[serde(rename = "traceID", default)]
    pub trace_id: Vec<String>,
    pub service: Option<String>,
    pub operation: Option<String>,
    /// A JSON object of tags (Jaeger UI).
    pub tags: Option<String>,
    /// `key:value`, repeated (Jaeger's HTTP API, Grafana).
    #[serde(default)]
    pub tag: Vec<String>,
    /// How tags combine: `and` (Jaeger's rule: every tag on one span) or `or`
    /// (any tag): meshtrace's extension.
    pub tags_op: Option<String>,
    /// Microseconds since the epoch.
    pub start: Option<String>,
    pub end: Option<String>,
    pub lookback: Option<String>,
    pub min_duration: Option<String>,
    pub max_duration: Option<String>,
    pub limit: Option<String>,
    pub pretty_print: Option<String>,
}

/// What `/api/traces` asks for.
#[derive(Debug)]
pub enum Search {
    /// Repeated `traceID`.
    Ids(Vec<[u8; 16]>),
    Query(TraceQuery),
}

pub fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    meshtrace_proto::TraceId::from_hex_padded(s.as_bytes())
        .ok()
        .map(|t| t.0)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|v| !v.is_empty())
}

/// `and` (default) or `or`: whether tags combine with OR.
pub fn tags_op(v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("and") => Ok(false),
        Some("or") => Ok(true),
        Some(other) => Err(format!("{other:?} is neither and nor or")),
    }
}

/// Validates `/api/traces` parameters; the error names the parameter.
pub fn parse_search(p: &SearchParams, now_us: i64) -> Result<Search, String> {
    if !p.trace_id.is_empty() {
        return p
            .trace_id
            .iter()
            .map(|id| {
                parse_trace_id(id).ok_or(format!("parameter 'traceID': {id:?} is not a trace id"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Search::Ids);
    }
    let service = non_empty(&p.service).ok_or("parameter 'service' is required (or traceID)")?;
    let num = |k: &str, v: &Option<String>, default: i64| -> Result<i64, String> {
        non_empty(v).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("parameter '{k}': {v:?} is not an integer"))
        })
    };
    let dur = |k: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        non_empty(v)
            .map(|v| {
                parse_go_duration_us(v).ok_or(format!(
                    "parameter '{k}': {v:?} is not a duration like 100ms, 1.5s or 1m30s"
                ))
            })
            .transpose()
    };
    let end_us = num("end", &p.end, now_us)?;
    let lookback = match non_empty(&p.lookback) {
        None | Some("custom") => 3_600_000_000,
        Some(l) => parse_go_duration_us(l)
            .ok_or(format!("parameter 'lookback': {l:?} is not a duration"))?,
    };
    let start_us = num("start", &p.start, end_us.saturating_sub(lookback))?;
    let limit = match non_empty(&p.limit) {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(0) => return Err("parameter 'limit' must be at least 1".into()),
            Ok(n) => n,
            Err(_) => {
                return Err(format!(
                    "parameter 'limit': {v:?} is not a positive integer"
                ))
            }
        },
    };
    let mut tags = Vec::new();
    if let Some(t) = non_empty(&p.tags) {
        let m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(t)
            .map_err(|e| format!("parameter 'tags' must be a JSON object: {e}"))?;
        for (k, v) in m {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            tags.push((k, v));
        }
    }
    for v in &p.tag {
        let (k, val) = v
            .split_once(':')
            .ok_or(format!("parameter 'tag': {v:?} must be key:value"))?;
        tags.push((k.to_string(), val.to_string()));
    }
    let tags_any =
        tags_op(non_empty(&p.tags_op)).map_err(|e| format!("parameter 'tagsOp': {e}"))?;
    Ok(Search::Query(TraceQuery {
        service: service.to_string(),
        operation: non_empty(&p.operation).map(str::to_string),
        tags,
        tags_any,
        start_us,
        end_us,
        min_duration_us: dur("minDuration", &p.min_duration)?,
        max_duration_us: dur("maxDuration", &p.max_duration)?,
        limit,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Search, String> {
        let p: SearchParams = serde_html_form::from_str(s).unwrap();
        parse_search(&p, 10_000_000_000)
    }

    #[test]
    fn search_parameters() {
        let bad = [
            ("", "service"),
            ("service=a&minDuration=fast", "minDuration"),
            ("service=a&maxDuration=1x", "maxDuration"),
            ("service=a&tags=%7Bbroken", "tags"),
            ("service=a&tag=k:v&tagsOp=xor", "tagsOp"),
            ("service=a&tag=nocolon", "tag"),
            ("service=a&limit=ten", "limit"),
            ("service=a&limit=0", "limit"),
            ("service=a&limit=-5", "limit"),
            ("service=a&start=yesterday", "start"),
            ("service=a&lookback=forever", "lookback"),
            ("traceID=xyz", "traceID"),
        ];
        for (s, name) in bad {
            let e = q(s).unwrap_err();
            assert!(e.contains(name), "{s}: {e}");
        }
        let Ok(Search::Query(t)) = q("service=a&operation=op&tag=k:v&tags=%7B%22x%22%3A%22y%22%7D&minDuration=1m30s&maxDuration=1.5h&lookback=2h&limit=3") else {
            panic!("valid query rejected");
        };
        assert_eq!(t.operation.as_deref(), Some("op"));
        assert_eq!(
            t.tags,
            vec![("x".to_string(), "y".to_string()), ("k".into(), "v".into())]
        );
        assert_eq!(t.min_duration_us, Some(90_000_000), "Go syntax: 1m30s");
        assert_eq!(t.max_duration_us, Some(5_400_000_000), "Go syntax: 1.5h");
        assert_eq!(t.end_us - t.start_us, 7_200_000_000);
        assert_eq!(t.limit, 3);
        let Ok(Search::Query(d)) = q("service=my+svc&minDuration=&limit=") else {
            panic!("empty values are absent values (Grafana sends them)");
        };
        assert_eq!(d.service, "my svc");
        assert_eq!(d.limit, DEFAULT_LIMIT, "Jaeger's default limit");
        assert_eq!(d.min_duration_us, None);
        // Extreme bounds saturate instead of overflowing (a panic in debug builds before).
        for extreme in [
            "service=a&end=-9223372036854775808",
            "service=a&end=-9223372036854775808&lookback=2h",
            "service=a&start=9223372036854775807&end=-9223372036854775808",
        ] {
            assert!(matches!(q(extreme), Ok(Search::Query(_))), "{extreme}");
        }
        let Ok(Search::Ids(ids)) = q("traceID=abc&traceID=4bf92f3577b34da6a3ce929d0e0e4736") else {
            panic!("ids");
        };
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn repeated_tags_decode() {
        let p: SearchParams = serde_html_form::from_str("service=s&tag=a%3Ab&tag=c:d").unwrap();
        assert_eq!(p.tag, vec!["a:b", "c:d"]);
    }
}
