//! Whether this node sees a quorum, from its Raft metrics alone.
//!
//! openraft 0.9 keeps a leader cut off from its quorum leading: it appends
//! every write it is given and commits none, and says nothing of it. etcd's
//! `CheckQuorum` makes such a leader step down; openraft cannot be told to
//! (an election it starts as leader is ignored), so here it is seen instead:
//! a leader no quorum acknowledged within the voters' lease (openraft's
//! `election_timeout_max`) takes no more writes (they are answered "not
//! applied" rather than appended to a log that may never commit them), and
//! its status, `discoveryctl health`, the console and
//! `discovery_quorum` say "no quorum".

use std::time::Duration;

use openraft::RaftMetrics;

use crate::raft::{Member, NodeId};

/// Why this node sees no quorum, or `None` when it does: it leads and a
/// quorum acknowledged it within `within`, or it follows a leader.
pub fn lost(m: &RaftMetrics<NodeId, Member>, within: Duration) -> Option<String> {
    match m.current_leader {
        Some(leader) if leader == m.id => leader_cut_off(m, within),
        Some(_) => None,
        None => Some("no leader: no quorum elected one that this node can see".to_string()),
    }
}

/// Why this node, leading, must not take writes: no quorum acknowledged it
/// within `within`. A leader just elected, which no quorum has yet
/// acknowledged since the votes that made it, takes them.
pub fn leader_cut_off(m: &RaftMetrics<NodeId, Member>, within: Duration) -> Option<String> {
    let ms = m.millis_since_quorum_ack?;
    (u128::from(ms) > within.as_millis()).then(|| {
        format!(
            "no quorum: leader {} has heard from no quorum for {ms} ms (more than the {} ms \
             lease); writes are not taken until it does",
            m.id,
            within.as_millis()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(leader: Option<NodeId>, ack: Option<u64>) -> RaftMetrics<NodeId, Member> {
        let mut m = RaftMetrics::new_initial(1);
        m.current_leader = leader;
        m.millis_since_quorum_ack = ack;
        m
    }

    #[test]
    fn a_leader_sees_a_quorum_while_one_acknowledged_it_within_the_lease() {
        let lease = Duration::from_millis(500);
        assert_eq!(lost(&metrics(Some(1), Some(40)), lease), None);
        assert_eq!(lost(&metrics(Some(1), Some(500)), lease), None);
        assert_eq!(lost(&metrics(Some(1), None), lease), None, "just elected");
        let cut_off = lost(&metrics(Some(1), Some(10_809)), lease).unwrap();
        assert!(
            cut_off.starts_with("no quorum: leader 1 has heard from no quorum for 10809 ms"),
            "{cut_off}"
        );
    }

    #[test]
    fn a_follower_sees_one_while_it_follows_a_leader() {
        let lease = Duration::from_millis(500);
        assert_eq!(lost(&metrics(Some(2), None), lease), None);
        assert!(lost(&metrics(None, None), lease)
            .unwrap()
            .starts_with("no leader"));
    }
}
