//! Several zones: a cluster per zone, each the only writer of its own
//! instances, streaming their changes to the other zones, which apply them
//! through their own logs into a partition per origin (see
//! [`crate::registry::zones`]). No zone's writes wait on another's.
//!
//! - [`feed`]: the origin's recent own changes, by log index;
//! - [`puller`]: the receiving leader's stream from each other zone;
//! - [`router`]: writes for another zone's instances, handed there;
//! - [`nodes`]: other zones' nodes, for `infra.discovery`;
//! - [`log_name`]: the name of this zone's log, which cursors carry.

pub mod feed;
pub mod log_name;
pub mod nodes;
pub mod puller;
pub mod router;

use serde::{Deserialize, Serialize};

use crate::registry::zones::ZoneChange;
use crate::registry::Instance;

/// What an origin node answers a receiver standing at cursor `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZoneAnswer {
    /// The changes of the origin's entries `(from, to]`; `to` is of
    /// `term`, in the log named `log` (none from earlier builds).
    Changes {
        from: u64,
        to: u64,
        changes: Vec<ZoneChange>,
        #[serde(default)]
        term: u64,
        #[serde(default)]
        log: Option<String>,
    },
    /// Nothing new after the cursor within the wait; the origin had
    /// applied up to `at`.
    Nothing { at: u64 },
    /// Every own instance of the origin at its index `to`, of `term`, in
    /// the log named `log`.
    Full {
        to: u64,
        instances: Vec<Instance>,
        #[serde(default)]
        term: u64,
        #[serde(default)]
        log: Option<String>,
    },
}

/// Where a receiver stands in an origin's log: after entry `after` of
/// `term` (0: not said) of the log named `log` (none: not said, an
/// earlier build or a partition that never heard the name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneCursor {
    pub after: u64,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub log: Option<String>,
}
