//! `meshtrace-demo`: the loopback mesh behind `scripts/demo`.
//!
//! ```text
//! meshtrace-demo [--duration SECONDS] [--rate REQUESTS_PER_SECOND] [--fresh]
//! meshtrace-demo app NAME --listen ADDR --egress ADDR     (one demo service; the demo starts these)
//! ```

use clap::{Parser, Subcommand};
use meshtrace_demo::app::App;
use meshtrace_demo::orchestrator::{self, Options};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A loopback mesh: the central collector on 127.0.0.1 (query :16686, strategies :5778),
/// and three services (frontend, checkout, inventory) on 127.0.0.11-13, each behind an
/// Envoy sidecar running the meshtrace filter and a sidecar collector. Sends traffic and
/// prints what is traced. Ctrl-C (or --duration) stops every process it started.
#[derive(Parser, Debug)]
#[command(name = "scripts/demo", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    app: Option<Sub>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Requests per second sent to the frontend.
    #[arg(long, default_value_t = 20.0, value_parser = parse_rate)]
    rate: f64,
    /// Start with an empty store (otherwise traces from earlier runs are kept).
    #[arg(long)]
    fresh: bool,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// One demo service (the demo starts these itself).
    App {
        /// frontend, checkout or inventory.
        name: String,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        egress: SocketAddr,
    },
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if rate > 0.0 && rate <= 1000.0 {
        Ok(rate)
    } else {
        Err("between 0 and 1000 requests per second".into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.app {
        Some(Sub::App {
            name,
            listen,
            egress,
        }) => App { name, egress }.serve(listen),
        None => run_demo(cli.duration, cli.rate, cli.fresh),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtrace demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo(duration: Option<u64>, rate: f64, fresh: bool) -> Result<(), String> {
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
            fresh,
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
