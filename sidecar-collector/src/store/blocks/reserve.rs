//! Space set aside on the WAL's disk (CockroachDB's "emergency ballast"): a file
//! of `bytes` the engine deletes when the disk is full and sealed heads cannot be
//! cut, so the WAL turns into blocks (several times smaller) and its segments are
//! released. Without it a collector killed on a full disk could only serve reads:
//! cutting needs space, and only cutting frees the WAL's. Made again once the disk
//! has room for it three times over.

use std::path::{Path, PathBuf};

/// The reserve: `store.blocks.reserve_bytes`, by default 1% of the volume
/// between 64 KiB and 256 MiB, and no more than a quarter of a full head (what
/// cutting one takes: its block, about an eighth of the head, written twice —
/// pending, then uploaded to a local backend); none when 0.
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

const MIN_BYTES: u64 = 64 << 10;
const MAX_BYTES: u64 = 256 << 20;

/// (total, available to this process) bytes of the volume holding `dir`.
fn space(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}

impl Reserve {
    /// The reserve of the volume holding `dir` (made by [`Reserve::refill`]):
    /// `bytes`, or the default for heads of `head_bytes` when `None`.
    pub fn new(dir: &Path, bytes: Option<u64>, head_bytes: u64) -> Reserve {
        let bytes = bytes.unwrap_or_else(|| {
            space(dir)
                .map(|(total, _)| (total / 100).clamp(MIN_BYTES, MAX_BYTES))
                .unwrap_or(MIN_BYTES)
                .min((head_bytes / 4).max(MIN_BYTES))
        });
        if bytes == 0 {
            // None kept: a file left by an earlier configuration goes.
            let _ = std::fs::remove_file(dir.join("reserve"));
        }
        Reserve {
            path: dir.join("reserve"),
            bytes,
        }
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the file is in place.
    pub fn held(&self) -> bool {
        self.bytes > 0 && self.path.metadata().is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Makes the file if it is missing and the disk has room for it three times
    /// over; true if it is in place afterwards. Best effort: a failure leaves no file.
    pub fn refill(&self) -> bool {
        if self.bytes == 0 || self.held() {
            return self.bytes > 0;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if space(dir).is_none_or(|(_, free)| free < self.bytes.saturating_mul(3)) {
            return false;
        }
        let made = std::fs::File::create(&self.path).and_then(|f| {
            // Blocks allocated, not a sparse file: the space is really taken.
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, self.bytes)
                .map_err(std::io::Error::from)
                .or_else(|_| {
                    use std::io::Write;
                    let zeros = vec![0u8; 64 << 10];
                    let mut w = std::io::BufWriter::new(&f);
                    let mut left = self.bytes;
                    while left > 0 {
                        let n = left.min(zeros.len() as u64) as usize;
                        w.write_all(&zeros[..n])?;
                        left -= n as u64;
                    }
                    w.flush()
                })?;
            f.sync_all()
        });
        if made.is_err() {
            let _ = std::fs::remove_file(&self.path);
            return false;
        }
        true
    }

    /// Deletes the file when the disk is full (less free than the reserve's size):
    /// its space goes to cutting. True if it did.
    pub fn release(&self) -> bool {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let full = space(dir).is_none_or(|(_, free)| free < self.bytes);
        full && self.held() && std::fs::remove_file(&self.path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_takes_real_space_and_is_released_only_on_a_full_disk() {
        let dir = std::env::temp_dir().join(format!("meshtrace-reserve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Reserve::new(&dir, None, 128 << 20);
        assert!(r.bytes() <= 32 << 20, "a quarter of the head at most");
        assert!((MIN_BYTES..=MAX_BYTES).contains(&r.bytes()));
        assert!(r.refill());
        assert!(r.held());
        let (_, before) = space(&dir).unwrap();
        assert!(
            before > r.bytes(),
            "this disk has room, so the reserve is not released"
        );
        assert!(!r.release(), "released only when the disk is full");
        assert!(r.held());
        // Allocated, not sparse.
        let meta = std::fs::metadata(dir.join("reserve")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= r.bytes(), "{} blocks", meta.blocks());
        // Configured: its size; 0: none, and the file left before goes.
        assert_eq!(Reserve::new(&dir, Some(100_000), 1).bytes(), 100_000);
        let off = Reserve::new(&dir, Some(0), 1);
        assert!(!dir.join("reserve").exists());
        assert!(!off.refill() && !off.held() && !off.release());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
