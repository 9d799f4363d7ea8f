//! Forming the cluster from the configured initial members, exactly once.
//!
//! A node with any Raft state (an existing data dir) never initialises. A
//! pristine node initialises only when a majority of the initial members
//! (itself included) answer, every member that answers is pristine too,
//! and it has the lowest id of them. One initialiser, not several: with
//! openraft 0.9 two nodes initialising at once could both be elected in
//! term 1 (a higher node id wins a tie in that term), and the second
//! leader then lacked the entry the first had committed: followers refused
//! its appends and the cluster never took a write (seen when node 3
//! started a few milliseconds ahead of node 1). A pristine node that finds
//! an initialised peer (it was wiped, or it is being added) waits for the
//! leader to reach it instead.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::link::Link;
use crate::raft::{Member, NodeId, Raft};

/// Whether a node has joined a cluster, as it tells its peers.
#[derive(Debug, Serialize, Deserialize)]
pub struct BootstrapState {
    pub initialized: bool,
    /// The cluster it belongs to, once its log is named (none from
    /// earlier builds).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Who the node is, as its own configuration says (none from earlier
    /// builds): what adding it takes its client address and zone from.
    #[serde(default)]
    pub node: Option<(NodeId, Member)>,
}

/// Runs until the node is part of a cluster (or shutdown).
pub async fn form_cluster(
    raft: Raft,
    me: NodeId,
    initial: Vec<(NodeId, Member)>,
    link: Link,
    retry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let within = retry.max(Duration::from_millis(200));
    loop {
        match raft.is_initialized().await {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        if should_initialize(&link, within, me, &initial).await {
            let members: BTreeMap<NodeId, Member> = initial.iter().cloned().collect();
            tracing::info!(?members, "initialising the cluster");
            if let Err(e) = raft.initialize(members).await {
                tracing::info!("not initialised here: {e}");
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

async fn should_initialize(
    link: &Link,
    within: Duration,
    me: NodeId,
    initial: &[(NodeId, Member)],
) -> bool {
    if !initial.iter().any(|(id, _)| *id == me) {
        return false;
    }
    let asks = initial
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(id, member)| async move {
            let state = link.bootstrap_state(member, within).await.ok()?;
            Some((*id, state.initialized))
        });
    let answers: Vec<(NodeId, bool)> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    initializer(me, initial.len(), &answers)
}

/// Whether `me` forms the cluster, given which other initial members
/// answered and whether each was initialised: a majority answered, none
/// is initialised, and no one who answered has a lower id.
fn initializer(me: NodeId, members: usize, answers: &[(NodeId, bool)]) -> bool {
    let pristine = answers.iter().all(|(_, initialized)| !initialized);
    let lowest = answers.iter().all(|(id, _)| me < *id);
    pristine && lowest && 1 + answers.len() > members / 2
}

#[cfg(test)]
mod tests {
    use super::initializer;

    #[test]
    fn only_the_lowest_pristine_member_of_a_majority_initialises() {
        assert!(initializer(1, 3, &[(2, false), (3, false)]));
        assert!(!initializer(3, 3, &[(1, false), (2, false)]));
        assert!(!initializer(2, 3, &[(1, false)]));
        // Node 1 down: node 2 leads the forming with node 3.
        assert!(initializer(2, 3, &[(3, false)]));
        // Alone is no majority.
        assert!(!initializer(1, 3, &[]));
        // Someone already formed a cluster: wait to be reached.
        assert!(!initializer(1, 3, &[(2, true), (3, false)]));
    }
}
