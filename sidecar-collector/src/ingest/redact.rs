//! Redaction at ingest: credentials never reach the store, a forward queue or
//! Kafka, whoever sent them (an SDK, a sender outside the mesh, a misconfigured
//! filter). Three rules, applied to span, event, link and resource attributes
//! and inside nested key/value lists and arrays:
//!
//! 1. **Names**: an attribute whose key's last dot-separated segment is a
//!    credential name has its value replaced by `[REDACTED]`. Names compare
//!    without case and without `-` / `_`: `api_key`, `API-KEY` and `apikey`
//!    are one name; `db.password` and `http.request.header.x-auth-token` match
//!    by their last segment. The default list is [`DEFAULT_NAMES`] (the
//!    filter's sensitive headers among them); `redaction.keys` adds names,
//!    `redaction.allow` keeps whole keys verbatim.
//! 2. **URLs**: in `url.full`, `url.query`, `url.original`, `http.url` and
//!    `http.target`, userinfo (`user:pass@`) becomes `REDACTED:REDACTED@` and
//!    the value of every query parameter named like a credential (the names
//!    above plus [`URL_PARAMETERS`]) becomes `REDACTED`, the rest of the URL
//!    kept (OpenTelemetry's semantic conventions for `url.*`).
//! 3. **Patterns** (`redaction.patterns`, off by default): regular expressions
//!    over every string value; each match becomes `[REDACTED]` (a bearer token
//!    inside a log message, an AWS key id in an exception).
//!
//! Cost per span: `scripts/bench/redaction`.

use meshtrace_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use meshtrace_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use meshtrace_proto::otlp::resource::v1::Resource;
use meshtrace_proto::otlp::trace::v1::Span;
use meshtrace_proto::semconv::{REDACTED, SENSITIVE_HEADERS};
use std::collections::HashSet;

/// Sets of names, hashed with foldhash (not DoS-resistant, and need not be:
/// the names come from the configuration, only lookups from senders).
type Names = HashSet<String, foldhash::fast::FixedState>;

/// Credential names redacted by default (beside the filter's
/// `SENSITIVE_HEADERS`), compared without case, `-` and `_`.
pub const DEFAULT_NAMES: &[&str] = &[
    "api_key",
    "apikey",
    "x-api-key",
    "x-auth-token",
    "x-goog-api-key",
    "x-amz-security-token",
    "x-csrf-token",
    "x-xsrf-token",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "session_token",
    "auth_token",
    "bearer_token",
    "secret",
    "client_secret",
    "secret_key",
    "secret_access_key",
    "private_key",
    "credentials",
    "connection_string",
];

/// Query parameters masked in URLs besides the names: signatures and keys of
/// signed URLs.
pub const URL_PARAMETERS: &[&str] = &[
    "key",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
    "code",
];

/// Attributes whose values are URLs (or a URL's query).
pub const URL_KEYS: &[&str] = &[
    "url.full",
    "url.query",
    "url.original",
    "http.url",
    "http.target",
];

/// What URL parts become (OpenTelemetry's convention: no brackets, they would
/// need escaping in a URL).
const URL_REDACTED: &str = "REDACTED";

/// Nesting followed into key/value lists and arrays (deeper values are left as they are).
const MAX_DEPTH: usize = 16;

/// `name` lowercased without `-` and `_`, into `out`.
fn normalize_into(name: &str, out: &mut String) {
    out.clear();
    if name.is_ascii() {
        // Byte by byte: no UTF-8 decoding for the keys spans carry.
        for b in name.bytes() {
            if b != b'-' && b != b'_' {
                out.push(b.to_ascii_lowercase() as char);
            }
        }
    } else {
        out.extend(
            name.chars()
                .filter(|c| *c != '-' && *c != '_')
                .map(|c| c.to_ascii_lowercase()),
        );
    }
}

/// Whether `key` holds a URL (rule 2); most keys fail on their first bytes.
fn is_url_key(key: &str) -> bool {
    let k = key.as_bytes();
    (k.len() >= 4 && (k[..4].eq_ignore_ascii_case(b"url.") || k[..4].eq_ignore_ascii_case(b"http")))
        && URL_KEYS.iter().any(|u| u.eq_ignore_ascii_case(key))
}

/// A bitmap of (length below 64, first byte, last byte) of normalized names, and
/// whether any name is longer.
#[derive(Debug, Clone)]
struct Shapes {
    bits: Box<[u64]>,
    long: bool,
}

impl Shapes {
    fn index(len: usize, first: u8, last: u8) -> usize {
        (len << 12) | ((usize::from(first) & 63) << 6) | (usize::from(last) & 63)
    }

