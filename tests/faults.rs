//! Nodes made to fail on purpose through fail points (`FAILPOINTS` in a
//! node's environment; the `failpoints` feature): a node whose Raft core
//! stops ends its process with the cause and a non-zero exit, for its
//! supervisor to restart and its operator to read, instead of answering
//! `503` forever; a replica whose registry drifts from the log is found
//! out, serves nothing, and rebuilds itself from its cluster.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Timings, ADMIN_TOKEN};

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

/// Checks every 300 ms; divergence repaired without an operator or not.
fn checked(repair: bool) -> Timings {
    Timings {
        lifecycle: format!("[consistency]\ncheck_every_ms = 300\nrepair = {repair}\n"),
        ..Timings::default()
    }
}

/// Three nodes checking every 300 ms (repairing or not), `drift.app`
/// registered on `hosts`, then a follower restarted with the `diverge`
/// fail point set to `failpoint`: the cluster, the leader, the follower.
async fn with_odd_one(repair: bool, hosts: &[&str], failpoint: &str) -> (Cluster, usize, usize) {
    let mut cluster = Cluster::start(3, checked(repair)).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in hosts {
        assert_eq!(c.register("drift.app", "sh001", h, "1").await.code(), 0);
    }
    let odd = (leader + 1) % 3;
    cluster.terminate(odd).await;
    cluster.spawn_with_env(odd, &[("FAILPOINTS", failpoint)]);
    (cluster, leader, odd)
}

/// What a rebuilt node says once a check finds it agrees.
const REBUILT: &str = "rebuilt from the cluster: this node agrees again";

/// A replica whose registry drifts from the log (the `diverge` fail
/// point changes an instance behind the log's back at every apply) is
/// found out at the next check: it says at which index, by how much and
/// in which app, serves no reads, and the others go on. With repair off,
/// it stays so for an operator to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_diverges_is_found_out_and_serves_no_reads() {
    let (cluster, leader, odd) = with_odd_one(false, &["h1", "h2", "h3"], "diverge=return").await;
    let c = cluster.client(leader);
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
    // Logged right after the metric is set: waited for, not raced.
    cluster
        .logged(
            leader,
            "replicas differ from the cluster's registry",
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(c.register("drift.app", "sh001", "h4", "1").await.code(), 0);
    let third = 3 - leader - odd;
    assert_eq!(cluster.client(third).fetch("drift.app", 3).await.code(), 0);
    // Left for the operator: no repair started.
    cluster
        .logged(odd, "[consistency] repair = false", Duration::from_secs(5))
        .await;
    assert!(
        !cluster.log(odd).contains("repairing"),
        "{}",
        cluster.log(odd)
    );
}

/// Waits until node `i` (id `id`) has rebuilt: it says so, votes
/// again, is no longer marked rebuilding, serves; then every node holds
/// one registry. Its data was set aside, once.
async fn rebuilt(cluster: &Cluster, i: usize) {
    let id = cluster.slots[i].id;
    cluster.logged(i, REBUILT, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = cluster.leader().await;
        let status = cluster.status(leader).await.unwrap();
        let votes = status["voters"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(id));
        if votes && status["members"][id.to_string()]["rebuilding"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no vote back: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.wait_serving(i).await;
    cluster.one_registry(Duration::from_secs(10)).await;
    let metrics = cluster.client(i).get("/metrics").await.text;
    assert!(metrics.contains("discovery_rebuilds_total 1"), "{metrics}");
    let aside = std::fs::read_dir(cluster.data_dir_of(id).join("set-aside"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].join("sled").is_dir(), "{aside:?}");
}

/// A replica that diverges while it runs (the `diverge` fail point
/// changes its registry once, behind the log's back, when it applies the
/// entry that registers `tamper.app`) is found at the next check, serves
/// nothing, gives up its vote, rebuilds from the cluster, and votes and
/// serves again with the cluster's registry, without an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_diverges_is_repaired_from_the_cluster() {
    let (cluster, leader, odd) =
        with_odd_one(true, &["h1", "h2", "h3"], "diverge=return(tamper.app)").await;
    let c = cluster.client(leader);
    cluster.wait_serving(odd).await;
    let started = Instant::now();
    assert_eq!(c.register("tamper.app", "sh001", "t1", "1").await.code(), 0);
    cluster
        .logged(
            odd,
            "differs from the cluster's at log index",
            Duration::from_secs(5),
        )
        .await;
    let detected = started.elapsed();
    rebuilt(&cluster, odd).await;
    println!(
        "diverged replica: found after {detected:?}, serving the cluster's registry {:?} later",
        started.elapsed() - detected
    );
    let log = cluster.log(odd);
    assert!(
        log.contains("rebuilding this node's registry from the cluster"),
        "{log}"
    );
    let fetched = cluster.client(odd).fetch("drift.app", 3).await;
    assert_eq!(fetched.code(), 0, "{}", fetched.text);
    assert_eq!(c.register("drift.app", "sh001", "h4", "1").await.code(), 0);
    cluster.one_registry(Duration::from_secs(10)).await;
}

/// A leader whose registry is the odd one out hands its leadership over
/// as soon as a check finds it, then rebuilds like any replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_diverges_steps_down_and_is_repaired() {
    let (cluster, leader, odd) =
        with_odd_one(true, &["h1", "h2"], "diverge=return(tamper.app)").await;
    cluster.wait_serving(odd).await;
    let id = cluster.slots[odd].id;
    let moved = cluster.transfer_leader(leader, id).await;
    assert_eq!(moved["Ok"], id, "{moved}");
    assert_eq!(
        cluster
            .client(odd)
            .register("tamper.app", "sh001", "t1", "1")
            .await
            .code(),
        0
    );
    cluster
        .logged(
            odd,
            "diverged: leadership handed over",
            Duration::from_secs(10),
        )
        .await;
    rebuilt(&cluster, odd).await;
    let leader = cluster.leader().await;
    assert_ne!(leader, odd);
    assert_eq!(
        cluster
            .client(leader)
            .register("drift.app", "sh001", "h3", "1")
            .await
            .code(),
        0
    );
    cluster.one_registry(Duration::from_secs(10)).await;
}

