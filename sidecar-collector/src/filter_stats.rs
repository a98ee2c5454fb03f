//! Sidecar mode: the filter's counters from the pod's Envoy, re-exported with
//! help text. Envoy's `/stats/prometheus` has no `# HELP` lines, so a scrape of
//! Envoy alone tells Prometheus nothing of what `meshtrace_spans_dropped` means;
//! the sidecar collector, beside the same Envoy, polls its admin endpoint
//! (`sidecar.envoy_admin`) and exports each as `meshtrace_filter_<name>_total`
//! with the help declared in `meshtrace_proto::filter_stats`. Imports nothing
//! from the crate.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use meshtrace_proto::filter_stats::{COUNTERS, PREFIX};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The last values read, by `COUNTERS` index; `None` before the first good poll.
#[derive(Debug, Default)]
struct Values {
    counters: Option<Vec<u64>>,
    up: bool,
}

/// The poller's results, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FilterStats(Arc<Mutex<Values>>);

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("connecting to Envoy's admin at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("asking Envoy's admin at {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("Envoy's admin at {addr} answered {status}")]
    Status {
        addr: String,
        status: hyper::StatusCode,
    },
    #[error("Envoy's admin at {addr} answered what is not its stats JSON: {source}")]
    Json {
        addr: String,
        source: serde_json::Error,
    },
    #[error("Envoy's admin at {addr} did not answer within 5 s")]
    Timeout { addr: String },
    #[error("building the request to Envoy's admin: {0}")]
    Build(#[from] hyper::http::Error),
}

#[derive(serde::Deserialize)]
struct StatsJson {
    #[serde(default)]
    stats: Vec<Stat>,
}

#[derive(serde::Deserialize)]
struct Stat {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: Option<u64>,
}

/// The filter's counters in an answer of `/stats?format=json` (absent ones are 0:
/// Envoy defines them when the filter starts).
pub fn parse(body: &[u8]) -> Result<Vec<u64>, serde_json::Error> {
    let stats: StatsJson = serde_json::from_slice(body)?;
    Ok(COUNTERS
        .iter()
        .map(|(name, _)| {
            stats
                .stats
                .iter()
                .find(|s| {
                    s.name
                        .strip_prefix("wasmcustom.")
                        .and_then(|n| n.strip_prefix(PREFIX))
                        == Some(name)
                })
                .and_then(|s| s.value)
                .unwrap_or(0)
        })
        .collect())
}

async fn get(addr: &str) -> Result<Vec<u64>, PollError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| PollError::Connect {
            addr: addr.into(),
            source,
        })?;
    let http = |source| PollError::Http {
        addr: addr.into(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let req = hyper::Request::get(
        "/stats?format=json&usedonly=false&filter=%5Ewasmcustom%5C.meshtrace%5C.",
    )
    .header(hyper::header::HOST, "envoy-admin")
    .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(PollError::Status {
            addr: addr.into(),
            status: resp.status(),
        });
    }
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    parse(&body).map_err(|source| PollError::Json {
        addr: addr.into(),
        source,
    })
}

impl FilterStats {
    /// Polls `addr` (host:port of Envoy's admin) every `every`, until dropped.
    pub fn spawn(&self, addr: String, every: Duration) -> tokio::task::JoinHandle<()> {
        let values = self.0.clone();
        tokio::spawn(async move {
            let mut logged = false;
            loop {
                let got = tokio::time::timeout(Duration::from_secs(5), get(&addr))
                    .await
                    .unwrap_or_else(|_| Err(PollError::Timeout { addr: addr.clone() }));
                let failed = {
                    let mut v = values.lock().unwrap_or_else(|e| e.into_inner());
                    match got {
                        Ok(c) => {
                            v.counters = Some(c);
                            v.up = true;
                            None
                        }
                        Err(error) => {
                            v.up = false;
                            Some(error)
                        }
                    }
                };
                match failed {
                    None => logged = false,
                    // Once per outage: Envoy starts after the collector in a pod.
                    Some(error) if !logged => {
                        tracing::warn!(%error, "cannot read the filter's stats from Envoy");
                        logged = true;
                    }
                    Some(_) => {}
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}

impl Collector for FilterStats {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut m = enc.encode_descriptor(
                "meshtrace_filter_stats_up",
                "1 when the last read of the filter's counters from Envoy's admin (sidecar.envoy_admin) worked",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&i64::from(v.up))?;
        }
        if let Some(values) = &v.counters {
            for ((name, help), value) in COUNTERS.iter().zip(values) {
                let full = format!("meshtrace_filter_{name}");
                let mut m = enc.encode_descriptor(&full, help, None, MetricType::Counter)?;
                m.encode_counter::<NoLabelSet, u64, u64>(value, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_envoys_stats_json() {
        let body = br#"{"stats":[
            {"name":"wasmcustom.meshtrace.spans_sampled","value":7},
            {"name":"wasmcustom.meshtrace.spans_started","value":70},
            {"name":"cluster.x.upstream_rq","value":5},
            {"histograms":{}}]}"#;
        let v = parse(body).unwrap();
        assert_eq!(v[0], 70);
        assert_eq!(v[1], 7);
        assert_eq!(v.iter().sum::<u64>(), 77, "absent counters are 0");
        assert!(parse(b"<html>").is_err());
    }

    #[test]
    fn exported_with_help_text() {
        let s = FilterStats::default();
        *s.0.lock().unwrap() = Values {
            counters: Some(vec![3; COUNTERS.len()]),
            up: true,
        };
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(s));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("# HELP meshtrace_filter_spans_dropped Spans dropped:"),
            "{text}"
        );
        assert!(
            text.contains("meshtrace_filter_spans_dropped_total 3"),
            "{text}"
        );
        assert!(text.contains("meshtrace_filter_stats_up 1"), "{text}");
    }
}
