//! The collector's configuration: a YAML file (`--config`), command-line
//! flags and environment variables for the common keys. Validated at
//! start-up; every error names the key.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Receive, store and serve queries in one process.
    #[default]
    AllInOne,
    /// Receive, store and serve queries (a central collector).
    Central,
    /// Receive, batch and forward to an upstream collector.
    Sidecar,
    /// Consume spans from Kafka (`kafka.*`), store them and serve queries.
    Ingester,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Where the embedded store keeps its partitions.
    pub data_dir: PathBuf,
    /// Spans older than this are dropped, a whole partition at a time (`7d`, `36h`).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Spans that started longer ago are rejected in `partial_success` (default:
    /// the retention; they would land in partitions retention drops).
    #[serde(with = "humantime_serde")]
    pub max_span_age: Option<Duration>,
    /// Spans that start further ahead of this collector's clock are rejected
    /// (a far-future day would open a partition that never expires).
    #[serde(with = "humantime_serde")]
    pub max_span_future: Duration,
    /// Span attribute keys that get an index (search by these is fast).
    pub indexed_tags: Vec<String>,
    pub otlp: OtlpConfig,
    pub query: QueryConfig,
    pub queue: QueueConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// Archived traces (`POST /api/archive/{traceID}`).
    pub archive: ArchiveConfig,
    /// Limits and timeouts of every listener.
    pub server: ServerConfig,
    /// The process's memory limits.
    pub memory: MemoryConfig,
    /// TLS on every listener.
    pub tls: TlsConfig,
    /// Bearer tokens for ingest and for queries.
    pub auth: AuthConfig,
    /// Sidecar mode: where and how to forward.
    pub sidecar: SidecarConfig,
    /// Sampling strategies served to the filters and remote samplers.
    pub sampling: SamplingConfig,
    /// Metrics derived from spans: span metrics, the service graph, the SPM history.
    pub metrics: MetricsConfig,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Attributes named like credentials, redacted at ingest.
    pub redaction: RedactionConfig,
    /// How often the log says what was received, stored and refused (`0s`: never).
    #[serde(with = "humantime_serde")]
    pub log_summary_interval: Duration,
    /// Kafka: the exporter and the ingester's consumer.
    pub kafka: KafkaConfig,
    /// Exporters to other backends, beside the store.
    pub exporters: ExportersConfig,
    /// Receivers for the senders teams already run, besides OTLP.
    pub receivers: ReceiversConfig,
}

/// Receivers besides OTLP.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    pub zipkin: ZipkinReceiverConfig,
    pub jaeger: JaegerReceiverConfig,
}

/// Jaeger's senders: agents and clients over UDP (Thrift compact and binary),
/// Thrift over HTTP (`POST /api/traces`), gRPC `CollectorService/PostSpans`.
/// An empty address turns that part off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerReceiverConfig {
    /// On or off; unset: on in all-in-one mode, off in the others.
    pub enabled: Option<bool>,
    /// UDP, Thrift compact (`emitBatch`): what Jaeger clients send to an agent.
    pub thrift_compact_listen: String,
    /// UDP, Thrift binary (`emitBatch`).
    pub thrift_binary_listen: String,
    /// HTTP, `POST /api/traces` with a Thrift binary `Batch`.
    pub thrift_http_listen: String,
    /// gRPC `jaeger.api_v2.CollectorService/PostSpans`.
    pub grpc_listen: String,
    /// Larger UDP packets are dropped (and counted): Jaeger clients send at most 65,000 bytes.
    pub max_packet_bytes: usize,
    /// UDP packets taken per second on each UDP port; more are dropped and counted.
    pub max_packets_per_second: u32,
    /// UDP packets being translated and stored at once, per port; more are dropped and counted.
    pub max_packets_in_flight: usize,
}

impl Default for JaegerReceiverConfig {
    fn default() -> Self {
        JaegerReceiverConfig {
            enabled: None,
            thrift_compact_listen: "127.0.0.1:6831".into(),
            thrift_binary_listen: "127.0.0.1:6832".into(),
            thrift_http_listen: "127.0.0.1:14268".into(),
            grpc_listen: "127.0.0.1:14250".into(),
            max_packet_bytes: 65_000,
            max_packets_per_second: 10_000,
            max_packets_in_flight: 64,
        }
    }
}

impl JaegerReceiverConfig {
    /// Whether a collector in `mode` runs it.
    pub fn on_in(&self, mode: Mode) -> bool {
        self.enabled.unwrap_or(mode == Mode::AllInOne)
    }
}

/// Zipkin's span API: `POST /api/v2/spans` (JSON or protobuf, gzip).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinReceiverConfig {
    /// On or off; unset: on in all-in-one mode, off in the others.
    pub enabled: Option<bool>,
    pub listen: String,
}

impl Default for ZipkinReceiverConfig {
    fn default() -> Self {
        ZipkinReceiverConfig {
            enabled: None,
            listen: "127.0.0.1:9411".into(),
        }
    }
}

impl ZipkinReceiverConfig {
    /// Whether a collector in `mode` runs it.
    pub fn on_in(&self, mode: Mode) -> bool {
        self.enabled.unwrap_or(mode == Mode::AllInOne)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::AllInOne,
            data_dir: PathBuf::from("./meshtrace-data"),
            retention: Duration::from_secs(7 * 86_400),
            max_span_age: None,
            max_span_future: Duration::from_secs(3600),
            indexed_tags: vec![
                "http.response.status_code".into(),
                "error".into(),
                "http.request.method".into(),
            ],
            otlp: OtlpConfig::default(),
            query: QueryConfig::default(),
            queue: QueueConfig::default(),
            store: StoreConfig::default(),
            archive: ArchiveConfig::default(),
            server: ServerConfig::default(),
            memory: MemoryConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            sidecar: SidecarConfig::default(),
            sampling: SamplingConfig::default(),
            metrics: MetricsConfig::default(),
            log_format: "text".into(),
            log_summary_interval: Duration::from_secs(60),
            redaction: RedactionConfig::default(),
            receivers: ReceiversConfig::default(),
            kafka: KafkaConfig::default(),
            exporters: ExportersConfig::default(),
        }
    }
}

/// Exporters to other backends.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportersConfig {
    /// OTLP endpoints (gRPC or HTTP) every accepted span is sent on to (Jaeger
    /// v2, Tempo, an OpenTelemetry Collector, another meshtrace), each with its own queue.
    pub otlp: Vec<OtlpExporterConfig>,
}

