//! `meshtrace-collector`: start-up, listeners, graceful shutdown.

use anyhow::{anyhow, Context};

/// mimalloc, not glibc's malloc: profiled under load, glibc's allocator took
/// about a third of the collector's CPU (`_int_malloc`, `unlink_chunk`,
/// `malloc_consolidate`, `_int_free`), mostly for decoding OTLP requests into
/// owned structures; `scripts/bench/collector` with `MESHTRACE_BASELINE_BIN`
/// compares the two builds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use meshtrace_collector::config::Durability;
use meshtrace_collector::config::{parse_duration, Config, EngineKind, Mode, ServerConfig};
use meshtrace_collector::filter_stats::FilterStats;
use meshtrace_collector::forward::{ForwardSettings, Forwarder};
use meshtrace_collector::ingest::{Redaction, TimeWindow};
use meshtrace_collector::listen;
use meshtrace_collector::memory;
use meshtrace_collector::metrics::export::Exporter;
use meshtrace_collector::metrics::graph::GraphSettings;
use meshtrace_collector::metrics::{MetricsSettings, SpanMetrics};
use meshtrace_collector::pipeline::{Pipeline, PipelineSettings};
use meshtrace_collector::query::{self, QueryState};
use meshtrace_collector::receiver::grpc::{self, GrpcReceiver};
use meshtrace_collector::receiver::http::{self, HttpState};
use meshtrace_collector::sampling::adaptive::{Adaptive, Settings as AdaptiveSettings};
use meshtrace_collector::sampling::upstream::UpstreamCache;
use meshtrace_collector::sampling::{self, Provider, Strategies};
use meshtrace_collector::security;
use meshtrace_collector::sink::{Sink, Target};
use meshtrace_collector::store::history::HistoryDb;
use meshtrace_collector::store::lock::DirLock;
use meshtrace_collector::store::sqlite::{self as sqlite_store, SqliteStore, StoreSettings};
use meshtrace_collector::store::{blocks, Engine};
use meshtrace_collector::telemetry::{self, Telemetry};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// The listeners' transports: TLS when `tls.cert_file` is set; the OTLP
/// listeners also ask for client certificates when `tls.client_ca_file` is.
struct Transports {
    ingest: listen::Transport,
    other: listen::Transport,
}

fn listener_transports(cfg: &Config) -> anyhow::Result<Transports> {
    let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) else {
        return Ok(Transports {
            ingest: listen::Transport::Plain,
            other: listen::Transport::Plain,
        });
    };
    let other = security::acceptor(cert, key, None).map_err(|e| anyhow!(e))?;
    let ingest = match &cfg.tls.client_ca_file {
        Some(ca) => security::acceptor(cert, key, Some(ca)).map_err(|e| anyhow!(e))?,
        None => other.clone(),
    };
    Ok(Transports {
        ingest: listen::Transport::Tls(ingest),
        other: listen::Transport::Tls(other),
    })
}

/// Every listener's limits, the connection limit fitted to the open-files
/// limit (`listen::fit_connections`).
fn connection_limits(s: &ServerConfig) -> listen::Limits {
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let max_connections = listen::fit_connections(s.max_connections, nofile);
    if max_connections < s.max_connections {
        tracing::warn!(
            configured = s.max_connections,
            used = max_connections,
            open_files_limit = nofile,
            "server.max_connections lowered to fit the open-files limit"
        );
    }
    listen::Limits {
        max_connections,
        header_timeout: s.header_timeout,
        idle_timeout: s.idle_timeout,
        request_timeout: s.request_timeout,
        timeout_name: "server.request_timeout",
    }
}

