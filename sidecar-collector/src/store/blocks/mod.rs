//! The second engine (Tempo's shape, on kept parts): a write-ahead log for
//! durability and acknowledgement, an in-memory head for recent spans, and
//! immutable Parquet blocks in an object store (a local directory by default,
//! any S3-compatible bucket otherwise).
//!
//! ```text
//! write ─▶ WAL (fsync, ack) ─▶ head (memory) ──seal──▶ sealed head
//!                                   ──block thread──▶ pending block (local Parquet)
//!                                   ──upload: data, then index──▶ backend block
//!                                   ──▶ WAL segments released
//! ```
//!
//! A head is sealed when it holds `max_bytes` or is `max_age` old; sealing
//! rolls the WAL, so a block covers whole segments, and its index object
//! names them: on start-up, segments whose blocks the backend already holds
//! are not replayed (no duplicate blocks after a crash between the upload and
//! the release). A block's index object (`meta.json`) is written after its
//! data, so a block is visible only once it is whole.
//!
//! Layout in the backend: `blocks/<day>/<replica>/<block id>/{data.parquet,meta.json}`.
//! A block holds one UTC day of span starts (retention drops whole days, as
//! the SQLite engine does), sorted by trace id.

pub mod archive;
pub mod backend;
mod cache;
mod format;
pub mod peers;
mod reserve;
pub mod shared;
mod wal;

use super::rows::{corrupt, day_of, io, lock, name_cost, row_identity, span_key, EDGE_SPAN_COST};
use super::sqlite::Durability;
use super::{Edge, ReadCtl, SpanReader, SpanWriter, StoreError, TraceQuery, TraceSet};
use crate::model::{span_memory, Origin, SpanRecord, StoredSpan, StoredTrace};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use backend::{Backend, Location};
use bytes::Bytes;
use meshtrace_proto::otlp::trace::v1::Span;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct BlockSettings {
    pub durability: Durability,
    pub location: Location,
    /// This collector's name in the bucket (several replicas share one).
    pub replica: String,
    /// A head older than this is sealed into a block.
    pub max_age: Duration,
    /// A head holding this many bytes is sealed into a block.
    pub max_bytes: u64,
    /// Bytes the WAL may hold before writes are refused (retryably).
    pub wal_max_bytes: u64,
    /// Spans per Parquet row group.
    pub rows_per_group: usize,
    /// How often the list of blocks is read again (other replicas' blocks).
    pub poll_interval: Duration,
    /// How often this replica's small blocks of a day are merged (`0s`: at
    /// every round of the block thread, for tests).
    pub compaction_interval: Duration,
    /// Bytes of recently read blocks kept on local disk (0: no cache).
    pub cache_bytes: u64,
    /// Bytes of opened blocks' metadata (footers, page indexes, bloom filters)
    /// kept in memory; the least recently used are dropped past it.
    pub metadata_bytes: u64,
    /// The disk reserve's size (`None`: 1% of the volume, 64 KiB to 256 MiB, at most
    /// a quarter of `max_bytes`; 0: none).
    pub reserve_bytes: Option<u64>,
}

impl Default for BlockSettings {
    fn default() -> Self {
        BlockSettings {
            durability: Durability::Fsync,
            location: Location::Local(PathBuf::from("blocks")),
            replica: "local".into(),
            max_age: Duration::from_secs(300),
            max_bytes: 128 << 20,
            wal_max_bytes: 8 << 30,
            rows_per_group: 8192,
            poll_interval: Duration::from_secs(30),
            compaction_interval: Duration::from_secs(60),
            cache_bytes: 0,
            metadata_bytes: 256 << 20,
            reserve_bytes: None,
        }
    }
}

/// Opened blocks' metadata in memory, against `BlockSettings::metadata_bytes`.
#[derive(Default)]
struct MetaBudget {
    limit: u64,
    /// Bytes of metadata held (kept exact by [`BlockStore::trim_metadata`]).
    used: AtomicU64,
    /// A clock of uses: a block's `last_used` is its tick.
    tick: AtomicU64,
}

impl MetaBudget {
    fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// A span as the engine holds it.
#[derive(Debug, Clone)]
pub struct Row {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub kind: i32,
    pub start_us: i64,
    pub duration_us: i64,
    pub error: bool,
    pub status_code: i32,
    pub origin: Arc<[u8]>,
    pub body: Bytes,
    /// Tag hashes, sorted ([`crate::model::span_tag_hashes`]).
    pub tags: Arc<[u64]>,
}

impl Row {
    fn from_record(r: &SpanRecord, names: &mut Names) -> Row {
        Row {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span_id,
            service: names.get(&r.service),
            operation: names.get(&r.operation),
            kind: r.kind,
            start_us: r.start_us,
            duration_us: r.duration_us,
            error: r.error,
            status_code: r.status_code,
            origin: r.origin.clone(),
            body: r.body.clone(),
            tags: r.tags.clone(),
        }
        .with_tags()
    }

    /// The row with its tag hashes, computed from its body and origin when it
    /// has none (rows from WAL frames and blocks written before they were
    /// kept: every span has at least `span.kind`).
    pub fn with_tags(mut self) -> Row {
        if self.tags.is_empty() {
            if let (Ok(span), Ok(origin)) =
                (Span::decode(&self.body[..]), Origin::decode(&self.origin))
            {
                self.tags = crate::model::stored_tag_hashes(&StoredSpan {
                    span,
                    origin: Arc::new(origin),
                });
            }
        }
        self
    }

    /// A span read back, as a row again (archive, answers to peers).
    pub fn from_stored(trace_id: [u8; 16], s: &StoredSpan, names: &mut Names) -> Row {
        let sp = &s.span;
        Row {
            trace_id,
            span_id: <[u8; 8]>::try_from(sp.span_id.as_slice()).unwrap_or_default(),
            parent_span_id: <[u8; 8]>::try_from(sp.parent_span_id.as_slice()).ok(),
            service: names.get(&crate::model::service_of(&s.origin.resource)),
            operation: names.get(&sp.name),
            kind: sp.kind,
            start_us: (sp.start_time_unix_nano / 1000) as i64,
            duration_us: (sp
                .end_time_unix_nano
                .saturating_sub(sp.start_time_unix_nano)
                / 1000) as i64,
            error: crate::model::is_error(sp),
            status_code: sp.status.as_ref().map_or(0, |st| st.code),
            origin: Origin::encode(&s.origin.resource, Some(&s.origin.scope)).into(),
            body: Bytes::from(sp.encode_to_vec()),
            tags: crate::model::stored_tag_hashes(s),
        }
    }

    /// What it holds in memory (for the head's bound).
    fn cost(&self) -> u64 {
        self.body.len() as u64 + self.tags.len() as u64 * 8 + 176
    }
}

/// Hashes a trace id: its two halves folded and mixed (splitmix64's
/// finalizer). Ids are usually random, but sequential or zero-padded ones
/// (64-bit Zipkin ids, test traffic) must spread too. SipHash over all 16
/// bytes cost more than the map it keys.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(b);
        }
    }
}

type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// Interned names: one allocation per distinct service or operation.
#[derive(Default)]
pub struct Names(HashMap<String, Arc<str>, foldhash::fast::RandomState>);

impl Names {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if self.0.len() < 100_000 {
            self.0.insert(s.to_string(), a.clone());
        }
        a
    }
}

/// A block's index object: what a reader needs to decide whether to open it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    pub format_version: u32,
    pub id: String,
    pub replica: String,
    /// UTC day (days since the epoch) of every span start in it.
    pub day: i64,
    pub min_start_us: i64,
    pub max_start_us: i64,
    pub spans: u64,
    pub traces: u64,
    pub data_bytes: u64,
    /// What its spans take decoded (the head's measure): what merging it holds.
    #[serde(default)]
    pub raw_bytes: u64,
    /// Where the data object's row groups end: from here to its end are its
    /// bloom filters, page index and footer (what opening it reads, at once).
    #[serde(default)]
    pub index_offset: Option<u64>,
    /// Service → (operation, span kind) pairs.
    pub services: BTreeMap<String, Vec<(String, i32)>>,
    pub created_us: i64,
    /// The WAL segments it holds, when it was cut from this replica's WAL.
    #[serde(default)]
    pub wal: Option<WalRange>,
}

/// Segments `first..=last` of the WAL `wal_id`; `last_part` on the last block
/// cut from them (uploaded last: once it is in the backend, all are).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalRange {
    pub wal_id: String,
    pub first: u64,
    pub last: u64,
    pub last_part: bool,
}

impl BlockMeta {
    fn dir_key(&self) -> String {
        format!("blocks/{:06}/{}/{}", self.day, self.replica, self.id)
    }
}

/// Where a block's bytes are.
enum Source {
    /// Written locally, not yet uploaded (once uploaded, the file goes and
    /// the same bytes are read from the backend).
    Pending(PathBuf, Arc<Backend>),
    /// In the backend, and read from the local cache once there.
    Remote(Arc<Backend>, Option<Arc<cache::Cache>>),
}

struct Block {
    meta: BlockMeta,
    source: Source,
    opened: Mutex<Option<Arc<format::Opened>>>,
    /// When its metadata was last used ([`MetaBudget::tick`]).
    last_used: AtomicU64,
}

enum Reader {
    File(std::fs::File),
    Remote(backend::RemoteFile),
}

impl Block {
    fn data_key(&self) -> String {
        format!("{}/data.parquet", self.meta.dir_key())
    }

