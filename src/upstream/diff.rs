//! What to change here so that what is imported of an original equals
//! what the original holds: plain logic over two lists, no I/O.

use std::collections::BTreeMap;

use crate::registry::upstream::{same_statement, theirs_wins};
use crate::registry::zones::ZoneChange;
use crate::registry::{instance_ok, Instance, InstanceKey, Limits, Registry, CLUSTER_APPID};

/// Whether an instance of the original would change what is held here:
/// its statement or its change timestamps (a renew alone does not).
fn differs(held: &Instance, theirs: &Instance) -> bool {
    !same_statement(held, theirs)
        || held.dirty_timestamp != theirs.dirty_timestamp
        || held.latest_timestamp != theirs.latest_timestamp
        || held.up_timestamp != theirs.up_timestamp
}

/// What a comparison with the original found.
#[derive(Debug, Default)]
pub struct Diff {
    /// What to apply here.
    pub changes: Vec<ZoneChange>,
    /// Their instances past this cluster's limits, not imported.
    pub refused: usize,
    /// Own instances exported there that the original no longer holds
    /// (cancelled there by a provider's old process, say): to register
    /// there again at once.
    pub lost: Vec<InstanceKey>,
}

/// The changes that bring what `registry` imported of the original `name`
/// within `scope` (every instance, or some apps) to `theirs`, what the
/// original holds in that scope. Left out, as applying would leave them
/// out: `infra.discovery` (each side publishes its own nodes), another
/// zone's or original's instances, this cluster's own unless the
/// original's copy is newer and states something else, and instances
/// past this cluster's limits (counted).
pub fn changes(
    registry: &Registry,
    name: &str,
    scope: impl Fn(&InstanceKey) -> bool,
    theirs: Vec<Instance>,
    limits: &Limits,
) -> Diff {
    let held: BTreeMap<&InstanceKey, &Instance> = registry
        .upstreams()
        .get(name)
        .map(|u| {
            u.keys
                .iter()
                .filter(|k| scope(k))
                .filter_map(|k| registry.get(k).map(|i| (k, i)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut refused = 0;
    let mut seen = std::collections::BTreeSet::new();
    let mut theirs_keys = std::collections::BTreeSet::new();
    for instance in theirs {
        if *instance.appid == *CLUSTER_APPID {
            continue;
        }
        let key = instance.key();
        theirs_keys.insert(key.clone());
        if instance_ok(&instance, limits).is_err() {
            refused += 1;
            continue;
        }
        match held.get(&key) {
            Some(mine) => {
                seen.insert(key);
                if differs(mine, &instance) {
                    out.push(ZoneChange::Upsert(instance));
                }
            }
            None => {
                if registry.is_foreign(&key) {
                    continue;
                }
                if registry
                    .get(&key)
                    .is_some_and(|own| !theirs_wins(own, &instance))
                {
                    continue;
                }
                out.push(ZoneChange::Upsert(instance));
            }
        }
    }
    out.extend(
        held.keys()
            .filter(|k| !seen.contains(**k))
            .map(|k| ZoneChange::Remove((*k).clone())),
    );
    let lost = registry
        .upstreams()
        .get(name)
        .map(|u| {
            u.exported
                .keys()
                .filter(|k| scope(k) && !theirs_keys.contains(*k))
                .filter(|k| registry.get(k).is_some() && !registry.is_foreign(k))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Diff {
        changes: out,
        refused,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Command, Registration, Schedules, Status};

    fn instance(appid: &str, host: &str, dirty: i64, addr: &str) -> Instance {
        let mut i = Instance::new(
            Registration {
                region: "sh".into(),
                zone: "sh001".into(),
                env: "prod".into(),
                appid: appid.into(),
                hostname: host.into(),
                addrs: vec![addr.into()],
                version: "v1".into(),
                metadata: Default::default(),
                status: Status::Up,
            },
            dirty,
        );
        i.renew_timestamp = dirty + 5;
        i
    }

    fn apply(r: &mut Registry, changes: Vec<ZoneChange>) {
        let from = r.upstreams().get("old").map_or(0, |u| u.cursor);
        let effect = r.apply(&Command::UpstreamApply {
            upstream: "old".into(),
            from,
            changes,
            at: 1_000,
        });
        assert!(effect.outcome.is_ok(), "{:?}", effect.outcome);
    }

    #[test]
    fn a_round_imports_what_is_new_changed_and_gone_and_nothing_else() {
        let mut r = Registry::new(Schedules::default());
        let l = Limits::DEFAULT;
        let all = |_: &InstanceKey| true;
        let theirs = vec![
            instance("a", "1", 10, "http://a1:80"),
            instance("a", "2", 10, "http://a2:80"),
            instance(CLUSTER_APPID, "node1", 10, "http://n1:80"),
        ];
        let d = changes(&r, "old", all, theirs.clone(), &l);
        assert_eq!(
            (d.changes.len(), d.refused),
            (2, 0),
            "their nodes are not imported"
        );
        apply(&mut r, d.changes);
        // The same again, renewed meanwhile: nothing to change.
        let mut renewed = theirs.clone();
        renewed[0].renew_timestamp += 30;
        assert!(changes(&r, "old", all, renewed, &l).changes.is_empty());
        // One changed, one gone.
        let d = changes(
            &r,
            "old",
            all,
            vec![instance("a", "1", 20, "http://new:80")],
            &l,
        );
        assert_eq!(d.changes.len(), 2);
        apply(&mut r, d.changes);
        assert_eq!(r.len(), 1);
        assert_eq!(r.upstreams()["old"].keys.len(), 1);
        // Outside the scope nothing is removed.
        let only_b = |k: &InstanceKey| k.appid == "b";
        assert!(changes(&r, "old", only_b, Vec::new(), &l)
            .changes
            .is_empty());
    }

    #[test]
    fn own_instances_and_their_exported_copies_stay_own() {
        let mut r = Registry::new(Schedules::default());
        let l = Limits::DEFAULT;
        let all = |_: &InstanceKey| true;
        let own = instance("a", "1", 50, "http://mine:80");
        let reg = Registration {
            region: own.region.to_string(),
            zone: own.zone.to_string(),
            env: own.env.to_string(),
            appid: own.appid.to_string(),
            hostname: own.hostname.to_string(),
            addrs: own.addrs.to_vec(),
            version: own.version.to_string(),
            metadata: own.metadata.clone(),
            status: own.status,
        };
        r.apply(&Command::Register {
            registration: reg.clone(),
            at: 50,
        });
        // Our exported copy, as the original stamped it later: ours.
        let echo = instance("a", "1", 60, "http://mine:80");
        assert!(changes(&r, "old", all, vec![echo.clone()], &l)
            .changes
            .is_empty());
        // An older copy stating something else: ours still.
        let older = instance("a", "1", 40, "http://theirs:80");
        assert!(changes(&r, "old", all, vec![older], &l).changes.is_empty());
        // Exported, and gone there (a provider's old process cancelled
        // it): lost, to register again.
        r.apply(&Command::UpstreamExported {
            upstream: "old".into(),
            exported: vec![(own.key(), 50)],
            withdrawn: Vec::new(),
            at: 55,
        });
        assert_eq!(
            changes(&r, "old", all, Vec::new(), &l).lost,
            vec![own.key()]
        );
        assert!(changes(&r, "old", all, vec![echo], &l).lost.is_empty());
        // A newer one stating something else: the provider registered
        // there again, theirs wins, and it is imported.
        let newer = instance("a", "1", 70, "http://theirs:80");
        let d = changes(&r, "old", all, vec![newer], &l);
        assert_eq!(d.changes.len(), 1);
        apply(&mut r, d.changes);
        assert_eq!(r.upstream_of(&own.key()), Some("old"));
        assert_eq!(r.get(&own.key()).unwrap().addrs[..], ["http://theirs:80"]);
        // A register here takes it back.
        r.apply(&Command::Register {
            registration: reg,
            at: 80,
        });
        assert_eq!(r.upstream_of(&own.key()), None);
        assert_eq!(r.get(&own.key()).unwrap().addrs[..], ["http://mine:80"]);
    }

    #[test]
    fn instances_past_this_clusters_limits_are_counted_not_imported() {
        let r = Registry::new(Schedules::default());
        let mut big = instance("a", "1", 10, "http://a:80");
        big.addrs = (0..100).map(|n| format!("http://a:{n}")).collect();
        let d = changes(&r, "old", |_| true, vec![big], &Limits::DEFAULT);
        assert_eq!((d.changes.len(), d.refused), (0, 1));
    }
}
