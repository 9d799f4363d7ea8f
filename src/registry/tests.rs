use super::*;
use std::collections::BTreeMap;

fn reg(appid: &str, zone: &str, host: &str, status: Status) -> Registration {
    Registration {
        region: "sh".into(),
        zone: zone.into(),
        env: "dev".into(),
        appid: appid.into(),
        hostname: host.into(),
        addrs: vec![format!("grpc://{host}:9000")],
        version: "v1".into(),
        metadata: Metadata::new(),
        status,
    }
}

fn key(appid: &str, zone: &str, host: &str) -> InstanceKey {
    InstanceKey {
        env: "dev".into(),
        appid: appid.into(),
        zone: zone.into(),
        hostname: host.into(),
    }
}

fn register(r: &mut Registry, appid: &str, zone: &str, host: &str, at: Timestamp) -> Effect {
    r.apply(&Command::Register {
        registration: reg(appid, zone, host, Status::Up),
        at,
    })
}

fn fetch_json(r: &Registry, appid: &str, zone: Option<&str>, mask: u32) -> serde_json::Value {
    let bytes = r
        .fetch("dev", appid, zone, StatusMask::new(mask).unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn register_stamps_every_timestamp_and_moves_the_app() {
    let mut r = Registry::default();
    let e = register(&mut r, "a", "z1", "h1", 100);
    assert_eq!(e.outcome, Ok(Applied::Done));
    assert_eq!(e.changed, vec![AppKey::new("dev", "a")]);
    let i = r.get(&key("a", "z1", "h1")).unwrap();
    assert_eq!(
        [
            i.reg_timestamp,
            i.up_timestamp,
            i.renew_timestamp,
            i.dirty_timestamp,
            i.latest_timestamp
        ],
        [100; 5]
    );
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), 100);
    assert_eq!(r.len(), 1);
}

#[test]
fn app_timestamp_strictly_increases_even_when_the_clock_does_not() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "a", "z1", "h2", 50);
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), 101);
    assert_eq!(r.get(&key("a", "z1", "h2")).unwrap().latest_timestamp, 101);
}

#[test]
fn reregister_replaces_data_and_keeps_first_registration() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    let mut again = reg("a", "z1", "h1", Status::Up);
    again.addrs = vec!["grpc://new:1".into()];
    r.apply(&Command::Register {
        registration: again,
        at: 200,
    });
    let i = r.get(&key("a", "z1", "h1")).unwrap();
    assert_eq!(i.addrs[..], ["grpc://new:1".to_string()]);
    assert_eq!((i.reg_timestamp, i.up_timestamp), (100, 100));
    assert_eq!((i.dirty_timestamp, i.latest_timestamp), (200, 200));
    assert_eq!(r.len(), 1);
}

#[test]
fn renew_moves_only_the_renew_timestamp() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    let e = r.apply(&Command::Renew {
        keys: vec![
            key("a", "z1", "h1"),
            key("a", "z1", "nope"),
            key("b", "z1", "h1"),
        ],
        at: 300,
    });
    let Ok(Applied::Renewed(answers)) = e.outcome else {
        panic!("renew refused: {:?}", e.outcome)
    };
    assert!(matches!(&answers[0], Renewal::Renewed(i) if i.renew_timestamp == 300));
    assert_eq!(answers[1], Renewal::UnknownInstance);
    assert_eq!(answers[2], Renewal::UnknownApp);
    assert!(e.changed.is_empty());
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), 100);
    let i = r.get(&key("a", "z1", "h1")).unwrap();
    assert_eq!((i.renew_timestamp, i.latest_timestamp), (300, 100));
}

#[test]
fn renew_never_moves_back() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    r.apply(&Command::Renew {
        keys: vec![key("a", "z1", "h1")],
        at: 90,
    });
    assert_eq!(r.get(&key("a", "z1", "h1")).unwrap().renew_timestamp, 100);
}

