//! How the cluster logic reaches its peers. It sees typed calls only; the
//! peer module carries them (HTTP over mutual TLS), so this layer knows no
//! transport and the dependency points inward.

use std::sync::Arc;
use std::time::Duration;

use super::messages::{
    BootstrapState, Change, Changed, Committed, ElectRequest, Forward, ForwardError,
    ForwardedRenews, HandoverError, ReadIndex, Renews, RepairStep, ReplicaRequest, WriteError,
    ZoneWrite, ZoneWritten,
};
use crate::auth::Operator;
use crate::local::CheckRecord;
use crate::raft::{Member, NodeId};
use crate::self_discovery::NodeView;
use crate::zones::{ZoneAnswer, ZoneCursor};

/// Why a call to a peer got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No connection was made: the peer never saw the request, so it is
    /// safe to send again, there or elsewhere.
    #[error("not sent: {0}")]
    NotSent(String),
    /// Sent, but no answer came within the time allowed.
    #[error("no answer in time")]
    TimedOut,
    /// Sent, and the exchange failed (connection lost, bad answer).
    #[error("{0}")]
    Failed(String),
    /// The peer refused the request as too large to read (413): nothing
    /// was done; a smaller one may pass.
    #[error("request too large for the peer")]
    TooLarge,
    /// The peer refused the caller (403): nothing was done; why.
    #[error("refused: {0}")]
    Refused(String),
}

/// The calls one node makes on another.
#[async_trait::async_trait]
pub trait PeerLink: Send + Sync {
    /// Hands a proposal to the leader `to`.
    async fn propose(
        &self,
        to: &Member,
        forward: &Forward,
        within: Duration,
    ) -> Result<Result<Committed, ForwardError>, LinkError>;

    /// Hands renews to the leader `to`.
    async fn renew(
        &self,
        to: &Member,
        renews: &Renews,
        within: Duration,
    ) -> Result<ForwardedRenews, LinkError>;

    /// Whether `to` has joined a cluster; `asker`, a pristine node that
    /// may count `to` in the cluster it forms, says who asks (a peer
    /// certificate proves it; plain peers take it as said).
    async fn bootstrap_state(
        &self,
        to: &Member,
        asker: Option<NodeId>,
        within: Duration,
    ) -> Result<BootstrapState, LinkError>;

    /// The commit point of the leader `to`.
    async fn read_index(&self, to: &Member, within: Duration) -> Result<ReadIndex, LinkError>;

    /// Whether `to` answers at all (an error if not), and whether it
    /// serves reads (false while it catches up).
    async fn health(&self, to: &Member, within: Duration) -> Result<bool, LinkError>;

    /// Hands a membership change to the leader `to`, with the operator's
    /// credential, which the leader checks again.
    async fn membership(
        &self,
        to: &Member,
        change: &Change,
        operator: &Operator,
        within: Duration,
    ) -> Result<Result<Changed, String>, LinkError>;

    /// Asks `to`, the successor of this node's leadership, to campaign.
    async fn elect(
        &self,
        to: &Member,
        request: &ElectRequest,
        within: Duration,
    ) -> Result<Result<(), String>, LinkError>;

    /// Asks `to`, a node of another zone, for that zone's changes after
    /// its log index `after`, held up to `hold` when there are none, in
    /// batches of about `bytes` at most (this node's `limits.entry_bytes`).
    async fn zone_changes(
        &self,
        to: &Member,
        cursor: &ZoneCursor,
        bytes: usize,
        hold: Duration,
        within: Duration,
    ) -> Result<ZoneAnswer, LinkError>;

    /// Asks `to`, a node of another zone, for that zone's nodes as it sees
    /// them.
    async fn zone_nodes(&self, to: &Member, within: Duration) -> Result<Vec<NodeView>, LinkError>;

    /// Hands a write to `to`, a node of the zone that owns the instance.
    async fn zone_write(
        &self,
        to: &Member,
        write: &ZoneWrite,
        within: Duration,
    ) -> Result<Result<ZoneWritten, WriteError>, LinkError>;

    /// Asks the leader `to` to hand its leadership over, with the
    /// operator's credential.
    async fn transfer_leader(
        &self,
        to: &Member,
        successor: Option<NodeId>,
        operator: &Operator,
        within: Duration,
    ) -> Result<Result<NodeId, HandoverError>, LinkError>;

    /// Asks `to` for the digest it recorded at check entry `index` (with
    /// every app's digest when `apps`), held up to `hold` until it has
    /// applied that far; none when it keeps no record of it.
    async fn check(
        &self,
        to: &Member,
        index: u64,
        apps: bool,
        hold: Duration,
    ) -> Result<Option<CheckRecord>, LinkError>;

    /// Asks `to`, the leader, to add this read replica as a learner or
    /// remove it.
    async fn replica(
        &self,
        to: &Member,
        request: &ReplicaRequest,
        within: Duration,
    ) -> Result<Result<(), String>, LinkError>;

    /// Asks the leader `to` for a step of this node's repair.
    async fn repair(
        &self,
        to: &Member,
        step: &RepairStep,
        within: Duration,
    ) -> Result<Result<(), String>, LinkError>;
}

/// A node's link to its peers, shared by every task.
pub type Link = Arc<dyn PeerLink>;
