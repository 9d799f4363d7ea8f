//! The links with original discovery clusters, as operators see them: in
//! `/admin/status` and the metrics, and `forget` (admin token), which
//! drops what this cluster holds of an original once its link is off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Serialize;

use super::admin::{operator, Admin};
use super::params::Params;
use super::reply;
use crate::clock::now;
use crate::cluster::writer::WriteError;
use crate::registry::{upstream_name_ok, Command, Registry, RegistryError};
use crate::telemetry::UpstreamSample;
use crate::upstream::status::{Direction, Link, SideView, State as LinkState};

/// Where operators drop what is held of an original (POST, admin token).
pub const FORGET_PATH: &str = "/admin/upstream/forget";

/// One original, as this cluster holds it and this node works it.
#[derive(Serialize)]
pub struct UpstreamStatus {
    pub import: SideView,
    pub export: SideView,
    /// Instances imported from it, exported to it (replicated).
    pub imported: usize,
    pub exported: usize,
    /// Batches of its changes applied; ms since the last (this node's
    /// clock), none before the first.
    pub batches: u64,
    pub applied_ms_ago: Option<u64>,
}

fn off() -> SideView {
    SideView {
        state: LinkState::Off,
        lag_ms: 0,
        error: None,
        errors: 0,
        done: 0,
    }
}

/// Every original configured or still held (a link switched off but not
/// forgotten shows `off` both ways).
pub fn statuses(registry: &Registry, links: &[Arc<Link>]) -> BTreeMap<String, UpstreamStatus> {
    let at = now();
    let mut out = BTreeMap::new();
    let names = links
        .iter()
        .map(|l| l.name.clone())
        .chain(registry.upstreams().keys().cloned());
    for name in names {
        let held = registry.upstreams().get(&name);
        let link = links.iter().find(|l| l.name == name);
        out.insert(
            name.clone(),
            UpstreamStatus {
                import: link.map_or_else(off, |l| l.view(Direction::Import)),
                export: link.map_or_else(off, |l| l.view(Direction::Export)),
                imported: held.map_or(0, |u| u.keys.len()),
                exported: held.map_or(0, |u| u.exported.len()),
                batches: held.map_or(0, |u| u.cursor),
                applied_ms_ago: held
                    .filter(|u| u.applied_at > 0)
                    .map(|u| (at.saturating_sub(u.applied_at) / 1_000_000).max(0) as u64),
            },
        );
    }
    out
}

/// The metrics' readings of every link.
pub fn samples(statuses: &BTreeMap<String, UpstreamStatus>) -> Vec<UpstreamSample> {
    let mut out = Vec::new();
    for (name, s) in statuses {
        for (d, view, instances) in [
            (Direction::Import, &s.import, s.imported),
            (Direction::Export, &s.export, s.exported),
        ] {
            out.push(UpstreamSample {
                labels: crate::telemetry::UpstreamLabels {
                    upstream: name.clone(),
                    direction: d.label(),
                },
                state: view.state.gauge(),
                lag: Duration::from_millis(view.lag_ms),
                instances,
            });
        }
    }
    out
}

/// Drops everything held of the original `name`: refused while this node
/// still has a link with it configured (switch it off on every node
/// first, or the next leader imports it again).
pub async fn forget(State(admin): State<Admin>, headers: HeaderMap, p: Params) -> Response {
    let name = match p.required("name") {
        Ok(name) => name.to_string(),
        Err(e) => return reply::error(&e),
    };
    if let Err(e) = upstream_name_ok(&name) {
        return reply::error(&e);
    }
    if admin.upstreams.iter().any(|l| l.name == name) {
        return reply::answer(
            -409,
            &format!(
                "{name} is still configured here ([[upstream]]): remove it from every node's \
                 configuration and restart them first"
            ),
            None,
        );
    }
    let command = Command::UpstreamForget {
        upstream: name.clone(),
        at: now(),
    };
    match admin
        .api
        .writer
        .write(command, operator(&headers).into())
        .await
    {
        Ok(Ok(_)) => reply::answer(0, &format!("{name} forgotten"), None),
        Ok(Err(RegistryError::NotFound)) => {
            reply::answer(-404, &format!("nothing is held of {name}"), None)
        }
        Ok(Err(e)) | Err(WriteError::Invalid(e)) => reply::error(&e),
        Err(e) => reply::answer(-503, &e.to_string(), None),
    }
}
