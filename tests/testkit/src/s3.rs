//! A real S3-compatible server for the tests: s3s-fs's S3 implementation
//! (crates.io 0.14.1) as `meshtrace-s3-server` (`tests/s3-server`, built once
//! per machine by `scripts/setup`; the stock `s3s-fs` binary lacks
//! `TCP_NODELAY`), serving a directory over the S3 protocol on a free port.
//! Each bucket is a directory under its root.

use crate::{free_port, track_child};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "meshtrace-test";
pub const SECRET_KEY: &str = "meshtrace-test-secret";

const BIN: &str = "meshtrace-s3-server";

/// Where the server binary is: on `PATH`, else in cargo's bin directory.
pub fn server_bin() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_default();
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(BIN))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain(std::iter::once(cargo_home.join("bin").join(BIN)))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{BIN} is missing: scripts/setup installs it (cargo install --locked --path tests/s3-server)")
        })
}

/// A running server; stopped (killed) on drop. Its root stays until `remove`.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    log: PathBuf,
}

impl S3Server {
    /// Starts a server on a fresh root with `bucket` created.
    pub fn start(bucket: &str) -> S3Server {
        let root = crate::scratch_path("s3");
        std::fs::create_dir_all(root.join(bucket)).expect("bucket directory");
        Self::start_on(root, free_port())
    }

    /// Starts a server on `root` (buckets already there) and `port`.
    pub fn start_on(root: PathBuf, port: u16) -> S3Server {
        let log = root.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("s3 log");
        let child = Command::new(server_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn the S3 server");
        track_child(child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the S3 server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child: Some(child),
            port,
            root,
            log,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The collector configuration (`store:` section) for `bucket/prefix` here.
    pub fn store_yaml(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "store:\n  engine: blocks\n  blocks:\n    backend: s3://{bucket}/{prefix}\n    s3:\n      endpoint: {}\n      region: us-east-1\n      access_key_id: {ACCESS_KEY}\n      secret_access_key: {SECRET_KEY}\n",
            self.endpoint()
        )
    }

    /// Kills the server (the bucket's files stay); `restart` brings it back on the same port.
    pub fn stop(&mut self) {
        crate::stop_child(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(self.root.clone(), self.port);
        *self = again;
    }

    /// Files under the root whose path ends with `suffix`.
    pub fn objects_ending(&self, suffix: &str) -> Vec<PathBuf> {
        fn walk(d: &std::path::Path, suffix: &str, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, suffix, out);
                } else if p.to_string_lossy().ends_with(suffix) {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, suffix, &mut out);
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
