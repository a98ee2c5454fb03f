//! An echo upstream: answers every request with its headers as JSON, so a
//! test sees what Envoy forwarded. `/status/NNN` answers with that status.

use crate::http::{read_message, write_response, Message};
use std::io::BufReader;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;

pub struct Upstream {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Message>>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let received: Arc<Mutex<Vec<Message>>> = Arc::default();
        let rec = received.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                conn.set_nodelay(true).ok();
                let rec = rec.clone();
                thread::spawn(move || {
                    let mut writer = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut reader = BufReader::new(conn);
                    while let Ok(Some(m)) = read_message(&mut reader) {
                        let status = m
                            .path()
                            .strip_prefix("/status/")
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(200);
                        let body = serde_json::to_vec(
                            &m.headers
                                .iter()
                                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                                .collect::<Vec<_>>(),
                        )
                        .unwrap_or_default();
                        // A browser's cross-origin request (`origin`) is answered with CORS.
                        let cors = m.header("origin").is_some();
                        // Recorded before answering: a test reading `last()` after its
                        // response must see its own request.
                        if let Ok(mut r) = rec.lock() {
                            if r.len() < 100_000 {
                                r.push(m);
                            }
                        }
                        let mut headers =
                            vec![("content-type", "application/json"), ("x-cache", "HIT")];
                        if cors {
                            headers.push(("access-control-allow-origin", "*"));
                        }
                        write_response(&mut writer, status, &headers, &body);
                    }
                });
            }
        });
        Upstream { port, received }
    }

    /// The last request the upstream saw.
    pub fn last(&self) -> Message {
        self.received
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("upstream received a request")
    }
}
