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
    /// The node to add clashes with a member: nothing done, and why.
    Clash(String),
}

/// Waits for a new learner to catch up, then answers the membership.
async fn finish(raft: &Raft, applied: Result<Done, WriteError>) -> Result<Changed, String> {
    match applied {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err("no leader: the cluster has no quorum".to_string())
        }
        Err(e) => Err(e.to_string()),
        Ok(Done::NotAMember(id)) => Err(format!("node {id} is not a member")),
        Ok(Done::Clash(why)) => Err(why),
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
            let found = {
                let m = raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                clash(membership.nodes(), *id, member)
            };
            match found {
                Some(Clash::Same) => return Ok(Done::Changed),
                Some(Clash::With(why)) => return Ok(Done::Clash(why)),
                None => {}
            }
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

/// How a node to add meets the members.
#[derive(Debug, PartialEq, Eq)]
pub enum Clash {
    /// It is a member already, exactly as asked (an add sent again).
    Same,
    /// Its id, name or an address is a member's: why, naming both.
    With(String),
}

/// Whether adding `member` as node `id` clashes with the members `nodes`:
/// an id already in use (with other details), or a name, peer address or
/// client address another member has. An operator who mistypes one would
/// otherwise be told the node joined while it did not, or publish two
/// nodes at one address.
pub fn clash<'a>(
    nodes: impl Iterator<Item = (&'a NodeId, &'a Member)>,
    id: NodeId,
    member: &Member,
) -> Option<Clash> {
    for (other, theirs) in nodes {
        if *other == id {
            if theirs.name == member.name
                && theirs.raft_addr == member.raft_addr
                && theirs.api_addr == member.api_addr
                && theirs.zone == member.zone
            {
                return Some(Clash::Same);
            }
            return Some(Clash::With(format!(
                "node {id} is already a member, as {} (peer address {}, client address {}): \
                 remove it first, or give the new node another id",
                theirs.name, theirs.raft_addr, theirs.api_addr
            )));
        }
        let same = [
            ("name", &theirs.name, &member.name),
            ("peer address", &theirs.raft_addr, &member.raft_addr),
            ("client address", &theirs.api_addr, &member.api_addr),
        ]
        .into_iter()
        .find(|(_, a, b)| !a.is_empty() && a == b);
        if let Some((what, value, _)) = same {
            return Some(Clash::With(format!(
                "node {other} already has the {what} {value}: give node {id} its own"
            )));
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, raft: &str, api: &str) -> Member {
        Member {
            name: name.into(),
            raft_addr: raft.into(),
            api_addr: api.into(),
            zone: "sh001".into(),
            rebuilding: false,
        }
    }

    #[test]
    fn an_add_that_clashes_with_a_member_names_what_clashes() {
        let members = [
            (1, member("node1", "10.0.0.1:7271", "10.0.0.1:7171")),
            (2, member("node2", "10.0.0.2:7271", "10.0.0.2:7171")),
        ];
        let nodes = || members.iter().map(|(id, m)| (id, m));
        let new = member("node4", "10.0.0.4:7271", "10.0.0.4:7171");
        assert_eq!(clash(nodes(), 4, &new), None);
        // The id of a voter, with another node's details.
        let Some(Clash::With(why)) = clash(nodes(), 2, &new) else {
            panic!("id clash not found");
        };
        assert!(
            why.contains("node 2 is already a member, as node2"),
            "{why}"
        );
        // The same member again: nothing to do.
        assert_eq!(clash(nodes(), 2, &members[1].1), Some(Clash::Same));
        // Another id, a member's name or address.
        for (clashing, what) in [
            (
                member("node1", "10.0.0.4:7271", "10.0.0.4:7171"),
                "name node1",
            ),
            (
                member("node4", "10.0.0.2:7271", "10.0.0.4:7171"),
                "peer address 10.0.0.2:7271",
            ),
            (
                member("node4", "10.0.0.4:7271", "10.0.0.1:7171"),
                "client address 10.0.0.1:7171",
            ),
        ] {
            let Some(Clash::With(why)) = clash(nodes(), 4, &clashing) else {
                panic!("{what} clash not found");
            };
            assert!(why.contains(what), "{why}");
        }
    }
}
