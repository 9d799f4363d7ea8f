//! An original discovery cluster this cluster follows while a fleet moves
//! over (see `docs/migration.md`): the instances imported from it, kept
//! apart from this cluster's own, and which of this cluster's own
//! instances were exported to it.
//!
//! Ownership of one instance key, whoever holds it:
//! - this cluster's own (registered here): exported to the original, never
//!   imported back, unless the original holds a copy that is newer (a
//!   later `dirty_timestamp`) and differs in what it states: then the
//!   provider registered there again, and the original's copy wins;
//! - imported (in [`Upstream::keys`]): the original's to change; a
//!   register here takes it over (the provider moved), a renew here finds
//!   nothing (so the provider registers here), a cancel or set here is
//!   refused before the log;
//! - `infra.discovery` never crosses: each side publishes its own nodes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::instance::{Instance, InstanceKey, Timestamp};
use super::validate::CLUSTER_APPID;
use super::zones::{OwnChanges, ZoneChange};
use super::{AppKey, Applied, Effect, Registry, RegistryError};

/// What this cluster holds of one original cluster (replicated).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// Batches applied from it so far: a batch names the count it follows,
    /// so one proposed twice (two leaders) is applied once.
    pub cursor: u64,
    /// When (the proposing leader's clock) the last batch was applied.
    pub applied_at: Timestamp,
    /// The instances imported from it.
    pub keys: BTreeSet<InstanceKey>,
    /// This cluster's own instances registered there, each with the
    /// `dirty_timestamp` it had when it was: a changed one is registered
    /// again, one gone from here is cancelled there, whichever node
    /// leads. Written as a list of `[key, timestamp]` pairs: JSON keys
    /// are strings only.
    #[serde(with = "key_pairs")]
    pub exported: BTreeMap<InstanceKey, Timestamp>,
}

/// A map keyed by instance key, written as a list of pairs. Earlier builds
/// wrote it as a JSON object, which they could do only while it was empty
/// (a non-empty one failed every snapshot and backup): an object is still
/// read.
mod key_pairs {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::de::{MapAccess, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{InstanceKey, Timestamp};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<InstanceKey, Timestamp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    struct Pairs;

    impl<'de> Visitor<'de> for Pairs {
        type Value = BTreeMap<InstanceKey, Timestamp>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of [instance key, timestamp] pairs")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some((key, at)) = seq.next_element::<(InstanceKey, Timestamp)>()? {
                map.insert(key, at);
            }
            Ok(map)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some((key, at)) = entries.next_entry::<InstanceKey, Timestamp>()? {
                map.insert(key, at);
            }
            Ok(map)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<InstanceKey, Timestamp>, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(Pairs)
        } else {
            d.deserialize_seq(Pairs)
        }
    }
}

/// Every original cluster followed, by the name the configuration gives it.
pub type Upstreams = BTreeMap<String, Upstream>;

/// Whether two copies of one instance state the same (timestamps aside):
/// the original's copy of an exported instance is this cluster's own.
pub fn same_statement(a: &Instance, b: &Instance) -> bool {
    a.region == b.region
        && a.addrs == b.addrs
        && a.version == b.version
        && a.metadata == b.metadata
        && a.status == b.status
}

/// Whether the original's copy of one of this cluster's own instances
/// wins over it: newer (a later `dirty_timestamp`) and stating something
/// else, as when the provider registered there again. An exported copy
/// (the same statement, whatever its stamps) never does.
pub fn theirs_wins(own: &Instance, theirs: &Instance) -> bool {
    theirs.dirty_timestamp > own.dirty_timestamp && !same_statement(own, theirs)
}

impl Registry {
    /// Which original holds `key`, if one does.
    pub fn upstream_of(&self, key: &InstanceKey) -> Option<&str> {
        self.upstreams
            .iter()
            .find(|(_, u)| u.keys.contains(key))
            .map(|(name, _)| name.as_str())
    }

    /// Every original followed, as this cluster holds it.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// A refusal for a cancel or set here of an instance imported from an
    /// original: it is the original's to change.
    pub(super) fn imported(&self, key: impl FnOnce() -> InstanceKey) -> Option<RegistryError> {
        if self.upstreams.is_empty() {
            return None;
        }
        let key = key();
        let name = self.upstream_of(&key)?;
        Some(RegistryError::bad(
            "hostname",
            &format!(
                "{} is imported from the original discovery ({name}): change it there",
                key.hostname
            ),
        ))
    }

    /// A register here of an imported instance: the provider moved, this
    /// cluster owns it from now on.
    pub(super) fn take_over(&mut self, key: &InstanceKey) {
        for upstream in self.upstreams.values_mut() {
            upstream.keys.remove(key);
        }
    }