#[test]
fn cancel_removes_zone_and_app_when_they_empty() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "a", "z2", "h2", 110);
    let e = r.apply(&Command::Cancel {
        key: key("a", "z2", "h2"),
        at: 120,
    });
    assert_eq!(e.outcome, Ok(Applied::Done));
    assert!(!r.app("dev", "a").unwrap().has_zone("z2"));
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), 120);
    let again = r.apply(&Command::Cancel {
        key: key("a", "z2", "h2"),
        at: 130,
    });
    assert_eq!(again.outcome, Err(RegistryError::NotFound));
    r.apply(&Command::Cancel {
        key: key("a", "z1", "h1"),
        at: 140,
    });
    assert!(r.app("dev", "a").is_none());
    assert_eq!(
        r.fetch("dev", "a", None, StatusMask::UP),
        Err(FetchMiss::UnknownApp)
    );
    assert!(r.is_empty());
}

#[test]
fn set_is_all_or_nothing() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "a", "z1", "h2", 110);
    let change = |h: &str| Change {
        hostname: h.into(),
        status: Some(Status::Waiting),
        metadata: None,
    };
    let e = r.apply(&Command::Set {
        env: "dev".into(),
        appid: "a".into(),
        zone: "z1".into(),
        changes: vec![change("h1"), change("nope")],
        at: 200,
    });
    assert_eq!(e.outcome.unwrap_err().code(), -400);
    assert_eq!(r.get(&key("a", "z1", "h1")).unwrap().status, Status::Up);
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), 110);

    let e = r.apply(&Command::Set {
        env: "dev".into(),
        appid: "a".into(),
        zone: "z1".into(),
        changes: vec![change("h1"), change("h2")],
        at: 200,
    });
    assert_eq!(e.outcome, Ok(Applied::Done));
    assert_eq!(e.changed, vec![AppKey::new("dev", "a")]);
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), 200);
    let i = r.get(&key("a", "z1", "h2")).unwrap();
    assert_eq!(
        (i.status, i.dirty_timestamp, i.latest_timestamp),
        (Status::Waiting, 200, 200)
    );
}

#[test]
fn set_back_to_up_moves_up_timestamp_and_replaces_metadata() {
    let mut r = Registry::default();
    r.apply(&Command::Register {
        registration: reg("a", "z1", "h1", Status::Waiting),
        at: 100,
    });
    r.apply(&Command::Set {
        env: "dev".into(),
        appid: "a".into(),
        zone: "z1".into(),
        changes: vec![Change {
            hostname: "h1".into(),
            status: Some(Status::Up),
            metadata: Some(Metadata::from([("weight".into(), "20".into())])),
        }],
        at: 300,
    });
    let i = r.get(&key("a", "z1", "h1")).unwrap();
    assert_eq!(
        (i.status, i.up_timestamp, i.reg_timestamp),
        (Status::Up, 300, 100)
    );
    assert_eq!(&i.metadata["weight"], "20");
}

#[test]
fn set_on_unknown_app_is_a_bad_request() {
    let mut r = Registry::default();
    let e = r.apply(&Command::Set {
        env: "dev".into(),
        appid: "none".into(),
        zone: "z1".into(),
        changes: vec![],
        at: 1,
    });
    assert_eq!(e.outcome.unwrap_err().code(), -400);
}

#[test]
fn evict_spares_instances_renewed_after_the_decision() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "a", "z1", "h2", 100);
    r.apply(&Command::Renew {
        keys: vec![key("a", "z1", "h2")],
        at: 500,
    });
    let e = r.apply(&Command::Evict {
        keys: vec![key("a", "z1", "h1"), key("a", "z1", "h2")],
        silent_since: 400,
        at: 600,
    });
    assert_eq!(e.outcome, Ok(Applied::Evicted(vec![key("a", "z1", "h1")])));
    assert_eq!(e.changed, vec![AppKey::new("dev", "a")]);
    assert!(r.get(&key("a", "z1", "h1")).is_none());
    assert!(r.get(&key("a", "z1", "h2")).is_some());
}

