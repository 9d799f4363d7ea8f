//! Where proposals become log entries: the proposals made on this node at
//! once, its own clients' batches and those its followers hand it as
//! leader, are merged into as few log entries as fit.
//!
//! Each follower batches its clients' writes before handing them on, but a
//! leader receiving batches from every follower, plus its own, used to
//! propose each as an entry of its own: about five registers to an entry at 64
//! clients, each entry a disk flush on every node, a replication round
//! trip to every follower and an apply. Merged, an entry carries whatever
//! arrived while the previous ones were under way.
//!
//! A proposal is never split over entries: it commits whole, at one index,
//! and its outcomes come back in its order. A proposal whose caller gave up
//! before it reached Raft (its wait ran out at the [`WriteGate`]) is not
//! proposed, and neither is one made while this node leads without a
//! quorum (see [`super::quorum`]): it could only wait in a log that may
//! never commit it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::batches::{in_batches, split_by_size};
use super::handover::WriteGate;
use super::messages::Committed;
use super::quorum;
use crate::raft::{Member, NodeId, Proposal, ProposalResult, Raft};

/// Merged entries under way at once. openraft appends and flushes one
/// entry at a time; what arrives while these are under way is better
/// merged into the next entry than queued as entries of its own.
const IN_FLIGHT: usize = 1;

/// The most proposals one entry merges.
const MAX_PROPOSALS: usize = 256;

/// Why Raft did not take a proposal, as openraft says it.
pub type Refused = RaftError<NodeId, ClientWriteError<NodeId, Member>>;

type Reply = oneshot::Sender<Result<Committed, Refused>>;

/// Set once a proposal is handed to Raft: from then on it may commit
/// whatever its caller hears, so a caller that gives up must not say it
/// was not applied.
#[derive(Clone, Debug, Default)]
pub struct Handed(Arc<AtomicBool>);

impl Handed {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A proposal waiting, who waits for it, and whether it reached Raft.
type Waiting = (Proposal, Reply, Handed);

/// A handle to this node's appender; cheap to clone.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Appender {
    /// Starts the merging task; it ends when every `Appender` is dropped.
    /// Merged entries carry about `entry_bytes` at most (`limits.entry_bytes`):
    /// past it, waiting proposals go in several entries, so that a follower
    /// takes each within one heartbeat. A proposal is never cut, and one
    /// command is at most that large (checked before it is queued). While
    /// no quorum acknowledged this node, leading, within `quorum_within`
    /// (the voters' lease), proposals are refused as if it did not lead.
    pub fn start(raft: Raft, gate: WriteGate, entry_bytes: usize, quorum_within: Duration) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(merge(waiting, raft, gate, entry_bytes, quorum_within));
        Appender { queue }
    }

    /// Proposes `proposal` here, merged with whatever else is proposed at
    /// the same time; answers once it is committed and applied here (this
    /// node leads), or with why Raft refused it (`ForwardToLeader` when
    /// another node leads). Dropping the future before it reached Raft
    /// withdraws it.
    pub async fn append(&self, proposal: Proposal) -> Result<Committed, Refused> {
        self.append_telling(proposal, Handed::default()).await
    }

    /// [`Appender::append`], setting `handed` once the proposal reaches
    /// Raft.
    pub async fn append_telling(
        &self,
        proposal: Proposal,
        handed: Handed,
    ) -> Result<Committed, Refused> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.queue
            .send((proposal, reply, handed))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Takes every proposal waiting, proposes them merged in a task of its own,
/// and goes back for more.
async fn merge(
    waiting: mpsc::UnboundedReceiver<Waiting>,
    raft: Raft,
    gate: WriteGate,
    entry_bytes: usize,
    quorum_within: Duration,
) {
    in_batches(waiting, MAX_PROPOSALS, IN_FLIGHT, move |proposals| {
        let raft = raft.clone();
        let gate = gate.clone();
        async move {
            let _pass = gate.pass().await;
            let proposals = proposals
                .into_iter()
                .filter(|(_, reply, _)| !reply.is_closed());
            let size = |(proposal, _, _): &Waiting| proposal_bytes(proposal);
            for entry in split_by_size(proposals, size, entry_bytes) {
                propose(&raft, entry, quorum_within).await;
            }
        }
    })
    .await
}

/// Proposes the proposals as one entry and answers each with its share.
async fn propose(raft: &Raft, entry: Vec<Waiting>, quorum_within: Duration) {
    let cut_off = quorum::leader_cut_off(&raft.metrics().borrow(), quorum_within);
    if let Some(why) = cut_off {
        tracing::debug!("write not proposed: {why}");
        for (_, reply, _) in entry {
            let _ = reply.send(Err(not_leading()));
        }
        return;
    }
    let mut merged = Proposal {
        commands: Vec::with_capacity(entry.iter().map(|(p, _, _)| p.commands.len()).sum()),
    };
    let mut shares = Vec::with_capacity(entry.len());
    for (proposal, reply, handed) in entry {
        shares.push((proposal.commands.len(), reply));
        merged.commands.extend(proposal.commands);
        handed.set();
    }
    match raft.client_write(merged).await {
        Ok(response) => {
            let index = response.log_id.index;
            let (counts, replies): (Vec<usize>, Vec<Reply>) = shares.into_iter().unzip();
            for (result, reply) in split_result(response.data, &counts).zip(replies) {
                let _ = reply.send(Ok(Committed { result, index }));
            }
        }
        Err(refused) => {
            for (_, reply) in shares {
                let _ = reply.send(Err(refused.clone()));
            }
        }
    }
}

/// What a leader without a quorum answers: as if it did not lead, and knew
/// no leader; its caller waits for one, within its bounded wait.
fn not_leading() -> Refused {
    RaftError::APIError(ClientWriteError::ForwardToLeader(
        openraft::error::ForwardToLeader::empty(),
    ))
}

/// Hands each merged proposal, `counts[i]` commands long, its outcomes.
fn split_result(
    merged: ProposalResult,
    counts: &[usize],
) -> impl Iterator<Item = ProposalResult> + '_ {
    let mut outcomes = merged.outcomes.into_iter();
    counts.iter().map(move |&count| ProposalResult {
        outcomes: outcomes.by_ref().take(count).collect(),
    })
}

fn proposal_bytes(proposal: &Proposal) -> usize {
    proposal.commands.iter().map(|c| c.approx_bytes()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_merged_proposal_gets_its_own_outcomes_in_order() {
        use crate::registry::{Applied, Outcome, RegistryError};
        let outcomes: Vec<Outcome> = (0..6)
            .map(|i| match i % 2 {
                0 => Ok(Applied::Done),
                _ => Err(RegistryError::bad(&format!("p{i}"), "r")),
            })
            .collect();
        let merged = ProposalResult {
            outcomes: outcomes.clone(),
        };
        let shares: Vec<Vec<Outcome>> = split_result(merged, &[1, 3, 0, 2])
            .map(|r| r.outcomes)
            .collect();
        assert_eq!(
            shares,
            [
                outcomes[0..1].to_vec(),
                outcomes[1..4].to_vec(),
                vec![],
                outcomes[4..6].to_vec()
            ]
        );
    }
}
