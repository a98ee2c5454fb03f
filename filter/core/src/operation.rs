//! Operation names: usable as sampling keys, bounded in number.
//!
//! Default: `METHOD /path` with the query dropped and high-cardinality
//! segments (numbers, UUIDs, long hex, long opaque tokens) replaced by a
//! placeholder. Configured path templates are tried first. At most
//! `max_operations` distinct names per VM; later new names become the
//! overflow name and are counted.

use crate::config::{OperationRule, OperationsConfig};
use rustc_hash::FxHashSet;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Seg {
    Literal(String),
    One,
    Rest,
}

#[derive(Debug, Clone)]
struct Rule {
    method: Option<String>,
    segs: Vec<Seg>,
    name_suffix: Option<String>,
    template: String,
}

impl Rule {
    fn new(r: &OperationRule) -> Self {
        let segs = split_path(&r.path)
            .map(|s| match s {
                "**" => Seg::Rest,
                "*" => Seg::One,
                s if s.starts_with('{') && s.ends_with('}') => Seg::One,
                s => Seg::Literal(s.to_string()),
            })
            .collect();
        Rule {
            method: r.method.clone(),
            segs,
            name_suffix: r.name.clone(),
            template: r.path.clone(),
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        let mut it = split_path(path);
        for seg in &self.segs {
            match seg {
                Seg::Rest => return true,
                Seg::One => {
                    if it.next().is_none() {
                        return false;
                    }
                }
                Seg::Literal(l) => {
                    if it.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        it.next().is_none()
    }
}

fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Strips `?query` and `#fragment`.
pub fn path_without_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Whether a path segment looks like an id.
pub fn is_high_cardinality(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let is_uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if is_uuid {
        return true;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Long opaque tokens (base64url ids, JWT-like) with at least one digit.
    b.len() >= 24
        && b.iter().any(u8::is_ascii_digit)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'='))
}

/// Produces bounded operation names.
#[derive(Debug)]
pub struct OperationNamer {
    rules: Vec<Rule>,
    placeholder: String,
    max: usize,
    overflow_name: Arc<str>,
    seen: FxHashSet<Arc<str>>,
    /// Reused for building names.
    scratch: String,
    /// Requests that got the overflow name.
    pub overflowed: u64,
}

impl OperationNamer {
    pub fn new(cfg: &OperationsConfig) -> Self {
        OperationNamer {
            rules: cfg.rules.iter().map(Rule::new).collect(),
            placeholder: cfg.placeholder.clone(),
            max: cfg.max_operations,
            overflow_name: Arc::from(cfg.overflow_name.as_str()),
            seen: FxHashSet::default(),
            scratch: String::new(),
            overflowed: 0,
        }
    }

    /// The unbounded name (before the cap).
    pub fn raw_name(&self, method: &str, path: &str) -> String {
        let mut name = String::new();
        self.write_raw_name(method, path, &mut name);
        name
    }

    fn write_raw_name(&self, method: &str, path: &str, name: &mut String) {
        name.clear();
        let path = path_without_query(path);
        for r in &self.rules {
            if r.matches(method, path) {
                match &r.name_suffix {
                    Some(n) => name.push_str(n),
                    None => {
                        name.push_str(method);
                        name.push(' ');
                        name.push_str(&r.template);
                    }
                }
                return;
            }
        }
        name.push_str(method);
        name.push(' ');
        if path.is_empty() {
            name.push('/');
            return;
        }
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                name.push('/');
            }
            if is_high_cardinality(seg) {
                name.push_str(&self.placeholder);
            } else {
                name.push_str(seg);
            }
        }
    }

    /// The name to use, within the cap. Known names are shared, not copied.
    pub fn name(&mut self, method: &str, path: &str) -> Arc<str> {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.write_raw_name(method, path, &mut scratch);
        let found = self.seen.get(scratch.as_str()).cloned();
        let name = match found {
            Some(n) => n,
            None if self.seen.len() < self.max => {
                let n: Arc<str> = Arc::from(scratch.as_str());
                self.seen.insert(n.clone());
                n
            }
            None => {
                self.overflowed += 1;
                self.overflow_name.clone()
            }
        };
        self.scratch = scratch;
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn namer(json: &str) -> OperationNamer {
        OperationNamer::new(&Config::from_json(json.as_bytes()).unwrap().operations)
    }

    #[test]
    fn default_names() {
        let n = namer("{}");
        let cases = [
            (
                "GET",
                "/api/users/12345",
                "GET /api/users/{id}",
                "numeric id",
            ),
            (
                "GET",
                "/api/users/12345?x=1",
                "GET /api/users/{id}",
                "query dropped",
            ),
            (
                "GET",
                "/a/550e8400-e29b-41d4-a716-446655440000/b",
                "GET /a/{id}/b",
                "uuid",
            ),
            (
                "GET",
                "/blob/4bf92f3577b34da6a3ce929d",
                "GET /blob/{id}",
                "long hex",
            ),
            (
                "GET",
                "/t/eyJhbGciOiJIUzI1NiJ9abc123",
                "GET /t/{id}",
                "opaque token",
            ),
            ("POST", "/api/v1/memory", "POST /api/v1/memory", "v1 kept"),
            ("GET", "/cafe", "GET /cafe", "short hex word kept"),
            ("GET", "", "GET /", "empty path"),
            ("GET", "/", "GET /", "root"),
            ("GET", "/a/", "GET /a/", "trailing slash kept"),
        ];
        for (m, p, want, why) in cases {
            assert_eq!(n.raw_name(m, p), want, "{why}");
        }
    }

    #[test]
    fn rules_first() {
        let n = namer(
            r#"{"operations":{"rules":[
            {"method":"GET","path":"/users/{user}/orders"},
            {"path":"/static/**","name":"static"},
            {"path":"/x/*/y","name":"xy"}]}}"#,
        );
        assert_eq!(
            n.raw_name("GET", "/users/bob/orders"),
            "GET /users/{user}/orders"
        );
        assert_eq!(
            n.raw_name("POST", "/users/bob/orders"),
            "POST /users/bob/orders",
            "method must match"
        );
        assert_eq!(n.raw_name("GET", "/static/a/b/c.css"), "static");
        assert_eq!(n.raw_name("GET", "/x/1/y"), "xy");
        assert_eq!(
            n.raw_name("GET", "/x/1/y/z"),
            "GET /x/{id}/y/z",
            "too long for the template"
        );
    }

    #[test]
    fn cap_and_overflow() {
        let mut n = namer(r#"{"operations":{"max_operations":2}}"#);
        assert_eq!(&*n.name("GET", "/a"), "GET /a");
        assert_eq!(&*n.name("GET", "/b"), "GET /b");
        assert_eq!(&*n.name("GET", "/c"), "overflow");
        assert_eq!(&*n.name("GET", "/a"), "GET /a", "known names stay");
        assert_eq!(n.overflowed, 1);
    }
}
