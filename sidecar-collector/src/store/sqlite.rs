//! The embedded store: SQLite (bundled), one database file per UTC day of
//! span start time, WAL, one transaction per write batch. Retention deletes
//! whole files. A file that cannot be opened at start-up is reported and
//! moved aside (`.broken`), never a crash.

use super::{SpanRecord, SpanStore, StoreError, StoredSpan, TraceQuery};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::Span;
use prost::Message;
use rusqlite::{params, Connection, OpenFlags};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const DAY_US: i64 = 86_400_000_000;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
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

/// The SQLite span store.
pub struct SqliteStore {
    dir: PathBuf,
    /// Open writer connections by day; only the writer thread writes.
    writers: Mutex<BTreeMap<i64, Connection>>,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn day_of(start_us: i64) -> i64 {
    start_us.div_euclid(DAY_US)
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir`, checking every partition.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let store = SqliteStore {
            dir: dir.to_path_buf(),
            writers: Mutex::new(BTreeMap::new()),
        };
        for (day, path) in store.partitions()? {
            if let Err(e) = Self::check(&path) {
                let aside = path.with_extension("broken");
                tracing::error!(partition = day, error = %e, moved_to = %aside.display(),
                    "partition cannot be read; moved aside");
                std::fs::rename(&path, &aside).map_err(|e| io(&path, e))?;
            }
        }
        // Fail now, not at the first export, if the directory is not writable.
        let probe = dir.join(".write-probe");
        std::fs::write(&probe, b"ok").map_err(|e| io(&probe, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(store)
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

    fn path_for(&self, day: i64) -> PathBuf {
        self.dir.join(format!("spans-{day:06}.sqlite"))
    }

    /// (day, path) of every partition, newest first.
    fn partitions(&self) -> Result<Vec<(i64, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(day) = name
                .strip_prefix("spans-")
                .and_then(|r| r.strip_suffix(".sqlite"))
                .and_then(|d| d.parse::<i64>().ok())
            {
                out.push((day, entry.path()));
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.0));
        Ok(out)
    }

    fn readers(&self) -> Result<Vec<Connection>, StoreError> {
        self.partitions()?
            .into_iter()
            .map(|(_, p)| {
                Connection::open_with_flags(
                    &p,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(StoreError::from)
            })
            .collect()
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
        let mut last_resource: Option<(&[u8], i64)> = None;
        for s in spans {
            let rid = match last_resource {
                Some((body, id)) if body == s.resource.as_slice() => id,
                _ => {
                    res_ins.execute(params![s.resource])?;
                    let id: i64 = res_get.query_row(params![s.resource], |r| r.get(0))?;
                    last_resource = Some((s.resource.as_slice(), id));
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
                s.body
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

impl SpanStore for SqliteStore {
    fn write(&self, spans: &[SpanRecord]) -> Result<(), StoreError> {
        let mut by_day: BTreeMap<i64, Vec<&SpanRecord>> = BTreeMap::new();
        for s in spans {
            by_day.entry(day_of(s.start_us)).or_default().push(s);
        }
        let mut writers = self
            .writers
            .lock()
            .map_err(|_| StoreError::Corrupt("writer lock poisoned".into()))?;
        for (day, group) in by_day {
            let c = match writers.entry(day) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let c = Connection::open(self.path_for(day))?;
                    c.execute_batch(SCHEMA)?;
                    e.insert(c)
                }
            };
            write_partition(c, &group)?;
        }
        Ok(())
    }

    fn trace(&self, trace_id: &[u8; 16]) -> Result<Vec<StoredSpan>, StoreError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for c in self.readers()? {
            let mut stmt = c.prepare_cached(
                "SELECT s.span_id, s.body, r.body, s.start_us FROM spans s JOIN resources r ON r.id = s.resource_id
                 WHERE s.trace_id = ?1",
            )?;
            let rows = stmt.query_map(params![&trace_id[..]], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (span_id, body, resource, start) = row?;
                // A retried export may have stored a span twice: keep one.
                if !seen.insert(span_id) {
                    continue;
                }
                let span = Span::decode(body.as_slice())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let resource = Resource::decode(resource.as_slice())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push((start, StoredSpan { span, resource }));
            }
        }
        out.sort_by_key(|(s, _)| *s);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    fn services(&self) -> Result<Vec<String>, StoreError> {
        let mut set = std::collections::BTreeSet::new();
        for c in self.readers()? {
            let mut stmt = c.prepare_cached("SELECT DISTINCT service FROM operations")?;
            for s in stmt.query_map([], |r| r.get::<_, String>(0))? {
                set.insert(s?);
            }
        }
        Ok(set.into_iter().collect())
    }

    fn operations(&self, service: &str) -> Result<Vec<(String, i32)>, StoreError> {
        let mut set = std::collections::BTreeSet::new();
        for c in self.readers()? {
            let mut stmt =
                c.prepare_cached("SELECT operation, kind FROM operations WHERE service = ?1")?;
            for row in stmt.query_map(params![service], |r| Ok((r.get(0)?, r.get(1)?)))? {
                set.insert(row?);
            }
        }
        Ok(set.into_iter().collect())
    }

    fn find_trace_ids(&self, q: &TraceQuery) -> Result<Vec<[u8; 16]>, StoreError> {
        let mut found: Vec<([u8; 16], i64)> = Vec::new();
        let mut seen = HashSet::new();
        for (day, path) in self.partitions()? {
            if day < day_of(q.start_us) || day > day_of(q.end_us) {
                continue;
            }
            let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
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
            for (k, v) in &q.tags {
                if !key_indexed.query_row(params![k], |r| r.get::<_, bool>(0))? {
                    continue;
                }
                args.push(k.clone().into());
                let kn = args.len();
                args.push(v.clone().into());
                let vn = args.len();
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM tags t WHERE t.trace_id = s.trace_id AND t.key = ?{kn} AND t.value = ?{vn})"
                ));
            }
            sql.push_str(" ORDER BY s.start_us DESC");
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut here = 0;
            let mut resources: HashMap<i64, Resource> = HashMap::new();
            while let Some(row) = rows.next()? {
                let id: Vec<u8> = row.get(0)?;
                let t: i64 = row.get(1)?;
                if !q.tags.is_empty() {
                    let span =
                        Span::decode(row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let rid: i64 = row.get(3)?;
                    let res = match resources.entry(rid) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(slot) => {
                            let body: Vec<u8> = c
                                .prepare_cached("SELECT body FROM resources WHERE id = ?1")?
                                .query_row(params![rid], |r| r.get(0))?;
                            slot.insert(
                                Resource::decode(body.as_slice())
                                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                            )
                        }
                    };
                    if !q
                        .tags
                        .iter()
                        .all(|(k, v)| super::span_matches_tag(&span, res, k, v))
                    {
                        continue;
                    }
                }
                if let Ok(arr) = <[u8; 16]>::try_from(id.as_slice()) {
                    if seen.insert(arr) {
                        found.push((arr, t));
                        here += 1;
                        if here >= q.limit {
                            break;
                        }
                    }
                }
            }
            // Partitions come newest day first: older ones cannot hold newer traces.
            if found.len() >= q.limit {
                break;
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.1));
        found.truncate(q.limit);
        Ok(found.into_iter().map(|(id, _)| id).collect())
    }

    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut edges: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (day, path) in self.partitions()? {
            if day < day_of(start_us) || day > day_of(end_us) {
                continue;
            }
            let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let mut stmt = c.prepare_cached(
                "SELECT p.service, c.service, COUNT(*) FROM spans c
                 JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
                 WHERE c.start_us >= ?1 AND c.start_us <= ?2 AND p.service <> c.service
                 GROUP BY p.service, c.service",
            )?;
            let rows = stmt.query_map(params![start_us, end_us], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (p, ch, n) = row?;
                *edges.entry((p, ch)).or_default() += n as u64;
            }
        }
        Ok(edges.into_iter().map(|((p, c), n)| (p, c, n)).collect())
    }

    fn apply_retention(&self, cutoff_us: i64) -> Result<usize, StoreError> {
        let cutoff_day = day_of(cutoff_us);
        let mut dropped = 0;
        let mut writers = self
            .writers
            .lock()
            .map_err(|_| StoreError::Corrupt("writer lock poisoned".into()))?;
        for (day, path) in self.partitions()? {
            // A day is dropped once all of it is older than the cutoff.
            if day < cutoff_day {
                writers.remove(&day);
                for suffix in ["", "-wal", "-shm"] {
                    let p = PathBuf::from(format!("{}{suffix}", path.display()));
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
                    }
                }
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}