    fn reader(&self) -> Result<Reader, StoreError> {
        Ok(match &self.source {
            Source::Pending(p, backend) => match std::fs::File::open(p) {
                Ok(f) => Reader::File(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Reader::Remote(backend.reader(&self.data_key(), self.meta.data_bytes))
                }
                Err(e) => return Err(io(p, e)),
            },
            Source::Remote(b, cache) => {
                let key = self.data_key();
                match cache
                    .as_ref()
                    .and_then(|c| c.file(&key, self.meta.data_bytes))
                {
                    Some(f) => Reader::File(f),
                    None => Reader::Remote(b.reader(&key, self.meta.data_bytes)),
                }
            }
        })
    }

    /// The block's metadata and filters, read once and kept while `budget` allows
    /// (a failed read is tried again next time).
    fn opened(&self, budget: &MetaBudget) -> Result<Arc<format::Opened>, StoreError> {
        self.last_used.store(budget.tick(), Ordering::Relaxed);
        if let Some(o) = lock(&self.opened).as_ref() {
            return Ok(o.clone());
        }
        let o = Arc::new(match self.reader()? {
            Reader::File(f) => format::open(f, self.meta.index_offset)?,
            Reader::Remote(r) => format::open(r, self.meta.index_offset)?,
        });
        let mut slot = lock(&self.opened);
        if slot.is_none() {
            budget.used.fetch_add(o.bytes, Ordering::Relaxed);
            *slot = Some(o.clone());
        }
        Ok(o)
    }

    /// Its metadata's bytes in memory (0 when not opened).
    fn opened_bytes(&self) -> u64 {
        lock(&self.opened).as_ref().map_or(0, |o| o.bytes)
    }

    fn read(
        &self,
        opened: &format::Opened,
        group: usize,
        columns: &[usize],
        selection: Option<&[std::ops::Range<usize>]>,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        match self.reader()? {
            Reader::File(f) => format::read(f, opened, group, columns, selection),
            Reader::Remote(r) => format::read(r, opened, group, columns, selection),
        }
    }

    /// Whole row groups `groups`, fetched in one round (see [`format::read_groups`]).
    fn read_groups(
        &self,
        opened: &format::Opened,
        groups: &[usize],
        columns: &[usize],
    ) -> Result<Vec<(usize, Vec<RecordBatch>)>, StoreError> {
        match self.reader()? {
            Reader::File(f) => format::read_groups(f, opened, groups, columns),
            Reader::Remote(r) => format::read_groups(r, opened, groups, columns),
        }
    }

    /// Reads `columns` of row groups `groups`, [`SEARCH_WAVE`] at a time
    /// (each wave's bytes charged to `ctl` while it is decoded), handing each
    /// group's batches to `f`.
    fn scan_groups(
        &self,
        opened: &format::Opened,
        groups: &[usize],
        columns: &[usize],
        ctl: &ReadCtl,
        mut f: impl FnMut(usize, Vec<RecordBatch>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for wave in groups.chunks(SEARCH_WAVE) {
            ctl.check()?;
            let fetched: u64 = wave
                .iter()
                .map(|gi| format::fetched_bytes(opened, *gi, columns))
                .sum();
            ctl.charge(fetched)?;
            let done = self
                .read_groups(opened, wave, columns)
                .and_then(|read| read.into_iter().try_for_each(|(gi, b)| f(gi, b)));
            ctl.release(fetched);
            done?;
        }
        Ok(())
    }

    fn overlaps(&self, from_us: i64, to_us: i64) -> bool {
        self.meta.max_start_us >= from_us && self.meta.min_start_us <= to_us
    }
}

/// No row (the end of a trace's chain).
const NO_ROW: u32 = u32::MAX;

/// Recent spans, in memory: appended in batches, indexed by trace id.
#[derive(Default)]
struct Head {
    chunks: Vec<Arc<Vec<Row>>>,
    /// Where each chunk starts, counted in rows.
    chunk_starts: Vec<u32>,
    /// Trace id → its last row (counted across chunks); `prev` chains each
    /// row to the trace's row before it. No allocation per trace.
    by_trace: HashMap<[u8; 16], u32, IdHash>,
    prev: Vec<u32>,
    /// (service, operation, kind) already in `services`, by the names'
    /// interned pointers: a lookup per span costs no string comparison.
    known_ops: HashSet<(usize, usize, i32)>,
    bytes: u64,
    opened: Option<Instant>,
    /// The first WAL segment its spans are in.
    first_seq: u64,
    /// Service → operations seen.
    services: BTreeMap<Arc<str>, BTreeSet<(Arc<str>, i32)>>,
}

impl Head {
    fn new(first_seq: u64) -> Head {
        Head {
            first_seq,
            ..Head::default()
        }
    }

    /// Adds rows. A span written twice (a retried export) is held twice
    /// here; reads show it once, and cutting a block stores it once.
    fn insert(&mut self, fresh: Vec<Row>) {
        if fresh.is_empty() {
            return;
        }
        let start = self.prev.len() as u32;
        self.chunk_starts.push(start);
        for (i, r) in fresh.iter().enumerate() {
            let g = start + i as u32;
            let before = self.by_trace.insert(r.trace_id, g).unwrap_or(NO_ROW);
            self.prev.push(before);
            self.bytes += r.cost() + 64;
            let key = (
                Arc::as_ptr(&r.service) as *const u8 as usize,
                Arc::as_ptr(&r.operation) as *const u8 as usize,
                r.kind,
            );
            if self.known_ops.insert(key) {
                self.services
                    .entry(r.service.clone())
                    .or_default()
                    .insert((r.operation.clone(), r.kind));
            }
        }
        self.opened.get_or_insert_with(Instant::now);
        self.chunks.push(Arc::new(fresh));
    }

    /// The rows of trace `id`, in the order they were written.
    fn trace_rows(&self, id: &[u8; 16]) -> Vec<&Row> {
        let mut out = Vec::new();
        let mut g = self.by_trace.get(id).copied().unwrap_or(NO_ROW);
        while g != NO_ROW {
            let c = self
                .chunk_starts
                .partition_point(|s| *s <= g)
                .saturating_sub(1);
            let start = self.chunk_starts.get(c).copied().unwrap_or(0);
            if let Some(r) = self
                .chunks
                .get(c)
                .and_then(|ch| ch.get(g.saturating_sub(start) as usize))
            {
                out.push(r);
            }
            g = self.prev.get(g as usize).copied().unwrap_or(NO_ROW);
        }
        out.reverse();
        out
    }

    fn rows(&self) -> impl Iterator<Item = &Row> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Keeps only the rows of days from `day` on; returns the days dropped.
    fn drop_days_before(&mut self, day: i64) -> BTreeSet<i64> {
        let dropped: BTreeSet<i64> = self
            .rows()
            .map(|r| day_of(r.start_us))
            .filter(|d| *d < day)
            .collect();
        if dropped.is_empty() {
            return dropped;
        }
        let kept: Vec<Row> = self
            .rows()
            .filter(|r| day_of(r.start_us) >= day)
            .cloned()
            .collect();
        let (first_seq, opened) = (self.first_seq, self.opened);
        *self = Head::new(first_seq);
        self.insert(kept);
        self.opened = opened;
        dropped
    }
}

/// A sealed head waiting for its blocks, and the WAL segments it is in.
struct Sealed {
    head: Head,
    last_seq: u64,
}

/// What readers see: the head, sealed heads, pending and uploaded blocks.
#[derive(Default)]
struct State {
    sealed: Vec<Arc<Sealed>>,
    pending: Vec<Arc<Block>>,
    /// Uploaded blocks (this replica's and the others'), by directory key.
    blocks: BTreeMap<String, Arc<Block>>,
}

/// The WAL and the head, changed together under one lock (the writer's).
struct Writing {
    wal: wal::Wal,
    head: Arc<RwLock<Head>>,
    /// Names interned across writes.
    names: Names,
}

/// The blocks engine.
pub struct BlockStore {
    settings: BlockSettings,
    dir: PathBuf,
    cutter: Cutter,
    backend: Arc<Backend>,
    writing: Mutex<Writing>,
    /// The head readers look at (the same `Arc` as `writing.head`).
    head: RwLock<Arc<RwLock<Head>>>,
    state: RwLock<State>,
    /// Wakes the block thread.
    wake: Arc<(Mutex<bool>, Condvar)>,
    /// Set when the store is dropped: the block thread ends.
    closing: Arc<std::sync::atomic::AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The other replicas, asked for what is in their heads.
    peers: OnceLock<peers::Peers>,
    /// Held by a round of block work; when blocks were last merged.
    working: Mutex<Option<Instant>>,
    /// Merges that deleted the blocks they replaced: a read that overlapped
    /// one may have missed spans (in neither its blocks nor its snapshot), and
    /// is read again ([`BlockStore::consistent`]).
    replaced: AtomicU64,
    /// The last upload failed (the backend is down): why.
    upload_error: Mutex<Option<String>>,
    /// Recently read blocks on local disk (`cache_bytes` > 0).
    cache: Option<Arc<cache::Cache>>,
    /// Held while sealed heads are cut (by the block thread, or by a writer
    /// that finds them full while uploads are slow): each is cut once.
    cutting: Mutex<()>,
    /// Space set aside for cutting on a full disk.
    reserve: reserve::Reserve,
    /// Opened blocks' metadata held in memory.
    meta_budget: MetaBudget,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_us());
    format!("{:016x}{:016x}", now_us() as u64, h.finish())
}

