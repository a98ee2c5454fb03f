//! A memory cgroup sized like a Kubernetes memory limit, for running the real
//! collector under it (needs root and the cgroup v1 memory controller or
//! cgroup v2, which these machines have; the tests skip with the reason
//! where neither can be created).

use std::path::PathBuf;

pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// Creates `/sys/fs/cgroup/memory/<name>` (v1) or `/sys/fs/cgroup/<name>` (v2)
    /// limited to `limit_bytes`, swap included; the reason if it cannot.
    pub fn create(name: &str, limit_bytes: u64) -> Result<MemoryCgroup, String> {
        let name = format!("{name}-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), false)
        } else if PathBuf::from("/sys/fs/cgroup/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup").join(&name), true)
        } else {
            return Err("no memory cgroup controller under /sys/fs/cgroup".into());
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {} (root needed): {e}", dir.display()))?;
        let cg = MemoryCgroup { dir, v2 };
        let limit = limit_bytes.to_string();
        if v2 {
            cg.write("memory.max", &limit)?;
            let _ = cg.write("memory.swap.max", "0");
        } else {
            cg.write("memory.limit_in_bytes", &limit)?;
            // Swap counts too where the kernel accounts it.
            let _ = cg.write("memory.memsw.limit_in_bytes", &limit);
        }
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|e| format!("writing {value} to {}: {e}", self.dir.join(file).display()))
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// A command prefix that moves itself into this cgroup, then execs the
    /// program that follows (for `collector::Opts::wrapper`).
    pub fn wrapper(&self) -> Vec<String> {
        let procs = self.dir.join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$0\" \"$@\"", procs.display()),
        ]
    }

    /// Highest memory use seen (page cache included), bytes.
    pub fn peak_bytes(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file).trim().parse().unwrap_or(0)
    }

    /// Processes the kernel killed for memory in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone; retried briefly.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