/// One OTLP exporter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporterConfig {
    /// `http://host:4317`, or `https://` for TLS; with `http/protobuf`, the
    /// base URL spans are posted under (`…/v1/traces` appended unless given).
    pub endpoint: String,
    /// `grpc` or `http/protobuf` (OTLP over HTTP, as `OTEL_EXPORTER_OTLP_PROTOCOL` names it).
    pub protocol: String,
    /// Headers sent with every export (`x-scope-orgid`, `authorization`, …).
    pub headers: std::collections::BTreeMap<String, String>,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// CA certificates for an `https://` endpoint (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Bytes queued for this endpoint, at most; past it spans are dropped for
    /// it (counted, logged once a minute) and ingest goes on.
    pub queue_bytes: u64,
    /// `memory`, or `disk`: batches wait as files in `queue_dir` and what is
    /// queued when the collector stops is sent after it starts again.
    pub queue: String,
    /// The disk queue's directory (default: `data_dir/export-queue/<endpoint>`).
    pub queue_dir: Option<PathBuf>,
    /// One export's timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an export is retried before its spans are dropped for this endpoint.
    #[serde(with = "humantime_serde")]
    pub max_retry_time: Duration,
    /// Exports sent at once.
    pub max_in_flight: usize,
}

impl Default for OtlpExporterConfig {
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: String::new(),
            protocol: "grpc".into(),
            headers: Default::default(),
            compression: "gzip".into(),
            ca_file: None,
            queue_bytes: 64 << 20,
            queue: "memory".into(),
            queue_dir: None,
            timeout: Duration::from_secs(10),
            max_retry_time: Duration::from_secs(300),
            max_in_flight: 4,
        }
    }
}

/// The URL spans are posted to: the endpoint as given when it ends in
/// `/v1/traces`, else with `/v1/traces` appended (as the OpenTelemetry
/// Collector's `otlphttp` exporter does with its `endpoint`).
pub fn traces_url(endpoint: &str) -> Result<reqwest::Url, String> {
    let given =
        reqwest::Url::parse(endpoint).map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    if !matches!(given.scheme(), "http" | "https") || given.host_str().is_none() {
        return Err(format!("{endpoint:?} is not an http:// or https:// URL"));
    }
    if given.path().trim_end_matches('/').ends_with("/v1/traces") {
        return Ok(given);
    }
    reqwest::Url::parse(&format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .map_err(|e| format!("{endpoint:?} is not a URL: {e}"))
}

/// Kafka: the exporter (accepted spans to a topic) and the ingester's consumer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` (empty: no Kafka). Set in `all-in-one`,
    /// `central` or `sidecar` mode, spans go to the topic too; `ingester`
    /// mode reads them from it.
    pub brokers: Vec<String>,
    /// The topic: spans as OTLP protobuf (`ExportTraceServiceRequest`, one per trace), keyed by trace id.
    pub topic: String,
    /// `zstd`, `lz4`, `snappy` or `none`.
    pub compression: String,
    /// Bytes produced and not yet acknowledged by Kafka, at most; past it senders are told to retry.
    pub max_buffer_bytes: u64,
    /// How long a message is retried before its senders are told it failed (`message.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// The ingester's consumer group.
    pub group_id: String,
    /// The ingester: messages taken from the topic before their spans are stored and the offsets committed.
    pub max_batch_messages: usize,
    /// Further librdkafka properties for the producer and the consumer
    /// (`security.protocol`, `sasl.*`, `ssl.*`, …); they override meshtrace's.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            topic: "meshtrace-spans".into(),
            compression: "zstd".into(),
            max_buffer_bytes: 64 << 20,
            delivery_timeout: Duration::from_secs(30),
            group_id: "meshtrace-ingester".into(),
            max_batch_messages: 500,
            properties: Default::default(),
        }
    }
}

impl KafkaConfig {
    /// Whether spans go to Kafka (an exporter) in `mode`.
    pub fn exports_in(&self, mode: Mode) -> bool {
        !self.brokers.is_empty() && mode != Mode::Ingester
    }
}

/// Redaction at ingest: values of attributes named like credentials become
/// `[REDACTED]` (the filter's list of sensitive headers, plus `keys`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// More attribute names to redact (matched like the defaults: last segment, any case).
    pub keys: Vec<String>,
    /// Attribute keys kept verbatim although they match (whole key, any case).
    pub allow: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) over every string value; each
    /// match becomes `[REDACTED]` (e.g. `(?i)bearer\s+[a-z0-9._~+/-]+=*`,
    /// `AKIA[0-9A-Z]{16}`). Off by default: each costs CPU on every string.
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP gRPC listen address (`TraceService/Export`).
    pub grpc_listen: String,
    /// OTLP/HTTP listen address (`POST /v1/traces`).
    pub http_listen: String,
    /// Largest accepted request body, after decompression.
    pub max_message_bytes: usize,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            grpc_listen: "127.0.0.1:4317".into(),
            http_listen: "127.0.0.1:4318".into(),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Jaeger query API listen address.
    pub listen: String,
    /// Traces per answer at most (a larger `limit` or more `traceID`s are cut, with a warning).
    pub max_traces: usize,
    /// Spans per answer at most (traces past it are cut, with a warning).
    pub max_spans: usize,
    /// Reads (every query endpoint) served at once; more wait up to 10 s, then get 503.
    pub max_concurrent: usize,
    /// A read still working at this is stopped and answered 503 naming it
    /// (instead of `server.request_timeout`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Bytes all reads together may hold (answers and working memory), shared
    /// by the `max_concurrent` slots; past its share a trace answer is cut (with
    /// a warning) and other reads answer 503 naming it. 0: a quarter of
    /// `memory.limit_bytes` (32 MiB–1 GiB), 512 MiB without a limit.
    pub max_bytes: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            listen: "127.0.0.1:16686".into(),
            max_traces: 1500,
            max_spans: 100_000,
            max_concurrent: 2,
            timeout: Duration::from_secs(60),
            max_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Export requests waiting to be stored; beyond it ingest answers "retry later".
    pub queue_size: usize,
    /// Most requests committed in one transaction (group commit).
    pub max_batch_requests: usize,
    /// Memory limit: bytes of spans waiting for the writer; beyond it ingest
    /// answers "retry later".
    pub max_bytes: u64,
    /// Batching by time: how long the writer waits for more requests to join a
    /// transaction once one is queued (0: commit what is queued at once).
    pub batch_timeout_ms: u64,
    /// Threads that receive, decode, validate and convert exports (0: one per
    /// CPU; sidecar mode: 1). Writes go through one writer thread (SQLite has one
    /// writer) that commits whole groups.
    pub num_workers: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: 1024,
            max_batch_requests: 256,
            max_bytes: 256 * 1024 * 1024,
            batch_timeout_ms: 0,
            num_workers: 0,
        }
    }
}