#[test]
fn fetch_filters_by_status_and_zone() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    r.apply(&Command::Register {
        registration: reg("a", "z2", "h2", Status::Waiting),
        at: 110,
    });
    let up = fetch_json(&r, "a", None, 1);
    assert_eq!(up["instances"]["z1"].as_array().unwrap().len(), 1);
    assert_eq!(up["instances"]["z2"], serde_json::json!([]));
    assert_eq!(up["latest_timestamp"], 110);
    let waiting = fetch_json(&r, "a", None, 2);
    assert_eq!(waiting["instances"]["z2"][0]["hostname"], "h2");
    let z1 = fetch_json(&r, "a", Some("z1"), 3);
    assert!(z1["instances"].get("z2").is_none());
    assert_eq!(
        r.fetch("dev", "a", Some("z9"), StatusMask::UP),
        Err(FetchMiss::UnknownZone {
            latest_timestamp: 110
        })
    );
    assert!(up.get("scheduler").is_none());
}

#[test]
fn fetch_cache_follows_changes() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    assert_eq!(
        fetch_json(&r, "a", None, 1)["instances"]["z1"][0]["renew_timestamp"],
        100
    );
    r.apply(&Command::Renew {
        keys: vec![key("a", "z1", "h1")],
        at: 150,
    });
    assert_eq!(
        fetch_json(&r, "a", None, 1)["instances"]["z1"][0]["renew_timestamp"],
        150
    );
}

#[test]
fn instance_renders_fields_in_wire_order() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 7);
    let bytes = r.fetch("dev", "a", None, StatusMask::UP).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert_eq!(
        text,
        r#"{"instances":{"z1":[{"region":"sh","zone":"z1","env":"dev","appid":"a","hostname":"h1","addrs":["grpc://h1:9000"],"version":"v1","metadata":{},"status":1,"reg_timestamp":7,"up_timestamp":7,"renew_timestamp":7,"dirty_timestamp":7,"latest_timestamp":7}]},"latest_timestamp":7}"#
    );
}

#[test]
fn scheduler_is_part_of_fetch_data() {
    let rules = vec![SchedulerRule {
        src: "z1".into(),
        dst: BTreeMap::from([("z1".to_string(), 3), ("z2".to_string(), 1)]),
    }];
    let mut r = Registry::new(Schedules::new(vec![Schedule {
        appid: "a".into(),
        env: None,
        rules,
    }]));
    register(&mut r, "a", "z1", "h1", 7);
    let data = fetch_json(&r, "a", None, 1);
    assert_eq!(
        data["scheduler"],
        serde_json::json!([{"src":"z1","dst":{"z1":3,"z2":1}}])
    );
}

#[test]
fn a_scheduler_set_at_run_time_wins_moves_the_app_and_survives_a_snapshot() {
    let rule = |w: i64| SchedulerRule {
        src: "z1".into(),
        dst: BTreeMap::from([("z1".to_string(), w), ("z2".to_string(), 1)]),
    };
    let mut r = Registry::new(Schedules::new(vec![Schedule {
        appid: "a".into(),
        env: None,
        rules: vec![rule(1)],
    }]));
    register(&mut r, "a", "z1", "h1", 7);
    let before = r.app("dev", "a").unwrap().latest_timestamp();
    let set = r.apply(&Command::Schedule {
        appid: "a".into(),
        env: Some("dev".into()),
        rules: Some(vec![rule(9)]),
        at: 5,
    });
    assert_eq!(set.outcome, Ok(Applied::Done));
    assert_eq!(set.changed, vec![AppKey::new("dev", "a")]);
    assert!(r.app("dev", "a").unwrap().latest_timestamp() > before);
    assert_eq!(fetch_json(&r, "a", None, 1)["scheduler"][0]["dst"]["z1"], 9);

    // Another node restored from a snapshot serves the same.
    let mut copy = Registry::new(Schedules::default());
    copy.restore(r.to_snapshot());
    assert_eq!(copy.to_snapshot().digest(), r.to_snapshot().digest());
    assert_eq!(
        fetch_json(&copy, "a", None, 1)["scheduler"][0]["dst"]["z1"],
        9
    );

    // Cleared: the configuration file's applies again; clearing twice is
    // -404.
    let clear = Command::Schedule {
        appid: "a".into(),
        env: Some("dev".into()),
        rules: None,
        at: 6,
    };
    assert_eq!(r.apply(&clear).outcome, Ok(Applied::Done));
    assert_eq!(fetch_json(&r, "a", None, 1)["scheduler"][0]["dst"]["z1"], 1);
    assert_eq!(r.apply(&clear).outcome, Err(RegistryError::NotFound));
}

