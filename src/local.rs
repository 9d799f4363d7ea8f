//! The registry as applied on this node, shared between the state machine
//! that writes it and the handlers that read it.

use std::sync::Arc;

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use serde::Serialize;

use crate::poll::{ChangeFeed, PollHub};
use crate::registry::{Command, Outcome, Registry, RegistrySnapshot};

/// This node's applied registry and the polls waiting on it.
pub struct LocalRegistry {
    applied: RwLock<Applied>,
    hub: Arc<PollHub>,
    feed: ChangeFeed,
}

/// The registry and the log index it reflects, changed together.
struct Applied {
    registry: Registry,
    index: Option<u64>,
}

/// A fingerprint of the registry at a log index: equal on every replica
/// that applied the same log prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    pub applied_index: Option<u64>,
    /// SHA-256 of the registry's canonical form, in hex.
    pub digest: String,
    pub instances: usize,
}

impl LocalRegistry {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(LocalRegistry {
            applied: RwLock::new(Applied {
                registry,
                index: None,
            }),
            hub: PollHub::new(),
            feed: ChangeFeed::default(),
        })
    }

    /// A read view; hold it briefly, never across an await.
    pub fn read(&self) -> MappedRwLockReadGuard<'_, Registry> {
        RwLockReadGuard::map(self.applied.read(), |a| &a.registry)
    }

    pub fn hub(&self) -> &Arc<PollHub> {
        &self.hub
    }

    /// The recent changes applied here, for the console.
    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// Applies the commands of log entry `index` in order, then wakes the
    /// polls of the apps they changed (after the write lock is released, so
    /// woken polls read the new state at once).
    pub fn apply(&self, index: u64, commands: &[Command]) -> Vec<Outcome> {
        let mut changed = Vec::new();
        let outcomes: Vec<Outcome> = {
            let mut applied = self.applied.write();
            applied.index = Some(index);
            commands
                .iter()
                .map(|c| {
                    let effect = applied.registry.apply(c);
                    changed.extend(effect.changed);
                    effect.outcome
                })
                .collect()
        };
        if !changed.is_empty() {
            changed.sort();
            changed.dedup();
            self.hub.notify(&changed);
            self.feed.record(index, commands, &outcomes);
        }
        outcomes
    }

    /// Notes a log entry that does not touch the registry (a membership
    /// change, a leader's blank entry).
    pub fn skip(&self, index: u64) {
        self.applied.write().index = Some(index);
    }

    /// Replaces the whole registry with a snapshot taken at `index` and
    /// wakes every poll to look again.
    pub fn restore(&self, snapshot: RegistrySnapshot, index: Option<u64>) {
        {
            let mut applied = self.applied.write();
            applied.registry.restore(snapshot);
            applied.index = index;
        }
        self.hub.notify_all();
        self.feed.snapshot_installed(index);
    }

    /// A copy of the registry and the log index it reflects, taken under
    /// one lock.
    pub fn snapshot(&self) -> (Option<u64>, RegistrySnapshot) {
        let applied = self.applied.read();
        (applied.index, applied.registry.to_snapshot())
    }

    /// The registry's digest and the index it was taken at. The lock is
    /// held only to copy the registry; hashing happens after.
    pub fn digest(&self) -> Digest {
        let (index, snapshot) = self.snapshot();
        Digest {
            applied_index: index,
            instances: snapshot.apps.iter().map(|a| a.instances.len()).sum(),
            digest: snapshot.digest(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registration, Status};

    fn register(host: &str, at: i64) -> Command {
        Command::Register {
            registration: Registration {
                region: "sh".into(),
                zone: "z1".into(),
                env: "dev".into(),
                appid: "a".into(),
                hostname: host.into(),
                addrs: vec!["grpc://x:1".into()],
                version: String::new(),
                metadata: Default::default(),
                status: Status::Up,
            },
            at,
        }
    }

    #[test]
    fn the_digest_names_the_index_it_was_taken_at() {
        let one = LocalRegistry::new(Registry::default());
        let two = LocalRegistry::new(Registry::default());
        assert_eq!(one.digest().applied_index, None);
        one.apply(3, &[register("h1", 10)]);
        two.apply(3, &[register("h1", 10)]);
        one.skip(4);
        assert_eq!(one.digest().applied_index, Some(4));
        assert_eq!(one.digest().digest, two.digest().digest);
        assert_eq!(one.digest().instances, 1);

        two.apply(5, &[register("h2", 20)]);
        assert_ne!(one.digest().digest, two.digest().digest);
        one.restore(two.read().to_snapshot(), Some(5));
        assert_eq!(one.digest(), two.digest());
    }
}