/// TLS (rustls) on every listener: OTLP gRPC and HTTP, query, sampling HTTP and gRPC.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key_file`, every listener speaks TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA: OTLP clients must present a certificate it signed (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Bearer tokens (`Authorization: Bearer <token>`); none listed: no check.
/// `/healthz`, `/readyz` and `/metrics` stay open.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens that may send spans (OTLP) and fetch strategies.
    pub ingest_tokens: Vec<String>,
    /// A file of ingest tokens, one per line (a Kubernetes Secret).
    pub ingest_tokens_file: Option<PathBuf>,
    /// Tokens that may read traces (the query API).
    pub query_tokens: Vec<String>,
    /// A file of query tokens, one per line.
    pub query_tokens_file: Option<PathBuf>,
}

/// Memory bounded by configuration, whatever arrives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Resident size above which ingest and trace queries are refused
    /// (retryably). 0: 80% of the memory cgroup's limit, none without one.
    pub limit_bytes: u64,
    /// Memory ingest requests may reserve at once while received and decoded
    /// (their decoded size is estimated before decoding). 0: a quarter of the
    /// process limit (4 MiB to 256 MiB), 256 MiB without one.
    pub decode_bytes: u64,
    /// How often the resident size is sampled.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            limit_bytes: 0,
            decode_bytes: 0,
            check_interval: Duration::from_millis(100),
        }
    }
}

/// Every listener's limits: what a slow, silent or greedy client can hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Open connections per listener; more are closed at once.
    pub max_connections: usize,
    /// A new connection (TLS handshake included) must send a complete request
    /// head within this; so must each later HTTP/1 request.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A connection with nothing in flight and no bytes moving is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request not answered within this gets a retryable 503 (gRPC
    /// `UNAVAILABLE`): an export is acknowledged in time or not at all (OTel
    /// SDKs give up after 10 s). The query port uses `query.timeout`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// When an acknowledged span is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// fsync at every group commit, before any export is answered: an
    /// acknowledged span survives power loss and kernel crashes.
    #[default]
    Fsync,
    /// The kernel writes back later: an acknowledged span survives a crash of
    /// the collector, but the last seconds of acknowledged spans can be lost
    /// on power loss or a kernel crash. Faster on slow disks.
    Os,
}

/// Traces archived from the UI or the API, kept apart from the store's retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// `POST /api/archive/{traceID}` copies a trace to `archive/` in the blocks
    /// engine's backend (or `data_dir/archive` with SQLite).
    pub enabled: bool,
    /// Archived traces older than this are deleted; none (the default): kept forever.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            enabled: true,
            retention: None,
        }
    }
}

/// Which storage engine keeps the spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// SQLite files, one per UTC day, in `data_dir`.
    Sqlite,
    /// A write-ahead log and an in-memory head in `data_dir`, Parquet blocks
    /// in `store.blocks.backend` (a directory or an S3-compatible bucket).
    #[default]
    Blocks,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Off: nothing is stored and no queries are served (a gateway to Kafka);
    /// `all-in-one` and `central` mode only.
    pub enabled: bool,
    /// `blocks` (default) or `sqlite`.
    pub engine: EngineKind,
    /// The blocks engine: where blocks go and when the head is cut into one.
    pub blocks: BlocksConfig,
    /// The blocks engine's write-ahead log.
    pub wal: WalConfig,
    /// `fsync` (default) or `os`.
    pub durability: Durability,
    /// Day partitions open for writing at once; the least recently written is closed first.
    pub max_open_partitions: usize,
    /// How often `/readyz` re-checks that the store can be written and read.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Day partitions not written for this long are closed (and pooled readers dropped).
    #[serde(with = "humantime_serde")]
    pub partition_idle_timeout: Duration,
}

/// Where the blocks engine keeps its blocks, and when it cuts them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksConfig {
    /// A directory (default: `blocks` inside `data_dir`) or `s3://BUCKET/PREFIX`.
    pub backend: String,
    /// The S3-compatible store behind an `s3://` backend.
    pub s3: S3Config,
    /// This collector's name in the bucket, so replicas sharing one never
    /// write the same objects (default: `$POD_NAME`, else `$HOSTNAME`, else `local`).
    pub replica: String,
    /// The head is cut into a block when it is this old (`5m`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// … or holds this many bytes (0: an eighth of `memory.limit_bytes`,
    /// 16 MiB to 512 MiB; 128 MiB without a limit).
    pub max_bytes: u64,
    /// Spans per Parquet row group (what a trace lookup reads at most).
    pub rows_per_group: usize,
    /// How often the bucket is listed again for the other replicas' blocks.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often this replica's small blocks of a day are merged into one
    /// (identical spans stored once).
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// The other replicas sharing the bucket: their query addresses
    /// (`host:port`), asked for the spans they hold outside it.
    pub peers: Vec<String>,
    /// … or a name resolving to every replica (a headless Service:
    /// `meshtrace-central-peers.meshtrace.svc:16686`), without `$POD_IP`.
    pub peers_dns: String,
    /// How long a read waits for a peer before answering without it (with a warning).
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// Bytes of recently read blocks kept on local disk (`data_dir/cache`,
    /// emptied at start), so repeated reads skip the object store (0: off).
    pub cache_bytes: u64,
    /// Bytes of opened blocks' metadata (footers, page indexes, bloom filters)
    /// kept in memory, the least recently used dropped past it (0: an eighth of
    /// `memory.limit_bytes` between 16 MiB and 1 GiB, 256 MiB without a limit).
    pub metadata_bytes: u64,
    /// Bytes set aside on the data volume for cutting the WAL into blocks when the
    /// disk is full (`data_dir/reserve`); unset: 1% of the volume, 64 KiB to 256 MiB,
    /// at most a quarter of `max_bytes` (what cutting a full head takes); 0: none.
    pub reserve_bytes: Option<u64>,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        BlocksConfig {
            backend: String::new(),
            s3: S3Config::default(),
            replica: String::new(),
            max_age: Duration::from_secs(300),
            max_bytes: 0,
            rows_per_group: 8192,
            poll_interval: Duration::from_secs(30),
            compaction_interval: Duration::from_secs(60),
            peers: Vec::new(),
            peers_dns: String::new(),
            peer_timeout: Duration::from_secs(2),
            cache_bytes: 0,
            metadata_bytes: 0,
            reserve_bytes: None,
        }
    }
}

/// An S3-compatible object store (AWS, MinIO, Ceph RGW, s3s). Credentials
/// left empty come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, instance roles).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// `http://minio.storage:9000`; empty for AWS.
    pub endpoint: String,
    /// Default `us-east-1`.
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Files holding the keys (a Kubernetes Secret mounted as a volume).
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and Ceph expect;
    /// default: on when an endpoint is set.
    pub path_style: Option<bool>,
    /// Reuse connections (default). Off for servers that do not set
    /// `TCP_NODELAY`, where kept-alive requests wait ~40 ms each (the stock
    /// `s3s-fs` binary).
    pub keep_alive: Option<bool>,
}

