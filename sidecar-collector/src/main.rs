//! `meshtrace-collector`: its arguments and configuration, the runtime, and
//! the collector its mode declares (`service`), until SIGTERM or Ctrl-C.

use anyhow::{anyhow, Context};

/// mimalloc, not glibc's malloc: profiled under load, glibc's allocator took
/// about a third of the collector's CPU (`_int_malloc`, `unlink_chunk`,
/// `malloc_consolidate`, `_int_free`), mostly for decoding OTLP requests into
/// owned structures; `scripts/bench/collector` with `MESHTRACE_BASELINE_BIN`
/// compares the two builds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use meshtrace_collector::config::{parse_duration, Config, EngineKind, Mode};
use meshtrace_collector::store::lock::DirLock;
use meshtrace_collector::store::sqlite::{SqliteStore, StoreSettings};
use meshtrace_collector::store::Engine;
use std::path::PathBuf;
use std::time::Duration;

mod service;

/// The meshtrace collector: receives OTLP spans, stores them, serves Jaeger's query API.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// YAML configuration file (every key is documented in docs/configuration.md).
    #[arg(long, env = "MESHTRACE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded store (overrides `data_dir`).
    #[arg(long, env = "MESHTRACE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Run mode (overrides `mode`).
    #[arg(long, env = "MESHTRACE_MODE", value_enum)]
    mode: Option<Mode>,
    /// OTLP gRPC listen address (overrides `otlp.grpc_listen`).
    #[arg(long, env = "MESHTRACE_OTLP_GRPC_LISTEN")]
    otlp_grpc_listen: Option<String>,
    /// OTLP/HTTP listen address (overrides `otlp.http_listen`).
    #[arg(long, env = "MESHTRACE_OTLP_HTTP_LISTEN")]
    otlp_http_listen: Option<String>,
    /// Query API listen address (overrides `query.listen`).
    #[arg(long, env = "MESHTRACE_QUERY_LISTEN")]
    query_listen: Option<String>,
    /// Zipkin receiver listen address (overrides `receivers.zipkin.listen`).
    #[arg(long, env = "MESHTRACE_ZIPKIN_LISTEN")]
    zipkin_listen: Option<String>,
    /// Jaeger's receivers on or off, `true`/`false` (overrides `receivers.jaeger.enabled`;
    /// unset: on in all-in-one mode only). The sidecar collector turns them on so that apps
    /// exporting to a Jaeger agent on localhost keep working in the pod.
    #[arg(long, env = "MESHTRACE_JAEGER_RECEIVERS")]
    jaeger_receivers: Option<bool>,
    /// Jaeger UDP Thrift compact listen address, "" off (overrides `receivers.jaeger.thrift_compact_listen`).
    #[arg(long, env = "MESHTRACE_JAEGER_COMPACT_LISTEN")]
    jaeger_compact_listen: Option<String>,
    /// Jaeger UDP Thrift binary listen address, "" off (overrides `receivers.jaeger.thrift_binary_listen`).
    #[arg(long, env = "MESHTRACE_JAEGER_BINARY_LISTEN")]
    jaeger_binary_listen: Option<String>,
    /// Jaeger Thrift over HTTP listen address, "" off (overrides `receivers.jaeger.thrift_http_listen`).
    #[arg(long, env = "MESHTRACE_JAEGER_HTTP_LISTEN")]
    jaeger_http_listen: Option<String>,
    /// Jaeger gRPC (CollectorService) listen address, "" off (overrides `receivers.jaeger.grpc_listen`).
    #[arg(long, env = "MESHTRACE_JAEGER_GRPC_LISTEN")]
    jaeger_grpc_listen: Option<String>,
    /// Upstream OTLP gRPC endpoint in sidecar mode (overrides `sidecar.upstream`).
    #[arg(long, env = "MESHTRACE_UPSTREAM")]
    upstream: Option<String>,
    /// Jaeger sampling strategies file (overrides `sampling.strategies_file`).
    #[arg(long, env = "MESHTRACE_SAMPLING_STRATEGIES")]
    sampling_strategies: Option<PathBuf>,
    /// Sampling strategies listen address (overrides `sampling.http_listen`).
    #[arg(long, env = "MESHTRACE_SAMPLING_LISTEN")]
    sampling_listen: Option<String>,
    /// Sampling gRPC (SamplingManager) listen address (overrides `sampling.grpc_listen`).
    #[arg(long, env = "MESHTRACE_SAMPLING_GRPC_LISTEN")]
    sampling_grpc_listen: Option<String>,
    /// Sidecar mode: the central collector's sampling gRPC endpoint (overrides `sampling.upstream`).
    #[arg(long, env = "MESHTRACE_SAMPLING_UPSTREAM")]
    sampling_upstream: Option<String>,
    /// Sidecar mode: CA of the upstream's certificate (overrides `sidecar.ca_file`).
    #[arg(long, env = "MESHTRACE_UPSTREAM_CA_FILE")]
    upstream_ca_file: Option<PathBuf>,
    /// Sidecar mode: client certificate for mutual TLS (overrides `sidecar.client_cert_file`).
    #[arg(long, env = "MESHTRACE_UPSTREAM_CLIENT_CERT_FILE")]
    upstream_client_cert_file: Option<PathBuf>,
    /// Sidecar mode: its key (overrides `sidecar.client_key_file`).
    #[arg(long, env = "MESHTRACE_UPSTREAM_CLIENT_KEY_FILE")]
    upstream_client_key_file: Option<PathBuf>,
    /// Sidecar mode: file with the bearer token sent upstream (overrides `sidecar.token_file`).
    #[arg(long, env = "MESHTRACE_UPSTREAM_TOKEN_FILE")]
    upstream_token_file: Option<PathBuf>,
    /// Sidecar mode: Envoy's admin address, to re-export the filter's counters
    /// with help text (overrides `sidecar.envoy_admin`).
    #[arg(long, env = "MESHTRACE_ENVOY_ADMIN")]
    envoy_admin: Option<String>,
    /// Retention, e.g. 7d (overrides `retention`).
    #[arg(long, env = "MESHTRACE_RETENTION", value_parser = parse_duration)]
    retention: Option<Duration>,
    /// Storage engine, `sqlite` or `blocks` (overrides `store.engine`).
    #[arg(long, env = "MESHTRACE_STORE_ENGINE", value_enum)]
    store_engine: Option<EngineKind>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Converts the SQLite day partitions in `data_dir` into blocks of the
    /// blocks engine (`store.blocks.*`), one day at a time; each converted
    /// partition is renamed `.migrated`. Run it with the collector stopped,
    /// then start it with `store.engine: blocks`.
    Migrate,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            Config::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(m) = args.mode {
        cfg.mode = m;
    }
    if let Some(a) = &args.otlp_grpc_listen {
        cfg.otlp.grpc_listen = a.clone();
    }
    if let Some(a) = &args.otlp_http_listen {
        cfg.otlp.http_listen = a.clone();
    }
    if let Some(a) = &args.query_listen {
        cfg.query.listen = a.clone();
    }
    if let Some(a) = &args.zipkin_listen {
        cfg.receivers.zipkin.listen = a.clone();
    }
    let j = &mut cfg.receivers.jaeger;
    if let Some(on) = args.jaeger_receivers {
        j.enabled = Some(on);
    }
    for (flag, field) in [
        (&args.jaeger_compact_listen, &mut j.thrift_compact_listen),
        (&args.jaeger_binary_listen, &mut j.thrift_binary_listen),
        (&args.jaeger_http_listen, &mut j.thrift_http_listen),
        (&args.jaeger_grpc_listen, &mut j.grpc_listen),
    ] {
        if let Some(a) = flag {
            field.clone_from(a);
        }
    }
    if let Some(f) = &args.sampling_strategies {
        cfg.sampling.strategies_file = Some(f.clone());
    }
    if let Some(a) = &args.sampling_listen {
        cfg.sampling.http_listen = a.clone();
    }
    if let Some(a) = &args.sampling_grpc_listen {
        cfg.sampling.grpc_listen = a.clone();
    }
    if let Some(u) = &args.sampling_upstream {
        cfg.sampling.upstream = u.clone();
    }
    if let Some(u) = &args.upstream {
        cfg.sidecar.upstream = u.clone();
    }
    if let Some(a) = &args.envoy_admin {
        cfg.sidecar.envoy_admin = a.clone();
    }
    for (flag, key) in [
        (&args.upstream_ca_file, &mut cfg.sidecar.ca_file),
        (
            &args.upstream_client_cert_file,
            &mut cfg.sidecar.client_cert_file,
        ),
        (
            &args.upstream_client_key_file,
            &mut cfg.sidecar.client_key_file,
        ),
        (&args.upstream_token_file, &mut cfg.sidecar.token_file),
    ] {
        if let Some(f) = flag {
            *key = Some(f.clone());
        }
    }
    if let Some(r) = args.retention {
        cfg.retention = r;
    }
    if let Some(e) = args.store_engine {
        cfg.store.engine = e;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    // One TLS implementation for the whole process: the object store's and the
    // peers' HTTPS clients use it too.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let cfg = load(&args)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHTRACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file (the demo's, a container's) stays plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    // A log that cannot be written (its disk full) is skipped, never a crash:
    // no internal-error report to stderr, which may be that same full file.
    if cfg.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .log_internal_errors(false)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .log_internal_errors(false)
            .with_env_filter(filter)
            .init();
    }
    // A sidecar shares its pod with the app: one thread is plenty and keeps
    // memory small. Central collectors use every core.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match (cfg.queue.num_workers, cfg.mode) {
        (0, Mode::Sidecar) => {
            builder.worker_threads(1);
        }
        (0, _) => {}
        (n, _) => {
            builder.worker_threads(n);
        }
    }
    let rt = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(Command::Migrate) = args.command {
        return migrate(&cfg);
    }
    rt.block_on(service::run(cfg))
}

