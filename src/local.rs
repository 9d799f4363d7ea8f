//! The registry as applied on this node, shared between the state machine
//! that writes it and the handlers that read it.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};

use tokio::sync::watch;

use crate::poll::{ChangeFeed, PollHub};
use crate::registry::zones::OwnChanges;
use crate::registry::{AppDigest, Command, Frozen, Outcome, Registry, RegistrySnapshot, Thawed};
use crate::zones::feed::{Since, ZoneFeed};
use crate::zones::{ZoneAnswer, ZoneCursor};

/// This node's applied registry and the polls waiting on it.
pub struct LocalRegistry {
    applied: RwLock<Applied>,
    hub: Arc<PollHub>,
    feed: ChangeFeed,
    /// Bumped when the zone feed gains changes, for receivers waiting.
    zone_feed_moved: watch::Sender<u64>,
    /// The digests recorded at the latest check entries applied here.
    checks: Mutex<VecDeque<Arc<CheckRecord>>>,
    /// The index of the latest check entry applied here.
    checked: watch::Sender<u64>,
}

/// How many check records a node keeps: enough for the slowest replica
/// of a round to be asked about it.
const KEEP_CHECKS: usize = 8;

/// A replica's digest at the index of a check entry: equal on every
/// replica that applied the same log, which is what the check compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub index: u64,
    /// [`Registry::digest`] right after the entry was applied.
    pub digest: String,
    pub instances: usize,
    /// Every app's digest then: where two replicas differ.
    pub apps: Vec<AppDigest>,
}

/// The registry, the log index it reflects and this zone's own recent
/// changes, changed together.
struct Applied {
    registry: Registry,
    index: Option<u64>,
    zone_feed: ZoneFeed,
}

/// A fingerprint of the registry at a log index: equal on every replica
/// that applied the same log prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    pub applied_index: Option<u64>,
    /// The registry's digest ([`Registry::digest`]), in hex.
    pub digest: String,
    pub instances: usize,
    /// With several zones: each zone's instances here, by origin zone
    /// (this zone's own under its name), equal in every zone that stands
    /// at the same cursor of that origin.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub partitions: std::collections::BTreeMap<String, PartitionDigest>,
}

/// One origin zone's instances as held here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionDigest {
    pub instances: usize,
    pub digest: String,
    /// For another zone: the origin's log index this copy reflects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}

impl LocalRegistry {
    pub fn new(registry: Registry) -> Arc<Self> {
        Self::keeping(registry, crate::zones::feed::KEEP_CHANGES)
    }

    /// A registry that keeps its latest `zone_changes` own changes for
    /// other zones.
    pub fn keeping(registry: Registry, zone_changes: usize) -> Arc<Self> {
        Arc::new(LocalRegistry {
            applied: RwLock::new(Applied {
                registry,
                index: None,
                zone_feed: ZoneFeed::keeping(zone_changes),
            }),
            hub: PollHub::new(),
            feed: ChangeFeed::default(),
            zone_feed_moved: watch::channel(0).0,
            checks: Mutex::new(VecDeque::new()),
            checked: watch::channel(0).0,
        })
    }

    /// What this node recorded at check entry `index`, if it still keeps it.
    pub fn check_at(&self, index: u64) -> Option<Arc<CheckRecord>> {
        self.checks
            .lock()
            .iter()
            .find(|c| c.index == index)
            .cloned()
    }

    /// The index of the latest check entry applied here, as it moves.
    pub fn checked(&self) -> watch::Receiver<u64> {
        self.checked.subscribe()
    }

