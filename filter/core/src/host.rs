//! What the filter needs from its host (Envoy through proxy-wasm, or a fake in tests).

/// A header map as the host returns it (lowercase names, raw values), kept in
/// the host's one buffer and indexed: no copy or allocation per header.
///
/// The host's encoding: a u32 count, then each pair's u32 name and value sizes,
/// then each name and value followed by a NUL (little-endian).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    raw: Vec<u8>,
    /// The names, checked as UTF-8 once and copied together (one allocation),
    /// so that reading a name checks nothing again.
    names: String,
    /// (name start, name end) in `names`, (value start, value end) in `raw`.
    at: Vec<[u32; 4]>,
}

/// The buffers of one header map.
type Buffers = (Vec<u8>, String, Vec<[u32; 4]>);

/// Header maps kept for reuse per thread, and the largest kept: beyond it a
/// map's buffers are freed (memory stays bounded whatever arrives).
const SPARE_MAPS: usize = 4;
const SPARE_MAP_BYTES: usize = 16 * 1024;

thread_local! {
    /// Buffers of header maps dropped on this thread, reused by the next maps
    /// read here: once warm, reading a map allocates nothing (two allocations
    /// and two frees per map were a fifth of the native module's request cost).
    static SPARE: std::cell::RefCell<Vec<Buffers>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Empty buffers, reused if this thread has some.
fn spare_buffers() -> Buffers {
    SPARE
        .try_with(|s| s.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl Drop for Headers {
    fn drop(&mut self) {
        let size = self.raw.capacity() + self.names.capacity() + self.at.capacity() * 16;
        if size > SPARE_MAP_BYTES || size == 0 {
            return;
        }
        let mut raw = std::mem::take(&mut self.raw);
        let mut names = std::mem::take(&mut self.names);
        let mut at = std::mem::take(&mut self.at);
        raw.clear();
        names.clear();
        at.clear();
        // At thread exit the pool may be gone: the buffers are then just freed.
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.len() < SPARE_MAPS {
                    s.push((raw, names, at));
                }
            }
        });
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

impl Headers {
    /// Indexes the host's encoding; a malformed map yields what was readable,
    /// and a name that is not UTF-8 (Envoy's never are) is left out.
    pub fn decode(raw: Vec<u8>) -> Headers {
        let n = u32_at(&raw, 0).unwrap_or(0);
        let (_, mut names, mut at) = spare_buffers();
        at.reserve(n.min(raw.len() / 10));
        let mut data = n.saturating_mul(8).saturating_add(4);
        for i in 0..n {
            let (Some(kl), Some(vl)) = (u32_at(&raw, 4 + i * 8), u32_at(&raw, 8 + i * 8)) else {
                break;
            };
            let Some(name_end) = data.checked_add(kl) else {
                break;
            };
            let Some(value_end) = name_end.checked_add(1).and_then(|s| s.checked_add(vl)) else {
                break;
            };
            // Each value is followed by a NUL; the offsets fit the index's u32s.
            if value_end >= raw.len() || u32::try_from(value_end).is_err() {
                break;
            }
            if let Some(name) = raw
                .get(data..name_end)
                .and_then(|n| std::str::from_utf8(n).ok())
            {
                if names.is_empty() {
                    names.reserve(raw.len() / 2);
                }
                let start = names.len();
                names.push_str(name);
                at.push([
                    start as u32,
                    names.len() as u32,
                    (name_end + 1) as u32,
                    value_end as u32,
                ]);
            }
            data = value_end + 1;
        }
        Headers { raw, names, at }
    }

    /// The host's encoding of `pairs` (also what `proxy_http_call` takes).
    pub fn encode<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> Vec<u8> {
        let size: usize = pairs
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().len() + 10)
            .sum();
        let mut b = Vec::with_capacity(4 + size);
        b.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (k, v) in pairs {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_ref());
            b.push(0);
        }
        b
    }

    /// A header map from the host's (name, value) list, indexed as [`Headers::decode`]
    /// indexes the encoding, without it: one copy of names and of values, for a
    /// host that lists its map (a native module) instead of encoding it. A name
    /// that is not UTF-8 is left out.
    pub fn from_list<'a>(list: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Headers {
        // Reused buffers (see `SPARE`) are large enough once warm: no sizing pass.
        let (mut raw, names, mut at) = spare_buffers();
        // Envoy's names are ASCII: one UTF-8 check over all of them (a check
        // per name cost ~750 instructions per map); a map with a name that is
        // not UTF-8 is indexed name by name, leaving that one out.
        let mut all = names.into_bytes();
        for (k, v) in list.clone() {
            let (ns, vs) = (all.len(), raw.len());
            all.extend_from_slice(k);
            raw.extend_from_slice(v);
            let (Ok(ne), Ok(ve)) = (u32::try_from(all.len()), u32::try_from(raw.len())) else {
                break;
            };
            at.push([ns as u32, ne, vs as u32, ve]);
        }
        let mut all = match String::from_utf8(all) {
            Ok(names) => return Headers { raw, names, at },
            Err(e) => e.into_bytes(),
        };
        raw.clear();
        at.clear();
        all.clear();
        let mut names = String::from_utf8(all).unwrap_or_default();
        for (k, v) in list {
            let Ok(name) = std::str::from_utf8(k) else {
                continue;
            };
            let (ns, vs) = (names.len(), raw.len());
            names.push_str(name);
            raw.extend_from_slice(v);
            // Offsets fit the index's u32s (a header map is far below 4 GiB).
            let (Ok(ne), Ok(ve)) = (u32::try_from(names.len()), u32::try_from(raw.len())) else {
                break;
            };
            at.push([ns as u32, ne, vs as u32, ve]);
        }
        Headers { raw, names, at }
    }

    pub fn from_pairs<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> Headers {
        Headers::decode(Headers::encode(pairs))
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.at.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The `i`th header, in the host's order.
    #[inline]
    pub fn get(&self, i: usize) -> Option<(&str, &[u8])> {
        let [ns, ne, vs, ve] = *self.at.get(i)?;
        let name = self.names.get(ns as usize..ne as usize)?;
        Some((name, self.raw.get(vs as usize..ve as usize)?))
    }

    /// The `i`th header's value (empty if there is none).
    #[inline]
    pub fn value(&self, i: usize) -> &[u8] {
        self.get(i).map_or(&[], |(_, v)| v)
    }

    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (0..self.at.len()).filter_map(|i| self.get(i))
    }

    /// The first value of `name`.
    #[inline]
    pub fn find(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// Whether a log line of `kind` is due at `now` (ns): at most one a minute
/// per kind, `logged` keeping when each kind was last logged. The adapters
/// log host errors through it.
pub fn log_due(logged: &mut Vec<(&'static str, u64)>, kind: &'static str, now: u64) -> bool {
    match logged.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, at)) if now.saturating_sub(*at) < 60_000_000_000 => false,
        Some((_, at)) => {
            *at = now;
            true
        }
        None => {
            logged.push((kind, now));
            true
        }
    }
}

