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
//! an initialised peer founded that cluster with it, was wiped, or is
//! being added: [`super::founding`] tells which, and a wiped voter
//! rebuilds as a learner before it votes again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::founding::{judge, Founding, Judgement};
use super::link::Link;
use super::repair;
use crate::raft::{Member, NodeId, Raft};
use crate::shutdown::Faults;

pub use super::messages::BootstrapState;

/// What forming a cluster needs besides Raft and the members.
pub struct Forming {
    pub me: NodeId,
    pub initial: Vec<(NodeId, Member)>,
    pub link: Link,
    pub retry: Duration,
    /// Whether this pristine voter still decides (see [`super::founding`]).
    pub founding: Arc<Founding>,
    /// Where a rebuild is recorded, when the cluster existed before this
    /// node's disk was emptied.
    pub data_dir: PathBuf,
    pub faults: Faults,
}

/// Runs until the node is part of a cluster, rebuilds, or shuts down.
pub async fn form_cluster(raft: Raft, forming: Forming, mut stop: watch::Receiver<bool>) {
    let Forming {
        me,
        initial,
        link,
        retry,
        founding,
        data_dir,
        faults,
    } = forming;
    let within = retry.max(Duration::from_millis(200));
    let mut said = false;
    loop {
        match raft.is_initialized().await {
            Ok(true) | Err(_) => {
                founding.decided();
                return;
            }
            Ok(false) => {}
        }
        let answers = answers(&link, within, me, &initial).await;
        let counted = initial.iter().any(|(id, _)| *id == me);
        if counted && initializer(me, initial.len(), &answers) {
            let members: BTreeMap<NodeId, Member> = initial.iter().cloned().collect();
            tracing::info!(?members, "initialising the cluster");
            founding.decided();
            if let Err(e) = raft.initialize(members).await {
                tracing::info!("not initialised here: {e}");
            }
            return;
        }
        if founding.deciding() {
            let formed: Vec<NodeId> = answers
                .iter()
                .filter(|(_, initialized)| *initialized)
                .map(|(id, _)| *id)
                .collect();
            match judge(&founding, &formed) {
                Judgement::Wait => {}
                Judgement::Founder => {
                    tracing::info!(?formed, "the cluster was formed counting this node in");
                    founding.decided();
                }
                Judgement::Rejoin => {
                    let at: Vec<&Member> = initial
                        .iter()
                        .filter(|(id, _)| formed.contains(id))
                        .map(|(_, m)| m)
                        .collect();
                    match repair::give_vote_up(&link, me, &at).await {
                        Ok(()) => {
                            let why = "this voter's data directory is empty and its cluster \
                                       exists: rebuilding from it as a learner"
                                .to_string();
                            match repair::mark(&data_dir, why.clone(), 1) {
                                Ok(()) => faults.rebuild(why),
                                Err(e) => faults.raise(format!(
                                    "its vote was taken to rebuild, but the rebuild could \
                                     not be recorded in {}: {e}",
                                    data_dir.display()
                                )),
                            }
                            return;
                        }
                        Err(answers) if answers.iter().any(|a| repair::not_a_member(a)) => {
                            tracing::info!(
                                "the cluster exists and does not count this node: waiting \
                                 to be added"
                            );
                            founding.decided();
                        }
                        Err(answers) if !said => {
                            said = true;
                            tracing::warn!(
                                ?answers,
                                "this voter's data directory is empty and its cluster exists: \
                                 asking the leader to take its vote before it rebuilds"
                            );
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// Which other initial members answered, and whether each has formed a
/// cluster; none when this node is not an initial member.
async fn answers(
    link: &Link,
    within: Duration,
    me: NodeId,
    initial: &[(NodeId, Member)],
) -> Vec<(NodeId, bool)> {
    if !initial.iter().any(|(id, _)| *id == me) {
        return Vec::new();
    }
    let asks = initial
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(id, member)| async move {
            let state = link.bootstrap_state(member, Some(me), within).await.ok()?;
            Some((*id, state.initialized))
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
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
