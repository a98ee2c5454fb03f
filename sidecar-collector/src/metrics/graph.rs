//! The service graph: a CLIENT span (or PRODUCER) and the SERVER span (or
//! CONSUMER) whose parent it is, written by two different sidecars, make one
//! request on the edge client → server (the OpenTelemetry servicegraph
//! connector's and Tempo's model). Halves wait for each other in a bounded
//! table for a bounded time; what never pairs is counted, not guessed.

use std::collections::{HashMap, VecDeque};

/// The graph's bounds.
#[derive(Debug, Clone, Copy)]
pub struct GraphSettings {
    /// Edges at most; beyond, new edges are folded into one overflow edge.
    pub max_edges: usize,
    /// How long a half waits for the other, in milliseconds.
    pub wait_ms: u64,
    /// Halves waiting at most; beyond, new halves are dropped (and counted).
    pub max_pending: usize,
}

/// One side of a request.
#[derive(Debug, Clone)]
struct Half {
    service: Box<str>,
    duration_s: f64,
    error: bool,
    client: bool,
    messaging: bool,
    /// Weight of the span (1/p): the request count adjusted for sampling.
    weight: f64,
}

/// Requests on one edge.
#[derive(Debug, Clone)]
pub struct Edge {
    pub requests: u64,
    pub failed: u64,
    /// Requests counted 1/p each.
    pub adjusted_requests: f64,
    pub server: Seconds,
    pub client: Seconds,
}

/// A histogram of durations in seconds.
#[derive(Debug, Clone)]
pub struct Seconds {
    pub sum: f64,
    /// Per bucket, not cumulative; the last is +Inf.
    pub buckets: Box<[u64]>,
}

impl Seconds {
    fn new(n: usize) -> Seconds {
        Seconds {
            sum: 0.0,
            buckets: vec![0; n].into_boxed_slice(),
        }
    }

