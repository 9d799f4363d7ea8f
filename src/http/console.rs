//! The web console every node serves at `/`: one page of plain HTML, its
//! stylesheet and its script, embedded in the binary (no build step,
//! nothing fetched from elsewhere). It reads the public API
//! (`/discovery/fetch/all`, `/admin/status`) and follows `/admin/changes`,
//! the node's long poll of its recent changes, so it updates live.
//!
//! The stylesheet and the script are files of their own, so the page's
//! policy allows only what this node serves: no inline script or style
//! runs, so text from the registry that reached the page as markup could
//! run nothing.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("console.html");
const STYLE: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// What the page may load and run: this node's files only, nothing
/// inline, nothing framing it, no form posting anywhere.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                      object-src 'none'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

fn serve(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

pub async fn page() -> impl IntoResponse {
    serve("text/html; charset=utf-8", PAGE)
}

pub async fn style() -> impl IntoResponse {
    serve("text/css; charset=utf-8", STYLE)
}

pub async fn script() -> impl IntoResponse {
    serve("text/javascript; charset=utf-8", SCRIPT)
}
