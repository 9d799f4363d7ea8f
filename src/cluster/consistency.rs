//! Replicas proving they agree. The leader puts a check entry through the
//! log every so often (and after every membership change); every replica
//! records its digest right after applying it ([`crate::local`]), so the
//! digests compared are of the same log prefix. Each replica then asks the
//! others what they recorded at that index and judges: the digest most of
//! the cluster holds is the cluster's. A replica that holds another is
//! diverged: it says so (an ERROR naming the index and the apps that
//! differ, a metric, its status), serves no reads or polls, and, leading,
//! steps down; then it repairs itself ([`super::repair`]). The leader also
//! says which replicas differ from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::handover::Handover;
use super::leader_watch::leading;
use super::link::Link;
use super::protection::Protection;
use super::repair::{Heard, Tell};
use super::writer::Writer;
use crate::auth::Origin;
use crate::local::{CheckRecord, LocalRegistry};
use crate::raft::{Member, NodeId, Raft};
use crate::registry::{AppDigest, Command};
use crate::shutdown::stopped;
use crate::telemetry::Metrics;

/// How long a replica is given to apply a check entry and answer.
const HOLD: Duration = Duration::from_secs(5);

/// What one round of answers says.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Most of the cluster holds this node's digest; `odd` hold another.
    Agreed { odd: BTreeSet<NodeId> },
    /// Most of the cluster holds `agreed`, which `by` hold; this node
    /// holds another: it diverged.
    Diverged {
        agreed: String,
        by: BTreeSet<NodeId>,
    },
    /// Every member answered and no digest is held by most of them.
    Split,
    /// Too few answered to tell.
    Undecided,
}

/// Judges one check: this node's digest `mine`, what the other members
/// answered (`(id, digest)`), of `members` in all.
pub fn judge(me: NodeId, mine: &str, answers: &[(NodeId, String)], members: usize) -> Judgement {
    let mut by: BTreeMap<&str, BTreeSet<NodeId>> = BTreeMap::new();
    by.entry(mine).or_default().insert(me);
    for (id, digest) in answers {
        by.entry(digest.as_str()).or_default().insert(*id);
    }
    let majority = by.iter().find(|(_, nodes)| nodes.len() > members / 2);
    match majority {
        Some((digest, _)) if *digest == mine => Judgement::Agreed {
            odd: answers
                .iter()
                .filter(|(_, d)| d != mine)
                .map(|(id, _)| *id)
                .collect(),
        },
        Some((digest, nodes)) => Judgement::Diverged {
            agreed: digest.to_string(),
            by: nodes.clone(),
        },
        None if answers.len() + 1 >= members => Judgement::Split,
        None => Judgement::Undecided,
    }
}

/// The apps whose digests differ between two records (by env and appid;
/// an app only one holds counts), at most `max`, as `env/appid (here N
/// instances, there M)`.
pub fn differing_apps(mine: &[AppDigest], theirs: &[AppDigest], max: usize) -> Vec<String> {
    let index =
        |apps: &[AppDigest]| -> BTreeMap<(String, String), (usize, crate::registry::digest::Sum)> {
            apps.iter()
                .map(|a| ((a.env.clone(), a.appid.clone()), (a.instances, a.digest)))
                .collect()
        };
    let (mine, theirs) = (index(mine), index(theirs));
    let keys: BTreeSet<&(String, String)> = mine.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .filter(|k| mine.get(*k) != theirs.get(*k))
        .take(max)
        .map(|(env, appid)| {
            let count = |m: &BTreeMap<_, (usize, _)>| {
                m.get(&(env.clone(), appid.clone())).map_or(0, |(n, _)| *n)
            };
            format!(
                "{env}/{appid} (here {} instances, there {})",
                count(&mine),
                count(&theirs)
            )
        })
        .collect()
}

/// While this node leads, puts a check through the log every `every`,
/// and one after every membership change.
pub async fn propose_checks(
    raft: Raft,
    me: NodeId,
    writer: Writer,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = leading(&raft, me) => {}
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
            _ = membership_changes(&raft) => {}
        }
        if raft.metrics().borrow().current_leader != Some(me) {
            continue;
        }
        round += 1;
        if let Err(e) = writer
            .write(Command::Check { round }, Origin::Cluster)
            .await
        {
            tracing::debug!("consistency check not proposed: {e}");
        }
    }
}

