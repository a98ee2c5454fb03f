//! The span metrics' per-minute history, persisted so a restart keeps what the
//! Monitor tab (`/api/metrics/*`) shows: one SQLite file (`metrics-history.sqlite`
//! in the data directory), one row per minute and (service, operation, span kind).

use super::{ReadCtl, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

/// What one minute holds for one (service, operation, span kind).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct MinuteRow {
    /// Start of the minute, unix seconds (a multiple of 60).
    pub minute: i64,
    pub service: String,
    pub operation: String,
    /// OTLP span kind.
    pub kind: i32,
    pub calls: u64,
    pub errors: u64,
    /// Calls counted 1/p each (p: the probability each span was sampled with).
    pub adjusted_calls: f64,
    pub adjusted_errors: f64,
    /// Spans per duration bucket (not cumulative), the last one being +Inf.
    pub buckets: Vec<u64>,
}

/// What one minute holds for one service-graph edge.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct EdgeMinuteRow {
    pub minute: i64,
    pub client: String,
    pub server: String,
    pub connection_type: String,
    pub requests: u64,
    pub failed: u64,
    /// Requests counted 1/p each (the client span's p).
    pub adjusted: f64,
    /// Requests per server-duration bucket (seconds bounds = ms bounds / 1000), last +Inf.
    pub buckets: Vec<u64>,
}

/// What a history row holds in memory (and its points take in an answer).
pub fn minute_row_cost(r: &MinuteRow) -> u64 {
    (r.service.len() + r.operation.len() + r.buckets.len() * 8 + 160) as u64
}

/// What an edge row holds in memory.
pub fn edge_row_cost(r: &EdgeMinuteRow) -> u64 {
    (r.client.len() + r.server.len() + r.connection_type.len() + r.buckets.len() * 8 + 160) as u64
}

/// SQLite's progress handler stopping statements at `ctl`'s deadline while it lives.
struct Interruptible<'a>(&'a Connection);

impl<'a> Interruptible<'a> {
    fn new(conn: &'a Connection, ctl: &ReadCtl) -> Self {
        let stop = ctl.stop_handle();
        conn.progress_handler(10_000, Some(move || stop.stopped()));
        Interruptible(conn)
    }
}

