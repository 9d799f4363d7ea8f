//! The write path: every registry command is proposed to the Raft log by the
//! leader, in batches.
//!
//! Commands from concurrent clients are gathered into one log entry while
//! the previous one is being proposed, so the cost of a round (a disk flush,
//! a replication round trip) is shared. A follower sends its batch to the
//! leader; with no leader it waits a bounded time, then gives up with
//! `NoQuorum`, having proposed nothing.
//!
//! Every command is checked before it is proposed, here and again by the
//! leader for proposals a peer hands it, with the registry's one
//! [`validate`]; and who sent it ([`Origin`]) travels with it, so the
//! leader checks the sender against its own `allow_write_from` and admin
//! token too, whichever node the sender reached. A write is answered only
//! once this node has applied it, so a read sent to the same node next sees
//! it (read-your-writes).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::appender::{Appender, Handed};
use super::batches::{in_batches, split_by_size};
use super::catch_up::ReadBarrier;
use super::link::{Link, LinkError};
use crate::auth::{Access, Origin};
use crate::clock::now;
use crate::local::LocalRegistry;
use crate::raft::space::SpaceGuard;
use crate::raft::{Member, NodeId, Proposal, ProposalResult, Raft};
use crate::registry::{validate, Command, Outcome, RegistryError, Rules};

pub use super::messages::{Committed, Forward, ForwardError, WriteError};

/// The most commands one log entry carries.
const MAX_BATCH: usize = 1024;

/// Proposals under way at once. openraft appends (and flushes) one entry at
/// a time, so commands that arrive while these are under way are better
/// gathered into the next entry than queued as entries of their own.
const IN_FLIGHT: usize = 2;

/// How long a write handed to a leader that was since replaced may still
/// wait for its answer.
const REPLACED_LEADER_GRACE: Duration = Duration::from_millis(250);

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// A command on its way, with its sender and who waits for its outcome.
struct Queued {
    command: Command,
    origin: Origin,
    reply: Reply,
}

/// What every write is checked against before it is proposed.
#[derive(Clone)]
pub struct Checks {
    pub rules: Rules,
    /// What this node applied: a write that can only fail against it is
    /// answered without being proposed...
    pub local: Arc<LocalRegistry>,
    /// ...once this node has applied all the leader had committed: a
    /// follower may not yet hold a write acknowledged elsewhere (a cancel
    /// of an instance just registered through the leader).
    pub reads: ReadBarrier,
}

/// A handle to the write path; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Queued>,
    checks: Checks,
}

impl Writer {
    /// Starts the batching task; it ends when every `Writer` is dropped.
    pub fn start(
        raft: Raft,
        link: Link,
        wait_for_leader: Duration,
        checks: Checks,
        space: SpaceGuard,
        forward_seconds: Histogram,
        appender: Appender,
    ) -> Self {
        let (queue, commands) = mpsc::unbounded_channel();
        let entry_bytes = checks.rules.limits.entry_bytes;
        let proposer = Arc::new(Proposer {
            raft,
            link,
            wait_for_leader,
            space,
            forward_seconds,
            appender,
        });
        tokio::spawn(gather(commands, proposer, entry_bytes));
        Writer { queue, checks }
    }

    /// The most bytes one command may take in the log (`limits.entry_bytes`).
    pub fn entry_bytes(&self) -> usize {
        self.checks.rules.limits.entry_bytes
    }

    /// Checks one command from `origin` (against the rules, then against
    /// what this node applied), proposes it and waits until it is
    /// committed and applied on this node.
    pub async fn write(&self, command: Command, origin: Origin) -> Result<Outcome, WriteError> {
        validate(&command, now(), &self.checks.rules).map_err(WriteError::Invalid)?;
        let refused_here = self.checks.local.read().refusal(&command).is_some();
        // A refusal stands only against a state that holds every write
        // acknowledged before this one arrived: a read barrier (one round
        // trip, paid only by writes that would fail), then a second look.
        // Unconfirmed (no leader), the write is proposed and apply decides.
        if refused_here && self.checks.reads.confirm().await.is_ok() {
            if let Some(refused) = self.checks.local.read().refusal(&command) {
                return Ok(Err(refused));
            }
        }
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Queued {
                command,
                origin,
                reply: tx,
            })
            .map_err(|_| WriteError::Unavailable("write path stopped".into()))?;
        rx.await
            .map_err(|_| WriteError::Unavailable("write dropped".into()))?
    }
}

