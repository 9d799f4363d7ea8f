//! A backup restored in parts: a backup of megabytes in one log entry
//! stalled replication for every writer (a follower must take an entry
//! within one heartbeat), so `/admin/restore` cuts it into parts that each
//! fit one entry ([`split`]), and every replica stages them in order
//! ([`Staged::take`]) until the last, which replaces the registry with the
//! whole backup at once, as a restore in one entry did. Between two parts
//! other writes go through.
//!
//! What is staged is replicated state: it is kept in snapshots, so a node
//! that installs one mid-restore stages the rest as the others do. A new
//! restore's first part drops whatever an abandoned one had staged.

use serde::{Deserialize, Serialize};

use super::command::approx_instance_bytes;
use super::error::RegistryError;
use super::instance::Timestamp;
use super::{AppSnapshot, RegistrySnapshot};

/// Parts one restore may come in: 64 MiB in entries of 64 KiB at least.
pub const MAX_PARTS: u32 = 1024;

/// The parts of a restore received so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The restore these parts belong to (its first part's `at`).
    pub id: Timestamp,
    /// The part expected next, and how many there are.
    pub next: u32,
    pub of: u32,
    /// The backup as far as received.
    pub backup: RegistrySnapshot,
}

impl Staged {
    /// Stages part `part` of `of` of restore `id` after what `staged`
    /// holds; returns the whole backup when this was the last part.
    /// Parts out of order (or of another restore) are refused, and leave
    /// what was staged as it was.
    pub fn take(
        staged: &mut Option<Staged>,
        id: Timestamp,
        part: u32,
        of: u32,
        backup: &RegistrySnapshot,
    ) -> Result<Option<RegistrySnapshot>, RegistryError> {
        if part == 0 {
            *staged = Some(Staged {
                id,
                next: 0,
                of,
                backup: RegistrySnapshot {
                    apps: Vec::new(),
                    ..backup.clone()
                },
            });
        }
        let fits = staged
            .as_ref()
            .is_some_and(|s| s.id == id && s.next == part && s.of == of);
        if !fits {
            return Err(RegistryError::bad(
                "backup",
                &format!(
                    "part {part} of {of} of restore {id} out of order: start the restore again"
                ),
            ));
        }
        let Some(s) = staged.as_mut() else {
            return Ok(None);
        };
        for app in &backup.apps {
            match s.backup.apps.last_mut() {
                // An app too large for one part continues where it stopped.
                Some(last) if last.env == app.env && last.appid == app.appid => {
                    last.instances.extend(app.instances.iter().cloned());
                    last.latest_timestamp = last.latest_timestamp.max(app.latest_timestamp);
                }
                _ => s.backup.apps.push(app.clone()),
            }
        }
        s.next += 1;
        if s.next < s.of {
            return Ok(None);
        }
        Ok(staged.take().map(|s| s.backup))
    }
}