/// Calls available in every context.
pub trait Host {
    /// An Envoy attribute (`["source", "address"]`), raw bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
}

/// Calls of an HTTP stream context.
pub trait StreamHost: Host {
    fn request_headers(&self) -> Headers;
    /// Sets (`Some`) or removes (`None`) a request header. Values are bytes,
    /// as both hosts take them (the filter writes ASCII it formatted itself or
    /// values it received): no UTF-8 check on the request path.
    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>);
    /// Adds a request header the map does not hold: cheaper in Envoy than
    /// setting one (no lookup and removal first).
    fn add_request_header(&mut self, name: &str, value: &[u8]);
    fn response_headers(&self) -> Headers;
    /// Sets a response header (to the downstream caller).
    fn set_response_header(&mut self, name: &str, value: &[u8]);
    /// Adds a response header the map does not hold.
    fn add_response_header(&mut self, name: &str, value: &[u8]);
    /// Appends a value of a list header the map may hold already
    /// (`server-timing`, `access-control-expose-headers`).
    fn append_response_header(&mut self, name: &str, value: &[u8]);
    /// Whether reading a whole header map costs less than replacing a header
    /// (rather than adding it): then an unsampled stream reads the response
    /// map to add its response header. True of a native module (Envoy 1.40:
    /// the map read ~1,000 instructions, a replace ~2,000 more than an add);
    /// proxy-wasm's map read copies it into the VM and costs more.
    fn reads_maps_cheaply(&self) -> bool {
        false
    }
    /// Whether the response holds `name`: a host that can look the map over
    /// in place (a native module) answers without copying it.
    fn response_has_header(&self, name: &str) -> bool {
        self.response_headers().contains(name)
    }
    fn response_trailers(&self) -> Headers;
    /// Shared data of every VM of this Envoy: (value, compare-and-swap token).
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Sets shared data if its CAS token is still `cas`; false if another VM won.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Calls of the root context.
pub trait RootHost: Host {
    /// Starts an HTTP call; returns its token, or `None` if the host refused it.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u32>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_without_a_copy_per_header() {
        let pairs = [(":method", "GET"), ("traceparent", "00-ab"), ("empty", "")];
        let h = Headers::from_pairs(&pairs);
        assert_eq!(h.len(), 3);
        let back: Vec<(&str, &[u8])> = h.iter().collect();
        assert_eq!(
            back,
            [
                (":method", &b"GET"[..]),
                ("traceparent", b"00-ab"),
                ("empty", b"")
            ]
        );
        assert_eq!(h.find("traceparent"), Some(&b"00-ab"[..]));
        assert!(!h.contains("tracestate"));
        assert_eq!(h.value(0), b"GET");
        assert_eq!(h.value(9), b"");
    }

    #[test]
    fn a_listed_map_reads_as_the_encoded_one() {
        let pairs = [
            (":method", "GET"),
            ("traceparent", "00-ab"),
            ("empty", ""),
            ("x", "1"),
        ];
        let listed = Headers::from_list(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        let encoded = Headers::from_pairs(&pairs);
        assert_eq!(
            listed.iter().collect::<Vec<_>>(),
            encoded.iter().collect::<Vec<_>>()
        );
        assert_eq!(listed.find("x"), Some(&b"1"[..]));
        let bad = [(&b"\xff"[..], &b"1"[..]), (&b"ok"[..], &b"2"[..])];
        let h = Headers::from_list(bad.iter().copied());
        assert_eq!(h.iter().collect::<Vec<_>>(), [("ok", &b"2"[..])]);
        assert!(Headers::from_list(std::iter::empty()).is_empty());
    }

    #[test]
    fn malformed_header_maps_yield_what_was_readable() {
        let b = Headers::encode(&[("a", "1"), ("b", "2")]);
        // Cut inside the second pair's value.
        let h = Headers::decode(b[..b.len() - 2].to_vec());
        assert_eq!(h.iter().collect::<Vec<_>>(), [("a", &b"1"[..])]);
        assert!(Headers::decode(Vec::new()).is_empty());
        // A count far larger than the bytes.
        assert!(Headers::decode(vec![255, 255, 255, 255]).is_empty());
        // A name that is not UTF-8 is left out, the rest kept.
        let h = Headers::from_pairs(&[("ok", "1")]);
        let mut raw = Headers::encode(&[("\u{e9}", "1"), ("ok", "2")]);
        let e9 = raw.iter().position(|b| *b == 0xc3).unwrap();
        raw[e9] = 0xff;
        assert_eq!(h.len(), 1);
        assert_eq!(
            Headers::decode(raw).iter().collect::<Vec<_>>(),
            [("ok", &b"2"[..])]
        );
    }

    #[test]
    fn maps_read_after_dropped_ones_hold_only_their_own_headers() {
        let list = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            Headers::from_list(pairs.iter().map(|(k, v)| (&k[..], &v[..])))
        };
        let big: Vec<(String, String)> =
            (0..20).map(|i| (format!("h{i}"), "v".repeat(i))).collect();
        let big: Vec<(&str, &str)> = big.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for round in 0..3 {
            // Dropped maps' buffers are reused by the next ones on this thread.
            drop(list(&big));
            drop(Headers::decode(Headers::encode(&big)));
            let small = list(&[("a", "1")]);
            assert_eq!(
                small.iter().collect::<Vec<_>>(),
                [("a", &b"1"[..])],
                "{round}"
            );
            let decoded = Headers::from_pairs(&[("b", "2")]);
            assert_eq!(decoded.iter().collect::<Vec<_>>(), [("b", &b"2"[..])]);
            // A map with a name that is not UTF-8, on reused buffers too.
            drop(list(&big));
            let bad = [(&b"\xff"[..], &b"1"[..]), (&b"ok"[..], &b"2"[..])];
            let h = Headers::from_list(bad.iter().copied());
            assert_eq!(h.iter().collect::<Vec<_>>(), [("ok", &b"2"[..])]);
            assert!(!h.contains("h1") && !small.contains("h1"));
        }
        // A map larger than what is kept is freed, not pooled; the pool stays bounded.
        let huge = "x".repeat(SPARE_MAP_BYTES * 2);
        for _ in 0..SPARE_MAPS * 3 {
            drop(list(&[("a", &huge)]));
            drop(list(&[("a", "1")]));
        }
        let kept = SPARE.with(|s| {
            let s = s.borrow();
            let bytes: usize = s
                .iter()
                .map(|(r, n, a)| r.capacity() + n.capacity() + a.capacity() * 16)
                .sum();
            (s.len(), bytes)
        });
        assert!(
            kept.0 <= SPARE_MAPS && kept.1 <= SPARE_MAPS * SPARE_MAP_BYTES,
            "{kept:?}"
        );
    }
}
