//! A real Kafka-protocol broker for the tests: tansu 0.6.0 (crates.io, built
//! once per machine by `scripts/setup` into
//! `~/.cache/meshtrace/tansu-0.6.0-dynostore`), on a free port, its topics in
//! memory or, to survive a restart, in a bucket of the tests' S3 server.

use crate::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use crate::{free_port, track_child};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the broker binary is: `MESHTRACE_TANSU`, else where scripts/setup puts it.
pub fn broker_bin() -> PathBuf {
    let p = std::env::var_os("MESHTRACE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/meshtrace/tansu-0.6.0-dynostore/bin/tansu")
        });
    assert!(
        p.exists(),
        "{} is missing: scripts/setup installs it (cargo install tansu@0.6.0 --features dynostore)",
        p.display()
    );
    p
}

/// A running broker; killed on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    storage: String,
    s3_endpoint: Option<String>,
    log: PathBuf,
}

impl Broker {
    /// A broker keeping its topics in memory.
    pub fn start() -> Broker {
        Self::start_with("memory://tansu/".into(), None, free_port())
    }

    /// A broker keeping its topics in `bucket` of `s3` (they survive a restart).
    pub fn start_on_s3(s3: &S3Server, bucket: &str) -> Broker {
        Self::start_with(format!("s3://{bucket}/"), Some(s3.endpoint()), free_port())
    }

    fn start_with(storage: String, s3_endpoint: Option<String>, port: u16) -> Broker {
        let log = crate::scratch_path("kafka").with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("broker log");
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(broker_bin());
        cmd.args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        if let Some(endpoint) = &s3_endpoint {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_ENDPOINT", endpoint)
                .env("AWS_ALLOW_HTTP", "true");
        }
        let child = cmd.spawn().expect("spawn the Kafka broker");
        track_child(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not listen on {port}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker {
            child: Some(child),
            port,
            storage,
            s3_endpoint,
            log,
        }
    }

    /// `host:port`, for `kafka.brokers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(broker_bin())
            .args(["topic", "create", topic])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "creating topic {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the broker (its topics stay where they are kept).
    pub fn stop(&mut self) {
        crate::stop_child(&mut self.child);
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start_with(self.storage.clone(), self.s3_endpoint.clone(), self.port);
        *self = again;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
