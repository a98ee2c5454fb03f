//! `scripts/demo`: a loopback mesh. Three services, each in its own "pod" (a loopback
//! address: 127.0.0.11, .12, .13) with its Envoy sidecar (inbound :15006, outbound
//! :15001, admin :15000) running the filter with the manifests' configuration, and its
//! own sidecar collector (:4317/:4318, strategies :5778) forwarding to the central
//! all-in-one collector on 127.0.0.1 (query :16686, OTLP :4317/:4318, strategies
//! :5778/:5779). A traffic generator calls the frontend; a status line shows what is
//! happening. Everything it starts is stopped by PID when it ends.

use crate::monitoring::{Rates, PROMETHEUS};
use meshtrace_testkit::envoy::{Envoy, EnvoyBuilder, Filter, Route};
use meshtrace_testkit::http::{read_message, Message};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The services, the pod address of each, and whom each calls.
pub const SERVICES: [(&str, &str, &[&str]); 3] = [
    ("frontend", "127.0.0.11", &["checkout", "inventory"]),
    ("checkout", "127.0.0.12", &["inventory"]),
    ("inventory", "127.0.0.13", &[]),
];
/// The central collector's address.
pub const CENTRAL: &str = "127.0.0.1";

/// Every port the demo listens on: (address, port, what).
pub fn ports() -> Vec<(String, u16, String)> {
    let mut v: Vec<(String, u16, String)> = [
        (4317, "OTLP gRPC"),
        (4318, "OTLP/HTTP"),
        (16686, "query API"),
        (5778, "sampling strategies"),
        (5779, "sampling gRPC"),
        (9411, "Zipkin receiver"),
        (14268, "Jaeger Thrift over HTTP"),
        (14250, "Jaeger gRPC"),
    ]
    .iter()
    .map(|(p, w)| (CENTRAL.to_string(), *p, format!("central collector, {w}")))
    .collect();
    v.push((
        PROMETHEUS.0.to_string(),
        PROMETHEUS.1,
        "Prometheus".to_string(),
    ));
    for (name, ip, _) in SERVICES {
        for (p, w) in [
            (8080, "the app"),
            (15000, "Envoy admin"),
            (15001, "Envoy outbound listener"),
            (15006, "Envoy inbound listener"),
            (4317, "sidecar collector, OTLP gRPC"),
            (4318, "sidecar collector, OTLP/HTTP"),
            (16686, "sidecar collector, metrics"),
            (5778, "sidecar collector, strategies"),
            (5779, "sidecar collector, sampling gRPC"),
        ] {
            v.push((ip.to_string(), p, format!("{name} pod, {w}")));
        }
    }
    v
}

/// A small xorshift generator: the demo's traffic and failures need no crypto.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let id = std::thread::current().id();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(t, id), &mut h);
        Rng(std::hash::Hasher::finish(&h) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, Vec<u8>)],
) -> std::io::Result<Message> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_nodelay(true).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: 0\r\n"
    )
    .into_bytes();
    meshtrace_testkit::http::end_head(&mut req, headers);
    s.write_all(&req)?;
    read_message(&mut BufReader::new(s))?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without an answer",
        )
    })
}

/// GET returning the JSON body.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let m = request(addr, "GET", path, "demo", &[]).map_err(|e| format!("GET {path}: {e}"))?;
    if m.status() != 200 {
        return Err(format!("GET {path}: status {}", m.status()));
    }
    serde_json::from_slice(&m.body).map_err(|e| format!("GET {path}: {e}"))
}

fn addr(ip: &str, port: u16) -> Result<SocketAddr, String> {
    format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}:{port}: {e}"))
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Requests per second sent to the frontend.
    pub rate: f64,
    /// Seconds between status lines.
    pub status_every: Duration,
    /// The demo's own binary (for the services).
    pub self_exe: PathBuf,
    /// Where data, logs and the PID file go.
    pub dir: PathBuf,
    /// Empty the store first; otherwise traces of earlier runs stay.
    pub fresh: bool,
}