/// Sorts rows as a block holds them (trace id, start, span id) and keeps one of
/// identical spans (they sort next to each other).
fn sort_and_dedup<R: Borrow<Row>>(rows: &mut Vec<R>) {
    // Ids as big-endian integers order as their bytes do, compared in registers.
    rows.sort_unstable_by_key(|r| {
        let r: &Row = r.borrow();
        (
            u128::from_be_bytes(r.trace_id),
            r.start_us,
            u64::from_be_bytes(r.span_id),
        )
    });
    rows.dedup_by(|a, b| {
        let (a, b): (&Row, &Row) = ((*a).borrow(), (*b).borrow());
        a.trace_id == b.trace_id
            && a.span_id == b.span_id
            && a.start_us == b.start_us
            && a.body == b.body
            && a.origin == b.origin
    });
}

/// Cuts sealed heads into local Parquet blocks.
struct Cutter {
    pending_dir: PathBuf,
    backend: Arc<Backend>,
    replica: String,
    rows_per_group: usize,
    wal_id: String,
}

impl Cutter {
    /// A sealed head's spans as local Parquet blocks, one per UTC day.
    fn blocks(&self, sealed: &Sealed) -> Result<Vec<Block>, StoreError> {
        // The head's rows by reference (sorting moves pointers, not rows), the
        // first day's list sized for all of them: a head is most often one day.
        let all = sealed.head.prev.len();
        let mut by_day: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
        for r in sealed.head.rows() {
            let first = by_day.is_empty();
            by_day
                .entry(day_of(r.start_us))
                .or_insert_with(|| Vec::with_capacity(if first { all } else { 0 }))
                .push(r);
        }
        let parts = by_day.len();
        let mut blocks = Vec::with_capacity(parts);
        for (i, (day, mut rows)) in by_day.into_iter().enumerate() {
            sort_and_dedup(&mut rows);
            let wal = WalRange {
                wal_id: self.wal_id.clone(),
                first: sealed.head.first_seq,
                last: sealed.last_seq,
                last_part: i + 1 == parts,
            };
            blocks.push(self.block(day, &rows, Some(wal))?);
        }
        Ok(blocks)
    }

    /// Writes `rows` (one day, sorted) as a local block.
    fn block<R: Borrow<Row>>(
        &self,
        day: i64,
        rows: &[R],
        wal: Option<WalRange>,
    ) -> Result<Block, StoreError> {
        let id = format!("{}-{}", self.replica, random_id());
        let path = self.pending_dir.join(format!("{id}.parquet"));
        let written = (|| {
            let file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
            // Buffered: the writer hands over a page at a time (a system call each).
            let out = std::io::BufWriter::with_capacity(1 << 20, file);
            let (out, index_offset) = format::write(rows, self.rows_per_group, out)?;
            let file = out.into_inner().map_err(|e| io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| io(&path, e))?;
            let data_bytes = file.metadata().map_err(|e| io(&path, e))?.len();
            Ok::<_, StoreError>((index_offset, data_bytes))
        })();
        // A block that could not be written (a full disk) leaves no partial
        // file to hold the space the next try needs.
        let (index_offset, data_bytes) = written.inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        // Names are interned: one (service, operation, kind) by their pointers,
        // then by their text (rows read from several blocks may not share them).
        let mut seen: HashMap<(usize, usize, i32), &Row, foldhash::fast::FixedState> =
            HashMap::default();
        for r in rows {
            let r: &Row = r.borrow();
            let key = (
                Arc::as_ptr(&r.service) as *const u8 as usize,
                Arc::as_ptr(&r.operation) as *const u8 as usize,
                r.kind,
            );
            seen.entry(key).or_insert(r);
        }
        let mut services: BTreeMap<String, BTreeSet<(String, i32)>> = BTreeMap::new();
        for r in seen.into_values() {
            services
                .entry(r.service.to_string())
                .or_default()
                .insert((r.operation.to_string(), r.kind));
        }
        let rows = || rows.iter().map(|r| r.borrow());
        let meta = BlockMeta {
            format_version: format::FORMAT_VERSION,
            id,
            replica: self.replica.clone(),
            day,
            min_start_us: rows().map(|r| r.start_us).min().unwrap_or(0),
            max_start_us: rows().map(|r| r.start_us).max().unwrap_or(0),
            spans: rows().count() as u64,
            traces: format::traces(rows()) as u64,
            data_bytes,
            raw_bytes: rows().map(Row::cost).sum(),
            index_offset: Some(index_offset),
            services: services
                .into_iter()
                .map(|(s, ops)| (s, ops.into_iter().collect()))
                .collect(),
            created_us: now_us(),
            wal,
        };
        Ok(Block {
            meta,
            source: Source::Pending(path, self.backend.clone()),
            opened: Mutex::new(None),
            last_used: AtomicU64::new(0),
        })
    }
}

