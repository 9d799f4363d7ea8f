//! Repairing a replica whose registry differs from its cluster's (see
//! [`super::consistency`]). Raft forbids wiping a voter: one that forgets
//! its log could vote for a candidate missing entries it acknowledged, and
//! a committed write would be lost. A learner's log counts for nothing, so
//! the repair goes through one:
//!
//! 1. the diverged node hands its leadership over, if it leads;
//! 2. it asks the leader to take its vote ([`Step::Demote`]): the leader
//!    marks it `rebuilding` in the membership and makes it a learner;
//! 3. it records the rebuild in its data directory and stops; the process
//!    starts it again, which sets its log and snapshot aside and opens an
//!    empty log; the leader replicates the cluster's log (or its snapshot)
//!    to it from the start;
//! 4. it serves nothing until it has caught up and a check of its own
//!    finds it agrees; then it asks for its vote back
//!    ([`Step::Promote`], granted only to a node marked `rebuilding`) and
//!    the rebuild is over.
//!
//! Automatic unless `[consistency] repair = false`; an operator can start
//! one at any time (`POST /admin/repair`, `discoveryctl repair`). A
//! rebuild that ends diverged again is tried [`MAX_ATTEMPTS`] times in a
//! row, then the node stays out of service for an operator: a fault that
//! comes back from the cluster's own log is no disk's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::sync::{mpsc, watch};

use super::handover::Handover;
use super::link::Link;
use crate::raft::data_dir::{self, Rebuild};
use crate::raft::{Member, NodeId, Raft};
use crate::shutdown::{stopped, Faults};

pub use super::messages::{RepairStep, Step};

/// Rebuilds in a row that end diverged before automatic repair gives up.
pub const MAX_ATTEMPTS: u32 = 3;

/// How long a step asked of the leader may take (two membership changes).
const STEP_WITHIN: Duration = Duration::from_secs(10);

/// How long a repair keeps asking for a step when there is no leader to
/// ask, or it refuses.
const STEP_TRIES: Duration = Duration::from_secs(60);

/// What the repair task hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A check found this node agrees with its cluster.
    Agreed,
    /// A check found this node differs: why.
    Diverged(String),
    /// An operator asked for a repair.
    Asked,
}

/// Where checks and operators tell the repair task.
pub type Tell = mpsc::Sender<Heard>;

/// Why a repair cannot start on this node now, if it cannot.
pub fn refusal(raft: &Raft, me: NodeId) -> Option<String> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    if membership.get_node(&me).is_none() {
        return Some(format!("node {me} is not a member of a cluster"));
    }
    let others: BTreeSet<NodeId> = membership.voter_ids().filter(|v| *v != me).collect();
    if others.is_empty() {
        return Some(format!(
            "node {me} is the only voter: there is no other replica to rebuild from"
        ));
    }
    None
}