/// The blocks engine's write-ahead log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Bytes the log may hold (spans not yet in an uploaded block); past it,
    /// ingest answers "retry later" until uploads catch up.
    pub max_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig { max_bytes: 4 << 30 }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            engine: EngineKind::Blocks,
            blocks: BlocksConfig::default(),
            wal: WalConfig::default(),
            durability: Durability::Fsync,
            max_open_partitions: 8,
            health_interval: Duration::from_secs(10),
            partition_idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// OTLP gRPC endpoint of the central collector (or any OTLP backend), e.g.
    /// `http://meshtrace-collector.tracing:4317`.
    pub upstream: String,
    /// Bound of the in-memory queue; beyond it senders are told to retry later.
    pub queue_bytes: u64,
    /// Largest merged export sent upstream.
    pub batch_bytes: usize,
    /// Exports sent upstream at once (each waits for the central's commit).
    pub max_in_flight: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Give up on a batch (drop and count it) after retrying this long.
    #[serde(with = "humantime_serde")]
    pub max_retry_time: Duration,
    /// Timeout of one upstream export.
    pub timeout_ms: u64,
    /// PEM CA that signed the upstream's certificate (an `https://` upstream needs it).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, when the upstream asks for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// A file holding the bearer token sent upstream (exports and strategy fetches).
    pub token_file: Option<PathBuf>,
    /// Envoy's admin address (`127.0.0.1:15000` in an Istio pod): the filter's
    /// counters are read there every 5 s and re-exported with help text. Empty: off.
    pub envoy_admin: String,
    /// At shutdown, how long the queue keeps being forwarded; what is left
    /// then is dropped, counted and logged (keep it under the pod's
    /// `terminationGracePeriodSeconds`).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            upstream: String::new(),
            queue_bytes: 8 * 1024 * 1024,
            batch_bytes: 1024 * 1024,
            max_in_flight: 4,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            max_retry_time: Duration::from_secs(300),
            timeout_ms: 10_000,
            shutdown_grace: Duration::from_secs(20),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            token_file: None,
            envoy_admin: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Jaeger strategies file (JSON); absent serves Jaeger's default (probabilistic 0.001).
    pub strategies_file: Option<PathBuf>,
    /// How often the file is re-read.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// `GET /api/sampling?service=S` listen address (Jaeger's agent port).
    pub http_listen: String,
    /// `jaeger.api_v2.SamplingManager` gRPC listen address.
    pub grpc_listen: String,
    /// Sidecar mode: the central collector's sampling gRPC endpoint (e.g.
    /// `http://meshtrace-collector.tracing:5779`); its strategies are cached and
    /// served here. Empty: serve the local file (or Jaeger's default).
    pub upstream: String,
    /// Adaptive sampling (central / all-in-one).
    pub adaptive: AdaptiveConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConfig {
    /// Services whose per-operation probabilities are computed; `"*"` for all. Empty: off.
    pub services: Vec<String>,
    /// Sampled traces per second wanted from each operation.
    pub target_traces_per_second: f64,
    /// The lowest probability ever served.
    pub min_sampling_probability: f64,
    /// Each operation keeps at least this many traces per minute.
    pub lower_bound_traces_per_minute: f64,
    /// How often probabilities are recomputed.
    #[serde(with = "humantime_serde")]
    pub calculation_interval: Duration,
    /// Weight of the newest interval in the smoothed request rate, in (0, 1].
    pub smoothing: f64,
    /// Operations tracked per service (idle ones are forgotten after 10 intervals).
    pub max_operations_per_service: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            services: vec![],
            target_traces_per_second: 1.0,
            min_sampling_probability: 0.00001,
            lower_bound_traces_per_minute: 1.0,
            calculation_interval: Duration::from_secs(60),
            smoothing: 0.5,
            max_operations_per_service: 500,
        }
    }
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            strategies_file: None,
            reload_interval: Duration::from_secs(30),
            http_listen: "127.0.0.1:5778".into(),
            grpc_listen: "127.0.0.1:5779".into(),
            upstream: String::new(),
            adaptive: AdaptiveConfig::default(),
        }
    }
}

/// Metrics derived from stored spans (central and all-in-one modes).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Compute span metrics, the service graph and the SPM history.
    pub enabled: bool,
    /// Upper bounds of the duration histograms, in milliseconds (ascending).
    pub duration_buckets_ms: Vec<f64>,
    /// Series per metric family at most; new label sets beyond it are folded
    /// into one series labelled `otel_metric_overflow="true"`.
    pub max_series: usize,
    /// Service-graph edges (client, server, connection type) at most.
    pub service_graph_max_edges: usize,
    /// How long a client or server span waits for its other half.
    #[serde(with = "humantime_serde")]
    pub service_graph_wait: Duration,
    /// Spans waiting for their other half at most (beyond: counted as dropped).
    pub service_graph_max_pending: usize,
    /// How long the per-minute history behind `/api/metrics/*` is kept.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            duration_buckets_ms: vec![
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
                10000.0,
            ],
            max_series: 2000,
            service_graph_max_edges: 1000,
            service_graph_wait: Duration::from_secs(10),
            service_graph_max_pending: 10_000,
            history_retention: Duration::from_secs(2 * 86_400),
        }
    }
}

/// A configuration error naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The longest retention: ten years.
pub const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a duration the way the configuration does (`7d`, `36h`, `90m`,
/// `1h30m`, `45s`): for command-line overrides.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 7d, 36h or 90m: {e}"))
}

impl Config {
    /// Where exporter `e` keeps its disk queue: `queue_dir`, or a directory
    /// named after its endpoint under `data_dir/export-queue`.
    pub fn export_queue_dir(&self, e: &OtlpExporterConfig) -> PathBuf {
        e.queue_dir.clone().unwrap_or_else(|| {
            let name: String = e
                .endpoint
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            self.data_dir.join("export-queue").join(name)
        })
    }

