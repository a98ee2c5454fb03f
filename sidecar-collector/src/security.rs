//! No open doors: TLS (rustls) for the listeners and bearer tokens for who
//! may send spans (ingest: OTLP and the strategies a sidecar fetches) and who
//! may read them (query). Health and `/metrics` stay open (probes and
//! Prometheus scrape them), everything else asks for a token when tokens are
//! configured.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Response, StatusCode};
use axum::middleware::Next;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SecurityError {
    pub key: &'static str,
    pub message: String,
}

fn fail(key: &'static str, message: impl Into<String>) -> SecurityError {
    SecurityError {
        key,
        message: message.into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(key, format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(fail(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// A TLS acceptor from PEM files; with `client_ca`, clients must present a
/// certificate it signed (mutual TLS).
pub fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, SecurityError> {
    let chain = certs("tls.cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| fail("tls.key_file", format!("{}: {e}", key_file.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("tls", e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("tls.client_ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| fail("tls.client_ca_file", format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| fail("tls.client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| fail("tls.key_file", format!("does not match tls.cert_file: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| fail(key, format!("{}: {e}", path.display())))
}

/// TLS to an upstream collector: its CA, and a client certificate and key
/// when it asks for mutual TLS. `None` without a CA (plain `http://`).
pub fn client_tls(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Option<tonic::transport::ClientTlsConfig>, SecurityError> {
    let Some(ca) = ca_file else {
        return Ok(None);
    };
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(read("sidecar.ca_file", ca)?),
    );
    if let Some((cert, key)) = client {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read("sidecar.client_cert_file", cert)?,
            read("sidecar.client_key_file", key)?,
        ));
    }
    Ok(Some(tls))
}

/// `Bearer <token>` from a file holding the token (a mounted Secret).
pub fn bearer_from_file(
    path: &Path,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, SecurityError> {
    let text = String::from_utf8(read("sidecar.token_file", path)?)
        .map_err(|_| fail("sidecar.token_file", "not UTF-8"))?;
    format!("Bearer {}", text.trim())
        .parse()
        .map_err(|_| fail("sidecar.token_file", "not a valid header value"))
}

/// Accepted bearer tokens (none: no authentication).
#[derive(Clone, Default)]
pub struct Tokens {
    /// What the tokens are for, in the refusal (`ingest`, `query`).
    pub purpose: &'static str,
    pub tokens: Arc<Vec<String>>,
}

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(given) = authorization.and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) else {
            return false;
        };
        let given = given.trim().as_bytes();
        // Every token is compared, so the time says nothing about which matched.
        self.tokens
            .iter()
            .fold(false, |ok, t| same(t.as_bytes(), given) | ok)
    }
}

/// Paths open without a token: probes and the Prometheus scrape.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Middleware: 401 (gRPC `UNAUTHENTICATED`) without a valid bearer token.
pub async fn require_token(State(t): State<Tokens>, req: Request, next: Next) -> Response<Body> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if open_path(req.uri().path()) || t.allows(auth) {
        return next.run(req).await;
    }
    let msg = format!(
        "a valid bearer token for {} is required (Authorization: Bearer <token>)",
        t.purpose
    );
    let grpc = crate::grpc::is_grpc(req.headers());
    let mut r = crate::grpc::refusal(
        grpc,
        tonic::Code::Unauthenticated,
        StatusCode::UNAUTHORIZED,
        msg,
    );
    if !grpc {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Tokens listed in the configuration and in a file (one per line, `#` comments).
pub fn load_tokens(
    key: &'static str,
    listed: &[String],
    file: Option<&Path>,
) -> Result<Vec<String>, SecurityError> {
    let mut out: Vec<String> = listed.iter().map(|t| t.trim().to_string()).collect();
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).map_err(|e| fail(key, format!("{}: {e}", f.display())))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    if let Some(short) = out.iter().find(|t| t.len() < 16) {
        return Err(fail(
            key,
            format!(
                "a token of {} characters is too easy to guess (at least 16)",
                short.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_whole() {
        let t = Tokens {
            purpose: "ingest",
            tokens: Arc::new(vec![
                "s3cret-token-0123456789".into(),
                "other-token-abcdefgh".into(),
            ]),
        };
        assert!(t.allows(Some("Bearer s3cret-token-0123456789")));
        assert!(t.allows(Some("Bearer other-token-abcdefgh")));
        assert!(!t.allows(Some("Bearer s3cret-token-012345678")));
        assert!(!t.allows(Some("s3cret-token-0123456789")));
        assert!(!t.allows(None));
        assert!(Tokens::default().allows(None), "no tokens: open");
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(load_tokens("auth.ingest_tokens", &["short".into()], None).is_err());
        assert_eq!(
            load_tokens("auth.ingest_tokens", &["0123456789abcdef".into()], None)
                .unwrap()
                .len(),
            1
        );
    }
}
