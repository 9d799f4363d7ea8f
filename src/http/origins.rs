//! Where the instances this cluster does not own come from (another
//! zone, or an original discovery cluster it follows): what the console
//! marks each row with. Every other instance is this cluster's own. Read
//! like `/admin/status`: it names nothing `fetch/all` does not show.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::admin::Admin;

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
pub async fn origins(State(Admin { api, .. }): State<Admin>) -> Response {
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
    Json(by_app).into_response()
}