/// `meshtrace-collector migrate`: SQLite partitions → blocks.
fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let _dir_lock = DirLock::acquire(&cfg.data_dir)?;
    let sqlite = SqliteStore::open(&cfg.data_dir, StoreSettings::default()).with_context(|| {
        format!(
            "data_dir: opening the SQLite store in {}",
            cfg.data_dir.display()
        )
    })?;
    let mut blocks_cfg = cfg.clone();
    blocks_cfg.store.engine = meshtrace_collector::config::EngineKind::Blocks;
    let Engine::Blocks(store) = service::store::open_engine(&blocks_cfg, 0)? else {
        return Err(anyhow!("the blocks engine did not open"));
    };
    let days = sqlite.partition_days();
    tracing::info!(
        partitions = days.len(),
        "migrating SQLite partitions to blocks"
    );
    let started = std::time::Instant::now();
    let mut total = 0;
    for day in days {
        let spans = sqlite
            .read_day(day, 100_000, |rows| store.import(rows))
            .with_context(|| format!("migrating partition {day}"))?;
        sqlite
            .set_migrated(day)
            .with_context(|| format!("setting partition {day} aside"))?;
        total += spans;
        tracing::info!(
            partition = day,
            spans,
            "partition migrated (renamed .migrated)"
        );
    }
    tracing::info!(
        spans = total,
        took_s = started.elapsed().as_secs_f64(),
        "migration done: start the collector with store.engine: blocks"
    );
    Ok(())
}