    fn new<'a>(names: impl Iterator<Item = &'a String>) -> Shapes {
        let mut bits = vec![0u64; 64 * 4096 / 64].into_boxed_slice();
        let mut long = false;
        for n in names {
            let b = n.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) if b.len() < 64 => {
                    let i = Self::index(b.len(), *f, *l);
                    bits[i >> 6] |= 1 << (i & 63);
                }
                _ => long = true,
            }
        }
        Shapes { bits, long }
    }

    /// Whether the last `.`-separated segment of `key`, when ASCII, cannot
    /// normalize to a name: one pass from the end, no search, no copy (most keys
    /// of every span end here). False also when the segment is not ASCII.
    fn excludes_last_segment(&self, key: &str) -> bool {
        let (mut len, mut first, mut last) = (0usize, 0u8, 0u8);
        for &b in key.as_bytes().iter().rev() {
            if b == b'.' {
                break;
            }
            if !b.is_ascii() {
                return false;
            }
            if b != b'-' && b != b'_' {
                let l = b.to_ascii_lowercase();
                if len == 0 {
                    last = l;
                }
                first = l;
                len += 1;
            }
        }
        !self.holds_shape(len, first, last)
    }

    fn holds_shape(&self, len: usize, first: u8, last: u8) -> bool {
        if len == 0 {
            return true;
        }
        if len >= 64 {
            return self.long;
        }
        let i = Self::index(len, first, last);
        self.bits[i >> 6] & (1 << (i & 63)) != 0
    }
}

fn normalized(name: &str) -> String {
    let mut s = String::new();
    normalize_into(name, &mut s);
    s
}

/// A `redaction.patterns` entry that is not a regular expression.
#[derive(Debug, thiserror::Error)]
#[error("redaction.patterns[{index}]: {source}")]
pub struct PatternError {
    pub index: usize,
    #[source]
    pub source: regex::Error,
}

/// The rules, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Redaction {
    names: Names,
    /// The names' shapes (length, first and last byte, normalized): most keys are
    /// told apart by these alone, without building and hashing their normal form.
    shapes: Shapes,
    url_parameters: Names,
    allow: Vec<String>,
    patterns: Option<(regex::RegexSet, Vec<regex::Regex>)>,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction::new(&[], &[])
    }
}

impl Redaction {
    /// The default rules plus `extra` names; keys in `allow` are kept verbatim.
    pub fn new(extra: &[String], allow: &[String]) -> Self {
        let names: Names = SENSITIVE_HEADERS
            .iter()
            .chain(DEFAULT_NAMES)
            .map(|s| normalized(s))
            .chain(extra.iter().map(|s| normalized(s)))
            .collect();
        let url_parameters = names
            .iter()
            .cloned()
            .chain(URL_PARAMETERS.iter().map(|s| normalized(s)))
            .collect();
        Redaction {
            shapes: Shapes::new(names.iter()),
            names,
            url_parameters,
            allow: allow.to_vec(),
            patterns: None,
        }
    }