impl BlockStore {
    /// Opens the engine: `dir` holds the WAL and pending blocks; blocks go to
    /// `settings.location`. Replays the WAL segments not yet in the backend
    /// (cutting blocks as heads fill, so memory stays within `max_bytes`) and
    /// starts the block thread.
    pub fn open(dir: &Path, settings: BlockSettings) -> Result<Arc<BlockStore>, StoreError> {
        let started = Instant::now();
        let backend = Arc::new(Backend::open(&settings.location)?);
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| io(&wal_dir, e))?;
        let id_path = wal_dir.join("ID");
        let wal_id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let id = random_id();
                std::fs::write(&id_path, &id).map_err(|e| io(&id_path, e))?;
                id
            }
        };
        let reserve = reserve::Reserve::new(dir, settings.reserve_bytes, settings.max_bytes);
        reserve.refill();
        // Pending blocks are made again from the WAL: what was left is dropped.
        let pending_dir = dir.join("pending");
        if pending_dir.exists() {
            std::fs::remove_dir_all(&pending_dir).map_err(|e| io(&pending_dir, e))?;
        }
        std::fs::create_dir_all(&pending_dir).map_err(|e| io(&pending_dir, e))?;
        let cutter = Cutter {
            pending_dir,
            backend: backend.clone(),
            replica: settings.replica.clone(),
            rows_per_group: settings.rows_per_group,
            wal_id: wal_id.clone(),
        };

        let mut state = State::default();
        let cache = match settings.cache_bytes {
            0 => None,
            n => Some(Arc::new(cache::Cache::open(&dir.join("cache"), n)?)),
        };
        for b in load_catalog(&backend, &cache)? {
            state.blocks.insert(b.meta.dir_key(), Arc::new(b));
        }
        // Segments already in the backend (this WAL's, whole seals only). By
        // range, not the highest one: a seal cut after a later one (a replayed
        // head kept in memory while the disk was full) is uploaded after it.
        let covered = Covered::new(
            state
                .blocks
                .values()
                .filter_map(|b| b.meta.wal.as_ref())
                .filter(|w| w.wal_id == wal_id && w.last_part)
                .map(|w| (w.first, w.last)),
        );
        let (mut head, mut last_seq, mut replayed, mut skipped) = (Head::new(0), 0, 0u64, 0);
        // The first segment replayed: every one below it is in the backend.
        let (mut first_replayed, mut last_seen) = (None, 0);
        let mut wal = wal::Wal::open(&wal_dir, settings.durability, |r| {
            if covered.holds(r.seq) {
                skipped += 1;
                last_seen = r.seq;
                return Ok(());
            }
            first_replayed.get_or_insert(r.seq);
            if head.is_empty() {
                head.first_seq = r.seq;
            }
            for b in r.batches {
                replayed += b.len() as u64;
                head.insert(b);
            }
            last_seq = r.seq;
            if head.bytes >= settings.max_bytes {
                let full = std::mem::take(&mut head);
                cut_replayed(
                    &cutter,
                    &mut state,
                    Sealed {
                        head: full,
                        last_seq,
                    },
                );
            }
            Ok(())
        })?;
        if !head.is_empty() {
            cut_replayed(&cutter, &mut state, Sealed { head, last_seq });
        }
        wal.release_below(first_replayed.unwrap_or(last_seen + 1))?;
        if replayed > 0 || skipped > 0 {
            tracing::info!(
                spans = replayed,
                segments_already_in_blocks = skipped,
                took_ms = started.elapsed().as_millis() as u64,
                "WAL replayed"
            );
        }
        let head = Arc::new(RwLock::new(Head::new(wal.seq())));
        let store = Arc::new(BlockStore {
            dir: dir.to_path_buf(),
            backend,
            writing: Mutex::new(Writing {
                wal,
                head: head.clone(),
                names: Names::default(),
            }),
            head: RwLock::new(head),
            state: RwLock::new(state),
            wake: Arc::new((Mutex::new(false), Condvar::new())),
            closing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            thread: Mutex::new(None),
            upload_error: Mutex::new(None),
            cache,
            cutting: Mutex::new(()),
            reserve,
            meta_budget: MetaBudget {
                limit: settings.metadata_bytes,
                ..MetaBudget::default()
            },
            working: Mutex::new(None),
            replaced: AtomicU64::new(0),
            peers: OnceLock::new(),
            cutter,
            settings,
        });
        let weak = Arc::downgrade(&store);
        let (wake, closing) = (store.wake.clone(), store.closing.clone());
        let handle = std::thread::Builder::new()
            .name("blocks".into())
            .spawn(move || block_thread(weak, wake, closing))
            .map_err(|e| io(dir, e))?;
        *lock(&store.thread) = Some(handle);
        Ok(store)
    }

    /// Writes a sealed head out as pending blocks and hands them to readers in its place.
    fn make_pending(&self, sealed: Arc<Sealed>) -> Result<(), StoreError> {
        let blocks = self.cutter.blocks(&sealed)?;
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.sealed.retain(|s| !Arc::ptr_eq(s, &sealed));
        st.pending.extend(blocks.into_iter().map(Arc::new));
        Ok(())
    }

    /// Seals the head if it is full or old enough (or `force`); true if it did.
    fn seal(&self, force: bool) -> Result<bool, StoreError> {
        let mut w = lock(&self.writing);
        let due = {
            let h = w.head.read().unwrap_or_else(|e| e.into_inner());
            !h.is_empty()
                && (force
                    || h.bytes >= self.settings.max_bytes
                    || h.opened
                        .is_some_and(|o| o.elapsed() >= self.settings.max_age))
        };
        if !due {
            return Ok(false);
        }
        let last_seq = w.wal.seq();
        let next = w.wal.roll()?;
        let fresh = Arc::new(RwLock::new(Head::new(next)));
        let old = std::mem::replace(&mut w.head, fresh.clone());
        {
            // Under the state's lock: a read sees the spans in the head or in
            // the sealed head, never in neither.
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            let head = std::mem::take(&mut *old.write().unwrap_or_else(|e| e.into_inner()));
            st.sealed.push(Arc::new(Sealed { head, last_seq }));
            *self.head.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        drop(w);
        let (m, c) = &*self.wake;
        *lock(m) = true;
        c.notify_all();
        Ok(true)
    }

    /// One round of the block thread: seal when due, write sealed heads out,
    /// upload pending blocks, release the WAL. Errors are logged and retried.
    fn work(&self) -> Result<(), StoreError> {
        // One round at a time (the block thread, `flush`): a sealed head is cut once.
        let mut last_compaction = lock(&self.working);
        self.seal(false)?;
        if let Err(e) = self.cut_sealed().and_then(|()| self.upload_pending()) {
            // A full disk: the reserve's space turns the WAL into blocks, which frees it.
            if !self.reserve.release() {
                return Err(e);
            }
            tracing::warn!(error = %e, reserve_bytes = self.reserve.bytes(),
                "blocks: the disk is full; the space set aside is used to cut the WAL into blocks and release it");
            self.cut_sealed()?;
            self.upload_pending()?;
        }
        self.reserve.refill();
        if last_compaction.is_none_or(|t| t.elapsed() >= self.settings.compaction_interval) {
            *last_compaction = Some(Instant::now());
            // Heads sealed meanwhile are cut between merges: writers wait for them.
            while self.compact()? {
                self.cut_sealed()?;
            }
        }
        self.trim_metadata();
        self.warm();
        if let Some(c) = &self.cache {
            if let Err(e) = c.fill(&self.backend) {
                tracing::warn!(error = %e, "blocks: caching a block locally failed");
            }
        }
        Ok(())
    }

    /// Writes every sealed head out as pending blocks.
    fn cut_sealed(&self) -> Result<(), StoreError> {
        let _one = lock(&self.cutting);
        let sealed: Vec<Arc<Sealed>> = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .sealed
            .clone();
        for s in sealed {
            self.make_pending(s)?;
        }
        Ok(())
    }

    /// Reads the metadata and trace-id filters of blocks not opened yet (other
    /// replicas' new blocks, every block after a start), so the first query
    /// does not wait for them one object-store request at a time.
    fn warm(&self) {
        let cold: Vec<Arc<Block>> = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .values()
            .filter(|b| lock(&b.opened).is_none())
            .take(256)
            .cloned()
            .collect();
        for b in cold {
            // Newest first would be better still; at least never past half the budget.
            if self.meta_budget.used.load(Ordering::Relaxed) > self.meta_budget.limit / 2 {
                break;
            }
            if let Err(e) = b.opened(&self.meta_budget) {
                tracing::debug!(block = %b.meta.id, error = %e, "block metadata not read yet");
            }
        }
    }

    /// Counts the metadata held again (blocks deleted meanwhile took theirs
    /// along) and, past `metadata_bytes`, drops the least recently used blocks'
    /// until three quarters of it are held. A read using a dropped block's
    /// metadata keeps it until it ends.
    fn trim_metadata(&self) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<(u64, Arc<Block>)> = st
            .blocks
            .values()
            .chain(st.pending.iter())
            .filter(|b| b.opened_bytes() > 0)
            .map(|b| (b.last_used.load(Ordering::Relaxed), b.clone()))
            .collect();
        drop(st);
        let mut used: u64 = held.iter().map(|(_, b)| b.opened_bytes()).sum();
        self.meta_budget.used.store(used, Ordering::Relaxed);
        if used <= self.meta_budget.limit {
            return;
        }
        held.sort_unstable_by_key(|(t, _)| *t);
        let target = self.meta_budget.limit / 4 * 3;
        for (_, b) in held {
            if used <= target {
                break;
            }
            if let Some(o) = lock(&b.opened).take() {
                used = used.saturating_sub(o.bytes);
            }
        }
        self.meta_budget.used.store(used, Ordering::Relaxed);
    }

    /// Merges this replica's small blocks of one day (each under half of
    /// `max_bytes` decoded) into one of at most `max_bytes`, every span once:
    /// a retried export, a sidecar's re-sent batch or a replayed WAL stored
    /// twice is stored once after it. The merged block is uploaded first, then
    /// the old ones go (index object first); a read meanwhile sees identical
    /// spans once. True if it merged a set.
    fn compact(&self) -> Result<bool, StoreError> {
        let small = self.settings.max_bytes / 2;
        let mut by_day: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
        for b in self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .values()
        {
            if b.meta.replica == self.settings.replica && b.meta.raw_bytes < small {
                by_day.entry(b.meta.day).or_default().push(b.clone());
            }
        }
        let Some((day, mut blocks)) = by_day.into_iter().find(|(_, v)| v.len() >= 2) else {
            return Ok(false);
        };
        blocks.sort_by_key(|b| b.meta.min_start_us);
        let mut set = Vec::new();
        let mut raw = 0u64;
        for b in blocks {
            if set.len() >= 2 && raw + b.meta.raw_bytes > self.settings.max_bytes {
                break;
            }
            raw += b.meta.raw_bytes;
            set.push(b);
        }
        let mut rows = Vec::new();
        let mut names = Names::default();
        for b in &set {
            let opened = b.opened(&self.meta_budget)?;
            for gi in 0..opened.groups.len() {
                for batch in b.read(&opened, gi, &format::all(&opened), None)? {
                    rows.extend(format::rows(&batch, &mut names)?);
                }
            }
        }
        sort_and_dedup(&mut rows);
        let wal = set
            .iter()
            .filter_map(|b| b.meta.wal.clone())
            .max_by_key(|w| w.last);
        let merged = Arc::new(self.cutter.block(day, &rows, wal)?);
        let before: u64 = set.iter().map(|b| b.meta.spans).sum();
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .push(merged);
        self.upload_pending()?;
        // The merged block is listed: a read from now on finds it, and one
        // already running that meets a deleted block reads again.
        self.replaced.fetch_add(1, Ordering::SeqCst);
        for b in &set {
            self.delete_block(b)?;
        }
        tracing::info!(
            day,
            blocks = set.len(),
            spans_before = before,
            spans_after = rows.len(),
            "blocks merged"
        );
        Ok(true)
    }

    /// Deletes an uploaded block: its index object first (it disappears
    /// whole), then its data; reads that had it skip it.
    fn delete_block(&self, b: &Block) -> Result<(), StoreError> {
        self.backend
            .delete(&format!("{}/meta.json", b.meta.dir_key()))?;
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .remove(&b.meta.dir_key());
        if let Some(c) = &self.cache {
            c.forget(&b.data_key());
        }
        self.backend.delete(&b.data_key())
    }

    /// Uploads pending blocks in order; the WAL is released past what is uploaded.
    fn upload_pending(&self) -> Result<(), StoreError> {
        let pending: Vec<Arc<Block>> = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .clone();
        for b in pending {
            let Source::Pending(path, _) = &b.source else {
                continue;
            };
            match std::fs::metadata(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Its directory went away (the volume was emptied): nothing to upload.
                    tracing::error!(block = %b.meta.id, spans = b.meta.spans,
                        "blocks: a pending block's file is gone with its directory; its spans are lost");
                    let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
                    st.pending.retain(|p| !Arc::ptr_eq(p, &b));
                    continue;
                }
                Err(e) => return Err(io(path, e)),
            }
            let meta = serde_json::to_vec(&b.meta).map_err(corrupt)?;
            let result = self.backend.put_file(&b.data_key(), path).and_then(|_| {
                self.backend.put(
                    &format!("{}/meta.json", b.meta.dir_key()),
                    Bytes::from(meta),
                )
            });
            if let Err(e) = result {
                *lock(&self.upload_error) = Some(e.to_string());
                return Err(e);
            }
            *lock(&self.upload_error) = None;
            // The same bytes: what was opened of the local file serves the remote one.
            let uploaded = Arc::new(Block {
                meta: b.meta.clone(),
                source: Source::Remote(self.backend.clone(), self.cache.clone()),
                opened: Mutex::new(lock(&b.opened).clone()),
                last_used: AtomicU64::new(b.last_used.load(Ordering::Relaxed)),
            });
            {
                let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
                st.pending.retain(|p| !Arc::ptr_eq(p, &b));
                st.blocks.insert(uploaded.meta.dir_key(), uploaded);
            }
            let _ = std::fs::remove_file(path);
            self.release_wal()?;
        }
        Ok(())
    }

    /// Deletes the WAL segments every one of whose spans is in the backend.
    fn release_wal(&self) -> Result<(), StoreError> {
        let mut w = lock(&self.writing);
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let head_first = w.head.read().unwrap_or_else(|e| e.into_inner()).first_seq;
        let keep_from = st
            .sealed
            .iter()
            .map(|s| s.head.first_seq)
            .chain(
                st.pending
                    .iter()
                    .filter_map(|b| b.meta.wal.as_ref().map(|r| r.first)),
            )
            .chain(std::iter::once(head_first.max(1)))
            .min()
            .unwrap_or(head_first);
        drop(st);
        w.wal.release_below(keep_from)?;
        Ok(())
    }

    /// Reads the list of blocks again (other replicas' new blocks, blocks
    /// deleted by retention elsewhere).
    pub fn refresh(&self) -> Result<(), StoreError> {
        let listed = list_meta_keys(&self.backend)?;
        let known: HashSet<String> = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .keys()
            .cloned()
            .collect();
        let mut fresh = Vec::new();
        for dir in listed.iter().filter(|d| !known.contains(*d)) {
            if let Some(b) = load_block(&self.backend, &self.cache, dir)? {
                fresh.push(b);
            }
        }
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.blocks.retain(|k, b| {
            let keep = listed.contains(k);
            if let (false, Some(c)) = (keep, &self.cache) {
                c.forget(&b.data_key());
            }
            keep
        });
        for b in fresh {
            st.blocks.insert(b.meta.dir_key(), Arc::new(b));
        }
        Ok(())
    }

    /// Stores `rows` (from another store: `meshtrace-collector migrate`) as
    /// blocks, one per day and at most `max_bytes` each, uploaded before it
    /// returns; the WAL is not involved (the source keeps them until then).
    pub fn import(&self, rows: Vec<Row>) -> Result<(), StoreError> {
        let _one = lock(&self.working);
        let mut by_day: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for r in rows {
            by_day.entry(day_of(r.start_us)).or_default().push(r);
        }
        for (day, mut rows) in by_day {
            sort_and_dedup(&mut rows);
            let block = Arc::new(self.cutter.block(day, &rows, None)?);
            self.state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .push(block);
        }
        self.upload_pending()
    }

    /// Seals the head and uploads everything (tests, shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.seal(true)?;
        self.work()
    }

    /// Bytes held by sealed heads not yet written as blocks.
    fn sealed_bytes(&self) -> u64 {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.sealed.iter().map(|s| s.head.bytes).sum()
    }

    /// Bytes the WAL holds.
    pub fn wal_bytes(&self) -> u64 {
        lock(&self.writing).wal.bytes()
    }

    /// Blocks (uploaded, pending) and spans in heads, for tests and metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let head = self.head_now();
        let in_heads = head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .rows()
            .count()
            + st.sealed
                .iter()
                .map(|s| s.head.rows().count())
                .sum::<usize>();
        (st.blocks.len(), st.pending.len(), in_heads)
    }

    /// (can it be written, can it be read): the WAL takes writes while it has
    /// room; reads need the backend to list its blocks.
    pub fn health(&self) -> (Result<(), StoreError>, Result<(), StoreError>) {
        if let Err(e) = self.remake_dirs() {
            tracing::warn!(error = %e, "blocks: the data directory's subdirectories cannot be made again");
        }
        let bytes = self.wal_bytes();
        let sealed = self.sealed_bytes();
        let write = if bytes >= self.settings.wal_max_bytes {
            Err(StoreError::WalFull {
                bytes,
                limit: self.settings.wal_max_bytes,
            })
        } else if sealed >= self.settings.max_bytes {
            Err(StoreError::HeadFull {
                bytes: sealed,
                limit: self.settings.max_bytes.saturating_mul(2),
            })
        } else {
            super::sqlite::write_probe(&self.dir.join("wal"))
        };
        (write, self.backend.check())
    }

    /// The volume came back empty (remounted, restored from nothing): the WAL and
    /// pending directories are made again inside `dir` (never `dir` itself: an
    /// unmounted volume's mount point is not written to) and the WAL rolls into
    /// the new one, the head sealed so its spans become a block at once. What was
    /// only in the old directories (the open segment, pending blocks) went with them.
    fn remake_dirs(&self) -> Result<(), StoreError> {
        let wal = self.dir.join("wal");
        if wal.exists() || !self.dir.is_dir() {
            return Ok(());
        }
        tracing::warn!(dir = %self.dir.display(), "blocks: the WAL directory is gone; made again, the head is sealed into a block");
        std::fs::create_dir_all(&wal).map_err(|e| io(&wal, e))?;
        let id = wal.join("ID");
        std::fs::write(&id, &self.cutter.wal_id).map_err(|e| io(&id, e))?;
        let pending = &self.cutter.pending_dir;
        std::fs::create_dir_all(pending).map_err(|e| io(pending, e))?;
        if !self.seal(true)? {
            let mut w = lock(&self.writing);
            let next = w.wal.roll()?;
            w.head.write().unwrap_or_else(|e| e.into_inner()).first_seq = next;
        }
        Ok(())
    }

    /// Asks `peers` for their heads in every read from now on.
    pub fn set_peers(&self, peers: peers::Peers) {
        let _ = self.peers.set(peers);
    }

    /// This replica's name in the bucket.
    pub fn replica(&self) -> &str {
        &self.settings.replica
    }

    /// The backend blocks go to (the archive shares it).
    pub fn backend(&self) -> Arc<Backend> {
        self.backend.clone()
    }

    /// Why the last upload failed, while uploads fail.
    pub fn upload_error(&self) -> Option<String> {
        lock(&self.upload_error).clone()
    }

    fn head_now(&self) -> Arc<RwLock<Head>> {
        self.head.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Everything a read looks at, as of now: with `Scope::Local`, only what
    /// this replica holds that is not yet in the bucket.
    fn snapshot_of(&self, scope: Scope) -> Snapshot {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let head = self.head_now();
        let head_chunks = head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .chunks
            .clone();
        let mut chunks: Vec<Arc<Vec<Row>>> = st
            .sealed
            .iter()
            .flat_map(|s| s.head.chunks.iter().cloned())
            .collect();
        chunks.extend(head_chunks);
        Snapshot {
            sealed: st.sealed.clone(),
            head,
            chunks,
            blocks: st
                .pending
                .iter()
                .cloned()
                .chain(st.blocks.values().filter(|_| scope == Scope::All).cloned())
                .collect(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot_of(Scope::All)
    }

    /// Runs `read` on block `b`'s metadata. A block deleted meanwhile
    /// (retention, compaction) is read on without; a read out of time or
    /// memory stops.
    fn read_block(
        &self,
        b: &Block,
        ctl: &ReadCtl,
        read: impl FnOnce(&format::Opened) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let opened = b.opened(&self.meta_budget);
        if self.meta_budget.over() {
            self.trim_metadata();
        }
        match opened.and_then(|o| read(&o)) {
            Ok(()) => Ok(()),
            Err(e) if e.is_limit() => Err(e),
            Err(_) if !self.still_listed(b) => Ok(()),
            Err(e) => Err(ctl.stopped_or(e)),
        }
    }

    fn still_listed(&self, b: &Block) -> bool {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        st.blocks.contains_key(&b.meta.dir_key())
            || st.pending.iter().any(|p| p.meta.id == b.meta.id)
    }
}

impl Drop for BlockStore {
    fn drop(&mut self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let (m, c) = &*self.wake;
        *lock(m) = true;
        c.notify_all();
    }
}

/// The WAL segments whose spans are all in the backend: the ranges of the
/// blocks cut last from their seals, merged.
#[derive(Debug, Default)]
struct Covered(Vec<(u64, u64)>);

impl Covered {
    fn new(ranges: impl Iterator<Item = (u64, u64)>) -> Covered {
        let mut all: Vec<(u64, u64)> = ranges.filter(|(f, l)| f <= l).collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (f, l) in all {
            match merged.last_mut() {
                Some(last) if f <= last.1.saturating_add(1) => last.1 = last.1.max(l),
                _ => merged.push((f, l)),
            }
        }
        Covered(merged)
    }

    fn holds(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|(f, _)| *f <= seq);
        i.checked_sub(1)
            .and_then(|j| self.0.get(j))
            .is_some_and(|(_, last)| *last >= seq)
    }
}

/// A head replayed from the WAL, cut into pending blocks; kept in memory as a
/// sealed head when that fails (a full disk: the collector starts and serves
/// reads; the block thread tries again).
fn cut_replayed(cutter: &Cutter, state: &mut State, sealed: Sealed) {
    match cutter.blocks(&sealed) {
        Ok(blocks) => state.pending.extend(blocks.into_iter().map(Arc::new)),
        Err(e) => {
            tracing::warn!(error = %e, "blocks: a replayed head cannot be cut yet; kept in memory");
            state.sealed.push(Arc::new(sealed));
        }
    }
}

/// The block thread: seals heads when due, writes and uploads blocks,
/// re-reads the block list; backs off while the backend fails.
fn block_thread(
    store: std::sync::Weak<BlockStore>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    closing: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut backoff = Duration::from_millis(500);
    let mut last_poll = Instant::now();
    loop {
        if closing.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(s) = store.upgrade() else { return };
        let wait = match s.work() {
            Ok(()) => {
                backoff = Duration::from_millis(500);
                Duration::from_secs(1)
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "blocks: writing or uploading failed; the WAL keeps the spans, retrying");
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                w
            }
        };
        if last_poll.elapsed() >= s.settings.poll_interval {
            last_poll = Instant::now();
            if let Err(e) = s.refresh() {
                tracing::warn!(error = %e, "blocks: listing the backend failed");
            }
        }
        drop(s);
        let (m, c) = &*wake;
        let mut woken = lock(m);
        if !*woken {
            woken = c
                .wait_timeout(woken, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        *woken = false;
    }
}

fn list_meta_keys(backend: &Backend) -> Result<HashSet<String>, StoreError> {
    Ok(backend
        .list("blocks")?
        .into_iter()
        .filter_map(|(k, _)| k.strip_suffix("/meta.json").map(str::to_string))
        .collect())
}

fn load_block(
    backend: &Arc<Backend>,
    cache: &Option<Arc<cache::Cache>>,
    dir: &str,
) -> Result<Option<Block>, StoreError> {
    let Some(bytes) = backend.get(&format!("{dir}/meta.json"))? else {
        return Ok(None);
    };
    let meta: BlockMeta = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(block = dir, error = %e, "block index cannot be read; block left out");
            return Ok(None);
        }
    };
    if meta.format_version > format::FORMAT_VERSION {
        tracing::error!(
            block = dir,
            version = meta.format_version,
            "block written by a newer meshtrace; left out"
        );
        return Ok(None);
    }
    Ok(Some(Block {
        meta,
        source: Source::Remote(backend.clone(), cache.clone()),
        opened: Mutex::new(None),
        last_used: AtomicU64::new(0),
    }))
}