#[test]
fn a_scheduler_that_sends_nowhere_or_twice_is_refused() {
    let rules = Rules {
        max_clock_skew: 1_000,
        limits: Limits::DEFAULT,
    };
    let schedule = |dst: &[(&str, i64)], twice: bool| {
        let rule = SchedulerRule {
            src: "z1".into(),
            dst: dst.iter().map(|(z, w)| (z.to_string(), *w)).collect(),
        };
        let mut all = vec![rule.clone()];
        if twice {
            all.push(rule);
        }
        Command::Schedule {
            appid: "a".into(),
            env: None,
            rules: Some(all),
            at: 1,
        }
    };
    let check = |c: &Command| validate(c, 1, &rules).map_err(|e| e.to_string());
    assert!(check(&schedule(&[("z1", 1)], false)).is_ok());
    for bad in [
        schedule(&[("z1", -1)], false),
        schedule(&[("z1", 0)], false),
        schedule(&[], false),
        schedule(&[("z1", 1)], true),
        schedule(&[("", 1)], false),
    ] {
        let e = check(&bad).unwrap_err();
        assert!(e.contains("scheduler"), "{e}");
    }
}

#[test]
fn poll_answers_only_newer_apps_with_an_up_instance() {
    let mut r = Registry::default();
    assert_eq!(r.poll("dev", "a", None, 0), PollView::Unknown);
    r.apply(&Command::Register {
        registration: reg("a", "z1", "h1", Status::Waiting),
        at: 100,
    });
    assert_eq!(r.poll("dev", "a", None, 0), PollView::Unchanged);
    register(&mut r, "a", "z1", "h2", 200);
    assert!(matches!(r.poll("dev", "a", None, 0), PollView::Changed(_)));
    assert_eq!(r.poll("dev", "a", None, 200), PollView::Unchanged);
    assert_eq!(r.poll("dev", "a", Some("z2"), 0), PollView::Unchanged);
    let PollView::Changed(bytes) = r.poll("dev", "a", None, 150) else {
        panic!("expected a change")
    };
    let data: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(data["instances"]["z1"].as_array().unwrap().len(), 1);
}

#[test]
fn snapshot_round_trip_restores_state_and_timestamps() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "b", "z2", "h2", 200);
    r.apply(&Command::Cancel {
        key: key("a", "z1", "h1"),
        at: 50,
    });
    register(&mut r, "a", "z1", "h3", 10);
    let snap = serde_json::to_vec(&r.to_snapshot()).unwrap();
    let mut back = Registry::default();
    back.restore(serde_json::from_slice::<Thawed>(&snap).unwrap());
    assert_eq!(back.len(), 2);
    // The app emptied and came back with an older clock: still forward.
    assert_eq!(back.app("dev", "a").unwrap().latest_timestamp(), 202);
    assert_eq!(
        serde_json::to_vec(&back.to_snapshot()).unwrap(),
        serde_json::to_vec(&r.to_snapshot()).unwrap()
    );
}

