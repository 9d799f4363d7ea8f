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

use crate::raft::{Member, NodeId, Raft};

/// Where a node tells whether it has joined a cluster.
pub const STATE_PATH: &str = "/internal/bootstrap";

/// A node's answer on [`STATE_PATH`].
#[derive(Debug, Serialize, Deserialize)]
pub struct BootstrapState {
    pub initialized: bool,
}

/// Runs until the node is part of a cluster (or shutdown).
pub async fn form_cluster(
    raft: Raft,
    me: NodeId,
    initial: Vec<(NodeId, Member)>,
    retry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(retry.max(Duration::from_millis(200)))
        .build()
        .unwrap_or_default();
    loop {
        match raft.is_initialized().await {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        if should_initialize(&http, me, &initial).await {
            let members: BTreeMap<NodeId, Member> = initial.iter().cloned().collect();
            tracing::info!(?members, "initialising the cluster");
            if let Err(e) = raft.initialize(members).await {
                tracing::info!("not initialised here: {e}");
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = crate::http::stopped(&mut stop) => return,
        }
    }
}

async fn should_initialize(
    http: &reqwest::Client,
    me: NodeId,
    initial: &[(NodeId, Member)],
) -> bool {
    if !initial.iter().any(|(id, _)| *id == me) {
        return false;
    }
    let asks = initial
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(_, member)| async move {
            let url = format!("http://{}{}", member.raft_addr, STATE_PATH);
            let answer = http.get(url).send().await.ok()?;
            answer.json::<BootstrapState>().await.ok()
        });
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