/// Resolves when the membership this node knows changes.
async fn membership_changes(raft: &Raft) {
    let mut metrics = raft.metrics();
    let before = metrics
        .borrow_and_update()
        .membership_config
        .log_id()
        .to_owned();
    while metrics.changed().await.is_ok() {
        if *metrics.borrow_and_update().membership_config.log_id() != before {
            return;
        }
    }
    std::future::pending().await
}

/// What comparing checks needs.
pub struct Compare {
    pub raft: Raft,
    pub me: NodeId,
    pub local: Arc<LocalRegistry>,
    pub link: Link,
    pub protection: Arc<Protection>,
    pub handover: Handover,
    pub metrics: Arc<Metrics>,
    /// The index of the latest check this node judged, as it moves.
    pub judged: watch::Sender<u64>,
    /// Told whether this node agrees, after every judgement.
    pub repair: Tell,
}

/// A check of its own, proposed by a node that has just caught up, before
/// it serves: resolves once this node has judged it (whatever the
/// judgement: a diverged node keeps refusing reads on its own), or after
/// `within`.
pub async fn start_check(
    writer: Writer,
    local: Arc<LocalRegistry>,
    mut judged: watch::Receiver<u64>,
    within: Duration,
) {
    let checked = async {
        if let Err(e) = writer
            .write(Command::Check { round: 0 }, Origin::Cluster)
            .await
        {
            tracing::warn!("start-up consistency check not proposed: {e}");
            return;
        }
        // Applied here once the write returns: the latest check recorded
        // is this one or later.
        let index = *local.checked().borrow();
        let _ = judged.wait_for(|j| *j >= index).await;
    };
    if tokio::time::timeout(within, checked).await.is_err() {
        tracing::warn!("start-up consistency check not judged in time: serving without it");
    }
}

