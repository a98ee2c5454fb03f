//! Start-up errors of the collector binary: each names the problem and exits non-zero.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = meshtrace_testkit::collector::command()
        .args(args)
        .output()
        .expect("run collector");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

fn free() -> String {
    format!("127.0.0.1:{}", meshtrace_testkit::free_port())
}

#[test]
fn startup_errors_name_the_problem() {
    let dir = std::env::temp_dir().join(format!("meshtrace-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let (g, h, q) = (free(), free(), free());
    let ports = [
        "--otlp-grpc-listen",
        &g,
        "--otlp-http-listen",
        &h,
        "--query-listen",
        &q,
    ];

    // A data directory that cannot be created: reported before any port is bound
    // (the ports given are held here, so binding first would report them instead).
    let (held, a) = meshtrace_testkit::collector::hold_ports(3);
    let (code, out) = run(&[
        "--data-dir",
        "/proc/meshtrace-cannot-exist",
        "--otlp-grpc-listen",
        &a[0],
        "--otlp-http-listen",
        &a[1],
        "--query-listen",
        &a[2],
    ]);
    assert_ne!(code, 0);
    assert!(
        out.contains("data_dir") && out.contains("/proc/meshtrace-cannot-exist"),
        "{out}"
    );
    drop(held);

    // Unknown key in the file.
    let cfg = dir.join("bad.yaml");
    std::fs::write(&cfg, "retension: 7d\n").unwrap();
    let mut args = vec!["--data-dir", d, "--config", cfg.to_str().unwrap()];
    args.extend(ports);
    let (code, out) = run(&args);
    assert_ne!(code, 0);
    assert!(out.contains("retension"), "{out}");

    // Bad values: not a duration, and one so long the cut-off would wrap.
    for bad in ["7 dayz", "150000000d", "9999999999h"] {
        let mut args = vec!["--data-dir", d, "--retention", bad];
        args.extend(ports);
        let (code, out) = run(&args);
        assert_ne!(code, 0, "--retention {bad}");
        assert!(out.contains("retention"), "{bad}: {out}");
    }

    // An unknown storage engine names the ones there are.
    let mut args = vec!["--data-dir", d, "--store-engine", "cassandra"];
    args.extend(ports);
    let (code, out) = run(&args);
    assert_ne!(code, 0);
    assert!(out.contains("sqlite") && out.contains("blocks"), "{out}");

    // A port already in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, out) = run(&[
        "--data-dir",
        d,
        "--otlp-grpc-listen",
        &g,
        "--otlp-http-listen",
        &h,
        "--query-listen",
        &addr,
    ]);
    assert_ne!(code, 0);
    assert!(out.contains("query.listen") && out.contains(&addr), "{out}");

    // --help works.
    let (code, out) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--data-dir"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 21, finding 12: every start checked every partition before any port
/// listened (26 s on a cold 1.9 GB store; a liveness probe of 60 s kills a
/// store of a few GB at every restart). Now a 2.4 GB store with the page cache
/// dropped answers `/healthz` at once; the check runs afterwards and a corrupt
/// partition is set aside with a log line while the collector keeps serving.
#[test]
fn a_large_cold_store_starts_listening_at_once_and_is_checked_afterwards() {
    use meshtrace_testkit::collector::{Collector, Opts};
    use meshtrace_testkit::load::trace_body;
    use std::time::{Duration, Instant};
    let dir = meshtrace_testkit::scratch_path("large-store");
    // Real partitions, written by the collector: four days of spans.
    let c = Collector::start_opts(
        dir.clone(),
        Opts {
            yaml: Some("retention: 3650d\nmax_span_age: 3650d\n".into()),
            // SQLite's day files: what the check at start-up walks.
            args: vec!["--store-engine".into(), "sqlite".into()],
            ..Opts::default()
        },
    );
    let day_ns: u64 = 86_400_000_000_000;
    let now = meshtrace_testkit::otlp::now_ns();
    for d in 0..4u64 {
        let mut body = trace_body(1, d as u32, 5);
        // Shift the spans d days back (their partitions are by start day).
        let mut req = <meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest as meshtrace_proto::prost::Message>::decode(body.as_slice()).unwrap();
        for s in &mut req.resource_spans[0].scope_spans[0].spans {
            s.start_time_unix_nano -= d * day_ns;
            s.end_time_unix_nano -= d * day_ns;
        }
        body = meshtrace_proto::prost::Message::encode_to_vec(&req);
        assert_eq!(c.post_otlp(&body), 200);
    }
    let (status, dir, log) = c.terminate_keep_data();
    assert!(status.success(), "{log}");
    // Each partition grown to ~650 MB of small indexed rows (what a busy day
    // leaves: the check walks every cell of every b-tree), appended in key order
    // so that writing them takes seconds, not minutes.
    let mut partitions: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "sqlite")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("spans-")
        })
        .collect();
    partitions.sort();
    assert_eq!(partitions.len(), 4, "{partitions:?}");
    let t = Instant::now();
    for p in &partitions {
        let conn = rusqlite::Connection::open(p).unwrap();
        conn.execute_batch(
            "PRAGMA synchronous = OFF;
             CREATE TABLE filler (k INTEGER PRIMARY KEY, a INTEGER NOT NULL, t TEXT NOT NULL);
             CREATE INDEX filler_a ON filler (a);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 2500000)
             INSERT INTO filler SELECT i, i, printf('%0240d', i) FROM n;",
        )
        .unwrap();
    }
    let bytes: u64 = partitions
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    eprintln!("store of {} MB written in {:?}", bytes >> 20, t.elapsed());
    assert!(bytes > 2 << 30);
    // And one partition (five days ago, inside retention) that is not a database at all.
    let bad_day = now / day_ns - 5;
    std::fs::write(
        dir.join(format!("spans-{bad_day:06}.sqlite")),
        vec![0x42u8; 1 << 20],
    )
    .unwrap();
    // Cold: nothing of the store in the page cache.
    let _ = Command::new("sync").status();
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    eprintln!("page cache dropped: {dropped}");
    let t = Instant::now();
    let c = Collector::start_opts(
        dir,
        Opts {
            yaml: Some("retention: 3650d\nmax_span_age: 3650d\n".into()),
            // SQLite's day files: what the check at start-up walks.
            args: vec!["--store-engine".into(), "sqlite".into()],
            ..Opts::default()
        },
    );
    let listening = t.elapsed();
    eprintln!("listening after {listening:?} (the check used to come first)");
    assert!(listening < Duration::from_secs(2), "{listening:?}");
    // It serves at once: a stored trace is found, ingest is acknowledged.
    let (s, body) = c.get("/api/traces?service=steady&lookback=100h&limit=10");
    assert_eq!(s, 200, "{body}");
    let (s, text) = meshtrace_testkit::load::send(c.otlp_port, &[], &trace_body(2, 1, 3));
    assert_eq!(s, 200, "{text}\n{}", c.log());
    // The check ends in the background, and sets the bad partition aside.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !c.log().contains("store partitions checked") {
        assert!(Instant::now() < deadline, "{}", c.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = c.log();
    let line = log
        .lines()
        .find(|l| l.contains("store partitions checked"))
        .unwrap();
    eprintln!("{line}");
    // The bad partition: set aside by the check, or already by the first read of it.
    assert!(line.contains("checked="), "{line}");
    assert!(log.contains("moved aside"), "{log}");
    assert!(c
        .data_dir
        .join(format!("spans-{bad_day:06}.broken"))
        .exists());
    assert_eq!(c.get("/healthz").0, 200);
    let (s, body) = c.get("/api/traces?service=steady&lookback=100h&limit=10");
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]
            .as_array()
            .unwrap()
            .len(),
        5,
        "the four days and the trace sent after the start"
    );
}

