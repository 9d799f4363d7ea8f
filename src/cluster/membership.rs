//! Changing who is in the cluster at runtime: add a node as a learner (it
//! catches up, by snapshot when the log it needs is compacted), promote it
//! to voter, remove a node. Any node accepts a change and hands it to the
//! leader.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::link::Link;
use crate::auth::Operator;
use crate::raft::{Member, NodeId, Raft};

/// How long adding a learner waits for it to catch up: under the time a
/// forwarded change waits for the leader (below).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(100);

/// How long a change handed to the leader may take: a learner's catch-up
/// and then some.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Carries out a change here if this node leads, else at the leader,
/// which checks the operator's credential again.
pub async fn apply(
    raft: &Raft,
    link: &Link,
    change: Change,
    operator: &Operator,
) -> Result<Changed, String> {
    match apply_here(raft, &change).await {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_node: Some(leader),
            ..
        }))) => link
            .membership(&leader, &change, operator, FORWARD_TIMEOUT)
            .await
            .map_err(|e| format!("leader {leader} did not answer: {e}"))?,
        applied => finish(raft, applied).await,
    }
}

/// The leader's side of a change a peer handed it: carried out here only,
/// never handed on again.
pub async fn accept_forwarded(raft: &Raft, change: Change) -> Result<Changed, String> {
    finish(raft, apply_here(raft, &change).await).await
}

/// What the leader did with a change.
enum Done {
    Changed,
    /// A learner was added; it has caught up once it holds this index.
    Learner(NodeId, u64),
    /// The node to remove is not a member: nothing to do, and the operator
    /// most likely mistyped the id.
    NotAMember(NodeId),
}

/// Waits for a new learner to catch up, then answers the membership.
async fn finish(raft: &Raft, applied: Result<Done, WriteError>) -> Result<Changed, String> {
    match applied {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err("no leader: the cluster has no quorum".to_string())
        }
        Err(e) => Err(e.to_string()),
        Ok(Done::NotAMember(id)) => Err(format!("node {id} is not a member")),
        Ok(done) => {
            if let Done::Learner(id, index) = done {
                caught_up(raft, id, index).await?;
            }
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            Ok(Changed {
                voters: membership.voter_ids().collect(),
                nodes: membership.nodes().map(|(id, _)| *id).collect(),
            })
        }
    }
}

/// Carries out a change on this node, the leader.
async fn apply_here(raft: &Raft, change: &Change) -> Result<Done, WriteError> {
    match change {
        Change::AddLearner { id, member } => {
            // openraft answers once the learner is within its replication
            // lag threshold (5,000 entries), not once it has caught up.
            let added = raft.add_learner(*id, member.clone(), true).await?;
            return Ok(Done::Learner(*id, added.log_id.index));
        }
        Change::Promote { id } => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await?;
        }
        Change::Remove { id } => {
            let (leads, is_member, is_voter) = {
                let m = raft.metrics().borrow().clone();
                let members = m.membership_config.membership();
                (
                    m.current_leader == Some(m.id),
                    members.get_node(id).is_some(),
                    members.voter_ids().any(|v| v == *id),
                )
            };
            // Only the leader's view of the membership is current; a
            // follower hands the change on.
            if leads && !is_member {
                return Ok(Done::NotAMember(*id));
            }
            if is_voter {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false)
                .await?;
        }
    }
    Ok(Done::Changed)
}

/// Waits until the leader has replicated to learner `id` everything up to
/// `index`: the entry that added it, so everything committed before too.
async fn caught_up(raft: &Raft, id: NodeId, index: u64) -> Result<(), String> {
    raft.wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .and_then(|matched| matched.as_ref())
                    .is_some_and(|log_id| log_id.index >= index)
            },
            "learner caught up",
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("node {id} was added as a learner but has not caught up: {e}"))
}
