//! The registry: apps and their instances, and the rules by which commands
//! change them. Plain data and logic with no I/O, applied identically on
//! every replica.

mod app;
mod command;
pub mod digest;
mod error;
pub mod eviction;
mod instance;
mod metadata;
mod name;
pub mod rendered;
pub mod restore;
mod scheduler;
mod thaw;
pub mod upstream;
mod validate;
pub mod zones;

use std::sync::Arc;

use zones::{origin_of, OwnChanges, Partitions, Staged, ZoneBatch, ZoneChange};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use app::{App, FetchData};
pub use command::{
    approx_instance_bytes, approx_key_bytes, Applied, Change, Command, Outcome, Renewal,
};
pub use error::RegistryError;
pub use instance::{Instance, InstanceKey, Registration, Status, StatusMask, Timestamp};
pub use metadata::{parse_metadata, Metadata};
pub use name::Name;
pub use scheduler::{Schedule, SchedulerRule, Schedules};
pub use thaw::Thawed;
pub use validate::{
    instance_ok, key_ok, upstream_name_ok, validate, Limits, Rules, CLUSTER_APPID,
    MAX_RESTORE_BYTES,
};

/// `(env, appid)`: the unit that long polls watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppKey {
    pub env: String,
    pub appid: String,
}

impl AppKey {
    pub fn new(env: &str, appid: &str) -> Self {
        AppKey {
            env: env.to_string(),
            appid: appid.to_string(),
        }
    }
}

/// Why a fetch found nothing to answer.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchMiss {
    /// No instance of the app exists.
    UnknownApp,
    /// The app exists but has no instance in the zone asked for.
    UnknownZone { latest_timestamp: Timestamp },
}

/// What a long poll sees of one app.
#[derive(Debug, PartialEq, Eq)]
pub enum PollView {
    /// The app does not exist.
    Unknown,
    /// Nothing newer than the client's timestamp with an up instance.
    Unchanged,
    /// Newer, with at least one up instance: the rendered data (up only).
    Changed(Bytes),
}

/// All apps, by env then appid. Each app is shared with the snapshot being
/// written, if any ([`Registry::freeze`]): a change clones that one app
/// first (`Arc::make_mut`), so taking a snapshot copies nothing.
#[derive(Debug, Default)]
pub struct Registry {
    envs: thaw::Envs,
    /// Schedules from the configuration file (a node setting).
    schedules: Schedules,
    /// Schedules set at run time (replicated): they win over the file's.
    set_schedules: Schedules,
    instances: usize,
    /// The highest timestamp any change was stamped with: every change is
    /// stamped above it, so an app that empties and comes back still moves
    /// forward for its watchers whatever the proposer's clock says.
    high_water: Timestamp,
    /// Other zones' instances, by origin zone (replicated).
    partitions: Partitions,
    /// Whether applying a command reports this zone's own changes, to
    /// stream them to other zones (not replicated: a node setting).
    stream_own: bool,
    /// The identity of this zone's log, named once by its first leader
    /// that streams to other zones (replicated): their cursors say which
    /// log they point into.
    log: Option<String>,
    /// The parts of a restore received so far (replicated).
    restoring: Option<Box<restore::Staged>>,
    /// Original discovery clusters followed (replicated).
    upstreams: upstream::Upstreams,
    /// The rendered fetch answers its apps keep (not replicated).
    rendered: rendered::Answers,
}

/// One app's digest: what replicas compare to find where they differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDigest {
    pub env: String,
    pub appid: String,
    pub instances: usize,
    pub latest_timestamp: Timestamp,
    pub digest: digest::Sum,
}

/// The origin's entry a zone batch brings its partition up to.
struct OriginEntry {
    index: u64,
    term: u64,
    log: Option<String>,
}

/// The result of applying one command: the answer for the client, and the
/// apps whose watchers must be told.
#[derive(Debug)]
pub struct Effect {
    pub outcome: Outcome,
    pub changed: Vec<AppKey>,
    /// This zone's own instances as the command left them, when
    /// [`Registry::stream_own`] is on.
    pub own: OwnChanges,
}

impl Effect {
    fn new(outcome: Outcome, changed: Vec<AppKey>) -> Self {
        Effect {
            outcome,
            changed,
            own: OwnChanges::None,
        }
    }
}

impl Registry {
    pub fn new(schedules: Schedules) -> Self {
        Registry {
            schedules,
            ..Registry::default()
        }
    }

    /// The rendered fetch answers its apps keep, within their budget.
    pub fn rendered(&self) -> &rendered::Answers {
        &self.rendered
    }

    /// How many instances are registered.
    pub fn len(&self) -> usize {
        self.instances
    }

    pub fn is_empty(&self) -> bool {
        self.instances == 0
    }

    /// How many instances are this zone's own (not held for another zone):
    /// the ones expected to renew here.
    pub fn own_len(&self) -> usize {
        self.instances
            - self
                .partitions
                .values()
                .map(|p| p.keys.len())
                .sum::<usize>()
            - self.upstreams.values().map(|u| u.keys.len()).sum::<usize>()
    }

