//! The web console every node serves at `/`: one page of plain HTML, CSS
//! and JavaScript embedded in the binary (no build step, nothing fetched
//! from elsewhere). It reads the public API (`/discovery/fetch/all`,
//! `/admin/status`) and follows `/admin/changes`, the node's long poll of
//! its recent changes, so it updates live.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("console.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page loads nothing from elsewhere, and nothing else may
            // frame it.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}
