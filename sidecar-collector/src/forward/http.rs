//! OTLP/HTTP (`http/protobuf`) for the forwarder: the batch the gRPC path
//! would send, compressed once (off the runtime) and posted to
//! `…/v1/traces` with `Content-Type: application/x-protobuf`. Answers are
//! read by the OTLP specification's rules: `2xx` is taken; `429`, `502`,
//! `503` and `504` (and a connection that fails or times out) are retried;
//! every other status is final. They are told as gRPC statuses so that one
//! retry loop serves both protocols.

use super::ForwardSettings;
use crate::config::traces_url;
use bytes::Bytes;
use std::io::Write;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Status};

/// How much of a refusal's body is kept for the log.
const SNIPPET: usize = 512;

pub(super) struct HttpExport {
    client: reqwest::Client,
    url: reqwest::Url,
    compression: Option<CompressionEncoding>,
}

impl HttpExport {
    pub fn new(s: &ForwardSettings) -> Result<HttpExport, String> {
        let url = traces_url(&s.upstream)?;
        let mut headers = s.headers.clone().into_headers();
        if let Some(t) = &s.token {
            let value = t
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or("the upstream token is not a header value")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/x-protobuf"),
        );
        if let Some(c) = s.compression {
            headers.insert(
                reqwest::header::CONTENT_ENCODING,
                reqwest::header::HeaderValue::from_static(match c {
                    CompressionEncoding::Zstd => "zstd",
                    _ => "gzip",
                }),
            );
        }
        let mut b = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(std::time::Duration::from_secs(5))
            .default_headers(headers);
        if let Some(pem) = &s.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("ca_file: not PEM certificates: {e}"))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let client = b
            .build()
            .map_err(|e| format!("the HTTP client cannot be built: {e}"))?;
        Ok(HttpExport {
            client,
            url,
            compression: s.compression,
        })
    }

    /// The body a batch is sent as: compressed once for all its attempts,
    /// on a blocking thread (a megabyte of gzip is milliseconds of CPU).
    pub async fn body(&self, batch: Bytes) -> Result<Bytes, Status> {
        let Some(c) = self.compression else {
            return Ok(batch);
        };
        tokio::task::spawn_blocking(move || compress(c, &batch))
            .await
            .map_err(|e| Status::internal(format!("compressing the batch: {e}")))?
            .map(Bytes::from)
            .map_err(|e| Status::internal(format!("compressing the batch: {e}")))
    }

    pub async fn send(&self, body: Bytes) -> Result<(), Status> {
        let mut response = self
            .client
            .post(self.url.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let code = if e.is_timeout() {
                    Code::DeadlineExceeded
                } else {
                    Code::Unavailable
                };
                Status::new(code, format!("{}: {}", self.url, chain(&e)))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // A refusal's body, as far as the log needs it.
        let mut snippet = Vec::new();
        while snippet.len() < SNIPPET {
            match response.chunk().await {
                Ok(Some(c)) => {
                    snippet.extend_from_slice(&c[..c.len().min(SNIPPET - snippet.len())])
                }
                _ => break,
            }
        }
        Err(status_of(
            status.as_u16(),
            &String::from_utf8_lossy(&snippet),
        ))
    }
}

fn compress(c: CompressionEncoding, batch: &[u8]) -> std::io::Result<Vec<u8>> {
    match c {
        CompressionEncoding::Zstd => zstd::bulk::compress(batch, 0),
        _ => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(batch.len() / 4),
                flate2::Compression::fast(),
            );
            e.write_all(batch)?;
            e.finish()
        }
    }
}

/// An HTTP answer as the gRPC status the retry loop reads: the OTLP
/// specification's retryable codes are `UNAVAILABLE`, the rest final.
pub fn status_of(code: u16, body: &str) -> Status {
    let grpc = match code {
        429 | 502 | 503 | 504 => Code::Unavailable,
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 405 => Code::Unimplemented,
        _ => Code::FailedPrecondition,
    };
    Status::new(grpc, format!("HTTP {code}: {}", body.trim()))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_ends_in_v1_traces_once() {
        for (given, url) in [
            ("http://h:4318", "http://h:4318/v1/traces"),
            ("http://h:4318/", "http://h:4318/v1/traces"),
            ("https://h/otlp", "https://h/otlp/v1/traces"),
            ("http://h:4318/v1/traces", "http://h:4318/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap().as_str(), url);
        }
        for bad in ["h:4318", "ftp://h", "http://", "not a url"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_specifications_retryable_codes_are_retried_and_no_others() {
        for code in [429, 502, 503, 504] {
            assert!(super::super::retryable(&status_of(code, "")), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 415, 500, 501] {
            let s = status_of(code, " too big \n");
            assert!(!super::super::retryable(&s), "{code}");
            assert_eq!(s.message(), format!("HTTP {code}: too big"));
        }
    }

    #[test]
    fn both_compressions_give_back_the_batch() {
        let batch: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let z = compress(CompressionEncoding::Zstd, &batch).unwrap();
        assert_eq!(zstd::bulk::decompress(&z, batch.len()).unwrap(), batch);
        let g = compress(CompressionEncoding::Gzip, &batch).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&g[..]), &mut out).unwrap();
        assert_eq!(out, batch);
        assert!(z.len() < batch.len() / 4 && g.len() < batch.len() / 4);
    }
}