async fn bind(key: &str, addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("{key}: cannot listen on {addr} (is another process using the port?)")
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
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
    rt.block_on(run(cfg))
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
    let Engine::Blocks(store) = open_engine(&blocks_cfg, 0)? else {
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

/// The memory limiter and the largest message it lets in (`memory::Sizing`).
fn memory_limits(cfg: &Config, telemetry: &Telemetry) -> (Arc<memory::MemoryLimiter>, usize) {
    let sizing = memory::Sizing::new(
        cfg.memory.limit_bytes,
        cfg.memory.decode_bytes,
        cfg.otlp.max_message_bytes,
        memory::cgroup_limit(),
    );
    if sizing.max_message_bytes < cfg.otlp.max_message_bytes {
        tracing::warn!(
            configured = cfg.otlp.max_message_bytes,
            used = sizing.max_message_bytes,
            "otlp.max_message_bytes lowered to memory.decode_bytes: a larger message could never be decoded"
        );
    }
    tracing::info!(
        limit_bytes = sizing.limit_bytes.unwrap_or(0),
        decode_bytes = sizing.decode_bytes,
        max_message_bytes = sizing.max_message_bytes,
        "memory limits"
    );
    let limiter = memory::MemoryLimiter::new(
        sizing.decode_bytes,
        sizing.limit_bytes,
        telemetry.metrics.memory.clone(),
    );
    (limiter, sizing.max_message_bytes)
}

/// The span metrics (`metrics.enabled`), registered on `/metrics`, with their
/// per-minute history in the data directory.
/// Adaptive sampling's counts shared through the blocks engine's bucket.
struct BucketCounts(blocks::shared::Shared);

impl meshtrace_collector::sampling::adaptive::CountsExchange for BucketCounts {
    fn exchange(
        &self,
        index: u64,
        mine: &meshtrace_collector::sampling::adaptive::Counts,
    ) -> Result<Option<meshtrace_collector::sampling::adaptive::Counts>, String> {
        self.0.publish(index, mine).map_err(|e| e.to_string())?;
        let all: Vec<meshtrace_collector::sampling::adaptive::Counts> = self
            .0
            .gather(index.saturating_sub(1))
            .map_err(|e| e.to_string())?;
        if all.is_empty() {
            return Ok(None);
        }
        let mut sum: std::collections::BTreeMap<(String, String), (f64, u64)> = Default::default();
        for (service, operation, requests, spans) in all.into_iter().flatten() {
            let e = sum.entry((service, operation)).or_default();
            e.0 += requests;
            e.1 += spans;
        }
        Ok(Some(
            sum.into_iter()
                .map(|((s, o), (r, n))| (s, o, r, n))
                .collect(),
        ))
    }
}

/// The configured storage engine, opened in `data_dir`.
fn open_engine(cfg: &Config, memory_limit: u64) -> anyhow::Result<Engine> {
    let durability = match cfg.store.durability {
        Durability::Fsync => sqlite_store::Durability::Fsync,
        Durability::Os => sqlite_store::Durability::Os,
    };
    let opening = || format!("data_dir: opening the store in {}", cfg.data_dir.display());
    use meshtrace_collector::config::EngineKind;
    Ok(match cfg.store.engine {
        EngineKind::Sqlite => {
            let settings = StoreSettings {
                durability,
                max_open_partitions: cfg.store.max_open_partitions,
            };
            Engine::Sqlite(Arc::new(
                SqliteStore::open(&cfg.data_dir, settings).with_context(opening)?,
            ))
        }
        EngineKind::Blocks => {
            let b = &cfg.store.blocks;
            let read_key = |inline: &str, file: &Option<std::path::PathBuf>, key: &str| match file {
                Some(f) => std::fs::read_to_string(f)
                    .map(|s| s.trim().to_string())
                    .with_context(|| format!("store.blocks.s3.{key}: reading {}", f.display())),
                None => Ok(inline.to_string()),
            };
            let s3 = blocks::backend::S3 {
                endpoint: b.s3.endpoint.clone(),
                region: b.s3.region.clone(),
                access_key_id: read_key(
                    &b.s3.access_key_id,
                    &b.s3.access_key_id_file,
                    "access_key_id_file",
                )?,
                secret_access_key: read_key(
                    &b.s3.secret_access_key,
                    &b.s3.secret_access_key_file,
                    "secret_access_key_file",
                )?,
                path_style: b.s3.path_style.unwrap_or(!b.s3.endpoint.is_empty()),
                keep_alive: b.s3.keep_alive.unwrap_or(true),
                ..Default::default()
            };
            let backend = if b.backend.is_empty() {
                cfg.data_dir.join("blocks").display().to_string()
            } else {
                b.backend.clone()
            };
            let location = blocks::backend::Location::parse(&backend, &s3)
                .map_err(|e| anyhow!("store.blocks.backend: {e}"))?;
            let replica = [
                b.replica.clone(),
                std::env::var("POD_NAME").unwrap_or_default(),
                std::env::var("HOSTNAME").unwrap_or_default(),
            ]
            .into_iter()
            .find(|r| !r.is_empty())
            .unwrap_or_else(|| "local".into());
            let settings = blocks::BlockSettings {
                durability,
                location,
                replica,
                max_age: b.max_age,
                max_bytes: match b.max_bytes {
                    0 if memory_limit == 0 => 128 << 20,
                    0 => (memory_limit / 8).clamp(16 << 20, 512 << 20),
                    n => n,
                },
                wal_max_bytes: cfg.store.wal.max_bytes,
                rows_per_group: b.rows_per_group,
                poll_interval: b.poll_interval,
                compaction_interval: b.compaction_interval,
                cache_bytes: b.cache_bytes,
                reserve_bytes: b.reserve_bytes,
                metadata_bytes: match b.metadata_bytes {
                    0 if memory_limit == 0 => 256 << 20,
                    0 => (memory_limit / 8).clamp(16 << 20, 1 << 30),
                    n => n,
                },
            };
            Engine::Blocks(
                blocks::BlockStore::open(&cfg.data_dir, settings)
                    .with_context(|| format!("{} (blocks in {backend})", opening()))?,
            )
        }
    })
}

fn span_metrics(cfg: &Config, telemetry: &Telemetry) -> anyhow::Result<Option<Arc<SpanMetrics>>> {
    let m = &cfg.metrics;
    if !m.enabled {
        return Ok(None);
    }
    let history = HistoryDb::open(&cfg.data_dir, &m.duration_buckets_ms).with_context(|| {
        format!(
            "data_dir: opening the metrics history in {}",
            cfg.data_dir.display()
        )
    })?;
    let metrics = Arc::new(SpanMetrics::new(
        MetricsSettings {
            bounds_ms: m.duration_buckets_ms.clone(),
            max_series: m.max_series,
            graph: GraphSettings {
                max_edges: m.service_graph_max_edges,
                wait_ms: m.service_graph_wait.as_millis() as u64,
                max_pending: m.service_graph_max_pending,
            },
            history_retention_s: m.history_retention.as_secs() as i64,
        },
        Some(history),
    ));
    telemetry.register_collector(Box::new(Exporter(metrics.clone())));
    Ok(Some(metrics))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let telemetry = Telemetry::new();
    let (limiter, max_message_bytes) = memory_limits(&cfg, &telemetry);
    let memory_sampler = limiter.spawn_sampler(cfg.memory.check_interval);
    let sampling_metrics = telemetry.metrics.sampling.clone();
    // Strategies first: a bad file stops start-up before any port is bound.
    let strategies = Arc::new(
        Strategies::open(
            cfg.sampling.strategies_file.clone(),
            sampling_metrics.clone(),
        )
        .map_err(|e| anyhow!(e))?,
    );
    let adaptive =
        (!cfg.sampling.adaptive.services.is_empty() && cfg.mode != Mode::Sidecar).then(|| {
            let a = &cfg.sampling.adaptive;
            Arc::new(Adaptive::new(
                AdaptiveSettings {
                    services: a.services.clone(),
                    target_traces_per_second: a.target_traces_per_second,
                    min_sampling_probability: a.min_sampling_probability,
                    lower_bound_traces_per_minute: a.lower_bound_traces_per_minute,
                    interval: a.calculation_interval,
                    smoothing: a.smoothing,
                    max_operations_per_service: a.max_operations_per_service,
                },
                sampling_metrics.clone(),
            ))
        });
    let sc = &cfg.sidecar;
    let upstream_tls = security::client_tls(
        sc.ca_file.as_deref(),
        sc.client_cert_file
            .as_deref()
            .zip(sc.client_key_file.as_deref()),
    )
    .map_err(|e| anyhow!(e))?;
    let upstream_token = sc
        .token_file
        .as_deref()
        .map(security::bearer_from_file)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    let transports = listener_transports(&cfg)?;
    let tokens = |purpose, key, listed: &[String], file: &Option<PathBuf>| {
        security::load_tokens(key, listed, file.as_deref())
            .map(|t| security::Tokens {
                purpose,
                tokens: Arc::new(t),
            })
            .map_err(|e| anyhow!(e))
    };
    let a = &cfg.auth;
    let ingest_tokens = tokens(
        "ingest",
        "auth.ingest_tokens",
        &a.ingest_tokens,
        &a.ingest_tokens_file,
    )?;
    let query_tokens = tokens(
        "query",
        "auth.query_tokens",
        &a.query_tokens,
        &a.query_tokens_file,
    )?;
    let reload_interval = cfg.sampling.reload_interval;
    let provider = Arc::new(if cfg.sampling.upstream.is_empty() {
        Provider::Local {
            strategies: strategies.clone(),
            adaptive: adaptive.clone(),
        }
    } else {
        Provider::Upstream(Arc::new(
            UpstreamCache::new(
                &cfg.sampling.upstream,
                reload_interval,
                Duration::from_millis(cfg.sidecar.timeout_ms),
                upstream_tls.clone(),
                upstream_token.clone(),
                sampling_metrics.clone(),
            )
            .map_err(|e| anyhow!(e))?,
        ))
    });
    let mut filter_stats_task = None;
    // One process per data directory: held until `run` returns (or the process exits).
    let _dir_lock = (cfg.mode != Mode::Sidecar)
        .then(|| DirLock::acquire(&cfg.data_dir))
        .transpose()?;
    // The sink, and what must be drained at shutdown.
    let (target, query_app, writer, forwarder, stored, span_metrics) = if cfg.mode == Mode::Sidecar
    {
        let sc = &cfg.sidecar;
        let settings = ForwardSettings {
            upstream: sc.upstream.clone(),
            queue_bytes: sc.queue_bytes,
            batch_bytes: sc.batch_bytes,
            max_in_flight: sc.max_in_flight,
            retry_initial: Duration::from_millis(sc.retry_initial_ms),
            retry_max: Duration::from_millis(sc.retry_max_ms),
            max_retry_time: sc.max_retry_time,
            timeout: Duration::from_millis(sc.timeout_ms),
            shutdown_grace: sc.shutdown_grace,
            tls: upstream_tls.clone(),
            token: upstream_token.clone(),
        };
        let (f, shutdown, task) = Forwarder::start(settings, telemetry.metrics.counters.clone())
            .map_err(|e| anyhow!(e))?;
        if !sc.envoy_admin.is_empty() {
            let stats = FilterStats::default();
            telemetry.register_collector(Box::new(stats.clone()));
            filter_stats_task = Some(stats.spawn(sc.envoy_admin.clone(), Duration::from_secs(5)));
        }
        // A sidecar has no store: its query port serves metrics and health only.
        let app = telemetry::router(telemetry.clone());
        (
            Target::Forward(f),
            app,
            None,
            Some((shutdown, task)),
            None,
            None,
        )
    } else {
        let store = open_engine(&cfg, limiter.limit_bytes().unwrap_or(0))?;
        let archive = if cfg.archive.enabled {
            let backend = match &store {
                Engine::Blocks(b) => b.backend(),
                Engine::Sqlite(_) => Arc::new(
                    blocks::backend::Backend::open(&blocks::backend::Location::Local(
                        cfg.data_dir.clone(),
                    ))
                    .context("archive: opening data_dir/archive")?,
                ),
            };
            Some(Arc::new(blocks::archive::Archive::new(
                backend,
                cfg.archive.retention,
            )))
        } else {
            None
        };
        if let (Engine::Blocks(b), Some(a)) = (&store, &adaptive) {
            a.share_counts(Arc::new(BucketCounts(blocks::shared::Shared::new(
                b.backend(),
                b.replica(),
                "adaptive-sampling",
            ))));
        }
        let peers_router = match &store {
            Engine::Blocks(b) => {
                let bc = &cfg.store.blocks;
                if !bc.peers.is_empty() || !bc.peers_dns.is_empty() {
                    let exclude: Vec<std::net::IpAddr> = std::env::var("POD_IP")
                        .ok()
                        .and_then(|ip| ip.parse().ok())
                        .into_iter()
                        .collect();
                    // The query port speaks TLS: peers are checked against the
                    // cluster's CA (tls.client_ca_file, else the system's roots).
                    let ca = match (&cfg.tls.cert_file, &cfg.tls.client_ca_file) {
                        (Some(_), Some(ca)) => Some(std::fs::read(ca).with_context(|| {
                            format!("tls.client_ca_file: reading {}", ca.display())
                        })?),
                        (Some(_), None) => Some(Vec::new()),
                        _ => None,
                    };
                    b.set_peers(
                        blocks::peers::Peers::new(
                            bc.peers.clone(),
                            (!bc.peers_dns.is_empty()).then(|| bc.peers_dns.clone()),
                            exclude,
                            bc.peer_timeout,
                            query_tokens.tokens.first().cloned(),
                            ca.as_deref(),
                        )
                        .context("store.blocks.peers")?,
                    );
                }
                Some(blocks::peers::router(
                    b.clone(),
                    bc.peer_timeout,
                    memory::query_bytes(cfg.query.max_bytes, limiter.limit_bytes()),
                ))
            }
            Engine::Sqlite(_) => None,
        };
        let reader = match &archive {
            Some(a) => Arc::new(blocks::archive::WithArchive {
                store: store.reader(),
                archive: a.clone(),
            }) as Arc<dyn meshtrace_collector::store::SpanReader>,
            None => store.reader(),
        };
        let span_metrics = span_metrics(&cfg, &telemetry)?;
        if let (Engine::Blocks(b), Some(m)) = (&store, &span_metrics) {
            m.share(blocks::shared::Shared::new(b.backend(), b.replica(), "spm"));
        }
        let (pipeline, writer) = Pipeline::start(
            store.writer(),
            PipelineSettings {
                queue_size: cfg.queue.queue_size,
                max_batch: cfg.queue.max_batch_requests,
                max_bytes: cfg.queue.max_bytes,
                batch_timeout: Duration::from_millis(cfg.queue.batch_timeout_ms),
            },
            telemetry.metrics.counters.clone(),
            span_metrics.clone(),
        )
        .context("starting the span writer thread")?;
        let app = query::router(QueryState {
            store: reader,
            archive: archive.clone(),
            metrics: span_metrics.clone(),
            sampling: Some(provider.clone()),
            budget: query::answer::Budget::new(
                cfg.query.max_traces,
                cfg.query.max_spans,
                cfg.query.max_concurrent,
                Some(limiter.clone()),
            )
            .limits(
                cfg.query.timeout,
                memory::query_bytes(cfg.query.max_bytes, limiter.limit_bytes()),
            ),
        })
        .route_layer(axum::middleware::from_fn_with_state(
            telemetry.clone(),
            telemetry::track_latency,
        ))
        .merge(telemetry::router(telemetry.clone()))
        .merge(peers_router.unwrap_or_default())
        // Last: the UI holds the fallback that answers deep links with its page.
        .merge(meshtrace_collector::ui::router());
        let sink = Target::Store {
            pipeline,
            // Only SQLite's tag table reads them: the blocks engine finds every
            // tag by its hash, and making them was an allocation or three per span
            // for nothing (freed on the writer's thread).
            indexed_tags: Arc::new(match cfg.store.engine {
                EngineKind::Sqlite => cfg.indexed_tags.clone(),
                EngineKind::Blocks => Vec::new(),
            }),
            window: TimeWindow {
                max_age: cfg.max_span_age.unwrap_or(cfg.retention),
                max_future: cfg.max_span_future,
            },
            adaptive: adaptive.clone(),
        };
        (
            sink,
            app,
            Some(writer),
            None,
            Some((store, archive)),
            span_metrics,
        )
    };
    let (store, archive) = match stored {
        Some((s, a)) => (Some(s), a),
        None => (None, None),
    };
    // Ports last: a bad data directory or upstream fails before anything listens.
    let grpc_listener = bind("otlp.grpc_listen", &cfg.otlp.grpc_listen).await?;
    let otlp_listener = bind("otlp.http_listen", &cfg.otlp.http_listen).await?;
    let query_listener = bind("query.listen", &cfg.query.listen).await?;
    let sampling_listener = bind("sampling.http_listen", &cfg.sampling.http_listen).await?;
    let sampling_grpc_listener = bind("sampling.grpc_listen", &cfg.sampling.grpc_listen).await?;
    // Integrity after the ports: a large store does not delay start-up.
    if let Some(store) = store.clone() {
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let (checked, aside) = store.check_partitions();
            tracing::info!(
                checked,
                set_aside = aside,
                took_ms = started.elapsed().as_millis() as u64,
                "store partitions checked"
            );
        });
    }
    let reloader = strategies.spawn_reloader(reload_interval);
    let adaptive_task = adaptive.as_ref().map(|a| a.spawn());
    let summary_task = telemetry.spawn_summary(cfg.log_summary_interval);
    let refresher = match &*provider {
        Provider::Upstream(c) => Some(c.spawn_refresher()),
        Provider::Local { .. } => None,
    };
    tracing::info!(
        mode = ?cfg.mode,
        otlp_grpc = %cfg.otlp.grpc_listen,
        otlp_http = %cfg.otlp.http_listen,
        query = %cfg.query.listen,
        upstream = %cfg.sidecar.upstream,
        data_dir = %cfg.data_dir.display(),
        "meshtrace collector started"
    );

    // The span metrics' minute is written even when no span follows it.
    let metrics_task = span_metrics.clone().map(|m| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let m = m.clone();
                let _ = tokio::task::spawn_blocking(move || m.flush_due()).await;
            }
        })
    });
    let health_task = store.clone().map(|store| {
        let telemetry = telemetry.clone();
        let every = cfg.store.health_interval;
        let idle = cfg.store.partition_idle_timeout;
        tokio::spawn(async move {
            // Ready while the store can be written or read; a store that can do
            // neither (no file descriptors, the volume gone) takes the pod out of rotation.
            // Partitions idle for store.partition_idle_timeout are closed on the way.
            let mut last_close = std::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let s = store.clone();
                let close = last_close.elapsed() >= idle.min(Duration::from_secs(60));
                if close {
                    last_close = std::time::Instant::now();
                }
                let checked = tokio::task::spawn_blocking(move || {
                    s.health(close.then_some(idle))
                })
                .await;
                match checked {
                    Ok((Err(w), Err(r))) => {
                        tracing::error!(write = %w, read = %r, "the store can neither be written nor read: not ready");
                        telemetry.set_not_ready(format!(
                            "the store can neither be written ({w}) nor read ({r})"
                        ));
                    }
                    Ok(_) => telemetry.set_ready(),
                    Err(_) => {}
                }
            }
        })
    });
    let retention_task = store.map(|store| {
        let retention = cfg.retention;
        tokio::spawn(async move {
            loop {
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                let cutoff = now_us - retention.as_micros() as i64;
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.apply_retention(cutoff)).await {
                    Ok(Ok(n)) if n > 0 => {
                        tracing::info!(partitions = n, "retention dropped partitions")
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                    _ => {}
                }
                if let Some(a) = archive.clone() {
                    match tokio::task::spawn_blocking(move || a.apply_retention(now_us)).await {
                        Ok(Ok(n)) if n > 0 => {
                            tracing::info!(traces = n, "archive retention dropped archived traces")
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "archive retention failed"),
                        _ => {}
                    }
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        })
    });

    telemetry.set_ready();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let sink = Sink {
        target,
        redaction: Arc::new(
            Redaction::new(&cfg.redaction.keys, &cfg.redaction.allow)
                .with_patterns(&cfg.redaction.patterns)?,
        ),
    };
    let reserve = axum::middleware::from_fn_with_state(
        memory::IngestMemory {
            limiter: limiter.clone(),
            max_message_bytes: max_message_bytes as u64,
        },
        memory::reserve_request,
    );
    // Outermost: a full queue refuses before the memory reservation and the body.
    let room = axum::middleware::from_fn_with_state(
        sink.clone(),
        meshtrace_collector::sink::refuse_when_full,
    );
    let http_app = http::router(HttpState {
        sink: sink.clone(),
        max_message_bytes,
    })
    .route_layer(reserve.clone())
    .route_layer(room.clone())
    .merge(telemetry::health_router(telemetry.clone()));
    let grpc_service = grpc::service(GrpcReceiver { sink: sink.clone() }, max_message_bytes);
    drop(sink);
    let limits = connection_limits(&cfg.server);
    let conns = telemetry.metrics.connections.clone();
    // Queries may take longer than an export should (an OTel SDK gives up after 10 s).
    // A read stops at `query.timeout` and says so itself; the listener's own
    // timeout, a second later, only catches what never reached a read.
    let query_limits = listen::Limits {
        request_timeout: cfg.query.timeout + Duration::from_secs(1),
        timeout_name: "query.timeout",
        ..limits
    };
    let grpc_app = tonic::service::Routes::new(grpc_service)
        .into_axum_router()
        .route_layer(reserve)
        .route_layer(room)
        .route_layer(axum::middleware::from_fn(grpc::never_fits_is_final));
    let sampling_grpc_app =
        tonic::service::Routes::new(sampling::grpc_service(provider.clone())).into_axum_router();
    let sampling_app =
        sampling::router(provider.clone()).merge(telemetry::health_router(telemetry.clone()));
    // Each listener: who may call it (tokens), how it is spoken (TLS, client
    // certificates for OTLP) and its limits.
    let (ingest, other) = (&transports.ingest, &transports.other);
    let listeners = [
        (
            "otlp.http_listen",
            otlp_listener,
            http_app,
            &ingest_tokens,
            ingest,
            limits,
        ),
        (
            "otlp.grpc_listen",
            grpc_listener,
            grpc_app,
            &ingest_tokens,
            ingest,
            limits,
        ),
        (
            "sampling.grpc_listen",
            sampling_grpc_listener,
            sampling_grpc_app,
            &ingest_tokens,
            other,
            limits,
        ),
        (
            "sampling.http_listen",
            sampling_listener,
            sampling_app,
            &ingest_tokens,
            other,
            limits,
        ),
        (
            "query.listen",
            query_listener,
            query_app,
            &query_tokens,
            other,
            query_limits,
        ),
    ];
    let servers = listeners.map(|(name, listener, app, tokens, transport, limits)| {
        let app = app.layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            security::require_token,
        ));
        tokio::spawn(listen::serve(
            name,
            listener,
            app,
            limits,
            transport.clone(),
            conns.clone(),
            wait(stop_rx.clone()),
        ))
    });
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight exports, draining the queue");
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    memory_sampler.abort();
    for t in [
        reloader,
        adaptive_task,
        refresher,
        summary_task,
        health_task,
        metrics_task,
        filter_stats_task,
    ]
    .into_iter()
    .flatten()
    {
        t.abort();
    }
    if let Some(t) = retention_task {
        t.abort();
    }
    if let Some(w) = writer {
        tokio::task::spawn_blocking(move || w.join()).await.ok();
    }
    if let Some(m) = span_metrics {
        tokio::task::spawn_blocking(move || m.flush_now())
            .await
            .ok();
    }
    if let Some((shutdown, task)) = forwarder {
        // Every sender is gone: the task ends once the queue is forwarded, or
        // once the grace period is over (what is left is counted as dropped).
        let grace = cfg.sidecar.shutdown_grace;
        shutdown.begin(grace);
        if tokio::time::timeout(grace + Duration::from_secs(15), task)
            .await
            .is_err()
        {
            tracing::warn!("forwarding did not end after the shutdown grace; exiting anyway");
        }
        let c = &telemetry.metrics.counters;
        tracing::info!(
            forwarded = c.spans_forwarded.get(),
            dropped = c.spans_dropped.get(),
            "forwarding ended"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
