//! The wall clock, in discovery's unit. Only proposers read it: commands
//! carry the time they were stamped with, replicas never read their own.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::registry::Timestamp;

/// Nanoseconds since the Unix epoch.
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as Timestamp)
}
