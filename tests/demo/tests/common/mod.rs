//! Running `scripts/demo` from a test: the command, and its output read line by line
//! while it runs.

use meshtrace_testkit::workspace_root;
use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// `scripts/demo ARGS` on what cargo built for this test.
pub fn demo_command(args: &[&str]) -> Command {
    let mut c = Command::new(workspace_root().join("scripts/demo"));
    c.args(args)
        // Built by cargo for this test and by scripts/test; cargo cannot run again here.
        .env("MESHTRACE_DEMO_PREBUILT", "1")
        .env("MESHTRACE_DEMO_BIN", env!("CARGO_BIN_EXE_meshtrace-demo"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Each line as it comes, and all of them once the output ends.
pub fn lines(stdout: ChildStdout) -> (mpsc::Receiver<String>, JoinHandle<String>) {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, reader)
}
