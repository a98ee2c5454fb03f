//! The demo's three services, one process each: `frontend` → `checkout` → `inventory`,
//! plus `frontend` → `inventory`. They know nothing about tracing except what Istio
//! asks of every application: copy the trace headers of the request being served onto
//! the requests it makes. Calls go out through the pod's own Envoy (its outbound
//! listener), addressed by service name, as iptables would send them in a pod.

use crate::orchestrator::{request, Rng};
use meshtrace_testkit::http::{read_message, write_response, Message};
use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// The headers Istio's documentation asks applications to propagate.
pub const PROPAGATED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "uber-trace-id",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "baggage",
];

/// What a handler answers.
struct Reply {
    status: u16,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        body: body.into(),
    }
}

/// One service: its name and where its outbound calls go (its Envoy's outbound listener).
#[derive(Clone)]
pub struct App {
    pub name: String,
    pub egress: SocketAddr,
}

impl App {
    /// Serves on `listen` until the process is stopped.
    pub fn serve(self, listen: SocketAddr) -> Result<(), String> {
        if !matches!(self.name.as_str(), "frontend" | "checkout" | "inventory") {
            return Err(format!(
                "unknown demo service {:?} (frontend, checkout or inventory)",
                self.name
            ));
        }
        let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let app = self.clone();
            thread::spawn(move || app.connection(conn));
        }
        Ok(())
    }

    fn connection(&self, conn: TcpStream) {
        conn.set_nodelay(true).ok();
        let Ok(mut writer) = conn.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(conn);
        let mut rng = Rng::seeded();
        while let Ok(Some(m)) = read_message(&mut reader) {
            let r = self.handle(&m, &mut rng);
            write_response(
                &mut writer,
                r.status,
                &[("content-type", "text/plain"), ("x-served-by", &self.name)],
                r.body.as_bytes(),
            );
        }
    }

    fn handle(&self, m: &Message, rng: &mut Rng) -> Reply {
        let mut start = m.start.split(' ');
        let method = start.next().unwrap_or("");
        let target = start.next().unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/");
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (self.name.as_str(), method, segments.as_slice()) {
            (_, "GET", ["health"]) => reply(200, "ok"),
            ("frontend", "GET", [""]) => reply(200, "meshtrace demo shop"),
            ("frontend", "GET", ["product", id]) => {
                let r = self.call(m, "inventory", "GET", &format!("/stock/{id}"));
                match r {
                    Ok(s) if s < 400 => reply(200, format!("product {id}")),
                    Ok(s) => reply(502, format!("inventory answered {s}")),
                    Err(e) => reply(502, format!("inventory: {e}")),
                }
            }
            ("frontend", "POST", ["checkout"]) => {
                match self.call(m, "checkout", "POST", "/orders") {
                    Ok(s) if s < 400 => reply(200, "order placed"),
                    Ok(s) => reply(502, format!("checkout answered {s}")),
                    Err(e) => reply(502, format!("checkout: {e}")),
                }
            }
            ("frontend", "GET", ["report"]) => match self.call(m, "checkout", "GET", "/report") {
                Ok(s) if s < 400 => reply(200, "report ready"),
                Ok(s) => reply(502, format!("checkout answered {s}")),
                Err(e) => reply(502, format!("checkout: {e}")),
            },
            ("checkout", "POST", ["orders"]) => self.place_order(m, rng),
            ("checkout", "GET", ["report"]) => {
                // The slow operation: over a second, so the seed's HighLatency alert
                // (p95 > 1000 ms) has something to catch in the demo.
                thread::sleep(Duration::from_millis(1200 + rng.below(300)));
                reply(200, "sales report")
            }
            ("inventory", "GET", ["stock", id]) => {
                thread::sleep(Duration::from_millis(2));
                reply(
                    200,
                    format!("{{\"id\":\"{id}\",\"stock\":{}}}", rng.below(100)),
                )
            }
            ("inventory", "POST", ["reserve", sku]) => {
                // The flaky call: 5% fail after a while, 10% are slow.
                let roll = rng.below(100);
                if roll < 5 {
                    thread::sleep(Duration::from_millis(20));
                    reply(503, format!("warehouse timeout reserving {sku}"))
                } else if roll < 15 {
                    thread::sleep(Duration::from_millis(250 + rng.below(150)));
                    reply(200, format!("reserved {sku} (slow)"))
                } else {
                    thread::sleep(Duration::from_millis(3 + rng.below(7)));
                    reply(200, format!("reserved {sku}"))
                }
            }
            _ => reply(404, format!("{} has no {method} {path}", self.name)),
        }
    }

    /// The fan-out: three reservations in parallel, then the payment.
    fn place_order(&self, m: &Message, rng: &mut Rng) -> Reply {
        let skus: Vec<u64> = (0..3).map(|_| 1000 + rng.below(50)).collect();
        let results: Vec<Result<u16, String>> = thread::scope(|s| {
            let calls: Vec<_> = skus
                .iter()
                .map(|sku| {
                    s.spawn(move || self.call(m, "inventory", "POST", &format!("/reserve/{sku}")))
                })
                .collect();
            calls
                .into_iter()
                .map(|c| c.join().unwrap_or_else(|_| Err("panicked".into())))
                .collect()
        });
        thread::sleep(Duration::from_millis(5));
        match results.iter().find(|r| !matches!(r, Ok(s) if *s < 400)) {
            None => reply(201, "order created"),
            Some(Ok(s)) => reply(502, format!("a reservation failed with {s}")),
            Some(Err(e)) => reply(502, format!("a reservation failed: {e}")),
        }
    }

    /// Calls `service` through the pod's Envoy, propagating `incoming`'s trace headers.
    fn call(
        &self,
        incoming: &Message,
        service: &str,
        method: &str,
        path: &str,
    ) -> Result<u16, String> {
        let headers: Vec<(String, Vec<u8>)> = incoming
            .headers
            .iter()
            .filter(|(n, _)| PROPAGATED.contains(&n.as_str()))
            .cloned()
            .collect();
        let host = format!("{service}:8080");
        request(self.egress, method, path, &host, &headers)
            .map(|m| m.status())
            .map_err(|e| e.to_string())
    }
}
