//! The commands that change the registry, and what applying them answers.
//!
//! Every command carries the time it was stamped with by the node that
//! proposed it, so that applying it gives the same state on every replica.

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use super::instance::{Instance, InstanceKey, Registration, Status, Timestamp};
use super::metadata::Metadata;
use super::scheduler::SchedulerRule;
use super::zones::{ZoneBatch, ZoneChange};
use super::RegistrySnapshot;

/// A change to the registry, as replicated through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add an instance or replace the one with the same key.
    Register {
        registration: Registration,
        at: Timestamp,
    },
    /// Heartbeats of a batch of instances.
    Renew {
        keys: Vec<InstanceKey>,
        at: Timestamp,
    },
    /// Remove one instance.
    Cancel { key: InstanceKey, at: Timestamp },
    /// Change status and/or metadata of several instances of one app in one
    /// zone, all or nothing.
    Set {
        env: String,
        appid: String,
        zone: String,
        changes: Vec<Change>,
        at: Timestamp,
    },
    /// Remove instances whose last renew is older than `silent_since`; an
    /// instance renewed after the leader chose it is kept.
    Evict {
        keys: Vec<InstanceKey>,
        silent_since: Timestamp,
        at: Timestamp,
    },
    /// Replace the whole registry with a backup's (`discoveryctl restore`).
    Restore {
        backup: RegistrySnapshot,
        at: Timestamp,
    },
    /// One part of a backup too large for one log entry, restored in
    /// parts (see [`super::restore`]): staged in order; the last replaces
    /// the registry with the whole backup as `Restore` does. `id` (the
    /// first part's `at`) names the restore; the first part carries all but
    /// the apps, every part some apps or pieces of one; `instances` is the
    /// whole backup's count.
    RestorePart {
        id: Timestamp,
        part: u32,
        of: u32,
        instances: usize,
        backup: RegistrySnapshot,
        at: Timestamp,
    },
    /// Sets the scheduler served with an app, in one env or (`env: None`)
    /// every env, or clears it (`rules: None`); one set this way wins over
    /// the configuration file's for the same app.
    Schedule {
        appid: String,
        env: Option<String>,
        rules: Option<Vec<SchedulerRule>>,
        at: Timestamp,
    },
    /// Changes another zone (`origin`) made to its own instances, up to its
    /// log index `to`, streamed here: applied only if they start where this
    /// zone's partition of `origin` stands.
    ZoneApply {
        origin: String,
        to: u64,
        batch: ZoneBatch,
        at: Timestamp,
        /// The term of the origin's entry `to`, and the origin's log (none
        /// from earlier builds).
        #[serde(default)]
        term: u64,
        #[serde(default, skip_serializing_if = "crate::wire::omitted")]
        log: Option<String>,
    },
    /// Names this zone's log, once: other zones' cursors carry the name,
    /// so a cursor into another log (this zone rebuilt) is told apart.
    NameLog { log: String },
    /// A consistency check: changes nothing; every replica records its
    /// digest at the index of the entry that carries it, and the replicas
    /// compare what they recorded (see [`crate::cluster::consistency`]).
    Check { round: u64 },
    /// Changes an original discovery cluster (`upstream`, as the
    /// configuration names it) made, as the leader observed them: applied
    /// only if they follow batch `from` (see [`super::upstream`]).
    UpstreamApply {
        upstream: String,
        from: u64,
        changes: Vec<ZoneChange>,
        at: Timestamp,
    },
    /// Own instances the leader registered with the original `upstream`
    /// (each with its `dirty_timestamp` then), and those it withdrew.
    UpstreamExported {
        upstream: String,
        exported: Vec<(InstanceKey, Timestamp)>,
        withdrawn: Vec<InstanceKey>,
        at: Timestamp,
    },
    /// Drops what this cluster holds of the original `upstream`: the link
    /// is off for good (`discoveryctl upstream forget`).
    UpstreamForget { upstream: String, at: Timestamp },
}

/// About how many bytes one instance takes in a command that carries
/// instances (restores, zone copies), as [`Command::approx_bytes`] counts
/// it.
pub fn approx_instance_bytes(i: &Instance) -> usize {
    const FIELD: usize = 16;
    i.region.len()
        + approx_key_bytes(&i.key())
        + i.addrs.iter().map(|a| a.len() + 4).sum::<usize>()
        + i.version.len()
        + i.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
        + 12 * FIELD
}

