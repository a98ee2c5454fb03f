//! `meshtrace-demo`: the loopback mesh behind `scripts/demo`.
//!
//! ```text
//! meshtrace-demo [--duration SECONDS] [--rate REQUESTS_PER_SECOND]
//! meshtrace-demo app NAME --listen ADDR --egress ADDR     (one demo service; the demo starts these)
//! ```

use meshtrace_demo::app::App;
use meshtrace_demo::orchestrator::{self, Options};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: scripts/demo [--duration SECONDS] [--rate REQUESTS_PER_SECOND]

Starts a loopback mesh: the central collector on 127.0.0.1 (query :16686, strategies :5778),
and three services (frontend, checkout, inventory) on 127.0.0.11-13, each behind an Envoy
sidecar running the meshtrace filter and a sidecar collector. Sends traffic and prints what
is traced. Ctrl-C (or --duration) stops every process it started.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("app") {
        run_app(&args[1..])
    } else {
        run_demo(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtrace demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after `flag`, parsed.
fn flag<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args
                .get(i + 1)
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))?;
            v.parse()
                .map(Some)
                .map_err(|e| format!("{name} {v:?}: {e}\n\n{USAGE}"))
        }
    }
}

fn run_app(args: &[String]) -> Result<(), String> {
    let name = args.first().ok_or("app: which service?")?.clone();
    let listen: SocketAddr = flag(args, "--listen")?.ok_or("app: --listen ADDR is required")?;
    let egress: SocketAddr = flag(args, "--egress")?.ok_or("app: --egress ADDR is required")?;
    App { name, egress }.serve(listen)
}

fn run_demo(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && matches!(args[i - 1].as_str(), "--duration" | "--rate");
        if !is_value && !matches!(a.as_str(), "--duration" | "--rate") {
            return Err(format!("unknown argument {a:?}\n\n{USAGE}"));
        }
    }
    let duration: Option<u64> = flag(args, "--duration")?;
    let rate: f64 = flag(args, "--rate")?.unwrap_or(20.0);
    if !(rate > 0.0 && rate <= 1000.0) {
        return Err(format!(
            "--rate {rate}: between 0 and 1000 requests per second"
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone())?;
    let self_exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let dir = meshtrace_testkit::workspace_root().join("target/demo");
    orchestrator::run(
        Options {
            duration: duration.map(Duration::from_secs),
            rate,
            status_every: Duration::from_secs(5),
            self_exe,
            dir,
        },
        stop,
    )
}

/// Sets `stop` on SIGINT (Ctrl-C) or SIGTERM.
fn watch_signals(stop: Arc<AtomicBool>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = tx.send(Err("cannot watch SIGINT/SIGTERM".to_string()));
                return;
            };
            let _ = tx.send(Ok(()));
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            println!("\nstopping (signal received)");
            stop.store(true, Ordering::Relaxed);
        });
    });
    rx.recv()
        .map_err(|_| "signal watcher died".to_string())
        .and_then(|r| r)
}
