//! A registry read back from its snapshot form app by app: the counterpart
//! of [`Frozen`](super::Frozen).
//!
//! Reading a [`RegistrySnapshot`] whole and then moving its instances into
//! apps needs room for both at once (over a gigabyte at a million
//! instances), and leaves the allocator holding the pages of the copy after
//! it is dropped. [`Thawed`] deserializes the same bytes one app at a time
//! straight into the app it becomes, so a restart or a snapshot install
//! needs little more than the registry it ends with.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::app::App;
use super::instance::Timestamp;
use super::scheduler::Schedule;
use super::zones::Partitions;
use super::{AppSnapshot, RegistrySnapshot};

/// Apps read and not yet filed, at most: a few hundred kilobytes.
const FILING_QUEUE: usize = 64;

/// The apps by env then appid, as [`super::Registry`] keeps them.
pub(super) type Envs = HashMap<String, HashMap<String, Arc<App>>>;

/// The replicated state of a registry, built from its snapshot form.
#[derive(Debug, Default)]
pub struct Thawed {
    pub(super) high_water: Timestamp,
    pub(super) envs: Envs,
    pub(super) instances: usize,
    pub(super) partitions: Partitions,
    pub(super) schedules: Vec<Schedule>,
    pub(super) log: Option<String>,
    pub(super) restoring: Option<Box<super::restore::Staged>>,
    pub(super) upstreams: super::upstream::Upstreams,
}

impl Thawed {
    /// Files one app of a snapshot.
    fn add(&mut self, a: AppSnapshot) {
        let app = self
            .envs
            .entry(a.env)
            .or_default()
            .entry(a.appid)
            .or_default();
        let app = Arc::make_mut(app);
        for instance in a.instances {
            if app.get(&instance.zone, &instance.hostname).is_none() {
                self.instances += 1;
            }
            app.insert(instance);
        }
        app.set_latest_timestamp(a.latest_timestamp);
    }
}

impl From<RegistrySnapshot> for Thawed {
    fn from(snapshot: RegistrySnapshot) -> Self {
        let mut thawed = Thawed {
            high_water: snapshot.high_water,
            partitions: snapshot.partitions,
            schedules: snapshot.schedules,
            log: snapshot.log,
            restoring: snapshot.restoring,
            upstreams: snapshot.upstreams,
            ..Thawed::default()
        };
        for a in snapshot.apps {
            thawed.add(a);
        }
        thawed
    }
}

impl<'de> Deserialize<'de> for Thawed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// [`RegistrySnapshot`]'s fields, with its defaults.
        #[derive(Deserialize)]
        struct Fields {
            high_water: Timestamp,
            apps: Apps,
            #[serde(default)]
            partitions: Partitions,
            #[serde(default)]
            schedules: Vec<Schedule>,
            #[serde(default)]
            log: Option<String>,
            #[serde(default)]
            restoring: Option<Box<super::restore::Staged>>,
            #[serde(default)]
            upstreams: super::upstream::Upstreams,
        }
        /// The apps, filed as each is read.
        struct Apps(Thawed);
        impl<'de> Deserialize<'de> for Apps {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_seq(AppsVisitor)
            }
        }
        struct AppsVisitor;
        impl<'de> Visitor<'de> for AppsVisitor {
            type Value = Apps;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of apps")
            }
            /// Parsing and filing overlap: each app read is handed to a
            /// thread that files it (sorting its instances in, sharing
            /// their names, hashing them for the digest) while the next
            /// one is read. A queue of a few apps bounds what waits.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Apps, A::Error> {
                std::thread::scope(|scope| {
                    let (apps, filed) = std::sync::mpsc::sync_channel::<AppSnapshot>(FILING_QUEUE);
                    let filer = scope.spawn(move || {
                        let mut thawed = Thawed::default();
                        for app in filed {
                            thawed.add(app);
                        }
                        thawed
                    });
                    let mut read = Ok(());
                    loop {
                        match seq.next_element::<AppSnapshot>() {
                            Ok(Some(app)) => {
                                if apps.send(app).is_err() {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                read = Err(e);
                                break;
                            }
                        }
                    }
                    drop(apps);
                    let thawed = filer.join().map_err(|_| {
                        serde::de::Error::custom("filing the snapshot's apps failed")
                    })?;
                    read.map(|()| Apps(thawed))
                })
            }
        }

        let fields = Fields::deserialize(deserializer)?;
        Ok(Thawed {
            high_water: fields.high_water,
            partitions: fields.partitions,
            schedules: fields.schedules,
            log: fields.log,
            restoring: fields.restoring,
            upstreams: fields.upstreams,
            ..fields.apps.0
        })
    }
}
