//! The collector assembled from its components: [`pipelines::plan`] declares
//! what the mode runs; [`run`] starts it in dependency order (the sampling
//! service, the exporters, the query service, then the listeners), serves
//! until SIGTERM or Ctrl-C, and stops it in reverse order: the listeners stop
//! taking requests and finish the ones in flight, background work stops, the
//! exporters drain (the writer commits what is queued, the forwarder sends
//! what it holds within its grace period).

pub mod forward;
pub mod kafka;
pub mod otlp_export;
pub mod pipelines;
pub mod receivers;
pub mod sampling;
pub mod store;

use anyhow::{anyhow, Context as _};
use meshtrace_collector::config::{Config, ServerConfig};
use meshtrace_collector::listen;
use meshtrace_collector::memory;
use meshtrace_collector::query::{self, QueryState};
use meshtrace_collector::security;
use meshtrace_collector::telemetry::{self, Telemetry};
use pipelines::{Exporter, Service};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What every component is started with.
pub struct Context {
    pub cfg: Config,
    pub telemetry: Arc<Telemetry>,
    pub limiter: Arc<memory::MemoryLimiter>,
    /// `otlp.max_message_bytes`, lowered to what `memory.decode_bytes` can hold.
    pub max_message_bytes: usize,
    /// The sidecar's upstream: TLS and bearer token (`sidecar.*`).
    pub upstream_tls: Option<tonic::transport::ClientTlsConfig>,
    pub upstream_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    pub ingest_tokens: security::Tokens,
    pub query_tokens: security::Tokens,
}

type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The started components' stops, run in reverse start order at shutdown.
#[derive(Default)]
pub struct System {
    stops: Vec<(&'static str, Stop)>,
}

impl System {
    /// `stop` runs at shutdown, before the stops of what started earlier.
    pub fn at_stop(&mut self, name: &'static str, stop: impl Future<Output = ()> + Send + 'static) {
        self.stops.push((name, Box::pin(stop)));
    }

    /// Background tasks aborted at shutdown.
    pub fn abort_at_stop(
        &mut self,
        name: &'static str,
        tasks: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
    ) {
        let tasks: Vec<_> = tasks.into_iter().collect();
        self.at_stop(name, async move {
            for t in tasks {
                t.abort();
            }
        });
    }

    async fn shutdown(self) {
        for (name, stop) in self.stops.into_iter().rev() {
            tracing::debug!(component = name, "stopping");
            stop.await;
        }
    }
}

/// Runs the collector `cfg` describes until SIGTERM or Ctrl-C.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let plan = pipelines::plan(&cfg).map_err(|e| anyhow!(e))?;
    let mut system = System::default();
    let ctx = context(cfg, &mut system)?;
    let cfg = &ctx.cfg;
    // A collector has one pipeline of traces today; the plan says which parts it has.
    let [traces] = plan.pipelines.as_slice() else {
        return Err(anyhow!(
            "one traces pipeline expected, the plan has {}",
            plan.pipelines.len()
        ));
    };
    let sampling = sampling::Sampling::start(
        &ctx,
        traces.has(pipelines::Processor::AdaptiveCounts),
        &mut system,
    )?;
    let mut store = None;
    let mut target = None;
    let mut exporters = Vec::new();
    for e in &traces.exporters {
        match e {
            Exporter::Store => {
                let (s, t) =
                    store::Store::start(&ctx, traces, sampling.adaptive.clone(), &mut system)?;
                store = Some(s);
                target = Some(t);
            }
            Exporter::Forward => target = Some(forward::start(&ctx, &mut system)?),
            Exporter::Kafka => exporters.push(kafka::start_exporter(&ctx, &mut system)?),
            Exporter::Otlp { durable: true } => {
                // A gateway: the first endpoint is the target, the others beside it.
                target = Some(meshtrace_collector::sink::Target::Forward(
                    otlp_export::start_target(&ctx, &mut system)?,
                ));
                for e in otlp_export::start(&ctx, 1, &mut system)? {
                    exporters.push(e);
                }
            }
            Exporter::Otlp { durable: false } => {
                for e in otlp_export::start(&ctx, 0, &mut system)? {
                    exporters.push(e);
                }
            }
        }
    }
    // Neither a store nor an upstream: a gateway to the other exporters.
    let target = target.unwrap_or_else(|| {
        meshtrace_collector::sink::Target::Gateway(ctx.telemetry.metrics.counters.clone())
    });
    // After the store: replicas on one bucket share their counts through it.
    sampling.start_adaptive(&mut system);
    if plan.services.contains(&Service::FilterStats) {
        forward::start_filter_stats(&ctx, &mut system);
    }
    let query_app = match (&store, plan.services.contains(&Service::Query)) {
        (Some(s), true) => query_router(&ctx, s, &sampling),
        // Without a store, the query port serves metrics and health only.
        _ => telemetry::router(ctx.telemetry.clone()),
    };
    let receivers::Receivers {
        http: receivers,
        udp: udp_receivers,
        ingester,
    } = receivers::apps(&ctx, traces, target, exporters)?;
    let (sampling_http, sampling_grpc) = sampling.apps(&ctx);

