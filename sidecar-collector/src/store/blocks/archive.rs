//! The archive (Jaeger's Archive button, the seed's "archive old traces to
//! cheaper storage"): `POST /api/archive/{traceID}` copies a trace, as a
//! one-trace block, to `archive/<trace id>/` in a backend (the blocks
//! engine's bucket, or a directory beside the SQLite store), kept for
//! `archive.retention` (default: forever) whatever the store's retention.
//! Trace lookups that find nothing in the store read the archive.

use super::super::rows::corrupt;
use super::super::{ReadCtl, SpanReader, StoreError, TraceQuery, TraceSet};
use super::backend::Backend;
use super::{format, Names, Row};
use crate::model::{span_memory, Origin, StoredTrace};
use bytes::Bytes;
use meshtrace_proto::otlp::trace::v1::Span;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;

/// Where archived traces are kept.
pub struct Archive {
    backend: Arc<Backend>,
    /// Archived traces older than this are deleted (`None`: kept forever).
    retention: Option<std::time::Duration>,
}

fn key(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("archive/{hex}/data.parquet")
}

impl Archive {
    pub fn new(backend: Arc<Backend>, retention: Option<std::time::Duration>) -> Archive {
        Archive { backend, retention }
    }

    /// Copies `trace` to the archive (replacing an earlier copy).
    pub fn put(&self, trace: &StoredTrace) -> Result<(), StoreError> {
        let mut names = Names::default();
        let mut rows: Vec<Row> = trace
            .spans
            .iter()
            .map(|s| Row::from_stored(trace.trace_id, s, &mut names))
            .collect();
        rows.sort_by_key(|r| r.start_us);
        let (data, _) = format::write(&rows, 8192, Vec::new())?;
        self.backend.put(&key(&trace.trace_id), Bytes::from(data))
    }

    /// The archived copy of trace `id`, if any (its spans charged to `ctl`).
    pub fn get(&self, id: &[u8; 16], ctl: &ReadCtl) -> Result<Option<StoredTrace>, StoreError> {
        let Some(data) = self.backend.get(&key(id))? else {
            return Ok(None);
        };
        let opened = format::open(data.clone(), None)?;
        let mut origins: HashMap<Arc<[u8]>, Arc<Origin>> = HashMap::new();
        let mut spans = Vec::new();
        let mut names = Names::default();
        for gi in 0..opened.groups.len() {
            for batch in format::read(data.clone(), &opened, gi, &format::all(&opened), None)? {
                for r in format::rows(&batch, &mut names)? {
                    let span = Span::decode(&r.body[..]).map_err(corrupt)?;
                    ctl.charge(span_memory(&span))?;
                    let origin = match origins.get(&r.origin) {
                        Some(o) => o.clone(),
                        None => {
                            let o = Arc::new(Origin::decode(&r.origin).map_err(corrupt)?);
                            origins.insert(r.origin.clone(), o.clone());
                            o
                        }
                    };
                    spans.push(crate::model::StoredSpan { span, origin });
                }
            }
        }
        spans.sort_by_key(|s| s.span.start_time_unix_nano);
        Ok(Some(StoredTrace {
            trace_id: *id,
            spans,
            truncated: false,
        }))
    }

    /// Deletes archived traces older than `archive.retention`; returns how many.
    pub fn apply_retention(&self, now_us: i64) -> Result<usize, StoreError> {
        let Some(keep) = self.retention else {
            return Ok(0);
        };
        let cutoff = now_us.saturating_sub(keep.as_micros() as i64);
        let mut n = 0;
        for (k, _, modified_us) in self.backend.list_with_times("archive")? {
            if modified_us < cutoff {
                self.backend.delete(&k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl format::Ranges for Bytes {
    fn ranges(&self, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>, StoreError> {
        Ok(ranges
            .iter()
            .map(|r| self.slice(r.start as usize..(r.end as usize).min(self.len())))
            .collect())
    }
}

/// A reader whose trace lookups fall back to the archive for ids the store
/// does not have.
pub struct WithArchive {
    pub store: Arc<dyn SpanReader>,
    pub archive: Arc<Archive>,
}

impl SpanReader for WithArchive {
    fn traces_within(
        &self,
        ids: &[[u8; 16]],
        max_spans: usize,
        ctl: &ReadCtl,
    ) -> Result<TraceSet, StoreError> {
        let mut set = self.store.traces_within(ids, max_spans, ctl)?;
        if set.left_out > 0 || set.cut_by_bytes || ids.len() > 100 {
            // Cut by its budget, or a search's many ids: the archive is for lookups.
            return Ok(set);
        }
        let found: std::collections::HashSet<[u8; 16]> =
            set.traces.iter().map(|t| t.trace_id).collect();
        let mut archived = Vec::new();
        for id in ids.iter().filter(|id| !found.contains(*id)) {
            ctl.check()?;
            if let Some(t) = self.archive.get(id, ctl)? {
                archived.push(t);
            }
        }
        if !archived.is_empty() {
            set.traces.extend(archived);
            let order: HashMap<[u8; 16], usize> =
                ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            set.traces
                .sort_by_key(|t| order.get(&t.trace_id).copied().unwrap_or(usize::MAX));
        }
        Ok(set)
    }
    fn find_trace_ids(&self, q: &TraceQuery, ctl: &ReadCtl) -> Result<Vec<[u8; 16]>, StoreError> {
        self.store.find_trace_ids(q, ctl)
    }
    fn services(&self, ctl: &ReadCtl) -> Result<Vec<String>, StoreError> {
        self.store.services(ctl)
    }
    fn operations(&self, service: &str, ctl: &ReadCtl) -> Result<Vec<(String, i32)>, StoreError> {
        self.store.operations(service, ctl)
    }
    fn dependencies(
        &self,
        start_us: i64,
        end_us: i64,
        ctl: &ReadCtl,
    ) -> Result<Vec<super::super::Edge>, StoreError> {
        self.store.dependencies(start_us, end_us, ctl)
    }
}
