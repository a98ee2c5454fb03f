//! What the filter needs from its host (Envoy through proxy-wasm, or a fake in tests).

/// Header map as the host returns it: lowercase names, raw values.
pub type Headers = Vec<(String, Vec<u8>)>;

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
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn response_headers(&self) -> Headers;
    /// Sets a response header (to the downstream caller).
    fn set_response_header(&mut self, name: &str, value: &str);
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