    /// How many of this zone's own instances have renewed (or registered
    /// again) since they first registered: the ones self-preservation
    /// expects renews from. An instance that registered and never renewed
    /// is not counted, so registrations that never renew (a flood, or
    /// clients that die at once) are evicted on time instead of turning
    /// self-preservation on for everyone. One pass, under the read lock,
    /// once an eviction round.
    pub fn renewing_len(&self) -> usize {
        let renewed = |i: &Instance| i.renew_timestamp > i.reg_timestamp;
        let all = self.instances().filter(|i| renewed(i)).count();
        let foreign: usize = self
            .partitions
            .values()
            .flat_map(|p| p.keys.iter())
            .chain(self.upstreams.values().flat_map(|u| u.keys.iter()))
            .filter(|k| self.get(k).is_some_and(renewed))
            .count();
        all - foreign
    }

    /// Whether another zone's partition, or an original discovery cluster
    /// this one follows, holds `key`: it is not this cluster's own.
    pub fn is_foreign(&self, key: &InstanceKey) -> bool {
        origin_of(&self.partitions, key).is_some() || self.upstream_of(key).is_some()
    }

    /// `(env, apps, instances)` for every env, sorted by env.
    pub fn counts_by_env(&self) -> Vec<(String, usize, usize)> {
        let mut counts: Vec<_> = self
            .envs
            .iter()
            .map(|(env, apps)| {
                let instances = apps.values().map(|app| app.len()).sum();
                (env.clone(), apps.len(), instances)
            })
            .collect();
        counts.sort();
        counts
    }

    pub fn app(&self, env: &str, appid: &str) -> Option<&App> {
        self.envs.get(env)?.get(appid).map(|app| &**app)
    }

    pub fn get(&self, key: &InstanceKey) -> Option<&Instance> {
        self.app(&key.env, &key.appid)?
            .get(&key.zone, &key.hostname)
    }

