//! Moving a fleet off an original discovery: a three-node cluster follows
//! a stand-in for the original (this project's own node speaking only the
//! original's API, `node.original_api`) both ways: imports what is there
//! and what changes, exports its own instances, creates no loop, and
//! carries on over a leader change here and a restart there.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Timings};
use common::{Client, TestNode};
use serde_json::Value;

/// Every `(hostname, status)` of `appid` (env dev) a fetch on `c` shows.
async fn listed(c: &Client, appid: &str) -> BTreeSet<(String, u64)> {
    let v = c.fetch(appid, 3).await.json();
    v["data"]["instances"]
        .as_object()
        .into_iter()
        .flat_map(|zones| zones.values())
        .flat_map(|z| z.as_array().cloned().unwrap_or_default())
        .map(|i| {
            (
                i["hostname"].as_str().unwrap_or_default().to_string(),
                i["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until `appid` lists exactly `want` on `c`.
async fn until_listed(c: &Client, appid: &str, want: &[(&str, u64)], what: &str) {
    let want: BTreeSet<(String, u64)> = want.iter().map(|(h, s)| (h.to_string(), *s)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = listed(c, appid).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {appid} at {} lists {now:?}, not {want:?}",
            c.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The link as node `i` shows it in its status.
async fn link(cluster: &Cluster, i: usize) -> Value {
    let s = cluster.status(i).await.expect("a status");
    s["upstreams"]["old"].clone()
}

fn section(original: &TestNode) -> String {
    format!(
        r#"
[[upstream]]
name = "old"
kind = "discovery"
nodes = ["{}"]
full_every_ms = 1000
export_every_ms = 100
renew_every_ms = 60000
poll_timeout_ms = 5000
"#,
        original.base.trim_start_matches("http://")
    )
}

async fn stand_in() -> TestNode {
    TestNode::start_with(1_000, |c| c.node.original_api = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_follows_the_original_both_ways_without_loops() {
    let mut original = stand_in().await;
    let old = original.client();
    // Before the link: the original's fleet, a waiting instance among it.
    old.register("legacy.app", "sh001", "l1", "1").await;
    old.register("legacy.app", "sh001", "l2", "2").await;
    old.register("lonely.app", "sh001", "x1", "1").await;
    // Only the original's routes: no admin, no console.
    assert_eq!(old.get("/admin/status").await.status, 404);

    let timings = Timings {
        lifecycle: section(&original),
        ..Timings::default()
    };
    let mut cluster = Cluster::start(3, timings).await;
    let follower = (cluster.leader().await + 1) % 3;
    let ours = cluster.client(follower);

    // 1. Import: the whole registry first, waiting instances too, on every
    // node; the original's own nodes stay out of ours.
    for i in 0..3 {
        let c = cluster.client(i);
        until_listed(&c, "legacy.app", &[("l1", 1), ("l2", 2)], "imported").await;
        until_listed(&c, "lonely.app", &[("x1", 1)], "imported").await;
    }
    let nodes = common::hostnames(&ours, "infra.discovery").await;
    assert_eq!(nodes.len(), 3, "only our nodes: {nodes:?}");
    assert!(!nodes.contains("test1"), "{nodes:?}");

    // Then its changes: a new instance, a cancel, the last of an app gone.
    old.register("legacy.app", "sh001", "l3", "1").await;
    until_listed(
        &ours,
        "legacy.app",
        &[("l1", 1), ("l2", 2), ("l3", 1)],
        "new there",
    )
    .await;
    old.post(
        "/discovery/cancel",
        &[
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "legacy.app"),
            ("hostname", "l1"),
        ],
    )
    .await;
    until_listed(
        &ours,
        "legacy.app",
        &[("l2", 2), ("l3", 1)],
        "cancelled there",
    )
    .await;
    old.post(
        "/discovery/cancel",
        &[
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "lonely.app"),
            ("hostname", "x1"),
        ],
    )
    .await;
    until_listed(&ours, "lonely.app", &[], "an app emptied there").await;

    // An imported instance is the original's: not cancelled nor set here.
    let refused = ours
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "legacy.app"),
                ("hostname", "l3"),
            ],
        )
        .await;
    assert_eq!(refused.code(), -400, "{}", refused.text);
    assert!(refused.text.contains("original"), "{}", refused.text);

    // 2. Export: an instance registered here (on a follower) reaches the
    // original; a change to it too; consumers there see it.
    ours.register("moved.app", "sh001", "m1", "1").await;
    until_listed(&old, "moved.app", &[("m1", 1)], "exported").await;
    let set = ours
        .post(
            "/discovery/set",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "moved.app"),
                ("hostname", "m1"),
                ("status", "2"),
            ],
        )
        .await;
    assert_eq!(set.code(), 0, "{}", set.text);
    until_listed(&old, "moved.app", &[("m1", 2)], "a change exported").await;

    // Our nodes are not exported: the original's infra.discovery is its own.
    let theirs = common::hostnames(&old, "infra.discovery").await;
    assert_eq!(theirs.len(), 1, "only the original's node: {theirs:?}");
    assert!(theirs.contains("test1"), "{theirs:?}");

    // 3. No loop: the exported copy is not imported back (one copy here,
    // our own), and nothing of ours appears twice there.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(listed(&ours, "moved.app").await.len(), 1);
    let l = link(&cluster, follower).await;
    assert_eq!(l["imported"], 2, "l2 and l3 only: {l}");
    assert_eq!(l["exported"], 1, "{l}");
    assert_eq!(
        l["import"]["state"], "standby",
        "a follower does not work the link: {l}"
    );
    let leader = cluster.leader().await;
    let on_leader = link(&cluster, leader).await;
    assert_eq!(on_leader["import"]["state"], "following", "{on_leader}");
    assert_eq!(on_leader["export"]["state"], "following", "{on_leader}");
    let metrics = cluster.client(leader).get("/metrics").await.text;
    for line in [
        r#"discovery_upstream_state{upstream="old",direction="import"} 1"#,
        r#"discovery_upstream_instances{upstream="old",direction="import"} 2"#,
        r#"discovery_upstream_instances{upstream="old",direction="export"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in the metrics");
    }

    // A provider moving over: registered here under the identity it had
    // there, it is ours from then on (and still there, as our export).
    ours.register("legacy.app", "sh001", "l3", "1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while link(&cluster, follower).await["imported"] != 1 {
        assert!(Instant::now() < deadline, "l3 never became ours");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_listed(&old, "legacy.app", &[("l2", 2), ("l3", 1)], "taken over").await;
    until_listed(&ours, "legacy.app", &[("l2", 2), ("l3", 1)], "taken over").await;

    // 4. A leader change here: the new leader carries on from the record,
    // neither losing nor repeating what was exported.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let survivor = (leader + 1) % 3;
    let c = cluster.client(survivor);
    c.register("moved.app", "sh001", "m2", "1").await;
    until_listed(
        &old,
        "moved.app",
        &[("m1", 2), ("m2", 1)],
        "after a leader change",
    )
    .await;
    let cancel = c
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "moved.app"),
                ("hostname", "m1"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), 0, "{}", cancel.text);
    until_listed(&old, "moved.app", &[("m2", 1)], "a cancel exported").await;
    // A provider's old process, stopping, cancels its copy there: the
    // copy this cluster exported, registered there again at once (not at
    // the next renew, a minute away here).
    old.post(
        "/discovery/cancel",
        &[
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "moved.app"),
            ("hostname", "m2"),
        ],
    )
    .await;
    until_listed(
        &old,
        "moved.app",
        &[("m2", 1)],
        "an exported copy lost there",
    )
    .await;
    old.register("legacy.app", "sh001", "l4", "1").await;
    until_listed(
        &c,
        "legacy.app",
        &[("l2", 2), ("l3", 1), ("l4", 1)],
        "imported by the new leader",
    )
    .await;
    cluster.spawn(leader);

    // 5. The original restarts: the link fails meanwhile, then resumes.
    original.restart().await;
    old.register("legacy.app", "sh001", "l5", "1").await;
    until_listed(
        &c,
        "legacy.app",
        &[("l2", 2), ("l3", 1), ("l4", 1), ("l5", 1)],
        "after the original restarted",
    )
    .await;
    c.register("moved.app", "sh001", "m3", "1").await;
    until_listed(
        &old,
        "moved.app",
        &[("m2", 1), ("m3", 1)],
        "exported after the restart",
    )
    .await;

    // This cluster restarts whole (every node stopped at once): the link
    // resumes from the replicated state, both ways.
    for i in 0..3 {
        cluster.terminate(i).await;
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_serving(i).await;
    }
    let c = cluster.client(follower);
    until_listed(
        &c,
        "legacy.app",
        &[("l2", 2), ("l3", 1), ("l4", 1), ("l5", 1)],
        "served from disk after a restart",
    )
    .await;
    old.register("legacy.app", "sh001", "l6", "1").await;
    until_listed(
        &c,
        "legacy.app",
        &[("l2", 2), ("l3", 1), ("l4", 1), ("l5", 1), ("l6", 1)],
        "imported after this cluster restarted",
    )
    .await;
    c.register("moved.app", "sh001", "m4", "1").await;
    until_listed(
        &old,
        "moved.app",
        &[("m2", 1), ("m3", 1), ("m4", 1)],
        "exported after this cluster restarted",
    )
    .await;

    // Every node holds the same registry throughout.
    cluster.one_registry(Duration::from_secs(10)).await;

    // The operator's view, from any node: the leader's.
    let shown = common::discoveryctl(&cluster.addr(follower), None, &["upstream"])
        .await
        .expect("discoveryctl upstream");
    assert!(
        shown.contains("import") && shown.contains("following") && shown.contains("export"),
        "{shown}"
    );

    // 6. The link switched off: `forget` needs the admin token, and is
    // refused while a node still has the link configured.
    let anonymous = common::discoveryctl(&cluster.addr(0), None, &["upstream", "forget", "old"])
        .await
        .expect_err("forget without the token");
    assert!(anonymous.contains("refused"), "{anonymous}");
    let configured = cluster
        .admin(&["upstream", "forget", "old"])
        .await
        .expect_err("forget while configured");
    assert!(configured.contains("still configured"), "{configured}");
    for i in 0..3 {
        let path = cluster.config_of(i).to_path_buf();
        let file = std::fs::read_to_string(&path).unwrap();
        let cut = file.find("[[upstream]]").expect("the link's section");
        std::fs::write(&path, &file[..cut]).unwrap();
        cluster.terminate(i).await;
        cluster.spawn(i);
        cluster.wait_serving(i).await;
    }
    let forgotten = cluster.admin(&["upstream", "forget", "old"]).await;
    assert!(forgotten.is_ok(), "{forgotten:?}");
    for i in 0..3 {
        // What was imported is gone; what is ours stays.
        until_listed(&cluster.client(i), "legacy.app", &[("l3", 1)], "forgotten").await;
        until_listed(
            &cluster.client(i),
            "moved.app",
            &[("m2", 1), ("m3", 1), ("m4", 1)],
            "forgotten",
        )
        .await;
        assert!(cluster.status(i).await.unwrap()["upstreams"].is_null());
    }
    original.stop().await;
}

