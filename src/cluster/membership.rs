//! Changing who is in the cluster at runtime: add a node as a learner (it
//! catches up, by snapshot when the log it needs is compacted), promote it
//! to voter, remove a node. Any node accepts a change and hands it to the
//! leader.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use crate::raft::{Member, NodeId, Raft};

/// Where membership changes are posted (admin API).
pub const MEMBERSHIP_PATH: &str = "/admin/membership";

/// A change of membership.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    /// Replicate to a new node without giving it a vote; answers once it
    /// has caught up.
    AddLearner {
        id: NodeId,
        #[serde(flatten)]
        member: Member,
    },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Take a node out of the cluster (voter or learner).
    Remove { id: NodeId },
}

/// The membership after a change: voters and every node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Changed {
    pub voters: BTreeSet<NodeId>,
    pub nodes: BTreeSet<NodeId>,
}

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, Member>>;

/// Carries out a change here if this node leads, else at the leader.
pub async fn apply(raft: &Raft, change: Change) -> Result<Changed, String> {
    match apply_here(raft, &change).await {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_node: Some(leader),
            ..
        }))) => forward(&leader, &change).await,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err("no leader: the cluster has no quorum".to_string())
        }
        Err(e) => Err(e.to_string()),
        Ok(()) => {
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            Ok(Changed {
                voters: membership.voter_ids().collect(),
                nodes: membership.nodes().map(|(id, _)| *id).collect(),
            })
        }
    }
}

async fn apply_here(raft: &Raft, change: &Change) -> Result<(), WriteError> {
    match change {
        Change::AddLearner { id, member } => {
            raft.add_learner(*id, member.clone(), true).await?;
        }
        Change::Promote { id } => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await?;
        }
        Change::Remove { id } => {
            let is_voter = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == *id);
            if is_voter {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false)
                .await?;
        }
    }
    Ok(())
}

async fn forward(leader: &Member, change: &Change) -> Result<Changed, String> {
    let url = format!("http://{}{}", leader.raft_addr, MEMBERSHIP_PATH);
    let response = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(120))
        .json(change)
        .send()
        .await
        .map_err(|e| format!("leader {leader} did not answer: {e}"))?;
    response
        .json::<Result<Changed, String>>()
        .await
        .map_err(|e| format!("bad answer from leader {leader}: {e}"))?
}
