//! The write path: every registry command is proposed to the Raft log by the
//! leader, in batches.
//!
//! Commands from concurrent clients are gathered into one log entry while
//! the previous one is being proposed, so the cost of a round (a disk flush,
//! a replication round trip) is shared. A follower sends its batch to the
//! leader; with no leader it waits a bounded time, then gives up with
//! `NoQuorum`, having proposed nothing.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::raft::network::PROPOSE_PATH;
use crate::raft::{Member, NodeId, Proposal, ProposalResult, Raft};
use crate::registry::{Command, Outcome};

/// The most commands one log entry carries.
const MAX_BATCH: usize = 1024;

/// Proposals under way at once. openraft appends (and flushes) one entry at
/// a time, so commands that arrive while these are under way are better
/// gathered into the next entry than queued as entries of their own.
const IN_FLIGHT: usize = 2;

/// Why a write was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No leader could be reached within the bounded wait: nothing applied.
    #[error("no quorum: no leader reachable within {0:?}")]
    NoQuorum(Duration),
    /// The leader holding the write stopped answering and another took
    /// over: it may or may not be applied.
    #[error("no quorum: leader {0} was replaced while it held this write, which may still apply")]
    LeaderReplaced(NodeId),
    /// The node is shutting down or its Raft stopped.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// A handle to the write path; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<(Command, Reply)>,
}

impl Writer {
    /// Starts the batching task; it ends when every `Writer` is dropped.
    pub fn start(raft: Raft, wait_for_leader: Duration) -> Self {
        let (queue, commands) = mpsc::unbounded_channel();
        let proposer = Arc::new(Proposer {
            raft,
            http: crate::raft::network::peer_client(),
            wait_for_leader,
        });
        tokio::spawn(gather(commands, proposer));
        Writer { queue }
    }

    /// Proposes one command and waits until it is committed and applied.
    pub async fn write(&self, command: Command) -> Result<Outcome, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((command, tx))
            .map_err(|_| WriteError::Unavailable("write path stopped".into()))?;
        rx.await
            .map_err(|_| WriteError::Unavailable("write dropped".into()))?
    }
}

/// Takes whatever commands are waiting, proposes them as one entry in a task
/// of its own, and goes back for more.
async fn gather(mut commands: mpsc::UnboundedReceiver<(Command, Reply)>, proposer: Arc<Proposer>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if commands.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (cmds, replies): (Vec<Command>, Vec<Reply>) = batch.drain(..).unzip();
        let proposer = proposer.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let results = proposer.propose(Proposal { commands: cmds }).await;
            match results {
                Ok(result) => {
                    for (reply, outcome) in replies.into_iter().zip(result.outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

struct Proposer {
    raft: Raft,
    http: reqwest::Client,
    wait_for_leader: Duration,
}

impl Proposer {
    /// Proposes locally when this node leads, else hands the proposal to
    /// the leader; retries only where the proposal certainly was not
    /// applied, until the bounded wait is over.
    async fn propose(&self, proposal: Proposal) -> Result<ProposalResult, WriteError> {
        let deadline = Instant::now() + self.wait_for_leader;
        loop {
            // A leader cut off from its quorum accepts the entry but cannot
            // commit it: the wait is bounded there too. The entry may still
            // commit later, whole, if the leader regains its quorum.
            let written =
                tokio::time::timeout_at(deadline, self.raft.client_write(proposal.clone())).await;
            let Ok(written) = written else {
                return Err(WriteError::NoQuorum(self.wait_for_leader));
            };
            match written {
                Ok(response) => return Ok(response.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
                    leader_id: Some(leader),
                    leader_node: Some(member),
                }))) => match self.forward(leader, &member, &proposal, deadline).await {
                    Forwarded::Done(result) => return result,
                    Forwarded::NotSent => {}
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(WriteError::Unavailable(e.to_string()))
                }
                Err(RaftError::Fatal(e)) => return Err(WriteError::Unavailable(e.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(WriteError::NoQuorum(self.wait_for_leader));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        member: &Member,
        proposal: &Proposal,
        deadline: Instant,
    ) -> Forwarded {
        // A leader that stops answering (paused, partitioned: its
        // connections stay open, its packets go nowhere) would hold the
        // write, and this node's write path, for the whole bounded wait.
        // Once another node leads, the answer is no longer worth waiting
        // for: the write is given up as "may still apply", never resent.
        tokio::select! {
            forwarded = self.exchange(leader, member, proposal, deadline) => forwarded,
            _ = another_leader(&self.raft, leader) => {
                Forwarded::Done(Err(WriteError::LeaderReplaced(leader)))
            }
        }
    }

    async fn exchange(
        &self,
        leader: NodeId,
        member: &Member,
        proposal: &Proposal,
        deadline: Instant,
    ) -> Forwarded {
        let url = format!("http://{}{}", member.raft_addr, PROPOSE_PATH);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let sent = self
            .http
            .post(url)
            .timeout(remaining.max(Duration::from_millis(100)))
            .json(proposal)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Forwarded::NotSent,
            Err(e) if e.is_timeout() => {
                return Forwarded::Done(Err(WriteError::NoQuorum(self.wait_for_leader)))
            }
            Err(e) => {
                return Forwarded::Done(Err(WriteError::Unavailable(format!(
                    "leader {leader} did not answer: {e}"
                ))))
            }
        };
        match response
            .json::<Result<ProposalResult, ForwardError>>()
            .await
        {
            Ok(Ok(result)) => Forwarded::Done(Ok(result)),
            Ok(Err(ForwardError::NotLeader)) => Forwarded::NotSent,
            Ok(Err(ForwardError::Failed(e))) => Forwarded::Done(Err(WriteError::Unavailable(e))),
            Err(e) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "bad answer from leader {leader}: {e}"
            )))),
        }
    }
}

/// Resolves once this node knows a leader other than `leader` (itself
/// included); never if Raft stops.
pub async fn another_leader(raft: &Raft, leader: NodeId) {
    let mut metrics = raft.metrics();
    if metrics
        .wait_for(|m| m.current_leader.is_some_and(|l| l != leader))
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

enum Forwarded {
    Done(Result<ProposalResult, WriteError>),
    /// The leader never took the proposal (unreachable, or no longer
    /// leading): safe to try again.
    NotSent,
}

/// A leader's refusal of a forwarded proposal.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ForwardError {
    /// This node does not lead (any more); nothing was proposed.
    NotLeader,
    /// Proposed, or tried to, and failed.
    Failed(String),
}

/// The leader's side of a forwarded proposal: propose it here only, never
/// forward again.
pub async fn accept_forwarded(
    raft: &Raft,
    proposal: Proposal,
) -> Result<ProposalResult, ForwardError> {
    match raft.client_write(proposal).await {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err(ForwardError::NotLeader)
        }
        Err(e) => Err(ForwardError::Failed(e.to_string())),
    }
}