#[test]
fn a_frozen_registry_is_written_as_its_snapshot_and_later_changes_do_not_reach_it() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "a", "z2", "h2", 110);
    register(&mut r, "b", "z1", "h3", 120);
    r.apply(&Command::Schedule {
        appid: "a".into(),
        env: Some("dev".into()),
        rules: Some(vec![SchedulerRule {
            src: "z1".into(),
            dst: BTreeMap::from([("z2".to_string(), 1)]),
        }]),
        at: 130,
    });
    let snapshot = serde_json::to_vec(&r.to_snapshot()).unwrap();
    let frozen = r.freeze();
    assert_eq!(serde_json::to_vec(&frozen).unwrap(), snapshot);

    // The registry changes on while the frozen view is written out.
    register(&mut r, "a", "z1", "h4", 140);
    r.apply(&Command::Cancel {
        key: key("b", "z1", "h3"),
        at: 150,
    });
    r.apply(&Command::Renew {
        keys: vec![key("a", "z2", "h2")],
        at: 160,
    });
    assert_eq!(serde_json::to_vec(&frozen).unwrap(), snapshot);
    assert_ne!(serde_json::to_vec(&r.to_snapshot()).unwrap(), snapshot);
    assert_eq!(r.len(), 3);
}

#[test]
fn replicas_that_applied_the_same_commands_have_the_same_digest() {
    let commands = [
        Command::Register {
            registration: reg("b", "z2", "h2", Status::Up),
            at: 200,
        },
        Command::Register {
            registration: reg("a", "z1", "h1", Status::Up),
            at: 100,
        },
        Command::Renew {
            keys: vec![key("a", "z1", "h1")],
            at: 300,
        },
    ];
    let mut one = Registry::default();
    let mut two = Registry::default();
    for c in &commands {
        one.apply(c);
        two.apply(c);
    }
    assert_eq!(one.to_snapshot().digest(), two.to_snapshot().digest());
    let mut restored = Registry::default();
    restored.restore(one.to_snapshot());
    assert_eq!(restored.to_snapshot().digest(), one.to_snapshot().digest());

    // Any replicated field counts, a renew timestamp included.
    two.apply(&Command::Renew {
        keys: vec![key("a", "z1", "h1")],
        at: 400,
    });
    assert_ne!(one.to_snapshot().digest(), two.to_snapshot().digest());
    assert_eq!(one.to_snapshot().digest().len(), 64);
}

#[test]
fn a_restored_backup_replaces_everything_with_fresh_app_timestamps() {
    let mut source = Registry::default();
    register(&mut source, "a", "z1", "h1", 100);
    register(&mut source, "a", "z2", "h2", 200);
    let backup = source.to_snapshot();

    let mut target = Registry::default();
    register(&mut target, "gone", "z1", "x", 5_000);
    register(&mut target, "a", "z1", "old", 6_000);
    let before = target.app("dev", "a").unwrap().latest_timestamp();
    let restore = Command::Restore {
        backup: backup.clone(),
        at: 7_000,
    };
    let effect = target.apply(&restore);
    assert_eq!(effect.outcome, Ok(Applied::Done));
    // Every app of before and after is woken.
    assert_eq!(
        effect.changed,
        vec![AppKey::new("dev", "a"), AppKey::new("dev", "gone")]
    );
    assert!(target.app("dev", "gone").is_none());
    assert!(target.get(&key("a", "z1", "old")).is_none());
    let h1 = target.get(&key("a", "z1", "h1")).unwrap();
    assert_eq!(h1.reg_timestamp, 100, "kept from the backup");
    assert_eq!(
        h1.renew_timestamp, 7_000,
        "counts as renewed at the restore"
    );
    assert!(target.app("dev", "a").unwrap().latest_timestamp() > before);

    // Applied on two replicas, the same registry.
    let mut other = Registry::default();
    register(&mut other, "gone", "z1", "x", 5_000);
    register(&mut other, "a", "z1", "old", 6_000);
    other.apply(&restore);
    assert_eq!(other.to_snapshot().digest(), target.to_snapshot().digest());
}