/// A process the demo started.
struct Proc {
    name: String,
    child: Child,
}

/// Everything running; stops it all on drop.
struct Mesh {
    procs: Vec<Proc>,
    envoys: Vec<(String, Envoy)>,
    pid_file: PathBuf,
}

impl Mesh {
    fn record(&self) {
        let mut s = String::new();
        for p in &self.procs {
            s.push_str(&format!("{} {}\n", p.child.id(), p.name));
        }
        for (n, e) in &self.envoys {
            s.push_str(&format!("{} {n}-envoy\n", e.pid()));
        }
        let _ = std::fs::write(&self.pid_file, s);
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command, log: &Path) -> Result<(), String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        use std::os::unix::process::CommandExt;
        // Its own process group: Ctrl-C reaches the demo alone, which stops the rest in order.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        self.procs.push(Proc {
            name: name.into(),
            child,
        });
        self.record();
        Ok(())
    }

    /// Stops everything: Envoys and apps first, then the sidecar collectors (they drain
    /// to the central one), then the central collector. SIGTERM, SIGKILL after 10 s.
    fn stop(&mut self) {
        for (_, e) in &mut self.envoys {
            terminate(&mut e.child, Duration::from_secs(5));
        }
        self.envoys.clear();
        for stage in ["prometheus", "app", "sidecar", "central"] {
            for p in self.procs.iter_mut().filter(|p| p.name.contains(stage)) {
                terminate(&mut p.child, Duration::from_secs(10));
            }
        }
        self.procs.clear();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops what an earlier run left behind (killed with SIGKILL, say), by the PIDs it
/// recorded, if those PIDs still run one of the demo's programs.
fn stop_leftovers(dir: &Path, pid_file: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let mut stopped = Vec::new();
    for line in text.lines() {
        let Some((pid, name)) = line.split_once(' ') else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        // Envoys and collectors name the demo's directory in their arguments; the
        // services are `meshtrace-demo app`. A reused PID running anything else is left alone.
        let ours = cmdline.contains(&*dir.to_string_lossy())
            || (cmdline.contains("meshtrace-demo") && cmdline.contains("\0app\0"));
        if ours {
            if let Ok(pid) = pid.parse::<u32>() {
                println!("stopping {name} (pid {pid}) left from an earlier run");
                signal(pid, "TERM");
                stopped.push(pid);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && stopped
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in stopped {
        if Path::new(&format!("/proc/{p}")).exists() {
            signal(p, "KILL");
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Every port the demo needs that is taken, with what the demo wanted it for.
pub fn taken_ports() -> Vec<String> {
    ports()
        .into_iter()
        .filter(|(ip, port, _)| TcpListener::bind((ip.as_str(), *port)).is_err())
        .map(|(ip, port, what)| format!("{ip}:{port} ({what})"))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not come up in {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn healthy(ip: &str, port: u16) -> bool {
    addr(ip, port)
        .ok()
        .and_then(|a| request(a, "GET", "/healthz", "demo", &[]).ok())
        .is_some_and(|m| m.status() == 200)
}

/// Requests sent and answered so far.
#[derive(Default)]
struct Traffic {
    sent: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicUsize,
}

/// The traffic generator: `rate` requests per second to the frontend's inbound listener.
fn generate(target: SocketAddr, rate: f64, stop: Arc<AtomicBool>, traffic: Arc<Traffic>) {
    let mut rng = Rng::seeded();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next += period;
        if traffic.in_flight.load(Ordering::Relaxed) >= 64 {
            continue;
        }
        let roll = rng.below(100);
        let (method, path) = match roll {
            0..=39 => ("GET", format!("/product/{}", rng.below(500))),
            40..=69 => ("POST", "/checkout".to_string()),
            70..=84 => ("GET", "/".to_string()),
            85..=89 => ("GET", "/report".to_string()),
            _ => ("GET", "/health".to_string()),
        };
        let t = traffic.clone();
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        std::thread::spawn(move || {
            let ok = request(target, method, &path, "frontend:8080", &[])
                .is_ok_and(|m| m.status() < 500);
            t.sent.fetch_add(1, Ordering::Relaxed);
            if !ok {
                t.failed.fetch_add(1, Ordering::Relaxed);
            }
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Traces seen in the central store, read through the query API.
#[derive(Default)]
struct Seen {
    traces: HashSet<String>,
    example: Option<String>,
}

/// A trace with every span's parent in it and one root: its spans all
/// arrived (a span's parent ends after it and may come in a later batch).
fn whole(t: &serde_json::Value) -> bool {
    let spans = t["spans"].as_array().map(Vec::as_slice).unwrap_or_default();
    let ids: HashSet<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    let mut roots = 0;
    for s in spans {
        let parent = s["references"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
            .and_then(|r| r["spanID"].as_str());
        match parent {
            Some(p) if !ids.contains(p) => return false,
            Some(_) => {}
            None => roots += 1,
        }
    }
    roots == 1
}

impl Seen {
    /// Reads the traces that started in the last 30 s (spans arrive a second or two late).
    fn refresh(&mut self, since_us: u128) -> Result<(), String> {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let start = since_us.max(now_us.saturating_sub(30_000_000));
        let v = get_json(
            addr(CENTRAL, 16686)?,
            &format!("/api/traces?service=frontend&start={start}&end={now_us}&limit=100000"),
        )?;
        for t in v["data"].as_array().into_iter().flatten() {
            let Some(id) = t["traceID"].as_str() else {
                continue;
            };
            self.traces.insert(id.to_string());
            if self.example.is_none() {
                let services: HashSet<&str> = t["processes"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, p)| p["serviceName"].as_str())
                    .collect();
                if services.len() == SERVICES.len() && whole(t) {
                    self.example = Some(id.to_string());
                }
            }
        }
        Ok(())
    }
}

/// The status line; the sampled ratio per service is its filter's
/// `spans_sampled / spans_started` (SERVER and CLIENT spans), from its Envoy's stats;
/// `rates` the requests per second per service, adjusted for sampling and as sampled.
fn status_line(
    elapsed: Duration,
    traffic: &Traffic,
    seen: &Seen,
    envoys: &[(String, Envoy)],
    rates: Option<&str>,
) -> String {
    let sent = traffic.sent.load(Ordering::Relaxed);
    let failed = traffic.failed.load(Ordering::Relaxed);
    let ratios: Vec<String> = envoys
        .iter()
        .map(|(name, e)| {
            let (s, n) = (e.counter("spans_sampled"), e.counter("spans_started"));
            if n > 0 {
                format!("{name} {:.0}% ({s}/{n})", 100.0 * s as f64 / n as f64)
            } else {
                format!("{name} -")
            }
        })
        .collect();
    let rates = rates.map_or(String::new(), |r| format!(" | requests: {r}"));
    format!(
        "[{:>4} s] requests sent {sent} ({failed} failed) | traces stored {} | sampled: {}{rates}",
        elapsed.as_secs(),
        seen.traces.len(),
        ratios.join(", ")
    )
}

/// The central collector's `/metrics`.
fn central_metrics() -> Option<String> {
    let m = request(addr(CENTRAL, 16686).ok()?, "GET", "/metrics", "demo", &[]).ok()?;
    (m.status() == 200).then(|| String::from_utf8_lossy(&m.body).into_owned())
}

/// Runs the demo until `opts.duration` passes or `stop` is set (Ctrl-C).
pub fn run(opts: Options, stop: Arc<AtomicBool>) -> Result<(), String> {
    let root = meshtrace_testkit::workspace_root();
    let collector = meshtrace_testkit::collector::collector_path();
    // The build of the filter the sidecars load (`scripts/demo --filter module|wasm`).
    let filter = match meshtrace_testkit::filter_build() {
        "module" => root.join("target/module/libmeshtrace.so"),
        _ => root.join("target/wasm32-wasip1/release/meshtrace_filter.wasm"),
    };
    for (p, what) in [(&collector, "the collector"), (&filter, "the filter")] {
        if !p.exists() {
            return Err(format!(
                "{what} is not built ({} is missing): run scripts/demo, which builds it",
                p.display()
            ));
        }
    }
    meshtrace_testkit::try_envoy_bin()?;
    let plugin_config = meshtrace_testkit::istio::plugin_config()?;
    let strategies = meshtrace_testkit::istio::strategies_path();

    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let pid_file = opts.dir.join("pids");
    stop_leftovers(&opts.dir, &pid_file);
    let taken = taken_ports();
    if !taken.is_empty() {
        return Err(format!(
            "these ports are already in use, so the demo cannot start:\n  {}\n\
             find what holds one with `ss -ltnp 'sport = :PORT'` and stop it, then rerun",
            taken.join("\n  ")
        ));
    }
    let logs = opts.dir.join("logs");
    let data = opts.dir.join("data");
    let mut wipe = vec![&logs];
    if opts.fresh {
        wipe.push(&data);
    } else if data.exists() {
        println!(
            "keeping the traces of earlier runs in {} (--fresh starts empty)",
            data.display()
        );
    }
    for d in wipe {
        let _ = std::fs::remove_dir_all(d);
    }
    for d in [&logs, &data] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut mesh = Mesh {
        procs: Vec::new(),
        envoys: Vec::new(),
        pid_file,
    };
    let started = Instant::now();
    let since_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());

    println!("starting the central collector on {CENTRAL} (all-in-one, embedded store)");
    // A collector in `mode` on `ip`'s default ports, storing under `data/dir`.
    let collector_cmd = |mode: &str, ip: &str, dir: &str| {
        let mut cmd = Command::new(&collector);
        cmd.arg("--mode")
            .arg(mode)
            .arg("--data-dir")
            .arg(data.join(dir));
        for (flag, port) in [
            ("--otlp-grpc-listen", 4317),
            ("--otlp-http-listen", 4318),
            ("--query-listen", 16686),
            ("--sampling-listen", 5778),
            ("--sampling-grpc-listen", 5779),
        ] {
            cmd.arg(flag).arg(format!("{ip}:{port}"));
        }
        cmd
    };
    let mut cmd = collector_cmd("all-in-one", CENTRAL, "central");
    cmd.arg("--sampling-strategies").arg(&strategies);
    mesh.spawn(
        "central-collector",
        &mut cmd,
        &logs.join("central-collector.log"),
    )?;
    wait_until("the central collector", Duration::from_secs(30), || {
        healthy(CENTRAL, 16686)
    })?;

    for (name, ip, calls) in SERVICES {
        println!("starting pod {name} on {ip}: app :8080, Envoy :15006 in / :15001 out, sidecar collector :4318");
        let mut cmd = collector_cmd("sidecar", ip, name);
        cmd.arg("--upstream")
            .arg(format!("http://{CENTRAL}:4317"))
            .arg("--envoy-admin")
            .arg(format!("{ip}:15000"))
            .arg("--sampling-upstream")
            .arg(format!("http://{CENTRAL}:5779"));
        mesh.spawn(
            &format!("{name}-sidecar-collector"),
            &mut cmd,
            &logs.join(format!("{name}-sidecar-collector.log")),
        )?;
        let mut cmd = Command::new(&opts.self_exe);
        cmd.arg("app")
            .arg(name)
            .arg("--listen")
            .arg(format!("{ip}:8080"))
            .arg("--egress")
            .arg(format!("{ip}:15001"));
        mesh.spawn(
            &format!("{name}-app"),
            &mut cmd,
            &logs.join(format!("{name}-app.log")),
        )?;

        let mut b = EnvoyBuilder::new(name, Filter::Meshtrace(plugin_config.to_string()), 4318);
        b.address = ip.into();
        b.admin_port = Some(15000);
        b.sampling_port = Some(5778);
        b.own_process_group = true;
        b.env.push(("INSTANCE_IP".into(), ip.into()));
        b.work_dir = Some(logs.join(format!("{name}-envoy")));
        b.routed_listener(
            15006,
            "INBOUND",
            vec![Route {
                domains: vec!["*".into()],
                cluster: "inbound|8080||".into(),
                address: ip.into(),
                port: 8080,
            }],
        );
        let routes = calls
            .iter()
            .map(|peer| {
                let peer_ip = SERVICES
                    .iter()
                    .find(|(n, _, _)| n == peer)
                    .map_or(CENTRAL, |(_, ip, _)| *ip);
                let fqdn = format!("{peer}.demo.svc.cluster.local");
                Route {
                    domains: vec![
                        peer.to_string(),
                        format!("{peer}:8080"),
                        fqdn.clone(),
                        format!("{fqdn}:8080"),
                    ],
                    cluster: format!("outbound|8080||{fqdn}"),
                    address: peer_ip.into(),
                    port: 15006,
                }
            })
            .collect();
        b.routed_listener(15001, "OUTBOUND", routes);
        let e = b
            .try_start()
            .map_err(|log| format!("the {name} Envoy did not start:\n{log}"))?;
        mesh.envoys.push((name.to_string(), e));
        mesh.record();
    }
    for (name, ip, _) in SERVICES {
        wait_until(&format!("the {name} pod"), Duration::from_secs(30), || {
            healthy(ip, 16686) && TcpStream::connect((ip, 8080)).is_ok()
        })?;
    }
    let prom_dir = opts.dir.join("prometheus");
    let sidecars: Vec<(&str, u16)> = SERVICES.iter().map(|(_, ip, _)| (*ip, 16686)).collect();
    let envoy_admins: Vec<(&str, u16)> = SERVICES.iter().map(|(_, ip, _)| (*ip, 15000)).collect();
    let prom_config = crate::monitoring::write_config(
        &prom_dir,
        &root,
        (CENTRAL, 16686),
        &sidecars,
        &envoy_admins,
    )?;
    println!(
        "starting Prometheus on {}:{} (scrapes every collector and Envoy; rules: istio/monitoring/rules.yaml)",
        PROMETHEUS.0, PROMETHEUS.1
    );
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", prom_config.display()))
        // Under data/: --fresh empties it with the store.
        .arg(format!(
            "--storage.tsdb.path={}",
            data.join("prometheus").display()
        ))
        .arg(format!(
            "--web.listen-address={}:{}",
            PROMETHEUS.0, PROMETHEUS.1
        ));
    mesh.spawn("prometheus", &mut cmd, &logs.join("prometheus.log"))
        .map_err(|e| format!("{e} (Debian's prometheus package: run scripts/setup)"))?;
    wait_until("Prometheus", Duration::from_secs(60), || {
        addr(PROMETHEUS.0, PROMETHEUS.1)
            .ok()
            .and_then(|a| request(a, "GET", "/-/ready", "demo", &[]).ok())
            .is_some_and(|m| m.status() == 200)
    })?;
    let frontend = addr(SERVICES[0].1, 15006)?;
    println!(
        "\nmeshtrace demo running ({}), {} requests/s to the frontend\n\
         \x20 UI           http://{CENTRAL}:16686/  (search, trace view with the critical path)\n\
         \x20 service map  http://{CENTRAL}:16686/map\n\
         \x20 hotspots     http://{CENTRAL}:16686/hotspots?service=frontend\n\
         \x20 services     curl -s http://{CENTRAL}:16686/api/services\n\
         \x20 traces       curl -s 'http://{CENTRAL}:16686/api/traces?service=frontend&limit=5'\n\
         \x20 dependencies curl -s http://{CENTRAL}:16686/api/dependencies\n\
         \x20 metrics      curl -s http://{CENTRAL}:16686/metrics\n\
         \x20 Prometheus   http://{}:{}/  (alerts: /alerts; try rate(jaeger_traces_per_service_total[5m]))\n\
         \x20 Monitor API  curl -s 'http://{CENTRAL}:16686/api/metrics/calls?service=frontend&groupByOperation=true'\n\
         \x20 strategies   curl -s 'http://{CENTRAL}:5778/api/sampling?service=frontend'  (edit istio/collector/strategies.json: reloaded live)\n\
         \x20 a request    curl -si -X POST http://{}/checkout -H 'host: frontend:8080' -H 'jaeger-debug-id: my-test'\n\
         \x20              (its traceresponse header names the trace: 00-<trace id>-<span id>-03;\n\
         \x20               jaeger-debug-id records it whatever the sampling, tagged for search)\n\
         \x20 Envoy stats  curl -s 'http://{}:15000/stats?filter=meshtrace'\n\
         \x20 logs         {}\n",
        match opts.duration {
            Some(d) => format!("stops after {} s", d.as_secs()),
            None => "Ctrl-C stops it".into(),
        },
        opts.rate,
        PROMETHEUS.0,
        PROMETHEUS.1,
        frontend,
        SERVICES[0].1,
        logs.display()
    );

    let traffic = Arc::new(Traffic::default());
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let generator = {
        let (s, t, rate) = (stop_traffic.clone(), traffic.clone(), opts.rate);
        std::thread::spawn(move || generate(frontend, rate, s, t))
    };
    let mut seen = Seen::default();
    let mut rates = Rates::default();
    let mut rate_line: Option<String> = None;
    let mut next_status = Instant::now() + opts.status_every;
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut exited: Option<String> = None;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(100));
        for p in &mut mesh.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                exited = Some(format!("{} exited ({status})", p.name));
            }
        }
        if exited.is_some() {
            break;
        }
        if Instant::now() >= next_status {
            next_status += opts.status_every;
            let example_before = seen.example.is_some();
            if let Err(e) = seen.refresh(since_us) {
                println!("(query API: {e})");
            }
            if let Some(m) = central_metrics() {
                rate_line = rates.update(&m).or(rate_line);
            }
            println!(
                "{}",
                status_line(
                    started.elapsed(),
                    &traffic,
                    &seen,
                    &mesh.envoys,
                    rate_line.as_deref()
                )
            );
            if let (false, Some(id)) = (example_before, &seen.example) {
                println!(
                    "example trace across all three services: {id}\n\
                     \x20 in the UI: http://{CENTRAL}:16686/trace/{id}\n\
                     \x20 curl -s http://{CENTRAL}:16686/api/traces/{id}"
                );
            }
        }
    }
    stop_traffic.store(true, Ordering::Relaxed);
    let _ = generator.join();
    if exited.is_none() {
        // Let the filters flush (1 s) and the sidecars forward before stopping them.
        std::thread::sleep(Duration::from_millis(2500));
        let _ = seen.refresh(since_us);
    }
    println!(
        "{}",
        status_line(
            started.elapsed(),
            &traffic,
            &seen,
            &mesh.envoys,
            rate_line.as_deref()
        )
    );
    println!("stopping every process the demo started");
    mesh.stop();
    match exited {
        Some(e) => Err(format!("{e}; its log is in {}", logs.display())),
        None => {
            println!(
                "stopped: {} requests sent, {} traces stored; logs and data kept in {}",
                traffic.sent.load(Ordering::Relaxed),
                seen.traces.len(),
                opts.dir.display()
            );
            Ok(())
        }
    }
}