/// A fault that comes back from the cluster's own log (the `diverge`
/// fail point at every apply: as an apply bug would) is not rebuilt
/// forever: after three rebuilds the node stays a learner out of service,
/// keeping the last two copies of its data for an operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergence_that_comes_back_is_left_to_an_operator() {
    let (cluster, leader, odd) = with_odd_one(true, &["h1"], "diverge=return").await;
    let c = cluster.client(leader);
    cluster
        .logged(
            odd,
            "rebuilt from the cluster 3 times",
            Duration::from_secs(60),
        )
        .await;
    let id = cluster.slots[odd].id;
    let leader = cluster.leader().await;
    assert!(!cluster.voters(leader).await.contains(&id));
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status["members"][id.to_string()]["rebuilding"], true);
    assert!(cluster.status(odd).await.unwrap()["diverged"].is_string());
    let aside = std::fs::read_dir(cluster.data_dir_of(id).join("set-aside")).unwrap();
    assert_eq!(aside.count(), 2);
    // The two others go on.
    assert_eq!(c.register("drift.app", "sh001", "h2", "1").await.code(), 0);
}

/// A node added as a learner that answers but never serves reads (held
/// catching up by the `lift_protection` fail point): `add-learner` gives
/// up after the wait it was given, with exit 1 and a message saying it was
/// added but does not serve and how to take it out; no node publishes it
/// meanwhile, so no client is sent to it; `remove` takes it out.
#[tokio::test]
async fn a_learner_that_never_serves_is_not_published_and_add_learner_says_so() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let stuck = cluster.new_joiner_with_env(4, &[("FAILPOINTS", "lift_protection=return")]);
    let peer = cluster.peer_addr(stuck);
    let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_discoveryctl"));
    ctl.env_remove("DISCOVERY_ADMIN_TOKEN").args([
        "--node",
        &cluster.addr(0),
        "--token",
        ADMIN_TOKEN,
        "add-learner",
        "--id",
        "4",
        "--raft-addr",
        &peer,
        "--wait",
        "3",
    ]);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || ctl.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node 4 was added as a learner but does not serve reads within 3s")
            && stderr.contains("discoveryctl remove --id 4"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let leader = cluster.leader().await;
    let members = cluster.status(leader).await.unwrap()["members"].clone();
    assert!(members.get("4").is_some(), "a learner was added: {members}");
    // Probed for seconds by now, answering "catching up": published nowhere.
    let stuck_addr = format!("http://{}", cluster.addr(stuck));
    for i in 0..3 {
        let nodes = cluster.client(i).get("/discovery/nodes").await.json();
        assert_eq!(nodes["data"].as_array().map(Vec::len), Some(3), "{nodes}");
        let infra = cluster
            .client(i)
            .get("/discovery/fetch?env=dev&appid=infra.discovery&status=1")
            .await
            .text;
        assert!(
            !infra.contains(&stuck_addr),
            "node {i} publishes it: {infra}"
        );
    }
    cluster
        .admin(&["remove", "--id", "4"])
        .await
        .expect("remove");
    let members = cluster.status(leader).await.unwrap()["members"].clone();
    assert!(members.get("4").is_none(), "{members}");
}
