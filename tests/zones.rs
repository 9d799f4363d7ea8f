//! Two zones, a three-node cluster each, on 127.0.0.1: each zone writes
//! its own instances, streams them to the other, and serves every zone's.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Timings};
use serde_json::Value;
use tokio::time::Instant;

async fn zones() -> (Cluster, Cluster) {
    let mut zones = Cluster::start_zones(3, &["sh001", "sh002"], Timings::default).await;
    let b = zones.pop().unwrap();
    let a = zones.pop().unwrap();
    (a, b)
}

/// Waits until `check` holds for node `i`'s fetch of `appid` (all zones).
async fn until_fetched(
    c: &Cluster,
    i: usize,
    appid: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = c.client(i).fetch(appid, 3).await;
        let v = a.json();
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hosts_in(v: &Value, zone: &str) -> Vec<String> {
    v["data"]["instances"][zone]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["hostname"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn digests(c: &Cluster, i: usize) -> Value {
    c.client(i).get("/admin/digest").await.json()["partitions"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_in_one_zone_is_fetched_and_woken_in_the_other_and_writes_go_to_their_zone() {
    let (a, b) = zones().await;
    let ca = a.client(0);
    let cb = b.client(1);

    // B polls the app before it exists anywhere... then A registers it.
    assert_eq!(
        cb.register("zoned.app", "sh002", "b-host", "1")
            .await
            .code(),
        0
    );
    let latest = cb.latest("zoned.app").await;
    let poller = cb.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let a = poller
            .get(&format!(
                "/discovery/polls?env=dev&appid=zoned.app&latest_timestamp={latest}&hostname=p"
            ))
            .await;
        (a, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        ca.register("zoned.app", "sh001", "a-host", "1")
            .await
            .code(),
        0
    );
    let (woken, took) = poll.await.unwrap();
    assert_eq!(woken.code(), 0, "{}", woken.text);
    assert!(took < Duration::from_secs(4), "woken after {took:?}");
    let woken = woken.json();
    let app = serde_json::json!({ "data": woken["data"]["zoned.app"] });
    assert_eq!(hosts_in(&app, "sh001"), ["a-host"], "{woken}");

    // Every node of both zones serves both zones' instances.
    for (c, n) in [(&a, 3), (&b, 3)] {
        for i in 0..n {
            until_fetched(c, i, "zoned.app", |v| {
                hosts_in(v, "sh001") == ["a-host"] && hosts_in(v, "sh002") == ["b-host"]
            })
            .await;
        }
    }

    // A write in B for an A instance is handed to A, and comes back.
    let set = cb
        .post(
            "/discovery/set",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "zoned.app"),
                ("hostname", "a-host"),
                ("status", "2"),
            ],
        )
        .await;
    assert_eq!(set.code(), 0, "{}", set.text);
    let renew = cb
        .post(
            "/discovery/renew",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "zoned.app"),
                ("hostname", "a-host"),
            ],
        )
        .await;
    assert_eq!(renew.code(), 0, "{}", renew.text);
    until_fetched(&a, 2, "zoned.app", |v| {
        v["data"]["instances"]["sh001"][0]["status"] == 2
    })
    .await;
    until_fetched(&b, 0, "zoned.app", |v| {
        v["data"]["instances"]["sh001"][0]["status"] == 2
    })
    .await;

    // A cancel in A reaches B.
    let cancel = ca
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "zoned.app"),
                ("hostname", "a-host"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), 0, "{}", cancel.text);
    until_fetched(&b, 2, "zoned.app", |v| hosts_in(v, "sh001").is_empty()).await;

    // Per origin, both zones hold the same: A's own equals B's copy of A,
    // and the other way round.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (da, db) = (digests(&a, 1).await, digests(&b, 2).await);
        let same = |zone: &str| da[zone]["digest"] == db[zone]["digest"];
        if same("sh001") && same("sh002") {
            assert_eq!(db["sh002"]["instances"], 1, "{db}");
            break;
        }
        assert!(Instant::now() < deadline, "A {da} B {db}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = b.client(0).status().await;
    assert!(
        status["zones"]["sh001"]["cursor"].as_u64().unwrap() > 0,
        "{status}"
    );
}
