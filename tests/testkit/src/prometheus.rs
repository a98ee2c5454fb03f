//! A real Prometheus (Debian's `prometheus`, installed by `scripts/setup`)
//! scraping the given targets every second, with rule files, on a free port
//! of 127.0.0.1; stopped when dropped. Queries go through its HTTP API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub api: Api,
    pub dir: PathBuf,
}

/// The HTTP API of a Prometheus listening on 127.0.0.1:`port` (started here, or the demo's).
pub struct Api {
    pub port: u16,
}

impl std::ops::Deref for Prometheus {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A scrape job: its name, the targets (`host:port`) and the metrics path.
pub struct Job<'a> {
    pub name: &'a str,
    pub targets: Vec<String>,
    pub path: &'a str,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second, evaluating `rule_files` every second.
    pub fn start(jobs: &[Job], rule_files: &[PathBuf]) -> Prometheus {
        let dir = crate::scratch_path("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for j in jobs {
            cfg.push_str(&format!(
                "- job_name: {}\n  metrics_path: {}\n  static_configs:\n  - targets: [{}]\n",
                j.name,
                j.path,
                j.targets
                    .iter()
                    .map(|t| format!("'{t}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !rule_files.is_empty() {
            cfg.push_str("rule_files:\n");
            for f in rule_files {
                cfg.push_str(&format!("- '{}'\n", f.display()));
            }
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, cfg).expect("prometheus.yml");
        let port = crate::free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus: run scripts/setup (Debian package prometheus)");
        let p = Prometheus {
            child,
            api: Api { port },
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while crate::collector::get(port, "/-/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Api {
    /// GET on the HTTP API, parsed.
    pub fn api(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = crate::collector::get(self.port, path_and_query);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus {path_and_query}: {status} {e}: {body}"))
    }

    /// An instant query's result vector (`data.result`); panics on a query error.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `expr` returns at least one series; returns them.
    pub fn query_until(&self, expr: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr);
            if !r.is_empty() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} returned no data within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The alerts Prometheus evaluates now (`/api/v1/alerts`).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
