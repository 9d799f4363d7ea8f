//! Writes for another zone's instances: an instance belongs to the zone
//! its `zone` field names when that is a configured zone; such a write is
//! handed to that zone's cluster and answered with its result. An
//! instance whose zone is configured nowhere belongs to the zone that
//! received it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::link::{Link, LinkError};
use crate::cluster::messages::WriteError;
pub use crate::cluster::messages::{ZoneWrite, ZoneWritten};
use crate::raft::Member;
use crate::registry::Command;

impl ZoneWrite {
    /// Whether another zone may hand this write to zone `own`: only what
    /// the cross-zone protocol sends, a register, cancel, set or renew of
    /// one of `own`'s instances; never a restore, an eviction, a schedule
    /// or another zone's stream.
    pub fn allowed_into(&self, own: &str) -> Result<(), String> {
        let zone = match self {
            ZoneWrite::Renew(key) | ZoneWrite::Command(Command::Cancel { key, .. }) => &key.zone,
            ZoneWrite::Command(Command::Register { registration, .. }) => &registration.zone,
            ZoneWrite::Command(Command::Set { zone, .. }) => zone,
            ZoneWrite::Command(_) => {
                return Err(
                    "another zone may hand over registers, renews, cancels and sets only".into(),
                )
            }
        };
        if zone == own {
            Ok(())
        } else {
            Err(format!(
                "an instance of zone {zone:?} is not zone {own}'s to write"
            ))
        }
    }
}

/// The other zones and how to reach them. Cheap to clone.
#[derive(Clone)]
pub struct Zones {
    /// This cluster's zone.
    pub own: String,
    /// Each other zone's nodes (their peer listeners).
    pub others: Arc<BTreeMap<String, Vec<Member>>>,
    pub link: Link,
    /// How long a write handed to another zone may take.
    pub within: Duration,
}

impl Zones {
    /// The other zone a write for `zone` belongs to, if any.
    pub fn owner(&self, zone: &str) -> Option<&str> {
        if zone == self.own {
            return None;
        }
        self.others.get_key_value(zone).map(|(z, _)| z.as_str())
    }

    /// Hands `write` to zone `zone`: its nodes in turn, until one takes it.
    pub async fn hand_over(&self, zone: &str, write: ZoneWrite) -> Result<ZoneWritten, WriteError> {
        let nodes = self.others.get(zone).map(Vec::as_slice).unwrap_or_default();
        let mut last = format!("zone {zone} has no nodes configured");
        for node in nodes {
            match self.link.zone_write(node, &write, self.within).await {
                Ok(answer) => return answer,
                Err(LinkError::NotSent(e)) => last = e,
                // Sent: it may have been carried out there, so it is not
                // sent again elsewhere.
                Err(e) => {
                    return Err(WriteError::ZoneUnreachable(format!(
                        "zone {zone} ({}) did not answer: {e}",
                        node.raft_addr
                    )))
                }
            }
        }
        Err(WriteError::ZoneUnreachable(format!(
            "zone {zone} cannot be reached: {last}"
        )))
    }
}
