//! The Raft layer: how registry commands become a replicated, durable log.
//!
//! - [`log_store`]: the openraft log on sled, flushed in groups, each
//!   entry stored with a checksum ([`framing`]) that reads and the scrub
//!   check;
//! - [`recent`]: the entries appended last, kept decoded;
//! - [`state_machine`]: the registry as the state machine applied from it,
//!   with snapshots in the data directory;
//! - [`data_dir`]: the checks a data directory passes before a node starts
//!   on it;
//! - [`space`]: the free-space reserve below which the log stops growing.
//!
//! The Raft RPCs between nodes travel over the peer surface
//! (`crate::peer::network`).

pub mod data_dir;
pub mod durable;
pub mod framing;
pub mod log_store;
mod recent;
pub mod space;
pub mod state_machine;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::registry::{Command, Outcome};

/// A node's id in the cluster.
pub type NodeId = u64;

/// What the cluster knows of each member, kept in the membership config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name, published as the hostname of its `infra.discovery`
    /// instance.
    #[serde(default)]
    pub name: String,
    /// `host:port` its peers reach it on for Raft and forwarded writes.
    pub raft_addr: String,
    /// `host:port` clients reach it on, published in `infra.discovery`.
    #[serde(default)]
    pub api_addr: String,
    /// The zone it serves.
    #[serde(default)]
    pub zone: String,
    /// Set by the leader while this node, a voter taken out of the vote
    /// because its registry differed from the cluster's, rebuilds it from
    /// the cluster (see `crate::cluster::repair`): it gets its vote back,
    /// and the flag is cleared, once a check finds it agrees again.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub rebuilding: bool,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.raft_addr)
    }
}

/// One log entry's worth of registry commands, applied in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} command(s)", self.commands.len())
    }
}

/// The outcome of each command of a proposal, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResult {
    pub outcomes: Vec<Outcome>,
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the registry.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

/// The running Raft instance of a node.
pub type Raft = openraft::Raft<TypeConfig>;

pub type StorageError = openraft::StorageError<NodeId>;
