//! Other zones' partitions: what an origin streams reproduces its own
//! instances exactly, once, in order; the partition is the origin's alone.

use super::zones::{OwnChanges, ZoneBatch, ZoneChange};
use super::*;

fn reg(zone: &str, host: &str) -> Registration {
    Registration {
        region: "sh".into(),
        zone: zone.into(),
        env: "dev".into(),
        appid: "a".into(),
        hostname: host.into(),
        addrs: vec![format!("grpc://{host}:9000")],
        version: "v1".into(),
        metadata: Metadata::new(),
        status: Status::Up,
    }
}

fn key(zone: &str, host: &str) -> InstanceKey {
    reg(zone, host).key()
}

fn streaming() -> Registry {
    let mut r = Registry::default();
    r.stream_own(true);
    r
}

/// Applies `command` at the origin; returns its own changes.
fn at_origin(origin: &mut Registry, command: Command) -> Vec<ZoneChange> {
    match origin.apply(&command).own {
        OwnChanges::Some(changes) => changes,
        OwnChanges::None => Vec::new(),
        OwnChanges::Reset => panic!("reset"),
    }
}

fn zone_apply(r: &mut Registry, from: u64, to: u64, changes: Vec<ZoneChange>, at: i64) -> Effect {
    r.apply(&Command::ZoneApply {
        origin: "sh001".into(),
        to,
        batch: ZoneBatch::Changes { from, changes },
        at,
        term: 1,
        log: None,
    })
}

#[test]
fn streamed_changes_reproduce_the_origins_instances_exactly() {
    let mut a = streaming();
    let mut b = Registry::default();
    // B has its own instance of the same app, and a head start on time.
    b.apply(&Command::Register {
        registration: reg("sh002", "b1"),
        at: 5_000,
    });
    let mut stream = Vec::new();
    for (i, host) in ["h1", "h2", "h3"].iter().enumerate() {
        stream.extend(at_origin(
            &mut a,
            Command::Register {
                registration: reg("sh001", host),
                at: 100 + i as i64,
            },
        ));
    }
    stream.extend(at_origin(
        &mut a,
        Command::Renew {
            keys: vec![key("sh001", "h1")],
            at: 200,
        },
    ));
    stream.extend(at_origin(
        &mut a,
        Command::Set {
            env: "dev".into(),
            appid: "a".into(),
            zone: "sh001".into(),
            changes: vec![Change {
                hostname: "h2".into(),
                status: Some(Status::Waiting),
                metadata: None,
            }],
            at: 300,
        },
    ));
    stream.extend(at_origin(
        &mut a,
        Command::Cancel {
            key: key("sh001", "h3"),
            at: 400,
        },
    ));
    assert_eq!(stream.len(), 6);

    let e = zone_apply(&mut b, 0, 17, stream, 6_000);
    assert_eq!(e.outcome, Ok(Applied::Done));
    assert_eq!(e.changed, vec![AppKey::new("dev", "a")]);
    assert_eq!(
        b.partition_digest(Some("sh001")),
        a.partition_digest(None),
        "B's copy of A is A's own partition"
    );
    assert_eq!(b.partitions()["sh001"].cursor, 17);
    assert_eq!(b.partition_digest(None).0, 1, "B's own instance");
    assert_eq!(b.len(), 3);
    // B's polls see the app move past anything it had.
    assert!(b.app("dev", "a").unwrap().latest_timestamp() > 5_000);
}

#[test]
fn a_batch_that_does_not_start_at_the_cursor_changes_nothing() {
    let mut a = streaming();
    let mut b = Registry::default();
    let first = at_origin(
        &mut a,
        Command::Register {
            registration: reg("sh001", "h1"),
            at: 100,
        },
    );
    assert_eq!(
        zone_apply(&mut b, 0, 5, first.clone(), 1).outcome,
        Ok(Applied::Done)
    );
    let digest = b.partition_digest(Some("sh001"));
    // Sent again (a new leader on either side): refused, nothing changes.
    let again = zone_apply(&mut b, 0, 5, first, 2);
    assert!(again.outcome.is_err());
    assert!(again.changed.is_empty());
    // A gap (changes after 7 while B stands at 5): refused too.
    let cancel = at_origin(
        &mut a,
        Command::Cancel {
            key: key("sh001", "h1"),
            at: 200,
        },
    );
    assert!(zone_apply(&mut b, 7, 9, cancel.clone(), 3).outcome.is_err());
    assert_eq!(b.partition_digest(Some("sh001")), digest);
    assert_eq!(b.partitions()["sh001"].cursor, 5);
    assert_eq!(
        zone_apply(&mut b, 5, 9, cancel, 4).outcome,
        Ok(Applied::Done)
    );
    assert_eq!(b.len(), 0);
}

