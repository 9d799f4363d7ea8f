//! Other zones' nodes for `infra.discovery`: every node asks each other
//! zone now and then which nodes it has (as the answering node sees them)
//! and publishes them beside its own zone's. A zone out of reach stays as
//! it last answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::router::Zones;
use crate::clock::now;
use crate::self_discovery::SelfDiscovery;
use crate::shutdown::stopped;

/// Keeps `nodes` up to date with zone `zone`'s nodes, asking every
/// `every`, until the node stops.
pub async fn follow(
    zones: Zones,
    zone: String,
    nodes: Arc<SelfDiscovery>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let members = zones.others.get(&zone).cloned().unwrap_or_default();
    let mut next = 0;
    while !members.is_empty() {
        let member = &members[next % members.len()];
        match zones.link.zone_nodes(member, every).await {
            Ok(views) => nodes.update_zone(&zone, views, now()),
            Err(e) => {
                tracing::debug!(
                    zone,
                    node = member.raft_addr,
                    "zone's nodes not learned: {e}"
                );
                next += 1;
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
