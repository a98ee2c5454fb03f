//! A forwarder's queue on disk (`exporters.otlp[].queue: disk`): batches are
//! written as files (`<seq>-<spans>.otlp`, written under a temporary name and
//! renamed, so a file is whole or absent) and sent oldest first; a file is
//! removed once its batch is sent or given up on. What is still on disk when
//! the process stops — the endpoint down, the shutdown grace over — is sent
//! after the next start. In memory: the requests not yet written, the batch
//! being merged and the batches in flight.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One batch on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub bytes: u64,
    pub spans: u64,
}

pub struct Spool {
    dir: PathBuf,
    state: Mutex<State>,
    /// Told when a segment is written or writing ends.
    pub ready: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    segments: VecDeque<Segment>,
    next_seq: u64,
    writing_done: bool,
}

fn segment_of(path: &Path, bytes: u64) -> Option<(u64, Segment)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".otlp")?;
    let (seq, spans) = name.split_once('-')?;
    Some((
        seq.parse().ok()?,
        Segment {
            path: path.to_path_buf(),
            bytes,
            spans: spans.parse().ok()?,
        },
    ))
}

impl Spool {
    /// Opens (creating) `dir`: the batches a previous run left, oldest first;
    /// half-written files are removed, files that are not batches left alone
    /// — also one named like a batch but larger than `max_bytes` (the queue's
    /// bound: no batch this collector writes is larger), which is never read.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path)?;
                continue;
            }
            let bytes = entry.metadata()?.len();
            match segment_of(&path, bytes) {
                Some(_) if bytes > max_bytes => tracing::warn!(
                    path = %path.display(),
                    bytes,
                    max_bytes,
                    "disk queue: a file named like a batch is larger than the queue's bound: left alone, not sent"
                ),
                Some(s) => found.push(s),
                None => {}
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        let next_seq = found.last().map_or(0, |(seq, _)| seq + 1);
        Ok(Spool {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                segments: found.into_iter().map(|(_, s)| s).collect(),
                next_seq,
                writing_done: false,
            }),
            ready: tokio::sync::Notify::new(),
        })
    }

    /// The segments waiting now (what a previous run left, at start).
    pub fn waiting(&self) -> Vec<Segment> {
        self.state
            .lock()
            .map(|s| s.segments.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Writes a batch as the newest segment (on a blocking thread).
    pub async fn write(&self, batch: Bytes, spans: u64) -> std::io::Result<()> {
        let seq = {
            let mut s = self.state.lock().map_err(|_| poisoned())?;
            s.next_seq += 1;
            s.next_seq - 1
        };
        let path = self.dir.join(format!("{seq:016}-{spans}.otlp"));
        let tmp = path.with_extension("tmp");
        let bytes = batch.len() as u64;
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&batch)?;
            drop(f);
            std::fs::rename(&tmp, &target)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.state
            .lock()
            .map_err(|_| poisoned())?
            .segments
            .push_back(Segment { path, bytes, spans });
        self.ready.notify_one();
        Ok(())
    }

    /// No more segments will be written.
    pub fn writing_done(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.writing_done = true;
        }
        self.ready.notify_one();
    }

    /// The oldest segment, or `Err(true)` when none is left and none will
    /// come, `Err(false)` when one may come.
    pub fn pop(&self) -> Result<Segment, bool> {
        let mut s = self.state.lock().map_err(|_| true)?;
        match s.segments.pop_front() {
            Some(seg) => Ok(seg),
            None => Err(s.writing_done),
        }
    }

    /// Puts a segment back at the front (sent after the next start).
    pub fn unpop(&self, seg: Segment) {
        if let Ok(mut s) = self.state.lock() {
            s.segments.push_front(seg);
        }
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("the disk queue's state is poisoned")
}

/// A segment's batch: at most the size it had when queued (a file that grew
/// since is an error, never read whole).
pub async fn read(seg: &Segment) -> std::io::Result<Bytes> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(&seg.path).await?;
    let mut out = Vec::with_capacity(usize::try_from(seg.bytes).unwrap_or(0));
    f.take(seg.bytes.saturating_add(1))
        .read_to_end(&mut out)
        .await?;
    if out.len() as u64 > seg.bytes {
        return Err(std::io::Error::other(format!(
            "{} grew past the {} bytes it had when queued",
            seg.path.display(),
            seg.bytes
        )));
    }
    Ok(Bytes::from(out))
}

pub async fn remove(seg: &Segment) {
    if let Err(e) = tokio::fs::remove_file(&seg.path).await {
        tracing::warn!(path = %seg.path.display(), error = %e, "disk queue: a sent batch's file could not be removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn segments_come_back_in_order_after_a_restart_and_torn_files_go() {
        let dir = std::env::temp_dir().join(format!("meshtrace-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        for i in 0..12u8 {
            spool
                .write(Bytes::from(vec![i; 10 + i as usize]), u64::from(i))
                .await
                .unwrap();
        }
        let first = spool.pop().unwrap();
        assert_eq!((first.bytes, first.spans), (10, 0));
        remove(&first).await;
        // A torn write (crash before the rename) and a stranger.
        std::fs::write(dir.join("0000000000000099-5.tmp"), b"torn").unwrap();
        std::fs::write(dir.join("README"), b"not a batch").unwrap();
        // Named like a batch, larger than the queue's bound: never read.
        let huge = dir.join("0000000000000050-3.otlp");
        std::fs::write(&huge, vec![0u8; 2 << 20]).unwrap();
        drop(spool);
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let waiting = spool.waiting();
        assert_eq!(waiting.len(), 11);
        assert_eq!(
            waiting.iter().map(|s| s.spans).collect::<Vec<_>>(),
            (1..12).collect::<Vec<u64>>(),
            "oldest first, across a restart (10 sorts after 9)"
        );
        assert!(!dir.join("0000000000000099-5.tmp").exists());
        assert!(dir.join("README").exists());
        assert!(huge.exists() && waiting.iter().all(|s| s.path != huge));
        let s = spool.pop().unwrap();
        assert_eq!(read(&s).await.unwrap(), Bytes::from(vec![1u8; 11]));
        // A segment that grew after it was queued is not read whole.
        let grown = spool.pop().unwrap();
        std::fs::write(&grown.path, vec![0u8; 4096]).unwrap();
        let e = read(&grown).await.unwrap_err();
        assert!(e.to_string().contains("grew past"), "{e}");
        spool.unpop(grown);
        // New segments go after what was left.
        spool.write(Bytes::from_static(b"new"), 7).await.unwrap();
        assert_eq!(spool.waiting().last().map(|s| s.spans), Some(7));
        assert_eq!(spool.waiting().len(), 11);
        while spool.pop().is_ok() {}
        assert_eq!(spool.pop(), Err(false));
        spool.writing_done();
        assert_eq!(spool.pop(), Err(true));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