impl Drop for Interruptible<'_> {
    fn drop(&mut self) {
        self.0.progress_handler(0, None::<fn() -> bool>);
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER NOT NULL,
    service TEXT NOT NULL,
    operation TEXT NOT NULL,
    kind INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    adjusted_calls REAL NOT NULL,
    adjusted_errors REAL NOT NULL,
    buckets BLOB NOT NULL,
    PRIMARY KEY (service, minute, operation, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS minutes_by_time ON minutes (minute);
CREATE TABLE IF NOT EXISTS edge_minutes (
    minute INTEGER NOT NULL,
    client TEXT NOT NULL,
    server TEXT NOT NULL,
    connection_type TEXT NOT NULL,
    requests INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    adjusted REAL NOT NULL,
    buckets BLOB NOT NULL,
    PRIMARY KEY (minute, client, server, connection_type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imported_minutes (
    minute INTEGER NOT NULL,
    replica TEXT NOT NULL,
    PRIMARY KEY (minute, replica)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live_minutes AS SELECT * FROM minutes WHERE 0;
CREATE TABLE IF NOT EXISTS live_edge_minutes AS SELECT * FROM edge_minutes WHERE 0;
";

fn encode_buckets(b: &[u64]) -> Vec<u8> {
    b.iter().flat_map(|c| c.to_le_bytes()).collect()
}

fn decode_buckets(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect()
}

/// The history file.
pub struct HistoryDb {
    conn: Mutex<Connection>,
}

impl HistoryDb {
    /// Opens (or creates) `metrics-history.sqlite` in `dir`. Rows written with
    /// other bucket bounds are dropped (their latencies would be misread); the
    /// log says so.
    pub fn open(dir: &Path, bounds: &[f64]) -> Result<HistoryDb, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(dir.join("metrics-history.sqlite"))?;
        conn.execute_batch(SCHEMA)?;
        let want = bounds
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let have: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'bounds'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if have.as_deref() != Some(want.as_str()) {
            if let Some(old) = have {
                tracing::warn!(
                    old = %old,
                    new = %want,
                    "metrics.duration_buckets_ms changed: the metrics history starts over"
                );
            }
            conn.execute_batch(
                "DELETE FROM minutes; DELETE FROM edge_minutes; DELETE FROM live_minutes; DELETE FROM live_edge_minutes;",
            )?;
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('bounds', ?1)",
                [&want],
            )?;
        }
        let db = HistoryDb {
            conn: Mutex::new(conn),
        };
        // Not fatal: on a full disk the collector still starts and serves.
        match db.recover_live() {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                "the metrics minute in progress at the last stop was recovered"
            ),
            Err(error) => tracing::warn!(
                %error,
                "the metrics minute in progress at the last stop could not be recovered yet"
            ),
        }
        Ok(db)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds rows (a minute written twice, e.g. across a restart, adds up).
    pub fn add(&self, rows: &[MinuteRow]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        add_rows(&tx, rows)?;
        tx.commit()?;
        Ok(())
    }

    /// A finished minute: its rows added (a minute written twice adds up) and
    /// the snapshot of it in progress forgotten, in one transaction.
    pub fn add_minute(
        &self,
        rows: &[MinuteRow],
        edges: &[EdgeMinuteRow],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        add_rows(&tx, rows)?;
        add_edge_rows(&tx, edges)?;
        tx.execute_batch("DELETE FROM live_minutes; DELETE FROM live_edge_minutes;")?;
        tx.commit()?;
        Ok(())
    }

    /// Whether another replica's `minute` was added already.
    pub fn imported(&self, minute: i64, replica: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM imported_minutes WHERE minute = ?1 AND replica = ?2",
                params![minute, replica],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Another replica's finished `minute` added to this history (summed with
    /// this replica's), once: marked in the same transaction.
    pub fn import(
        &self,
        minute: i64,
        replica: &str,
        rows: &[MinuteRow],
        edges: &[EdgeMinuteRow],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO imported_minutes (minute, replica) VALUES (?1, ?2)",
            params![minute, replica],
        )? == 1;
        if fresh {
            add_rows(&tx, rows)?;
            add_edge_rows(&tx, edges)?;
        }
        tx.commit()?;
        Ok(fresh)
    }

    /// The minute in progress, as it stands (replacing the last snapshot): a
    /// crash loses what came after it, not the whole minute.
    pub fn save_live(&self, rows: &[MinuteRow], edges: &[EdgeMinuteRow]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute_batch("DELETE FROM live_minutes; DELETE FROM live_edge_minutes;")?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO live_minutes
                 (minute, service, operation, kind, calls, errors, adjusted_calls, adjusted_errors, buckets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for r in rows {
                write_minute(&mut ins, r)?;
            }
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO live_edge_minutes
                 (minute, client, server, connection_type, requests, failed, adjusted, buckets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for r in edges {
                write_edge(&mut ins, r)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// After a crash: the last snapshot of the minute then in progress joins the
    /// history (added, like any minute written twice); returns its rows.
    fn recover_live(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        // Nothing to recover (a clean stop): no write at all.
        let pending: i64 = conn.query_row(
            "SELECT (SELECT count(*) FROM live_minutes) + (SELECT count(*) FROM live_edge_minutes)",
            [],
            |r| r.get(0),
        )?;
        if pending == 0 {
            return Ok(0);
        }
        let tx = conn.transaction()?;
        let rows: Vec<MinuteRow> = {
            let mut stmt = tx.prepare(
                "SELECT minute, service, operation, kind, calls, errors, adjusted_calls, adjusted_errors, buckets FROM live_minutes",
            )?;
            let rows = stmt.query_map([], minute_row)?;
            rows.collect::<Result<_, _>>()?
        };
        let edges: Vec<EdgeMinuteRow> = {
            let mut stmt = tx.prepare(
                "SELECT minute, client, server, connection_type, requests, failed, adjusted, buckets FROM live_edge_minutes",
            )?;
            let rows = stmt.query_map([], edge_row)?;
            rows.collect::<Result<_, _>>()?
        };
        add_rows(&tx, &rows)?;
        add_edge_rows(&tx, &edges)?;
        tx.execute_batch("DELETE FROM live_minutes; DELETE FROM live_edge_minutes;")?;
        tx.commit()?;
        Ok(rows.len() + edges.len())
    }
}

/// Binds a row to an insert of the minutes' columns (`minutes`, `live_minutes`).
fn write_minute(
    stmt: &mut rusqlite::CachedStatement<'_>,
    r: &MinuteRow,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        r.minute,
        r.service,
        r.operation,
        r.kind,
        r.calls as i64,
        r.errors as i64,
        r.adjusted_calls,
        r.adjusted_errors,
        encode_buckets(&r.buckets),
    ])
}

/// Binds an edge row to an insert of the edges' columns (`edge_minutes`, `live_edge_minutes`).
fn write_edge(
    stmt: &mut rusqlite::CachedStatement<'_>,
    r: &EdgeMinuteRow,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        r.minute,
        r.client,
        r.server,
        r.connection_type,
        r.requests as i64,
        r.failed as i64,
        r.adjusted,
        encode_buckets(&r.buckets),
    ])
}

fn minute_row(x: &rusqlite::Row<'_>) -> rusqlite::Result<MinuteRow> {
    Ok(MinuteRow {
        minute: x.get(0)?,
        service: x.get(1)?,
        operation: x.get(2)?,
        kind: x.get(3)?,
        calls: x.get::<_, i64>(4)? as u64,
        errors: x.get::<_, i64>(5)? as u64,
        adjusted_calls: x.get(6)?,
        adjusted_errors: x.get(7)?,
        buckets: decode_buckets(&x.get::<_, Vec<u8>>(8)?),
    })
}

fn edge_row(x: &rusqlite::Row<'_>) -> rusqlite::Result<EdgeMinuteRow> {
    Ok(EdgeMinuteRow {
        minute: x.get(0)?,
        client: x.get(1)?,
        server: x.get(2)?,
        connection_type: x.get(3)?,
        requests: x.get::<_, i64>(4)? as u64,
        failed: x.get::<_, i64>(5)? as u64,
        adjusted: x.get(6)?,
        buckets: decode_buckets(&x.get::<_, Vec<u8>>(7)?),
    })
}

/// Adds rows inside `tx` (a minute written twice adds up).
fn add_rows(tx: &rusqlite::Transaction<'_>, rows: &[MinuteRow]) -> Result<(), StoreError> {
    {
        let mut read = tx.prepare_cached(
            "SELECT calls, errors, adjusted_calls, adjusted_errors, buckets FROM minutes
                 WHERE service = ?1 AND minute = ?2 AND operation = ?3 AND kind = ?4",
        )?;
        let mut write = tx.prepare_cached(
                "INSERT OR REPLACE INTO minutes
                 (minute, service, operation, kind, calls, errors, adjusted_calls, adjusted_errors, buckets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
        for r in rows {
            let mut row = r.clone();
            let old = read
                .query_row(params![r.service, r.minute, r.operation, r.kind], |x| {
                    Ok((
                        x.get::<_, i64>(0)?,
                        x.get::<_, i64>(1)?,
                        x.get::<_, f64>(2)?,
                        x.get::<_, f64>(3)?,
                        x.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .optional()?;
            if let Some((calls, errors, ac, ae, buckets)) = old {
                row.calls += calls as u64;
                row.errors += errors as u64;
                row.adjusted_calls += ac;
                row.adjusted_errors += ae;
                for (a, b) in row.buckets.iter_mut().zip(decode_buckets(&buckets)) {
                    *a += b;
                }
            }
            write_minute(&mut write, &row)?;
        }
    }
    Ok(())
}

/// Adds edge rows inside `tx` (a minute written twice adds up).
fn add_edge_rows(tx: &rusqlite::Transaction<'_>, rows: &[EdgeMinuteRow]) -> Result<(), StoreError> {
    {
        let mut read = tx.prepare_cached(
            "SELECT requests, failed, adjusted, buckets FROM edge_minutes
             WHERE minute = ?1 AND client = ?2 AND server = ?3 AND connection_type = ?4",
        )?;
        let mut write = tx.prepare_cached(
            "INSERT OR REPLACE INTO edge_minutes
             (minute, client, server, connection_type, requests, failed, adjusted, buckets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in rows {
            let mut row = r.clone();
            let old = read
                .query_row(
                    params![r.minute, r.client, r.server, r.connection_type],
                    |x| {
                        Ok((
                            x.get::<_, i64>(0)?,
                            x.get::<_, i64>(1)?,
                            x.get::<_, f64>(2)?,
                            x.get::<_, Vec<u8>>(3)?,
                        ))
                    },
                )
                .optional()?;
            if let Some((req, failed, adjusted, buckets)) = old {
                row.requests += req as u64;
                row.failed += failed as u64;
                row.adjusted += adjusted;
                for (a, b) in row.buckets.iter_mut().zip(decode_buckets(&buckets)) {
                    *a += b;
                }
            }
            write_edge(&mut write, &row)?;
        }
    }
    Ok(())
}

impl HistoryDb {
    /// Rows of these services with minutes in `[from, to]` (unix seconds),
    /// each charged to `ctl`; the scan stops at `ctl`'s deadline.
    pub fn read(
        &self,
        services: &[String],
        from: i64,
        to: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<MinuteRow>, StoreError> {
        let conn = self.conn();
        let _stop = Interruptible::new(&conn, ctl);
        let mut stmt = conn.prepare_cached(
            "SELECT minute, service, operation, kind, calls, errors, adjusted_calls, adjusted_errors, buckets
             FROM minutes WHERE service = ?1 AND minute >= ?2 AND minute <= ?3",
        )?;
        let mut out = Vec::new();
        for service in services {
            let rows = stmt.query_map(params![service, from, to], minute_row)?;
            for r in rows {
                let r = r.map_err(|e| ctl.stopped_or(e))?;
                ctl.charge(minute_row_cost(&r))?;
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Adds edge rows (a minute written twice adds up).
    pub fn add_edges(&self, rows: &[EdgeMinuteRow]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        add_edge_rows(&tx, rows)?;
        tx.commit()?;
        Ok(())
    }

    /// Edge rows with minutes in `[from, to]` (unix seconds), each charged to
    /// `ctl`; the scan stops at `ctl`'s deadline.
    pub fn read_edges(
        &self,
        from: i64,
        to: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<EdgeMinuteRow>, StoreError> {
        let conn = self.conn();
        let _stop = Interruptible::new(&conn, ctl);
        let mut stmt = conn.prepare_cached(
            "SELECT minute, client, server, connection_type, requests, failed, adjusted, buckets
             FROM edge_minutes WHERE minute >= ?1 AND minute <= ?2",
        )?;
        let rows = stmt.query_map(params![from, to], edge_row)?;
        let mut out = Vec::new();
        for r in rows {
            let r = r.map_err(|e| ctl.stopped_or(e))?;
            ctl.charge(edge_row_cost(&r))?;
            out.push(r);
        }
        Ok(out)
    }

    /// Drops minutes before `before` (unix seconds); returns how many rows.
    pub fn prune(&self, before: i64) -> Result<usize, StoreError> {
        let conn = self.conn();
        let n = conn.execute("DELETE FROM minutes WHERE minute < ?1", [before])?;
        conn.execute("DELETE FROM imported_minutes WHERE minute < ?1", [before])?;
        Ok(n + conn.execute("DELETE FROM edge_minutes WHERE minute < ?1", [before])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, calls: u64) -> MinuteRow {
        MinuteRow {
            minute,
            service: "s".into(),
            operation: "o".into(),
            kind: 2,
            calls,
            errors: 1,
            adjusted_calls: calls as f64 * 10.0,
            adjusted_errors: 10.0,
            buckets: vec![calls, 0, 0],
        }
    }

    #[test]
    fn a_crash_keeps_the_last_snapshot_of_the_minute_in_progress_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        db.add(&[row(60, 3)]).unwrap();
        // Snapshots replace each other: the last one counts.
        db.save_live(&[row(120, 2)], &[]).unwrap();
        db.save_live(&[row(120, 5)], &[]).unwrap();
        // Killed here (no add_minute): the snapshot is recovered at the next open.
        drop(db);
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        let read = |db: &HistoryDb| {
            let mut rows = db
                .read(&["s".into()], 0, 1000, &ReadCtl::unbounded())
                .unwrap();
            rows.sort_by_key(|r| r.minute);
            rows.iter().map(|r| (r.minute, r.calls)).collect::<Vec<_>>()
        };
        assert_eq!(read(&db), [(60, 3), (120, 5)]);
        // Recovered once: opening again adds nothing.
        drop(db);
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        assert_eq!(read(&db), [(60, 3), (120, 5)]);
        // A finished minute forgets its snapshot in the same transaction.
        db.save_live(&[row(180, 7)], &[]).unwrap();
        db.add_minute(&[row(180, 8)], &[]).unwrap();
        drop(db);
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        assert_eq!(read(&db), [(60, 3), (120, 5), (180, 8)]);
    }

    #[test]
    fn rows_add_up_survive_reopening_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        db.add(&[row(60, 3), row(120, 4)]).unwrap();
        db.add(&[row(60, 2)]).unwrap();
        drop(db);
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        let mut rows = db
            .read(&["s".into()], 0, 1000, &ReadCtl::unbounded())
            .unwrap();
        rows.sort_by_key(|r| r.minute);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].calls, 5);
        assert_eq!(rows[0].errors, 2);
        assert_eq!(rows[0].adjusted_calls, 50.0);
        assert_eq!(rows[0].buckets, vec![5, 0, 0]);
        assert!(db
            .read(&["other".into()], 0, 1000, &ReadCtl::unbounded())
            .unwrap()
            .is_empty());
        assert_eq!(
            db.read(&["s".into()], 100, 1000, &ReadCtl::unbounded())
                .unwrap()
                .len(),
            1
        );
        assert_eq!(db.prune(120).unwrap(), 1);
        assert_eq!(
            db.read(&["s".into()], 0, 1000, &ReadCtl::unbounded())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn edge_rows_add_up_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let db = HistoryDb::open(dir.path(), &[1.0, 10.0]).unwrap();
        let e = |minute, requests| EdgeMinuteRow {
            minute,
            client: "a".into(),
            server: "b".into(),
            connection_type: String::new(),
            requests,
            failed: 1,
            adjusted: requests as f64 * 2.0,
            buckets: vec![requests, 0, 0],
        };
        db.add_edges(&[e(60, 3), e(120, 1)]).unwrap();
        db.add_edges(&[e(60, 2)]).unwrap();
        let rows = db.read_edges(0, 100, &ReadCtl::unbounded()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].requests, rows[0].failed, rows[0].adjusted),
            (5, 2, 10.0)
        );
        assert_eq!(db.prune(120).unwrap(), 1);
        assert_eq!(
            db.read_edges(0, 1000, &ReadCtl::unbounded()).unwrap().len(),
            1
        );
    }

    #[test]
    fn other_bucket_bounds_start_over() {
        let dir = tempfile::tempdir().unwrap();
        HistoryDb::open(dir.path(), &[1.0, 10.0])
            .unwrap()
            .add(&[row(60, 3)])
            .unwrap();
        let db = HistoryDb::open(dir.path(), &[1.0, 20.0]).unwrap();
        assert!(db
            .read(&["s".into()], 0, 1000, &ReadCtl::unbounded())
            .unwrap()
            .is_empty());
    }
}
