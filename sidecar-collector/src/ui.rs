//! The web UI (`sidecar-collector/ui/`, plain HTML, CSS and JavaScript modules,
//! no build step), embedded in the binary at compile time so the collector
//! serves it with nothing beside it and nothing fetched from elsewhere:
//! `/ui/<file>` are the assets; every other GET that no route answers gets the
//! page itself, so deep links (`/trace/{id}`, `/search?…`) work on reload.
//! Imports nothing from the crate.

use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/ui");

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// What the page may load and run: only this origin's files, the analysis
/// wasm (`wasm-unsafe-eval` compiles it; no `eval` of JavaScript), style
/// attributes (the waterfall positions bars with them; nothing writes HTML),
/// and it may not be framed.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(path: &str, cache: &'static str, head: bool) -> Response {
    match ASSETS.get_file(path) {
        Some(f) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, cache),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            if head { &[][..] } else { f.contents() },
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no UI file {path}\n")).into_response(),
    }
}

async fn file(method: Method, axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    // Revalidated on every load: the files are small and change with the binary.
    asset(&path, "no-cache", method == Method::HEAD)
}

/// The page for any GET or HEAD the other routes do not answer (API paths get 404).
async fn page(method: Method, uri: Uri) -> Response {
    let p = uri.path();
    let head = method == Method::HEAD;
    if !(method == Method::GET || head) || p.starts_with("/api/") || p == "/api" {
        return (StatusCode::NOT_FOUND, format!("nothing at {p}\n")).into_response();
    }
    asset("index.html", "no-cache", head)
}

/// `/ui/*` and the page fallback; merge last (it holds the fallback).
pub fn router() -> Router {
    Router::new().route("/ui/{*path}", get(file)).fallback(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> (u16, String, String) {
        let r = router()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 22).await.unwrap();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn assets_and_deep_links() {
        let (s, ct, body) = get("/").await;
        assert_eq!((s, ct.as_str()), (200, "text/html; charset=utf-8"));
        assert!(body.contains("/ui/app.js"));
        let (s, _, body2) = get("/trace/abc123").await;
        assert_eq!((s, body2 == body), (200, true), "a deep link gets the page");
        let (s, ct, _) = get("/ui/app.js").await;
        assert_eq!((s, ct.as_str()), (200, "text/javascript; charset=utf-8"));
        assert_eq!(get("/ui/nope.js").await.0, 404);
        assert_eq!(
            get("/api/nothing").await.0,
            404,
            "API paths are not the page"
        );
    }

    #[tokio::test]
    async fn the_page_is_sent_with_its_policy_and_answers_head() {
        for uri in ["/", "/trace/abc", "/ui/app.js"] {
            let r = router()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let h = r.headers();
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{uri}");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(
                csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
                "{csp}"
            );
            assert!(
                !csp.contains("'unsafe-eval'"),
                "no eval of JavaScript: {csp}"
            );
        }
        let r = router()
            .oneshot(Request::head("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "HEAD / (was 404)");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert!(body.is_empty());
        let r = router()
            .oneshot(Request::head("/api/nothing").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    #[test]
    fn nothing_refers_to_another_origin() {
        // No CDN, no web fonts: every asset is served from here.
        for f in ASSETS.files().chain(ASSETS.dirs().flat_map(|d| d.files())) {
            let text = String::from_utf8_lossy(f.contents());
            for needle in ["http://", "https://", "//cdn", "fonts.googleapis"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(needle) && !l.contains("www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{}: {hits:?}", f.path().display());
            }
        }
    }
}
