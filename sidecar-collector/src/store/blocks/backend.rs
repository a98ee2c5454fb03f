//! Where blocks live: `object_store` over a local directory (the embedded
//! default) or an S3-compatible bucket. The store's calls are synchronous
//! (they run on the writer thread, the block thread and blocking read
//! threads), so the backend owns a small runtime and blocks on it.

use super::super::StoreError;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::file::reader::{ChunkReader, Length};
use std::path::Path;
use std::sync::Arc;

/// Where to keep blocks.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// A local directory.
    Local(std::path::PathBuf),
    /// An S3-compatible bucket.
    S3(S3),
}

/// An S3-compatible bucket. Credentials not given here come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct S3 {
    pub bucket: String,
    /// Inside the bucket; may be empty.
    pub prefix: String,
    /// `http://127.0.0.1:9000` for MinIO, Ceph, s3s; empty for AWS.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and Ceph expect.
    pub path_style: bool,
    /// Reuse connections between requests. Off for a server that does not set
    /// `TCP_NODELAY` (s3s-fs): there a kept-alive connection's answers wait
    /// for delayed ACKs, ~40 ms each (measured), far more than a new connection costs.
    pub keep_alive: bool,
}

impl Default for S3 {
    fn default() -> Self {
        S3 {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: false,
            keep_alive: true,
        }
    }
}

impl Location {
    /// `s3://bucket/prefix` (with `s3` settings filled in from `base`) or a directory.
    pub fn parse(url: &str, base: &S3) -> Result<Location, String> {
        match url.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("{url}: no bucket (s3://BUCKET/PREFIX)"));
                }
                Ok(Location::S3(S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.trim_matches('/').to_string(),
                    ..base.clone()
                }))
            }
            None if url.contains("://") => Err(format!(
                "{url}: only s3:// URLs and local directories are supported"
            )),
            None => Ok(Location::Local(url.into())),
        }
    }
}