/// About how many bytes one key takes in a command that lists keys
/// (renews, evictions), as [`Command::approx_bytes`] counts it.
pub fn approx_key_bytes(k: &InstanceKey) -> usize {
    k.env.len() + k.appid.len() + k.zone.len() + k.hostname.len() + 4 * 16
}

impl ZoneChange {
    /// About how many bytes the change takes in a log entry, counted as
    /// [`Command::approx_bytes`] counts the rest.
    pub fn approx_bytes(&self) -> usize {
        const FIELD: usize = 16;
        match self {
            ZoneChange::Upsert(i) => approx_instance_bytes(i),
            ZoneChange::Renew { key, .. } => approx_key_bytes(key) + 2 * FIELD,
            ZoneChange::Remove(key) => approx_key_bytes(key) + FIELD,
        }
    }
}

impl Command {
    /// About how many bytes the command takes in a log entry (its strings,
    /// plus a little for the rest): cheap to work out, for keeping entries
    /// to a bounded size without serialising them twice.
    pub fn approx_bytes(&self) -> usize {
        const FIELD: usize = 16;
        let key = approx_key_bytes;
        fn metadata(m: &Metadata) -> usize {
            m.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
        }
        let instance = approx_instance_bytes;
        match self {
            Command::Register {
                registration: r, ..
            } => {
                r.region.len()
                    + key(&r.key())
                    + r.addrs.iter().map(|a| a.len() + 4).sum::<usize>()
                    + r.version.len()
                    + metadata(&r.metadata)
                    + 4 * FIELD
            }
            Command::Renew { keys, .. } | Command::Evict { keys, .. } => {
                keys.iter().map(key).sum::<usize>() + 2 * FIELD
            }
            Command::Cancel { key: k, .. } => key(k) + FIELD,
            Command::Restore { backup, .. } | Command::RestorePart { backup, .. } => backup
                .apps
                .iter()
                .flat_map(|a| &a.instances)
                .map(instance)
                .sum(),
            Command::ZoneApply { origin, batch, .. } => {
                origin.len()
                    + 4 * FIELD
                    + match batch {
                        ZoneBatch::Full(instances) | ZoneBatch::FullPart { instances, .. } => {
                            instances.iter().map(instance).sum::<usize>()
                        }
                        ZoneBatch::Changes { changes, .. } => {
                            changes.iter().map(ZoneChange::approx_bytes).sum::<usize>()
                        }
                    }
            }
            Command::UpstreamApply {
                upstream, changes, ..
            } => {
                upstream.len()
                    + 3 * FIELD
                    + changes.iter().map(ZoneChange::approx_bytes).sum::<usize>()
            }
            Command::UpstreamExported {
                upstream,
                exported,
                withdrawn,
                ..
            } => {
                upstream.len()
                    + 2 * FIELD
                    + exported.iter().map(|(k, _)| key(k) + FIELD).sum::<usize>()
                    + withdrawn.iter().map(key).sum::<usize>()
            }
            Command::UpstreamForget { upstream, .. } => upstream.len() + 2 * FIELD,
            Command::NameLog { log } => log.len() + FIELD,
            Command::Check { .. } => FIELD,
            Command::Schedule {
                appid, env, rules, ..
            } => {
                appid.len()
                    + env.as_ref().map_or(0, String::len)
                    + rules
                        .iter()
                        .flatten()
                        .map(SchedulerRule::approx_bytes)
                        .sum::<usize>()
                    + 4 * FIELD
            }
            Command::Set {
                env,
                appid,
                zone,
                changes,
                ..
            } => {
                env.len()
                    + appid.len()
                    + zone.len()
                    + changes
                        .iter()
                        .map(|c| {
                            c.hostname.len() + c.metadata.as_ref().map_or(0, metadata) + 3 * FIELD
                        })
                        .sum::<usize>()
                    + 4 * FIELD
            }
        }
    }
}

/// One instance's part of a `Set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub hostname: String,
    pub status: Option<Status>,
    pub metadata: Option<Metadata>,
}

/// What a command did, when it was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Register, cancel and set answer no data.
    Done,
    /// One answer per renewed key, in order.
    Renewed(Vec<Renewal>),
    /// The keys actually evicted.
    Evicted(Vec<InstanceKey>),
}

/// The answer to one renewed key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Renewal {
    Renewed(Box<Instance>),
    /// The app exists but this instance does not.
    UnknownInstance,
    /// No instance of this `(env, appid)` exists at all.
    UnknownApp,
    /// A rule of the leader refused the renew to its sender (`-403`).
    Refused(String),
}

/// The result of applying one command.
pub type Outcome = Result<Applied, RegistryError>;
