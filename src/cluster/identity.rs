//! Which cluster a node's data belongs to. A cluster's first leader names
//! its log once (a random id, [`crate::zones::log_name`]); every replica
//! applies the name and snapshots keep it. A node records it in its data
//! directory (beside `node_id`) the first time it sees it applied, sends it
//! with every call to its peers, and refuses calls from a node of another
//! cluster. A data directory copied from another cluster of the same shape
//! (same node ids, same addresses) is found out at start, where the node
//! asks its peers which cluster they are and refuses to start when most of
//! them say another, as etcd does on a cluster ID mismatch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;

use super::link::Link;
use crate::local::LocalRegistry;
use crate::raft::data_dir;
use crate::raft::{Member, NodeId};
use crate::shutdown::{stopped, Faults};

/// The header that carries the caller's cluster id on calls to peers.
pub const HEADER: &str = "x-discovery-cluster";

/// This node's cluster id, once known; shared by the peer routes, which
/// check callers against it, and the peer client, which sends it.
#[derive(Clone, Default)]
pub struct ClusterId(Arc<RwLock<Option<String>>>);

impl ClusterId {
    pub fn get(&self) -> Option<String> {
        self.0.read().clone()
    }

    pub fn set(&self, id: &str) {
        *self.0.write() = Some(id.to_string());
    }

    /// This node's id, when a call from a node of cluster `theirs` (none:
    /// it does not say, or does not know yet) must be refused: both know
    /// their clusters and they differ. Compared in place: every peer call
    /// passes here, and only a refusal copies anything.
    pub fn refuses(&self, theirs: Option<&str>) -> Option<String> {
        match (self.0.read().as_deref(), theirs) {
            (Some(mine), Some(theirs)) if mine != theirs => Some(mine.to_string()),
            _ => None,
        }
    }
}

/// What the other members' answers say of this node's data.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A majority of the members (this node included) is of this cluster,
    /// or not named yet: the data is where it belongs, as far as anyone
    /// can tell.
    Ours,
    /// Too few answered to tell (the others may be down or starting).
    Undecided,
    /// Most of the members are of these other clusters.
    Foreign(String),
}

/// What a node of cluster `mine`, one of `members`, makes of the ids its
/// other members gave (none: not named yet, or an earlier build): another
/// cluster's id from a majority of the members means this node's data is
/// not theirs.
pub fn verdict(mine: &str, members: usize, answers: &[Option<String>]) -> Verdict {
    let mut others: Vec<&str> = answers
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|id| *id != mine)
        .collect();
    if foreign(others.len(), members) {
        others.sort_unstable();
        others.dedup();
        return Verdict::Foreign(others.join(", "));
    }
    // This node and the members that did not say another.
    if 1 + answers.len() - others.len() > members / 2 {
        Verdict::Ours
    } else {
        Verdict::Undecided
    }
}

/// Whether `others` members of `members` saying another cluster are most
/// of the cluster.
pub fn foreign(others: usize, members: usize) -> bool {
    others > members / 2
}

/// Asks the other members which cluster they are, each within `within`.
pub async fn ask(
    link: &Link,
    me: NodeId,
    mine: &str,
    members: &[(NodeId, Member)],
    within: Duration,
) -> Verdict {
    let asks = members
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(_, member)| async move {
            let state = link.bootstrap_state(member, None, within).await.ok()?;
            Some(state.cluster)
        });
    let answers: Vec<Option<String>> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    verdict(mine, members.len(), &answers)
}

/// What a node on another cluster's data says as it stops.
pub fn refusal(mine: &str, theirs: &str) -> String {
    format!(
        "this data directory belongs to cluster {mine}, but most members of the cluster \
         configured here belong to cluster {theirs}: refusing to run on another cluster's \
         data (point data_dir at this node's own directory, or move it away and add this \
         node back as a new one)"
    )
}

/// While the members' answers leave it undecided (they were down when
/// this node started), asks again every `every` until they decide; raises
/// a fault if this node's data turns out to be another cluster's.
pub async fn keep_asking(
    link: Link,
    me: NodeId,
    mine: String,
    members: Vec<(NodeId, Member)>,
    every: Duration,
    faults: Faults,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        match ask(&link, me, &mine, &members, every).await {
            Verdict::Undecided => {}
            Verdict::Ours => return,
            Verdict::Foreign(theirs) => {
                faults.raise(refusal(&mine, &theirs));
                return;
            }
        }
    }
}

/// What recording the id takes.
pub struct Recorder {
    pub local: Arc<LocalRegistry>,
    pub id: ClusterId,
    pub data_dir: PathBuf,
    /// Called with the id once it is known (the peer client sends it).
    pub learned: Box<dyn Fn(&str) + Send + Sync>,
    /// How often to look until the log is named.
    pub every: Duration,
}

impl Recorder {
    /// Waits until the applied registry holds the cluster's name, then
    /// records it in the data directory and shares it; ends there, or when
    /// the node stops.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let named = loop {
            if let Some(log) = self.local.read().log() {
                break log.to_string();
            }
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        };
        if self.id.get().as_deref() == Some(named.as_str()) {
            return;
        }
        if let Some(recorded) = self.id.get() {
            // A restore keeps the target's name, so this is not a restore:
            // the data under this node is not what its file says.
            tracing::error!(
                recorded,
                applied = named,
                "the registry applied here names another cluster than this data directory \
                 records; keeping the record"
            );
            return;
        }
        match data_dir::record_cluster(&self.data_dir, &named) {
            Ok(()) => tracing::info!(cluster = named, "cluster id recorded"),
            Err(e) => tracing::warn!("recording the cluster id in the data directory: {e}"),
        }
        self.id.set(&named);
        (self.learned)(&named);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_between_clusters_that_both_say_are_refused() {
        let id = ClusterId::default();
        // A node that does not know yet (a new joiner, a cluster not yet
        // named) refuses nobody.
        assert_eq!(id.refuses(Some("b")), None);
        id.set("a");
        assert_eq!(id.refuses(Some("a")), None);
        assert_eq!(id.refuses(Some("b")), Some("a".into()));
        // Nor is a caller that does not say refused.
        assert_eq!(id.refuses(None), None);
    }

    #[test]
    fn a_node_is_foreign_only_when_most_of_the_cluster_says_another() {
        let id = |s: &str| Some(s.to_string());
        let foreign = |s: &str| Verdict::Foreign(s.into());
        // Both others say another cluster: this node's data is foreign.
        assert_eq!(verdict("a", 3, &[id("b"), id("b")]), foreign("b"));
        // One other (the other is down): nothing decided.
        assert_eq!(verdict("a", 3, &[id("b")]), Verdict::Undecided);
        assert_eq!(verdict("a", 3, &[]), Verdict::Undecided);
        // One agrees: a majority with this node.
        assert_eq!(verdict("a", 3, &[id("a"), id("b")]), Verdict::Ours);
        assert_eq!(verdict("a", 3, &[id("a")]), Verdict::Ours);
        // Peers not named yet, or of an earlier build.
        assert_eq!(verdict("a", 3, &[None, None]), Verdict::Ours);
        // Five members, three others say another.
        assert_eq!(
            verdict("a", 5, &[id("b"), id("b"), id("c"), id("a")]),
            foreign("b, c")
        );
        assert_eq!(
            verdict("a", 5, &[id("b"), id("b"), id("a"), id("a")]),
            Verdict::Ours
        );
        // Two for each, one not heard: nobody has a majority yet.
        assert_eq!(
            verdict("a", 5, &[id("b"), id("b"), id("a")]),
            Verdict::Undecided
        );
    }
}
