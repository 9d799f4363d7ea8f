//! Properties of the registry over any sequence of commands: replicas that
//! apply the same log agree, a snapshot changes nothing, and an app's
//! timestamp only moves forward.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(pool).prop_map(str::to_string)
}

fn key() -> impl Strategy<Value = InstanceKey> {
    (
        names(&["dev", "prod"]),
        names(&["a", "b", "c"]),
        names(&["z1", "z2"]),
        names(&["h1", "h2", "h3", "h4"]),
    )
        .prop_map(|(env, appid, zone, hostname)| InstanceKey {
            env,
            appid,
            zone,
            hostname,
        })
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Up), Just(Status::Waiting)]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    prop::collection::vec((names(&["w", "color", "x"]), "[a-z0-9]{0,4}"), 0..3)
        .prop_map(|pairs| pairs.into_iter().collect())
}

/// Stamps out of order on purpose: leaders' clocks differ.
fn stamp() -> impl Strategy<Value = Timestamp> {
    1i64..1_000_000
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (key(), status(), metadata(), stamp()).prop_map(|(k, status, metadata, at)| {
            Command::Register {
                registration: Registration {
                    region: "sh".into(),
                    zone: k.zone,
                    env: k.env,
                    appid: k.appid,
                    hostname: k.hostname.clone(),
                    addrs: vec![format!("grpc://{}:9000", k.hostname)],
                    version: "v1".into(),
                    metadata,
                    status,
                },
                at,
            }
        }),
        2 => (prop::collection::vec(key(), 1..4), stamp())
            .prop_map(|(keys, at)| Command::Renew { keys, at }),
        2 => (key(), stamp()).prop_map(|(key, at)| Command::Cancel { key, at }),
        2 => (key(), prop::option::of(status()), prop::option::of(metadata()), stamp()).prop_map(
            |(k, status, metadata, at)| Command::Set {
                env: k.env,
                appid: k.appid,
                zone: k.zone,
                changes: vec![Change {
                    hostname: k.hostname,
                    status,
                    metadata,
                }],
                at,
            }
        ),
        1 => (prop::collection::vec(key(), 1..4), stamp(), stamp()).prop_map(
            |(keys, silent_since, at)| Command::Evict {
                keys,
                silent_since,
                at,
            }
        ),
    ]
}

fn latest(r: &Registry, app: &AppKey) -> Option<Timestamp> {
    r.app(&app.env, &app.appid).map(App::latest_timestamp)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replicas_applying_the_same_commands_agree(commands in prop::collection::vec(command(), 0..60)) {
        let mut one = Registry::default();
        let mut two = Registry::default();
        for c in &commands {
            let a = one.apply(c);
            let b = two.apply(c);
            prop_assert_eq!(a.outcome, b.outcome);
            prop_assert_eq!(a.changed, b.changed);
        }
        prop_assert_eq!(one.to_snapshot().digest(), two.to_snapshot().digest());
    }

    #[test]
    fn a_snapshot_taken_anywhere_changes_nothing(
        commands in prop::collection::vec(command(), 0..60),
        cut in 0usize..60,
    ) {
        let cut = cut.min(commands.len());
        let mut whole = Registry::default();
        let mut first = Registry::default();
        for c in &commands {
            whole.apply(c);
        }
        for c in &commands[..cut] {
            first.apply(c);
        }
        // Through the bytes a snapshot is stored and sent as.
        let bytes = serde_json::to_vec(&first.to_snapshot()).unwrap();
        let snapshot: RegistrySnapshot = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(snapshot.digest(), first.to_snapshot().digest());
        let mut resumed = Registry::default();
        resumed.restore(snapshot);
        prop_assert_eq!(resumed.len(), first.len());
        for c in &commands[cut..] {
            resumed.apply(c);
        }
        prop_assert_eq!(resumed.to_snapshot().digest(), whole.to_snapshot().digest());
    }

    #[test]
    fn the_kept_digest_is_the_digest_of_what_is_held_and_tells_registries_apart(
        commands in prop::collection::vec(command(), 0..60),
        cut in 0usize..60,
    ) {
        let mut r = Registry::default();
        let mut seen = Vec::new();
        for c in &commands {
            r.apply(c);
            // Each app's digest, kept as it changed, is its instances'
            // hashes summed afresh.
            for (app, kept) in r.shared_apps().iter().map(|(_, _, a)| (a, a.digest())) {
                let mut fresh = super::digest::Sum::default();
                for i in app.instances() {
                    fresh.add(i);
                }
                prop_assert_eq!(kept, fresh);
            }
            seen.push((r.digest(), r.to_snapshot().digest()));
        }
        // A snapshot restored gives the same digest.
        let mut copy = Registry::default();
        copy.restore(r.to_snapshot());
        prop_assert_eq!(copy.digest(), r.digest());
        // Two states along the way with different full contents have
        // different digests, and equal contents equal digests.
        let cut = cut.min(seen.len().saturating_sub(1));
        if let (Some(a), Some(b)) = (seen.get(cut), seen.last()) {
            prop_assert_eq!(a.0 == b.0, a.1 == b.1);
        }
    }

    #[test]
    fn an_app_timestamp_only_moves_forward(commands in prop::collection::vec(command(), 0..80)) {
        let mut r = Registry::default();
        let mut seen: HashMap<AppKey, Timestamp> = HashMap::new();
        for c in &commands {
            let effect = r.apply(c);
            for app in &effect.changed {
                if let Some(now) = latest(&r, app) {
                    if let Some(before) = seen.get(app) {
                        prop_assert!(now > *before, "{app:?}: {before} then {now} after {c:?}");
                    }
                    seen.insert(app.clone(), now);
                }
            }
            // Every instance's own timestamp is its app's at most.
            for i in r.instances() {
                let app = latest(&r, &AppKey::new(&i.env, &i.appid)).unwrap();
                prop_assert!(i.latest_timestamp <= app);
            }
        }
    }

    /// Entries are cut by this estimate: it never falls far below the
    /// bytes a command really takes in the log.
    #[test]
    fn a_command_size_estimate_is_within_three_times_its_bytes(c in command()) {
        let real = serde_json::to_vec(&c).unwrap().len();
        prop_assert!(c.approx_bytes() * 3 >= real, "{} for {real}: {c:?}", c.approx_bytes());
    }
}
