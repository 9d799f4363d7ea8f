//! Read replicas that manage their own membership (`[cluster] learner`):
//! a replica asks the leader to add it as a learner when it starts and to
//! remove it when it stops, so that a Kubernetes StatefulSet of replicas
//! scales by its replica count alone.
//!
//! Its credential is its peer certificate: a request is for the caller's
//! own id only (the peer guard checks the body against the certificate),
//! that id must be one the cluster keeps for replicas
//! (`cluster.replica_ids`, none by default), it can add or remove a
//! learner and nothing else (a voter is refused: an
//! operator changes voters), and one node's requests are taken at most
//! once per [`GAP`] by each member, so a replica that joins and leaves in
//! a loop costs the log two small entries a second at most.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::link::Link;
use super::membership::{self, Change};
use crate::raft::{Member, NodeId, Raft};

pub use super::messages::{ReplicaRequest as Request, ReplicaStep as Step};

/// The least time between two requests of one replica that a member
/// takes.
pub const GAP: Duration = Duration::from_secs(1);

/// How long a join may take: the leader waits for the replica to catch up
/// (at most [`membership::JOIN_WAIT`]) before it answers.
const JOIN_WITHIN: Duration = Duration::from_secs(90);

/// How long a stopping replica tries to leave.
const LEAVE_WITHIN: Duration = Duration::from_secs(10);

/// When each replica's last request was taken here.
#[derive(Debug, Default)]
pub struct Pace(parking_lot::Mutex<HashMap<NodeId, Instant>>);

/// Replicas remembered at most; past it, those older than [`GAP`] go.
const PACED: usize = 4096;

impl Pace {
    /// Whether a request of `node` may be taken now; records it if so.
    pub fn take(&self, node: NodeId) -> bool {
        let mut last = self.0.lock();
        if last.get(&node).is_some_and(|at| at.elapsed() < GAP) {
            return false;
        }
        if last.len() >= PACED {
            last.retain(|_, at| at.elapsed() < GAP);
            if last.len() >= PACED {
                return false;
            }
        }
        last.insert(node, Instant::now());
        true
    }
}

/// The leader's side: carries the request out here if this node leads.
pub async fn accept(
    raft: &Raft,
    link: &Link,
    pace: &Pace,
    ids: Option<&RangeInclusive<NodeId>>,
    request: Request,
) -> Result<(), String> {
    let id = request.node;
    if !ids.is_some_and(|ids| ids.contains(&id)) {
        return Err(format!(
            "node {id} is not among the ids read replicas may take here (cluster.replica_ids: {})",
            ids.map_or("none".to_string(), |r| format!("{}-{}", r.start(), r.end()))
        ));
    }
    let (leads, leader, member, voter) = {
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (
            m.current_leader == Some(m.id),
            m.current_leader,
            membership.get_node(&id).is_some(),
            membership.voter_ids().any(|v| v == id),
        )
    };
    if !leads {
        return Err(match leader {
            Some(leader) => format!("this node does not lead; node {leader} does"),
            None => "no leader: the cluster has no quorum".to_string(),
        });
    }
    // Every request counts, a no-op too: a loop of them is what is
    // bounded.
    if !pace.take(id) {
        return Err(format!(
            "node {id} asked less than {}s ago: ask again later",
            GAP.as_secs()
        ));
    }
    if voter {
        return Err(format!(
            "node {id} is a voter: a read replica joins and leaves as a learner, and an \
             operator changes voters (discoveryctl remove)"
        ));
    }
    let change = match request.step {
        Step::Leave if !member => return Ok(()),
        Step::Leave => Change::Remove { id },
        Step::Join { member } => Change::AddLearner {
            id,
            member,
            wait_secs: None,
        },
    };
    membership::accept_forwarded(raft, link, change)
        .await
        .map(|_| ())
}

/// The replica's side of starting: asks the members in turn until the
/// leader has added it (and it caught up), or the node stops.
pub async fn join(
    link: Link,
    me: (NodeId, Member),
    members: Vec<Member>,
    retry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let request = Request {
        node: me.0,
        step: Step::Join { member: me.1 },
    };
    let mut last_said = String::new();
    loop {
        let mut answers = Vec::new();
        for member in &members {
            match link.replica(member, &request, JOIN_WITHIN).await {
                Ok(Ok(())) => {
                    tracing::info!(at = %member.raft_addr, "joined the cluster as a read replica");
                    return;
                }
                Ok(Err(why)) => answers.push(format!("{}: {why}", member.raft_addr)),
                Err(e) => answers.push(format!("{}: {e}", member.raft_addr)),
            }
        }
        let said = answers.join("; ");
        if said != last_said {
            tracing::warn!("not joined as a read replica yet: {said}");
            last_said = said;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// The replica's side of stopping: asks the leader it follows, then the
/// members, to remove it, for up to [`LEAVE_WITHIN`].
pub async fn leave(raft: &Raft, link: &Link, me: NodeId, members: &[Member]) {
    let request = Request {
        node: me,
        step: Step::Leave,
    };
    let deadline = tokio::time::Instant::now() + LEAVE_WITHIN;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let leader = {
            let m = raft.metrics().borrow().clone();
            m.current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
        };
        for member in leader.iter().chain(members) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match link.replica(member, &request, left).await {
                Ok(Ok(())) => {
                    tracing::info!("left the cluster: this read replica stops");
                    return;
                }
                Ok(Err(why)) => last = why,
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(GAP).await;
    }
    tracing::warn!("stopping without leaving the cluster ({last}): remove this node with discoveryctl remove --id {me}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replica_is_taken_once_a_gap_others_meanwhile() {
        let pace = Pace::default();
        assert!(pace.take(7));
        assert!(!pace.take(7));
        assert!(pace.take(8));
    }
}
