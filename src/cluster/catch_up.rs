//! What "caught up" means for start-up protection: having applied the
//! commit point the leader confirmed after this node started.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::watch;

use super::link::Link;
use super::protection::Protection;
use crate::raft::{NodeId, Raft};
use crate::self_discovery::SelfDiscovery;

pub use super::messages::ReadIndex;

/// The leader's side: confirms it still leads (a quorum round) and returns
/// its commit point.
pub async fn read_index(raft: &Raft) -> ReadIndex {
    match raft.ensure_linearizable().await {
        Ok(log_id) => ReadIndex::Index(log_id.map_or(0, |l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) | Err(_) => {
            ReadIndex::NotLeader
        }
    }
}

/// Asks the current leader (itself included) for its commit point, once.
async fn ask_commit_point(raft: &Raft, me: NodeId, link: &Link) -> Option<u64> {
    let metrics = raft.metrics().borrow().clone();
    let answer = match metrics.current_leader {
        Some(leader) if leader == me => Some(read_index(raft).await),
        Some(leader) => match metrics.membership_config.membership().get_node(&leader) {
            Some(member) => link.read_index(member, Duration::from_secs(2)).await.ok(),
            None => None,
        },
        None => None,
    };
    match answer {
        Some(ReadIndex::Index(i)) => Some(i),
        _ => None,
    }
}

/// Asks the current leader for its commit point until one answers.
async fn commit_point(raft: &Raft, me: NodeId, link: &Link, retry: Duration) -> u64 {
    loop {
        if let Some(i) = ask_commit_point(raft, me, link).await {
            return i;
        }
        tokio::time::sleep(retry).await;
    }
}

/// Consistent reads on request: before answering, a node confirms the
/// leader's commit point (the leader checks with a quorum that it still
/// leads) and waits until it has applied that far, so the answer holds
/// every write acknowledged before the read began, on any node.
#[derive(Clone)]
pub struct ReadBarrier {
    pub raft: Raft,
    pub me: NodeId,
    pub link: Link,
    /// How long to try before giving up (no leader, or cut off from it).
    pub within: Duration,
}

impl ReadBarrier {
    /// The confirmed index once applied here, or why not within the bound.
    pub async fn confirm(&self) -> Result<u64, String> {
        let confirmed = async {
            let index = loop {
                if let Some(i) = ask_commit_point(&self.raft, self.me, &self.link).await {
                    break i;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let mut metrics = self.raft.metrics();
            let applied = metrics
                .wait_for(|m| m.last_applied.map_or(0, |l| l.index) >= index)
                .await;
            applied
                .map(|_| index)
                .map_err(|_| "raft stopped".to_string())
        };
        match tokio::time::timeout(self.within, confirmed).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no leader confirmed the commit point within {:?}",
                self.within
            )),
        }
    }
}

/// Lifts start-up protection once this node has applied what the leader
/// had committed after this node started, and has published the members.
#[allow(clippy::too_many_arguments)]
pub async fn lift_when_caught_up(
    raft: Raft,
    me: NodeId,
    nodes: Arc<SelfDiscovery>,
    protection: Arc<Protection>,
    link: Link,
    retry: Duration,
    checked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    mut stop: watch::Receiver<bool>,
) {
    // A node that never serves (tests of what is published meanwhile).
    fail::fail_point!("lift_protection", |_| ());
    let caught_up = async {
        let target = commit_point(&raft, me, &link, retry).await;
        tracing::info!(target, "catching up with the cluster");
        let mut metrics = raft.metrics();
        let reached = metrics
            .wait_for(|m| m.last_applied.map_or(0, |l| l.index) >= target)
            .await
            .is_ok();
        // Then what it holds is compared with its peers' (`checked`: a
        // consistency check, when they are on) before it is served.
        if reached {
            checked.await;
        }
        reached
    };
    let published = async {
        while !nodes.has_members() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        (ok, ()) = futures::future::join(caught_up, published) => if ok { protection.lift() },
        _ = crate::shutdown::stopped(&mut stop) => {}
    }
}
