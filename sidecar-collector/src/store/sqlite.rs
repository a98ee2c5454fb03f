//! The embedded store: SQLite (bundled), one database file per UTC day of
//! span start time, WAL, one transaction per write batch. Retention deletes
//! whole files.
//!
//! Opening lists the partitions and nothing more, so start-up takes the same
//! time whatever the store's size (an integrity check of every file took 26 s
//! on a cold 1.9 GB store, before any port listened). Integrity is checked
//! after start-up, one partition at a time ([`SqliteStore::check_partitions`]),
//! and on use: a partition found corrupt either way is moved aside
//! (`.broken`) with a log line, and the store goes on without it — never a
//! failed start or a failed read.
//!
//! Reads go through a bounded pool of read-only connections per day, and the
//! set of days is kept in memory (this process is the only writer of its
//! directory): a query neither lists the directory nor reopens a file. Writer
//! connections are bounded too: the least recently written day is closed
//! first, so a request spread over many days cannot exhaust file descriptors.
//!
//! Durability: with [`Durability::Fsync`] (the default) each group commit is
//! fsynced before it returns (SQLite `synchronous=FULL` in WAL mode), so an
//! acknowledged span survives power loss; [`Durability::Os`] leaves the
//! flush to the kernel (`synchronous=NORMAL`): it survives a process crash,
//! not a kernel crash or power loss.

use super::rows::{
    corrupt, day_of, io, lock, name_cost, row_identity, span_key, TraceEdges, TraceRows,
};
use super::{Edge, ReadCtl, SpanReader, SpanWriter, StoreError, TraceQuery, TraceSet};
use crate::model::{span_memory, Origin, SpanRecord, StoredSpan, StoredTrace};
use meshtrace_proto::otlp::trace::v1::Span;
use prost::Message;
use rusqlite::{params, Connection, OpenFlags};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Idle read connections kept across all partitions.
const MAX_IDLE_READERS: usize = 32;
/// Trace ids per `IN (...)` lookup.
const IDS_PER_LOOKUP: usize = 200;
/// SQLite virtual-machine steps between two deadline checks (~a millisecond).
const STEPS_PER_CHECK: std::os::raw::c_int = 10_000;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS spans (
    trace_id BLOB NOT NULL, span_id BLOB NOT NULL, parent_span_id BLOB, service TEXT NOT NULL,
    operation TEXT NOT NULL, kind INTEGER NOT NULL, start_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL, error INTEGER NOT NULL,
    resource_id INTEGER NOT NULL, body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id);
CREATE INDEX IF NOT EXISTS spans_service_op_start ON spans(service, operation, start_us);
CREATE INDEX IF NOT EXISTS spans_service_start ON spans(service, start_us);
CREATE INDEX IF NOT EXISTS spans_duration ON spans(service, duration_us);
CREATE TABLE IF NOT EXISTS tags (
    trace_id BLOB NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, start_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tags_kv ON tags(key, value, start_us);
CREATE TABLE IF NOT EXISTS operations (
    service TEXT NOT NULL, operation TEXT NOT NULL, kind INTEGER NOT NULL,
    PRIMARY KEY (service, operation, kind));
";

/// When a commit is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync at each commit: survives power loss and kernel crashes.
    #[default]
    Fsync,
    /// The kernel flushes later: survives a process crash only.
    Os,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Fsync => "PRAGMA synchronous = FULL;",
            Durability::Os => "PRAGMA synchronous = NORMAL;",
        }
    }
}

/// How the store behaves.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    pub durability: Durability,
    /// Day partitions kept open for writing at once (least recently written closed first).
    pub max_open_partitions: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            durability: Durability::Fsync,
            max_open_partitions: 8,
        }
    }
}

/// An open writer connection and when it was last used (a write counter).
struct Writer {
    conn: Connection,
    last_write: u64,
    /// When it was last written, for closing idle partitions.
    used_at: std::time::Instant,
}