#[test]
fn a_backup_with_a_misfiled_or_invalid_instance_is_refused() {
    let mut source = Registry::default();
    register(&mut source, "a", "z1", "h1", 100);
    let mut backup = source.to_snapshot();
    backup.apps[0].appid = "b".into();
    let rules = Rules {
        max_clock_skew: 1_000,
        limits: Limits::DEFAULT,
    };
    let restore = Command::Restore { backup, at: 100 };
    let e = validate(&restore, 100, &rules).unwrap_err();
    assert!(e.to_string().contains("filed under dev/b"), "{e}");

    let mut backup = source.to_snapshot();
    backup.apps[0].instances[0].addrs = vec!["not a url".into()].into();
    let e = validate(&Command::Restore { backup, at: 100 }, 100, &rules).unwrap_err();
    assert!(e.to_string().contains("addrs"), "{e}");
}

#[test]
fn a_backup_from_the_far_future_is_refused_and_counters_never_wrap() {
    let mut source = Registry::default();
    register(&mut source, "a", "z1", "h1", 100);
    let rules = Rules {
        max_clock_skew: 1_000,
        limits: Limits::DEFAULT,
    };
    let far = 9_000_000_000_000_000_000;
    for stamp in [
        |b: &mut RegistrySnapshot, t| b.apps[0].instances[0].renew_timestamp = t,
        |b: &mut RegistrySnapshot, t| b.apps[0].latest_timestamp = t,
        |b: &mut RegistrySnapshot, t| b.high_water = t,
    ] {
        let mut backup = source.to_snapshot();
        stamp(&mut backup, far);
        let e = validate(&Command::Restore { backup, at: 100 }, 100, &rules).unwrap_err();
        assert!(e.to_string().contains("ahead of this node's clock"), "{e}");
    }
    // Within the allowed skew: taken.
    let mut backup = source.to_snapshot();
    backup.apps[0].instances[0].renew_timestamp = 1_000;
    assert!(validate(&Command::Restore { backup, at: 100 }, 100, &rules).is_ok());

    // A registry already at the end of the counter stays there.
    let mut backup = source.to_snapshot();
    backup.high_water = i64::MAX;
    let mut r = Registry::default();
    r.apply(&Command::Restore { backup, at: 100 });
    let e = register(&mut r, "a", "z1", "h2", 200);
    assert!(e.outcome.is_ok());
    assert_eq!(r.app("dev", "a").unwrap().latest_timestamp(), i64::MAX);
}

/// Two instances of one app keep one copy of what they have in common:
/// names and metadata, and each hostname with its key.
fn assert_shared(a: &Instance, b: &Instance) {
    assert!(a.env.is_shared_with(&b.env) && a.appid.is_shared_with(&b.appid));
    assert!(a.zone.is_shared_with(&b.zone) && a.region.is_shared_with(&b.region));
    assert!(a.version.is_shared_with(&b.version));
    assert!(a.metadata.is_shared_with(&b.metadata));
    assert!(!a.hostname.is_shared_with(&b.hostname));
}

#[test]
fn instances_of_an_app_share_what_they_have_in_common_also_when_restored() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    register(&mut r, "a", "z1", "h2", 200);
    register(&mut r, "a", "z1", "h1", 300);
    let pair = |r: &Registry| {
        let app = r.app("dev", "a").unwrap();
        (
            app.get("z1", "h1").unwrap().clone(),
            app.get("z1", "h2").unwrap().clone(),
        )
    };
    let (h1, h2) = pair(&r);
    assert_shared(&h1, &h2);
    let snap = serde_json::to_vec(&r.freeze()).unwrap();
    let mut back = Registry::default();
    back.restore(serde_json::from_slice::<Thawed>(&snap).unwrap());
    let (h1, h2) = pair(&back);
    assert_shared(&h1, &h2);
    assert_eq!(back.get(&key("a", "z1", "h1")).unwrap().reg_timestamp, 100);
}

