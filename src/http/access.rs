//! Who may change what through the client port. Existing SDKs send no
//! credentials, so registry writes are limited by source address
//! (`allow_write_from`, as Consul's `allow_write_http_from`); cluster
//! changes need the admin bearer token. Reads and polls stay open.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, REFERER};
use axum::middleware::Next;
use axum::response::Response;

use super::reply;
use crate::fair::Throttle;

pub use crate::auth::Access;

/// Lets a registry write through only from an allowed network.
pub async fn writes(
    State(access): State<Arc<Access>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(site) = cross_site(&request) {
        let message = format!("a write posted from another site ({site}) is refused");
        return reply::answer(-403, &message, None);
    }
    if access.may_write(remote.ip()) {
        return next.run(request).await;
    }
    reply::error(&Access::refused(remote.ip()))
}

/// Refusals of a wrong or missing token are logged once a minute per
/// reason, with how many were held back: a client sending wrong tokens in
/// a loop cannot flood the log.
static REFUSALS: LazyLock<Throttle> = LazyLock::new(|| Throttle::new(Duration::from_secs(60)));

fn refused(what: &str, remote: SocketAddr, reason: &str) {
    if let Some(held_back) = REFUSALS.allow(reason, Instant::now()) {
        tracing::warn!(%remote, held_back, "{what} refused: {reason}");
    }
}

fn authorization(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Lets an admin change through only with the admin token.
pub async fn admin(
    State(access): State<Arc<Access>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match access.admin_token.check(authorization(&request)) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            refused("admin change", remote, reason);
            reply::unauthorized(reason)
        }
    }
}

/// Lets `/metrics` through only with the metrics token (or the admin
/// token), when one is configured.
pub async fn metrics(
    State(access): State<Arc<Access>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !access.metrics_token.is_set() || access.insider(authorization(&request)) {
        return next.run(request).await;
    }
    let reason = "/metrics needs an Authorization: Bearer token (security.metrics_token)";
    refused("metrics", remote, reason);
    reply::unauthorized(reason)
}

/// Whether the request may see what `public_status = false` keeps from
/// strangers.
pub fn insider(access: &Access, headers: &axum::http::HeaderMap) -> bool {
    access.public_status || access.insider(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// The other site a browser says a request comes from, if any: an
/// `Origin` or `Referer` whose host is not the one the request is
/// addressed to. The SDKs and curl send neither header.
fn cross_site(request: &Request) -> Option<String> {
    let headers = request.headers();
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    [ORIGIN, REFERER].into_iter().find_map(|name| {
        let value = headers.get(name)?.to_str().unwrap_or("?");
        let from = value
            .split_once("://")
            .map_or(value, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        (Some(from) != host).then(|| value.to_string())
    })
}
