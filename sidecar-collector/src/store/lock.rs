//! A data directory is held by one collector at a time: two processes writing
//! one store (the same SQLite files, the same WAL segments) corrupt it, and the
//! second one started without a word. The holder keeps an exclusive lock
//! (`flock`) on the empty file `LOCK` in the directory for as long as it runs;
//! a second process fails at once naming the holder's PID, which the kernel
//! lists with the lock in `/proc/locks` (the file stays empty: writing the PID
//! into it took a page of a full disk, the one a collector restarted on a full
//! disk needed to cut its WAL). The kernel releases the lock when the holder
//! exits, however it exits, so a crashed collector never leaves a directory held.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why a data directory could not be held.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "data_dir {dir} is in use by another meshtrace collector ({holder}); \
         stop it, or give this one another data_dir"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("data_dir {dir}: {what}: {source}")]
    Io {
        dir: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or exiting) releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Holds `dir` (created when missing) for this process, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |what| {
            let dir = dir.to_path_buf();
            move |source| LockError::Io { dir, what, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating it"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io("opening its LOCK file"))?;
        use rustix::fs::{flock, FlockOperation};
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let holder = file
                    .metadata()
                    .ok()
                    .and_then(|m| holder_pid(m.dev(), m.ino()))
                    .map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"));
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(e) => return Err(io("locking its LOCK file")(e.into())),
        }
        Ok(DirLock { _file: file })
    }
}

/// The PID holding a `flock` on the file `ino` of device `dev`, from
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 4242 fd:01:1835023 0 EOF`).
fn holder_pid(dev: u64, ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line has "->" after the number: not the holder.
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let (ma, mi, i) = (id.next()?, id.next()?, id.next()?);
        (u32::from_str_radix(ma, 16).ok()? == major
            && u32::from_str_radix(mi, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino)
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_names_its_holder_and_is_free_again_once_released() {
        let dir = std::env::temp_dir().join(format!("meshtrace-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = DirLock::acquire(&dir.join("data")).expect("first holder");
        // Another open file description is another holder, in this process too.
        let err = DirLock::acquire(&dir.join("data")).expect_err("held");
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("data_dir"),
            "{text}"
        );
        assert!(
            text.contains(&dir.join("data").display().to_string()),
            "{text}"
        );
        drop(held);
        let again = DirLock::acquire(&dir.join("data")).expect("free once released");
        drop(again);
        // A path that cannot be a directory says what failed and where.
        std::fs::write(dir.join("file"), b"x").expect("write");
        let err = DirLock::acquire(&dir.join("file")).expect_err("not a directory");
        assert!(err.to_string().contains("creating it"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