#[test]
fn only_instances_that_renewed_are_expected_to_renew() {
    let mut r = Registry::default();
    for i in 0..10 {
        register(&mut r, "a", "z1", &format!("real{i}"), 100);
    }
    // A flood of registrations that never renew.
    for i in 0..1000 {
        register(&mut r, "flood", "z1", &format!("f{i}"), 100 + i);
    }
    assert_eq!(r.renewing_len(), 0);
    let keys = (0..10)
        .map(|i| key("a", "z1", &format!("real{i}")))
        .collect();
    r.apply(&Command::Renew { keys, at: 5000 });
    assert_eq!(r.renewing_len(), 10);
    // Registering again is a sign of life too.
    register(&mut r, "flood", "z1", "f0", 6000);
    assert_eq!(r.renewing_len(), 11);
    assert_eq!(r.own_len(), 1010);
}

#[test]
fn a_write_naming_what_is_not_registered_is_refused_before_it_is_proposed() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    let set = |hosts: &[&str]| Command::Set {
        env: "dev".into(),
        appid: "a".into(),
        zone: "z1".into(),
        changes: hosts
            .iter()
            .map(|h| Change {
                hostname: h.to_string(),
                status: Some(Status::Waiting),
                metadata: None,
            })
            .collect(),
        at: 200,
    };
    assert_eq!(r.refusal(&set(&["h1"])), None);
    // The same answer applying it would give.
    let refused = r.refusal(&set(&["h1", "ghost"])).unwrap();
    assert_eq!(Err(refused), r.apply(&set(&["h1", "ghost"])).outcome);
    let other_app = Command::Set {
        env: "dev".into(),
        appid: "nope".into(),
        zone: "z1".into(),
        changes: Vec::new(),
        at: 200,
    };
    assert!(r.refusal(&other_app).is_some());
    let cancel = |host: &str| Command::Cancel {
        key: key("a", "z1", host),
        at: 200,
    };
    assert_eq!(r.refusal(&cancel("ghost")), Some(RegistryError::NotFound));
    assert_eq!(r.refusal(&cancel("h1")), None);
    assert_eq!(
        r.refusal(&Command::Register {
            registration: reg("b", "z1", "new", Status::Up),
            at: 300
        }),
        None
    );
}

#[test]
fn a_restore_in_parts_survives_a_snapshot_taken_half_way() {
    let mut source = Registry::default();
    for i in 0..300 {
        register(
            &mut source,
            &format!("app{}", i % 4),
            "z1",
            &format!("h{i}"),
            100 + i,
        );
    }
    let backup = source.to_snapshot();
    let parts = restore::split(backup, 8 << 10);
    assert!(parts.len() > 4, "{} parts", parts.len());
    let of = parts.len() as u32;
    let part = |i: usize| Command::RestorePart {
        id: 5000,
        part: i as u32,
        of,
        instances: 300,
        backup: parts[i].clone(),
        at: 5000,
    };
    let mut straight = Registry::default();
    register(&mut straight, "gone", "z1", "x", 10);
    let mut halfway = Registry::default();
    register(&mut halfway, "gone", "z1", "x", 10);
    for i in 0..parts.len() / 2 {
        assert_eq!(halfway.apply(&part(i)).outcome, Ok(Applied::Done));
    }
    // Nothing shows until the last part.
    assert!(halfway.app("dev", "app0").is_none());
    assert!(halfway.app("dev", "gone").is_some());
    // A node installs a snapshot taken here, and goes on from it.
    let snapshot = serde_json::to_vec(&halfway.freeze()).unwrap();
    let mut installed = Registry::default();
    installed.restore(serde_json::from_slice::<RegistrySnapshot>(&snapshot).unwrap());
    for i in parts.len() / 2..parts.len() {
        installed.apply(&part(i));
    }
    for i in 0..parts.len() {
        straight.apply(&part(i));
    }
    assert_eq!(installed.len(), 300);
    assert!(installed.app("dev", "gone").is_none());
    assert_eq!(
        installed.to_snapshot().digest(),
        straight.to_snapshot().digest()
    );
    // A part out of order is refused and changes nothing.
    let before = installed.to_snapshot().digest();
    assert!(installed.apply(&part(1)).outcome.is_err());
    assert_eq!(installed.to_snapshot().digest(), before);
}

