//! What nodes of one cluster say to each other: the requests and answers
//! of the calls [`super::link::PeerLink`] carries, in one home, so that the
//! link (and the peer layer under it) depends on these types alone and not
//! on the modules that make and take them, which each use the link. Each
//! module re-exports its own, under the name it always had.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Origin;
use crate::raft::{Member, NodeId, Proposal, ProposalResult};
use crate::registry::{Command, InstanceKey, Outcome, RegistryError, Renewal};

// From `bootstrap`.
/// Whether a node has joined a cluster, as it tells its peers.
#[derive(Debug, Serialize, Deserialize)]
pub struct BootstrapState {
    pub initialized: bool,
    /// The cluster it belongs to, once its log is named (none from
    /// earlier builds).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Who the node is, as its own configuration says (none from earlier
    /// builds): what adding it takes its client address and zone from.
    #[serde(default)]
    pub node: Option<(NodeId, Member)>,
}

// From `catch_up`.
/// The leader's answer when asked for the index a reader must have applied.
#[derive(Debug, Serialize, Deserialize)]
pub enum ReadIndex {
    /// Everything committed up to now is at or below this index.
    Index(u64),
    /// This node does not lead.
    NotLeader,
}

// From `handover`.
/// Why leadership was not handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HandoverError {
    #[error("node {0} does not lead (leader: {1:?})")]
    NotLeader(NodeId, Option<NodeId>),
    #[error("no other voter to hand leadership to")]
    NoOtherVoter,
    #[error("node {0} is not a voter of this cluster")]
    NotAVoter(NodeId),
    #[error("node {0} did not catch up within {1:?}")]
    NotCaughtUp(NodeId, Duration),
    #[error("node {0} refused to campaign: {1}")]
    Refused(NodeId, String),
    #[error("node {0} did not answer: {1}")]
    Unreachable(NodeId, String),
    #[error("node {0} did not take over within {1:?} (leader now: {2:?})")]
    NotTakenOver(NodeId, Duration, Option<NodeId>),
}

// From `handover`.
/// What the leader asks its successor.
#[derive(Debug, Serialize, Deserialize)]
pub struct ElectRequest {
    /// The leader asking.
    pub from: NodeId,
    /// The leader's last log index: the successor campaigns only if it
    /// holds as much, or the leader would refuse its vote.
    pub last_log_index: u64,
}

// From `membership`.
/// A change of membership.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    /// Replicate to a new node without giving it a vote; answers once it
    /// has caught up and serves reads. An empty name, client address or
    /// zone is taken from the node itself, which is asked who it is at
    /// `raft_addr` before anything is committed.
    AddLearner {
        id: NodeId,
        #[serde(flatten)]
        member: Member,
        /// How long to wait for it to serve, in seconds: at most (and by
        /// default) [`JOIN_WAIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_secs: Option<u64>,
    },
    /// Make a learner a voter.
    Promote { id: NodeId },
    /// Take a node out of the cluster (voter or learner).
    Remove { id: NodeId },
}

// From `membership`.
/// The membership after a change: voters and every node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Changed {
    pub voters: BTreeSet<NodeId>,
    pub nodes: BTreeSet<NodeId>,
}

// From `renewer`.
/// Renews a follower hands the leader, with each one's sender, which the
/// leader checks against its own `allow_write_from`; no senders from an
/// earlier build.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Renews {
    pub keys: Vec<InstanceKey>,
    #[serde(default)]
    pub from: Vec<Origin>,
}

// From `renewer`.
/// The leader's answer to forwarded renews.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardedRenews {
    Answered(Vec<Renewal>),
    /// This node does not lead (or has lost its quorum).
    NotLeader,
    /// A key breaks the registry's rules: nothing was renewed.
    Invalid(RegistryError),
}

// From `repair`.
/// What a repairing node asks of the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Take my vote: I set my data aside and rebuild it.
    Demote,
    /// Give my vote back: I rebuilt and agree.
    Promote,
}

