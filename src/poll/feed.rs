//! The feed of recent changes: the last registrations, cancels, sets,
//! evictions and snapshot installs this node applied, numbered, for the
//! console's live view. Renews only move timestamps and are left out.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::registry::{Applied, Command, Outcome};

/// How many changes the feed keeps.
const KEPT: usize = 256;

/// Hostnames one entry names at most (a `set` or eviction of many).
const NAMED: usize = 16;

/// One applied change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Numbers every change this node applied since it started.
    pub seq: u64,
    /// Wall-clock milliseconds when this node applied it.
    pub at_ms: u64,
    /// The log index of its entry.
    pub index: u64,
    /// `register`, `cancel`, `set`, `evict`, `restore` (a backup) or
    /// `snapshot` (one installed from the leader).
    pub kind: &'static str,
    pub env: String,
    pub appid: String,
    pub zone: String,
    pub hostnames: Vec<String>,
    /// How many instances it touched (hostnames lists at most 16).
    pub count: usize,
}

/// The feed; readers wait on `latest` for a sequence number past theirs.
pub struct ChangeFeed {
    kept: Mutex<VecDeque<Change>>,
    latest: watch::Sender<u64>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        ChangeFeed {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            latest: watch::Sender::new(0),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a command did, as a feed entry (without its number), if it is one
/// the feed shows and it was accepted.
fn describe(index: u64, command: &Command, outcome: &Outcome) -> Option<Change> {
    let applied = outcome.as_ref().ok()?;
    let entry = |kind, env: &str, appid: &str, zone: &str, hosts: Vec<String>| {
        let count = hosts.len();
        Change {
            seq: 0,
            at_ms: now_ms(),
            index,
            kind,
            env: env.to_string(),
            appid: appid.to_string(),
            zone: zone.to_string(),
            hostnames: hosts.into_iter().take(NAMED).collect(),
            count,
        }
    };
    match (command, applied) {
        (
            Command::Register {
                registration: r, ..
            },
            _,
        ) => Some(entry(
            "register",
            &r.env,
            &r.appid,
            &r.zone,
            vec![r.hostname.clone()],
        )),
        (Command::Cancel { key, .. }, _) => Some(entry(
            "cancel",
            &key.env,
            &key.appid,
            &key.zone,
            vec![key.hostname.clone()],
        )),
        (
            Command::Set {
                env,
                appid,
                zone,
                changes,
                ..
            },
            _,
        ) => Some(entry(
            "set",
            env,
            appid,
            zone,
            changes.iter().map(|c| c.hostname.clone()).collect(),
        )),
        (Command::Evict { .. }, Applied::Evicted(gone)) if !gone.is_empty() => {
            let first = &gone[0];
            Some(entry(
                "evict",
                &first.env,
                &first.appid,
                &first.zone,
                gone.iter()
                    .map(|k| format!("{}/{}", k.appid, k.hostname))
                    .collect(),
            ))
        }
        (Command::Schedule { appid, env, .. }, _) => Some(entry(
            "schedule",
            env.as_deref().unwrap_or(""),
            appid,
            "",
            Vec::new(),
        )),
        (Command::Restore { backup, .. }, _) => {
            let count = backup.apps.iter().map(|a| a.instances.len()).sum();
            let mut change = entry("restore", "", "", "", Vec::new());
            change.count = count;
            Some(change)
        }
        // A restore in parts changes the registry at its last part.
        (
            Command::RestorePart {
                part,
                of,
                instances,
                ..
            },
            _,
        ) if part + 1 == *of => {
            let mut change = entry("restore", "", "", "", Vec::new());
            change.count = *instances;
            Some(change)
        }
        _ => None,
    }
}

impl ChangeFeed {
    /// The latest change's number, as it moves: a task that acts on
    /// registrations, cancels, sets and evictions wakes on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Records what the commands of log entry `index` did.
    pub fn record(&self, index: u64, commands: &[Command], outcomes: &[Outcome]) {
        let changes: Vec<Change> = commands
            .iter()
            .zip(outcomes)
            .filter_map(|(c, o)| describe(index, c, o))
            .collect();
        self.push(changes);
    }

    /// Records that the whole registry was replaced by a snapshot.
    pub fn snapshot_installed(&self, index: Option<u64>) {
        self.push(vec![Change {
            seq: 0,
            at_ms: now_ms(),
            index: index.unwrap_or(0),
            kind: "snapshot",
            env: String::new(),
            appid: String::new(),
            zone: String::new(),
            hostnames: Vec::new(),
            count: 0,
        }]);
    }

    fn push(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut kept = self.kept.lock();
        let mut seq = *self.latest.borrow();
        for mut change in changes {
            seq += 1;
            change.seq = seq;
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(change);
        }
        self.latest.send_replace(seq);
    }

    /// The kept changes numbered after `after`, oldest first, and the
    /// latest number.
    pub fn after(&self, after: u64) -> (Vec<Change>, u64) {
        let kept = self.kept.lock();
        let latest = *self.latest.borrow();
        (
            kept.iter().filter(|c| c.seq > after).cloned().collect(),
            latest,
        )
    }

    /// Like [`after`](Self::after), waiting up to `hold` for a change when
    /// there is none yet.
    pub async fn wait_after(&self, after: u64, hold: Duration) -> (Vec<Change>, u64) {
        let mut latest = self.latest.subscribe();
        let _ = tokio::time::timeout(hold, latest.wait_for(|seq| *seq > after)).await;
        self.after(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{InstanceKey, Metadata, Registration, RegistryError, Status};

    fn register(host: &str) -> Command {
        Command::Register {
            registration: Registration {
                region: "sh".into(),
                zone: "z1".into(),
                env: "dev".into(),
                appid: "a".into(),
                hostname: host.into(),
                addrs: vec![],
                version: String::new(),
                metadata: Metadata::new(),
                status: Status::Up,
            },
            at: 1,
        }
    }

    #[tokio::test]
    async fn accepted_changes_are_numbered_and_kept_and_waiters_wake() {
        let feed = ChangeFeed::default();
        let renew = Command::Renew {
            keys: vec![],
            at: 2,
        };
        let cancel = Command::Cancel {
            key: InstanceKey {
                env: "dev".into(),
                appid: "a".into(),
                zone: "z1".into(),
                hostname: "gone".into(),
            },
            at: 3,
        };
        feed.record(
            7,
            &[register("h1"), renew, cancel],
            &[
                Ok(Applied::Done),
                Ok(Applied::Done),
                Err(RegistryError::bad("hostname", "unknown")),
            ],
        );
        let (changes, latest) = feed.after(0);
        assert_eq!(latest, 1);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].kind, changes[0].index), ("register", 7));
        assert_eq!(changes[0].hostnames, ["h1"]);

        let waiting = feed.wait_after(1, Duration::from_secs(5));
        let (woken, ()) = tokio::join!(waiting, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            feed.record(8, &[register("h2")], &[Ok(Applied::Done)]);
        });
        assert_eq!(woken.0.len(), 1);
        assert_eq!(woken.0[0].hostnames, ["h2"]);
        assert_eq!(woken.1, 2);
    }

    #[test]
    fn the_feed_keeps_the_last_256() {
        let feed = ChangeFeed::default();
        for i in 0..300 {
            feed.record(i, &[register("h")], &[Ok(Applied::Done)]);
        }
        let (changes, latest) = feed.after(0);
        assert_eq!(latest, 300);
        assert_eq!(changes.len(), 256);
        assert_eq!(changes[0].seq, 45);
    }
}
