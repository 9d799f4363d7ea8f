//! Nodes made to fail on purpose through fail points (`FAILPOINTS` in a
//! node's environment; the `failpoints` feature): a node whose Raft core
//! stops ends its process with the cause and a non-zero exit, for its
//! supervisor to restart and its operator to read, instead of answering
//! `503` forever.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Timings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_core_stops_exits_with_the_cause() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.register("kept.app", "sh001", h, "1").await.code(), 0);
    }
    let follower = (leader + 1) % 3;
    cluster.terminate(follower).await;
    // Its storage fails at the 60th entry it applies after it starts
    // again: it starts, catches up, serves, then fails.
    cluster.spawn_with_env(follower, &[("FAILPOINTS", "apply=60*off->return")]);
    cluster.wait_serving(follower).await;
    for k in 0..80 {
        let h = format!("more{k}");
        assert_eq!(c.register("kept.app", "sh001", &h, "1").await.code(), 0);
    }
    let status = cluster
        .exited(follower, Duration::from_secs(20))
        .await
        .expect("the node still runs with its Raft core stopped");
    assert!(!status.success(), "{status}");
    let log = cluster.log(follower);
    assert!(
        log.contains("the Raft core stopped") && log.contains("failpoint apply"),
        "{log}"
    );
    // The others go on.
    assert_eq!(c.register("kept.app", "sh001", "h4", "1").await.code(), 0);
    // Started again without the fault, it catches up.
    cluster.spawn(follower);
    cluster.wait_serving(follower).await;
    let fetched = cluster.client(follower).fetch("kept.app", 3).await;
    assert_eq!(fetched.code(), 0, "{}", fetched.text);
    assert!(fetched.text.contains("\"h4\""), "{}", fetched.text);
}

/// Checks every 300 ms.
fn checked() -> Timings {
    Timings {
        lifecycle: "[consistency]\ncheck_every_ms = 300\n".into(),
        ..Timings::default()
    }
}

/// A replica whose registry drifts from the log (the `diverge` fail
/// point changes an instance behind the log's back at every apply) is
/// found out at the next check: it says at which index, by how much and
/// in which app, serves no reads, and the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_diverges_is_found_out_and_serves_no_reads() {
    let mut cluster = Cluster::start(3, checked()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.register("drift.app", "sh001", h, "1").await.code(), 0);
    }
    let odd = (leader + 1) % 3;
    cluster.terminate(odd).await;
    cluster.spawn_with_env(odd, &[("FAILPOINTS", "diverge=return")]);
    // Checked at start, before it serves: no read is ever answered from
    // its registry.
    let status = cluster.never_served_until_diverged(odd, "drift.app").await;
    let why = status["diverged"].as_str().unwrap();
    assert!(
        why.contains("differs from the cluster's at log index")
            && why.contains("dev/drift.app (here 3 instances, there 3)"),
        "{why}"
    );
    // No reads, no polls: the same refusal as start-up protection.
    let read = cluster.client(odd).fetch("drift.app", 3).await;
    assert_eq!(read.code(), -503, "{}", read.text);
    assert!(
        read.text.contains("differs from the cluster"),
        "{}",
        read.text
    );
    let metrics = cluster.client(odd).get("/metrics").await.text;
    assert!(metrics.contains("discovery_diverged 1"), "{metrics}");
    assert!(cluster.log(odd).contains("ERROR"), "{}", cluster.log(odd));
    // The leader names it, and the others agree and serve.
    let leader = cluster.leader().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = cluster.client(leader).get("/metrics").await.text;
        if metrics.contains("discovery_replicas_diverged 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster
            .log(leader)
            .contains("replicas differ from the cluster's registry"),
        "{}",
        cluster.log(leader)
    );
    assert_eq!(c.register("drift.app", "sh001", "h4", "1").await.code(), 0);
    let third = 3 - leader - odd;
    assert_eq!(cluster.client(third).fetch("drift.app", 3).await.code(), 0);
}

/// A leader whose registry is the odd one out hands its leadership over
/// as soon as a check finds it, and stays out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_diverges_steps_down() {
    let mut cluster = Cluster::start(3, checked()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in ["h1", "h2"] {
        assert_eq!(c.register("drift.app", "sh001", h, "1").await.code(), 0);
    }
    let odd = (leader + 1) % 3;
    cluster.terminate(odd).await;
    cluster.spawn_with_env(odd, &[("FAILPOINTS", "diverge=return")]);
    cluster.never_served_until_diverged(odd, "drift.app").await;
    // Made leader, it finds itself the odd one out at its first check.
    let id = cluster.slots[odd].id;
    let moved = cluster.transfer_leader(leader, id).await;
    assert_eq!(moved["Ok"], id, "{moved}");
    // (The old leader's status may still say it leads for a moment: the
    // odd one's own log says when it hands over.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cluster
        .log(odd)
        .contains("diverged: leadership handed over")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "still leads:\n{}",
            cluster.log(odd)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.status(odd).await.unwrap()["state"] == "Leader" {
        assert!(std::time::Instant::now() < deadline, "still leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster
            .log(odd)
            .contains("diverged: leadership handed over"),
        "{}",
        cluster.log(odd)
    );
    assert!(cluster.status(odd).await.unwrap()["diverged"].is_string());
    let leader = cluster.leader().await;
    assert_eq!(
        cluster
            .client(leader)
            .register("drift.app", "sh001", "h3", "1")
            .await
            .code(),
        0
    );
}
