//! Starts the real `meshtrace-collector` binary on free ports with a fresh data directory.

use crate::{free_port, free_udp_port, workspace_root};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a collector may take to answer `/healthz` after it is spawned.
pub static READY_TIMEOUT_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(20);

/// Launch options.
#[derive(Debug, Default, Clone)]
pub struct Opts {
    /// YAML written to a config file passed with `--config`.
    pub yaml: Option<String>,
    pub args: Vec<String>,
    /// A fixed OTLP gRPC port (else a free one).
    pub grpc_port: Option<u16>,
    /// OTLP/HTTP port (a free one if `None`).
    pub http_port: Option<u16>,
    /// Query port (a free one if `None`): replicas that name each other.
    pub query_port: Option<u16>,
    /// Another collector binary (benchmarks compare two builds side by side).
    pub bin: Option<PathBuf>,
    /// A command that execs the collector (same process), e.g.
    /// `["prlimit", "--nofile=1024:1024", "--"]`.
    pub wrapper: Vec<String>,
    /// Its listeners speak TLS: ready once the query port accepts connections.
    pub tls: bool,
}

impl Opts {
    /// Sidecar mode forwarding to `upstream` (an OTLP gRPC URL), with short retries.
    pub fn sidecar(upstream: &str) -> Opts {
        Opts {
            yaml: Some("sidecar:\n  retry_initial_ms: 50\n  retry_max_ms: 200\n".into()),
            args: vec![
                "--mode".into(),
                "sidecar".into(),
                "--upstream".into(),
                upstream.into(),
            ],
            ..Opts::default()
        }
    }
}

pub struct Collector {
    pub child: Child,
    pub otlp_port: u16,
    pub grpc_port: u16,
    pub query_port: u16,
    pub sampling_port: u16,
    /// Jaeger `SamplingManager` gRPC.
    pub sampling_grpc_port: u16,
    /// Zipkin's span API, when the collector runs it (all-in-one mode by default).
    pub zipkin_port: u16,
    /// Jaeger's receivers (all-in-one mode by default): UDP compact and
    /// binary, Thrift over HTTP, gRPC.
    pub jaeger_compact_port: u16,
    pub jaeger_binary_port: u16,
    pub jaeger_http_port: u16,
    pub jaeger_grpc_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    keep_data: bool,
}

/// Where the collector binary is: `MESHTRACE_COLLECTOR_BIN` (benchmarks point it at the
/// release build), else the debug build.
pub fn collector_path() -> PathBuf {
    match std::env::var_os("MESHTRACE_COLLECTOR_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/debug/meshtrace-collector"),
    }
}

/// The store engine the tests' collectors run: `MESHTRACE_STORE_ENGINE` (the whole
/// suite can be run under either), else the collector's default.
pub fn store_engine() -> String {
    std::env::var("MESHTRACE_STORE_ENGINE").unwrap_or_else(|_| "blocks".into())
}

