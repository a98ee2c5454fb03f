//! No hung resources: file descriptors stay bounded whatever a request spans,
//! and `/readyz` tells Kubernetes when the store can neither be written nor read.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{Collector, Opts};
use meshtrace_testkit::otlp::{now_ns, request};
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
                "retention: 3650d\nmax_span_age: 3650d\nstore:\n  max_open_partitions: 8\n".into(),
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
    // Every day is still readable, and the pools stay bounded after reading them all.
    let (status, body) = c.get("/api/services");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("many-days"), "{body}");
    let id = format!("{:016x}{:016x}", 1u64, 999u64);
    let (status, body) = c.get(&format!("/api/traces/{id}"));
    assert_eq!(status, 200, "{body}");
    let reading = open_fds(pid);
    eprintln!("after reading every partition: {reading}");
    assert!(
        reading <= before + 8 * 3 + 32 * 3 + 4,
        "read connections left open: {reading}"
    );
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
    // It comes back.
    std::fs::create_dir_all(&data).unwrap();
    wait_for(200);
}