fn os(e: object_store::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The object store and the runtime its calls run on.
pub struct Backend {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// What it is, for logs and errors.
    pub describe: String,
    /// How long one call may take before it counts as failed.
    timeout: std::time::Duration,
    /// The directory of a local backend (listing a missing one succeeds, empty).
    local_root: Option<std::path::PathBuf>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Dropped from async code too (the process's end): never block there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend {
    pub fn open(location: &Location) -> Result<Backend, StoreError> {
        let (store, prefix, describe): (Arc<dyn ObjectStore>, ObjectPath, String) = match location {
            Location::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| super::super::rows::io(dir, e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(os)?
                    .with_automatic_cleanup(true);
                (
                    Arc::new(fs),
                    ObjectPath::default(),
                    dir.display().to_string(),
                )
            }
            Location::S3(s3) => {
                let mut options = object_store::ClientOptions::new();
                if !s3.keep_alive {
                    options = options.with_pool_max_idle_per_host(0);
                }
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_client_options(options)
                    .with_bucket_name(&s3.bucket)
                    .with_virtual_hosted_style_request(!s3.path_style);
                if !s3.region.is_empty() {
                    b = b.with_region(&s3.region);
                }
                if !s3.endpoint.is_empty() {
                    b = b
                        .with_endpoint(&s3.endpoint)
                        .with_allow_http(s3.endpoint.starts_with("http://"));
                }
                if !s3.access_key_id.is_empty() {
                    b = b.with_access_key_id(&s3.access_key_id);
                }
                if !s3.secret_access_key.is_empty() {
                    b = b.with_secret_access_key(&s3.secret_access_key);
                }
                let store = b.build().map_err(os)?;
                (
                    Arc::new(store),
                    ObjectPath::from(s3.prefix.as_str()),
                    format!("s3://{}/{}", s3.bucket, s3.prefix),
                )
            }
        };
        // Made last: a runtime dropped by an early return from async code (start-up) panics.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the object-store runtime: {e}")))?;
        let handle = runtime.handle().clone();
        Ok(Backend {
            store,
            prefix,
            runtime: Some(runtime),
            handle,
            describe,
            timeout: std::time::Duration::from_secs(30),
            local_root: match location {
                Location::Local(dir) => Some(dir.clone()),
                Location::S3(_) => None,
            },
        })
    }

    /// Whether blocks can be read: a local directory is there, a bucket answers a listing.
    pub fn check(&self) -> Result<(), StoreError> {
        if let Some(dir) = &self.local_root {
            // Made again when its parent is there (the volume came back empty).
            if !dir.exists() && dir.parent().is_some_and(Path::is_dir) {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::read_dir(dir).map_err(|e| super::super::rows::io(dir, e))?;
        }
        self.list("blocks/none").map(|_| ())
    }

    /// The full path of `key` (relative to the configured prefix).
    pub fn path(&self, key: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// `key` relative to the prefix, from a full path.
    pub fn key(&self, path: &ObjectPath) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// Runs `f` on the backend's runtime and waits for it (from any thread).
    pub fn block_on<F>(&self, f: F) -> Result<F::Output, StoreError>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let call = || self.handle.block_on(f);
        // Called from async code (start-up in `main`), blocking the caller's
        // runtime is not allowed: the call waits on a thread of its own.
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| s.spawn(call).join())
                .map_err(|_| StoreError::Backend("an object-store call panicked".into()))
        } else {
            Ok(call())
        }
    }

    fn run<T: Send>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = object_store::Result<T>> + Send,
    ) -> Result<T, StoreError> {
        let timeout = self.timeout;
        match self.block_on(async move { tokio::time::timeout(timeout, f).await })? {
            Ok(r) => r.map_err(|e| StoreError::Backend(format!("{what}: {e}"))),
            Err(_) => Err(StoreError::Backend(format!(
                "{what}: no answer within {timeout:?} from {}",
                self.describe
            ))),
        }
    }

    /// Stores the file at `from` (complete and synced) as `key`. On a local
    /// directory on the same filesystem it becomes a hard link to the file,
    /// made under a temporary name and renamed into place (no copy: reading
    /// and writing a block again was a twentieth of the collector's CPU);
    /// otherwise its bytes are read and put.
    pub fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        if let Some(to) = self.local_file(key) {
            match link_into_place(from, &to) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(key, error = %e, "blocks: linking failed, copying"),
            }
        }
        let data = std::fs::read(from).map_err(|e| super::super::rows::io(from, e))?;
        self.put(key, Bytes::from(data))
    }

    /// Where `key` is on a local directory's filesystem (keys of plain
    /// characters only, which the object store does not encode).
    fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        let plain = key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        if !plain || parts.iter().any(|p| p.starts_with('.')) {
            return None;
        }
        Some(parts.iter().fold(root.clone(), |p, part| p.join(part)))
    }

    pub fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key);
        self.run(&format!("writing {key}"), async {
            self.store.put(&path, PutPayload::from_bytes(data)).await
        })?;
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(key);
        let r = self.run(&format!("reading {key}"), async {
            match self.store.get(&path).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        Ok(r)
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        self.run(&format!("deleting {key}"), async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Keys (relative) and sizes of every object under `key_prefix`.
    pub fn list(&self, key_prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .list_with_times(key_prefix)?
            .into_iter()
            .map(|(k, size, _)| (k, size))
            .collect())
    }

    /// Keys (relative), sizes and last-modified times (µs) under `key_prefix`.
    pub fn list_with_times(&self, key_prefix: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let path = self.path(key_prefix);
        let metas = self.run(&format!("listing {key_prefix}"), async {
            let mut out = Vec::new();
            let mut s = self.store.list(Some(&path));
            while let Some(m) = s.next().await {
                out.push(m?);
            }
            Ok(out)
        })?;
        Ok(metas
            .into_iter()
            .map(|m| {
                (
                    self.key(&m.location),
                    m.size,
                    m.last_modified.timestamp_micros(),
                )
            })
            .collect())
    }

    /// A reader of byte ranges of `key` (of `size` bytes).
    pub fn reader(self: &Arc<Self>, key: &str, size: u64) -> RemoteFile {
        RemoteFile {
            backend: self.clone(),
            path: self.path(key),
            size,
        }
    }

    fn ranges(
        &self,
        path: &ObjectPath,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, StoreError> {
        let t = std::time::Instant::now();
        // Ranges less than 64 KiB apart in one request, up to 10 requests at
        // once (`object_store`'s default merges up to 1 MiB apart: a block's
        // span bodies lie between one row group's columns and the next's).
        let r = self.run(&format!("reading {path}"), async {
            object_store::coalesce_ranges(ranges, |r| self.store.get_range(path, r), 64 << 10).await
        });
        tracing::debug!(%path, ranges = ranges.len(),
            bytes = ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
            took_us = t.elapsed().as_micros() as u64, "object store read");
        r
    }

    fn range(&self, path: &ObjectPath, range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
        let (t, bytes) = (std::time::Instant::now(), range.end - range.start);
        let r = self.run(&format!("reading {path}"), async {
            self.store.get_range(path, range).await
        });
        tracing::debug!(%path, ranges = 1, bytes, took_us = t.elapsed().as_micros() as u64,
            "object store read");
        r
    }
}

/// Byte ranges of one object, read as Parquet asks for them.
#[derive(Clone)]
pub struct RemoteFile {
    backend: Arc<Backend>,
    path: ObjectPath,
    size: u64,
}

impl Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl super::format::Ranges for RemoteFile {
    /// Fetched concurrently, nearby ranges in one request (`object_store`'s coalescing).
    fn ranges(&self, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>, StoreError> {
        self.backend.ranges(&self.path, ranges)
    }
}

impl ChunkReader for RemoteFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self
            .get_bytes(start, self.size.saturating_sub(start) as usize)?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = start.saturating_add(length as u64).min(self.size);
        self.backend
            .range(&self.path, start..end)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// A hard link to `from` at `to`, made whole: linked under a temporary name
/// beside `to`, renamed over it, the directory synced.
fn link_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let name = to
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.link", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(from, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, to) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}