    /// Every instance, in a stable order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.envs
            .values()
            .flat_map(|apps| apps.values())
            .flat_map(|app| app.instances())
    }

    /// The identity of this zone's log, once named.
    pub fn log(&self) -> Option<&str> {
        self.log.as_deref()
    }

    /// Turns on reporting this zone's own changes in every [`Effect`], for
    /// a node that streams them to other zones.
    pub fn stream_own(&mut self, on: bool) {
        self.stream_own = on;
    }

    /// Applies one command. Deterministic: the result depends only on the
    /// current state and the command.
    pub fn apply(&mut self, command: &Command) -> Effect {
        let mut own = OwnChanges::None;
        let mut effect = self.apply_reporting(command, &mut own);
        if self.stream_own {
            effect.own = own;
        }
        effect
    }

    fn apply_reporting(&mut self, command: &Command, own: &mut OwnChanges) -> Effect {
        match command {
            Command::Register { registration, at } => self.register(registration, *at, own),
            Command::Restore { backup, at } => {
                *own = OwnChanges::Reset;
                self.restore_backup(backup, *at)
            }
            Command::RestorePart {
                id,
                part,
                of,
                backup,
                at,
                ..
            } => {
                let mut staged = self.restoring.take().map(|s| *s);
                let taken = restore::Staged::take(&mut staged, *id, *part, *of, backup);
                self.restoring = staged.map(Box::new);
                match taken {
                    Err(e) => Effect::new(Err(e), Vec::new()),
                    Ok(None) => Effect::new(Ok(Applied::Done), Vec::new()),
                    Ok(Some(whole)) => {
                        *own = OwnChanges::Reset;
                        self.restore_backup(&whole, *at)
                    }
                }
            }
            Command::Renew { keys, at } => Effect::new(
                Ok(Applied::Renewed(
                    keys.iter().map(|k| self.renew(k, *at, own)).collect(),
                )),
                Vec::new(),
            ),
            Command::Cancel { key, at } => {
                if let Some(refused) = self.foreign(|| key.clone()) {
                    return refused;
                }
                if let Some(refused) = self.imported(|| key.clone()) {
                    return Effect::new(Err(refused), Vec::new());
                }
                match self.remove(key, *at) {
                    Some(_) => {
                        own.push(ZoneChange::Remove(key.clone()));
                        Effect::new(Ok(Applied::Done), vec![AppKey::new(&key.env, &key.appid)])
                    }
                    None => Effect::new(Err(RegistryError::NotFound), Vec::new()),
                }
            }
            Command::Set {
                env,
                appid,
                zone,
                changes,
                at,
            } => self.set(env, appid, zone, changes, *at, own),
            Command::Evict {
                keys,
                silent_since,
                at,
            } => self.evict(keys, *silent_since, *at, own),
            Command::ZoneApply {
                origin,
                to,
                batch,
                at,
                term,
                log,
            } => {
                let entry = OriginEntry {
                    index: *to,
                    term: *term,
                    log: log.clone(),
                };
                self.zone_apply(origin, entry, batch, *at)
            }
            Command::Check { .. } => Effect::new(Ok(Applied::Done), Vec::new()),
            Command::UpstreamApply {
                upstream,
                from,
                changes,
                at,
            } => self.upstream_apply(upstream, *from, changes, *at, own),
            Command::UpstreamExported {
                upstream,
                exported,
                withdrawn,
                ..
            } => self.upstream_exported(upstream, exported, withdrawn),
            Command::UpstreamForget { upstream, at } => self.upstream_forget(upstream, *at),
            Command::NameLog { log } => match &self.log {
                None => {
                    self.log = Some(log.clone());
                    Effect::new(Ok(Applied::Done), Vec::new())
                }
                Some(named) => Effect::new(
                    Err(RegistryError::bad(
                        "log",
                        &format!("this log is already {named}"),
                    )),
                    Vec::new(),
                ),
            },
            Command::Schedule {
                appid,
                env,
                rules,
                at,
            } => self.schedule(appid, env.as_deref(), rules.as_deref(), *at),
        }
    }

    /// Sets or clears a schedule set at run time, and moves the apps it
    /// covers forward so their watchers fetch the new one.
    fn schedule(
        &mut self,
        appid: &str,
        env: Option<&str>,
        rules: Option<&[SchedulerRule]>,
        at: Timestamp,
    ) -> Effect {
        match rules {
            Some(rules) => self.set_schedules.put(Schedule {
                appid: appid.to_string(),
                env: env.map(str::to_string),
                rules: rules.to_vec(),
            }),
            None => {
                if !self.set_schedules.clear(appid, env) {
                    return Effect::new(Err(RegistryError::NotFound), Vec::new());
                }
            }
        }
        // In env order: every replica stamps the apps alike.
        let mut changed: Vec<AppKey> = self
            .envs
            .iter()
            .filter(|(e, apps)| env.is_none_or(|env| env == *e) && apps.contains_key(appid))
            .map(|(e, _)| AppKey::new(e, appid))
            .collect();
        changed.sort();
        for key in &changed {
            if let Some(app) = self
                .envs
                .get_mut(&key.env)
                .and_then(|a| a.get_mut(appid))
                .map(Arc::make_mut)
            {
                self.high_water = app.advance(at.max(self.high_water.saturating_add(1)));
            }
        }
        Effect::new(Ok(Applied::Done), changed)
    }

    /// The scheduler served with an app: one set at run time, else the
    /// configuration file's.
    fn rules(&self, env: &str, appid: &str) -> Option<&[SchedulerRule]> {
        self.set_schedules
            .rules(env, appid)
            .or_else(|| self.schedules.rules(env, appid))
    }

    /// The schedules set at run time, and the configuration file's.
    pub fn schedules(&self) -> (&[Schedule], &[Schedule]) {
        (self.set_schedules.all(), self.schedules.all())
    }

    /// A refusal for a local write to an instance another zone owns: only
    /// its origin changes it (the write path hands such writes there).
    /// `key` is built only when there are other zones' partitions at all.
    fn foreign(&self, key: impl FnOnce() -> InstanceKey) -> Option<Effect> {
        if self.partitions.is_empty() {
            return None;
        }
        let key = key();
        let origin = origin_of(&self.partitions, &key)?;
        Some(Effect::new(
            Err(RegistryError::bad(
                "zone",
                &format!("{} belongs to zone {origin}: write it there", key.hostname),
            )),
            Vec::new(),
        ))
    }

    fn register(&mut self, reg: &Registration, at: Timestamp, own: &mut OwnChanges) -> Effect {
        if let Some(refused) = self.foreign(|| reg.key()) {
            return refused;
        }
        if !self.upstreams.is_empty() {
            self.take_over(&reg.key());
        }
        let app = self
            .envs
            .entry(reg.env.clone())
            .or_default()
            .entry(reg.appid.clone())
            .or_default();
        let app = Arc::make_mut(app);
        let ts = app.advance(at.max(self.high_water.saturating_add(1)));
        self.high_water = ts;
        let instance = match app.get(&reg.zone, &reg.hostname) {
            Some(old) => old.reregistered(reg.clone(), ts),
            None => {
                self.instances += 1;
                Instance::new(reg.clone(), ts)
            }
        };
        if self.stream_own {
            own.push(ZoneChange::Upsert(instance.clone()));
        }
        app.insert(instance);
        Effect::new(Ok(Applied::Done), vec![AppKey::new(&reg.env, &reg.appid)])
    }

    fn renew(&mut self, key: &InstanceKey, at: Timestamp, own: &mut OwnChanges) -> Renewal {
        if origin_of(&self.partitions, key).is_some() || self.upstream_of(key).is_some() {
            return Renewal::UnknownInstance;
        }
        let Some(app) = self
            .envs
            .get_mut(&key.env)
            .and_then(|a| a.get_mut(&key.appid))
            .map(Arc::make_mut)
        else {
            return Renewal::UnknownApp;
        };
        let stream_own = self.stream_own;
        app.update(&key.zone, &key.hostname, |instance| {
            instance.renew_timestamp = instance.renew_timestamp.max(at);
            if stream_own {
                own.push(ZoneChange::Renew {
                    key: key.clone(),
                    renew_timestamp: instance.renew_timestamp,
                });
            }
            Renewal::Renewed(Box::new(instance.clone()))
        })
        .unwrap_or(Renewal::UnknownInstance)
    }

    /// Removes an instance, dropping its zone and app when they empty.
    fn remove(&mut self, key: &InstanceKey, at: Timestamp) -> Option<Instance> {
        let apps = self.envs.get_mut(&key.env)?;
        let app = Arc::make_mut(apps.get_mut(&key.appid)?);
        let removed = app.remove(&key.zone, &key.hostname)?;
        self.high_water = app.advance(at.max(self.high_water.saturating_add(1)));
        if app.is_empty() {
            apps.remove(&key.appid);
            if apps.is_empty() {
                self.envs.remove(&key.env);
            }
        }
        self.instances -= 1;
        Some(removed)
    }

    /// Why a `set` of these changes would be refused for naming what is
    /// not registered.
    fn set_refusal(
        &self,
        env: &str,
        appid: &str,
        zone: &str,
        changes: &[Change],
    ) -> Option<RegistryError> {
        let Some(app) = self.envs.get(env).and_then(|a| a.get(appid)) else {
            return Some(RegistryError::bad("appid", &format!("{appid} not found")));
        };
        changes
            .iter()
            .find(|c| app.get(zone, &c.hostname).is_none())
            .map(|c| {
                RegistryError::bad(
                    "hostname",
                    &format!("{} not found in zone {zone}", c.hostname),
                )
            })
    }

    /// What applying `command` now would refuse it for: naming an instance
    /// or an app that is not registered. The node that receives a client's
    /// write asks before proposing it, so a write that can only fail never
    /// takes room in the log; applying checks again, as the registry may
    /// change in between.
    pub fn refusal(&self, command: &Command) -> Option<RegistryError> {
        match command {
            Command::Cancel { key, .. } => {
                if self.get(key).is_none() {
                    return Some(RegistryError::NotFound);
                }
                self.imported(|| key.clone())
            }
            Command::Set {
                env,
                appid,
                zone,
                changes,
                ..
            } => changes
                .iter()
                .find_map(|c| {
                    self.imported(|| InstanceKey {
                        env: env.clone(),
                        appid: appid.clone(),
                        zone: zone.clone(),
                        hostname: c.hostname.clone(),
                    })
                })
                .or_else(|| self.set_refusal(env, appid, zone, changes)),
            _ => None,
        }
    }

    fn set(
        &mut self,
        env: &str,
        appid: &str,
        zone: &str,
        changes: &[Change],
        at: Timestamp,
        own: &mut OwnChanges,
    ) -> Effect {
        let refuse = |e| Effect::new(Err(e), Vec::new());
        for c in changes {
            let key = || InstanceKey {
                env: env.to_string(),
                appid: appid.to_string(),
                zone: zone.to_string(),
                hostname: c.hostname.clone(),
            };
            if let Some(refused) = self.foreign(key) {
                return refused;
            }
            if let Some(refused) = self.imported(key) {
                return refuse(refused);
            }
        }
        // Checked before the app is taken for writing: taking it copies
        // it while a reader shares it, and a refused set changes nothing.
        if let Some(refused) = self.set_refusal(env, appid, zone, changes) {
            return refuse(refused);
        }
        let Some(app) = self
            .envs
            .get_mut(env)
            .and_then(|a| a.get_mut(appid))
            .map(Arc::make_mut)
        else {
            return refuse(RegistryError::bad("appid", &format!("{appid} not found")));
        };
        let ts = app.advance(at.max(self.high_water.saturating_add(1)));
        self.high_water = ts;
        let stream_own = self.stream_own;
        for change in changes {
            app.update(zone, &change.hostname, |instance| {
                if let Some(status) = change.status {
                    if status == Status::Up && instance.status != Status::Up {
                        instance.up_timestamp = ts;
                    }
                    instance.status = status;
                }
                if let Some(metadata) = &change.metadata {
                    instance.metadata = metadata.clone();
                }
                instance.dirty_timestamp = ts;
                instance.latest_timestamp = ts;
                if stream_own {
                    own.push(ZoneChange::Upsert(instance.clone()));
                }
            });
        }
        Effect::new(Ok(Applied::Done), vec![AppKey::new(env, appid)])
    }

    fn evict(
        &mut self,
        keys: &[InstanceKey],
        silent_since: Timestamp,
        at: Timestamp,
        own: &mut OwnChanges,
    ) -> Effect {
        let mut evicted = Vec::new();
        for key in keys {
            // Another zone's instances are evicted by their own zone only.
            if self.is_foreign(key) {
                continue;
            }
            let silent = self
                .get(key)
                .is_some_and(|i| i.renew_timestamp < silent_since);
            if silent && self.remove(key, at).is_some() {
                own.push(ZoneChange::Remove(key.clone()));
                evicted.push(key.clone());
            }
        }
        let mut changed: Vec<AppKey> = evicted
            .iter()
            .map(|k| AppKey::new(&k.env, &k.appid))
            .collect();
        changed.sort();
        changed.dedup();
        Effect::new(Ok(Applied::Evicted(evicted)), changed)
    }

    /// Applies what zone `origin` streamed, if it starts where this zone's
    /// partition of it stands (else it is a batch already applied, or one
    /// sent twice by two leaders: nothing changes). Instances are stored
    /// exactly as the origin holds them; only their apps' change
    /// timestamps move here, so this zone's polls wake.
    fn zone_apply(
        &mut self,
        origin: &str,
        entry: OriginEntry,
        batch: &ZoneBatch,
        at: Timestamp,
    ) -> Effect {
        let to = entry.index;
        let partition = self.partitions.get(origin);
        let cursor = partition.map_or(0, |p| p.cursor);
        let log = partition.and_then(|p| p.log.as_deref());
        let mut changed = Vec::new();
        match batch {
            ZoneBatch::Changes { from, .. } if *from != cursor => {
                return Effect::new(
                    Err(RegistryError::bad(
                        "cursor",
                        &format!("zone {origin} is applied up to {cursor}, not {from}"),
                    )),
                    Vec::new(),
                );
            }
            ZoneBatch::Changes { .. }
                if log.is_some() && entry.log.is_some() && log != entry.log.as_deref() =>
            {
                return Effect::new(
                    Err(RegistryError::bad(
                        "cursor",
                        &format!("changes of another log of zone {origin}: a full copy is due"),
                    )),
                    Vec::new(),
                );
            }
            ZoneBatch::Changes { changes, .. } => {
                for change in changes {
                    match change {
                        ZoneChange::Upsert(instance) => {
                            changed.push(self.put_foreign(origin, instance.clone(), at));
                        }
                        ZoneChange::Renew {
                            key,
                            renew_timestamp,
                        } => self.renew_foreign(origin, key, *renew_timestamp),
                        ZoneChange::Remove(key) => {
                            if self.remove_foreign(origin, key, at) {
                                changed.push(AppKey::new(&key.env, &key.appid));
                            }
                        }
                    }
                }
            }
            ZoneBatch::FullPart {
                part,
                of,
                instances,
            } => {
                let fits = *part == 0
                    || self
                        .partitions
                        .get(origin)
                        .and_then(|p| p.staged.as_ref())
                        .is_some_and(|s| s.to == to && s.next == *part);
                if !fits {
                    return Effect::new(
                        Err(RegistryError::bad(
                            "zone",
                            &format!("part {part} of a copy of zone {origin} out of order"),
                        )),
                        Vec::new(),
                    );
                }
                let partition = self.partitions.entry(origin.to_string()).or_default();
                let mut staged = match partition.staged.take() {
                    Some(s) if *part > 0 => s,
                    _ => Staged {
                        to,
                        next: 0,
                        instances: Vec::new(),
                    },
                };
                staged.instances.extend(instances.iter().cloned());
                staged.next = part + 1;
                if staged.next < *of {
                    partition.staged = Some(staged);
                    return Effect::new(Ok(Applied::Done), Vec::new());
                }
                changed = self.replace_partition(origin, &staged.instances, at);
            }
            ZoneBatch::Full(instances) => {
                changed = self.replace_partition(origin, instances, at);
            }
        }
        let partition = self.partitions.entry(origin.to_string()).or_default();
        partition.cursor = to;
        partition.term = entry.term;
        if entry.log.is_some() {
            partition.log = entry.log;
        }
        partition.applied_at = at;
        changed.sort();
        changed.dedup();
        Effect::new(Ok(Applied::Done), changed)
    }

    /// Makes `origin`'s partition exactly `instances`; the apps changed.
    fn replace_partition(
        &mut self,
        origin: &str,
        instances: &[Instance],
        at: Timestamp,
    ) -> Vec<AppKey> {
        let mut changed = Vec::new();
        let old = self
            .partitions
            .get(origin)
            .map(|p| p.keys.clone())
            .unwrap_or_default();
        let new: std::collections::BTreeSet<InstanceKey> =
            instances.iter().map(Instance::key).collect();
        for key in old.difference(&new) {
            if self.remove_foreign(origin, key, at) {
                changed.push(AppKey::new(&key.env, &key.appid));
            }
        }
        for instance in instances {
            changed.push(self.put_foreign(origin, instance.clone(), at));
        }
        if let Some(p) = self.partitions.get_mut(origin) {
            p.staged = None;
        }
        changed
    }

    /// Stores another zone's instance as it is there.
    fn put_foreign(&mut self, origin: &str, instance: Instance, at: Timestamp) -> AppKey {
        let key = instance.key();
        let app_key = self.put_as_held(instance, at);
        self.partitions
            .entry(origin.to_string())
            .or_default()
            .keys
            .insert(key);
        app_key
    }

    /// Stores an instance exactly as another registry holds it (another
    /// zone, an original discovery): only its app's change timestamp moves
    /// here, so this registry's polls wake.
    fn put_as_held(&mut self, instance: Instance, at: Timestamp) -> AppKey {
        let app = self
            .envs
            .entry(instance.env.to_string())
            .or_default()
            .entry(instance.appid.to_string())
            .or_default();
        let app = Arc::make_mut(app);
        self.high_water = app.advance(at.max(self.high_water.saturating_add(1)));
        if app.get(&instance.zone, &instance.hostname).is_none() {
            self.instances += 1;
        }
        let app_key = AppKey::new(&instance.env, &instance.appid);
        app.insert(instance);
        app_key
    }

    fn renew_foreign(&mut self, origin: &str, key: &InstanceKey, renew_timestamp: Timestamp) {
        if !self
            .partitions
            .get(origin)
            .is_some_and(|p| p.keys.contains(key))
        {
            return;
        }
        if let Some(app) = self
            .envs
            .get_mut(&key.env)
            .and_then(|a| a.get_mut(&key.appid))
            .map(Arc::make_mut)
        {
            app.update(&key.zone, &key.hostname, |instance| {
                instance.renew_timestamp = renew_timestamp;
            });
        }
    }

    fn remove_foreign(&mut self, origin: &str, key: &InstanceKey, at: Timestamp) -> bool {
        let Some(partition) = self.partitions.get_mut(origin) else {
            return false;
        };
        if !partition.keys.remove(key) {
            return false;
        }
        self.remove(key, at).is_some()
    }

    /// Every origin zone's partition here.
    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    /// The instances of one partition: `Some(zone)` another zone's, `None`
    /// this zone's own (every instance no other zone holds), sorted by key.
    pub fn partition_instances(&self, origin: Option<&str>) -> Vec<&Instance> {
        let mut instances: Vec<&Instance> = match origin {
            Some(zone) => self
                .partitions
                .get(zone)
                .map(|p| p.keys.iter().filter_map(|k| self.get(k)).collect())
                .unwrap_or_default(),
            None => {
                let kept = !self.partitions.is_empty() || !self.upstreams.is_empty();
                self.instances()
                    .filter(|i| !kept || !self.is_foreign(&i.key()))
                    .collect()
            }
        };
        instances.sort_by_key(|i| i.key());
        instances
    }

    /// SHA-256 of one partition's instances (see [`partition_instances`]),
    /// in hex: the origin's own partition and every other zone's copy of
    /// it are equal once they stand at the same cursor.
    ///
    /// [`partition_instances`]: Registry::partition_instances
    pub fn partition_digest(&self, origin: Option<&str>) -> (usize, String) {
        use sha2::Digest;
        let instances = self.partition_instances(origin);
        let mut hasher = sha2::Sha256::new();
        let _ = serde_json::to_writer(&mut hasher, &instances);
        (instances.len(), format!("{:x}", hasher.finalize()))
    }

    /// The rendered fetch data of one app.
    pub fn fetch(
        &self,
        env: &str,
        appid: &str,
        zone: Option<&str>,
        mask: StatusMask,
    ) -> Result<Bytes, FetchMiss> {
        let app = self.app(env, appid).ok_or(FetchMiss::UnknownApp)?;
        app.render(zone, mask, self.rules(env, appid), &self.rendered)
            .ok_or(FetchMiss::UnknownZone {
                latest_timestamp: app.latest_timestamp(),
            })
    }

    /// What a long poll holding `since` for this app should do.
    pub fn poll(&self, env: &str, appid: &str, zone: Option<&str>, since: Timestamp) -> PollView {
        let Some(app) = self.app(env, appid) else {
            return PollView::Unknown;
        };
        if app.latest_timestamp() <= since || !app.has_up(zone) {
            return PollView::Unchanged;
        }
        match app.render(zone, StatusMask::UP, self.rules(env, appid), &self.rendered) {
            Some(bytes) => PollView::Changed(bytes),
            None => PollView::Unchanged,
        }
    }

    /// The sum of every instance's hash (kept as they change): what a
    /// snapshot records of the instances it holds, checked when it is read
    /// back.
    pub fn instances_sum(&self) -> digest::Sum {
        self.envs
            .values()
            .flat_map(|apps| apps.values())
            .fold(digest::Sum::default(), |sum, app| sum.plus(app.digest()))
    }

    /// Every app's digest (the sum of its instances' hashes, kept as they
    /// change), sorted by env and appid: where two replicas differ.
    pub fn app_digests(&self) -> Vec<AppDigest> {
        let mut apps: Vec<AppDigest> = self
            .envs
            .iter()
            .flat_map(|(env, apps)| {
                apps.iter().map(move |(appid, app)| AppDigest {
                    env: env.clone(),
                    appid: appid.clone(),
                    instances: app.len(),
                    latest_timestamp: app.latest_timestamp(),
                    digest: app.digest(),
                })
            })
            .collect();
        apps.sort_by(|a, b| (&a.env, &a.appid).cmp(&(&b.env, &b.appid)));
        apps
    }

    /// The registry's digest, in hex: equal on every replica that applied
    /// the same log prefix, and different wherever they differ. Its first
    /// half is the sum of every instance's hash (kept as they change, see
    /// [`digest`]); its second, SHA-256 (first 16 bytes) of the rest of
    /// the replicated state in its snapshot form: each app's name, change
    /// timestamp and digest, other zones' partitions, schedules set at run
    /// time, the log's name, a restore's staged parts. It costs a pass over
    /// the apps, not over the instances.
    pub fn digest(&self) -> String {
        self.digest_with_apps().0
    }

    /// [`Registry::digest`], and the apps' digests it was made of.
    pub fn digest_with_apps(&self) -> (String, Vec<AppDigest>) {
        use sha2::Digest as _;
        let apps = self.app_digests();
        let instances = apps
            .iter()
            .fold(digest::Sum::default(), |sum, a| sum.plus(a.digest));
        #[derive(Serialize)]
        struct Rest<'a> {
            high_water: Timestamp,
            apps: &'a [AppDigest],
            partitions: &'a Partitions,
            schedules: &'a [Schedule],
            log: Option<&'a str>,
            restoring: Option<&'a restore::Staged>,
            #[serde(skip_serializing_if = "upstream::Upstreams::is_empty")]
            upstreams: &'a upstream::Upstreams,
        }
        let mut hasher = sha2::Sha256::new();
        // Writing our own types into a hasher cannot fail.
        let _ = serde_json::to_writer(
            &mut hasher,
            &Rest {
                high_water: self.high_water,
                apps: &apps,
                partitions: &self.partitions,
                schedules: self.set_schedules.all(),
                log: self.log.as_deref(),
                restoring: self.restoring.as_deref(),
                upstreams: &self.upstreams,
            },
        );
        let rest = hasher.finalize();
        let rest: String = rest[..16].iter().map(|b| format!("{b:02x}")).collect();
        (format!("{}{rest}", instances.hex()), apps)
    }

    /// Changes one instance behind the log's back: how tests make a
    /// replica diverge (the `diverge` fail point).
    #[cfg(feature = "failpoints")]
    pub fn tamper(&mut self) {
        let mut apps: Vec<_> = self
            .envs
            .values_mut()
            .flat_map(|a| a.values_mut())
            .collect();
        apps.sort_by_key(|a| a.instances().next().map(Instance::key));
        if let Some(app) = apps.into_iter().next() {
            let app = Arc::make_mut(app);
            let Some((zone, host)) = app
                .instances()
                .next()
                .map(|i| (i.zone.to_string(), i.hostname.to_string()))
            else {
                return;
            };
            app.update(&zone, &host, |i| {
                i.version = format!("{}~", &*i.version).into()
            });
        }
    }

    /// The whole state in a form that survives serialization.
    pub fn to_snapshot(&self) -> RegistrySnapshot {
        let mut apps: Vec<AppSnapshot> = self
            .envs
            .iter()
            .flat_map(|(env, apps)| {
                apps.iter().map(move |(appid, app)| AppSnapshot {
                    env: env.clone(),
                    appid: appid.clone(),
                    latest_timestamp: app.latest_timestamp(),
                    instances: app.instances().cloned().collect(),
                })
            })
            .collect();
        apps.sort_by(|a, b| (&a.env, &a.appid).cmp(&(&b.env, &b.appid)));
        RegistrySnapshot {
            high_water: self.high_water,
            apps,
            partitions: self.partitions.clone(),
            schedules: self.set_schedules.all().to_vec(),
            log: self.log.clone(),
            restoring: self.restoring.clone(),
            upstreams: self.upstreams.clone(),
        }
    }

    /// Every app as `(env, appid, app)`, in no order, shared: read at
    /// leisure, away from the registry's lock, as it is now.
    pub fn shared_apps(&self) -> Vec<(String, String, Arc<App>)> {
        self.envs
            .iter()
            .flat_map(|(env, apps)| {
                apps.iter()
                    .map(move |(appid, app)| (env.clone(), appid.clone(), app.clone()))
            })
            .collect()
    }

    /// The whole state as it is now, for a snapshot written while the
    /// registry goes on changing: it shares every app rather than copying
    /// it (a change then copies that one app), and serializes exactly as
    /// [`Registry::to_snapshot`] does.
    pub fn freeze(&self) -> Frozen {
        let mut apps = self.shared_apps();
        apps.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Frozen {
            high_water: self.high_water,
            apps,
            partitions: self.partitions.clone(),
            schedules: self.set_schedules.all().to_vec(),
            log: self.log.clone(),
            restoring: self.restoring.clone(),
            upstreams: self.upstreams.clone(),
        }
    }

    /// A backup restored through the log: replaces the whole state with
    /// the backup's. Every app gets one fresh timestamp (later than any
    /// before, here and in the backup) so every poll, whatever it last saw,
    /// sees a change; every instance counts as renewed at `at`, so it has
    /// a whole window to renew to this cluster before eviction.
    fn restore_backup(&mut self, backup: &RegistrySnapshot, at: Timestamp) -> Effect {
        let mut changed: Vec<AppKey> = self
            .envs
            .iter()
            .flat_map(|(env, apps)| apps.keys().map(move |appid| AppKey::new(env, appid)))
            .collect();
        let stamp = at.max(self.high_water.max(backup.high_water).saturating_add(1));
        let mut restored = backup.clone();
        for app in &mut restored.apps {
            app.latest_timestamp = stamp;
            for i in &mut app.instances {
                i.renew_timestamp = i.renew_timestamp.max(at);
                i.latest_timestamp = i.latest_timestamp.min(stamp);
            }
            changed.push(AppKey::new(&app.env, &app.appid));
        }
        restored.high_water = stamp;
        // Other zones' partitions come back at cursor 0: each origin then
        // sends a full copy, which replaces what the backup held of it.
        for partition in restored.partitions.values_mut() {
            partition.cursor = 0;
        }
        // The backup's log is not this one: this log keeps its name; and
        // a restore the backup's cluster had under way is not this one's.
        restored.log = self.log.clone();
        restored.restoring = None;
        self.restore(restored);
        changed.sort();
        changed.dedup();
        Effect::new(Ok(Applied::Done), changed)
    }

    /// Replaces the whole state with a snapshot's.
    pub fn restore(&mut self, snapshot: impl Into<Thawed>) {
        let thawed = snapshot.into();
        self.envs = thawed.envs;
        self.instances = thawed.instances;
        self.high_water = thawed.high_water;
        self.partitions = thawed.partitions;
        self.set_schedules = Schedules::new(thawed.schedules);
        self.log = thawed.log;
        self.restoring = thawed.restoring;
        self.upstreams = thawed.upstreams;
    }
}