impl Compare {
    /// Compares every check this node applies with the other members'.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut checked = self.local.checked();
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                changed = checked.changed() => if changed.is_err() { return },
            }
            let index = *checked.borrow_and_update();
            let Some(mine) = self.local.check_at(index) else {
                continue;
            };
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = self.round(&mine) => {}
            }
            self.judged.send_replace(index);
        }
    }

    fn members(&self) -> Vec<(NodeId, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, member)| (*id, member.clone()))
            .collect()
    }

    async fn round(&self, mine: &CheckRecord) {
        let members = self.members();
        if !members.iter().any(|(id, _)| *id == self.me) {
            return;
        }
        let asks = members
            .iter()
            .filter(|(id, _)| *id != self.me)
            .map(|(id, member)| async move {
                let record = self.link.check(member, mine.index, false, HOLD).await;
                Some((*id, record.ok()??.digest))
            });
        let answers: Vec<(NodeId, String)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.metrics.checks.inc();
        let leads = self.raft.metrics().borrow().current_leader == Some(self.me);
        match judge(self.me, &mine.digest, &answers, members.len()) {
            Judgement::Agreed { odd } => {
                self.metrics.diverged.set(0);
                self.protection.agree();
                // Dropped when the repair task is busy: the next check
                // tells again.
                let _ = self.repair.try_send(Heard::Agreed);
                if leads {
                    self.metrics.replicas_diverged.set(odd.len() as i64);
                    if !odd.is_empty() {
                        tracing::error!(
                            index = mine.index,
                            nodes = ?odd,
                            "replicas differ from the cluster's registry at this log index: \
                             they serve no reads until repaired"
                        );
                    }
                }
            }
            Judgement::Diverged { agreed, by } => {
                self.diverged(mine, &agreed, &by, &members, leads).await
            }
            Judgement::Split => {
                tracing::error!(
                    index = mine.index,
                    mine = mine.digest,
                    answers = ?answers,
                    "replicas hold different registries at this log index and no digest is \
                     held by most of them: nothing to repair from; look at /admin/digest of each"
                );
            }
            Judgement::Undecided => {}
        }
    }

    async fn diverged(
        &self,
        mine: &CheckRecord,
        agreed: &str,
        by: &BTreeSet<NodeId>,
        members: &[(NodeId, Member)],
        leads: bool,
    ) {
        // Which apps differ, from one node that holds the cluster's.
        let mut apps = Vec::new();
        for (_, member) in members.iter().filter(|(id, _)| by.contains(id)) {
            if let Ok(Some(theirs)) = self.link.check(member, mine.index, true, HOLD).await {
                apps = differing_apps(&mine.apps, &theirs.apps, 10);
                break;
            }
        }
        let why = format!(
            "this node's registry differs from the cluster's at log index {}: digest {} here, \
             {agreed} on nodes {by:?}; apps that differ: {}",
            mine.index,
            mine.digest,
            if apps.is_empty() {
                "(not known)".to_string()
            } else {
                apps.join(", ")
            }
        );
        tracing::error!(node = self.me, "{why}");
        self.metrics.diverged.set(1);
        self.protection.diverge(why.clone());
        if leads {
            match self.handover.here(None).await {
                Ok(to) => tracing::warn!(to, "diverged: leadership handed over"),
                Err(e) => tracing::warn!("diverged, and leadership not handed over: {e}"),
            }
        }
        let _ = self.repair.try_send(Heard::Diverged(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Sum;

    fn answers(list: &[(NodeId, &str)]) -> Vec<(NodeId, String)> {
        list.iter().map(|(id, d)| (*id, d.to_string())).collect()
    }

    #[test]
    fn the_digest_most_of_the_cluster_holds_is_the_clusters() {
        // All agree.
        assert_eq!(
            judge(1, "a", &answers(&[(2, "a"), (3, "a")]), 3),
            Judgement::Agreed {
                odd: BTreeSet::new()
            }
        );
        // Node 3 is the odd one out, as node 1 sees it...
        assert_eq!(
            judge(1, "a", &answers(&[(2, "a"), (3, "b")]), 3),
            Judgement::Agreed { odd: [3].into() }
        );
        // ...and as node 3 sees it.
        assert_eq!(
            judge(3, "b", &answers(&[(1, "a"), (2, "a")]), 3),
            Judgement::Diverged {
                agreed: "a".into(),
                by: [1, 2].into()
            }
        );
        // A leader outvoted by its two followers is the diverged one.
        assert_eq!(
            judge(1, "x", &answers(&[(2, "a"), (3, "a")]), 3),
            Judgement::Diverged {
                agreed: "a".into(),
                by: [2, 3].into()
            }
        );
        // Three different digests: no majority, nothing to repair from.
        assert_eq!(
            judge(1, "a", &answers(&[(2, "b"), (3, "c")]), 3),
            Judgement::Split
        );
        // One answer of two that differs: cannot tell who is right.
        assert_eq!(
            judge(1, "a", &answers(&[(2, "b")]), 3),
            Judgement::Undecided
        );
        // Learners count among the members.
        assert_eq!(
            judge(4, "b", &answers(&[(1, "a"), (2, "a"), (3, "a")]), 5),
            Judgement::Diverged {
                agreed: "a".into(),
                by: [1, 2, 3].into()
            }
        );
    }

    #[test]
    fn the_apps_that_differ_are_named() {
        let app = |appid: &str, n: usize, d: u128| AppDigest {
            env: "prod".into(),
            appid: appid.into(),
            instances: n,
            latest_timestamp: 1,
            digest: Sum(d),
        };
        let mine = [app("a", 2, 1), app("b", 3, 2), app("c", 1, 3)];
        let theirs = [app("a", 2, 1), app("b", 3, 9), app("d", 4, 4)];
        assert_eq!(
            differing_apps(&mine, &theirs, 10),
            [
                "prod/b (here 3 instances, there 3)",
                "prod/c (here 1 instances, there 0)",
                "prod/d (here 0 instances, there 4)"
            ]
        );
        assert_eq!(differing_apps(&mine, &theirs, 1).len(), 1);
    }
}
