//! The registry as applied on this node, shared between the state machine
//! that writes it and the handlers that read it.

use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};

use crate::poll::PollHub;
use crate::registry::{Command, Outcome, Registry, RegistrySnapshot};

/// This node's applied registry and the polls waiting on it.
pub struct LocalRegistry {
    registry: RwLock<Registry>,
    hub: Arc<PollHub>,
}

impl LocalRegistry {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(LocalRegistry {
            registry: RwLock::new(registry),
            hub: PollHub::new(),
        })
    }

    /// A read view; hold it briefly, never across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read()
    }

    pub fn hub(&self) -> &Arc<PollHub> {
        &self.hub
    }

    /// Applies commands in order, then wakes the polls of the apps they
    /// changed (after the write lock is released, so woken polls read the
    /// new state at once).
    pub fn apply(&self, commands: &[Command]) -> Vec<Outcome> {
        let mut changed = Vec::new();
        let outcomes = {
            let mut registry = self.registry.write();
            commands
                .iter()
                .map(|c| {
                    let effect = registry.apply(c);
                    changed.extend(effect.changed);
                    effect.outcome
                })
                .collect()
        };
        if !changed.is_empty() {
            changed.sort();
            changed.dedup();
            self.hub.notify(&changed);
        }
        outcomes
    }

    /// Replaces the whole registry (a snapshot was installed) and wakes every
    /// poll to look again.
    pub fn restore(&self, snapshot: RegistrySnapshot) {
        self.registry.write().restore(snapshot);
        self.hub.notify_all();
    }
}