    // Ports last: a bad data directory or upstream fails before anything listens.
    let transports = listener_transports(cfg)?;
    let limits = connection_limits(&cfg.server);
    // Queries may take longer than an export should (an OTel SDK gives up after 10 s).
    // A read stops at `query.timeout` and says so itself; the listener's own
    // timeout, a second later, only catches what never reached a read.
    let query_limits = listen::Limits {
        request_timeout: cfg.query.timeout + Duration::from_secs(1),
        timeout_name: "query.timeout",
        ..limits
    };
    // Each listener: who may call it (tokens), how it is spoken (TLS, client
    // certificates for OTLP) and its limits.
    let mut listeners = Vec::new();
    for r in receivers {
        listeners.push((
            r.key,
            r.addr,
            r.app,
            &ctx.ingest_tokens,
            &transports.ingest,
            limits,
        ));
    }
    listeners.push((
        "query.listen",
        cfg.query.listen.clone(),
        query_app,
        &ctx.query_tokens,
        &transports.other,
        query_limits,
    ));
    if plan.services.contains(&Service::Sampling) {
        listeners.push((
            "sampling.http_listen",
            cfg.sampling.http_listen.clone(),
            sampling_http,
            &ctx.ingest_tokens,
            &transports.other,
            limits,
        ));
        listeners.push((
            "sampling.grpc_listen",
            cfg.sampling.grpc_listen.clone(),
            sampling_grpc,
            &ctx.ingest_tokens,
            &transports.other,
            limits,
        ));
    }
    let mut bound = Vec::with_capacity(listeners.len());
    for (key, addr, app, tokens, transport, limits) in listeners {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| {
                format!("{key}: cannot listen on {addr} (is another process using the port?)")
            })?;
        bound.push((
            key,
            listener,
            app,
            tokens.clone(),
            transport.clone(),
            limits,
        ));
    }
    let mut udp_bound = Vec::with_capacity(udp_receivers.len());
    for u in udp_receivers {
        let socket = tokio::net::UdpSocket::bind(&u.addr)
            .await
            .with_context(|| {
                format!(
                    "{}: cannot listen on UDP {} (is another process using the port?)",
                    u.key, u.addr
                )
            })?;
        udp_bound.push((socket, u.receiver));
    }
    if let Some(s) = &store {
        s.start_background(&ctx, &mut system);
    }
    system.abort_at_stop(
        "summary",
        ctx.telemetry.spawn_summary(cfg.log_summary_interval),
    );
    tracing::info!(
        mode = ?cfg.mode,
        otlp_grpc = %cfg.otlp.grpc_listen,
        otlp_http = %cfg.otlp.http_listen,
        query = %cfg.query.listen,
        upstream = %cfg.sidecar.upstream,
        data_dir = %cfg.data_dir.display(),
        "meshtrace collector started"
    );
    ctx.telemetry.set_ready();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let conns = ctx.telemetry.metrics.connections.clone();
    let servers: Vec<_> = bound
        .into_iter()
        .map(|(name, listener, app, tokens, transport, limits)| {
            let app = app.layer(axum::middleware::from_fn_with_state(
                tokens,
                security::require_token,
            ));
            let mut rx = stop_rx.clone();
            tokio::spawn(listen::serve(
                name,
                listener,
                app,
                limits,
                transport,
                conns.clone(),
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            ))
        })
        .collect();
    #[cfg(feature = "kafka")]
    let ingester = ingester.map(|i| {
        let mut rx = stop_rx.clone();
        tokio::spawn(i.run(async move {
            let _ = rx.wait_for(|v| *v).await;
        }))
    });
    #[cfg(not(feature = "kafka"))]
    let ingester: Option<tokio::task::JoinHandle<()>> = ingester.map(|never| match never {});
    let udp_servers: Vec<_> = udp_bound
        .into_iter()
        .map(|(socket, receiver)| {
            let mut rx = stop_rx.clone();
            tokio::spawn(meshtrace_collector::receiver::jaeger::serve_udp(
                socket,
                receiver,
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            ))
        })
        .collect();
    system.at_stop("listeners", async move {
        let _ = stop_tx.send(true);
        for s in servers.into_iter().chain(udp_servers).chain(ingester) {
            let _ = s.await;
        }
    });
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight exports, draining the queue");
    system.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Telemetry, memory, the credentials every component may need.
fn context(cfg: Config, system: &mut System) -> anyhow::Result<Context> {
    let telemetry = Telemetry::new();
    let (limiter, max_message_bytes) = memory_limits(&cfg, &telemetry);
    system.abort_at_stop(
        "memory sampler",
        [limiter.spawn_sampler(cfg.memory.check_interval)],
    );
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
    Ok(Context {
        cfg,
        telemetry,
        limiter,
        max_message_bytes,
        upstream_tls,
        upstream_token,
        ingest_tokens,
        query_tokens,
    })
}

/// The query service: Jaeger's APIs, the analysis API, the UI, the peers'
/// answers and the telemetry endpoints.
fn query_router(
    ctx: &Context,
    store: &store::Store,
    sampling: &sampling::Sampling,
) -> axum::Router {
    let cfg = &ctx.cfg;
    query::router(QueryState {
        store: store.reader.clone(),
        archive: store.archive.clone(),
        metrics: store.metrics.clone(),
        sampling: Some(sampling.provider.clone()),
        budget: query::answer::Budget::new(
            cfg.query.max_traces,
            cfg.query.max_spans,
            cfg.query.max_concurrent,
            Some(ctx.limiter.clone()),
        )
        .limits(
            cfg.query.timeout,
            memory::query_bytes(cfg.query.max_bytes, ctx.limiter.limit_bytes()),
        ),
    })
    .route_layer(axum::middleware::from_fn_with_state(
        ctx.telemetry.clone(),
        telemetry::track_latency,
    ))
    .merge(telemetry::router(ctx.telemetry.clone()))
    .merge(store.peers_router.clone().unwrap_or_default())
    // Last: the UI holds the fallback that answers deep links with its page.
    .merge(meshtrace_collector::ui::router())
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
