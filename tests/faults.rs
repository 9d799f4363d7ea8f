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