    /// Reads YAML; an empty file is all defaults. The error names the key
    /// (`sampling.adaptive.calculation_interval`), or `(file)` for YAML syntax.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key.is_empty() || key == "." {
                "(file)".to_string()
            } else {
                key
            };
            // The message keeps serde's "at line L column C".
            err(&key, e.into_inner().to_string())
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(3600) {
            return Err(err("retention", "must be at least 1h"));
        }
        if self.retention > MAX_RETENTION {
            return Err(err(
                "retention",
                "must be at most 3650d (longer would wrap the cut-off and delete everything)",
            ));
        }
        for (key, addr) in [
            ("otlp.grpc_listen", &self.otlp.grpc_listen),
            ("otlp.http_listen", &self.otlp.http_listen),
            ("query.listen", &self.query.listen),
            ("sampling.http_listen", &self.sampling.http_listen),
            ("sampling.grpc_listen", &self.sampling.grpc_listen),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| err(key, format!("{addr:?} is not an address: {e}")))?;
        }
        let j = &self.receivers.jaeger;
        for (key, addr) in [
            ("receivers.zipkin.listen", &self.receivers.zipkin.listen),
            (
                "receivers.jaeger.thrift_compact_listen",
                &j.thrift_compact_listen,
            ),
            (
                "receivers.jaeger.thrift_binary_listen",
                &j.thrift_binary_listen,
            ),
            ("receivers.jaeger.thrift_http_listen", &j.thrift_http_listen),
            ("receivers.jaeger.grpc_listen", &j.grpc_listen),
        ] {
            if !addr.is_empty() {
                addr.parse::<SocketAddr>().map_err(|e| {
                    err(
                        key,
                        format!("{addr:?} is not an address (empty turns it off): {e}"),
                    )
                })?;
            }
        }
        if !(1024..=65_535).contains(&j.max_packet_bytes) {
            return Err(err(
                "receivers.jaeger.max_packet_bytes",
                "must be in 1024..=65535 (a UDP datagram)",
            ));
        }
        if j.max_packets_per_second == 0 {
            return Err(err(
                "receivers.jaeger.max_packets_per_second",
                "must be at least 1",
            ));
        }
        if !(1..=65_536).contains(&j.max_packets_in_flight) {
            return Err(err(
                "receivers.jaeger.max_packets_in_flight",
                "must be in 1..=65536",
            ));
        }
        if self.otlp.max_message_bytes < 1024 {
            return Err(err("otlp.max_message_bytes", "must be at least 1024"));
        }
        if self.queue.queue_size == 0 {
            return Err(err("queue.queue_size", "must be greater than 0"));
        }
        if self.queue.max_bytes < self.otlp.max_message_bytes as u64 {
            return Err(err(
                "queue.max_bytes",
                format!(
                    "{} is smaller than otlp.max_message_bytes ({}): one message could never be queued",
                    self.queue.max_bytes, self.otlp.max_message_bytes
                ),
            ));
        }
        if self.queue.batch_timeout_ms > 10_000 {
            return Err(err(
                "queue.batch_timeout_ms",
                "at most 10000: every export waits for its batch to commit",
            ));
        }
        if self.queue.num_workers > 1024 {
            return Err(err("queue.num_workers", "at most 1024 (0: one per CPU)"));
        }
        if self.memory.check_interval.is_zero()
            || self.memory.check_interval > Duration::from_secs(60)
        {
            return Err(err(
                "memory.check_interval",
                "must be more than 0s and at most 60s",
            ));
        }
        if self.memory.decode_bytes != 0 && self.memory.decode_bytes < 1024 * 1024 {
            return Err(err(
                "memory.decode_bytes",
                "must be 0 (automatic) or at least 1048576",
            ));
        }
        if self.memory.limit_bytes != 0 && self.memory.limit_bytes < 16 * 1024 * 1024 {
            return Err(err(
                "memory.limit_bytes",
                "must be 0 (automatic) or at least 16777216",
            ));
        }
        for (key, v) in [
            ("query.max_traces", self.query.max_traces),
            ("query.max_spans", self.query.max_spans),
            ("query.max_concurrent", self.query.max_concurrent),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
        }
        for (i, p) in self.redaction.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                return Err(err(&format!("redaction.patterns[{i}]"), e.to_string()));
            }
        }
        if self.query.max_bytes != 0 && self.query.max_bytes < 4 * 1024 * 1024 {
            return Err(err(
                "query.max_bytes",
                "must be 0 (automatic) or at least 4194304",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(err("server.max_connections", "must be at least 1"));
        }
        for (key, d) in [
            ("server.header_timeout", self.server.header_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.request_timeout", self.server.request_timeout),
            ("query.timeout", self.query.timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(86_400) {
                return Err(err(key, "must be more than 0s and at most 24h"));
            }
        }
        if !(1..=4096).contains(&self.store.max_open_partitions) {
            return Err(err("store.max_open_partitions", "must be in 1..=4096"));
        }
        if self.store.partition_idle_timeout.is_zero() {
            return Err(err("store.partition_idle_timeout", "must be more than 0s"));
        }
        let b = &self.store.blocks;
        if b.max_age.is_zero() {
            return Err(err("store.blocks.max_age", "must be more than 0s"));
        }
        if b.peer_timeout.is_zero() || b.peer_timeout > Duration::from_secs(60) {
            return Err(err(
                "store.blocks.peer_timeout",
                "must be more than 0s and at most 60s",
            ));
        }
        for p in b
            .peers
            .iter()
            .chain(std::iter::once(&b.peers_dns).filter(|d| !d.is_empty()))
        {
            if p.contains("://")
                || p.rsplit_once(':')
                    .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(err(
                    "store.blocks.peers",
                    format!("{p:?}: a peer is host:port (its query port), without a scheme"),
                ));
            }
        }
        if b.poll_interval.is_zero() {
            return Err(err("store.blocks.poll_interval", "must be more than 0s"));
        }
        if !(128..=1_048_576).contains(&b.rows_per_group) {
            return Err(err(
                "store.blocks.rows_per_group",
                "must be in 128..=1048576",
            ));
        }
        if b.max_bytes != 0 && b.max_bytes < 1 << 20 {
            return Err(err(
                "store.blocks.max_bytes",
                "must be 0 (automatic) or at least 1048576",
            ));
        }
        if self.store.wal.max_bytes < 1 << 20 {
            return Err(err("store.wal.max_bytes", "must be at least 1048576"));
        }
        if b.backend.contains("://") && !b.backend.starts_with("s3://") {
            return Err(err(
                "store.blocks.backend",
                format!("{:?}: only s3://BUCKET/PREFIX or a directory", b.backend),
            ));
        }
        if b.backend == "s3://" || b.backend.starts_with("s3:///") {
            return Err(err(
                "store.blocks.backend",
                "s3:// needs a bucket: s3://BUCKET/PREFIX",
            ));
        }
        if !b.replica.is_empty()
            && !b
                .replica
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(err(
                "store.blocks.replica",
                "letters, digits, '-', '_' and '.' only (it is part of object names)",
            ));
        }
        if self.store.health_interval.is_zero() {
            return Err(err("store.health_interval", "must be more than 0s"));
        }
        if self.queue.max_batch_requests == 0 {
            return Err(err("queue.max_batch_requests", "must be greater than 0"));
        }
        if !self.sidecar.envoy_admin.is_empty() {
            let a = &self.sidecar.envoy_admin;
            a.parse::<SocketAddr>().map_err(|e| {
                err(
                    "sidecar.envoy_admin",
                    format!("{a:?} is not an address like 127.0.0.1:15000: {e}"),
                )
            })?;
        }
        let m = &self.metrics;
        let b = &m.duration_buckets_ms;
        if b.is_empty()
            || b.len() > 64
            || b.iter().any(|x| !(x.is_finite() && *x > 0.0))
            || b.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(err(
                "metrics.duration_buckets_ms",
                "must be 1 to 64 positive, finite, strictly ascending bounds (milliseconds)",
            ));
        }
        for (key, v, max) in [
            ("metrics.max_series", m.max_series, 1_000_000),
            (
                "metrics.service_graph_max_edges",
                m.service_graph_max_edges,
                1_000_000,
            ),
            (
                "metrics.service_graph_max_pending",
                m.service_graph_max_pending,
                10_000_000,
            ),
        ] {
            if !(1..=max).contains(&v) {
                return Err(err(key, format!("must be in 1..={max}")));
            }
        }
        if m.service_graph_wait.is_zero() || m.service_graph_wait > Duration::from_secs(600) {
            return Err(err(
                "metrics.service_graph_wait",
                "must be more than 0s and at most 10m",
            ));
        }
        if m.history_retention < Duration::from_secs(3600) || m.history_retention > MAX_RETENTION {
            return Err(err(
                "metrics.history_retention",
                "must be at least 1h and at most 3650d",
            ));
        }
        if self.sampling.reload_interval.is_zero() {
            return Err(err("sampling.reload_interval", "must be more than 0s"));
        }
        let a = &self.sampling.adaptive;
        if !(a.target_traces_per_second > 0.0 && a.target_traces_per_second.is_finite()) {
            return Err(err(
                "sampling.adaptive.target_traces_per_second",
                format!("{} must be a positive number", a.target_traces_per_second),
            ));
        }
        if !(a.min_sampling_probability > 0.0 && a.min_sampling_probability <= 1.0) {
            return Err(err(
                "sampling.adaptive.min_sampling_probability",
                format!(
                    "{} must be in (0, 1] (a fraction: 0.001 is 0.1%)",
                    a.min_sampling_probability
                ),
            ));
        }
        if !(a.lower_bound_traces_per_minute >= 0.0 && a.lower_bound_traces_per_minute.is_finite())
        {
            return Err(err(
                "sampling.adaptive.lower_bound_traces_per_minute",
                "must be 0 or more",
            ));
        }
        if a.max_operations_per_service == 0 {
            return Err(err(
                "sampling.adaptive.max_operations_per_service",
                "must be at least 1",
            ));
        }
        if !(a.smoothing > 0.0 && a.smoothing <= 1.0) {
            return Err(err("sampling.adaptive.smoothing", "must be in (0, 1]"));
        }
        if a.calculation_interval.is_zero() {
            return Err(err(
                "sampling.adaptive.calculation_interval",
                "must be more than 0s",
            ));
        }
        if !self.sampling.upstream.is_empty() {
            let up = &self.sampling.upstream;
            if !(up.starts_with("http://") || up.starts_with("https://")) {
                return Err(err(
                    "sampling.upstream",
                    format!("{up:?} must start with http:// or https://"),
                ));
            }
            if self.mode != Mode::Sidecar {
                return Err(err(
                    "sampling.upstream",
                    "only in sidecar mode (a central collector serves its own strategies)",
                ));
            }
            if self.sampling.strategies_file.is_some() {
                return Err(err(
                    "sampling.upstream",
                    "set either sampling.upstream or sampling.strategies_file, not both",
                ));
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(err("log_format", "must be text or json"));
        }
        let k = &self.kafka;
        for b in &k.brokers {
            if b.is_empty() || b.contains("://") || !b.contains(':') {
                return Err(err(
                    "kafka.brokers",
                    format!("{b:?} is not host:port (e.g. kafka-0.kafka:9092)"),
                ));
            }
        }
        if k.topic.is_empty() || k.topic.len() > 249 {
            return Err(err("kafka.topic", "must be 1 to 249 characters"));
        }
        if !matches!(k.compression.as_str(), "zstd" | "lz4" | "snappy" | "none") {
            return Err(err(
                "kafka.compression",
                format!("{:?} must be zstd, lz4, snappy or none", k.compression),
            ));
        }
        if k.max_buffer_bytes < (1 << 20) {
            return Err(err("kafka.max_buffer_bytes", "must be at least 1048576"));
        }
        if k.delivery_timeout < Duration::from_secs(1)
            || k.delivery_timeout > Duration::from_secs(3600)
        {
            return Err(err("kafka.delivery_timeout", "must be in 1s..=1h"));
        }
        if !(1..=100_000).contains(&k.max_batch_messages) {
            return Err(err("kafka.max_batch_messages", "must be in 1..=100000"));
        }
        for (i, e) in self.exporters.otlp.iter().enumerate() {
            let key = |f: &str| format!("exporters.otlp[{i}].{f}");
            if !matches!(e.protocol.as_str(), "grpc" | "http/protobuf") {
                return Err(err(
                    &key("protocol"),
                    format!("{:?}: must be grpc or http/protobuf", e.protocol),
                ));
            }
            if !(e.endpoint.starts_with("http://") || e.endpoint.starts_with("https://")) {
                return Err(err(
                    &key("endpoint"),
                    format!(
                        "{:?} must be http://host:port or https://host:port",
                        e.endpoint
                    ),
                ));
            }
            if e.protocol != "grpc" {
                traces_url(&e.endpoint).map_err(|m| err(&key("endpoint"), m))?;
            }
            if !matches!(e.compression.as_str(), "gzip" | "zstd" | "none") {
                return Err(err(&key("compression"), "must be gzip, zstd or none"));
            }
            if !matches!(e.queue.as_str(), "memory" | "disk") {
                return Err(err(
                    &key("queue"),
                    format!("{:?}: must be memory or disk", e.queue),
                ));
            }
            if e.queue == "disk" {
                let dir = self.export_queue_dir(e);
                let shared = self.exporters.otlp[..i]
                    .iter()
                    .any(|o| o.queue == "disk" && self.export_queue_dir(o) == dir);
                if shared {
                    return Err(err(
                        &key("queue_dir"),
                        format!("{} is another exporter's disk queue", dir.display()),
                    ));
                }
            }
            if e.queue_bytes < (1 << 20) {
                return Err(err(&key("queue_bytes"), "must be at least 1048576"));
            }
            if !(1..=256).contains(&e.max_in_flight) {
                return Err(err(&key("max_in_flight"), "must be between 1 and 256"));
            }
            if e.timeout.is_zero() {
                return Err(err(&key("timeout"), "must be more than 0s"));
            }
            for (h, v) in &e.headers {
                let name_ok = !h.is_empty()
                    && h.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)
                    });
                if !name_ok || v.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                    return Err(err(
                        &key("headers"),
                        format!("{h:?}: names are lowercase ASCII, values printable ASCII"),
                    ));
                }
            }
        }
        if self.mode == Mode::Ingester && k.brokers.is_empty() {
            return Err(err(
                "kafka.brokers",
                "ingester mode reads spans from Kafka: name at least one broker",
            ));
        }
        if !self.store.enabled {
            if matches!(self.mode, Mode::Sidecar | Mode::Ingester) {
                return Err(err(
                    "store.enabled",
                    "only all-in-one and central mode can run without their store",
                ));
            }
            if k.brokers.is_empty() && self.exporters.otlp.is_empty() {
                return Err(err(
                    "store.enabled",
                    "false leaves the spans nowhere to go: set kafka.brokers or exporters.otlp (a gateway)",
                ));
            }
        }
        // A sidecar forwards upstream, unless it only writes to Kafka.
        let kafka_only = self.sidecar.upstream.is_empty() && !k.brokers.is_empty();
        if self.mode == Mode::Sidecar && !kafka_only {
            let up = &self.sidecar.upstream;
            if up.is_empty() {
                return Err(err(
                    "sidecar.upstream",
                    "required in sidecar mode (e.g. http://meshtrace-collector.tracing:4317), unless kafka.brokers is set",
                ));
            }
            if !(up.starts_with("http://") || up.starts_with("https://")) {
                return Err(err(
                    "sidecar.upstream",
                    format!("{up:?} must start with http:// or https://"),
                ));
            }
        }
        if self.sidecar.batch_bytes < 1024 {
            return Err(err("sidecar.batch_bytes", "must be at least 1024"));
        }
        if !(1..=256).contains(&self.sidecar.max_in_flight) {
            return Err(err("sidecar.max_in_flight", "must be between 1 and 256"));
        }
        if self.sidecar.timeout_ms == 0 {
            return Err(err("sidecar.timeout_ms", "must be more than 0"));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(err(
                "tls.key_file",
                "tls.cert_file and tls.key_file go together",
            ));
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            return Err(err(
                "tls.client_ca_file",
                "mutual TLS needs tls.cert_file and tls.key_file too",
            ));
        }
        if self.sidecar.client_cert_file.is_some() != self.sidecar.client_key_file.is_some() {
            return Err(err(
                "sidecar.client_key_file",
                "sidecar.client_cert_file and sidecar.client_key_file go together",
            ));
        }
        if self.mode == Mode::Sidecar {
            for (key, url) in [
                ("sidecar.upstream", &self.sidecar.upstream),
                ("sampling.upstream", &self.sampling.upstream),
            ] {
                if url.starts_with("https://") && self.sidecar.ca_file.is_none() {
                    return Err(err(
                        key,
                        "an https:// upstream needs sidecar.ca_file (the CA that signed its certificate)",
                    ));
                }
            }
        }
        if self.sidecar.shutdown_grace > Duration::from_secs(3600) {
            return Err(err("sidecar.shutdown_grace", "must be at most 1h"));
        }
        if self.sidecar.queue_bytes < 1024 * 1024 {
            return Err(err("sidecar.queue_bytes", "must be at least 1048576"));
        }
        if self.sidecar.retry_initial_ms == 0
            || self.sidecar.retry_max_ms < self.sidecar.retry_initial_ms
        {
            return Err(err(
                "sidecar.retry_max_ms",
                "need 0 < retry_initial_ms <= retry_max_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf key of the configuration with its default, dotted (`store.blocks.backend`).
    fn keys_of(
        prefix: &str,
        v: &serde_yaml_ng::Value,
        out: &mut Vec<(String, serde_yaml_ng::Value)>,
    ) {
        match v {
            // A map of the user's own keys (`kafka.properties`) is one key.
            serde_yaml_ng::Value::Mapping(m) if !m.is_empty() => {
                for (k, v) in m {
                    let k = k.as_str().unwrap();
                    let key = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys_of(&key, v, out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }

    /// A default as docs/configuration.md writes it (read as YAML) is the code's:
    /// numbers by value, durations by length (`7d` is `7days`).
    fn same_default(doc: &serde_yaml_ng::Value, code: &serde_yaml_ng::Value) -> bool {
        use serde_yaml_ng::Value;
        match (doc, code) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Value::String(a), Value::String(b)) => {
                a == b
                    || matches!(
                        (humantime::parse_duration(a), humantime::parse_duration(b)),
                        (Ok(x), Ok(y)) if x == y
                    )
            }
            (Value::Sequence(a), Value::Sequence(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_default(x, y))
            }
            (a, b) => a == b,
        }
    }

    #[test]
    fn the_configuration_reference_is_the_configuration() {
        // docs/configuration.md has a row per key under "## Every key":
        // | `key` | default | meaning |.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let keys_table = doc.split("## Every key").nth(1).unwrap();
        let rows: Vec<(String, String)> = keys_table
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split(" | ");
                let key = cells.next()?.strip_suffix('`')?.to_string();
                Some((key, cells.next()?.trim().to_string()))
            })
            .collect();
        let documented: std::collections::BTreeMap<&str, &str> =
            rows.iter().map(|(k, d)| (k.as_str(), d.as_str())).collect();
        assert_eq!(documented.len(), rows.len(), "a key documented twice");
        let mut keys = Vec::new();
        keys_of(
            "",
            &serde_yaml_ng::to_value(Config::default()).unwrap(),
            &mut keys,
        );
        assert!(keys.len() > 80, "{keys:?}");
        let mut problems = Vec::new();
        for (key, default) in &keys {
            let Some(doc_default) = documented.get(key.as_str()) else {
                problems.push(format!("{key}: not documented"));
                continue;
            };
            // A literal default (between backticks, alone) is the code's; prose
            // ("none", "80% of the cgroup's limit") is not checked.
            let Some(literal) = doc_default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .filter(|d| !d.contains('`'))
            else {
                continue;
            };
            let doc_value: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(literal).unwrap_or_else(|_| literal.into());
            if !same_default(&doc_value, default) {
                problems.push(format!(
                    "{key}: documented default `{literal}`, the code's is {default:?}"
                ));
            }
        }
        for key in documented.keys() {
            if !keys.iter().any(|(k, _)| k == key) {
                problems.push(format!("{key}: documented, but no such key"));
            }
        }
        assert!(
            problems.is_empty(),
            "docs/configuration.md:\n{}",
            problems.join("\n")
        );
        // And the file's example is a configuration the collector takes.
        let example = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        Config::from_yaml(example).unwrap();
    }

    #[test]
    fn the_kubernetes_configuration_is_valid() {
        // istio/collector/collector.yaml, mounted from a ConfigMap in the cluster.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../istio/collector/collector.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let c = Config::from_yaml(&text).unwrap();
        assert_eq!(c.mode, Mode::Central);
        assert_eq!(c.otlp.grpc_listen, "0.0.0.0:4317");
        assert_eq!(c.query.listen, "0.0.0.0:16686");
        assert_eq!(
            c.sampling.strategies_file.as_deref(),
            Some(std::path::Path::new("/etc/meshtrace/strategies.json"))
        );
    }

    #[test]
    fn yaml_and_validation() {
        let c = Config::from_yaml("retention: 36h\nindexed_tags: [a]\n").unwrap();
        assert_eq!(c.retention, Duration::from_secs(36 * 3600));
        c.validate().unwrap();
        let c =
            Config::from_yaml("retention: 1d 12h\nsidecar:\n  max_retry_time: 1m30s\n").unwrap();
        assert_eq!(c.retention, Duration::from_secs(36 * 3600));
        assert_eq!(c.sidecar.max_retry_time, Duration::from_secs(90));
        let parse_errors = [
            ("retention: 7 dayz", "retention"),
            ("retention: 9999999999999999999999h", "retention"),
            (
                "sampling:\n  adaptive:\n    calculation_interval: soon",
                "sampling.adaptive.calculation_interval",
            ),
            ("sidecar:\n  max_retry_time: soon", "sidecar.max_retry_time"),
            (
                "sampling:\n  reload_interval: 5",
                "sampling.reload_interval",
            ),
            ("store:\n  durability: maybe", "store.durability"),
        ];
        let c = Config::from_yaml("store:\n  durability: os\n").unwrap();
        assert_eq!(c.store.durability, Durability::Os);
        assert_eq!(Config::default().store.durability, Durability::Fsync);
        for (yaml, key) in parse_errors {
            let e = Config::from_yaml(yaml).unwrap_err();
            assert_eq!(e.key, key, "{yaml}: {e}");
        }
        let cases = [
            ("retention: 10m", "retention"),
            ("otlp:\n  http_listen: nowhere", "otlp.http_listen"),
            ("queue:\n  queue_size: 0", "queue.queue_size"),
            (
                "queue:\n  batch_timeout_ms: 20000",
                "queue.batch_timeout_ms",
            ),
            (
                "sampling:\n  adaptive:\n    min_sampling_probability: 5",
                "sampling.adaptive.min_sampling_probability",
            ),
            (
                "sampling:\n  adaptive:\n    calculation_interval: 0s",
                "sampling.adaptive.calculation_interval",
            ),
            ("sampling:\n  upstream: http://c:5779", "sampling.upstream"),
            ("sampling:\n  grpc_listen: x", "sampling.grpc_listen"),
            ("queue:\n  num_workers: 5000", "queue.num_workers"),
            ("sidecar:\n  batch_bytes: 0", "sidecar.batch_bytes"),
            ("sidecar:\n  timeout_ms: 0", "sidecar.timeout_ms"),
            ("sidecar:\n  max_in_flight: 0", "sidecar.max_in_flight"),
            ("sidecar:\n  max_in_flight: 100000", "sidecar.max_in_flight"),
            ("sidecar:\n  envoy_admin: localhost", "sidecar.envoy_admin"),
            (
                "metrics:\n  duration_buckets_ms: [5, 1]",
                "metrics.duration_buckets_ms",
            ),
            (
                "metrics:\n  duration_buckets_ms: []",
                "metrics.duration_buckets_ms",
            ),
            ("metrics:\n  max_series: 0", "metrics.max_series"),
            (
                "metrics:\n  service_graph_wait: 0s",
                "metrics.service_graph_wait",
            ),
            (
                "metrics:\n  history_retention: 5m",
                "metrics.history_retention",
            ),
            (
                "sampling:\n  reload_interval: 0s",
                "sampling.reload_interval",
            ),
            (
                "sampling:\n  adaptive:\n    max_operations_per_service: 0",
                "sampling.adaptive.max_operations_per_service",
            ),
            ("log_format: xml", "log_format"),
            (
                "exporters:\n  otlp:\n    - endpoint: http://t:4318\n      protocol: http/json",
                "exporters.otlp[0].protocol",
            ),
            (
                "exporters:\n  otlp:\n    - endpoint: http://\n      protocol: http/protobuf",
                "exporters.otlp[0].endpoint",
            ),
            ("mode: sidecar", "sidecar.upstream"),
            (
                "mode: sidecar\nsidecar:\n  upstream: central:4317",
                "sidecar.upstream",
            ),
            (
                "mode: sidecar\nsidecar:\n  upstream: https://central:4317",
                "sidecar.upstream",
            ),
            ("server:\n  max_connections: 0", "server.max_connections"),
            ("server:\n  header_timeout: 0s", "server.header_timeout"),
            ("server:\n  idle_timeout: 48h", "server.idle_timeout"),
            ("server:\n  request_timeout: 0s", "server.request_timeout"),
            ("query:\n  timeout: 0s", "query.timeout"),
            ("query:\n  max_spans: 0", "query.max_spans"),
            ("query:\n  max_traces: 0", "query.max_traces"),
            ("query:\n  max_concurrent: 0", "query.max_concurrent"),
            ("query:\n  max_bytes: 1000", "query.max_bytes"),
            (
                "redaction:\n  patterns: ['ok', '(unclosed']",
                "redaction.patterns[1]",
            ),
            (
                "store:\n  max_open_partitions: 0",
                "store.max_open_partitions",
            ),
            ("store:\n  health_interval: 0s", "store.health_interval"),
            (
                "store:\n  partition_idle_timeout: 0s",
                "store.partition_idle_timeout",
            ),
            ("memory:\n  decode_bytes: 1000", "memory.decode_bytes"),
            ("memory:\n  limit_bytes: 1000", "memory.limit_bytes"),
            ("memory:\n  check_interval: 0s", "memory.check_interval"),
            ("tls:\n  cert_file: /c.pem", "tls.key_file"),
            ("tls:\n  client_ca_file: /ca.pem", "tls.client_ca_file"),
            (
                "sidecar:\n  client_cert_file: /c.pem",
                "sidecar.client_key_file",
            ),
            ("sidecar:\n  shutdown_grace: 2h", "sidecar.shutdown_grace"),
        ];
        for (yaml, key) in cases {
            let e = Config::from_yaml(yaml).unwrap().validate().unwrap_err();
            assert_eq!(e.key, key, "{yaml}");
        }
        let e = Config::from_yaml("retension: 7d").unwrap_err().to_string();
        assert!(e.contains("retension"), "{e}");
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        let huge = Config {
            retention: parse_duration("150000000d").unwrap(),
            ..Config::default()
        };
        let e = huge.validate().unwrap_err();
        assert_eq!(
            e.key, "retention",
            "a retention that would wrap is refused: {e}"
        );
    }
}