#[test]
fn a_full_copy_replaces_the_partition_and_leaves_the_rest() {
    let mut a = streaming();
    let mut b = Registry::default();
    b.apply(&Command::Register {
        registration: reg("sh002", "b1"),
        at: 1,
    });
    let old = at_origin(
        &mut a,
        Command::Register {
            registration: reg("sh001", "gone"),
            at: 10,
        },
    );
    zone_apply(&mut b, 0, 3, old, 2);
    let mut fresh = streaming();
    fresh.apply(&Command::Register {
        registration: reg("sh001", "kept"),
        at: 20,
    });
    let full: Vec<Instance> = fresh
        .partition_instances(None)
        .into_iter()
        .cloned()
        .collect();
    let e = b.apply(&Command::ZoneApply {
        origin: "sh001".into(),
        to: 90,
        batch: ZoneBatch::Full(full),
        at: 30,
        term: 1,
        log: None,
    });
    assert_eq!(e.outcome, Ok(Applied::Done));
    assert_eq!(
        b.partition_digest(Some("sh001")),
        fresh.partition_digest(None)
    );
    assert!(b.get(&key("sh001", "gone")).is_none());
    assert!(b.get(&key("sh002", "b1")).is_some());
    assert_eq!(b.partitions()["sh001"].cursor, 90);
    assert_eq!(b.len(), 2);
}

#[test]
fn a_full_copy_in_parts_is_staged_out_of_sight_and_put_in_force_at_once() {
    let mut a = streaming();
    let mut b = Registry::default();
    let old = at_origin(
        &mut a,
        Command::Register {
            registration: reg("sh001", "gone"),
            at: 10,
        },
    );
    zone_apply(&mut b, 0, 3, old, 2);
    let mut fresh = streaming();
    for (i, host) in ["k1", "k2", "k3"].iter().enumerate() {
        fresh.apply(&Command::Register {
            registration: reg("sh001", host),
            at: 20 + i as i64,
        });
    }
    let full: Vec<Instance> = fresh
        .partition_instances(None)
        .into_iter()
        .cloned()
        .collect();
    let part = |part: u32, to: u64, instances: &[Instance]| Command::ZoneApply {
        origin: "sh001".into(),
        to,
        batch: ZoneBatch::FullPart {
            part,
            of: 2,
            instances: instances.to_vec(),
        },
        at: 30,
        term: 1,
        log: Some("b-log".into()),
    };
    let before = b.to_snapshot().digest();
    // Out of order, or for another copy: refused, nothing changes.
    assert!(b.apply(&part(1, 90, &full[2..])).outcome.is_err());
    assert_eq!(b.to_snapshot().digest(), before);
    // The first part is staged: nothing visible moves.
    let visible = b.partition_digest(Some("sh001"));
    assert_eq!(b.apply(&part(0, 90, &full[..2])).outcome, Ok(Applied::Done));
    assert_eq!(b.partition_digest(Some("sh001")), visible);
    assert_eq!(b.partitions()["sh001"].cursor, 3);
    assert!(b.get(&key("sh001", "gone")).is_some());
    // Staging survives a snapshot, and a part of another copy is refused.
    let mut copy = Registry::default();
    copy.restore(b.to_snapshot());
    assert!(copy.apply(&part(1, 91, &full[2..])).outcome.is_err());
    // The last part puts the whole copy in force.
    for r in [&mut b, &mut copy] {
        assert_eq!(r.apply(&part(1, 90, &full[2..])).outcome, Ok(Applied::Done));
        assert_eq!(
            r.partition_digest(Some("sh001")),
            fresh.partition_digest(None)
        );
        assert!(r.get(&key("sh001", "gone")).is_none());
        assert_eq!(r.partitions()["sh001"].cursor, 90);
        assert!(r.partitions()["sh001"].staged.is_none());
    }
    assert_eq!(b.to_snapshot().digest(), copy.to_snapshot().digest());
}

