//! Forming the cluster from the configured initial members, exactly once.
//!
//! A node with any Raft state (an existing data dir) never initialises. A
//! pristine node initialises only when a majority of the initial members
//! (itself included) answer and every member that answers is pristine too;
//! several doing so at once is safe because they all propose the same
//! membership. A pristine node that finds an initialised peer (it was
//! wiped, or it is being added) waits for the leader to reach it instead.

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
        .map(|(_, member)| async move { link.bootstrap_state(member, within).await.ok() });
    let answers: Vec<BootstrapState> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if answers.iter().any(|a| a.initialized) {
        return false;
    }
    let pristine = 1 + answers.len();
    pristine > initial.len() / 2
}
