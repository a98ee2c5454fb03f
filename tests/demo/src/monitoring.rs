//! The demo's monitoring: a real Prometheus (Debian's, installed by `scripts/setup`)
//! scraping the central collector, the sidecar collectors and the Envoys, with
//! meshtrace's rules loaded; and the request rates the status line shows, adjusted
//! for sampling and as sampled, read from the central collector's span metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the demo's Prometheus listens.
pub const PROMETHEUS: (&str, u16) = ("127.0.0.1", 19090);

/// The seed's HighLatency alert names its own service; in the demo it watches checkout,
/// whose `GET /report` is the slow operation.
pub const SEED_SERVICE: &str = "machine-native-ops";
pub const DEMO_SLOW_SERVICE: &str = "checkout";

/// Writes `prometheus.yml` and the rules (istio/monitoring/rules.yaml, the seed's
/// alert pointed at the demo's slow service) into `dir`; returns the config path.
pub fn write_config(
    dir: &Path,
    root: &Path,
    central: (&str, u16),
    sidecars: &[(&str, u16)],
    envoys: &[(&str, u16)],
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let source = root.join("istio/monitoring/rules.yaml");
    let rules = std::fs::read_to_string(&source)
        .map_err(|e| format!("{}: {e}", source.display()))?
        .replace(
            &format!("service=\"{SEED_SERVICE}\""),
            &format!("service=\"{DEMO_SLOW_SERVICE}\""),
        )
        .replace(
            &format!("detected in {SEED_SERVICE}"),
            &format!("detected in {DEMO_SLOW_SERVICE}"),
        );
    let rules_path = dir.join("rules.yaml");
    std::fs::write(&rules_path, rules).map_err(|e| format!("{}: {e}", rules_path.display()))?;
    let targets = |t: &[(&str, u16)]| {
        t.iter()
            .map(|(ip, port)| format!("'{ip}:{port}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = format!(
        "# Written by scripts/demo.\n\
         global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n\
         rule_files:\n- '{}'\n\
         scrape_configs:\n\
         - job_name: meshtrace-collector\n  static_configs:\n  - targets: [{}]\n\
         - job_name: meshtrace-sidecar-collector\n  static_configs:\n  - targets: [{}]\n\
         - job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [{}]\n",
        rules_path.display(),
        targets(&[central]),
        targets(sidecars),
        targets(envoys),
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Per service: (adjusted calls, sampled calls) of SERVER spans.
fn server_calls(metrics: &str) -> Calls {
    let mut out = Calls::new();
    for line in metrics.lines() {
        let adjusted = line.starts_with("meshtrace_span_calls_adjusted_total{");
        if !(adjusted || line.starts_with("traces_span_metrics_calls_total{"))
            || !line.contains("span_kind=\"SPAN_KIND_SERVER\"")
        {
            continue;
        }
        let service = line
            .split("service_name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(s), Some(v)) = (service, value) {
            let e = out.entry(s.to_string()).or_default();
            if adjusted {
                e.0 += v;
            } else {
                e.1 += v;
            }
        }
    }
    out
}

/// Per service: (adjusted, sampled) SERVER calls so far.
type Calls = BTreeMap<String, (f64, f64)>;

/// Request rates per service between two reads of the central `/metrics`.
#[derive(Default)]
pub struct Rates {
    last: Option<(Instant, Calls)>,
}

impl Rates {
    /// `frontend 20.1/s (sampled 10.0/s), …` since the last call; `None` the first time.
    pub fn update(&mut self, metrics: &str) -> Option<String> {
        let now = (Instant::now(), server_calls(metrics));
        let line = self.last.as_ref().map(|(t, before)| {
            let secs = now.0.duration_since(*t).as_secs_f64().max(0.001);
            now.1
                .iter()
                .map(|(s, (a, o))| {
                    let (a0, o0) = before.get(s).copied().unwrap_or_default();
                    format!(
                        "{s} {:.1}/s (sampled {:.1}/s)",
                        (a - a0) / secs,
                        (o - o0) / secs
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        self.last = Some(now);
        line.filter(|l| !l.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_server_spans_per_service() {
        let m = |a: f64, o: f64| {
            format!(
                "traces_span_metrics_calls_total{{service_name=\"f\",span_name=\"GET /\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\"}} {o}\n\
                 traces_span_metrics_calls_total{{service_name=\"f\",span_name=\"x\",span_kind=\"SPAN_KIND_CLIENT\",status_code=\"STATUS_CODE_UNSET\"}} 999\n\
                 meshtrace_span_calls_adjusted_total{{service_name=\"f\",span_name=\"GET /\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\"}} {a}\n"
            )
        };
        let mut r = Rates::default();
        assert_eq!(r.update(&m(0.0, 0.0)), None);
        let line = r.update(&m(1e9, 1e8)).unwrap();
        assert!(line.starts_with("f "), "{line}");
        assert!(line.contains("(sampled "), "{line}");
        assert_eq!(server_calls(&m(20.0, 2.0))["f"], (20.0, 2.0));
    }
}
