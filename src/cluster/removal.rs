//! A node taken out of the cluster while it was away (stopped, paused, cut
//! off) never receives the entry that removed it: its own membership still
//! lists it as a voter, so it would campaign forever with a rising term,
//! refused by every member; a learner would serve a registry that no
//! longer changes. It learns it was removed from refusals (a majority of
//! the other voters it knows refuse its votes as no voter's; the leader a
//! learner follows refuses its probe as no member's), or from applying a
//! membership without itself. Then it stops campaigning, serves
//! no reads, says so once, and waits: `discoveryctl health` fails naming
//! why, until it is added back (a leader reaches it again) or stopped.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::link::{Link, LinkError};
use super::protection::Protection;
use crate::raft::{NodeId, Raft};

/// How long a peer's refusal counts: a removed node asks every election
/// timeout, so a live refusal is renewed well within this.
const REFUSAL_COUNTS: Duration = Duration::from_secs(30);

/// How often a learner asks its leader whether it is still a member.
const LEARNER_ASKS: Duration = Duration::from_secs(2);

/// What this node's vote requests were answered: who refused this node as
/// no voter, and when last.
#[derive(Default)]
pub struct Refusals(Mutex<HashMap<NodeId, Instant>>);

impl Refusals {
    pub fn new() -> Arc<Self> {
        Arc::new(Refusals::default())
    }

    /// `peer` refused this node's vote request because it is no voter (or
    /// no member) there.
    pub fn refused(&self, peer: NodeId) {
        self.0.lock().insert(peer, Instant::now());
    }

    /// `peer` answered a vote request: whatever it said, it counts this
    /// node as a voter.
    pub fn answered(&self, peer: NodeId) {
        self.0.lock().remove(&peer);
    }

    /// The peers whose refusal still counts.
    fn recent(&self) -> BTreeSet<NodeId> {
        let mut refusals = self.0.lock();
        refusals.retain(|_, at| at.elapsed() < REFUSAL_COUNTS);
        refusals.keys().copied().collect()
    }

    fn forget(&self) {
        self.0.lock().clear();
    }
}

/// Whether a peer's refusal says the caller is not in its cluster: a
/// refused vote (`node N is not a voter here`) or call (`not a member`).
pub fn says_removed(refusal: &str) -> bool {
    refusal.contains("is not a voter here") || refusal.contains("is not a member here")
}

/// Why node `me` is out of the cluster, if it is: the membership it holds
/// (`nodes`, `voters`) has other members but not it, a majority of the
/// other voters it knows refuse it as no voter, or, a learner, the leader
/// it follows refuses it as no member.
pub fn removed(
    me: NodeId,
    nodes: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    refusing: &BTreeSet<NodeId>,
    leader: Option<NodeId>,
) -> Option<String> {
    if !nodes.is_empty() && !nodes.contains(&me) {
        return Some(format!(
            "node {me} was removed from the cluster: the membership it applied lists nodes \
             {nodes:?} without it"
        ));
    }
    if !voters.contains(&me) {
        let leader = leader.filter(|l| nodes.contains(&me) && refusing.contains(l))?;
        return Some(format!(
            "node {me} was removed from the cluster: leader {leader} refuses it as no member \
             (it was taken out while away)"
        ));
    }
    let others: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != me).collect();
    let against: Vec<NodeId> = others.intersection(refusing).copied().collect();
    (!others.is_empty() && against.len() * 2 > others.len()).then(|| {
        format!(
            "node {me} was removed from the cluster: voters {against:?} refuse it as no voter \
             (it was taken out while away)"
        )
    })
}

/// What to tell the operator beside the reason.
const WHAT_NOW: &str = "it no longer campaigns and serves no reads; stop it (and set its data \
                        directory aside), or add it back with `discoveryctl add-learner`";

/// Watches this node's membership and the refusals of its vote requests
/// every `every`; takes it out of elections and reads while it is out of
/// the cluster, and back in once a leader reaches it as a member again.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    raft: Raft,
    me: NodeId,
    refusals: Arc<Refusals>,
    protection: Arc<Protection>,
    link: Link,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut asked = Instant::now();
    loop {
        let (nodes, voters, leader, leader_member) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            (
                membership
                    .nodes()
                    .map(|(id, _)| *id)
                    .collect::<BTreeSet<_>>(),
                membership.voter_ids().collect::<BTreeSet<_>>(),
                m.current_leader,
                m.current_leader
                    .and_then(|l| membership.get_node(&l).cloned()),
            )
        };
        // A learner asks no votes: it asks the leader it follows, now and
        // then, whether it is still a member there.
        let learner = nodes.contains(&me) && !voters.contains(&me);
        if let (true, Some(l), Some(member)) = (learner, leader, leader_member) {
            if l != me && asked.elapsed() >= LEARNER_ASKS {
                asked = Instant::now();
                match link
                    .health(&member, every.max(Duration::from_secs(1)))
                    .await
                {
                    Err(LinkError::Refused(why)) if says_removed(&why) => refusals.refused(l),
                    Ok(_) => refusals.answered(l),
                    Err(_) => {}
                }
            }
        }
        let out = removed(me, &nodes, &voters, &refusals.recent(), leader);
        match (out, protection.removed()) {
            (Some(why), None) => {
                tracing::warn!("{why}: {WHAT_NOW}");
                raft.runtime_config().elect(false);
                protection.remove(Some(why));
            }
            // A leader reaches it as a member again: it was added back.
            (None, Some(_)) if leader.is_some_and(|l| l != me) && nodes.contains(&me) => {
                tracing::warn!("node {me} is a member of the cluster again");
                refusals.forget();
                raft.runtime_config().elect(true);
                protection.remove(None);
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_voter_refused_by_most_other_voters_was_removed() {
        let (nodes, voters) = (set(&[1, 2, 3]), set(&[1, 2, 3]));
        assert_eq!(removed(3, &nodes, &voters, &set(&[]), None), None);
        // One of two others: a peer that lags, not a removal.
        assert_eq!(removed(3, &nodes, &voters, &set(&[1]), None), None);
        let why = removed(3, &nodes, &voters, &set(&[1, 2]), None).unwrap();
        assert!(why.contains("voters [1, 2] refuse it"), "{why}");
        // Two voters: the other one is a majority of the others.
        assert!(removed(2, &set(&[1, 2]), &set(&[1, 2]), &set(&[1]), None).is_some());
        // A single voter refuses nobody.
        assert_eq!(removed(1, &set(&[1]), &set(&[1]), &set(&[]), None), None);
        // Refusals from nodes that are no voters do not count.
        assert_eq!(removed(3, &nodes, &voters, &set(&[7, 8]), None), None);
    }

    #[test]
    fn a_membership_without_this_node_says_it_was_removed() {
        let why = removed(3, &set(&[1, 2]), &set(&[1, 2]), &set(&[]), None).unwrap();
        assert!(why.contains("without it"), "{why}");
        // A node not added yet holds no membership at all.
        assert_eq!(removed(4, &set(&[]), &set(&[]), &set(&[]), None), None);
        // A learner is not refused votes (it asks none).
        assert_eq!(
            removed(4, &set(&[1, 2, 4]), &set(&[1, 2]), &set(&[1, 2]), None),
            None
        );
    }

    #[test]
    fn only_a_refusal_as_no_member_counts() {
        assert!(says_removed("refused: node 3 is not a voter here"));
        assert!(says_removed("refused: node 3 is not a member here"));
        assert!(!says_removed("refused: a vote claims to come from node 2"));
    }
}