/// An original node that lost its registry (the original keeps nothing on
/// disk) answers a whole comparison with almost nothing: what was imported
/// stays while it holds still that little for `mass_removal_hold_ms`, and
/// goes after, as the runbook says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_that_lost_its_registry_empties_nothing_at_once() {
    let original = stand_in().await;
    let old = original.client();
    for host in ["a1", "a2", "a3", "a4"] {
        assert_eq!(old.register("kept.app", "sh001", host, "1").await.code(), 0);
    }
    let port = original.base.rsplit(':').next().unwrap().to_string();
    let timings = Timings {
        lifecycle: format!(
            "{}mass_removal_hold_ms = 4000\n",
            section(&original).replace("full_every_ms = 1000", "full_every_ms = 300")
        ),
        ..Timings::default()
    };
    let cluster = Cluster::start(3, timings).await;
    let ours = cluster.client(0);
    let all = [("a1", 1), ("a2", 1), ("a3", 1), ("a4", 1)];
    until_listed(&ours, "kept.app", &all, "imported").await;

    // The same address, an empty registry: a node that restarted empty.
    original.stop().await;
    let empty = TestNode::start_with(1_000, |c| {
        c.node.original_api = true;
        c.node.listen = format!("127.0.0.1:{port}");
        c.node.advertise = format!("127.0.0.1:{port}");
    })
    .await;
    let lost_at = Instant::now();
    // Held back: every comparison meanwhile (a dozen) leaves them.
    while lost_at.elapsed() < Duration::from_millis(3_000) {
        assert_eq!(
            listed(&ours, "kept.app").await.len(),
            4,
            "emptied {:?} after the original lost its registry",
            lost_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still that empty past the hold: the removals apply.
    until_listed(&ours, "kept.app", &[], "past the hold").await;
    assert!(
        lost_at.elapsed() >= Duration::from_millis(4_000),
        "{:?}",
        lost_at.elapsed()
    );
    let log = cluster.log(cluster.leader().await);
    assert!(log.contains("dropped many instances at once"), "no warning");
    empty.stop().await;
}