    fn observe(&mut self, bounds_s: &[f64], v: f64) {
        self.sum += v;
        let i = bounds_s.partition_point(|b| *b < v);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// (trace id, the client's span id): where the two halves of a request meet.
type PairKey = ([u8; 16], [u8; 8]);

/// A request just paired, for the per-minute history.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub client: Box<str>,
    pub server: Box<str>,
    pub connection_type: &'static str,
    pub failed: bool,
    pub server_s: f64,
    pub weight: f64,
}

/// (client, server, connection type); the overflow edge is `None`.
pub type EdgeKey = Option<(Box<str>, Box<str>, &'static str)>;

/// The graph and its pending halves.
#[derive(Debug)]
pub struct Graph {
    settings: GraphSettings,
    bounds_s: Box<[f64]>,
    pending: HashMap<PairKey, (Half, u64)>,
    expiry: VecDeque<(PairKey, u64)>,
    pub edges: HashMap<EdgeKey, Edge>,
    /// Halves that expired unpaired, by (side, service): `client` or `server`.
    pub unpaired: HashMap<(&'static str, Box<str>), u64>,
    /// Halves not kept: the pending table was full.
    pub dropped: u64,
    /// Requests folded into the overflow edge.
    pub folded: u64,
}

impl Graph {
    pub fn new(settings: GraphSettings, bounds_ms: &[f64]) -> Graph {
        Graph {
            settings,
            bounds_s: bounds_ms.iter().map(|b| b / 1000.0).collect(),
            pending: HashMap::new(),
            expiry: VecDeque::new(),
            edges: HashMap::new(),
            unpaired: HashMap::new(),
            dropped: 0,
            folded: 0,
        }
    }

    /// Upper bounds of the duration buckets, in seconds.
    pub fn bounds_s(&self) -> &[f64] {
        &self.bounds_s
    }

    /// Halves waiting now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One span. `kind` is the OTLP kind; others than client, server,
    /// producer and consumer are ignored, as are server spans with no parent
    /// (a request from outside the mesh has no client half).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        kind: i32,
        service: &str,
        duration_s: f64,
        error: bool,
        weight: f64,
        now_ms: u64,
    ) -> Option<Paired> {
        let (client, messaging, key) = match (kind, parent) {
            (3, _) => (true, false, (trace_id, span_id)),
            (4, _) => (true, true, (trace_id, span_id)),
            (2, Some(p)) => (false, false, (trace_id, p)),
            (5, Some(p)) => (false, true, (trace_id, p)),
            _ => return None,
        };
        // No allocation unless the half is kept: most spans pair or are dropped.
        let half = |service: &str| Half {
            service: service.into(),
            duration_s,
            error,
            client,
            messaging,
            weight,
        };
        match self.pending.remove(&key) {
            Some((other, _)) if other.client != client => {
                let (c, s) = if client {
                    (half(service), other)
                } else {
                    (other, half(service))
                };
                Some(self.pair(c, s))
            }
            _ => {
                if self.pending.len() >= self.settings.max_pending {
                    self.dropped += 1;
                    return None;
                }
                let deadline = now_ms + self.settings.wait_ms;
                self.pending.insert(key, (half(service), deadline));
                self.expiry.push_back((key, deadline));
                None
            }
        }
    }

    fn pair(&mut self, c: Half, s: Half) -> Paired {
        let kind = if c.messaging || s.messaging {
            "messaging_system"
        } else {
            ""
        };
        let paired = Paired {
            client: c.service.clone(),
            server: s.service.clone(),
            connection_type: kind,
            failed: c.error || s.error,
            server_s: s.duration_s,
            weight: c.weight,
        };
        let mut key: EdgeKey = Some((c.service, s.service, kind));
        if !self.edges.contains_key(&key) && self.edges.len() >= self.settings.max_edges {
            key = None;
            self.folded += 1;
        }
        let n = self.bounds_s.len() + 1;
        let bounds = &self.bounds_s;
        let e = self.edges.entry(key).or_insert_with(|| Edge {
            requests: 0,
            failed: 0,
            adjusted_requests: 0.0,
            server: Seconds::new(n),
            client: Seconds::new(n),
        });
        e.requests += 1;
        // The client's weight: its sampler decided for the request.
        e.adjusted_requests += c.weight;
        if c.error || s.error {
            e.failed += 1;
        }
        e.server.observe(bounds, s.duration_s);
        e.client.observe(bounds, c.duration_s);
        paired
    }

    /// Counts and forgets the halves whose wait is over.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(key, deadline)) = self.expiry.front() {
            if deadline > now_ms {
                break;
            }
            self.expiry.pop_front();
            // The entry may have paired (gone) or been replaced (later deadline).
            if self.pending.get(&key).is_some_and(|(_, d)| *d == deadline) {
                if let Some((h, _)) = self.pending.remove(&key) {
                    let side = if h.client { "client" } else { "server" };
                    let k = (side, h.service);
                    if self.unpaired.contains_key(&k)
                        || self.unpaired.len() < self.settings.max_edges
                    {
                        *self.unpaired.entry(k).or_default() += 1;
                    } else {
                        *self.unpaired.entry((side, "".into())).or_default() += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(max_edges: usize, max_pending: usize) -> Graph {
        Graph::new(
            GraphSettings {
                max_edges,
                wait_ms: 1000,
                max_pending,
            },
            &[10.0, 100.0],
        )
    }

    const T: [u8; 16] = [1; 16];

    #[test]
    fn client_and_server_pair_in_either_order() {
        let mut g = graph(10, 10);
        // frontend calls checkout: client span 1, server span 2 (parent 1).
        g.observe(T, [1; 8], None, 3, "frontend", 0.05, false, 10.0, 0);
        g.observe(T, [2; 8], Some([1; 8]), 2, "checkout", 0.04, true, 1.0, 5);
        // Server first this time.
        g.observe(T, [4; 8], Some([3; 8]), 2, "checkout", 0.004, false, 1.0, 6);
        g.observe(T, [3; 8], None, 3, "frontend", 0.006, false, 10.0, 7);
        assert_eq!(g.pending(), 0);
        let e = &g.edges[&Some(("frontend".into(), "checkout".into(), ""))];
        assert_eq!((e.requests, e.failed), (2, 1));
        assert_eq!(e.adjusted_requests, 20.0, "the client's weight counts");
        assert_eq!(e.server.buckets.as_ref(), &[1, 1, 0]);
        assert_eq!(e.client.count(), 2);
    }

    #[test]
    fn unpaired_halves_expire_and_are_counted() {
        let mut g = graph(10, 10);
        g.observe(T, [1; 8], None, 3, "frontend", 0.05, false, 1.0, 0);
        g.observe(T, [2; 8], Some([9; 8]), 2, "checkout", 0.05, false, 1.0, 0);
        // A root server span (from outside the mesh) waits for nobody.
        g.observe(T, [5; 8], None, 2, "frontend", 0.05, false, 1.0, 0);
        g.expire(999);
        assert_eq!(g.pending(), 2, "still within the wait");
        g.expire(1000);
        assert_eq!(g.pending(), 0);
        assert_eq!(g.unpaired[&("client", "frontend".into())], 1);
        assert_eq!(g.unpaired[&("server", "checkout".into())], 1);
        assert!(g.edges.is_empty());
    }

    #[test]
    fn bounded_pending_and_edges() {
        let mut g = graph(1, 2);
        for i in 0..5u8 {
            g.observe(T, [i + 1; 8], None, 3, "a", 0.0, false, 1.0, 0);
        }
        assert_eq!(g.pending(), 2);
        assert_eq!(g.dropped, 3);
        // Two edges with room for one: the second folds into the overflow edge.
        g.observe(T, [3; 8], Some([1; 8]), 2, "b", 0.0, false, 1.0, 0);
        g.observe(T, [4; 8], Some([2; 8]), 2, "c", 0.0, false, 1.0, 0);
        assert_eq!(g.edges.len(), 2);
        assert_eq!(g.edges[&None].requests, 1);
        assert_eq!(g.folded, 1);
    }
}
