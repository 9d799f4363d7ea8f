//! One `(env, appid)`: its instances by zone, its change timestamp, and the
//! rendered fetch answers while its registry keeps them (see `super::rendered`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::digest::Sum;
use super::instance::{Instance, StatusMask, Timestamp};
use super::name::Name;
use super::rendered::{Answers, Slot};
use super::scheduler::SchedulerRule;

/// The instances of one app, by zone then hostname (sorted, so every replica
/// renders the same bytes). Cloned only when changed while a snapshot
/// being written holds it (the registry keeps apps behind an `Arc`).
#[derive(Clone, Debug, Default)]
pub struct App {
    zones: BTreeMap<Name, Hosts>,
    latest_timestamp: Timestamp,
    /// Rendered all-zone fetch data, one slot per status mask 1..=3, while
    /// its registry keeps it (see [`super::rendered`]).
    rendered: [Slot; 3],
    /// The sum of its instances' hashes, kept as they change.
    digest: Sum,
}

/// One zone's instances, by hostname (the key shares the instance's).
///
/// Each behind its own `Arc`, for two reasons. A B-tree node keeps room
/// for eleven entries and is often half full: 8 bytes a slot this way, 184
/// inline. And an app a snapshot being written still holds is copied when
/// it changes (`Arc::make_mut` on the app): the copy is then a map of
/// pointers, and only the instance that changed is copied with it. Boxed,
/// every instance of the app was copied; under a steady load of writes
/// that touches most apps while a snapshot is written, the registry's
/// memory nearly doubled for the second it took.
type Hosts = BTreeMap<Name, Arc<Instance>>;

/// The `data` of a fetch answer, in the shape clients parse.
#[derive(Serialize)]
pub struct FetchData<'a> {
    pub instances: BTreeMap<&'a str, Vec<&'a Instance>>,
    pub latest_timestamp: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<&'a [SchedulerRule]>,
}

impl App {
    pub fn latest_timestamp(&self) -> Timestamp {
        self.latest_timestamp
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn get(&self, zone: &str, hostname: &str) -> Option<&Instance> {
        self.zones.get(zone)?.get(hostname).map(|i| &**i)
    }

    /// Changes one instance with `change`, if the app has it; its hash in
    /// the app's digest follows.
    pub fn update<R>(
        &mut self,
        zone: &str,
        hostname: &str,
        change: impl FnOnce(&mut Instance) -> R,
    ) -> Option<R> {
        let instance = Arc::make_mut(self.zones.get_mut(zone)?.get_mut(hostname)?);
        self.digest.remove(instance);
        let result = change(instance);
        self.digest.add(instance);
        self.invalidate();
        Some(result)
    }

    /// The sum of its instances' hashes ([`Sum`]).
    pub fn digest(&self) -> Sum {
        self.digest
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.zones.values().flat_map(|z| z.values().map(|i| &**i))
    }

    pub fn len(&self) -> usize {
        self.zones.values().map(BTreeMap::len).sum()
    }

    pub fn has_zone(&self, zone: &str) -> bool {
        self.zones.contains_key(zone)
    }

    /// Moves the change timestamp forward to `at`, or by one nanosecond when
    /// `at` is not above it, and returns the new value.
    pub fn advance(&mut self, at: Timestamp) -> Timestamp {
        self.invalidate();
        self.latest_timestamp = at.max(self.latest_timestamp.saturating_add(1));
        self.latest_timestamp
    }

    /// Restores the change timestamp from a snapshot.
    pub fn set_latest_timestamp(&mut self, ts: Timestamp) {
        self.invalidate();
        self.latest_timestamp = ts;
    }

    /// Adds or replaces an instance. What it has in common with the app's
    /// other instances (zone, env, appid, region, version, metadata) is
    /// kept once, shared with them, and its hostname with its key.
    pub fn insert(&mut self, mut instance: Instance) {
        self.invalidate();
        if let Some(first) = self.zones.values().next().and_then(|h| h.values().next()) {
            instance.share_with(first);
        }
        if let Some((zone, _)) = self.zones.get_key_value(&*instance.zone) {
            instance.zone = zone.clone();
        }
        let hosts = self.zones.entry(instance.zone.clone()).or_default();
        if let Some((hostname, _)) = hosts.get_key_value(&*instance.hostname) {
            instance.hostname = hostname.clone();
        }
        self.digest.add(&instance);
        if let Some(replaced) = hosts.insert(instance.hostname.clone(), Arc::new(instance)) {
            self.digest.remove(&replaced);
        }
    }

    pub fn remove(&mut self, zone: &str, hostname: &str) -> Option<Instance> {
        let hosts = self.zones.get_mut(zone)?;
        let removed = hosts.remove(hostname)?;
        if hosts.is_empty() {
            self.zones.remove(zone);
        }
        self.digest.remove(&removed);
        self.invalidate();
        Some(Arc::unwrap_or_clone(removed))
    }

    /// Whether any instance in scope (one zone, or all) is up: what makes a
    /// poll answer.
    pub fn has_up(&self, zone: Option<&str>) -> bool {
        self.in_scope(zone)
            .flat_map(|(_, hosts)| hosts.values())
            .any(|i| StatusMask::UP.admits(i.status))
    }

    /// The fetch data for a zone (or all zones) filtered by status; `None`
    /// when a zone is named and the app has no instance there.
    pub fn fetch_data<'a>(
        &'a self,
        zone: Option<&str>,
        mask: StatusMask,
        scheduler: Option<&'a [SchedulerRule]>,
    ) -> Option<FetchData<'a>> {
        match zone {
            Some(z) if !self.zones.contains_key(z) => None,
            _ => Some(self.data(zone, mask, scheduler)),
        }
    }

    /// The rendered JSON of `fetch_data`, kept among `answers` for the
    /// all-zone case.
    pub fn render(
        &self,
        zone: Option<&str>,
        mask: StatusMask,
        scheduler: Option<&[SchedulerRule]>,
        answers: &Answers,
    ) -> Option<Bytes> {
        match zone {
            None => {
                let slot = &self.rendered[mask.bits() as usize - 1];
                Some(slot.get_or_render(answers, || encode(&self.data(None, mask, scheduler))))
            }
            Some(_) => self.fetch_data(zone, mask, scheduler).map(|d| encode(&d)),
        }
    }

    fn data<'a>(
        &'a self,
        zone: Option<&str>,
        mask: StatusMask,
        scheduler: Option<&'a [SchedulerRule]>,
    ) -> FetchData<'a> {
        let instances = self
            .in_scope(zone)
            .map(|(z, hosts)| {
                let admitted = hosts
                    .values()
                    .map(|i| &**i)
                    .filter(|i| mask.admits(i.status))
                    .collect();
                (z.as_str(), admitted)
            })
            .collect();
        FetchData {
            instances,
            latest_timestamp: self.latest_timestamp,
            scheduler,
        }
    }

    fn in_scope<'a>(&'a self, zone: Option<&str>) -> impl Iterator<Item = (&'a Name, &'a Hosts)> {
        // Not boxed: every woken poll asks, and a box is an allocation.
        let named = zone.and_then(|z| self.zones.get_key_value(z));
        let every = zone.is_none().then(|| self.zones.iter());
        named.into_iter().chain(every.into_iter().flatten())
    }

    fn invalidate(&mut self) {
        for slot in &mut self.rendered {
            slot.clear();
        }
    }
}

/// Serializes fetch data; our own types always serialize.
fn encode(data: &FetchData) -> Bytes {
    Bytes::from(serde_json::to_vec(data).unwrap_or_default())
}
