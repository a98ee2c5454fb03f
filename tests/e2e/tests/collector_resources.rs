//! No hung resources: file descriptors stay bounded whatever a request spans,
//! and `/readyz` tells Kubernetes when the store can neither be written nor read.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{Collector, Opts};
use meshtrace_testkit::otlp::{now_ns, request};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const DAY_NS: u64 = 86_400_000_000_000;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn span_on_day(trace: u64, day: u64) -> Span {
    let start = now_ns() - day * DAY_NS;
    let mut tid = [0u8; 16];
    tid[..8].copy_from_slice(&trace.to_be_bytes());
    tid[8..].copy_from_slice(&day.to_be_bytes());
    Span {
        trace_id: tid.to_vec(),
        span_id: (day + 1).to_be_bytes().to_vec(),
        name: "op".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        ..Default::default()
    }
}

#[test]
fn a_request_over_a_thousand_days_keeps_file_descriptors_bounded() {
    // Ten years are accepted here, so one request touches 1,000 day partitions.
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("collector"),
        Opts {
            yaml: Some(
                // Creating 1,000 partitions, each fsynced, takes ~10 s in a debug build on
                // a busy disk: the request may take longer than the default 10 s timeout.
                "retention: 3650d\nmax_span_age: 3650d\nstore:\n  max_open_partitions: 8\n  partition_idle_timeout: 1s\n  health_interval: 200ms\nserver:\n  request_timeout: 120s\n".into(),
            ),
            ..Opts::default()
        },
    );
    let pid = c.child.id();
    let before = open_fds(pid);
    let spans = (0..1000).map(|d| span_on_day(1, d)).collect();
    let body = request("many-days", spans).encode_to_vec();
    assert_eq!(c.post_otlp(&body), 200, "{}", c.log());
    let after = open_fds(pid);
    eprintln!("open file descriptors: {before} before, {after} after 1,000 days written");
    // 8 writer partitions of 3 files each (db, wal, shm) at most, plus readers' pool later.
    assert!(
        after <= before + 8 * 3 + 4,
        "partitions left open: {before} -> {after}"
    );
    // Every day is still readable, and the pools stay bounded after reading them all
    // (the health check may hold one more fresh reader meanwhile).
    let (status, body) = c.get("/api/services");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("many-days"), "{body}");
    let id = format!("{:016x}{:016x}", 1u64, 999u64);
    let (status, body) = c.get(&format!("/api/traces/{id}"));
    assert_eq!(status, 200, "{body}");
    let reading = open_fds(pid);
    eprintln!("after reading every partition: {reading}");
    assert!(
        reading <= before + 8 * 3 + 32 * 3 + 24,
        "read connections left open: {reading}"
    );
    // Idle partitions are closed (store.partition_idle_timeout, 1 s here).
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) > before + 2 {
        assert!(
            Instant::now() < deadline,
            "idle partitions never closed: {} fds",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("after the idle timeout: {}", open_fds(pid));
    // And reopened on demand.
    let (status, body) = c.get(&format!("/api/traces/{id}"));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn readyz_fails_when_the_store_can_neither_be_written_nor_read() {
    let data = meshtrace_testkit::scratch_path("collector");
    let c = Collector::start_opts(
        data.clone(),
        Opts {
            yaml: Some("store:\n  health_interval: 200ms\n".into()),
            ..Opts::default()
        },
    );
    let spans = vec![span_on_day(2, 0)];
    assert_eq!(
        c.post_otlp(&request("s", spans).encode_to_vec()),
        200,
        "{}",
        c.log()
    );
    assert_eq!(c.get("/readyz").0, 200);
    // The volume goes away: nothing can be written or read.
    std::fs::remove_dir_all(&data).unwrap();
    let wait_for = |want: u16| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = c.get("/readyz");
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let reason = wait_for(503);
    assert!(
        reason.contains("neither be written") && reason.contains(data.to_str().unwrap()),
        "{reason}"
    );
    assert_eq!(
        meshtrace_testkit::collector::get(c.otlp_port, "/readyz").0,
        503,
        "every port's /readyz"
    );
    assert_eq!(
        c.get("/healthz").0,
        200,
        "alive: not a restart, out of rotation"
    );
    // It comes back (empty): ready again, and what is written then is stored and found.
    std::fs::create_dir_all(&data).unwrap();
    wait_for(200);
    let spans = vec![span_on_day(3, 0)];
    let trace = meshtrace_testkit::otlp_receiver::hex(&spans[0].trace_id);
    assert_eq!(
        c.post_otlp(&request("s", spans).encode_to_vec()),
        200,
        "{}",
        c.log()
    );
    let (status, body) = c.get(&format!("/api/traces/{trace}"));
    assert_eq!(status, 200, "{body}\n{}", c.log());
}

/// Short limits, so the test sees them act.
const SHORT_LIMITS: &str = "server:\n  max_connections: 50\n  header_timeout: 1s\n  idle_timeout: 2s\n  request_timeout: 2s\n";

/// True once the server has closed `s` (EOF or reset), waiting up to `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. 408) before the close
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn grpc_export_ok(c: &Collector) -> bool {
    let body = request("grpc-ok", vec![span_on_day(9, 0)]).encode_to_vec();
    let (status, message, _) = meshtrace_testkit::collector::grpc_raw(
        c.grpc_port,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        &body,
    );
    if status != "OK" {
        eprintln!("gRPC export: {status} {message}");
    }
    status == "OK"
}

#[test]
fn slowloris_connections_are_capped_and_cut_off_and_other_clients_keep_working() {
    // A 1,024 open-files limit, as in the finding: 2,000 slow clients must not
    // starve the other listeners of file descriptors.
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("collector"),
        Opts {
            yaml: Some(SHORT_LIMITS.into()),
            wrapper: vec!["prlimit".into(), "--nofile=1024:1024".into(), "--".into()],
            ..Opts::default()
        },
    );
    let pid = c.child.id();
    let before = open_fds(pid);
    let mut slow = Vec::new();
    for _ in 0..2000 {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", c.otlp_port)) else {
            continue;
        };
        // An unfinished request head, never completed.
        let _ = s.write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n");
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let during = open_fds(pid);
    eprintln!(
        "open fds: {before} before, {during} with {} slow clients",
        slow.len()
    );
    assert!(
        during <= before + 50 + 10,
        "connections over the limit held: {during}"
    );
    // Other listeners are untouched: query, metrics, gRPC ingest.
    assert_eq!(c.get("/api/services").0, 200);
    assert!(
        grpc_export_ok(&c),
        "gRPC ingest during the flood:\n{}",
        c.log()
    );
    // Every slow client is cut off within the header timeout (1 s; generous bound).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut still_open = 0;
    for s in &mut slow {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        if !closed_by_server(s, left) {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "slow clients held past the header timeout");
    drop(slow);
    // The OTLP/HTTP port serves again.
    let body = request("after-flood", vec![span_on_day(10, 0)]).encode_to_vec();
    assert_eq!(c.post_otlp(&body), 200, "{}", c.log());
    let m = c.get("/metrics").1;
    let refused = metric_with(
        &m,
        "meshtrace_collector_connections_refused_total",
        "otlp.http_listen",
    );
    let header = metric_with(
        &m,
        "meshtrace_collector_connections_timed_out_total",
        "reason=\"header\"",
    );
    eprintln!("refused {refused}, cut off at the header timeout {header}");
    assert!(refused >= 1000, "{m}");
    assert!(header >= 40, "{m}");
}

/// The value of the first series of `name` whose line contains `needle`.
fn metric_with(text: &str, name: &str, needle: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn idle_silent_and_trickling_clients_are_timed_out() {
    let c = Collector::start_opts(
        meshtrace_testkit::scratch_path("collector"),
        Opts {
            yaml: Some(SHORT_LIMITS.into()),
            ..Opts::default()
        },
    );
    // Silent: connected to the gRPC port, never a byte (no HTTP/2 preface).
    let mut silent = TcpStream::connect(("127.0.0.1", c.grpc_port)).unwrap();
    // Idle: one request on a keep-alive connection, then nothing.
    let mut idle = TcpStream::connect(("127.0.0.1", c.query_port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: q\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Trickling: a complete head, then a body that never finishes.
    let mut trickle = TcpStream::connect(("127.0.0.1", c.otlp_port)).unwrap();
    trickle
        .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 1000\r\n\r\n0123456789")
        .unwrap();
    let t0 = Instant::now();
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(30)),
        "silent gRPC client held"
    );
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(30)),
        "idle keep-alive held"
    );
    trickle
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = trickle.read_to_string(&mut answer);
    eprintln!("all three ended after {:?}", t0.elapsed());
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("request_timeout")
            && answer.to_lowercase().contains("retry-after: 1"),
        "a trickling body gets a retryable 503 naming the limit: {answer:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "not before the timeouts"
    );
    let m = c.get("/metrics").1;
    for reason in ["header", "idle", "request"] {
        assert!(
            metric_with(
                &m,
                "meshtrace_collector_connections_timed_out_total",
                &format!("reason=\"{reason}\"")
            ) >= 1,
            "{reason}: {m}"
        );
    }
    // Well-behaved clients are unaffected.
    assert_eq!(c.get("/api/services").0, 200);
}
