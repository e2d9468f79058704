//! The web client, embedded at build time (`build.rs` → `ASSETS`) and served at `/`.
//!
//! Every file is answered with its ETag (`no-cache`: revalidate, then 304), `nosniff`, and a
//! strict Content-Security-Policy: scripts and styles from this origin only, no inline script,
//! no plugins, no framing — so even a rendering bug could not run a message as code.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// One embedded file.
pub(super) struct Asset {
    pub(super) path: &'static str,
    pub(super) content_type: &'static str,
    pub(super) etag: &'static str,
    pub(super) bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /` and `GET /app/...`.
pub(super) async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let path = if uri.path() == "/" { "/index.html" } else { uri.path() };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return Error::not_found("no such file").into_response();
    };
    let fresh = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == asset.etag.as_bytes());
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.bytes.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_embedded_and_typed() {
        let index = ASSETS.iter().find(|a| a.path == "/index.html").expect("index.html embedded");
        assert!(std::str::from_utf8(index.bytes).unwrap().contains("/app/main.js"));
        assert!(ASSETS.iter().any(|a| a.path == "/app/main.js" && a.content_type.starts_with("text/javascript")));
        // ETags differ per content.
        let mut tags: Vec<_> = ASSETS.iter().map(|a| a.etag).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
