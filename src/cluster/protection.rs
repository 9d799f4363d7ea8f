//! Start-up protection: a node that has not applied what the cluster had
//! committed when it started (or joined) refuses reads, so clients go to a
//! node with the whole registry instead of reading a partial one.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Whether reads are refused on this node: while it catches up, while
/// its registry is found to differ from its cluster's, and while it is out
/// of the cluster (removed while away: see `cluster::removal`).
#[derive(Debug)]
pub struct Protection {
    on: AtomicBool,
    diverged: Mutex<Option<String>>,
    removed: Mutex<Option<String>>,
}

impl Protection {
    /// Starts protected.
    pub fn new() -> Self {
        Protection {
            on: AtomicBool::new(true),
            diverged: Mutex::new(None),
            removed: Mutex::new(None),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
            || self.diverged.lock().is_some()
            || self.removed.lock().is_some()
    }

    /// Why reads are refused, while they are.
    pub fn reason(&self) -> Option<String> {
        if let Some(why) = self.removed.lock().clone() {
            return Some(why);
        }
        if let Some(why) = self.diverged.lock().clone() {
            return Some(why);
        }
        self.on
            .load(Ordering::Acquire)
            .then(|| "this node is catching up with the cluster".to_string())
    }

    /// The registry here differs from the cluster's: reads refused, `why`.
    pub fn diverge(&self, why: String) {
        *self.diverged.lock() = Some(why);
    }

    /// The registry here agrees with the cluster's again.
    pub fn agree(&self) {
        if self.diverged.lock().take().is_some() {
            tracing::info!("this node's registry agrees with the cluster's again: serving reads");
        }
    }

    /// Why this node was found to differ from its cluster, while it does.
    pub fn diverged(&self) -> Option<String> {
        self.diverged.lock().clone()
    }

    /// This node is out of the cluster (`Some(why)`), or a member again.
    pub fn remove(&self, why: Option<String>) {
        *self.removed.lock() = why;
    }

    /// Why this node is out of the cluster, while it is.
    pub fn removed(&self) -> Option<String> {
        self.removed.lock().clone()
    }

    /// Caught up: serve reads from now on.
    pub fn lift(&self) {
        if self.on.swap(false, Ordering::AcqRel) {
            tracing::info!("caught up with the cluster: serving reads");
        }
    }
}

impl Default for Protection {
    fn default() -> Self {
        Protection::new()
    }
}
