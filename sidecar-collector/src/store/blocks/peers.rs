//! Several central collectors on one bucket: every replica writes its own
//! blocks and reads everyone's; what a replica holds that is not in the
//! bucket yet (its heads and pending blocks, up to `store.blocks.max_age`
//! old) it answers its peers on the query port. A read asks every peer at
//! once, each within `store.blocks.peer_timeout`; a peer that does not answer
//! leaves a warning in the answer (a partial result), never an error.
//!
//! Peers come from `store.blocks.peers` (addresses of their query ports) or
//! from a headless Service's DNS name (`store.blocks.peers_dns`), resolved at
//! every read, without this pod's own address (`POD_IP`).

use super::super::{ReadCtl, StoreError, TraceQuery};
use super::backend::Backend;
use super::{wal, BlockStore, Names, Row, Scope};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub const TRACES_PATH: &str = "/internal/v1/head/traces";
pub const SEARCH_PATH: &str = "/internal/v1/head/search";
pub const SERVICES_PATH: &str = "/internal/v1/head/services";
/// Trace ids one peer request may ask for.
const MAX_IDS: usize = 1500;
/// Bytes one peer answer may take at most (an answer is held whole).
const MAX_ANSWER: u64 = 256 << 20;

/// A search, as sent to a peer.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerQuery {
    pub service: String,
    pub operation: Option<String>,
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub tags_any: bool,
    pub start_us: i64,
    pub end_us: i64,
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    pub limit: usize,
}

impl From<&TraceQuery> for PeerQuery {
    fn from(q: &TraceQuery) -> Self {
        PeerQuery {
            service: q.service.clone(),
            operation: q.operation.clone(),
            tags: q.tags.clone(),
            tags_any: q.tags_any,
            start_us: q.start_us,
            end_us: q.end_us,
            min_duration_us: q.min_duration_us,
            max_duration_us: q.max_duration_us,
            limit: q.limit,
        }
    }
}