// From `repair`.
/// A step, with the node it is for (which must be the caller).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairStep {
    pub node: NodeId,
    pub step: Step,
}

// From `writer`.
/// Why a write was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    /// No leader took the write within the bounded wait: it was never
    /// proposed, and never applies.
    #[error("no quorum, not applied: no leader took this write within {0:?}")]
    NoQuorum(Duration),
    /// The leader holding the write stopped answering and another took
    /// over: it may or may not be applied.
    #[error("no quorum, outcome unknown: leader {0} was replaced while it held this write, which may still apply")]
    LeaderReplaced(NodeId),
    /// The write reached the log but was not committed within the bounded
    /// wait (the leader has lost its quorum, or the leader stopped
    /// answering): it applies if a quorum takes that entry later.
    #[error("no quorum, outcome unknown: {0}; the write may still apply")]
    Unknown(String),
    /// The node is shutting down or its Raft stopped.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The command breaks the registry's rules: nothing was proposed.
    #[error("{0}")]
    Invalid(RegistryError),
    /// Committed at this log index, but not yet applied on this node within
    /// the bounded wait: another node may already show it, this one not yet.
    #[error("committed at index {0} but not yet applied on this node")]
    NotAppliedHere(u64),
    /// This node's disk, or the leader's, is below its free-space reserve:
    /// nothing was proposed; writes resume once space returns.
    #[error("{0}")]
    DiskFull(String),
    /// The write belongs to another zone, which did not answer.
    #[error("{0}")]
    ZoneUnreachable(String),
}

// From `writer`.
/// A proposal the leader committed and applied: its outcomes and the log
/// index of its entry.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    pub result: ProposalResult,
    pub index: u64,
}

// From `writer`.
/// What a follower hands the leader: one log entry's commands and, for
/// each, who sent it. Only the commands go into the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub proposal: Proposal,
    /// Each command's sender, in order; none from an earlier build.
    pub origins: Vec<Origin>,
}

/// In JSON, the proposal's fields with the origins beside them, as earlier
/// builds read and write them; in a frame (`crate::wire`), which cannot
/// carry a flattened struct, the two in order.
impl Serialize for Forward {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(flatten)]
            proposal: &'a Proposal,
            origins: &'a [Origin],
        }
        if s.is_human_readable() {
            Flat {
                proposal: &self.proposal,
                origins: &self.origins,
            }
            .serialize(s)
        } else {
            (&self.proposal, &self.origins).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Forward {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Flat {
            #[serde(flatten)]
            proposal: Proposal,
            #[serde(default)]
            origins: Vec<Origin>,
        }
        let (proposal, origins) = if d.is_human_readable() {
            let flat = Flat::deserialize(d)?;
            (flat.proposal, flat.origins)
        } else {
            Deserialize::deserialize(d)?
        };
        Ok(Forward { proposal, origins })
    }
}

// From `writer`.
/// A leader's refusal of a forwarded proposal.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ForwardError {
    /// This node does not lead (any more); nothing was proposed.
    NotLeader,
    /// A command breaks the registry's rules: nothing was proposed.
    Invalid(RegistryError),
    /// Proposed, or tried to, and failed.
    Failed(String),
    /// The leader's disk is below its free-space reserve: nothing was
    /// proposed.
    DiskFull(String),
}

// From `replica`.
/// What a replica asks for itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum ReplicaStep {
    /// Add me as a learner, as this member.
    Join { member: Member },
    /// Remove me.
    Leave,
}

// From `replica`.
/// A replica's request, with the node it is for (which must be the
/// caller).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplicaRequest {
    pub node: NodeId,
    #[serde(flatten)]
    pub step: ReplicaStep,
}

// From `crate::zones::router`.
/// A write handed to the zone that owns the instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ZoneWrite {
    Command(Command),
    Renew(InstanceKey),
}

// From `crate::zones::router`.
/// The owning zone's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ZoneWritten {
    Outcome(Outcome),
    Renewal(Renewal),
}
