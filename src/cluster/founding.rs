//! A voter that starts on an empty data directory does not know whether
//! its cluster is being formed or already exists and lost this node's disk
//! (a Kubernetes pod rescheduled onto a new volume). Raft forbids the
//! second from going on as a voter: a voter that forgot its log and its
//! vote could vote twice in one term, or for a candidate missing entries
//! it acknowledged, and a committed write would be lost. So until it
//! knows, it takes no replication and casts no vote (its peers are told
//! 503, and try again), and answers only who it is.
//!
//! It knows once the configured members answer (`super::bootstrap`):
//! - a majority pristine, and it has the lowest id: it forms the cluster;
//! - a member formed the cluster after asking it (it told that member it
//!   was pristine, and so was counted in): it is a founding member and
//!   takes that cluster's replication;
//! - a member that never asked it answers as formed: the cluster existed
//!   before this node's disk was emptied. It asks the leader to take its
//!   vote ([`super::repair`]) and starts again as a learner rebuilding
//!   from the cluster; the vote comes back once a check finds it agrees.
//!   A cluster that does not have it as a member adds it (it waits).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::raft::NodeId;

/// Whether this node still decides, and whom it told it was pristine.
#[derive(Debug, Default)]
pub struct Founding {
    deciding: AtomicBool,
    told: Mutex<BTreeSet<NodeId>>,
}

impl Founding {
    /// A node that has to decide (a pristine voter of a configured
    /// cluster), or one that knows already.
    pub fn new(deciding: bool) -> Self {
        Founding {
            deciding: AtomicBool::new(deciding),
            told: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether replication and votes are still held off.
    pub fn deciding(&self) -> bool {
        self.deciding.load(Ordering::Acquire)
    }

    /// This node told `peer`, which asked, that it is pristine.
    pub fn told(&self, peer: NodeId) {
        if self.deciding() {
            self.told.lock().insert(peer);
        }
    }

    /// Whether this node told `peer` it was pristine.
    pub fn was_told(&self, peer: NodeId) -> bool {
        self.told.lock().contains(&peer)
    }

    /// Decided: replication and votes are taken from now on.
    pub fn decided(&self) {
        if self.deciding.swap(false, Ordering::AcqRel) {
            self.told.lock().clear();
        }
    }
}

/// What a pristine voter that still decides makes of the members that
/// answered as formed (`formed`).
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// None answered as formed: ask again.
    Wait,
    /// One formed the cluster counting this node in: take its
    /// replication.
    Founder,
    /// The cluster existed before this node's disk was emptied: give the
    /// vote up and rebuild.
    Rejoin,
}

pub fn judge(founding: &Founding, formed: &[NodeId]) -> Judgement {
    if formed.is_empty() {
        Judgement::Wait
    } else if formed.iter().any(|id| founding.was_told(*id)) {
        Judgement::Founder
    } else {
        Judgement::Rejoin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_asked_first_is_a_founder_one_that_never_asked_an_existing_cluster() {
        let f = Founding::new(true);
        assert_eq!(judge(&f, &[]), Judgement::Wait);
        assert_eq!(judge(&f, &[1]), Judgement::Rejoin);
        f.told(1);
        assert_eq!(judge(&f, &[1]), Judgement::Founder);
        assert_eq!(judge(&f, &[2, 1]), Judgement::Founder);
        f.decided();
        assert!(!f.deciding());
        // Once decided, nothing is recorded any more.
        f.told(3);
        assert!(!f.was_told(3));
    }
}