    /// Applies one batch of the original `name`'s changes, if it follows
    /// the last one applied (else it was applied already: nothing changes).
    /// An own instance the original's copy wins over leaves this zone's
    /// own changes (`own`, streamed to other zones) as removed.
    pub(super) fn upstream_apply(
        &mut self,
        name: &str,
        from: u64,
        changes: &[ZoneChange],
        at: Timestamp,
        own: &mut OwnChanges,
    ) -> Effect {
        let cursor = self.upstreams.get(name).map_or(0, |u| u.cursor);
        if from != cursor {
            return Effect::new(
                Err(RegistryError::bad(
                    "cursor",
                    &format!("{name} is applied up to batch {cursor}, not {from}"),
                )),
                Vec::new(),
            );
        }
        let mut changed = Vec::new();
        for change in changes {
            match change {
                ZoneChange::Upsert(instance) => {
                    let was_own =
                        self.get(&instance.key()).is_some() && !self.is_foreign(&instance.key());
                    if let Some(app) = self.import(name, instance, at) {
                        if was_own {
                            own.push(ZoneChange::Remove(instance.key()));
                        }
                        changed.push(app);
                    }
                }
                ZoneChange::Renew {
                    key,
                    renew_timestamp,
                } => {
                    if self.upstream_of(key) == Some(name) {
                        if let Some(app) = self
                            .envs
                            .get_mut(&key.env)
                            .and_then(|a| a.get_mut(&key.appid))
                            .map(std::sync::Arc::make_mut)
                        {
                            app.update(&key.zone, &key.hostname, |i| {
                                i.renew_timestamp = *renew_timestamp
                            });
                        }
                    }
                }
                ZoneChange::Remove(key) => {
                    let held = self
                        .upstreams
                        .get_mut(name)
                        .is_some_and(|u| u.keys.remove(key));
                    if held && self.remove(key, at).is_some() {
                        changed.push(AppKey::new(&key.env, &key.appid));
                    }
                }
            }
        }
        let upstream = self.upstreams.entry(name.to_string()).or_default();
        upstream.cursor = from + 1;
        upstream.applied_at = at;
        changed.sort();
        changed.dedup();
        Effect::new(Ok(Applied::Done), changed)
    }

    /// Stores one of the original's instances as the original holds it,
    /// unless another owner keeps the key (see the module's rules).
    fn import(&mut self, name: &str, instance: &Instance, at: Timestamp) -> Option<AppKey> {
        if *instance.appid == *CLUSTER_APPID {
            return None;
        }
        let key = instance.key();
        match self.upstream_of(&key) {
            Some(holder) if holder == name => {}
            Some(_) => return None,
            None => {
                if self.is_foreign(&key) {
                    return None;
                }
                if self
                    .get(&key)
                    .is_some_and(|own| !theirs_wins(own, instance))
                {
                    return None;
                }
            }
        }
        let app_key = self.put_as_held(instance.clone(), at);
        self.upstreams
            .entry(name.to_string())
            .or_default()
            .keys
            .insert(key);
        Some(app_key)
    }

    /// Records which own instances the leader registered with the original
    /// `name` (with the `dirty_timestamp` they had) and which it withdrew.
    pub(super) fn upstream_exported(
        &mut self,
        name: &str,
        exported: &[(InstanceKey, Timestamp)],
        withdrawn: &[InstanceKey],
    ) -> Effect {
        let upstream = self.upstreams.entry(name.to_string()).or_default();
        for (key, dirty) in exported {
            upstream.exported.insert(key.clone(), *dirty);
        }
        for key in withdrawn {
            upstream.exported.remove(key);
        }
        Effect::new(Ok(Applied::Done), Vec::new())
    }

    /// Drops everything held of the original `name`: its instances leave
    /// this registry, and the record of what was exported there goes.
    pub(super) fn upstream_forget(&mut self, name: &str, at: Timestamp) -> Effect {
        let Some(upstream) = self.upstreams.remove(name) else {
            return Effect::new(Err(RegistryError::NotFound), Vec::new());
        };
        let mut changed = Vec::new();
        for key in &upstream.keys {
            if self.remove(key, at).is_some() {
                changed.push(AppKey::new(&key.env, &key.appid));
            }
        }
        changed.sort();
        changed.dedup();
        Effect::new(Ok(Applied::Done), changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Command, Registration, Schedules, Status};

    fn registration(addr: &str) -> Registration {
        Registration {
            region: "sh".into(),
            zone: "sh001".into(),
            env: "prod".into(),
            appid: "a".into(),
            hostname: "h1".into(),
            addrs: vec![addr.into()],
            version: "v1".into(),
            metadata: Default::default(),
            status: Status::Up,
        }
    }

    #[test]
    fn an_own_instance_the_original_wins_leaves_the_zones_stream_as_removed() {
        let mut r = Registry::new(Schedules::default());
        r.stream_own(true);
        r.apply(&Command::Register {
            registration: registration("grpc://mine:1"),
            at: 10,
        });
        let theirs = Instance::new(registration("grpc://theirs:1"), 20);
        let effect = r.apply(&Command::UpstreamApply {
            upstream: "old".into(),
            from: 0,
            changes: vec![ZoneChange::Upsert(theirs.clone())],
            at: 30,
        });
        assert!(effect.outcome.is_ok());
        assert_eq!(
            effect.own,
            OwnChanges::Some(vec![ZoneChange::Remove(theirs.key())]),
            "other zones drop it from this zone's partition"
        );
        assert_eq!(r.upstream_of(&theirs.key()), Some("old"));
        // The same batch again (another leader): applied once.
        let again = r.apply(&Command::UpstreamApply {
            upstream: "old".into(),
            from: 0,
            changes: vec![ZoneChange::Upsert(theirs)],
            at: 40,
        });
        assert!(again.outcome.is_err());
        assert_eq!(r.upstreams()["old"].cursor, 1);
    }
}