    /// With `redaction.patterns`: every match in a string value is redacted.
    pub fn with_patterns(mut self, patterns: &[String]) -> Result<Self, PatternError> {
        if patterns.is_empty() {
            self.patterns = None;
            return Ok(self);
        }
        let compiled = patterns
            .iter()
            .enumerate()
            .map(|(index, p)| regex::Regex::new(p).map_err(|source| PatternError { index, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let set =
            regex::RegexSet::new(patterns).map_err(|source| PatternError { index: 0, source })?;
        self.patterns = Some((set, compiled));
        Ok(self)
    }

    /// Whether the value of attribute `key` is replaced (rule 1).
    pub fn is_sensitive(&self, key: &str) -> bool {
        let mut buf = String::with_capacity(key.len());
        self.sensitive_with(key, &mut buf)
    }

    fn sensitive_with(&self, key: &str, buf: &mut String) -> bool {
        if self.shapes.excludes_last_segment(key) {
            return false;
        }
        let last = key.rsplit('.').next().unwrap_or(key);
        normalize_into(last, buf);
        if !self.names.contains(buf.as_str()) {
            return false;
        }
        !self.allow.iter().any(|a| a.eq_ignore_ascii_case(key))
    }

    /// `url` with its userinfo and credential-named query parameters masked
    /// (rule 2); `None` when nothing in it is a credential.
    pub fn redact_url(&self, url: &str) -> Option<String> {
        // Most URLs carry neither userinfo nor a query: nothing to build.
        if !url.contains('@') && !url.contains('=') {
            return None;
        }
        let mut changed = false;
        let mut out = String::with_capacity(url.len() + 16);
        let mut rest = url;
        if let Some(i) = url.find("://") {
            let after = &url[i + 3..];
            out.push_str(&url[..i + 3]);
            // Userinfo: an '@' in the authority (before the path, query or fragment).
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            rest = match after[..end].rfind('@') {
                Some(at) => {
                    changed = true;
                    out.push_str(URL_REDACTED);
                    if after[..at].contains(':') {
                        out.push(':');
                        out.push_str(URL_REDACTED);
                    }
                    &after[at..]
                }
                None => after,
            };
        }
        let (main, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
        let (path, query) = match main.find('?') {
            Some(q) => main.split_at(q + 1),
            // A bare query (`url.query` holds `a=1&b=2`): no scheme, no path.
            None if !url.contains("://") && !main.starts_with('/') && main.contains('=') => {
                ("", main)
            }
            None => (main, ""),
        };
        out.push_str(path);
        let mut buf = String::new();
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) => {
                    normalize_into(name, &mut buf);
                    if self.url_parameters.contains(buf.as_str()) {
                        changed = true;
                        out.push_str(name);
                        out.push('=');
                        out.push_str(URL_REDACTED);
                    } else {
                        out.push_str(pair);
                    }
                }
                None => out.push_str(pair),
            }
        }
        out.push_str(fragment);
        changed.then_some(out)
    }

    /// Rule 3 on one string: `None` when no pattern matches.
    fn redact_patterns(&self, s: &str) -> Option<String> {
        let (set, all) = self.patterns.as_ref()?;
        let hits = set.matches(s);
        if !hits.matched_any() {
            return None;
        }
        let mut out = s.to_string();
        for i in hits.iter() {
            if let Some(re) = all.get(i) {
                out = re.replace_all(&out, REDACTED).into_owned();
            }
        }
        Some(out)
    }

    /// Rules 2 and 3 inside a value, and rule 1 inside its nested lists.
    fn redact_value(&self, key: &str, v: &mut AnyValue, depth: usize, buf: &mut String) -> u64 {
        match v.value.as_mut() {
            Some(any_value::Value::StringValue(s)) => {
                let mut n = 0;
                if is_url_key(key) {
                    if let Some(r) = self.redact_url(s) {
                        *s = r;
                        n += 1;
                    }
                }
                if let Some(r) = self.redact_patterns(s) {
                    *s = r;
                    n += 1;
                }
                n
            }
            Some(any_value::Value::KvlistValue(l)) if depth < MAX_DEPTH => {
                self.redact_attrs(&mut l.values, depth + 1, buf)
            }
            Some(any_value::Value::ArrayValue(a)) if depth < MAX_DEPTH => a
                .values
                .iter_mut()
                .map(|x| self.redact_value(key, x, depth + 1, buf))
                .sum(),
            _ => 0,
        }
    }

    fn redact_attrs(&self, attrs: &mut [KeyValue], depth: usize, buf: &mut String) -> u64 {
        let mut n = 0;
        for a in attrs.iter_mut() {
            if self.sensitive_with(&a.key, buf) {
                a.value = Some(AnyValue {
                    value: Some(any_value::Value::StringValue(REDACTED.into())),
                });
                n += 1;
            } else if let Some(v) = a.value.as_mut() {
                n += self.redact_value(&a.key, v, depth, buf);
            }
        }
        n
    }

    /// Whether redaction would change attribute `key` with the string value `value`
    /// (`None`: a value of another type, left alone unless the key is sensitive).
    pub fn would_change(&self, key: &str, value: Option<&str>, buf: &mut String) -> bool {
        if self.sensitive_with(key, buf) {
            return true;
        }
        value.is_some_and(|s| {
            (is_url_key(key) && self.redact_url(s).is_some())
                || self
                    .patterns
                    .as_ref()
                    .is_some_and(|(set, _)| set.is_match(s))
        })
    }

    /// Redacts a resource's attributes; how many values changed.
    pub fn apply_resource(&self, r: &mut Resource) -> u64 {
        self.redact_attrs(&mut r.attributes, 0, &mut String::new())
    }

    /// Redacts a span's, its events' and its links' attributes; how many values changed.
    pub fn apply_span(&self, s: &mut Span) -> u64 {
        let mut buf = String::new();
        let mut m = self.redact_attrs(&mut s.attributes, 0, &mut buf);
        for e in &mut s.events {
            m += self.redact_attrs(&mut e.attributes, 0, &mut buf);
        }
        for l in &mut s.links {
            m += self.redact_attrs(&mut l.attributes, 0, &mut buf);
        }
        m
    }

    /// Redacts span, event, link and resource attributes in place; returns how
    /// many values were changed.
    pub fn apply(&self, req: &mut ExportTraceServiceRequest) -> u64 {
        self.apply_marking(req, &mut Vec::new())
    }

    /// [`Redaction::apply`], pushing to `changed`, span by span in order, whether
    /// anything in the span itself (not its resource) was redacted.
    pub fn apply_marking(
        &self,
        req: &mut ExportTraceServiceRequest,
        changed: &mut Vec<bool>,
    ) -> u64 {
        let mut n = 0;
        let mut buf = String::new();
        for rs in &mut req.resource_spans {
            if let Some(r) = rs.resource.as_mut() {
                n += self.redact_attrs(&mut r.attributes, 0, &mut buf);
            }
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    let m = self.apply_span(s);
                    changed.push(m > 0);
                    n += m;
                }
            }
        }
        n
    }
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
