//! Start-up protection: a node that has not applied what the cluster had
//! committed when it started (or joined) refuses reads, so clients go to a
//! node with the whole registry instead of reading a partial one.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether reads are refused on this node.
#[derive(Debug)]
pub struct Protection {
    on: AtomicBool,
}

impl Protection {
    /// Starts protected.
    pub fn new() -> Self {
        Protection {
            on: AtomicBool::new(true),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
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
