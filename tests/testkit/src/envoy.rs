//! Starts a real Envoy 1.40 with generated static config.

use crate::{envoy_bin, free_port, wasm_path};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What HTTP filter a listener runs.
#[derive(Debug, Clone)]
pub enum Filter {
    /// The meshtrace filter with this JSON configuration.
    Meshtrace(String),
    /// No tracing at all.
    None,
    /// A proxy-wasm module given by path, with an optional configuration string.
    Wasm(PathBuf, Option<String>),
    /// Envoy's native OpenTelemetry tracer sampling this percentage of requests
    /// (`random_sampling`), exporting over OTLP/HTTP.
    NativeOtel(f64),
    /// The meshtrace filter as a dynamic module (`libmeshtrace.so`) with this
    /// JSON configuration, whatever `MESHTRACE_FILTER_BUILD` says.
    Module(String),
}

impl Filter {
    /// The configuration of the dynamic module, if this filter runs it.
    fn module_config(&self) -> Option<&str> {
        match self {
            Filter::Module(c) => Some(c),
            Filter::Meshtrace(c) if crate::filter_build() == "module" => Some(c),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub port: u16,
    /// INBOUND or OUTBOUND (`traffic_direction`, read by the filter as `xds.listener_direction`).
    pub direction: &'static str,
    /// Where the listener routes (a single route on 127.0.0.1) ...
    pub upstream_port: u16,
    /// ... unless routes by `:authority` are given (an Istio-like outbound listener).
    pub routes: Vec<Route>,
}

/// One virtual host of a listener: these `:authority` values go to `cluster` at `address`.
#[derive(Debug, Clone)]
pub struct Route {
    pub domains: Vec<String>,
    pub cluster: String,
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct EnvoyBuilder {
    pub app: String,
    pub metadata: Value,
    pub listeners: Vec<Listener>,
    pub filter: Filter,
    pub collector_port: u16,
    pub concurrency: u32,
    pub env: Vec<(String, String)>,
    /// Runtime layer values (e.g. `tracing.opentelemetry.min_flush_spans`).
    pub runtime: Value,
    /// Run under `taskset -c CPU`.
    pub cpu: Option<u32>,
    /// Name clusters as Istio does (`inbound|port||`, `outbound|port||host`);
    /// false gives plain names (`up0`), where the filter needs `xds.listener_direction`.
    pub istio_cluster_names: bool,
    /// Adds a `meshtrace-sampling` cluster to this port (the collector's strategies endpoint).
    pub sampling_port: Option<u16>,
    /// The address listeners bind and the collector clusters point at (a "pod" address).
    pub address: String,
    /// Fixed admin port on `address` (else a free one on 127.0.0.1).
    pub admin_port: Option<u16>,
    /// Where the config and log go (kept); else a temporary directory removed on drop.
    pub work_dir: Option<PathBuf>,
    /// Start Envoy in its own process group (a terminal's Ctrl-C does not reach it).
    pub own_process_group: bool,
    /// Run Envoy under this command (e.g. valgrind and its options); with
    /// `cpu` unset only.
    pub wrapper: Vec<String>,
    /// How long to wait for it to be ready.
    pub ready_timeout: Duration,
}

impl EnvoyBuilder {
    /// A sidecar of workload `app` in namespace `demo`.
    pub fn new(app: &str, filter: Filter, collector_port: u16) -> EnvoyBuilder {
        EnvoyBuilder {
            app: app.into(),
            metadata: json!({
                "NAMESPACE": "demo",
                "NAME": format!("{app}-pod-0"),
                "WORKLOAD_NAME": app,
                "CLUSTER_ID": "test-cluster",
                "LABELS": {"app": app, "version": "v1"}
            }),
            listeners: Vec::new(),
            filter,
            collector_port,
            concurrency: 1,
            env: Vec::new(),
            runtime: json!({}),
            cpu: None,
            istio_cluster_names: true,
            sampling_port: None,
            address: "127.0.0.1".into(),
            admin_port: None,
            work_dir: None,
            own_process_group: false,
            wrapper: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// The cluster listener `i` routes to.
    pub fn cluster_name(&self, i: usize) -> String {
        let l = &self.listeners[i];
        match (self.istio_cluster_names, l.direction) {
            (false, _) => format!("up{i}"),
            (true, "INBOUND") => format!("inbound|{}||", l.upstream_port),
            (true, _) => format!("outbound|{}||up{i}.demo.svc.cluster.local", l.upstream_port),
        }
    }

    /// Adds a listener on a fresh port; returns the port.
    pub fn listener(&mut self, direction: &'static str, upstream_port: u16) -> u16 {
        let port = free_port();
        self.listeners.push(Listener {
            port,
            direction,
            upstream_port,
            routes: Vec::new(),
        });
        port
    }

    /// Adds a listener on `port` of `self.address` that routes by `:authority`.
    pub fn routed_listener(&mut self, port: u16, direction: &'static str, routes: Vec<Route>) {
        self.listeners.push(Listener {
            port,
            direction,
            upstream_port: 0,
            routes,
        });
    }

    /// `(domains, cluster, address, port)` of each virtual host of listener `i`.
    fn routes(&self, i: usize) -> Vec<Route> {
        let l = &self.listeners[i];
        if l.routes.is_empty() {
            vec![Route {
                domains: vec!["*".into()],
                cluster: self.cluster_name(i),
                address: "127.0.0.1".into(),
                port: l.upstream_port,
            }]
        } else {
            l.routes.clone()
        }
    }

    fn http_filters(&self) -> Vec<Value> {
        let router = json!({"name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}});
        let wasm = |code: &PathBuf, configuration: Option<&str>| {
            let mut cfg = json!({
                "name": "meshtrace",
                "root_id": "meshtrace",
                "failure_policy": "FAIL_OPEN",
                "vm_config": {
                    "vm_id": "meshtrace",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": code.display().to_string()}},
                    "environment_variables": {"key_values":
                        self.env.iter().cloned().collect::<HashMap<_, _>>()}
                }
            });
            if let Some(c) = configuration {
                cfg["configuration"] = json!({
                    "@type": "type.googleapis.com/google.protobuf.StringValue", "value": c});
            }
            json!({"name": "envoy.filters.http.wasm", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": cfg}})
        };
        if let Some(c) = self.filter.module_config() {
            // Its stats under `wasmcustom`: the names the wasm build has.
            let module = json!({"name": "envoy.filters.http.dynamic_modules", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": {"name": "meshtrace", "metrics_namespace": "wasmcustom"},
                "filter_name": "meshtrace",
                "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": c}}});
            return vec![module, router];
        }
        match &self.filter {
            Filter::Meshtrace(c) => vec![wasm(&wasm_path(), Some(c)), router],
            Filter::Module(_) => vec![router],
            Filter::Wasm(p, c) => vec![wasm(p, c.as_deref()), router],
            Filter::None | Filter::NativeOtel(_) => vec![router],
        }
    }

    /// The bootstrap configuration, as Envoy reads it with `-c`.
    pub fn config(&self) -> Value {
        let listeners: Vec<Value> = self.listeners.iter().enumerate().map(|(i, l)| {
            let virtual_hosts: Vec<Value> = self.routes(i).iter().enumerate().map(|(j, r)| json!({
                "name": format!("vh{j}"), "domains": r.domains, "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": r.cluster, "timeout": "10s"}}]})).collect();
            let mut hcm = json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("l{i}"),
                "route_config": {"virtual_hosts": virtual_hosts},
                "http_filters": self.http_filters(),
            });
            if let Filter::NativeOtel(percent) = self.filter {
                hcm["tracing"] = json!({
                    "random_sampling": {"value": percent},
                    "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                        "service_name": self.app,
                        "http_service": {
                            "http_uri": {"uri": "http://meshtrace-collector/v1/traces",
                                         "cluster": "meshtrace-collector", "timeout": "5s"}}}}
                });
            }
            json!({
                "name": format!("listener{i}"),
                "traffic_direction": l.direction,
                "address": {"socket_address": {"address": self.address, "port_value": l.port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm}]}]
            })
        }).collect();
        let cluster = |name: &str, address: &str, port: u16| {
            json!({
                "name": name, "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]}
            })
        };
        let mut clusters: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..self.listeners.len() {
            for r in self.routes(i) {
                if seen.insert(r.cluster.clone()) {
                    clusters.push(cluster(&r.cluster, &r.address, r.port));
                }
            }
        }
        // The collector closes connections idle for server.idle_timeout (60 s): Envoy
        // closes its own first, so no request is sent on a connection being closed.
        let collector_cluster = |name: &str, port: u16| {
            let mut c = cluster(name, &self.address, port);
            c["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"idle_timeout": "30s"},
                    "explicit_http_config": {"http_protocol_options": {}}
                }
            });
            c
        };
        clusters.push(collector_cluster(
            "meshtrace-collector",
            self.collector_port,
        ));
        if let Some(p) = self.sampling_port {
            clusters.push(collector_cluster("meshtrace-sampling", p));
        }
        let (admin_address, admin_port) = match self.admin_port {
            Some(p) => (self.address.as_str(), p),
            None => ("127.0.0.1", 0),
        };
        json!({
            "node": {"id": format!("sidecar~{}~{}-pod-0.demo~demo.svc.cluster.local", self.address, self.app),
                     "cluster": self.app, "metadata": self.metadata},
            "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
            "layered_runtime": {"layers": [{"name": "static", "static_layer": self.runtime}]},
            "static_resources": {"listeners": listeners, "clusters": clusters}
        })
    }

    /// Starts Envoy and waits until it is ready; panics with its log otherwise.
    pub fn start(&self) -> Envoy {
        self.try_start()
            .unwrap_or_else(|log| panic!("envoy did not start:\n{log}"))
    }

    /// Starts Envoy; `Err(log)` if it exits or is not ready in 30 s.
    pub fn try_start(&self) -> Result<Envoy, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = self.work_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "meshtrace-envoy-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ))
        });
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let cfg_path = dir.join("envoy.json");
        std::fs::write(&cfg_path, self.config().to_string()).map_err(|e| e.to_string())?;
        let log_path = dir.join("envoy.log");
        let admin_path = dir.join("admin");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(envoy_bin());
                c
            }
            None => match self.wrapper.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(crate::try_envoy_bin()?);
                    c
                }
                None => Command::new(crate::try_envoy_bin()?),
            },
        };
        if self.own_process_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        if self.filter.module_config().is_some() {
            // Found by name in this directory; node metadata where Istio's
            // pilot-agent takes it from (the module ABI has none), and the
            // environment the wasm build gets through its VM configuration.
            let dir = crate::module_path()
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            cmd.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
            if let Some(m) = self.metadata.as_object() {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            cmd.env(format!("ISTIO_META_{k}"), s);
                        }
                        Value::Object(_) if k == "LABELS" => {
                            cmd.env("ISTIO_METAJSON_LABELS", v.to_string());
                        }
                        _ => {}
                    }
                }
            }
            cmd.envs(self.env.iter().cloned());
        }
        cmd.arg("-c")
            .arg(&cfg_path)
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("-l")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| format!("spawn envoy: {e}"))?;
        crate::track_child(child.id());
        let mut envoy = Envoy {
            child,
            admin_port: 0,
            admin_address: "127.0.0.1".into(),
            log_path,
            dir,
            keep_dir: self.work_dir.is_some(),
        };
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Ok(Some(_)) = envoy.child.try_wait() {
                return Err(envoy.log());
            }
            if envoy.admin_port == 0 {
                if let Ok(s) = std::fs::read_to_string(&admin_path) {
                    if let Some((a, p)) = s.trim().rsplit_once(':') {
                        envoy.admin_port = p.parse().unwrap_or(0);
                        envoy.admin_address = a.to_string();
                    }
                }
            }
            if envoy.admin_port != 0 && envoy.admin_get("/ready").starts_with("LIVE") {
                return Ok(envoy);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {} s\n{}",
                    self.ready_timeout.as_secs(),
                    envoy.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub struct Envoy {
    pub child: Child,
    pub admin_port: u16,
    pub admin_address: String,
    pub log_path: PathBuf,
    dir: PathBuf,
    keep_dir: bool,
}

impl Envoy {
    /// The real envoy PID (for /proc), not taskset's: taskset execs envoy.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GET on the admin port; the body, or "" on error.
    pub fn admin_get(&self, path: &str) -> String {
        let Ok(mut s) = TcpStream::connect((self.admin_address.as_str(), self.admin_port)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
        );
        match crate::http::read_message(&mut std::io::BufReader::new(s)) {
            Ok(Some(m)) => String::from_utf8_lossy(&m.body).into_owned(),
            _ => String::new(),
        }
    }

    /// Counter values whose name contains `filter`.
    pub fn stats(&self, filter: &str) -> HashMap<String, u64> {
        self.admin_get(&format!("/stats?filter={filter}"))
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// A meshtrace counter (`spans_started`, ...), 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.stats("meshtrace")
            .into_iter()
            .find(|(k, _)| k.ends_with(&format!("meshtrace.{name}")))
            .map_or(0, |(_, v)| v)
    }

    /// Resident set size in MB from /proc.
    pub fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// utime + stime of the process, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        crate::envoy::cpu_ticks(self.pid())
    }
}