/// The SQLite span store.
pub struct SqliteStore {
    dir: PathBuf,
    settings: StoreSettings,
    /// Days that have a partition file.
    days: RwLock<BTreeSet<i64>>,
    /// Open writer connections by day (at most `max_open_partitions`) and the
    /// write counter; only the writer thread writes.
    writers: Mutex<(BTreeMap<i64, Writer>, u64)>,
    /// Idle read-only connections by day.
    idle_readers: Mutex<BTreeMap<i64, Vec<Connection>>>,
    /// Held (shared) by every read while it uses a partition, and (exclusive)
    /// by retention while it deletes files: a read never sees its files vanish.
    files_gate: RwLock<()>,
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir`, checking every partition. A full
    /// disk is not fatal: queries and retention work, writes fail (and ingest
    /// answers "retry later") until there is space again.
    pub fn open(dir: &Path, settings: StoreSettings) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let days: BTreeSet<i64> = list_partitions(dir)?.into_iter().map(|(d, _)| d).collect();
        // Fail now, not at the first export, if the directory is not writable;
        // a full disk only warns (retention may free it, queries still work).
        if let Err(e) = write_probe(dir) {
            match &e {
                StoreError::Io { source, .. } if is_disk_full(source) => {
                    tracing::warn!(error = %e, "the disk is full: serving queries and running retention; ingest answers retry-later until there is space");
                }
                _ => return Err(e),
            }
        }
        Ok(SqliteStore {
            dir: dir.to_path_buf(),
            settings,
            days: RwLock::new(days),
            writers: Mutex::new((BTreeMap::new(), 0)),
            idle_readers: Mutex::new(BTreeMap::new()),
            files_gate: RwLock::new(()),
        })
    }

    fn check(path: &Path) -> Result<(), StoreError> {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let ok: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(StoreError::Corrupt(ok));
        }
        c.execute_batch(SCHEMA)?;
        Ok(())
    }

    /// Checks every partition (newest first, the ones queries read most) and
    /// moves aside the corrupt ones; returns (checked, set aside). Runs after
    /// start-up, on a thread of its own: the store serves meanwhile.
    pub fn check_partitions(&self) -> (usize, usize) {
        let (mut checked, mut aside) = (0, 0);
        for day in self.days_between(i64::MIN, i64::MAX) {
            if !self.has_day(day) {
                continue;
            }
            // No gate held: a check takes seconds on a large partition and must
            // not hold up retention or a set-aside; a file retention removes
            // meanwhile fails the check and is found gone by `set_aside`.
            let result = Self::check(&self.path_for(day));
            checked += 1;
            if let Err(e) = result {
                if self.set_aside(day, &e.to_string()) {
                    aside += 1;
                }
            }
        }
        (checked, aside)
    }

    /// Moves partition `day` aside (`.broken`); the store goes on without it.
    /// False if it was gone already.
    fn set_aside(&self, day: i64, why: &str) -> bool {
        if !self
            .days
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&day)
        {
            return false;
        }
        lock(&self.writers).0.remove(&day);
        lock(&self.idle_readers).remove(&day);
        // Renamed at once: no new read opens it (it left `days` above), and a
        // read that has it open keeps its descriptor; waiting for reads to end
        // could hold the caller up to `query.timeout`.
        let path = self.path_for(day);
        let aside = path.with_extension("broken");
        match std::fs::rename(&path, &aside) {
            Ok(()) => tracing::error!(partition = day, error = %why, moved_to = %aside.display(),
                "partition cannot be read; moved aside"),
            Err(e) => tracing::error!(partition = day, error = %why, rename_error = %e,
                "partition cannot be read; left out (it could not be moved aside)"),
        }
        true
    }

    fn path_for(&self, day: i64) -> PathBuf {
        self.dir.join(format!("spans-{day:06}.sqlite"))
    }

    fn has_day(&self, day: i64) -> bool {
        self.days
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&day)
    }

    /// Days with a partition in [from, to], newest first.
    fn days_between(&self, from: i64, to: i64) -> Vec<i64> {
        if from > to {
            return Vec::new();
        }
        self.days
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(from..=to)
            .rev()
            .copied()
            .collect()
    }

    /// Runs `f` on a read connection to `day` from the pool (opened if none is
    /// idle, returned afterwards); `None` if that partition is gone. SQLite
    /// checks `ctl`'s deadline every few thousand steps of its virtual machine,
    /// so a statement stops (`StoreError::Stopped`) when the read's time is up.
    fn with_reader<R>(
        &self,
        day: i64,
        ctl: &ReadCtl,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        ctl.check()?;
        let _files = self.files_gate.read().unwrap_or_else(|e| e.into_inner());
        if !self.has_day(day) {
            return Ok(None);
        }
        let pooled = lock(&self.idle_readers).get_mut(&day).and_then(Vec::pop);
        let conn = match pooled {
            Some(c) => c,
            None => {
                if !self.has_day(day) {
                    return Ok(None);
                }
                match Connection::open_with_flags(
                    self.path_for(day),
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                ) {
                    Ok(c) => c,
                    // Dropped by retention between the check and the open.
                    Err(_) if !self.has_day(day) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let stop = ctl.stop_handle();
        conn.progress_handler(STEPS_PER_CHECK, Some(move || stop.stopped()));
        // Interrupted by the handler: the deadline, not a fault.
        let out = f(&conn).map_err(|e| match e {
            StoreError::Sqlite(e) => ctl.stopped_or(e),
            e => e,
        });
        conn.progress_handler(0, None::<fn() -> bool>);
        if let Err(StoreError::Sqlite(e)) = &out {
            if is_corruption(e) {
                // Found on use: set aside (after this read lets go of it), read on without it.
                let why = e.to_string();
                drop(conn);
                drop(_files);
                self.set_aside(day, &why);
                return Ok(None);
            }
        }
        // A partition dropped by retention meanwhile is closed, not pooled.
        if self.has_day(day) {
            let mut idle = lock(&self.idle_readers);
            if idle.values().map(Vec::len).sum::<usize>() < MAX_IDLE_READERS {
                idle.entry(day).or_default().push(conn);
            }
        }
        out.map(Some)
    }
}

/// Writes and removes a small file: can this directory take writes?
pub fn write_probe(dir: &Path) -> Result<(), StoreError> {
    let probe = dir.join(".write-probe");
    if let Err(e) = std::fs::write(&probe, b"ok") {
        let _ = std::fs::remove_file(&probe);
        return Err(io(&probe, e));
    }
    std::fs::remove_file(&probe).map_err(|e| io(&probe, e))
}

/// The file is not a database or is damaged (not a transient error).
fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// ENOSPC or EDQUOT: the disk (or the quota) is full.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// (day, path) of every partition file in `dir`.
fn list_partitions(dir: &Path) -> Result<Vec<(i64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(day) = name
            .strip_prefix("spans-")
            .and_then(|r| r.strip_suffix(".sqlite"))
            .and_then(|d| d.parse::<i64>().ok())
        {
            out.push((day, entry.path()));
        }
    }
    Ok(out)
}

/// Origins decoded once per (day, resource id) within one read.
#[derive(Default)]
struct Origins(HashMap<(i64, i64), Arc<Origin>>);

impl Origins {
    fn get(&mut self, c: &Connection, day: i64, rid: i64) -> Result<Arc<Origin>, StoreError> {
        Ok(match self.0.entry((day, rid)) {
            Entry::Occupied(o) => o.get().clone(),
            Entry::Vacant(slot) => {
                let body: Vec<u8> = c
                    .prepare_cached("SELECT body FROM resources WHERE id = ?1")?
                    .query_row(params![rid], |r| r.get(0))?;
                slot.insert(Arc::new(Origin::decode(&body).map_err(corrupt)?))
                    .clone()
            }
        })
    }
}

fn write_partition(c: &mut Connection, spans: &[&SpanRecord]) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    {
        let mut res_ins = tx.prepare_cached("INSERT OR IGNORE INTO resources(body) VALUES (?1)")?;
        let mut res_get = tx.prepare_cached("SELECT id FROM resources WHERE body = ?1")?;
        let mut span_ins = tx.prepare_cached(
            "INSERT INTO spans(trace_id, span_id, parent_span_id, service, operation, kind, start_us, duration_us, error, resource_id, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut tag_ins = tx.prepare_cached(
            "INSERT INTO tags(trace_id, key, value, start_us) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut op_ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO operations(service, operation, kind) VALUES (?1, ?2, ?3)",
        )?;
        let mut last_origin: Option<(&[u8], i64)> = None;
        for s in spans {
            let rid = match last_origin {
                Some((body, id)) if body == &*s.origin => id,
                _ => {
                    res_ins.execute(params![&*s.origin])?;
                    let id: i64 = res_get.query_row(params![&*s.origin], |r| r.get(0))?;
                    last_origin = Some((&*s.origin, id));
                    id
                }
            };
            span_ins.execute(params![
                &s.trace_id[..],
                &s.span_id[..],
                s.parent_span_id.as_ref().map(|p| &p[..]),
                s.service,
                s.operation,
                s.kind,
                s.start_us,
                s.duration_us,
                s.error,
                rid,
                &s.body[..]
            ])?;
            for (k, v) in &s.indexed_tags {
                tag_ins.execute(params![&s.trace_id[..], k, v, s.start_us])?;
            }
            op_ins.execute(params![s.service, s.operation, s.kind])?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl SpanWriter for SqliteStore {
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        let mut by_day: BTreeMap<i64, Vec<&SpanRecord>> = BTreeMap::new();
        for s in spans {
            by_day.entry(day_of(s.start_us)).or_default().push(s);
        }
        let mut guard = lock(&self.writers);
        let (writers, clock) = &mut *guard;
        for (day, group) in by_day {
            *clock += 1;
            if !writers.contains_key(&day) {
                // Room first: close the least recently written partition.
                while writers.len() >= self.settings.max_open_partitions.max(1) {
                    let Some(oldest) = writers
                        .iter()
                        .min_by_key(|(_, w)| w.last_write)
                        .map(|(d, _)| *d)
                    else {
                        break;
                    };
                    writers.remove(&oldest);
                }
                let conn = Connection::open(self.path_for(day))?;
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(self.settings.durability.pragma())?;
                self.days
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(day);
                writers.insert(
                    day,
                    Writer {
                        conn,
                        last_write: 0,
                        used_at: std::time::Instant::now(),
                    },
                );
            }
            if let Some(w) = writers.get_mut(&day) {
                w.last_write = *clock;
                w.used_at = std::time::Instant::now();
                write_partition(&mut w.conn, &group)?;
            }
        }
        Ok(())
    }

    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError> {
        let cutoff_day = day_of(cutoff_us);
        let mut writers = lock(&self.writers);
        let writers = &mut writers.0;
        // A day is dropped once all of it is older than the cutoff. Forget it
        // first, so no new reader opens it while its files go.
        let old: Vec<i64> = {
            let mut days = self.days.write().unwrap_or_else(|e| e.into_inner());
            let old: Vec<i64> = days.range(..cutoff_day).copied().collect();
            for d in &old {
                days.remove(d);
            }
            old
        };
        let mut idle = lock(&self.idle_readers);
        for day in &old {
            writers.remove(day);
            idle.remove(day);
        }
        drop(idle);
        // Reads in progress on these days finish first.
        let _files = self.files_gate.write().unwrap_or_else(|e| e.into_inner());
        for (day, path) in list_partitions(&self.dir)? {
            if day >= cutoff_day {
                continue;
            }
            for suffix in ["", "-wal", "-shm"] {
                let p = PathBuf::from(format!("{}{suffix}", path.display()));
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
                }
            }
        }
        Ok(old.len())
    }
}

impl SqliteStore {
    /// Closes writer connections not written for `idle` and the pooled read
    /// connections; returns how many writers were closed. Files stay; a later
    /// write or read opens them again.
    pub fn close_idle(&self, idle: std::time::Duration) -> usize {
        let mut guard = lock(&self.writers);
        let before = guard.0.len();
        guard.0.retain(|_, w| w.used_at.elapsed() < idle);
        let closed = before - guard.0.len();
        drop(guard);
        lock(&self.idle_readers).clear();
        closed
    }

    /// Writer connections open now.
    pub fn open_writers(&self) -> usize {
        lock(&self.writers).0.len()
    }

    /// Can the store take a write now (the directory takes a file)? Partitions
    /// whose files went away (the volume was emptied) are closed and forgotten
    /// first: the next write makes the file again instead of writing into the
    /// deleted one, where what it acknowledged would be lost.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let gone = |day: &i64| !self.path_for(*day).exists();
        let mut w = lock(&self.writers);
        let before = w.0.len();
        w.0.retain(|day, _| !gone(day));
        let closed = before - w.0.len();
        drop(w);
        if closed > 0 {
            tracing::warn!(
                partitions = closed,
                "partitions whose files are gone were closed"
            );
            lock(&self.idle_readers).clear();
        }
        self.days
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|day| !gone(day));
        write_probe(&self.dir)
    }

    /// Can the store be read now: the directory listed and the newest
    /// partition opened afresh (not from the pool)?
    pub fn check_readable(&self) -> Result<(), StoreError> {
        list_partitions(&self.dir)?;
        let newest = self
            .days
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .copied();
        if let Some(day) = newest {
            let c = Connection::open_with_flags(
                self.path_for(day),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
        }
        Ok(())
    }
}

impl SpanReader for SqliteStore {
    fn traces_within(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
    ) -> Result<TraceSet, StoreError> {
        if ids.is_empty() {
            return Ok(TraceSet::default());
        }
        ctl.charge((ids.len() as u64).saturating_mul(128))?;
        let mut by_id: HashMap<[u8; 16], TraceRows> = HashMap::with_capacity(ids.len());
        // Over the budget, rows are not decoded: only whose they are is kept.
        let mut held = 0usize;
        let mut cut: HashSet<[u8; 16]> = HashSet::new();
        let mut cut_by_bytes = false;
        let mut origins = Origins::default();
        // Every partition: a trace may cross midnight (its spans are stored by their own start).
        for day in self.days_between(i64::MIN, i64::MAX) {
            self.with_reader(day, ctl, |c| {
            for chunk in ids.chunks(IDS_PER_LOOKUP) {
                let marks = vec!["?"; chunk.len()].join(",");
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT trace_id, span_id, body, resource_id, start_us FROM spans WHERE trace_id IN ({marks})"
                ))?;
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(chunk.iter().map(|t| &t[..])))?;
                while let Some(row) = rows.next()? {
                    let trace_id: [u8; 16] = row
                        .get_ref(0)?
                        .as_blob()
                        .map_err(rusqlite::Error::from)?
                        .try_into()
                        .map_err(corrupt)?;
                    if held >= max_spans {
                        cut.insert(trace_id);
                        continue;
                    }
                    let span_id = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                    let body = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
                    let identity = row_identity(span_id, body);
                    if by_id.get(&trace_id).is_some_and(|e| e.1.contains(&identity)) {
                        continue;
                    }
                    let span = Span::decode(body).map_err(corrupt)?;
                    // Charged once decoded (what it holds is known then); past the
                    // budget it is dropped at once and the answer is cut here.
                    if !ctl.try_charge(span_memory(&span)) {
                        ctl.check()?;
                        cut_by_bytes = true;
                        held = max_spans;
                        cut.insert(trace_id);
                        continue;
                    }
                    let entry = by_id.entry(trace_id).or_default();
                    entry.1.insert(identity);
                    held += 1;
                    let origin = origins.get(c, day, row.get(3)?)?;
                    entry.0.push((row.get(4)?, StoredSpan { span, origin }));
                }
            }
            Ok(())
            })?;
        }
        let left_out = cut.iter().filter(|id| !by_id.contains_key(*id)).count();
        let traces = ids
            .iter()
            .filter_map(|id| {
                let (mut spans, _) = by_id.remove(id)?;
                spans.sort_by_key(|(start, _)| *start);
                Some(StoredTrace {
                    trace_id: *id,
                    spans: spans.into_iter().map(|(_, s)| s).collect(),
                    truncated: cut.contains(id),
                })
            })
            .collect();
        Ok(TraceSet {
            traces,
            left_out,
            cut_by_bytes,
            warnings: ctl.warnings(),
        })
    }

    fn services(&self, ctl: &ReadCtl) -> Result<Vec<String>, StoreError> {
        let mut set = BTreeSet::new();
        for day in self.days_between(i64::MIN, i64::MAX) {
            self.with_reader(day, ctl, |c| {
                let mut stmt = c.prepare_cached("SELECT DISTINCT service FROM operations")?;
                for s in stmt.query_map([], |r| r.get::<_, String>(0))? {
                    let s = s?;
                    if !set.contains(&s) {
                        ctl.charge(name_cost(&s))?;
                        set.insert(s);
                    }
                }
                Ok(())
            })?;
        }
        Ok(set.into_iter().collect())
    }

    fn operations(&self, service: &str, ctl: &ReadCtl) -> Result<Vec<(String, i32)>, StoreError> {
        let mut set = BTreeSet::new();
        for day in self.days_between(i64::MIN, i64::MAX) {
            self.with_reader(day, ctl, |c| {
                let mut stmt =
                    c.prepare_cached("SELECT operation, kind FROM operations WHERE service = ?1")?;
                for row in stmt.query_map(params![service], |r| Ok((r.get(0)?, r.get(1)?)))? {
                    let row: (String, i32) = row?;
                    if !set.contains(&row) {
                        ctl.charge(name_cost(&row.0))?;
                        set.insert(row);
                    }
                }
                Ok(())
            })?;
        }
        Ok(set.into_iter().collect())
    }

    fn find_trace_ids(&self, q: &TraceQuery, ctl: &ReadCtl) -> Result<Vec<[u8; 16]>, StoreError> {
        let mut found: Vec<([u8; 16], i64)> = Vec::new();
        let filter = q.tag_filter();
        let mut seen = HashSet::new();
        let mut origins = Origins::default();
        ctl.charge((q.limit.min(1 << 20) as u64).saturating_mul(96))?;
        for day in self.days_between(day_of(q.start_us), day_of(q.end_us)) {
            self.with_reader(day, ctl, |c| {
            // Newest first along the (service[, operation], start) index, stopping
            // at `limit` distinct traces: no GROUP BY over the whole window.
            let mut sql = String::from(
                "SELECT s.trace_id, s.start_us, s.body, s.resource_id FROM spans s WHERE s.service = ?1 AND s.start_us >= ?2 AND s.start_us <= ?3",
            );
            let mut args: Vec<rusqlite::types::Value> =
                vec![q.service.clone().into(), q.start_us.into(), q.end_us.into()];
            if let Some(op) = &q.operation {
                args.push(op.clone().into());
                sql.push_str(&format!(" AND s.operation = ?{}", args.len()));
            }
            if let Some(d) = q.min_duration_us {
                args.push(d.into());
                sql.push_str(&format!(" AND s.duration_us >= ?{}", args.len()));
            }
            if let Some(d) = q.max_duration_us {
                args.push(d.into());
                sql.push_str(&format!(" AND s.duration_us <= ?{}", args.len()));
            }
            // Keys this partition indexes narrow the scan through the tags table; every
            // tag is then checked on the span itself (span, process and log fields).
            let mut key_indexed =
                c.prepare_cached("SELECT EXISTS(SELECT 1 FROM tags WHERE key = ?1)")?;
            // With OR, one tag's index cannot narrow the scan: the spans are checked.
            // A tag narrows it only when every name it may be stored under is indexed.
            for (names, v) in filter.conditions().filter(|_| !filter.any()) {
                let mut indexed = true;
                for k in names {
                    indexed &= key_indexed.query_row(params![k], |r| r.get::<_, bool>(0))?;
                }
                if !indexed {
                    continue;
                }
                let mut keys = Vec::new();
                for k in names {
                    args.push(k.clone().into());
                    keys.push(format!("?{}", args.len()));
                }
                args.push(v.to_string().into());
                let vn = args.len();
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM tags t WHERE t.trace_id = s.trace_id AND t.key IN ({}) AND t.value = ?{vn})",
                    keys.join(", ")
                ));
            }
            sql.push_str(" ORDER BY s.start_us DESC");
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut here = 0;
            while let Some(row) = rows.next()? {
                let Ok(id) = <[u8; 16]>::try_from(
                    row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?,
                ) else {
                    continue;
                };
                if seen.contains(&id) {
                    continue;
                }
                if !filter.is_empty() {
                    let span =
                        Span::decode(row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?)
                            .map_err(corrupt)?;
                    let stored = StoredSpan {
                        span,
                        origin: origins.get(c, day, row.get(3)?)?,
                    };
                    if !filter.matches(&stored) {
                        continue;
                    }
                }
                seen.insert(id);
                found.push((id, row.get(1)?));
                here += 1;
                if here >= q.limit {
                    break;
                }
            }
            Ok(())
            })?;
            // Partitions come newest day first: older ones cannot hold newer traces.
            if found.len() >= q.limit {
                break;
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.1));
        found.truncate(q.limit);
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }

    /// One pass per partition along the trace-id index: each trace's span ids
    /// and services are held while it is read (charged to `ctl`), and each
    /// span that starts in the window and whose parent belongs to another
    /// service adds a call to that edge. Linear in spans; the former self-join
    /// looked every parent up among all of its trace's spans (quadratic in a
    /// trace's size: 60 s and more on traces of 20,000–100,000 spans).
    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<Edge>, StoreError> {
        let mut edges: BTreeMap<(String, String), u64> = BTreeMap::new();
        for day in self.days_between(day_of(start_us), day_of(end_us)) {
            self.with_reader(day, ctl, |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT trace_id, span_id, parent_span_id, service, start_us FROM spans
                     WHERE trace_id IN (SELECT trace_id FROM spans WHERE start_us >= ?1 AND start_us <= ?2)
                     ORDER BY trace_id",
                )?;
                let mut rows = stmt.query(params![start_us, end_us])?;
                let mut trace = TraceEdges::default();
                while let Some(row) = rows.next()? {
                    let trace_id = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
                    if trace.id.as_slice() != trace_id {
                        trace.count_into(&mut edges, start_us, end_us, ctl)?;
                        trace.id = trace_id.to_vec();
                    }
                    let span_id = span_key(row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?);
                    let parent = match row.get_ref(2)? {
                        rusqlite::types::ValueRef::Blob(b) if !b.is_empty() => Some(span_key(b)),
                        _ => None,
                    };
                    let service = row.get_ref(3)?.as_str().map_err(rusqlite::Error::from)?;
                    trace.add(span_id, parent, service, row.get(4)?, ctl)?;
                }
                trace.count_into(&mut edges, start_us, end_us, ctl)?;
                Ok(())
            })?;
        }
        Ok(edges.into_iter().map(|((p, c), n)| (p, c, n)).collect())
    }
}

impl SqliteStore {
    /// Days that have a partition, oldest first.
    pub fn partition_days(&self) -> Vec<i64> {
        let mut d = self.days_between(i64::MIN, i64::MAX);
        d.reverse();
        d
    }

    /// Every span of partition `day`, handed to `f` `chunk` at a time as rows
    /// of the blocks engine (`meshtrace-collector migrate`).
    pub fn read_day(
        &self,
        day: i64,
        chunk: usize,
        mut f: impl FnMut(Vec<super::blocks::Row>) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let c = Connection::open_with_flags(self.path_for(day), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut names = super::blocks::Names::default();
        let mut origins: HashMap<i64, Arc<[u8]>> = HashMap::new();
        let mut stmt = c.prepare(
            "SELECT trace_id, span_id, parent_span_id, service, operation, kind, start_us,
                    duration_us, error, resource_id, body, rowid FROM spans WHERE rowid > ?1
             ORDER BY rowid LIMIT ?2",
        )?;
        let mut after = 0i64;
        let mut total = 0u64;
        loop {
            let mut rows = Vec::with_capacity(chunk);
            let mut q = stmt.query(params![after, chunk as i64])?;
            while let Some(r) = q.next()? {
                let blob = |i: usize| -> Result<Vec<u8>, StoreError> {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                        _ => Vec::new(),
                    })
                };
                let rid: i64 = r.get(9)?;
                let origin = match origins.get(&rid) {
                    Some(o) => o.clone(),
                    None => {
                        let body: Vec<u8> = c.query_row(
                            "SELECT body FROM resources WHERE id = ?1",
                            params![rid],
                            |r| r.get(0),
                        )?;
                        let o: Arc<[u8]> = body.into();
                        origins.insert(rid, o.clone());
                        o
                    }
                };
                let body = blob(10)?;
                let status_code = Span::decode(body.as_slice())
                    .map_err(corrupt)?
                    .status
                    .map_or(0, |s| s.code);
                let parent = blob(2)?;
                let service: String = r.get(3)?;
                let operation: String = r.get(4)?;
                rows.push(
                    super::blocks::Row {
                        trace_id: blob(0)?.try_into().map_err(|_| corrupt("trace_id"))?,
                        span_id: blob(1)?.try_into().map_err(|_| corrupt("span_id"))?,
                        parent_span_id: <[u8; 8]>::try_from(parent.as_slice()).ok(),
                        service: names.get(&service),
                        operation: names.get(&operation),
                        kind: r.get(5)?,
                        start_us: r.get(6)?,
                        duration_us: r.get(7)?,
                        error: r.get(8)?,
                        status_code,
                        origin,
                        body: body.into(),
                        tags: Arc::from(Vec::new()),
                    }
                    .with_tags(),
                );
                after = r.get(11)?;
            }
            drop(q);
            if rows.is_empty() {
                return Ok(total);
            }
            total += rows.len() as u64;
            f(rows)?;
        }
    }

    /// Sets partition `day` aside once migrated (`.migrated`): no longer read,
    /// kept until the operator deletes it.
    pub fn set_migrated(&self, day: i64) -> Result<(), StoreError> {
        self.days
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&day);
        lock(&self.writers).0.remove(&day);
        lock(&self.idle_readers).remove(&day);
        let path = self.path_for(day);
        std::fs::rename(&path, path.with_extension("migrated")).map_err(|e| io(&path, e))?;
        for ext in ["sqlite-wal", "sqlite-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        Ok(())
    }
}