/// The collector binary; fails with the command that builds it.
pub fn collector_bin() -> PathBuf {
    let p = collector_path();
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p meshtrace-collector` (scripts/test does)",
        p.display()
    );
    p
}

/// The environment variables of the receivers that all-in-one mode runs by
/// default on fixed ports (Zipkin's 9411, Jaeger's 6831, 6832, 14268, 14250).
pub const DEFAULT_PORT_VARS: [&str; 5] = [
    "MESHTRACE_ZIPKIN_LISTEN",
    "MESHTRACE_JAEGER_COMPACT_LISTEN",
    "MESHTRACE_JAEGER_BINARY_LISTEN",
    "MESHTRACE_JAEGER_HTTP_LISTEN",
    "MESHTRACE_JAEGER_GRPC_LISTEN",
];

/// The collector binary as a command, the receivers all-in-one mode runs on
/// fixed ports (Zipkin, Jaeger) on ports the system picks, so that collectors
/// started side by side do not collide.
pub fn command() -> Command {
    let mut c = Command::new(collector_bin());
    for var in DEFAULT_PORT_VARS {
        c.env(var, "127.0.0.1:0");
    }
    c
}

impl Collector {
    pub fn start() -> Collector {
        let data_dir = crate::scratch_path("collector");
        Self::start_in(data_dir)
    }

    pub fn start_in(data_dir: PathBuf) -> Collector {
        Self::start_opts(data_dir, Opts::default())
    }

    /// Starts with a YAML configuration file holding `yaml`.
    pub fn start_with_config(yaml: &str) -> Collector {
        let data_dir = crate::scratch_path("collector");
        Self::start_opts(
            data_dir,
            Opts {
                yaml: Some(yaml.into()),
                ..Opts::default()
            },
        )
    }

    /// A sidecar-mode collector forwarding to `upstream` (an OTLP gRPC URL).
    pub fn start_sidecar(upstream: &str) -> Collector {
        Self::start_opts(crate::scratch_path("sidecar"), Opts::sidecar(upstream))
    }

    pub fn start_opts(data_dir: PathBuf, opts: Opts) -> Collector {
        let (query_port, sampling_port, sampling_grpc_port) = (
            opts.query_port.unwrap_or_else(free_port),
            free_port(),
            free_port(),
        );
        let otlp_port = opts.http_port.unwrap_or_else(free_port);
        let grpc_port = opts.grpc_port.unwrap_or_else(free_port);
        let zipkin_port = free_port();
        let (jaeger_compact_port, jaeger_binary_port) = (free_udp_port(), free_udp_port());
        let (jaeger_http_port, jaeger_grpc_port) = (free_port(), free_port());
        let yaml = opts.yaml.as_deref();
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let log_path = data_dir.join("collector.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let bin = opts.bin.clone().unwrap_or_else(collector_bin);
        let mut cmd = match opts.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        if let Some(y) = yaml {
            let path = data_dir.join("collector.yaml");
            std::fs::write(&path, y).expect("config file");
            cmd.arg("--config").arg(path);
        }
        let child = cmd
            .args(&opts.args)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--otlp-grpc-listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-listen")
            .arg(format!("127.0.0.1:{otlp_port}"))
            .arg("--query-listen")
            .arg(format!("127.0.0.1:{query_port}"))
            .arg("--sampling-listen")
            .arg(format!("127.0.0.1:{sampling_port}"))
            .arg("--sampling-grpc-listen")
            .arg(format!("127.0.0.1:{sampling_grpc_port}"))
            // An environment variable, not a flag: an older build (a benchmark's
            // baseline) ignores it.
            .envs(
                DEFAULT_PORT_VARS
                    .iter()
                    .zip([
                        zipkin_port,
                        jaeger_compact_port,
                        jaeger_binary_port,
                        jaeger_http_port,
                        jaeger_grpc_port,
                    ])
                    .map(|(var, port)| (*var, format!("127.0.0.1:{port}"))),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn collector");
        let mut c = Collector {
            child,
            otlp_port,
            grpc_port,
            query_port,
            sampling_port,
            sampling_grpc_port,
            zipkin_port,
            jaeger_compact_port,
            jaeger_binary_port,
            jaeger_http_port,
            jaeger_grpc_port,
            data_dir,
            log_path,
            keep_data: false,
        };
        crate::track_child(c.child.id());
        let deadline = Instant::now()
            + Duration::from_secs(READY_TIMEOUT_S.load(std::sync::atomic::Ordering::Relaxed));
        let ready = |c: &Collector| {
            if opts.tls {
                TcpStream::connect(("127.0.0.1", c.query_port)).is_ok()
            } else {
                c.get("/healthz").0 == 200
            }
        };
        while !ready(&c) {
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!("collector exited ({status}):\n{}", c.log());
            }
            assert!(
                Instant::now() < deadline,
                "collector not ready:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// SIGKILL, keeping the data directory for a restart; returns it.
    pub fn kill_keep_data(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_data = true;
        self.data_dir.clone()
    }

    /// SIGTERM, wait for the exit, keep the data directory; returns (exit status, dir, log).
    pub fn terminate_keep_data(mut self) -> (std::process::ExitStatus, PathBuf, String) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait for the collector");
        self.keep_data = true;
        (status, self.data_dir.clone(), self.log())
    }

    /// POSTs an OTLP/HTTP protobuf body; the status (0 if the connection failed).
    pub fn post_otlp(&self, body: &[u8]) -> u16 {
        post_otlp(self.otlp_port, body)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GET on the query port: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        get(self.query_port, path)
    }

    /// GET on the sampling port: (status, body).
    pub fn get_sampling(&self, path: &str) -> (u16, String) {
        get(self.sampling_port, path)
    }

    /// GET returning JSON, retried until `pred` holds or 10 s pass.
    pub fn get_json_until(
        &self,
        path: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = self.get(path);
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            if pred(&v) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// POSTs an OTLP/HTTP protobuf body to `port`; the status (0 if the connection failed).
pub fn post_otlp(port: u16, body: &[u8]) -> u16 {
    post(port, "application/x-protobuf", &[], body).map_or(0, |m| m.status())
}

/// POSTs `body` to `/v1/traces`; `None` if the connection failed.
pub fn post(
    port: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Option<crate::http::Message> {
    post_to(port, "/v1/traces", content_type, extra_headers, body)
}

/// POST `body` to `path` on `port`; `None` if the connection failed.
pub fn post_to(
    port: u16,
    path: &str,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Option<crate::http::Message> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: c\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    // The server may answer (413) before reading the whole body: ignore a write error.
    let _ = s.write_all(&req);
    let mut r = std::io::BufReader::new(s);
    crate::http::read_message(&mut r).ok().flatten()
}

/// GET on `port`: (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    get_with_headers(port, path, &[])
}

/// GET on `port` with extra request headers: (status, body).
pub fn get_with_headers(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: q\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let mut r = std::io::BufReader::new(out.as_slice());
    match crate::http::read_message(&mut r) {
        Ok(Some(m)) => (m.status(), String::from_utf8_lossy(&m.body).into_owned()),
        _ => (0, String::new()),
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        crate::forget_child(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() && !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// `n` listeners on free ports, held open, and their addresses: proves that a
/// process given these addresses failed before binding anything.
pub fn hold_ports(n: usize) -> (Vec<std::net::TcpListener>, Vec<String>) {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    let addrs = held
        .iter()
        .map(|l| l.local_addr().expect("local addr").to_string())
        .collect();
    (held, addrs)
}

/// Calls a unary gRPC method on 127.0.0.1:`port` with the raw `message` bytes through a
/// real gRPC client (Python grpcio); (status code name, details, response bytes).
pub fn grpc_raw(port: u16, method: &str, message: &[u8]) -> (String, String, Vec<u8>) {
    grpc_raw_with(port, method, message, &[])
}

/// [`grpc_raw`] with `grpc_raw.py`'s options (`--ca F`, `--cert F --key F`, `--token T`).
pub fn grpc_raw_with(
    port: u16,
    method: &str,
    message: &[u8],
    opts: &[&str],
) -> (String, String, Vec<u8>) {
    let target = format!("127.0.0.1:{port}");
    let mut args = vec![target.as_str(), method];
    args.extend_from_slice(opts);
    let (v, _) = crate::python_client("grpc_raw.py", &args, message);
    let hex = v["response_hex"].as_str().unwrap_or("");
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    (
        v["code"].as_str().unwrap_or("").to_string(),
        v["details"].as_str().unwrap_or("").to_string(),
        bytes,
    )
}

/// The process (service name and resource tags) of a span in a Jaeger trace.
pub fn jaeger_process<'a>(
    trace: &'a serde_json::Value,
    span: &serde_json::Value,
) -> &'a serde_json::Value {
    &trace["processes"][span["processID"].as_str().unwrap_or("")]
}

/// The one span of `service` in a Jaeger trace (panics naming the trace if absent).
pub fn jaeger_span_of<'a>(trace: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    trace["spans"]
        .as_array()
        .and_then(|spans| {
            spans
                .iter()
                .find(|s| jaeger_process(trace, s)["serviceName"] == service)
        })
        .unwrap_or_else(|| panic!("no span of {service} in {trace:#}"))
}

/// A tag object (`{"key", "type", "value"}`) of a span in Jaeger's JSON.
pub fn jaeger_tag<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key)
}

/// A value from Prometheus text (`name value` lines), 0 if absent.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}
