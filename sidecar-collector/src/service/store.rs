//! The store exporter (central and all-in-one modes): the storage engine in
//! `data_dir`, the archive, the peers, the span writer thread with the span
//! metrics it feeds, and the store's background work (partition checks,
//! health, retention). Also what the query service reads.

use super::pipelines::{Pipeline, Processor};
use super::{Context, System};
use anyhow::{anyhow, Context as _};
use meshtrace_collector::config::{Config, Durability, EngineKind};
use meshtrace_collector::ingest::TimeWindow;
use meshtrace_collector::memory;
use meshtrace_collector::metrics::export::Exporter;
use meshtrace_collector::metrics::graph::GraphSettings;
use meshtrace_collector::metrics::{MetricsSettings, SpanMetrics};
use meshtrace_collector::pipeline::{Pipeline as Writer, PipelineSettings};
use meshtrace_collector::sampling::adaptive::{Adaptive, Counts, CountsExchange};
use meshtrace_collector::sink::Target;
use meshtrace_collector::store::history::HistoryDb;
use meshtrace_collector::store::lock::DirLock;
use meshtrace_collector::store::sqlite::{self as sqlite_store, SqliteStore, StoreSettings};
use meshtrace_collector::store::{blocks, Engine, SpanReader};
use meshtrace_collector::telemetry::Telemetry;
use std::sync::Arc;
use std::time::Duration;

/// The started store: what the query service reads. The sink's target is
/// handed out once by [`Store::start`]: the writer thread ends (and the store
/// stops) when the last holder of it, a listener's app, is gone.
pub struct Store {
    pub reader: Arc<dyn SpanReader>,
    pub archive: Option<Arc<blocks::archive::Archive>>,
    pub metrics: Option<Arc<SpanMetrics>>,
    /// The blocks engine's answers to its peers (on the query port).
    pub peers_router: Option<axum::Router>,
    engine: Engine,
}

impl Store {
    pub fn start(
        ctx: &Context,
        pipeline: &Pipeline,
        adaptive: Option<Arc<Adaptive>>,
        system: &mut System,
    ) -> anyhow::Result<(Store, Target)> {
        let cfg = &ctx.cfg;
        // One process per data directory: held until the store has stopped.
        let dir_lock = DirLock::acquire(&cfg.data_dir)?;
        let store = open_engine(cfg, ctx.limiter.limit_bytes().unwrap_or(0))?;
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
        let adaptive = adaptive.filter(|_| pipeline.has(Processor::AdaptiveCounts));
        if let (Engine::Blocks(b), Some(a)) = (&store, &adaptive) {
            a.share_counts(Arc::new(BucketCounts(blocks::shared::Shared::new(
                b.backend(),
                b.replica(),
                "adaptive-sampling",
            ))));
        }
        let peers_router = match &store {
            Engine::Blocks(b) => Some(peers(ctx, b)?),
            Engine::Sqlite(_) => None,
        };
        let reader = match &archive {
            Some(a) => Arc::new(blocks::archive::WithArchive {
                store: store.reader(),
                archive: a.clone(),
            }) as Arc<dyn SpanReader>,
            None => store.reader(),
        };
        let metrics = if pipeline.has(Processor::SpanMetrics) {
            Some(span_metrics(cfg, &ctx.telemetry)?)
        } else {
            None
        };
        if let (Engine::Blocks(b), Some(m)) = (&store, &metrics) {
            m.share(blocks::shared::Shared::new(b.backend(), b.replica(), "spm"));
        }
        let (writer_pipeline, writer) = Writer::start(
            store.writer(),
            PipelineSettings {
                queue_size: cfg.queue.queue_size,
                max_batch: cfg.queue.max_batch_requests,
                max_bytes: cfg.queue.max_bytes,
                batch_timeout: Duration::from_millis(cfg.queue.batch_timeout_ms),
            },
            ctx.telemetry.metrics.counters.clone(),
            metrics.clone(),
        )
        .context("starting the span writer thread")?;
        let target = Target::Store {
            pipeline: writer_pipeline,
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
            adaptive,
        };
        let flush = metrics.clone();
        system.at_stop("store", async move {
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .ok();
            if let Some(m) = flush {
                tokio::task::spawn_blocking(move || m.flush_now())
                    .await
                    .ok();
            }
            drop(dir_lock);
        });
        Ok((
            Store {
                reader,
                archive,
                metrics,
                peers_router,
                engine: store,
            },
            target,
        ))
    }

