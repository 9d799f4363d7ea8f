//! What `/admin/status` and `/metrics` show of each original discovery
//! this cluster follows: the link's state both ways (this node's view)
//! and what the replicated registry holds of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::status::{Direction, Link, SideView, State as LinkState};
use crate::clock::now;
use crate::registry::Registry;
use crate::telemetry::UpstreamSample;

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
