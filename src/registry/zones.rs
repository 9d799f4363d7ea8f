//! Other zones' instances: one partition per origin zone, holding exactly
//! what that zone streamed here, up to which of its log indexes (the
//! cursor). Only the origin changes its partition; this zone never evicts
//! it nor writes into it. And the changes this zone makes to its own
//! instances, which it streams to the others.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::instance::{Instance, InstanceKey, Timestamp};

/// One change to one of the origin's own instances, as the origin applied
/// it: the receiving zone reproduces the instance exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZoneChange {
    /// Registered, re-registered or set: the instance as it now is.
    Upsert(Instance),
    /// Renewed: only the renew time moved.
    Renew {
        key: InstanceKey,
        renew_timestamp: Timestamp,
    },
    /// Cancelled or evicted.
    Remove(InstanceKey),
}

/// What the origin sent: the changes after the receiver's cursor, or, when
/// it no longer holds them, its whole partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZoneBatch {
    /// The changes of the origin's log entries `(from, to]`.
    Changes { from: u64, changes: Vec<ZoneChange> },
    /// Every instance of the origin at its index `to`: replaces the
    /// partition. (Written by earlier builds; a copy now travels in
    /// parts.)
    Full(Vec<Instance>),
    /// Part `part` of `of` of every instance of the origin at its index
    /// `to`: parts are staged in order, out of sight, and the last one
    /// replaces the partition with all of them, so each log entry stays
    /// small however large the partition is.
    FullPart {
        part: u32,
        of: u32,
        instances: Vec<Instance>,
    },
}

/// What this zone holds of one origin zone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The origin's log index this partition reflects.
    pub cursor: u64,
    /// The term of that entry, and the origin's log (the name it gave
    /// it): with the index, where in which log this partition stands.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub term: u64,
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub log: Option<String>,
    /// When (this zone's clock, as stamped by its leader) the last batch
    /// from the origin was applied.
    pub applied_at: Timestamp,
    pub keys: BTreeSet<InstanceKey>,
    /// The parts of a full copy received so far, not yet in force.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub staged: Option<Staged>,
}

/// A full copy arriving in parts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The origin's index the copy was taken at.
    pub to: u64,
    /// The next part expected.
    pub next: u32,
    pub instances: Vec<Instance>,
}

/// Every origin's partition, by zone name.
pub type Partitions = BTreeMap<String, Partition>;

/// Which origin holds `key` here, if another zone's partition does.
pub fn origin_of<'a>(partitions: &'a Partitions, key: &InstanceKey) -> Option<&'a str> {
    partitions
        .iter()
        .find(|(_, p)| p.keys.contains(key))
        .map(|(zone, _)| zone.as_str())
}

/// The origin's own changes made by one command, for the stream to other
/// zones; `Reset` when the whole registry was replaced (a restore), after
/// which receivers need a full copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OwnChanges {
    #[default]
    None,
    Some(Vec<ZoneChange>),
    Reset,
}

impl OwnChanges {
    pub fn push(&mut self, change: ZoneChange) {
        match self {
            OwnChanges::None => *self = OwnChanges::Some(vec![change]),
            OwnChanges::Some(changes) => changes.push(change),
            OwnChanges::Reset => {}
        }
    }
}