#[test]
fn another_zones_instances_are_written_and_evicted_only_by_it() {
    let mut a = streaming();
    let mut b = streaming();
    let stream = at_origin(
        &mut a,
        Command::Register {
            registration: reg("sh001", "h1"),
            at: 100,
        },
    );
    zone_apply(&mut b, 0, 1, stream, 200);
    let k = key("sh001", "h1");
    for local in [
        Command::Register {
            registration: reg("sh001", "h1"),
            at: 300,
        },
        Command::Cancel {
            key: k.clone(),
            at: 300,
        },
    ] {
        let e = b.apply(&local);
        assert!(
            matches!(&e.outcome, Err(RegistryError::BadRequest { param, .. }) if param == "zone"),
            "{e:?}"
        );
        assert_eq!(e.own, OwnChanges::None);
    }
    let e = b.apply(&Command::Evict {
        keys: vec![k.clone()],
        silent_since: i64::MAX,
        at: 400,
    });
    assert_eq!(e.outcome, Ok(Applied::Evicted(Vec::new())));
    assert!(b.get(&k).is_some());
    // B streams none of it on: it is not B's own.
    assert_eq!(b.partition_digest(None).0, 0);
}

#[test]
fn partitions_survive_a_snapshot() {
    let mut a = streaming();
    let mut b = Registry::default();
    let stream = at_origin(
        &mut a,
        Command::Register {
            registration: reg("sh001", "h1"),
            at: 100,
        },
    );
    zone_apply(&mut b, 0, 4, stream, 200);
    let mut c = Registry::default();
    c.restore(b.to_snapshot());
    assert_eq!(c.partitions(), b.partitions());
    assert_eq!(
        c.partition_digest(Some("sh001")),
        b.partition_digest(Some("sh001"))
    );
    assert_eq!(c.to_snapshot().digest(), b.to_snapshot().digest());
    // Written from a frozen view, the partitions are the same.
    assert_eq!(
        serde_json::to_vec(&b.freeze()).unwrap(),
        serde_json::to_vec(&b.to_snapshot()).unwrap()
    );
    // A registry with no partition has the same snapshot form as before.
    let plain = serde_json::to_value(a.to_snapshot()).unwrap();
    assert!(plain.get("partitions").is_none());
}

#[test]
fn changes_of_another_log_of_the_origin_are_refused_until_a_full_copy() {
    let mut b = Registry::default();
    let batch = |from: u64, to: u64, log: &str| Command::ZoneApply {
        origin: "sh001".into(),
        to,
        batch: ZoneBatch::Changes {
            from,
            changes: Vec::new(),
        },
        at: 30,
        term: 2,
        log: Some(log.into()),
    };
    assert_eq!(b.apply(&batch(0, 5, "old")).outcome, Ok(Applied::Done));
    let p = &b.partitions()["sh001"];
    assert_eq!((p.cursor, p.term, p.log.as_deref()), (5, 2, Some("old")));
    // The origin was rebuilt: the same indexes in another log.
    assert!(b.apply(&batch(5, 7, "new")).outcome.is_err());
    let copy = Command::ZoneApply {
        origin: "sh001".into(),
        to: 3,
        batch: ZoneBatch::Full(Vec::new()),
        at: 31,
        term: 1,
        log: Some("new".into()),
    };
    assert_eq!(b.apply(&copy).outcome, Ok(Applied::Done));
    assert_eq!(b.apply(&batch(3, 4, "new")).outcome, Ok(Applied::Done));
}

#[test]
fn a_log_is_named_once_and_a_restore_keeps_the_name() {
    let mut r = Registry::default();
    let name = |log: &str| Command::NameLog { log: log.into() };
    assert_eq!(r.apply(&name("first")).outcome, Ok(Applied::Done));
    assert!(r.apply(&name("second")).outcome.is_err());
    assert_eq!(r.log(), Some("first"));
    let mut backup = r.to_snapshot();
    backup.log = Some("another".into());
    r.apply(&Command::Restore { backup, at: 40 });
    assert_eq!(r.log(), Some("first"));
    let mut copy = Registry::default();
    copy.restore(r.to_snapshot());
    assert_eq!(copy.log(), Some("first"));
}
