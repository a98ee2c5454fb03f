//! A fake host for unit tests: headers, properties, a settable clock and
//! recorded dispatches.

use crate::host::{Headers, Host, RootHost, StreamHost};
use std::collections::HashMap;

/// Fake shared data, shareable between fake VMs: key → (value, cas).
pub type SharedStore = std::rc::Rc<std::cell::RefCell<HashMap<String, (Vec<u8>, u32)>>>;

/// Headers as a test writes them: (lowercase name, value).
pub type HeaderPairs = Vec<(String, Vec<u8>)>;

fn to_headers(pairs: &HeaderPairs) -> Headers {
    let refs: Vec<(&str, &[u8])> = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    Headers::from_pairs(&refs)
}

/// A recorded export call: cluster, headers, body.
pub type Dispatched = (String, Vec<(String, String)>, Vec<u8>);

#[derive(Debug, Default, Clone)]
pub struct FakeHost {
    pub properties: HashMap<String, Vec<u8>>,
    pub request_headers: HeaderPairs,
    pub response_headers: HeaderPairs,
    pub response_trailers: HeaderPairs,
    pub now: u64,
    pub dispatched: Vec<Dispatched>,
    pub refuse_dispatch: bool,
    pub shared: SharedStore,
    /// Make the next N `shared_set` calls lose the CAS race.
    pub fail_cas: u32,
    /// Every `set_request_header` and `add_request_header` call, in order.
    pub edits: Vec<(String, Option<String>)>,
    /// Every `set_response_header` and `add_response_header` call, in order.
    pub response_edits: Vec<(String, String)>,
    /// The names of the headers added (`add_request_header`, `add_response_header`).
    pub added: Vec<String>,
    /// Every `append_response_header` call, in order.
    pub appended: Vec<(String, String)>,
    /// Act as a host whose map reads are cheap (a native module).
    pub cheap_maps: bool,
    /// How many times the whole response map was read.
    pub response_map_reads: std::cell::Cell<u32>,
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost {
            now: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.request_headers
            .push((name.into(), value.as_bytes().to_vec()));
        self
    }
    pub fn with_request(self, method: &str, path: &str) -> Self {
        self.with_header(":method", method)
            .with_header(":path", path)
            .with_header(":scheme", "http")
            .with_header(":authority", "svc.local:8080")
    }
    pub fn with_property(mut self, path: &str, value: &[u8]) -> Self {
        self.properties.insert(path.into(), value.to_vec());
        self
    }
    pub fn with_int_property(self, path: &str, value: i64) -> Self {
        self.with_property(path, &value.to_le_bytes())
    }
    pub fn with_response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers
            .push((name.into(), value.as_bytes().to_vec()));
        self
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

impl Host for FakeHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }
    fn now_nanos(&self) -> u64 {
        self.now
    }
}

impl StreamHost for FakeHost {
    fn request_headers(&self) -> Headers {
        to_headers(&self.request_headers)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&[u8]>) {
        let text = value.map(|v| String::from_utf8_lossy(v).into_owned());
        self.edits.push((name.into(), text));
        self.request_headers.retain(|(n, _)| n != name);
        if let Some(v) = value {
            self.request_headers.push((name.into(), v.to_vec()));
        }
    }
    /// Envoy would add a second value: a test fails if the filter adds a
    /// header the request already has.
    fn add_request_header(&mut self, name: &str, value: &[u8]) {
        assert!(
            self.header(name).is_none(),
            "added request header {name} that the request already has"
        );
        self.added.push(name.into());
        self.set_request_header(name, Some(value));
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        let text = String::from_utf8_lossy(value).into_owned();
        self.response_edits.push((name.into(), text));
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) {
        assert!(
            !self.response_headers.iter().any(|(n, _)| n == name),
            "added response header {name} that the response already has"
        );
        self.added.push(name.into());
        self.set_response_header(name, value);
    }
    fn append_response_header(&mut self, name: &str, value: &[u8]) {
        let text = String::from_utf8_lossy(value).into_owned();
        self.appended.push((name.into(), text));
    }
    fn response_headers(&self) -> Headers {
        self.response_map_reads
            .set(self.response_map_reads.get() + 1);
        to_headers(&self.response_headers)
    }
    fn reads_maps_cheaply(&self) -> bool {
        self.cheap_maps
    }
    fn response_has_header(&self, name: &str) -> bool {
        self.response_headers.iter().any(|(n, _)| n == name)
    }
    fn response_trailers(&self) -> Headers {
        to_headers(&self.response_trailers)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if self.fail_cas > 0 {
            self.fail_cas -= 1;
            return false;
        }
        let mut map = self.shared.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        let next = current.unwrap_or(0) + 1;
        map.insert(key.to_string(), (value.to_vec(), next));
        true
    }
}

impl RootHost for FakeHost {
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _timeout_ms: u64,
    ) -> Option<u32> {
        if self.refuse_dispatch {
            return None;
        }
        self.dispatched.push((
            cluster.into(),
            headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body.to_vec(),
        ));
        Some(self.dispatched.len() as u32)
    }
}