/// Cuts `backup` into parts of about `max_bytes` each (as
/// [`approx_instance_bytes`] counts), in order: the first carries
/// everything but the apps, and every part some apps or pieces of one
/// (an app's instances over consecutive parts). Always at least one part.
pub fn split(backup: RegistrySnapshot, max_bytes: usize) -> Vec<RegistrySnapshot> {
    let RegistrySnapshot {
        high_water,
        apps,
        partitions,
        schedules,
        log,
        // A restore the backup's cluster had under way is not restored.
        restoring: _,
        upstreams,
    } = backup;
    let empty = || RegistrySnapshot {
        high_water,
        apps: Vec::new(),
        partitions: Default::default(),
        schedules: Vec::new(),
        log: None,
        restoring: None,
        upstreams: Default::default(),
    };
    let mut parts = vec![RegistrySnapshot {
        high_water,
        apps: Vec::new(),
        partitions,
        schedules,
        log,
        restoring: None,
        upstreams,
    }];
    let mut bytes = 0;
    for app in apps {
        let AppSnapshot {
            env,
            appid,
            latest_timestamp,
            instances,
        } = app;
        let mut piece = AppSnapshot {
            env: env.clone(),
            appid: appid.clone(),
            latest_timestamp,
            instances: Vec::new(),
        };
        for instance in instances {
            let n = approx_instance_bytes(&instance);
            if bytes + n > max_bytes && bytes > 0 {
                let last = parts.last_mut().expect("a part");
                if !piece.instances.is_empty() {
                    last.apps.push(std::mem::replace(
                        &mut piece,
                        AppSnapshot {
                            env: env.clone(),
                            appid: appid.clone(),
                            latest_timestamp,
                            instances: Vec::new(),
                        },
                    ));
                }
                parts.push(empty());
                bytes = 0;
            }
            bytes += n;
            piece.instances.push(instance);
        }
        // An app with no instance is kept too (a backup may hold one).
        parts.last_mut().expect("a part").apps.push(piece);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Instance, Registration, Status};

    fn instance(appid: &str, host: usize) -> Instance {
        Instance::new(
            Registration {
                region: "sh".into(),
                zone: "z1".into(),
                env: "dev".into(),
                appid: appid.into(),
                hostname: format!("host-{host:05}"),
                addrs: vec![format!("http://10.0.0.1:{host}")],
                version: "v1".into(),
                metadata: Default::default(),
                status: Status::Up,
            },
            100,
        )
    }

    fn backup() -> RegistrySnapshot {
        let app = |appid: &str, n: usize| AppSnapshot {
            env: "dev".into(),
            appid: appid.into(),
            latest_timestamp: 100,
            instances: (0..n).map(|i| instance(appid, i)).collect(),
        };
        RegistrySnapshot {
            high_water: 100,
            apps: vec![
                app("a.small", 3),
                app("b.big", 5000),
                app("c.empty", 0),
                app("d", 40),
            ],
            partitions: Default::default(),
            schedules: Vec::new(),
            log: Some("log-1".into()),
            restoring: None,
            upstreams: Default::default(),
        }
    }

    #[test]
    fn parts_fit_and_staged_in_order_they_make_the_backup_again() {
        let whole = backup();
        let parts = split(whole.clone(), 64 << 10);
        assert!(parts.len() > 5, "{} parts", parts.len());
        for part in &parts {
            let bytes: usize = part
                .apps
                .iter()
                .flat_map(|a| &a.instances)
                .map(approx_instance_bytes)
                .sum();
            assert!(bytes <= 64 << 10, "{bytes}");
        }
        assert_eq!(parts[0].log.as_deref(), Some("log-1"));
        assert!(parts[1..].iter().all(|p| p.log.is_none()));
        let of = parts.len() as u32;
        let mut staged = None;
        let mut result = None;
        for (i, part) in parts.iter().enumerate() {
            result = Staged::take(&mut staged, 7, i as u32, of, part).unwrap();
            assert_eq!(result.is_some(), i + 1 == parts.len());
        }
        assert_eq!(result.unwrap(), whole);
        assert!(staged.is_none());
    }

    #[test]
    fn a_part_out_of_order_or_of_another_restore_is_refused_and_changes_nothing() {
        let parts = split(backup(), 64 << 10);
        let of = parts.len() as u32;
        let mut staged = None;
        assert!(Staged::take(&mut staged, 7, 1, of, &parts[1]).is_err());
        assert!(staged.is_none());
        Staged::take(&mut staged, 7, 0, of, &parts[0]).unwrap();
        let before = staged.clone();
        assert!(Staged::take(&mut staged, 7, 2, of, &parts[2]).is_err());
        assert!(Staged::take(&mut staged, 8, 1, of, &parts[1]).is_err());
        assert_eq!(staged, before);
        // A new restore's first part starts over.
        Staged::take(&mut staged, 9, 0, of, &parts[0]).unwrap();
        assert_eq!(staged.as_ref().map(|s| s.id), Some(9));
    }

    #[test]
    fn a_small_backup_is_one_part() {
        let whole = backup();
        let parts = split(whole.clone(), 64 << 20);
        assert_eq!(parts, vec![whole]);
    }
}
