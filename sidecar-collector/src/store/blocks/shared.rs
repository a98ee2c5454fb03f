//! Small objects the replicas sharing a bucket exchange: each writes its own
//! per-interval counts under `shared/<what>/<interval>/<replica>.json`, and
//! every replica reads all of them and sums. No leader, no consensus: the
//! sum of the same objects is the same everywhere.

use super::super::StoreError;
use super::backend::Backend;
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

/// Intervals kept before a replica deletes its own objects.
const KEEP_INTERVALS: u64 = 20;

pub struct Shared {
    backend: Arc<Backend>,
    replica: String,
    what: String,
}

impl Shared {
    pub fn new(backend: Arc<Backend>, replica: &str, what: &str) -> Shared {
        Shared {
            backend,
            replica: replica.to_string(),
            what: what.to_string(),
        }
    }

    fn dir(&self, index: u64) -> String {
        format!("shared/{}/{index:012}", self.what)
    }

    /// Writes this replica's value for interval `index`.
    pub fn publish<T: Serialize>(&self, index: u64, value: &T) -> Result<(), StoreError> {
        let body = serde_json::to_vec(value).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.backend.put(
            &format!("{}/{}.json", self.dir(index), self.replica),
            Bytes::from(body),
        )?;
        if index >= KEEP_INTERVALS {
            // Best effort: an old object left behind is only listed, never summed.
            let _ = self.backend.delete(&format!(
                "{}/{}.json",
                self.dir(index - KEEP_INTERVALS),
                self.replica
            ));
        }
        Ok(())
    }

    /// Every replica's value for interval `index` (unreadable ones skipped, logged).
    pub fn gather<T: DeserializeOwned>(&self, index: u64) -> Result<Vec<T>, StoreError> {
        Ok(self
            .gather_from(index, |_| true)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// The other replicas that published interval `index`.
    pub fn others(&self, index: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .backend
            .list(&self.dir(index))?
            .into_iter()
            .filter_map(|(k, _)| name_of(&k))
            .filter(|name| *name != self.replica)
            .collect())
    }

    /// (replica, value) for interval `index`, of the replicas `want` accepts.
    pub fn gather_from<T: DeserializeOwned>(
        &self,
        index: u64,
        want: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for (key, _) in self.backend.list(&self.dir(index))? {
            let Some(name) = name_of(&key).filter(|n| want(n)) else {
                continue;
            };
            let Some(bytes) = self.backend.get(&key)? else {
                continue;
            };
            match serde_json::from_slice(&bytes) {
                Ok(v) => out.push((name, v)),
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "a replica's shared object cannot be read")
                }
            }
        }
        Ok(out)
    }
}

/// The replica an object is from (`…/<replica>.json`).
fn name_of(key: &str) -> Option<String> {
    Some(key.rsplit('/').next()?.strip_suffix(".json")?.to_string())
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shared({}, {})", self.what, self.replica)
    }
}
