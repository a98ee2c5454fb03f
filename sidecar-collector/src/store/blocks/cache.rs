//! A local cache of recently read blocks (`store.blocks.cache_bytes`): a block
//! read from the object store is queued, and the block thread downloads it
//! whole into a directory on local disk; reads then go to the file. The least
//! recently read blocks are evicted to stay within the budget. Blocks never
//! change once written, so a cached file is never stale; a deleted block's
//! file is removed with it. The directory is emptied at start (what it held
//! is fetched again when read).

use super::super::rows::{io, lock};
use super::super::StoreError;
use super::backend::Backend;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Blocks downloaded per round of the block thread (the rest wait for the next).
const PER_ROUND: usize = 4;

pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Cached block data keys → (bytes, last read).
    files: HashMap<String, (u64, u64)>,
    /// Read from the object store, not cached yet (small enough to be).
    wanted: std::collections::HashSet<String>,
    bytes: u64,
    clock: u64,
}

impl Cache {
    /// A cache of at most `max_bytes` in `dir` (emptied).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Cache, StoreError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(State::default()),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key.replace('/', "_"))
    }

    /// The cached copy of `key`, if there is one; otherwise `key` (of `size`
    /// bytes) is queued for download, when it fits the cache.
    pub fn file(&self, key: &str, size: u64) -> Option<std::fs::File> {
        let mut st = lock(&self.state);
        st.clock += 1;
        let now = st.clock;
        if let Some(entry) = st.files.get_mut(key) {
            entry.1 = now;
            // Opened under the lock: an eviction removes the file only after.
            if let Ok(f) = std::fs::File::open(self.path(key)) {
                return Some(f);
            }
            st.bytes = st
                .bytes
                .saturating_sub(st.files.remove(key).map_or(0, |e| e.0));
        }
        if size <= self.max_bytes / 4 && st.wanted.len() < 1024 {
            st.wanted.insert(key.to_string());
        }
        None
    }

    /// Downloads up to a few queued blocks, evicting the least recently read
    /// beyond the budget. Returns how many it cached.
    pub fn fill(&self, backend: &Backend) -> Result<usize, StoreError> {
        let batch: Vec<String> = {
            let mut st = lock(&self.state);
            let keys: Vec<String> = st.wanted.iter().take(PER_ROUND).cloned().collect();
            for k in &keys {
                st.wanted.remove(k);
            }
            keys
        };
        let mut done = 0;
        for key in batch {
            let Some(data) = backend.get(&key)? else {
                continue; // deleted meanwhile
            };
            let (path, tmp) = (self.path(&key), self.path(&format!("{key}.part")));
            std::fs::write(&tmp, &data).map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            let mut st = lock(&self.state);
            st.clock += 1;
            let now = st.clock;
            let bytes = data.len() as u64;
            if let Some(old) = st.files.insert(key, (bytes, now)) {
                st.bytes = st.bytes.saturating_sub(old.0);
            }
            st.bytes += bytes;
            while st.bytes > self.max_bytes {
                let Some(oldest) = st
                    .files
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some((b, _)) = st.files.remove(&oldest) {
                    st.bytes = st.bytes.saturating_sub(b);
                    let _ = std::fs::remove_file(self.path(&oldest));
                }
            }
            done += 1;
        }
        if done > 0 {
            let (blocks, bytes) = self.usage();
            tracing::debug!(downloaded = done, blocks, bytes, "blocks cached locally");
        }
        Ok(done)
    }

    /// The block `key` was deleted: its copy goes.
    pub fn forget(&self, key: &str) {
        let mut st = lock(&self.state);
        st.wanted.remove(key);
        if let Some((b, _)) = st.files.remove(key) {
            st.bytes = st.bytes.saturating_sub(b);
            let _ = std::fs::remove_file(self.path(key));
        }
    }

    /// (blocks cached, bytes), for tests and logs.
    pub fn usage(&self) -> (usize, u64) {
        let st = lock(&self.state);
        (st.files.len(), st.bytes)
    }
}

#[cfg(test)]
impl Cache {
    /// The data keys cached now.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.state).files.keys().cloned().collect()
    }
}
