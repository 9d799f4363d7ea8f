//! Where the instances this cluster does not own come from (another
//! zone, or an original discovery cluster it follows): what the console
//! marks each row with. Every other instance is this cluster's own. Read
//! like `/admin/status`: it names nothing `fetch/all` does not show.
//!
//! A cluster in the middle of a migration may hold a whole fleet imported:
//! the answer is about a hundred bytes per instance, so it is paid for
//! from the budget of unsent answers (`limits.max_unsent_bytes`, a quarter
//! of it per address) as `fetch/all` is, before anything is built, and
//! the registry's lock is let go before it is sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures::StreamExt;
use serde::Serialize;

use super::admin::Admin;
use super::reply;

/// About what one row of the answer takes (JSON) while it waits unsent.
pub const ROW_BYTES: usize = 128;

/// The pieces the answer is handed to the connection in.
const PIECE: usize = 64 << 10;

/// One instance held for another origin.
#[derive(Serialize)]
pub struct Held<'a> {
    pub env: &'a str,
    pub zone: &'a str,
    pub hostname: &'a str,
    /// `zone <name>` or `original <name>`.
    pub from: String,
}

/// `GET /admin/origins`: `{"<appid>": [{env, zone, hostname, from}]}`.
pub async fn origins(
    State(Admin { api, .. }): State<Admin>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
) -> Response {
    let rows = {
        let registry = api.local.read();
        let zones: usize = registry.partitions().values().map(|p| p.keys.len()).sum();
        let originals: usize = registry.upstreams().values().map(|u| u.keys.len()).sum();
        zones + originals
    };
    let spend = match api.unsent.take(client.ip(), rows.saturating_mul(ROW_BYTES)) {
        Ok(spend) => spend,
        Err(refused) => {
            return reply::overloaded(&format!("origins: bytes of answers unsent: {refused}"))
        }
    };
    let answer = {
        let registry = api.local.read();
        let mut by_app: BTreeMap<&str, Vec<Held>> = BTreeMap::new();
        let zones = registry
            .partitions()
            .iter()
            .map(|(name, p)| (format!("zone {name}"), &p.keys));
        let originals = registry
            .upstreams()
            .iter()
            .map(|(name, u)| (format!("original {name}"), &u.keys));
        for (from, keys) in zones.chain(originals) {
            for k in keys {
                by_app.entry(&k.appid).or_default().push(Held {
                    env: &k.env,
                    zone: &k.zone,
                    hostname: &k.hostname,
                    from: from.clone(),
                });
            }
        }
        Bytes::from(serde_json::to_vec(&by_app).unwrap_or_default())
    };
    let pieces: Vec<Bytes> = (0..answer.len())
        .step_by(PIECE)
        .map(|at| answer.slice(at..(at + PIECE).min(answer.len())))
        .collect();
    // The share is given back once the last piece was taken, or the
    // connection dropped the answer.
    let body = futures::stream::iter(pieces).map(move |piece| {
        let _held = &spend;
        Ok::<_, std::convert::Infallible>(piece)
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}