/// Takes whatever commands are waiting, proposes them as one entry in a task
/// of its own, and goes back for more.
async fn gather(
    commands: mpsc::UnboundedReceiver<Queued>,
    proposer: Arc<Proposer>,
    entry_bytes: usize,
) {
    in_batches(commands, MAX_BATCH, IN_FLIGHT, move |batch| {
        let proposer = proposer.clone();
        let size = |queued: &Queued| queued.command.approx_bytes();
        let entries = split_by_size(batch.into_iter(), size, entry_bytes);
        async move {
            for entry in entries {
                let mut forward = Forward {
                    proposal: Proposal {
                        commands: Vec::with_capacity(entry.len()),
                    },
                    origins: Vec::with_capacity(entry.len()),
                };
                let mut replies = Vec::with_capacity(entry.len());
                for queued in entry {
                    forward.proposal.commands.push(queued.command);
                    forward.origins.push(queued.origin);
                    replies.push(queued.reply);
                }
                match proposer.propose(forward).await {
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
            }
        }
    })
    .await
}

struct Proposer {
    raft: Raft,
    link: Link,
    wait_for_leader: Duration,
    /// Every node appends every entry: one whose disk is short of room
    /// refuses here, before proposing, so its client tries another node.
    space: SpaceGuard,
    /// How long the leader takes to answer a forwarded batch.
    forward_seconds: Histogram,
    /// Proposes here, merged with whatever else is proposed here.
    appender: Appender,
}

impl Proposer {
    /// Proposes the batch, then waits until this node has applied it.
    async fn propose(&self, forward: Forward) -> Result<ProposalResult, WriteError> {
        self.space
            .check()
            .map_err(|e| WriteError::DiskFull(e.to_string()))?;
        let deadline = Instant::now() + self.wait_for_leader;
        let committed = self.commit(forward, deadline).await?;
        // The leader answers once it applied the entry; a follower may not
        // have yet. The wait is bounded like the rest of the write.
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining.max(Duration::from_millis(100))))
            .applied_index_at_least(Some(committed.index), "write applied here")
            .await
            .map_err(|_| WriteError::NotAppliedHere(committed.index))?;
        Ok(committed.result)
    }

    /// Proposes locally when this node leads, else hands the proposal to
    /// the leader; retries only where the proposal certainly was not
    /// applied, until the bounded wait is over.
    async fn commit(&self, forward: Forward, deadline: Instant) -> Result<Committed, WriteError> {
        loop {
            // A leader cut off from its quorum accepts the entry but cannot
            // commit it: the wait is bounded there too. The entry may still
            // commit later, whole, if the leader regains its quorum.
            // A proposal still held at the write gate when the wait runs
            // out is withdrawn, never proposed.
            let proposal = forward.proposal.clone();
            let handed = Handed::default();
            let append = self.appender.append_telling(proposal, handed.clone());
            let written = tokio::time::timeout_at(deadline, append).await;
            let Ok(written) = written else {
                if handed.is_set() {
                    return Err(WriteError::Unknown(format!(
                        "appended to this leader's log, not committed within {:?}",
                        self.wait_for_leader
                    )));
                }
                return Err(WriteError::NoQuorum(self.wait_for_leader));
            };
            match written {
                Ok(committed) => return Ok(committed),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
                    leader_id: Some(leader),
                    leader_node: Some(member),
                }))) => match self.forward(leader, &member, &forward, deadline).await {
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
        forward: &Forward,
        deadline: Instant,
    ) -> Forwarded {
        // A leader that stops answering (paused, partitioned: its
        // connections stay open, its packets go nowhere) would hold the
        // write, and this node's write path, for the whole bounded wait.
        // Once another node leads, the answer is worth waiting for only a
        // moment: a leader that handed its leadership over answers at
        // once that it no longer leads (the write is then sent to the new
        // one); one deposed while paused or cut off does not, and the write
        // is given up as "may still apply", never resent.
        let exchange = self.exchange(leader, member, forward, deadline);
        tokio::pin!(exchange);
        tokio::select! {
            forwarded = &mut exchange => forwarded,
            _ = another_leader(&self.raft, leader) => {
                match tokio::time::timeout(REPLACED_LEADER_GRACE, exchange).await {
                    Ok(forwarded) => forwarded,
                    Err(_) => Forwarded::Done(Err(WriteError::LeaderReplaced(leader))),
                }
            }
        }
    }

    async fn exchange(
        &self,
        leader: NodeId,
        member: &Member,
        forward: &Forward,
        deadline: Instant,
    ) -> Forwarded {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let started = Instant::now();
        let answer = self
            .link
            .propose(member, forward, remaining.max(Duration::from_millis(100)))
            .await;
        self.forward_seconds
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok(committed)) => Forwarded::Done(Ok(committed)),
            Ok(Err(ForwardError::NotLeader)) | Err(LinkError::NotSent(_)) => Forwarded::NotSent,
            Ok(Err(ForwardError::Invalid(e))) => Forwarded::Done(Err(WriteError::Invalid(e))),
            Ok(Err(ForwardError::Failed(e))) => Forwarded::Done(Err(WriteError::Unavailable(e))),
            Ok(Err(ForwardError::DiskFull(e))) => {
                Forwarded::Done(Err(WriteError::DiskFull(format!("leader {leader}: {e}"))))
            }
            // The leader had it and said nothing in time: it may have
            // appended it.
            Err(LinkError::TimedOut) => Forwarded::Done(Err(WriteError::Unknown(format!(
                "leader {leader} did not answer within {:?}",
                self.wait_for_leader
            )))),
            Err(LinkError::TooLarge) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "leader {leader} refused the proposal as too large"
            )))),
            // Its guard refused this node: nothing was proposed.
            Err(LinkError::Refused(why)) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "leader {leader} refused this node: {why}"
            )))),
            // Sent, and the answer lost: the leader may have it.
            Err(LinkError::Failed(e)) => Forwarded::Done(Err(WriteError::Unknown(format!(
                "leader {leader} did not answer: {e}"
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
    Done(Result<Committed, WriteError>),
    /// The leader never took the proposal (unreachable, or no longer
    /// leading): safe to try again.
    NotSent,
}

/// The leader's side of a forwarded proposal: checks every command with the
/// same rules a client's write meets, against this node's clock, and every
/// sender against this node's `allow_write_from` and admin token; then
/// proposes the commands whose sender passes here only (merged with the
/// other proposals made here), never forwarding again, and answers the
/// others `-403` in their place. During a handover it waits at the write
/// gate, then most likely answers `NotLeader`.
pub async fn accept_forwarded(
    appender: &Appender,
    rules: &Rules,
    access: &Access,
    space: &SpaceGuard,
    forward: Forward,
) -> Result<Committed, ForwardError> {
    let at = now();
    for command in &forward.proposal.commands {
        validate(command, at, rules).map_err(ForwardError::Invalid)?;
    }
    space
        .check()
        .map_err(|e| ForwardError::DiskFull(e.to_string()))?;
    // An earlier build sends no senders: as before, the follower's check
    // stands alone.
    let checks: Vec<Result<(), RegistryError>> = if forward.origins.is_empty() {
        vec![Ok(()); forward.proposal.commands.len()]
    } else if forward.origins.len() == forward.proposal.commands.len() {
        forward.origins.iter().map(|o| access.check(o)).collect()
    } else {
        return Err(ForwardError::Invalid(RegistryError::bad(
            "origins",
            "one sender per command",
        )));
    };
    let commands: Vec<Command> = forward
        .proposal
        .commands
        .into_iter()
        .zip(&checks)
        .filter(|(_, check)| check.is_ok())
        .map(|(command, _)| command)
        .collect();
    let committed = if commands.is_empty() {
        // Nothing to propose: the follower waits for nothing.
        Committed {
            result: ProposalResult {
                outcomes: Vec::new(),
            },
            index: 0,
        }
    } else {
        match appender.append(Proposal { commands }).await {
            Ok(committed) => committed,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                return Err(ForwardError::NotLeader)
            }
            Err(e) => return Err(ForwardError::Failed(e.to_string())),
        }
    };
    let mut outcomes = committed.result.outcomes.into_iter();
    let outcomes = checks
        .into_iter()
        .map(|check| match check {
            Ok(()) => outcomes.next().unwrap_or(Err(RegistryError::NotFound)),
            Err(refused) => Err(refused),
        })
        .collect();
    Ok(Committed {
        result: ProposalResult { outcomes },
        index: committed.index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::InstanceKey;

    fn cancel(hostname: &str) -> Command {
        Command::Cancel {
            key: InstanceKey {
                env: "dev".into(),
                appid: "a".into(),
                zone: "z".into(),
                hostname: hostname.into(),
            },
            at: 1,
        }
    }

    #[test]
    fn the_size_estimate_is_close_to_the_entry_bytes() {
        let command = cancel("some-host.example");
        let real = serde_json::to_vec(&command).unwrap().len();
        let estimate = command.approx_bytes();
        assert!(
            estimate * 2 >= real && estimate <= real * 2,
            "estimate {estimate}, real {real}"
        );
    }

    #[test]
    fn a_forward_decodes_from_this_build_and_from_an_earlier_one() {
        let forward = Forward {
            proposal: Proposal {
                commands: vec![cancel("h")],
            },
            origins: vec![Origin::Cluster],
        };
        let wire = serde_json::to_string(&forward).unwrap();
        assert_eq!(serde_json::from_str::<Forward>(&wire).unwrap(), forward);
        // An earlier build sent the proposal alone.
        let earlier = serde_json::to_string(&forward.proposal).unwrap();
        let read: Forward = serde_json::from_str(&earlier).unwrap();
        assert_eq!(read.proposal, forward.proposal);
        assert!(read.origins.is_empty());
    }
}