impl From<PeerQuery> for TraceQuery {
    fn from(q: PeerQuery) -> Self {
        TraceQuery {
            service: q.service,
            operation: q.operation,
            tags: q.tags,
            tags_any: q.tags_any,
            start_us: q.start_us,
            end_us: q.end_us,
            min_duration_us: q.min_duration_us,
            max_duration_us: q.max_duration_us,
            limit: q.limit,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IdsRequest {
    ids: Vec<String>,
}

/// The other replicas.
pub struct Peers {
    /// `http` or `https` (the query port speaks TLS).
    scheme: &'static str,
    list: Vec<String>,
    dns: Option<String>,
    exclude: Vec<std::net::IpAddr>,
    client: reqwest::Client,
    timeout: Duration,
    token: Option<String>,
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Peers {
    /// `list`: peers' query addresses (`host:port`); `dns`: a name resolving to
    /// every replica (`host:port`); `exclude`: this pod's addresses.
    /// With `tls_ca` (PEM), peers are asked over HTTPS and their certificates
    /// checked against it (the query port's TLS).
    pub fn new(
        list: Vec<String>,
        dns: Option<String>,
        exclude: Vec<std::net::IpAddr>,
        timeout: Duration,
        token: Option<String>,
        tls_ca: Option<&[u8]>,
    ) -> Result<Peers, StoreError> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = tls_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| StoreError::Backend(format!("peer CA: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let client = b
            .build()
            .map_err(|e| StoreError::Backend(format!("peer client: {e}")))?;
        Ok(Peers {
            scheme: if tls_ca.is_some() { "https" } else { "http" },
            list,
            dns,
            exclude,
            client,
            timeout,
            token,
        })
    }

    /// Every peer's address now (the DNS name resolved again).
    async fn targets(&self) -> (Vec<String>, Option<String>) {
        let mut out = self.list.clone();
        let mut warning = None;
        if let Some(name) = &self.dns {
            match tokio::time::timeout(self.timeout, tokio::net::lookup_host(name.as_str())).await {
                Ok(Ok(addrs)) => out.extend(
                    addrs
                        .filter(|a| !self.exclude.contains(&a.ip()))
                        .map(|a| a.to_string()),
                ),
                Ok(Err(e)) => warning = Some(format!("peers: resolving {name}: {e}")),
                Err(_) => warning = Some(format!("peers: resolving {name} took too long")),
            }
        }
        out.sort();
        out.dedup();
        (out, warning)
    }

    /// POSTs `body` to `path` on every peer at once; the answers that came
    /// within the timeout and the byte budget (the others are warnings in `ctl`).
    fn ask(&self, backend: &Backend, path: &str, body: Vec<u8>, ctl: &ReadCtl) -> Vec<Bytes> {
        let room = ctl.limit().saturating_sub(ctl.used()).min(MAX_ANSWER);
        let asked = backend.block_on(async {
            let (targets, warning) = self.targets().await;
            let calls = targets.iter().map(|t| {
                let mut req = self
                    .client
                    .post(format!("{}://{t}{path}", self.scheme))
                    .header("content-type", "application/json")
                    .body(body.clone());
                if let Some(token) = &self.token {
                    req = req.bearer_auth(token);
                }
                async move {
                    let answer = async {
                        let mut r = req.send().await.map_err(|e| e.to_string())?;
                        if !r.status().is_success() {
                            return Err(format!("answered {}", r.status()));
                        }
                        let mut buf = Vec::new();
                        while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
                            buf.extend_from_slice(&chunk);
                            if buf.len() as u64 > room {
                                return Err(format!(
                                    "its answer is larger than this read's memory budget ({room} bytes)"
                                ));
                            }
                        }
                        Ok(Bytes::from(buf))
                    };
                    (t.clone(), answer.await)
                }
            });
            (futures_util::future::join_all(calls).await, warning)
        });
        let (answers, warning) = match asked {
            Ok(a) => a,
            Err(e) => {
                ctl.warn(format!("peers not asked: {e}"));
                return Vec::new();
            }
        };
        if let Some(w) = warning {
            ctl.warn(w);
        }
        let mut out = Vec::new();
        for (peer, a) in answers {
            match a {
                Ok(b) => out.push(b),
                Err(e) => ctl.warn(format!(
                    "replica {peer} did not answer ({e}): spans it received in the last store.blocks.max_age may be missing"
                )),
            }
        }
        out
    }

    /// The spans of traces `ids` the peers hold outside the bucket.
    pub fn traces(&self, backend: &Backend, ids: &[[u8; 16]], ctl: &ReadCtl) -> Vec<Row> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(MAX_IDS) {
            let body = serde_json::to_vec(&IdsRequest {
                ids: chunk.iter().map(hex).collect(),
            })
            .unwrap_or_default();
            for answer in self.ask(backend, TRACES_PATH, body, ctl) {
                match wal::decode(&answer) {
                    Ok(r) => rows.extend(r),
                    Err(e) => ctl.warn(format!("a replica's answer cannot be read: {e}")),
                }
            }
        }
        rows
    }

    /// Trace ids (with their newest matching start) the peers' heads match.
    pub fn search(&self, backend: &Backend, q: &TraceQuery, ctl: &ReadCtl) -> Vec<([u8; 16], i64)> {
        let body = serde_json::to_vec(&PeerQuery::from(q)).unwrap_or_default();
        let mut out = Vec::new();
        for answer in self.ask(backend, SEARCH_PATH, body, ctl) {
            match serde_json::from_slice::<Vec<(String, i64)>>(&answer) {
                Ok(found) => out.extend(
                    found
                        .into_iter()
                        .filter_map(|(h, s)| Some((parse_id(&h)?, s))),
                ),
                Err(e) => ctl.warn(format!("a replica's answer cannot be read: {e}")),
            }
        }
        out
    }

    /// Services and operations in the peers' heads.
    pub fn services(
        &self,
        backend: &Backend,
        ctl: &ReadCtl,
    ) -> BTreeMap<String, BTreeSet<(String, i32)>> {
        let mut out: BTreeMap<String, BTreeSet<(String, i32)>> = BTreeMap::new();
        for answer in self.ask(backend, SERVICES_PATH, b"{}".to_vec(), ctl) {
            match serde_json::from_slice::<BTreeMap<String, BTreeSet<(String, i32)>>>(&answer) {
                Ok(m) => {
                    for (s, ops) in m {
                        out.entry(s).or_default().extend(ops);
                    }
                }
                Err(e) => ctl.warn(format!("a replica's answer cannot be read: {e}")),
            }
        }
        out
    }
}

/// The answers to peers: what this replica holds outside the bucket.
#[derive(Clone)]
struct Served {
    store: Arc<BlockStore>,
    timeout: Duration,
    max_bytes: u64,
}

/// The internal endpoints peers call (on the query port, behind its tokens).
pub fn router(store: Arc<BlockStore>, timeout: Duration, max_bytes: u64) -> axum::Router {
    axum::Router::new()
        .route(TRACES_PATH, axum::routing::post(serve_traces))
        .route(SEARCH_PATH, axum::routing::post(serve_search))
        .route(SERVICES_PATH, axum::routing::post(serve_services))
        .with_state(Served {
            store,
            timeout,
            max_bytes,
        })
}

fn refused(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

impl Served {
    /// Runs `f` off the runtime with a deadline and a byte budget.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BlockStore, &ReadCtl) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Response> {
        let store = self.store.clone();
        let ctl = ReadCtl::new(
            Some(std::time::Instant::now() + self.timeout),
            self.max_bytes,
            "store.blocks.peer_timeout".into(),
        );
        match tokio::task::spawn_blocking(move || f(&store, &ctl)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(refused(e)),
            Err(e) => Err(refused(e)),
        }
    }
}

async fn serve_traces(State(s): State<Served>, body: Bytes) -> Response {
    let req: IdsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let ids: Vec<[u8; 16]> = req.ids.iter().filter_map(|h| parse_id(h)).collect();
    if ids.len() > MAX_IDS {
        return (StatusCode::BAD_REQUEST, format!("at most {MAX_IDS} ids")).into_response();
    }
    let done = s
        .run(move |store, ctl| {
            let set = store.read_traces(&ids, 1_000_000, ctl, Scope::Local)?;
            let mut names = Names::default();
            let rows: Vec<Row> = set
                .traces
                .iter()
                .flat_map(|t| t.spans.iter().map(|sp| (t.trace_id, sp)))
                .map(|(id, sp)| Row::from_stored(id, sp, &mut names))
                .collect();
            Ok(wal::encode(&rows))
        })
        .await;
    match done {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(r) => r,
    }
}

async fn serve_search(State(s): State<Served>, body: Bytes) -> Response {
    let q: PeerQuery = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let done = s
        .run(move |store, ctl| {
            let found = store.newest(&TraceQuery::from(q), ctl, Scope::Local)?;
            Ok(found
                .into_iter()
                .map(|(id, start)| (hex(&id), start))
                .collect::<Vec<_>>())
        })
        .await;
    match done {
        Ok(found) => axum::Json(found).into_response(),
        Err(r) => r,
    }
}

async fn serve_services(State(s): State<Served>) -> Response {
    match s.run(|store, ctl| store.catalog(ctl, Scope::Local)).await {
        Ok(m) => axum::Json(m).into_response(),
        Err(r) => r,
    }
}