#[test]
fn a_registry_that_exported_to_an_original_is_written_and_read_as_a_snapshot() {
    let mut r = Registry::default();
    register(&mut r, "a", "z1", "h1", 100);
    r.apply(&Command::UpstreamExported {
        upstream: "old".into(),
        exported: vec![(key("a", "z1", "h1"), 100)],
        withdrawn: Vec::new(),
        at: 110,
    });
    let snap = serde_json::to_vec(&r.to_snapshot()).unwrap();
    assert_eq!(serde_json::to_vec(&r.freeze()).unwrap(), snap);
    let mut back = Registry::default();
    back.restore(serde_json::from_slice::<Thawed>(&snap).unwrap());
    assert_eq!(back.to_snapshot(), r.to_snapshot());
    assert_eq!(back.digest(), r.digest());
}

#[test]
fn an_upstream_written_by_an_earlier_build_is_read() {
    // Earlier builds wrote `exported` as an object (possible only empty).
    let json = r#"{"cursor":3,"applied_at":5,"keys":[],"exported":{}}"#;
    let upstream: crate::registry::upstream::Upstream = serde_json::from_str(json).unwrap();
    assert_eq!(upstream.cursor, 3);
    assert!(upstream.exported.is_empty());
    let written = serde_json::to_string(&upstream).unwrap();
    assert!(written.ends_with(r#""exported":[]}"#), "{written}");
}

#[test]
fn a_frozen_registry_written_as_a_frame_reads_back_whole() {
    // The parts a snapshot may hold: apps, a schedule, the log's name, an
    // original followed (with exports), a restore half received (another
    // zone's partitions travel in tests/frames.rs).
    let mut r = Registry::default();
    for i in 0..50 {
        register(
            &mut r,
            &format!("app{}", i % 3),
            "z1",
            &format!("h{i}"),
            100 + i,
        );
    }
    r.apply(&Command::Schedule {
        appid: "app0".into(),
        env: None,
        rules: Some(vec![SchedulerRule {
            src: "z1".into(),
            dst: BTreeMap::from([("z2".to_string(), 1)]),
        }]),
        at: 200,
    });
    r.apply(&Command::NameLog {
        log: "log-1".into(),
    });
    r.apply(&Command::UpstreamExported {
        upstream: "old".into(),
        exported: vec![(key("app0", "z1", "h0"), 100)],
        withdrawn: Vec::new(),
        at: 210,
    });
    let parts = restore::split(r.to_snapshot(), 1 << 10);
    r.apply(&Command::RestorePart {
        id: 300,
        part: 0,
        of: parts.len() as u32,
        instances: 50,
        backup: parts[0].clone(),
        at: 300,
    });
    let whole = r.to_snapshot();
    assert!(whole.restoring.is_some() && whole.log.is_some());
    assert!(!whole.schedules.is_empty() && !whole.upstreams.is_empty());

    let mut frame = Vec::new();
    crate::wire::write(&mut frame, &r.freeze()).unwrap();
    let thawed: Thawed = crate::wire::read(&frame[..]).unwrap();
    let mut back = Registry::default();
    back.restore(thawed);
    assert_eq!(back.to_snapshot(), whole);
    assert_eq!(back.digest(), r.digest());
    // Written with nothing optional: read back the same way.
    let mut empty = Vec::new();
    crate::wire::write(&mut empty, &Registry::default().freeze()).unwrap();
    let thawed: Thawed = crate::wire::read(&empty[..]).unwrap();
    let mut back = Registry::default();
    back.restore(thawed);
    assert_eq!(back.to_snapshot(), Registry::default().to_snapshot());
    // The JSON of the same registry is as it was: nothing left out of a
    // frame leaks into it.
    let json = serde_json::to_string(&Registry::default().freeze()).unwrap();
    assert!(
        !json.contains("partitions") && !json.contains("upstreams"),
        "{json}"
    );
}
