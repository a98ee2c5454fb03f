//! Start-up errors of the collector binary: each names the problem and exits non-zero.

// An integration test: its helpers fail the test with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshtrace_testkit::collector::collector_bin;
use std::net::TcpListener;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(collector_bin())
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
