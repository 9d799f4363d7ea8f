//! This node's view of its peers: who the members are (from the Raft
//! membership) and which answer (probed), fed to self-discovery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::link::Link;
use crate::raft::{NodeId, Raft};
use crate::self_discovery::{NodeView, SelfDiscovery};

/// How the prober runs.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    pub me: NodeId,
    pub region: String,
    /// Time between probe rounds.
    pub every: Duration,
    /// A peer unanswered for this long is lost.
    pub lost_after: Duration,
}

/// Probes every other member each round and publishes the members with
/// their liveness; ends when `shutdown` turns true. A learner is published
/// only once it has served reads (a node being added that never caught
/// up, or whose address was mistyped, is not handed to clients); voters
/// and this node always are.
pub async fn watch_peers(
    raft: Raft,
    nodes: Arc<SelfDiscovery>,
    settings: ProbeSettings,
    link: Link,
    now: fn() -> i64,
    mut shutdown: watch::Receiver<bool>,
) {
    let within = settings.every.max(Duration::from_millis(200));
    let mut last_seen: HashMap<NodeId, Instant> = HashMap::new();
    let mut first_seen: HashMap<NodeId, i64> = HashMap::new();
    let mut served: HashSet<NodeId> = HashSet::new();
    let mut metrics = raft.metrics();
    loop {
        let (membership_id, members, voters): (_, Vec<_>, HashSet<NodeId>) = {
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let nodes = membership
                .nodes()
                .map(|(id, member)| (*id, member.clone()))
                .collect();
            (
                *m.membership_config.log_id(),
                nodes,
                membership.voter_ids().collect(),
            )
        };
        for (id, _) in &members {
            // A member is given the benefit of the doubt until it has been
            // silent for `lost_after` since this node first saw it.
            last_seen.entry(*id).or_insert_with(Instant::now);
        }
        let probes = members
            .iter()
            .filter(|(id, _)| *id != settings.me)
            .map(|(id, member)| {
                let link = link.clone();
                async move { (*id, link.health(member, within).await) }
            });
        for (id, answer) in futures::future::join_all(probes).await {
            if let Ok(serving) = answer {
                last_seen.insert(id, Instant::now());
                if serving {
                    served.insert(id);
                }
            }
        }
        served.retain(|id| members.iter().any(|(m, _)| m == id));
        let views = members
            .iter()
            .filter(|(id, _)| *id == settings.me || voters.contains(id) || served.contains(id))
            .map(|(id, member)| NodeView {
                name: member.name.clone(),
                api_addr: member.api_addr.clone(),
                zone: member.zone.clone(),
                region: settings.region.clone(),
                up: *id == settings.me
                    || last_seen
                        .get(id)
                        .is_some_and(|t| t.elapsed() < settings.lost_after),
                since: *first_seen.entry(*id).or_insert_with(now),
            })
            .collect();
        nodes.update(views, now());
        let membership_changed =
            metrics.wait_for(|m| *m.membership_config.log_id() != membership_id);
        tokio::select! {
            _ = tokio::time::sleep(settings.every) => {}
            _ = membership_changed => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
    }
}
