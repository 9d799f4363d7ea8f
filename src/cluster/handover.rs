//! Handing leadership to another voter without an election gap: before a
//! leader stops (SIGTERM), or when an operator asks (`transfer-leader`).
//!
//! openraft 0.9 has no transfer call, and its voters refuse any vote while
//! their leader's lease is fresh, so a successor cannot simply campaign.
//! The lease does not bind the leader itself once it has led for longer
//! than the lease, though, and the leader's vote plus the successor's own
//! make a quorum of three. So the leader:
//!
//! 1. holds new proposals at its [`WriteGate`] (they wait, then go to the
//!    new leader);
//! 2. waits until everything it appended is committed and the successor
//!    holds its last log entry;
//! 3. asks the successor to campaign ([`accept_elect`]); the successor's
//!    log is as long as the leader's, so the leader grants its vote and
//!    steps down, and the successor leads in the next term;
//! 4. opens the gate: held proposals now go to the new leader.
//!
//! With more than three voters, the successor also needs a voter whose
//! lease has lapsed: it wins once the old leader's heartbeats have stopped
//! for a lease (`election_timeout_max_ms`), still without the
//! randomised timeouts of an election after a crash.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;

use super::link::Link;
use crate::auth::Operator;
use crate::raft::{NodeId, Raft};

pub use super::messages::{ElectRequest, HandoverError};

/// Holds new proposals while leadership is handed over. A proposal holds
/// a pass while it is handed to Raft; closing waits for those under way,
/// so that once closed nothing more is appended here. Cheap to clone.
#[derive(Clone, Default)]
pub struct WriteGate {
    passes: Arc<RwLock<()>>,
}

impl WriteGate {
    /// Waits while the gate is closed; hold the pass until Raft has taken
    /// (and answered) the proposal.
    pub async fn pass(&self) -> RwLockReadGuard<'_, ()> {
        self.passes.read().await
    }

    /// Closes the gate once the proposals under way are answered; it opens
    /// again when the guard is dropped. Proposals that come meanwhile wait.
    async fn close(&self) -> RwLockWriteGuard<'_, ()> {
        self.passes.write().await
    }
}

/// What a node needs to hand its leadership over. Cheap to clone.
#[derive(Clone)]
pub struct Handover {
    pub raft: Raft,
    pub me: NodeId,
    pub gate: WriteGate,
    pub link: Link,
    /// The longest a handover may take, the lease wait included.
    pub within: Duration,
    /// The voters' leader lease: openraft's `election_timeout_max`.
    pub lease: Duration,
}

impl Handover {
    /// Hands leadership to `to` (or the most caught-up voter) from the
    /// leader: here if this node leads, else at the leader it knows.
    pub async fn at_leader(
        &self,
        to: Option<NodeId>,
        operator: &Operator,
    ) -> Result<NodeId, HandoverError> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader;
        match leader {
            Some(l) if l == self.me => self.here(to).await,
            Some(l) => {
                let member = metrics
                    .membership_config
                    .membership()
                    .get_node(&l)
                    .cloned()
                    .ok_or(HandoverError::NotLeader(self.me, leader))?;
                self.link
                    .transfer_leader(&member, to, operator, self.within * 2)
                    .await
                    .map_err(|e| HandoverError::Unreachable(l, e.to_string()))?
            }
            None => Err(HandoverError::NotLeader(self.me, None)),
        }
    }

    /// Hands this node's leadership to `to`, or to the most caught-up
    /// voter; answers the new leader. Bounded by `within`; on failure this
    /// node most likely still leads, and writes resume here.
    pub async fn here(&self, to: Option<NodeId>) -> Result<NodeId, HandoverError> {
        let (raft, me) = (&self.raft, self.me);
        let deadline = Instant::now() + self.within;
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(me) {
            return Err(HandoverError::NotLeader(me, metrics.current_leader));
        }
        let membership = metrics.membership_config.membership().clone();
        let target = match to {
            Some(id) if id == me => return Ok(me),
            Some(id) if membership.voter_ids().any(|v| v == id) => id,
            Some(id) => return Err(HandoverError::NotAVoter(id)),
            None => most_caught_up(&metrics, me).ok_or(HandoverError::NoOtherVoter)?,
        };
        let member = membership
            .get_node(&target)
            .cloned()
            .ok_or(HandoverError::NotAVoter(target))?;

        // A leader refuses votes, its own successor's too, while its own
        // lease (counted from its election) is fresh.
        if let Ok(Some(elected)) = raft.with_raft_state(|s| s.vote_last_modified()).await {
            let lapsed = elected + self.lease + Duration::from_millis(5);
            tokio::time::sleep_until(lapsed.min(deadline)).await;
        }

        let _closed = tokio::time::timeout_at(deadline, self.gate.close())
            .await
            .map_err(|_| HandoverError::NotCaughtUp(target, self.within))?;
        let caught_up = raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |m| {
                    let last = m.last_log_index;
                    m.current_leader == Some(me)
                        && m.last_applied.map(|l| l.index) == last
                        && matched(m, target) == last
                },
                "successor caught up",
            )
            .await
            .map_err(|_| HandoverError::NotCaughtUp(target, self.within))?;
        let request = ElectRequest {
            from: me,
            last_log_index: caught_up.last_log_index.unwrap_or(0),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.link.elect(&member, &request, remaining).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(HandoverError::Refused(target, why)),
            Err(e) => return Err(HandoverError::Unreachable(target, e.to_string())),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let taken = raft
            .wait(Some(remaining))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "successor leads",
            )
            .await;
        let leader = raft.metrics().borrow().current_leader;
        match (taken, leader) {
            (Ok(_), Some(leader)) => {
                tracing::info!(to = leader, "leadership handed over");
                Ok(leader)
            }
            _ => Err(HandoverError::NotTakenOver(target, self.within, leader)),
        }
    }
}

/// The successor's side: campaigns at once if the request comes from its
/// leader and it holds the leader's last entry.
pub async fn accept_elect(raft: &Raft, me: NodeId, request: ElectRequest) -> Result<(), String> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(request.from) {
        return Err(format!(
            "node {} is not my leader ({:?})",
            request.from, m.current_leader
        ));
    }
    if !m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == me)
    {
        return Err(format!("node {me} is not a voter"));
    }
    if m.last_log_index.unwrap_or(0) < request.last_log_index {
        return Err(format!(
            "node {me} holds the log up to {:?}, not {}",
            m.last_log_index, request.last_log_index
        ));
    }
    tracing::info!(
        from = request.from,
        "campaigning for leadership handed over"
    );
    raft.trigger().elect().await.map_err(|e| e.to_string())
}

/// The last log index the leader knows `id` holds.
fn matched(m: &openraft::RaftMetrics<NodeId, crate::raft::Member>, id: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id))
        .and_then(|l| l.map(|l| l.index))
}

/// The voter other than `me` the leader has replicated the most to.
fn most_caught_up(
    m: &openraft::RaftMetrics<NodeId, crate::raft::Member>,
    me: NodeId,
) -> Option<NodeId> {
    m.membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me)
        .max_by_key(|v| (matched(m, *v), std::cmp::Reverse(*v)))
}