    /// The store's background work, once the ports are bound (a large store's
    /// integrity check does not delay start-up); stopped before the writer.
    pub fn start_background(&self, ctx: &Context, system: &mut System) {
        let tasks = background(
            ctx,
            &self.engine,
            self.archive.clone(),
            self.metrics.clone(),
        );
        system.abort_at_stop("store background work", tasks);
    }
}

/// The blocks engine's peers (`store.blocks.peers`, `peers_dns`), and its
/// own answers to them.
fn peers(ctx: &Context, b: &Arc<blocks::BlockStore>) -> anyhow::Result<axum::Router> {
    let cfg = &ctx.cfg;
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
            (Some(_), Some(ca)) => Some(
                std::fs::read(ca)
                    .with_context(|| format!("tls.client_ca_file: reading {}", ca.display()))?,
            ),
            (Some(_), None) => Some(Vec::new()),
            _ => None,
        };
        b.set_peers(
            blocks::peers::Peers::new(
                bc.peers.clone(),
                (!bc.peers_dns.is_empty()).then(|| bc.peers_dns.clone()),
                exclude,
                bc.peer_timeout,
                ctx.query_tokens.tokens.first().cloned(),
                ca.as_deref(),
            )
            .context("store.blocks.peers")?,
        );
    }
    Ok(blocks::peers::router(
        b.clone(),
        bc.peer_timeout,
        memory::query_bytes(cfg.query.max_bytes, ctx.limiter.limit_bytes()),
    ))
}

/// The store's background work: the integrity check after start-up, the
/// span metrics' minute, health, retention.
fn background(
    ctx: &Context,
    store: &Engine,
    archive: Option<Arc<blocks::archive::Archive>>,
    metrics: Option<Arc<SpanMetrics>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let cfg = &ctx.cfg;
    let mut tasks = Vec::new();
    let s = store.clone();
    tasks.push(tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let (checked, aside) = s.check_partitions();
            tracing::info!(
                checked,
                set_aside = aside,
                took_ms = started.elapsed().as_millis() as u64,
                "store partitions checked"
            );
        })
        .await;
    }));
    // The span metrics' minute is written even when no span follows it.
    if let Some(m) = metrics {
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let m = m.clone();
                let _ = tokio::task::spawn_blocking(move || m.flush_due()).await;
            }
        }));
    }
    let telemetry = ctx.telemetry.clone();
    let every = cfg.store.health_interval;
    let idle = cfg.store.partition_idle_timeout;
    let s = store.clone();
    tasks.push(tokio::spawn(async move {
        // Ready while the store can be written or read; a store that can do
        // neither (no file descriptors, the volume gone) takes the pod out of rotation.
        // Partitions idle for store.partition_idle_timeout are closed on the way.
        let mut last_close = std::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let s = s.clone();
            let close = last_close.elapsed() >= idle.min(Duration::from_secs(60));
            if close {
                last_close = std::time::Instant::now();
            }
            let checked =
                tokio::task::spawn_blocking(move || s.health(close.then_some(idle))).await;
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
    }));
    let retention = cfg.retention;
    let s = store.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let cutoff = now_us - retention.as_micros() as i64;
            let st = s.clone();
            match tokio::task::spawn_blocking(move || st.apply_retention(cutoff)).await {
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
    }));
    tasks
}

/// Adaptive sampling's counts shared through the blocks engine's bucket.
struct BucketCounts(blocks::shared::Shared);

impl CountsExchange for BucketCounts {
    fn exchange(&self, index: u64, mine: &Counts) -> Result<Option<Counts>, String> {
        self.0.publish(index, mine).map_err(|e| e.to_string())?;
        let all: Vec<Counts> = self
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
pub fn open_engine(cfg: &Config, memory_limit: u64) -> anyhow::Result<Engine> {
    let durability = match cfg.store.durability {
        Durability::Fsync => sqlite_store::Durability::Fsync,
        Durability::Os => sqlite_store::Durability::Os,
    };
    let opening = || format!("data_dir: opening the store in {}", cfg.data_dir.display());
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

/// The span metrics, registered on `/metrics`, with their per-minute history
/// in the data directory.
fn span_metrics(cfg: &Config, telemetry: &Telemetry) -> anyhow::Result<Arc<SpanMetrics>> {
    let m = &cfg.metrics;
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
    Ok(metrics)
}