fn load_catalog(
    backend: &Arc<Backend>,
    cache: &Option<Arc<cache::Cache>>,
) -> Result<Vec<Block>, StoreError> {
    let mut out = Vec::new();
    for dir in list_meta_keys(backend)? {
        if let Some(b) = load_block(backend, cache, &dir)? {
            out.push(b);
        }
    }
    Ok(out)
}

/// What one read looks at.
struct Snapshot {
    #[allow(dead_code)]
    sealed: Vec<Arc<Sealed>>,
    head: Arc<RwLock<Head>>,
    /// The rows of sealed heads and the head.
    chunks: Vec<Arc<Vec<Row>>>,
    blocks: Vec<Arc<Block>>,
}

/// Decoded origins of one read, shared by the spans that carry them.
#[derive(Default)]
struct Origins(HashMap<Vec<u8>, Arc<Origin>>);

impl Origins {
    fn get(&mut self, bytes: &[u8]) -> Result<Arc<Origin>, StoreError> {
        if let Some(o) = self.0.get(bytes) {
            return Ok(o.clone());
        }
        let o = Arc::new(Origin::decode(bytes).map_err(corrupt)?);
        self.0.insert(bytes.to_vec(), o.clone());
        Ok(o)
    }
}

/// Spans gathered for `traces_within`, de-duplicated, within the budget.
struct Gather<'a> {
    ctl: &'a ReadCtl,
    max_spans: usize,
    held: usize,
    by_id: HashMap<[u8; 16], super::rows::TraceRows>,
    cut: HashSet<[u8; 16]>,
    cut_by_bytes: bool,
    origins: Origins,
}