/// The serialized form of the registry, as stored in Raft snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    pub high_water: Timestamp,
    pub apps: Vec<AppSnapshot>,
    /// Other zones' partitions: which instances each holds, and its cursor.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub partitions: Partitions,
    /// Schedules set at run time.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub schedules: Vec<Schedule>,
    /// The identity of this zone's log, once named.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub log: Option<String>,
    /// The parts of a restore under way.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub restoring: Option<Box<restore::Staged>>,
    /// Original discovery clusters followed: what was imported from each
    /// and exported to it.
    #[serde(default, skip_serializing_if = "crate::wire::omitted")]
    pub upstreams: upstream::Upstreams,
}

impl RegistrySnapshot {
    /// SHA-256 of the snapshot's JSON, in hex. The form is canonical (apps
    /// sorted by env and appid, instances by zone and hostname, metadata by
    /// key) and holds every replicated field, so two replicas that applied
    /// the same log prefix have the same digest, and any divergence shows.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        // Writing our own types into a hasher cannot fail.
        let _ = serde_json::to_writer(&mut hasher, self);
        format!("{:x}", hasher.finalize())
    }
}

/// The registry at one point, sharing its apps ([`Registry::freeze`]);
/// serializes as the [`RegistrySnapshot`] of that point.
pub struct Frozen {
    high_water: Timestamp,
    /// `(env, appid, app)`, sorted by env and appid.
    apps: Vec<(String, String, Arc<App>)>,
    partitions: Partitions,
    schedules: Vec<Schedule>,
    log: Option<String>,
    restoring: Option<Box<restore::Staged>>,
    upstreams: upstream::Upstreams,
}