/// utime + stime of `pid`, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14, stime 15 (1-based); after ')' the state is index 0 = field 3.
    get(11) + get(12)
}

impl Drop for Envoy {
    fn drop(&mut self) {
        crate::forget_child(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() && !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Client → `frontend` sidecar (outbound listener) → `backend` sidecar (inbound
/// listener) → an echo app, both filters exporting to `collector_port`.
pub struct TwoSidecars {
    pub frontend: Envoy,
    pub backend: Envoy,
    /// Where a client sends: the frontend's outbound listener.
    pub entry_port: u16,
    /// The backend's inbound listener.
    pub backend_port: u16,
    pub app: crate::upstream::Upstream,
}

impl TwoSidecars {
    pub fn start(frontend_config: &str, backend_config: &str, collector_port: u16) -> TwoSidecars {
        let app = crate::upstream::Upstream::start();
        let mut b = EnvoyBuilder::new(
            "backend",
            Filter::Meshtrace(backend_config.into()),
            collector_port,
        );
        let backend_port = b.listener("INBOUND", app.port);
        let backend = b.start();
        let mut a = EnvoyBuilder::new(
            "frontend",
            Filter::Meshtrace(frontend_config.into()),
            collector_port,
        );
        let entry_port = a.listener("OUTBOUND", backend_port);
        let frontend = a.start();
        TwoSidecars {
            frontend,
            backend,
            entry_port,
            backend_port,
            app,
        }
    }
}