    /// Records the registry's digest at check entry `index`, just applied
    /// (applies run one at a time: nothing moves it meanwhile).
    fn record_check(&self, index: u64) {
        let (digest, instances, apps) = {
            let applied = self.applied.read();
            let (digest, apps) = applied.registry.digest_with_apps();
            (digest, applied.registry.len(), apps)
        };
        let mut checks = self.checks.lock();
        checks.push_back(Arc::new(CheckRecord {
            index,
            digest,
            instances,
            apps,
        }));
        while checks.len() > KEEP_CHECKS {
            checks.pop_front();
        }
        drop(checks);
        self.checked.send_replace(index);
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

    /// Applies the commands of log entry `index` (of `term`) in order,
    /// then wakes the polls of the apps they changed (after the write lock
    /// is released, so woken polls read the new state at once).
    pub fn apply(&self, index: u64, term: u64, commands: &[Command]) -> Vec<Outcome> {
        let mut changed = Vec::new();
        let mut own = Vec::new();
        let mut reset = false;
        let outcomes: (Vec<Outcome>, bool) = {
            let mut applied = self.applied.write();
            applied.index = Some(index);
            let outcomes = commands
                .iter()
                .map(|c| {
                    let effect = applied.registry.apply(c);
                    changed.extend(effect.changed);
                    match effect.own {
                        OwnChanges::None => {}
                        OwnChanges::Some(changes) => own.extend(changes),
                        OwnChanges::Reset => reset = true,
                    }
                    effect.outcome
                })
                .collect();
            // Tests make a replica diverge here (the `failpoints` feature).
            #[cfg(feature = "failpoints")]
            if diverge_here(commands) {
                applied.registry.tamper();
            }
            let moved = reset || !own.is_empty();
            if reset {
                applied.zone_feed.reset(index, term);
            } else {
                applied.zone_feed.record(index, term, own);
            }
            (outcomes, moved)
        };
        let (outcomes, moved) = outcomes;
        if commands.iter().any(|c| matches!(c, Command::Check { .. })) {
            self.record_check(index);
        }
        // Only other zones wait on this: a node that streams nothing to
        // them never wakes anyone.
        if moved {
            self.zone_feed_moved.send_modify(|v| *v += 1);
        }
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
    pub fn skip(&self, index: u64, term: u64) {
        let mut applied = self.applied.write();
        applied.index = Some(index);
        applied.zone_feed.advance(index, term);
    }

    /// Replaces the whole registry with a snapshot taken at entry
    /// `(index, term)` and wakes every poll to look again.
    pub fn restore(&self, snapshot: impl Into<Thawed>, at: Option<(u64, u64)>) {
        let index = at.map(|(index, _)| index);
        {
            let mut applied = self.applied.write();
            applied.registry.restore(snapshot);
            applied.index = index;
            let (index, term) = at.unwrap_or_default();
            applied.zone_feed.reset(index, term);
        }
        self.zone_feed_moved.send_modify(|v| *v += 1);
        self.hub.notify_all();
        self.feed.snapshot_installed(index);
    }

    /// What another zone whose cursor on this zone is `cursor` needs
    /// next: this zone's own changes after it (about `max_bytes` at most),
    /// or, when they are no longer
    /// held here or the cursor points into another log (another name, or
    /// an entry of another term), a full copy of this zone's own
    /// instances.
    pub fn zone_changes(&self, cursor: &ZoneCursor, max_bytes: usize) -> ZoneAnswer {
        let applied = self.applied.read();
        let feed = &applied.zone_feed;
        let log = applied.registry.log();
        let nothing = ZoneAnswer::Nothing { at: feed.last() };
        let since = match (cursor.log.as_deref(), log) {
            // A receiver that says which log it follows waits until this
            // one is named (a zone just rebuilt names it first thing).
            (Some(_), None) => return nothing,
            (Some(theirs), Some(ours)) if theirs != ours => Since::TooOld,
            _ => feed.since(cursor.after, cursor.term, max_bytes),
        };
        let log = log.map(str::to_string);
        match since {
            Since::Changes { to, changes } => ZoneAnswer::Changes {
                from: cursor.after,
                to,
                changes,
                term: feed.term_at(to).unwrap_or_default(),
                log,
            },
            Since::Nothing => nothing,
            Since::TooOld => ZoneAnswer::Full {
                to: feed.last(),
                instances: applied
                    .registry
                    .partition_instances(None)
                    .into_iter()
                    .cloned()
                    .collect(),
                term: feed.term_at(feed.last()).unwrap_or_default(),
                log,
            },
        }
    }

    /// Moves whenever entries are applied: a receiver waiting for this
    /// zone's changes looks again.
    pub fn zone_feed_moved(&self) -> watch::Receiver<u64> {
        self.zone_feed_moved.subscribe()
    }

    /// A copy of the registry and the log index it reflects, taken under
    /// one lock.
    pub fn snapshot(&self) -> (Option<u64>, RegistrySnapshot) {
        let applied = self.applied.read();
        (applied.index, applied.registry.to_snapshot())
    }

    /// The registry as it is now, sharing its apps, and the index it
    /// reflects: cheap to take, however large.
    pub fn frozen(&self) -> (Option<u64>, Frozen) {
        let applied = self.applied.read();
        (applied.index, applied.registry.freeze())
    }

    /// The registry's digest and the index it was taken at: a pass over
    /// the apps under the read lock ([`Registry::digest`]).
    pub fn digest(&self) -> Digest {
        let applied = self.applied.read();
        Digest {
            applied_index: applied.index,
            instances: applied.registry.len(),
            digest: applied.registry.digest(),
            partitions: Default::default(),
        }
    }
}

/// The `diverge` fail point: `diverge=return` changes the registry behind
/// the log's back at every entry applied; `diverge=return(TEXT)` does once
/// per process, at the first entry whose commands mention TEXT: a fault
/// that rebuilding the node from its cluster cures, as a damaged disk's.
#[cfg(feature = "failpoints")]
fn diverge_here(commands: &[Command]) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ONCE: AtomicBool = AtomicBool::new(false);
    match fail::eval("diverge", |arg| arg) {
        None => false,
        Some(None) => true,
        Some(Some(text)) => {
            !ONCE.load(Ordering::Relaxed)
                && commands
                    .iter()
                    .any(|c| serde_json::to_string(c).is_ok_and(|json| json.contains(&text)))
                && !ONCE.swap(true, Ordering::Relaxed)
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
        one.apply(3, 1, &[register("h1", 10)]);
        two.apply(3, 1, &[register("h1", 10)]);
        one.skip(4, 1);
        assert_eq!(one.digest().applied_index, Some(4));
        assert_eq!(one.digest().digest, two.digest().digest);
        assert_eq!(one.digest().instances, 1);

        two.apply(5, 1, &[register("h2", 20)]);
        assert_ne!(one.digest().digest, two.digest().digest);
        one.restore(two.read().to_snapshot(), Some((5, 1)));
        assert_eq!(one.digest(), two.digest());
    }
}
