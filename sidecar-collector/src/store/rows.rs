//! What both engines do with the rows they read: identities for de-duplication,
//! the dependency edges of a trace, the costs reads charge, errors.

use super::{ReadCtl, StoreError};
use crate::model::StoredSpan;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// One UTC day in µs: the unit of retention.
pub const DAY_US: i64 = 86_400_000_000;

pub fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn day_of(start_us: i64) -> i64 {
    start_us.div_euclid(DAY_US)
}

pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Identity of a stored row for de-duplication: a retried export stores the
/// same span twice (same id, same bytes); Zipkin-style spans share an id but
/// differ, and both are kept.
pub fn row_identity(span_id: &[u8], body: &[u8]) -> (u64, u64) {
    // CRC-32 (hardware-accelerated) and the length of the body: identical
    // spans have identical bytes; different ones sharing an id and a checksum
    // would also need the same length (a few nanoseconds per span where SipHash
    // over the body took 3% of the blocks engine's ingest).
    let id = match <[u8; 8]>::try_from(span_id) {
        Ok(b) => u64::from_be_bytes(b),
        Err(_) => {
            let mut k = std::collections::hash_map::DefaultHasher::new();
            span_id.hash(&mut k);
            k.finish()
        }
    };
    (
        id,
        (u64::from(crc32fast::hash(body)) << 32) | (body.len() as u64 & 0xffff_ffff),
    )
}

/// Spans of one trace as read (with their start), and the identities seen.
pub type TraceRows = (Vec<(i64, StoredSpan)>, HashSet<(u64, u64)>);

/// A span id as a map key (ids longer than 8 bytes are hashed).
pub fn span_key(b: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(b) {
        Ok(a) => u64::from_be_bytes(a),
        Err(_) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.hash(&mut h);
            h.finish()
        }
    }
}

/// What a name costs held in a set and written in an answer.
pub fn name_cost(s: &str) -> u64 {
    s.len() as u64 + 64
}

/// Bytes one span of [`TraceEdges`] holds (map entry, row, amortised growth).
pub const EDGE_SPAN_COST: u64 = 96;

/// One trace's spans while [`SqliteStore::dependencies`] reads it.
#[derive(Default)]
pub struct TraceEdges {
    pub id: Vec<u8>,
    /// Span id → index of its service in `services`.
    service_of: HashMap<u64, usize>,
    services: Vec<String>,
    service_index: HashMap<String, usize>,
    /// (parent id, service index, start) of every span.
    spans: Vec<(Option<u64>, usize, i64)>,
    charged: u64,
}

impl TraceEdges {
    pub fn add(
        &mut self,
        id: u64,
        parent: Option<u64>,
        service: &str,
        start_us: i64,
        ctl: &ReadCtl,
    ) -> Result<(), StoreError> {
        let si = match self.service_index.get(service) {
            Some(&i) => i,
            None => {
                ctl.charge(2 * name_cost(service))?;
                self.charged += 2 * name_cost(service);
                self.services.push(service.to_string());
                self.service_index
                    .insert(service.to_string(), self.services.len() - 1);
                self.services.len() - 1
            }
        };
        ctl.charge(EDGE_SPAN_COST)?;
        self.charged += EDGE_SPAN_COST;
        self.service_of.insert(id, si);
        self.spans.push((parent, si, start_us));
        Ok(())
    }

    /// Adds this trace's cross-service calls to `edges` and forgets the trace.
    pub fn count_into(
        &mut self,
        edges: &mut BTreeMap<(String, String), u64>,
        start_us: i64,
        end_us: i64,
        ctl: &ReadCtl,
    ) -> Result<(), StoreError> {
        for &(parent, child, start) in &self.spans {
            if start < start_us || start > end_us {
                continue;
            }
            let Some(&p) = parent.and_then(|p| self.service_of.get(&p)) else {
                continue;
            };
            if p != child {
                let key = (self.services[p].clone(), self.services[child].clone());
                if !edges.contains_key(&key) {
                    ctl.charge(name_cost(&key.0) + name_cost(&key.1))?;
                }
                *edges.entry(key).or_default() += 1;
            }
        }
        ctl.release(self.charged);
        *self = TraceEdges::default();
        Ok(())
    }
}