/// Issue 23, item 7: a second collector on a data directory in use (a second
/// replica given the same volume, a `migrate` run beside the collector) exits
/// at once naming the holder's PID, and the holder goes on; once it is gone
/// — killed, its lock file left behind — the directory starts again.
#[test]
fn a_data_directory_in_use_is_refused_naming_its_holder() {
    use meshtrace_testkit::collector::{Collector, Opts};
    use std::time::{Duration, Instant};
    /// Runs the collector, killing it (and failing) if it is still running after a minute.
    fn run_briefly(args: &[&str]) -> (i32, String) {
        let dir = meshtrace_testkit::scratch_path("lock-second");
        std::fs::create_dir_all(&dir).unwrap();
        let (out, err) = (dir.join("out"), dir.join("err"));
        let mut child = meshtrace_testkit::collector::command()
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a second collector on a held data_dir kept running: {args:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&err).unwrap() + &std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (status.code().unwrap_or(-1), text)
    }
    for engine in ["blocks", "sqlite"] {
        let dir = meshtrace_testkit::scratch_path("lock-held");
        let holder = Collector::start_opts(
            dir.clone(),
            Opts {
                args: vec!["--store-engine".into(), engine.into()],
                ..Opts::default()
            },
        );
        let pid = holder.child.id();
        let d = dir.to_str().unwrap();
        let (g, h, q) = (free(), free(), free());
        let second = [
            "--data-dir",
            d,
            "--store-engine",
            engine,
            "--otlp-grpc-listen",
            &g,
            "--otlp-http-listen",
            &h,
            "--query-listen",
            &q,
        ];
        let (code, out) = run_briefly(&second);
        assert_ne!(code, 0, "{engine}: {out}");
        assert!(
            out.contains(&format!("pid {pid}")) && out.contains(d) && out.contains("data_dir"),
            "{engine}: {out}"
        );
        let (code, out) = run_briefly(&["--data-dir", d, "migrate"]);
        assert_ne!(code, 0, "{engine}: {out}");
        assert!(out.contains(&format!("pid {pid}")), "{engine}: {out}");
        // The holder still serves.
        assert_eq!(holder.get("/api/services").0, 200);
        // Killed: the lock goes with the process; a new collector takes the directory.
        let dir = holder.kill_keep_data();
        let next = Collector::start_opts(
            dir,
            Opts {
                args: vec!["--store-engine".into(), engine.into()],
                ..Opts::default()
            },
        );
        assert_eq!(next.get("/api/services").0, 200);
        // And holds it in turn.
        let (code, out) = run_briefly(&second);
        assert_ne!(code, 0, "{engine}: {out}");
        assert!(
            out.contains(&format!("pid {}", next.child.id())),
            "{engine}: {out}"
        );
    }
}
