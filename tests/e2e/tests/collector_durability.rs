//! Nothing acknowledged is lost: send under load, SIGKILL the collector,
//! restart it on the same data directory, find every acknowledged span.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use meshtrace_proto::prost::Message;
use meshtrace_testkit::collector::{post_otlp, Collector};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Large requests and several senders keep the writer busy inside big commits, so a
// kill lands mid-commit: acknowledging before the commit would lose spans here.
const SPANS_PER_TRACE: usize = 100;

fn trace_request(cycle: u8, thread: u8, seq: u32) -> ([u8; 16], Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    trace_request_at(cycle, thread, seq, now)
}

/// A trace of `SPANS_PER_TRACE` spans starting at `now` (ns).
fn trace_request_at(cycle: u8, thread: u8, seq: u32, now: u64) -> ([u8; 16], Vec<u8>) {
    let mut tid = [0u8; 16];
    tid[0] = 0xd0 | thread;
    tid[1] = cycle;
    tid[12..].copy_from_slice(&seq.to_be_bytes());
    let spans = (0..SPANS_PER_TRACE)
        .map(|i| Span {
            trace_id: tid.to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("op{}", i % 3),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: (0..10)
                .map(|k| KeyValue {
                    key: format!("attr{k}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("value-{k}-{seq}"))),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("load".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (tid, req.encode_to_vec())
}

/// Sends from 6 threads until the collector dies; returns the acknowledged trace ids.
fn load_until_killed(collector: Collector, cycle: u8) -> (std::path::PathBuf, Vec<[u8; 16]>) {
    load_until_stopped(collector, cycle, |c| c.kill_keep_data())
}

fn load_until_stopped(
    collector: Collector,
    cycle: u8,
    stop_it: impl FnOnce(Collector) -> std::path::PathBuf,
) -> (std::path::PathBuf, Vec<[u8; 16]>) {
    let port = collector.otlp_port;
    let acked: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..6u8)
        .map(|t| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let (tid, body) = trace_request(cycle, t, seq);
                    match post_otlp(port, &body) {
                        200 => acked.lock().unwrap().push(tid),
                        0 => break, // the collector is gone
                        _ => {}     // 503: not acknowledged, not counted
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    let data_dir = stop_it(collector);
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    (data_dir, acked)
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    // Three kill/restart cycles: each SIGKILL lands at a random point of the
    // write path, so the cycles together cover commits in progress.
    let mut acked = Vec::new();
    let (mut dir, first) = load_until_killed(Collector::start(), 0);
    acked.extend(first);
    for cycle in 1..3u8 {
        let (d, more) = load_until_killed(Collector::start_in(dir), cycle);
        dir = d;
        acked.extend(more);
    }
    assert!(
        acked.len() > 50,
        "too little load to mean anything: {} traces",
        acked.len()
    );

    assert_all_stored(dir, &acked);
}

/// Restarts on `dir` and checks every acknowledged trace is there, whole.
fn assert_all_stored(dir: std::path::PathBuf, acked: &[[u8; 16]]) {
    let restarted = Collector::start_in(dir);
    let mut missing = 0;
    for chunk in acked.chunks(100) {
        let q: Vec<String> = chunk
            .iter()
            .map(|t| {
                format!(
                    "traceID={}",
                    t.iter().map(|b| format!("{b:02x}")).collect::<String>()
                )
            })
            .collect();
        let (status, body) = restarted.get(&format!("/api/traces?{}", q.join("&")));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let traces = v["data"].as_array().unwrap();
        for t in traces {
            assert_eq!(
                t["spans"].as_array().unwrap().len(),
                SPANS_PER_TRACE,
                "a trace lost spans"
            );
        }
        if traces.len() < chunk.len() {
            let found: Vec<String> = traces
                .iter()
                .map(|t| t["traceID"].as_str().unwrap_or_default().to_string())
                .collect();
            eprintln!("found {found:?} of {q:?}");
        }
        missing += chunk.len() - traces.len();
    }
    eprintln!(
        "acknowledged {} traces ({} spans) before the stop; missing after restart: {missing}",
        acked.len(),
        acked.len() * SPANS_PER_TRACE
    );
    assert_eq!(
        missing,
        0,
        "acknowledged traces lost; the last collector's log:\n{}",
        restarted.log()
    );
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut status = None;
    let mut log = String::new();
    let (dir, acked) = load_until_stopped(Collector::start(), 9, |c| {
        let (st, dir, l) = c.terminate_keep_data();
        status = Some(st);
        log = l;
        dir
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}\n{log}"
    );
    assert!(log.contains("draining") && log.contains("stopped"), "{log}");
    assert!(acked.len() > 10, "too little load: {}", acked.len());
    assert_all_stored(dir, &acked);
}

/// A tmpfs of a given size, unmounted on drop (needs root, which these machines give).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(options: &str) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!(
            "meshtrace-small-disk-{}",
            meshtrace_testkit::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill the disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }

    fn resize(&self, size: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// POSTs one request; (status, Retry-After, body).
fn export(port: u16, body: &[u8]) -> (u16, Option<String>, String) {
    let m = meshtrace_testkit::collector::post(port, "application/x-protobuf", &[], body)
        .expect("the collector answers");
    (
        m.status(),
        m.header("retry-after"),
        String::from_utf8_lossy(&m.body).into_owned(),
    )
}

#[test]
fn disk_full_refuses_with_retry_and_loses_nothing_acknowledged() {
    let disk = SmallDisk::mount("size=3m");
    let data = disk.0.join("data");
    let collector = Collector::start_in(data.clone());
    let port = collector.otlp_port;

    // Fill the disk: every answer is either 200 (stored) or a retryable refusal.
    let mut acked = Vec::new();
    let mut refusals = 0;
    let mut seq = 0u32;
    while refusals < 5 {
        assert!(seq < 2000, "3 MB never filled up");
        let (tid, body) = trace_request(7, 0, seq);
        seq += 1;
        let (status, retry_after, text) = export(port, &body);
        match status {
            200 => acked.push(tid),
            503 => {
                if refusals == 0 {
                    eprintln!("disk full after {} traces: 503 {text}", acked.len());
                }
                refusals += 1;
                assert_eq!(retry_after.as_deref(), Some("1"), "retryable: {text}");
                assert!(
                    text.contains("full"),
                    "the refusal says why (disk full): {text}"
                );
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert!(acked.len() > 5, "some traces fit before the disk filled");
    assert_eq!(collector.get("/healthz").0, 200, "still alive");
    // The query API still answers from what is stored.
    let (status, _) = collector.get("/api/services");
    assert_eq!(status, 200);
    let metrics = collector.get("/metrics").1;
    assert!(
        meshtrace_testkit::collector::metric(&metrics, "meshtrace_collector_spans_refused_total")
            > 0,
        "{metrics}"
    );

    // Space comes back: ingest resumes without a restart.
    disk.resize("64m");
    let mut resumed = false;
    for _ in 0..50 {
        let (tid, body) = trace_request(7, 1, seq);
        seq += 1;
        if export(port, &body).0 == 200 {
            acked.push(tid);
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        resumed,
        "ingest resumed once space was freed:\n{}",
        collector.log()
    );
    for _ in 0..20 {
        let (tid, body) = trace_request(7, 2, seq);
        seq += 1;
        assert_eq!(export(port, &body).0, 200);
        acked.push(tid);
    }
    let dir = collector.kill_keep_data();
    assert_all_stored(dir, &acked);
}

#[test]
fn read_only_data_dir_is_a_clear_start_up_error() {
    let disk = SmallDisk::mount("size=1m,ro");
    let data = disk.0.join("data");
    let (held, a) = meshtrace_testkit::collector::hold_ports(3);
    let out = meshtrace_testkit::collector::command()
        .arg("--data-dir")
        .arg(&data)
        .args(["--otlp-grpc-listen", &a[0], "--otlp-http-listen", &a[1]])
        .args(["--query-listen", &a[2]])
        .output()
        .unwrap();
    drop(held);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("data_dir") && text.contains(data.to_str().unwrap()),
        "names the directory: {text}"
    );
    assert!(
        text.to_lowercase().contains("read-only"),
        "says why: {text}"
    );
}

fn hex(t: &[u8; 16]) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn full_disk_restart_serves_queries_and_retention_frees_space() {
    let disk = SmallDisk::mount("size=3m");
    let data = disk.0.join("data");
    // Spans ten days old are accepted here (max_span_age), so they fill the disk.
    let keep_30d = "retention: 30d\nmax_span_age: 30d\n";
    let collector = Collector::start_opts(
        data.clone(),
        meshtrace_testkit::collector::Opts {
            yaml: Some(keep_30d.into()),
            ..Default::default()
        },
    );
    let port = collector.otlp_port;
    let mut recent = Vec::new();
    for seq in 0..5 {
        let (tid, body) = trace_request(8, 0, seq);
        assert_eq!(export(port, &body).0, 200);
        recent.push(tid);
    }
    let ten_days_ago = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
        - Duration::from_secs(10 * 86_400))
    .as_nanos() as u64;
    let mut seq = 0;
    loop {
        assert!(seq < 2000, "3 MB never filled up");
        let (_, body) = trace_request_at(8, 1, seq, ten_days_ago);
        seq += 1;
        let (status, _, text) = export(port, &body);
        if status == 503 {
            assert!(text.contains("full"), "{text}");
            break;
        }
        assert_eq!(status, 200, "{text}");
    }
    eprintln!("disk full after {seq} old traces");
    let data = collector.kill_keep_data();

    // Killed on a full disk, it starts again: queries work, ingest is refused (retryably).
    // The blocks engine may have found space by then: pending blocks of the killed process
    // are deleted at the start, and its reserve (1% of the volume, kept free for this)
    // lets it cut the WAL into blocks several times smaller.
    let restarted = Collector::start_opts(
        data.clone(),
        meshtrace_testkit::collector::Opts {
            yaml: Some(keep_30d.into()),
            ..Default::default()
        },
    );
    assert_eq!(restarted.get("/readyz").0, 200, "{}", restarted.log());
    let (status, body) = restarted.get(&format!("/api/traces/{}", hex(&recent[0])));
    assert_eq!(status, 200, "queries are served on a full disk: {body}");
    assert!(body.contains(&hex(&recent[0])), "{body}");
    let (tid, body) = trace_request(8, 2, 0);
    let (status, retry_after, text) = export(restarted.otlp_port, &body);
    let reserve_used = restarted.log().contains("the space set aside is used");
    eprintln!("after the restart: {status}, the reserve used: {reserve_used}");
    if status == 200 && meshtrace_testkit::collector::store_engine() == "blocks" {
        recent.push(tid);
    } else {
        assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{text}");
        assert!(text.contains("full"), "the refusal says why: {text}");
    }
    let data = restarted.kill_keep_data();

    // With a 5-day retention, the pass at start-up drops the old days: space returns.
    let freed = Collector::start_opts(
        data,
        meshtrace_testkit::collector::Opts {
            yaml: Some("retention: 5d\n".into()),
            ..Default::default()
        },
    );
    let mut stored = false;
    for seq in 0..100 {
        let (tid, body) = trace_request(8, 3, seq);
        if export(freed.otlp_port, &body).0 == 200 {
            recent.push(tid);
            stored = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stored, "retention freed space:\n{}", freed.log());
    // Retention's pass at start-up logs what it dropped; the space the last
    // collector's reserve gave back can take a trace before that line is out.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !freed.log().contains("retention dropped partitions") {
        assert!(std::time::Instant::now() < deadline, "{}", freed.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = freed.kill_keep_data();
    assert_all_stored(dir, &recent);
}

/// The syscalls of the collector while `f` runs: (thread, line) of every fsync,
/// fdatasync and write to a socket, with file descriptors resolved (`strace -f -yy`).
fn strace_during(pid: u32, f: impl FnOnce()) -> Vec<String> {
    let out = std::env::temp_dir().join(format!("meshtrace-strace-{pid}.txt"));
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-yy", "-s", "16", "-qq"])
        .args(["-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg"])
        .arg("-o")
        .arg(&out)
        .arg("-p")
        .arg(pid.to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace is installed by scripts/setup");
    // Attached once every thread is traced: wait for the output file to exist.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !out.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "strace never attached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    f();
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::process::Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    text.lines().map(str::to_string).collect()
}

/// For each OTLP answer written to a socket on `port`: was a WAL fsync completed
/// since the previous answer?
fn fsync_before_each_answer(lines: &[String], port: u16) -> Vec<bool> {
    let local = format!("127.0.0.1:{port}->");
    let mut synced = false;
    // Threads with a WAL fsync started but not finished (strace splits those lines).
    let mut wal_sync_in_progress = std::collections::HashSet::new();
    let mut answers = Vec::new();
    for l in lines {
        let pid = l.split_whitespace().next().unwrap_or("");
        let is_sync_call = l.contains("fsync(") || l.contains("fdatasync(");
        // SQLite's `…db-wal`, the blocks engine's `wal/….wal`.
        if is_sync_call && (l.contains("-wal>") || l.contains(".wal>")) {
            if l.contains("<unfinished") {
                wal_sync_in_progress.insert(pid.to_string());
            } else {
                synced = true;
            }
        } else if l.contains("sync resumed>") {
            if wal_sync_in_progress.remove(pid) {
                synced = true;
            }
        } else if !is_sync_call && l.contains(&local) && l.contains("HTTP/1.1 200") {
            answers.push(synced);
            synced = false;
        }
    }
    answers
}

#[test]
fn acknowledged_means_fsynced() {
    for (durability, expect_all) in [("fsync", true), ("os", false)] {
        let c = Collector::start_opts(
            meshtrace_testkit::scratch_path("collector"),
            meshtrace_testkit::collector::Opts {
                yaml: Some(format!("store:\n  durability: {durability}\n")),
                ..Default::default()
            },
        );
        let port = c.otlp_port;
        let lines = strace_during(c.child.id(), || {
            for seq in 0..20 {
                let (_, body) = trace_request(10, 0, seq);
                assert_eq!(export(port, &body).0, 200);
            }
        });
        let answers = fsync_before_each_answer(&lines, port);
        eprintln!(
            "durability {durability}: {} answers, {} after a WAL fsync",
            answers.len(),
            answers.iter().filter(|a| **a).count()
        );
        assert_eq!(
            answers.len(),
            20,
            "every answer seen:\n{}",
            lines.join("\n")
        );
        if expect_all {
            assert!(
                answers.iter().all(|a| *a),
                "each acknowledgement follows an fsync of the WAL:\n{}",
                lines.join("\n")
            );
        } else {
            assert!(
                answers.iter().any(|a| !*a),
                "os durability answers without waiting for an fsync (the check can tell)"
            );
        }
    }
}
