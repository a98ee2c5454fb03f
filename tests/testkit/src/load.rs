//! Load for the collector's memory and read tests: traces to send, a steady
//! well-behaved client, a memory cgroup or a skip, reads with long timeouts.

use crate::cgroup::MemoryCgroup;
use crate::collector::{post, Collector};
use crate::otlp::{kv, now_ns, request};
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::prost::Message;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A memory cgroup of `limit` bytes, or `None` (the test says it skipped, and why).
pub fn cgroup(name: &str, limit: u64) -> Option<MemoryCgroup> {
    match MemoryCgroup::create(name, limit) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("SKIPPED: this test needs a memory cgroup: {e}");
            None
        }
    }
}

/// The collector's peak resident size (VmHWM), MB.
pub fn peak_rss_mb(c: &Collector) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", c.child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// The id of trace `seq` of sender `sender`.
pub fn trace_id(sender: u8, seq: u32) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[0] = 0xe0 | sender;
    t[12..].copy_from_slice(&seq.to_be_bytes());
    t
}

/// An export of trace `seq` of `sender`: `spans` spans with eight attributes each.
pub fn trace_body(sender: u8, seq: u32, spans: usize) -> Vec<u8> {
    trace_body_padded(sender, seq, spans, 0)
}

/// Each span also carries a `pad` attribute of `pad` bytes.
pub fn trace_body_padded(sender: u8, seq: u32, spans: usize, pad: usize) -> Vec<u8> {
    let tid = trace_id(sender, seq);
    let now = now_ns();
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: tid.to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op{}", i % 5),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: (0..8)
                .map(|k| kv(&format!("attr.{k}"), &format!("value-{seq}-{k}")))
                .chain((pad > 0).then(|| kv("pad", &"p".repeat(pad))))
                .collect(),
            ..Default::default()
        })
        .collect();
    request("steady", spans).encode_to_vec()
}

/// A well-behaved client exporting small traces until stopped; the acknowledged ids.
pub struct Steady {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<[u8; 16]>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Steady {
    pub fn start(port: u16, senders: u8) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
        let threads = (0..senders)
            .map(|s| {
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut seq = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let body = trace_body(s, seq, 20);
                        let status = post(port, "application/x-protobuf", &[], &body)
                            .map_or(0, |m| m.status());
                        if status == 200 {
                            acked.lock().unwrap().push(trace_id(s, seq));
                        }
                        seq += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Steady {
            stop,
            acked,
            threads,
        }
    }

    pub fn stop(self) -> Vec<[u8; 16]> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let a = self.acked.lock().unwrap().clone();
        a
    }
}

/// A trace id in hex.
pub fn hex(t: &[u8; 16]) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every acknowledged trace is stored with all its spans.
pub fn assert_all_found(c: &Collector, acked: &[[u8; 16]], spans: usize) {
    let mut missing = 0;
    for chunk in acked.chunks(50) {
        let q: Vec<String> = chunk
            .iter()
            .map(|t| format!("traceID={}", hex(t)))
            .collect();
        let (status, body) = c.get(&format!("/api/traces?{}", q.join("&")));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let traces = v["data"].as_array().unwrap();
        for t in traces {
            assert_eq!(t["spans"].as_array().unwrap().len(), spans);
        }
        missing += chunk.len() - traces.len();
    }
    eprintln!("acknowledged {} traces, missing {missing}", acked.len());
    assert_eq!(missing, 0, "acknowledged traces lost");
}

/// POSTs and returns (status, body text).
pub fn send(port: u16, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let m = post(port, "application/x-protobuf", headers, body).expect("the collector answers");
    (m.status(), String::from_utf8_lossy(&m.body).into_owned())
}

/// GET with a long read timeout (a debug build answering 100k spans is slow): (status, body).
pub fn get_big(port: u16, path: &str) -> (u16, String) {
    use std::io::Read;
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: q\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let m = crate::http::read_message(&mut r)
        .unwrap()
        .expect("an answer");
    let _ = r.read_to_end(&mut Vec::new());
    eprintln!(
        "GET {}…: {} in {:?}",
        &path[..path.len().min(40)],
        m.status(),
        t0.elapsed()
    );
    (m.status(), String::from_utf8_lossy(&m.body).into_owned())
}