/// The leader's side of a step: `node` is the caller, proven by the peer
/// layer.
pub async fn accept(raft: &Raft, request: RepairStep) -> Result<(), String> {
    let id = request.node;
    let (leads, member, voter) = {
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (
            m.current_leader == Some(m.id),
            membership.get_node(&id).cloned(),
            membership.voter_ids().any(|v| v == id),
        )
    };
    if !leads {
        return Err("this node does not lead".into());
    }
    let Some(member) = member else {
        // Read by [`not_a_member`].
        return Err(format!("node {id} is not a member"));
    };
    let set = |rebuilding: bool| {
        ChangeMembers::SetNodes(
            [(
                id,
                Member {
                    rebuilding,
                    ..member.clone()
                },
            )]
            .into(),
        )
    };
    let change = |c| async move {
        raft.change_membership(c, true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match request.step {
        // Marked first: however far this gets, the mark says the node is
        // owed its vote back.
        Step::Demote if voter => {
            change(set(true)).await?;
            change(ChangeMembers::RemoveVoters([id].into())).await?;
            tracing::warn!(node = id, "node gave up its vote to rebuild its registry");
        }
        // A learner rebuilds without losing anything.
        Step::Demote => {}
        Step::Promote if !member.rebuilding && voter => {}
        Step::Promote if !member.rebuilding => {
            return Err(format!(
                "node {id} was not taken out of the vote for a repair: an operator promotes it"
            ))
        }
        Step::Promote => {
            if !voter {
                change(ChangeMembers::AddVoterIds([id].into())).await?;
            }
            change(set(false)).await?;
            tracing::warn!(node = id, "node rebuilt its registry and votes again");
        }
    }
    Ok(())
}

/// Storage found damaged before the node started on it: gives its vote up
/// (asking each member it knows, as it knows no leader yet) and records
/// the rebuild, for the node to start again empty. Fails, naming the
/// damage, when it has no peer, has rebuilt [`MAX_ATTEMPTS`] times in a
/// row, or no leader takes its vote within `within`.
pub async fn rebuild_damaged(
    link: &Link,
    me: NodeId,
    members: &[(NodeId, Member)],
    data_dir: &Path,
    why: String,
    within: Duration,
) -> anyhow::Result<()> {
    let others: Vec<&Member> = members
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(_, m)| m)
        .collect();
    anyhow::ensure!(
        !others.is_empty(),
        "{why}; this node has no peer to rebuild it from: restore its data directory from a \
         backup"
    );
    let attempts = data_dir::rebuilding(data_dir)?.map_or(0, |r| r.attempts) + 1;
    anyhow::ensure!(
        attempts <= MAX_ATTEMPTS,
        "{why}; rebuilt {MAX_ATTEMPTS} times in a row and damaged again: look at the disk"
    );
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if give_vote_up(link, me, &others).await.is_ok() {
            mark(data_dir, why, attempts)?;
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{why}; no leader took this node's vote to rebuild it from the cluster within \
             {within:?}: start the other nodes, or restore this node's data directory"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks each of `members` once to take this node's vote (only the leader
/// does): `Ok` once one did, else each one's answer.
pub async fn give_vote_up(link: &Link, me: NodeId, members: &[&Member]) -> Result<(), Vec<String>> {
    let request = RepairStep {
        node: me,
        step: Step::Demote,
    };
    let mut answers = Vec::new();
    for member in members {
        match link.repair(member, &request, STEP_WITHIN).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(why)) => answers.push(why),
            Err(e) => answers.push(e.to_string()),
        }
    }
    Err(answers)
}

/// Records a rebuild for the node to start on: its vote was taken.
pub fn mark(data_dir: &Path, why: String, attempts: u32) -> std::io::Result<()> {
    let rebuild = Rebuild {
        why,
        attempts,
        set_aside: false,
    };
    data_dir::mark_rebuild(data_dir, &rebuild)?;
    tracing::warn!("rebuilding from the cluster: its leader took this node's vote");
    Ok(())
}

/// What the leader answers a node that asks for its vote to be taken and
/// is no member: [`accept`]'s refusal.
pub fn not_a_member(answer: &str) -> bool {
    answer.ends_with("is not a member")
}

/// A node's repair task: hears what checks find and what operators ask,
/// and carries a repair through.
pub struct Repair {
    pub raft: Raft,
    pub me: NodeId,
    pub link: Link,
    pub handover: Handover,
    pub data_dir: PathBuf,
    pub faults: Faults,
    /// Whether a divergence starts a repair without an operator.
    pub automatic: bool,
    /// The rebuild under way when the node started, if any.
    pub rebuilding: Option<Rebuild>,
    /// Counts rebuilds finished.
    pub rebuilds: prometheus_client::metrics::counter::Counter,
}

impl Repair {
    pub async fn run(mut self, mut heard: mpsc::Receiver<Heard>, mut stop: watch::Receiver<bool>) {
        let mut said_manual = false;
        loop {
            let what = tokio::select! {
                _ = stopped(&mut stop) => return,
                what = heard.recv() => match what { Some(w) => w, None => return },
            };
            let attempts = self.rebuilding.as_ref().map_or(0, |r| r.attempts);
            match what {
                Heard::Agreed => self.agreed().await,
                Heard::Diverged(_) if attempts >= MAX_ATTEMPTS => {
                    if attempts == MAX_ATTEMPTS {
                        tracing::error!(
                            attempts,
                            "rebuilt from the cluster {attempts} times and still differs: not \
                             repairing again on its own; this node serves nothing until an \
                             operator looks (discoveryctl repair starts another)"
                        );
                        if let Some(r) = &mut self.rebuilding {
                            r.attempts += 1;
                        }
                    }
                }
                Heard::Diverged(why) if self.automatic => {
                    if self.start(why, attempts + 1, &mut stop).await {
                        return;
                    }
                }
                Heard::Diverged(_) => {
                    if !said_manual {
                        said_manual = true;
                        tracing::warn!(
                            "[consistency] repair = false: this node stays out of service \
                             until an operator repairs it (discoveryctl repair)"
                        );
                    }
                }
                Heard::Asked => {
                    if self
                        .start("an operator asked for it".into(), 1, &mut stop)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// A check agrees: a rebuild under way is over.
    async fn agreed(&mut self) {
        let marked = self.member().is_some_and(|m| m.rebuilding);
        if marked {
            if let Err(e) = self.ask(Step::Promote).await {
                tracing::warn!("rebuilt, but not given its vote back yet: {e}");
                return;
            }
        }
        if self.rebuilding.take().is_some() {
            self.rebuilds.inc();
            match data_dir::rebuilt(&self.data_dir) {
                // As loud as the repair's start, which it closes.
                Ok(()) => tracing::warn!("rebuilt from the cluster: this node agrees again"),
                Err(e) => tracing::warn!("rebuilt, but the rebuild is still recorded: {e}"),
            }
        }
    }

    fn member(&self) -> Option<Member> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&self.me)
            .cloned()
    }

    fn votes(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let votes = metrics
            .membership_config
            .membership()
            .get_joint_config()
            .iter()
            .any(|c| c.contains(&self.me));
        votes
    }

    /// Gives the vote up, records the rebuild and stops the node for the
    /// process to start it again, empty: whether it got that far.
    async fn start(
        &mut self,
        why: String,
        attempts: u32,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        if let Some(refused) = refusal(&self.raft, self.me) {
            tracing::error!("not repairing: {refused}");
            return false;
        }
        tracing::warn!(attempts, "repairing: {why}");
        if self.raft.metrics().borrow().current_leader == Some(self.me) {
            if let Err(e) = self.handover.here(None).await {
                tracing::warn!("not repairing yet: leadership not handed over: {e}");
                return false;
            }
        }
        let asked = tokio::select! {
            _ = stopped(stop) => return false,
            asked = self.ask(Step::Demote) => asked,
        };
        if let Err(e) = asked {
            tracing::warn!("not repairing yet: the leader did not take this node's vote: {e}");
            return false;
        }
        // The change is applied here too before anything is set aside.
        let deadline = tokio::time::Instant::now() + STEP_WITHIN;
        while self.votes() {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("not repairing yet: still a voter here");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rebuild = Rebuild {
            why: why.clone(),
            attempts,
            set_aside: false,
        };
        if let Err(e) = data_dir::mark_rebuild(&self.data_dir, &rebuild) {
            tracing::error!("not repairing: cannot record the rebuild: {e}");
            return false;
        }
        self.faults.rebuild(why);
        true
    }

    /// Asks the leader for `step`, again while there is none or it
    /// refuses, for up to [`STEP_TRIES`].
    async fn ask(&self, step: Step) -> Result<(), String> {
        let request = RepairStep {
            node: self.me,
            step,
        };
        let deadline = tokio::time::Instant::now() + STEP_TRIES;
        loop {
            let leader = {
                let m = self.raft.metrics().borrow().clone();
                m.current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
            };
            let answer = match leader {
                Some(leader) => match self.link.repair(&leader, &request, STEP_WITHIN).await {
                    Ok(answer) => answer,
                    Err(e) => Err(format!("leader {leader} did not answer: {e}")),
                },
                None => Err("no leader".into()),
            };
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(e) => tracing::debug!(?step, "asking again: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