impl Gather<'_> {
    fn add(
        &mut self,
        trace_id: [u8; 16],
        span_id: &[u8],
        start_us: i64,
        body: &[u8],
        origin: &[u8],
    ) -> Result<(), StoreError> {
        if self.held >= self.max_spans {
            self.cut.insert(trace_id);
            return Ok(());
        }
        let identity = row_identity(span_id, body);
        if self
            .by_id
            .get(&trace_id)
            .is_some_and(|e| e.1.contains(&identity))
        {
            return Ok(());
        }
        let span = Span::decode(body).map_err(corrupt)?;
        if !self.ctl.try_charge(span_memory(&span)) {
            self.ctl.check()?;
            self.cut_by_bytes = true;
            self.held = self.max_spans;
            self.cut.insert(trace_id);
            return Ok(());
        }
        let origin = self.origins.get(origin)?;
        let e = self.by_id.entry(trace_id).or_default();
        e.1.insert(identity);
        e.0.push((start_us, StoredSpan { span, origin }));
        self.held += 1;
        Ok(())
    }
}

/// Row groups a search fetches at once (concurrently, from an object store).
const SEARCH_WAVE: usize = 8;

/// The columns `batch_rows` reads.
const LOOKUP_COLUMNS: [usize; 5] = [
    format::TRACE_ID,
    format::SPAN_ID,
    format::START_US,
    format::ORIGIN,
    format::BODY,
];

/// Rows of `batch` (read with [`LOOKUP_COLUMNS`]) as (trace id, span id, start, origin, body).
fn batch_rows(
    batch: &RecordBatch,
    mut f: impl FnMut([u8; 16], &[u8], i64, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let ids: &FixedSizeBinaryArray = format::col(batch, "trace_id")?;
    let spans: &FixedSizeBinaryArray = format::col(batch, "span_id")?;
    let starts = format::col::<arrow_array::Int64Array>(batch, "start_us")?;
    let bodies = format::col::<arrow_array::BinaryArray>(batch, "body")?;
    let origins = batch
        .column_by_name("origin")
        .ok_or_else(|| corrupt("block column origin missing"))?
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| corrupt("block column origin is not a dictionary"))?;
    let values = origins
        .values()
        .as_binary_opt::<i32>()
        .ok_or_else(|| corrupt("origin values"))?;
    for i in 0..batch.num_rows() {
        let id = <[u8; 16]>::try_from(ids.value(i)).map_err(corrupt)?;
        let o = values.value(origins.keys().value(i) as usize);
        f(id, spans.value(i), starts.value(i), o, bodies.value(i))?;
    }
    Ok(())
}

impl SpanWriter for BlockStore {
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        if spans.is_empty() {
            return Ok(());
        }
        if self.sealed_bytes() >= self.settings.max_bytes {
            // The block thread is behind (an upload waits on a slow object
            // store): the writer cuts them itself.
            if let Err(e) = self.cut_sealed() {
                tracing::warn!(error = %e, "blocks: cutting sealed heads failed");
            }
        }
        let due = {
            let mut w = lock(&self.writing);
            let rows: Vec<Row> = spans
                .iter()
                .map(|r| Row::from_record(r, &mut w.names))
                .collect();
            let bytes = w.wal.bytes();
            if bytes >= self.settings.wal_max_bytes {
                return Err(StoreError::WalFull {
                    bytes,
                    limit: self.settings.wal_max_bytes,
                });
            }
            // The head seals itself at `max_bytes`; sealed heads wait for the
            // block thread. Both together stay under twice `max_bytes`.
            let sealed = self.sealed_bytes();
            if sealed >= self.settings.max_bytes {
                let held = sealed + w.head.read().unwrap_or_else(|e| e.into_inner()).bytes;
                return Err(StoreError::HeadFull {
                    bytes: held,
                    limit: self.settings.max_bytes.saturating_mul(2),
                });
            }
            w.wal.append(&rows)?;
            let mut h = w.head.write().unwrap_or_else(|e| e.into_inner());
            h.insert(rows);
            h.bytes >= self.settings.max_bytes
        };
        if due {
            self.seal(false)?;
        }
        Ok(())
    }

    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError> {
        let cutoff_day = day_of(cutoff_us);
        let mut days = BTreeSet::new();
        // Not while a round of block work cuts or uploads what it drops.
        let _one = lock(&self.working);
        let _cut = lock(&self.cutting);
        // Blocks: the index object first (the block disappears whole), then the data.
        let old: Vec<Arc<Block>> = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .blocks
            .values()
            .filter(|b| b.meta.day < cutoff_day)
            .cloned()
            .collect();
        for b in &old {
            self.delete_block(b)?;
            days.insert(b.meta.day);
        }
        // Pending blocks and heads in memory.
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            st.pending.retain(|b| {
                if b.meta.day < cutoff_day {
                    days.insert(b.meta.day);
                    if let Source::Pending(p, _) = &b.source {
                        let _ = std::fs::remove_file(p);
                    }
                    false
                } else {
                    true
                }
            });
            let sealed = std::mem::take(&mut st.sealed);
            for s in sealed {
                let mut s = Arc::try_unwrap(s).unwrap_or_else(|a| Sealed {
                    head: {
                        let mut h = Head::new(a.head.first_seq);
                        h.insert(a.head.rows().cloned().collect());
                        h
                    },
                    last_seq: a.last_seq,
                });
                days.extend(s.head.drop_days_before(cutoff_day));
                if !s.head.is_empty() {
                    st.sealed.push(Arc::new(s));
                }
            }
        }
        let head = self.head_now();
        days.extend(
            head.write()
                .unwrap_or_else(|e| e.into_inner())
                .drop_days_before(cutoff_day),
        );
        Ok(days.len())
    }
}

/// What a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This replica's spans not yet in the bucket (heads and pending blocks):
    /// what it answers its peers.
    Local,
    /// Everything: this replica's heads, every replica's blocks, and the peers' heads.
    All,
}

impl SpanReader for BlockStore {
    fn traces_within(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
    ) -> Result<TraceSet, StoreError> {
        self.consistent(ctl, || self.read_traces(ids, max_spans, ctl, Scope::All))
    }