impl Frozen {
    /// [`Registry::instances_sum`] of the registry frozen.
    pub fn instances_sum(&self) -> digest::Sum {
        self.apps
            .iter()
            .fold(digest::Sum::default(), |sum, (_, _, app)| {
                sum.plus(app.digest())
            })
    }
}

impl Serialize for Frozen {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// [`RegistrySnapshot`]'s fields, in its order and with its rules.
        #[derive(Serialize)]
        struct Fields<'a> {
            high_water: Timestamp,
            apps: Apps<'a>,
            #[serde(skip_serializing_if = "no_partitions")]
            partitions: &'a Partitions,
            #[serde(skip_serializing_if = "no_schedules")]
            schedules: &'a [Schedule],
            #[serde(skip_serializing_if = "crate::wire::omitted")]
            log: Option<&'a str>,
            #[serde(skip_serializing_if = "crate::wire::omitted")]
            restoring: Option<&'a restore::Staged>,
            #[serde(skip_serializing_if = "no_upstreams")]
            upstreams: &'a upstream::Upstreams,
        }
        // JSON leaves these out when empty; a frame never does.
        fn no_partitions(p: &&Partitions) -> bool {
            crate::wire::omits(p.is_empty())
        }
        fn no_schedules(s: &&[Schedule]) -> bool {
            crate::wire::omits(s.is_empty())
        }
        fn no_upstreams(u: &&upstream::Upstreams) -> bool {
            crate::wire::omits(u.is_empty())
        }
        struct Apps<'a>(&'a [(String, String, Arc<App>)]);
        impl Serialize for Apps<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(env, appid, app)| AppFields {
                    env,
                    appid,
                    latest_timestamp: app.latest_timestamp(),
                    instances: Instances(app),
                }))
            }
        }
        /// [`AppSnapshot`]'s fields.
        #[derive(Serialize)]
        struct AppFields<'a> {
            env: &'a str,
            appid: &'a str,
            latest_timestamp: Timestamp,
            instances: Instances<'a>,
        }
        struct Instances<'a>(&'a App);
        impl Serialize for Instances<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // The count first: a frame writes it before the items.
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for instance in self.0.instances() {
                    seq.serialize_element(instance)?;
                }
                seq.end()
            }
        }
        Fields {
            high_water: self.high_water,
            apps: Apps(&self.apps),
            partitions: &self.partitions,
            schedules: &self.schedules,
            log: self.log.as_deref(),
            restoring: self.restoring.as_deref(),
            upstreams: &self.upstreams,
        }
        .serialize(serializer)
    }
}

/// One app in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub env: String,
    pub appid: String,
    pub latest_timestamp: Timestamp,
    pub instances: Vec<Instance>,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

#[cfg(test)]
mod zones_tests;