    fn find_trace_ids(&self, q: &TraceQuery, ctl: &ReadCtl) -> Result<Vec<[u8; 16]>, StoreError> {
        Ok(self
            .consistent(ctl, || self.newest(q, ctl, Scope::All))?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    fn services(&self, ctl: &ReadCtl) -> Result<Vec<String>, StoreError> {
        let mut set: BTreeSet<String> = BTreeSet::new();
        for (s, _) in self.catalog(ctl, Scope::All)? {
            if !set.contains(&s) {
                ctl.charge(name_cost(&s))?;
                set.insert(s);
            }
        }
        Ok(set.into_iter().collect())
    }

    fn operations(&self, service: &str, ctl: &ReadCtl) -> Result<Vec<(String, i32)>, StoreError> {
        let mut set: BTreeSet<(String, i32)> = BTreeSet::new();
        for (s, ops) in self.catalog(ctl, Scope::All)? {
            if s == service {
                for op in ops {
                    if !set.contains(&op) {
                        ctl.charge(name_cost(&op.0))?;
                        set.insert(op);
                    }
                }
            }
        }
        Ok(set.into_iter().collect())
    }

    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<Edge>, StoreError> {
        self.consistent(ctl, || self.edges(start_us, end_us, ctl))
    }
}

impl BlockStore {
    /// `read` again (at most three times more) while merges delete blocks
    /// under it: a read skips a block deleted after its snapshot, whose spans
    /// are in a merged block the snapshot did not have. What an abandoned
    /// answer held is given back to `ctl` first.
    fn consistent<T>(
        &self,
        ctl: &ReadCtl,
        read: impl Fn() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let held = ctl.used();
        let mut tries = 0;
        loop {
            let before = self.replaced.load(Ordering::SeqCst);
            let answer = read();
            tries += 1;
            if tries > 3 || self.replaced.load(Ordering::SeqCst) == before {
                return answer;
            }
            drop(answer);
            ctl.release(ctl.used().saturating_sub(held));
            tracing::debug!(
                tries,
                "blocks: a merge deleted blocks during a read; read again"
            );
        }
    }

    /// Service → (operation, kind) pairs of the heads, the blocks in scope and
    /// (with `Scope::All`) the peers' heads.
    pub fn catalog(
        &self,
        ctl: &ReadCtl,
        scope: Scope,
    ) -> Result<BTreeMap<String, BTreeSet<(String, i32)>>, StoreError> {
        let mut out: BTreeMap<String, BTreeSet<(String, i32)>> = BTreeMap::new();
        for (s, ops) in self.head_services() {
            out.entry(s.to_string()).or_default().extend(ops);
        }
        for b in self.snapshot_of(scope).blocks {
            ctl.check()?;
            for (s, ops) in &b.meta.services {
                out.entry(s.clone())
                    .or_default()
                    .extend(ops.iter().cloned());
            }
        }
        if scope == Scope::All {
            if let Some(p) = self.peers.get() {
                for (s, ops) in p.services(&self.backend, ctl) {
                    out.entry(s).or_default().extend(ops);
                }
            }
        }
        Ok(out)
    }

    /// The traces with `ids`, from what `scope` covers (see [`SpanReader::traces_within`]).
    pub fn read_traces(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
        scope: Scope,
    ) -> Result<TraceSet, StoreError> {
        if ids.is_empty() {
            return Ok(TraceSet::default());
        }
        ctl.charge((ids.len() as u64).saturating_mul(128))?;
        let snap = self.snapshot_of(scope);
        let mut g = Gather {
            ctl,
            max_spans,
            held: 0,
            by_id: HashMap::with_capacity(ids.len()),
            cut: HashSet::new(),
            cut_by_bytes: false,
            origins: Origins::default(),
        };
        let wanted: HashSet<[u8; 16]> = ids.iter().copied().collect();
        // Heads: through the index of the live head, a scan of sealed ones.
        {
            let head = snap.head.read().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                for r in head.trace_rows(id) {
                    g.add(r.trace_id, &r.span_id, r.start_us, &r.body, &r.origin)?;
                }
            }
        }
        for s in &snap.sealed {
            ctl.check()?;
            for id in ids {
                for r in s.head.trace_rows(id) {
                    g.add(r.trace_id, &r.span_id, r.start_us, &r.body, &r.origin)?;
                }
            }
        }
        let mut sorted: Vec<[u8; 16]> = wanted.iter().copied().collect();
        sorted.sort_unstable();
        for b in &snap.blocks {
            ctl.check()?;
            self.read_block(b, ctl, |opened| {
                for (gi, group) in opened.groups.iter().enumerate() {
                    let here: Vec<[u8; 16]> = sorted
                        .iter()
                        .filter(|id| group.may_hold(id))
                        .copied()
                        .collect();
                    if here.is_empty() {
                        continue;
                    }
                    ctl.check()?;
                    // One read: the pages whose trace-id range holds a wanted id
                    // (the page index), every column a trace needs.
                    let pages = format::id_pages(opened, gi, &here);
                    if pages.is_empty() {
                        continue;
                    }
                    for batch in b.read(opened, gi, &LOOKUP_COLUMNS, Some(&pages))? {
                        batch_rows(&batch, |id, span, start, origin, body| {
                            if wanted.contains(&id) {
                                g.add(id, span, start, body, origin)?;
                            }
                            Ok(())
                        })?;
                    }
                }
                Ok(())
            })?;
        }
        if scope == Scope::All {
            if let Some(p) = self.peers.get() {
                for r in p.traces(&self.backend, ids, ctl) {
                    g.add(r.trace_id, &r.span_id, r.start_us, &r.body, &r.origin)?;
                }
            }
        }
        let left_out = g.cut.iter().filter(|id| !g.by_id.contains_key(*id)).count();
        let traces = ids
            .iter()
            .filter_map(|id| {
                let (mut spans, _) = g.by_id.remove(id)?;
                spans.sort_by_key(|(start, _)| *start);
                Some(StoredTrace {
                    trace_id: *id,
                    spans: spans.into_iter().map(|(_, s)| s).collect(),
                    truncated: g.cut.contains(id),
                })
            })
            .collect();
        Ok(TraceSet {
            traces,
            left_out,
            cut_by_bytes: g.cut_by_bytes,
            warnings: ctl.warnings(),
        })
    }

    /// Trace ids matching `q` with their newest matching span's start, newest
    /// first, at most `q.limit`, from what `scope` covers.
    pub fn newest(
        &self,
        q: &TraceQuery,
        ctl: &ReadCtl,
        scope: Scope,
    ) -> Result<Vec<([u8; 16], i64)>, StoreError> {
        if q.limit == 0 || q.end_us < q.start_us {
            return Ok(Vec::new());
        }
        ctl.charge((q.limit.min(1 << 20) as u64).saturating_mul(96))?;
        let snap = self.snapshot_of(scope);
        // Newest matching span start per trace.
        let mut newest: HashMap<[u8; 16], i64> = HashMap::new();
        let mut origins = Origins::default();
        let duration_ok = |d: i64| {
            q.min_duration_us.is_none_or(|m| d >= m) && q.max_duration_us.is_none_or(|m| d <= m)
        };
        let note = |newest: &mut HashMap<[u8; 16], i64>, id: [u8; 16], start: i64| {
            let e = newest.entry(id).or_insert(i64::MIN);
            if *e == i64::MIN {
                ctl.charge(48)?;
            }
            *e = (*e).max(start);
            Ok::<(), StoreError>(())
        };
        // Each tag under every name it had ([`crate::model::TagFilter`]).
        let filter = q.tag_filter();
        let tags_match = |origins: &mut Origins, body: &[u8], origin: &[u8]| {
            if filter.is_empty() {
                return Ok(true);
            }
            let stored = StoredSpan {
                span: Span::decode(body).map_err(corrupt)?,
                origin: origins.get(origin)?,
            };
            Ok::<bool, StoreError>(filter.matches(&stored))
        };
        // The same test on a span's tag hashes (heads, blocks of format 2).
        let hashes_match = |tags: &[u64]| filter.matches_hashes(|h| tags.binary_search(&h).is_ok());
        for chunk in &snap.chunks {
            ctl.check()?;
            for r in chunk.iter() {
                if *r.service != *q.service
                    || r.start_us < q.start_us
                    || r.start_us > q.end_us
                    || q.operation.as_deref().is_some_and(|o| o != &*r.operation)
                    || !duration_ok(r.duration_us)
                {
                    continue;
                }
                if filter.is_empty() || hashes_match(&r.tags) {
                    note(&mut newest, r.trace_id, r.start_us)?;
                }
            }
        }
        // Blocks, newest first: once `limit` traces are newer than a block's
        // newest span, older blocks cannot change the answer.
        let mut blocks: Vec<&Arc<Block>> = snap
            .blocks
            .iter()
            .filter(|b| b.overlaps(q.start_us, q.end_us))
            .filter(|b| match b.meta.services.get(&q.service) {
                None => false,
                Some(ops) => q
                    .operation
                    .as_deref()
                    .is_none_or(|o| ops.iter().any(|(op, _)| op == o)),
            })
            .collect();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.meta.max_start_us));
        for b in blocks {
            if newest.len() >= q.limit {
                let mut starts: Vec<i64> = newest.values().copied().collect();
                let k = starts.len() - q.limit;
                let (_, kth, _) = starts.select_nth_unstable(k);
                if *kth > b.meta.max_start_us {
                    break;
                }
            }
            ctl.check()?;
            self.read_block(b, ctl, |opened| {
                let cols = [
                    format::TRACE_ID,
                    format::SERVICE,
                    format::OPERATION,
                    format::START_US,
                    format::DURATION_US,
                ];
                // Format 2: tag filters on the `tags` column, pushed down to
                // its bloom filters.
                let by_hash = opened.has_tags && !filter.is_empty();
                let mut cols = cols.to_vec();
                if by_hash {
                    cols.push(format::TAGS);
                }
                let groups: Vec<usize> = (0..opened.groups.len())
                    .filter(|gi| {
                        let g = &opened.groups[*gi];
                        let tagged = !by_hash || filter.matches_hashes(|h| g.may_have_tag(h));
                        tagged
                            && !g
                                .start
                                .is_some_and(|(lo, hi)| hi < q.start_us || lo > q.end_us)
                    })
                    .collect();
                // Row groups fetched SEARCH_WAVE at a time, concurrently.
                b.scan_groups(opened, &groups, &cols, ctl, |gi, batches| {
                    let mut matched = Vec::new();
                    let mut offset = 0;
                    for batch in batches {
                        let ids: &FixedSizeBinaryArray = format::col(&batch, "trace_id")?;
                        let service = dict_key(&batch, "service", &q.service)?;
                        let Some(service) = service else {
                            offset += batch.num_rows();
                            continue;
                        };
                        let op = match &q.operation {
                            Some(o) => match dict_key(&batch, "operation", o)? {
                                Some(k) => Some(k),
                                None => {
                                    offset += batch.num_rows();
                                    continue;
                                }
                            },
                            None => None,
                        };
                        let services = dict_keys(&batch, "service")?;
                        let ops = dict_keys(&batch, "operation")?;
                        let starts = batch
                            .column(3)
                            .as_primitive_opt::<Int64Type>()
                            .ok_or_else(|| corrupt("start_us"))?;
                        let durations = batch
                            .column(4)
                            .as_primitive_opt::<Int64Type>()
                            .ok_or_else(|| corrupt("duration_us"))?;
                        let tags = if by_hash {
                            Some(format::tag_lists(&batch)?)
                        } else {
                            None
                        };
                        for i in 0..batch.num_rows() {
                            let start = starts.value(i);
                            if services.value(i) != service
                                || start < q.start_us
                                || start > q.end_us
                                || op.is_some_and(|k| ops.value(i) != k)
                                || !duration_ok(durations.value(i))
                                || tags.as_ref().is_some_and(|t| !hashes_match(t.of(i)))
                            {
                                continue;
                            }
                            let id = <[u8; 16]>::try_from(ids.value(i)).map_err(corrupt)?;
                            matched.push((offset + i, id, start));
                        }
                        offset += batch.num_rows();
                    }
                    if matched.is_empty() {
                        return Ok(());
                    }
                    ctl.charge(matched.len() as u64 * 32)?;
                    if filter.is_empty() || by_hash {
                        for (_, id, start) in &matched {
                            note(&mut newest, *id, *start)?;
                        }
                    } else {
                        let ranges: Vec<std::ops::Range<usize>> =
                            matched.iter().map(|(i, _, _)| *i..*i + 1).collect();
                        // Format 1 (no tag column): the tags of the decoded bodies.
                        for batch in b.read(opened, gi, &LOOKUP_COLUMNS, Some(&ranges))? {
                            let mut err = None;
                            batch_rows(&batch, |id, _, start, origin, body| {
                                if tags_match(&mut origins, body, origin)? {
                                    if let Err(e) = note(&mut newest, id, start) {
                                        err = Some(e);
                                    }
                                }
                                Ok(())
                            })?;
                            if let Some(e) = err {
                                return Err(e);
                            }
                        }
                    }
                    ctl.release(matched.len() as u64 * 32);
                    Ok(())
                })?;
                Ok(())
            })?;
        }
        if scope == Scope::All {
            if let Some(p) = self.peers.get() {
                for (id, start) in p.search(&self.backend, q, ctl) {
                    note(&mut newest, id, start)?;
                }
            }
        }
        let mut found: Vec<([u8; 16], i64)> = newest.into_iter().collect();
        found.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        found.truncate(q.limit);
        Ok(found)
    }

    /// Dependency edges (see [`SpanReader::dependencies`]) from this replica's
    /// heads and every block; the peers' heads are not asked (their spans
    /// count once they are cut, within `store.blocks.max_age`).
    fn edges(&self, start_us: i64, end_us: i64, ctl: &ReadCtl) -> Result<Vec<Edge>, StoreError> {
        if end_us < start_us {
            return Ok(Vec::new());
        }
        let snap = self.snapshot();
        // Every span of the traces that have a span in the window (a parent
        // may start before it), from heads and blocks of those days.
        let mut names: Vec<String> = Vec::new();
        let mut name_index: HashMap<String, u32> = HashMap::new();
        let mut service_of: HashMap<([u8; 16], u64), u32> = HashMap::new();
        let mut children: HashSet<([u8; 16], u64, u64, u32)> = HashSet::new();
        let mut intern = |s: &str, ctl: &ReadCtl| -> Result<u32, StoreError> {
            if let Some(&i) = name_index.get(s) {
                return Ok(i);
            }
            ctl.charge(2 * name_cost(s))?;
            names.push(s.to_string());
            name_index.insert(s.to_string(), names.len() as u32 - 1);
            Ok(names.len() as u32 - 1)
        };
        let mut add = |trace: [u8; 16],
                       span: u64,
                       parent: Option<u64>,
                       service: u32,
                       start: i64|
         -> Result<(), StoreError> {
            ctl.charge(EDGE_SPAN_COST)?;
            service_of.insert((trace, span), service);
            if let Some(p) = parent.filter(|_| start >= start_us && start <= end_us) {
                children.insert((trace, span, p, service));
            }
            Ok(())
        };
        let (from_day, to_day) = (day_of(start_us).saturating_sub(1), day_of(end_us));
        for chunk in &snap.chunks {
            ctl.check()?;
            for r in chunk.iter() {
                let d = day_of(r.start_us);
                if d < from_day || d > to_day {
                    continue;
                }
                let s = intern(&r.service, ctl)?;
                add(
                    r.trace_id,
                    span_key(&r.span_id),
                    r.parent_span_id.map(|p| span_key(&p)),
                    s,
                    r.start_us,
                )?;
            }
        }
        for b in snap
            .blocks
            .iter()
            .filter(|b| b.meta.day >= from_day && b.meta.day <= to_day)
        {
            ctl.check()?;
            self.read_block(b, ctl, |opened| {
                let cols = [
                    format::TRACE_ID,
                    format::SPAN_ID,
                    format::PARENT_SPAN_ID,
                    format::SERVICE,
                    format::START_US,
                ];
                let groups: Vec<usize> = (0..opened.groups.len())
                    .filter(|gi| {
                        !opened.groups[*gi]
                            .start
                            // Parents start before their children: up to a day before.
                            .is_some_and(|(lo, hi)| {
                                hi < start_us.saturating_sub(86_400_000_000) || lo > end_us
                            })
                    })
                    .collect();
                b.scan_groups(opened, &groups, &cols, ctl, |_, batches| {
                    for batch in batches {
                        let ids: &FixedSizeBinaryArray = format::col(&batch, "trace_id")?;
                        let spans: &FixedSizeBinaryArray = format::col(&batch, "span_id")?;
                        let parents: &FixedSizeBinaryArray = format::col(&batch, "parent_span_id")?;
                        let services = dict_keys(&batch, "service")?;
                        let values = dict_values(&batch, "service")?;
                        let starts = batch
                            .column(4)
                            .as_primitive_opt::<Int64Type>()
                            .ok_or_else(|| corrupt("start_us"))?;
                        let local: Vec<u32> = (0..values.len())
                            .map(|i| intern(values.value(i), ctl))
                            .collect::<Result<_, _>>()?;
                        for i in 0..batch.num_rows() {
                            let id = <[u8; 16]>::try_from(ids.value(i)).map_err(corrupt)?;
                            let parent = (!parents.is_null(i)).then(|| span_key(parents.value(i)));
                            let s = local
                                .get(services.value(i) as usize)
                                .copied()
                                .ok_or_else(|| corrupt("service key"))?;
                            add(id, span_key(spans.value(i)), parent, s, starts.value(i))?;
                        }
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
        }
        let mut edges: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (trace, _, parent, child) in children {
            if let Some(&p) = service_of.get(&(trace, parent)) {
                if p != child {
                    *edges.entry((p, child)).or_default() += 1;
                }
            }
        }
        let name = |i: u32| names.get(i as usize).cloned().unwrap_or_default();
        let mut out: Vec<Edge> = edges
            .into_iter()
            .map(|((p, c), n)| (name(p), name(c), n))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl BlockStore {
    /// Services and operations of the heads (live and sealed).
    fn head_services(&self) -> Vec<(Arc<str>, Operations)> {
        let mut out: BTreeMap<Arc<str>, BTreeSet<(String, i32)>> = BTreeMap::new();
        let head = self.head_now();
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let h = head.read().unwrap_or_else(|e| e.into_inner());
        for m in std::iter::once(&h.services).chain(st.sealed.iter().map(|s| &s.head.services)) {
            for (s, ops) in m {
                let e = out.entry(s.clone()).or_default();
                for (o, k) in ops {
                    e.insert((o.to_string(), *k));
                }
            }
        }
        out.into_iter()
            .map(|(s, ops)| (s, ops.into_iter().collect()))
            .collect()
    }
}

/// A service's (operation, span kind) pairs.
type Operations = Vec<(String, i32)>;

/// The keys of a dictionary column.
fn dict_keys<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow_array::PrimitiveArray<Int32Type>, StoreError> {
    Ok(batch
        .column_by_name(name)
        .ok_or_else(|| corrupt(format!("block column {name} missing")))?
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| corrupt(format!("block column {name} is not a dictionary")))?
        .keys())
}

fn dict_values<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow_array::StringArray, StoreError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| corrupt(format!("block column {name} missing")))?
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(|| corrupt(format!("block column {name} is not a dictionary")))?
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt(format!("block column {name} values are not strings")))
}

/// The dictionary key of `value` in a dictionary column, if it occurs.
fn dict_key(batch: &RecordBatch, name: &str, value: &str) -> Result<Option<i32>, StoreError> {
    let values = dict_values(batch, name)?;
    Ok((0..values.len())
        .find(|i| values.value(*i) == value)
        .map(|i| i as i32))
}

#[cfg(test)]
mod tests;
