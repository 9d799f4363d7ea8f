//! A three-node cluster of real processes: writes anywhere, reads
//! everywhere, failover, catch-up, membership changes, loss of quorum.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Hosts, Timings, ADMIN_TOKEN};
use common::{discoveryctl, hostnames, Client};
use serde_json::{json, Value};

/// What `discoveryctl health` (the containers' health check) says of a node.
fn healthy(addr: &str) -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["--node", addr, "health"])
        .output()
        .expect("discoveryctl runs")
        .status
        .success()
}

async fn applied(cluster: &Cluster, i: usize) -> u64 {
    cluster.status(i).await.expect("status")["applied_index"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until every running node of `nodes` shows exactly `want`.
async fn converge(cluster: &Cluster, nodes: &[usize], appid: &str, want: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for &i in nodes {
        loop {
            let got = hostnames(&cluster.client(i), appid).await;
            if &got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} has {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn writes_on_any_node_are_read_on_every_node_and_wake_follower_polls() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let mut want = BTreeSet::new();
    for i in 0..3 {
        let host = format!("via-node{}", i + 1);
        let a = cluster
            .client(i)
            .register("shared.app", "sh001", &host, "1")
            .await;
        assert_eq!(a.code(), 0, "register on node {i}: {}", a.text);
        want.insert(host);
    }
    converge(&cluster, &[0, 1, 2], "shared.app", &want).await;

    // Every node appended the entries to its own log and flushed them.
    for i in 0..3 {
        let storage = &cluster.status(i).await.expect("status")["storage"];
        assert!(
            storage["appended_entries"].as_u64().unwrap() >= 3,
            "{storage}"
        );
        assert!(storage["flushes"].as_u64().unwrap() > 0, "{storage}");
    }

    // A poll held on a follower wakes on a write sent to another node.
    let follower = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    let ts = cluster.client(follower).latest("shared.app").await;
    let poller = cluster.client(follower);
    let poll = tokio::spawn(async move {
        poller
            .get(&format!(
                "/discovery/polls?env=dev&hostname=w&appid=shared.app&latest_timestamp={ts}"
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    assert_eq!(
        cluster
            .client(writer)
            .register("shared.app", "sh001", "late", "1")
            .await
            .code(),
        0
    );
    let a = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(a.code(), 0, "{}", a.text);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        a.json()["data"]["shared.app"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // infra.discovery lists all three members on every node.
    for i in 0..3 {
        let v = cluster
            .client(i)
            .get("/discovery/fetch?env=any&appid=infra.discovery&status=1")
            .await
            .json();
        let addrs: BTreeSet<String> = v["data"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["addrs"][0].as_str().unwrap().to_string())
            .collect();
        let expected: BTreeSet<String> = (0..3)
            .map(|j| format!("http://{}", cluster.addr(j)))
            .collect();
        assert_eq!(addrs, expected);
    }

    // Every replica reaches the same registry at the same log index.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut digests = Vec::new();
        for i in 0..3 {
            digests.push(cluster.client(i).get("/admin/digest").await.json());
        }
        let index = digests[0]["applied_index"].as_u64();
        if digests.iter().all(|d| d["applied_index"].as_u64() == index) {
            assert!(
                digests.iter().all(|d| d["digest"] == digests[0]["digest"]),
                "same index, different registries: {digests:?}"
            );
            assert_eq!(digests[0]["instances"], 4);
            assert_eq!(digests[0]["digest"].as_str().unwrap().len(), 64);
            break;
        }
        assert!(Instant::now() < deadline, "never at one index: {digests:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// In a container the address clients use (a port published on the host)
/// is not one peers can use, and the reverse. Peers here are given
/// `localhost`, clients `127.0.0.2`, where nothing listens: any peer traffic
/// sent to the client address would be refused.
#[tokio::test]
async fn peers_talk_on_raft_addresses_and_clients_are_told_api_addresses() {
    let mut cluster = Cluster::start_with_hosts(
        3,
        Timings::default(),
        Hosts {
            raft_host: "localhost".into(),
            api_host: "127.0.0.2".into(),
        },
    )
    .await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let c = cluster.client(follower);

    // A write and a renew sent to a follower are forwarded to the leader.
    assert_eq!(c.register("addr.app", "sh001", "h1", "1").await.code(), 0);
    let renewed = c
        .post(
            "/discovery/renew",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "addr.app"),
                ("hostname", "h1"),
            ],
        )
        .await;
    assert_eq!(renewed.code(), 0, "{}", renewed.text);

    // A restarted follower learns the commit point from the leader (read
    // index) before it serves again.
    cluster.kill(follower);
    assert_eq!(
        cluster
            .client(leader)
            .register("addr.app", "sh001", "h2", "1")
            .await
            .code(),
        0
    );
    cluster.spawn(follower);
    cluster.wait_serving(follower).await;
    converge(
        &cluster,
        &[follower],
        "addr.app",
        &BTreeSet::from(["h1".to_string(), "h2".to_string()]),
    )
    .await;

    // Clients are told the api addresses, every member up (health probes
    // reach peers on their raft addresses).
    let told: BTreeSet<String> = (0..3)
        .map(|j| format!("127.0.0.2:{}", cluster.slots[j].port))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        loop {
            let nodes = cluster.client(i).get("/discovery/nodes").await.json();
            let up: BTreeSet<String> = nodes["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["status"] == 0)
                .map(|n| n["addr"].as_str().unwrap().to_string())
                .collect();
            let infra = cluster
                .client(i)
                .get("/discovery/fetch?env=prod&appid=infra.discovery&status=1")
                .await
                .json();
            let addrs: BTreeSet<String> = infra["data"]["instances"]["sh001"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    i["addrs"][0]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("http://")
                        .to_string()
                })
                .collect();
            if up == told && addrs == told {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i}: nodes up {up:?}, infra.discovery {addrs:?}, want {told:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A frozen leader (a paused container) keeps its connections open and
/// answers nothing. A write a follower handed to it may or may not be
/// applied, so it is not sent again; but once another node leads, the
/// follower answers that write -503 at once instead of holding it (and its
/// write path) for the whole bounded wait, and later writes go through. A
/// renew, safe to resend, is answered by the new leader.
#[tokio::test]
async fn a_write_handed_to_a_frozen_leader_is_given_up_when_another_leads() {
    let cluster = Cluster::start(
        3,
        Timings {
            write_timeout_ms: 8_000,
            ..Timings::default()
        },
    )
    .await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let c = cluster.client(follower);
    // Pool connections from the follower to the leader.
    for n in 0..5 {
        let a = c
            .register("frozen.app", "sh001", &format!("warm-{n}"), "1")
            .await;
        assert_eq!(a.code(), 0, "{}", a.text);
    }
    cluster.freeze(leader, true);
    let start = Instant::now();
    let stuck: Vec<_> = (0..4)
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move {
                let a = c
                    .register("frozen.app", "sh001", &format!("stuck-{n}"), "1")
                    .await;
                (a.code(), start.elapsed())
            })
        })
        .collect();
    // A renew is safe to send again: it goes to the new leader.
    let renewer = c.clone();
    let renew = tokio::spawn(async move {
        let a = renewer
            .post(
                "/discovery/renew",
                &[
                    ("zone", "sh001"),
                    ("env", "dev"),
                    ("appid", "frozen.app"),
                    ("hostname", "warm-0"),
                ],
            )
            .await;
        (a.code(), start.elapsed())
    });
    for answer in stuck {
        let (code, took) = answer.await.unwrap();
        assert!(code == 0 || code == -503, "code {code}");
        assert!(
            took < Duration::from_secs(4),
            "held {took:?} of an 8 s wait"
        );
    }
    let (code, took) = renew.await.unwrap();
    assert_eq!(code, 0, "renew answered {code} after {took:?}");
    assert!(took < Duration::from_secs(4), "renew held {took:?}");
    let a = c.register("frozen.app", "sh001", "after", "1").await;
    assert_eq!(a.code(), 0, "{}", a.text);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    cluster.freeze(leader, false);
}

#[tokio::test]
async fn leader_sigkill_loses_nothing_acknowledged_and_the_node_catches_up() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let mut acknowledged = BTreeSet::new();
    for n in 0..20 {
        let host = format!("before-{n}");
        if cluster
            .client(n % 3)
            .register("kill.app", "sh001", &host, "1")
            .await
            .code()
            == 0
        {
            acknowledged.insert(host);
        }
    }
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Writes through the survivors succeed once a new leader is elected.
    let start = Instant::now();
    let mut first_success = None;
    for n in 0..30 {
        let host = format!("after-{n}");
        let a = cluster
            .client(survivors[n % 2])
            .register("kill.app", "sh001", &host, "1")
            .await;
        if a.code() == 0 {
            first_success.get_or_insert(start.elapsed());
            acknowledged.insert(host);
        } else {
            assert_eq!(
                a.code(),
                -503,
                "only 'no quorum' while electing: {}",
                a.text
            );
        }
    }
    assert!(
        first_success.is_some(),
        "no write succeeded after the leader died"
    );
    converge(&cluster, &survivors, "kill.app", &acknowledged).await;

    // The killed node comes back and catches up.
    cluster.spawn(leader);
    cluster.wait_serving(leader).await;
    converge(&cluster, &[leader], "kill.app", &acknowledged).await;
}

#[tokio::test]
async fn a_lagging_node_answers_503_until_it_has_caught_up() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    assert_eq!(
        cluster
            .client(0)
            .register("lag.app", "sh001", "early", "1")
            .await
            .code(),
        0
    );
    let behind = 2;
    cluster
        .wait_applied(behind, applied(&cluster, 0).await)
        .await;
    cluster.kill(behind);
    for n in 0..10 {
        assert_eq!(
            cluster
                .client(n % 2)
                .register("lag.app", "sh001", &format!("missed-{n}"), "1")
                .await
                .code(),
            0
        );
    }
    // With the others gone the lagging node cannot learn the commit point:
    // it must refuse reads rather than answer from its stale registry.
    cluster.kill(0);
    cluster.kill(1);
    cluster.spawn(behind);
    let c = cluster.client(behind);
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        if let Ok(r) = c
            .http
            .get(format!(
                "{}/discovery/fetch?env=dev&appid=lag.app&status=1",
                c.base
            ))
            .send()
            .await
        {
            break r;
        }
        assert!(Instant::now() < deadline, "node never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.status().as_u16(), 503);
    assert!(
        !healthy(&cluster.addr(behind)),
        "a protected node is unhealthy"
    );
    assert_eq!(refused.headers()["kratos-status-code"], "-503");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], -503);
    assert!(body["message"].as_str().unwrap().contains("protect"));
    for path in [
        "/discovery/fetchs?env=dev&appid=lag.app&status=1",
        "/discovery/fetch/all",
        "/discovery/nodes",
        "/discovery/polls?env=dev&hostname=h&appid=lag.app&latest_timestamp=0",
        "/discovery/poll?env=dev&hostname=h&appid=lag.app&latest_timestamp=0",
    ] {
        assert_eq!(c.get(path).await.status, 503, "{path}");
    }
    // Writes are accepted (they wait for a leader, then give up: no quorum).
    assert_eq!(
        c.register("lag.app", "sh001", "refused", "1").await.code(),
        -503
    );

    cluster.spawn(0);
    cluster.spawn(1);
    cluster.wait_serving(behind).await;
    assert!(healthy(&cluster.addr(behind)));
    let hosts = hostnames(&c, "lag.app").await;
    assert_eq!(hosts.len(), 11, "{hosts:?}");
    assert!(hosts.contains("missed-9"));
}

#[tokio::test]
async fn without_quorum_writes_answer_503_in_bounded_time_and_reads_still_work() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    assert_eq!(
        cluster
            .client(0)
            .register("q.app", "sh001", "h1", "1")
            .await
            .code(),
        0
    );
    for i in 0..3 {
        cluster.wait_applied(i, applied(&cluster, 0).await).await;
    }
    cluster.kill(0);
    cluster.kill(1);
    let survivor = cluster.client(2);
    for (path, form) in [
        (
            "/discovery/register",
            vec![
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "q.app"),
                ("hostname", "h2"),
                ("status", "1"),
                ("addrs", "grpc://x:1"),
            ],
        ),
        (
            "/discovery/renew",
            vec![
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "q.app"),
                ("hostname", "h1"),
            ],
        ),
        (
            "/discovery/cancel",
            vec![
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "q.app"),
                ("hostname", "h1"),
            ],
        ),
    ] {
        let start = Instant::now();
        let a = survivor.post(path, &form).await;
        let took = start.elapsed();
        assert_eq!(a.code(), -503, "{path}: {}", a.text);
        let message = a.json()["message"].as_str().unwrap().to_string();
        // A follower with no leader proposed nothing: it says so.
        assert!(message.contains("no quorum, not applied"), "{message}");
        assert!(
            took >= Duration::from_millis(1_000),
            "{path} waited {took:?}"
        );
        assert!(
            took < Duration::from_millis(4_000),
            "{path} waited {took:?}"
        );
    }
    // Reads are answered from the survivor's own state.
    assert_eq!(
        hostnames(&survivor, "q.app").await,
        BTreeSet::from(["h1".to_string()])
    );
    let ts = survivor.latest("q.app").await;
    assert!(ts > 0);
    // And nothing was half-applied once the others come back.
    cluster.spawn(0);
    cluster.spawn(1);
    cluster.wait_serving(0).await;
    cluster.wait_serving(1).await;
    converge(
        &cluster,
        &[0, 1, 2],
        "q.app",
        &BTreeSet::from(["h1".to_string()]),
    )
    .await;
}

/// A leader cut off from both followers appends a write it cannot commit:
/// it answers `-503` saying the outcome is unknown (not "not applied"),
/// and the write does apply once the followers are back.
#[tokio::test]
async fn a_write_appended_without_a_quorum_is_answered_as_unknown_and_applies_later() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    assert_eq!(c.register("q.app", "sh001", "h1", "1").await.code(), 0);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &followers {
        cluster.kill(*i);
    }
    let a = c.register("q.app", "sh001", "h2", "1").await;
    assert_eq!(a.code(), -503, "{}", a.text);
    let message = a.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("outcome unknown") && message.contains("may still apply"),
        "{message}"
    );
    assert!(!message.contains("not applied"), "{message}");
    for i in &followers {
        cluster.spawn(*i);
    }
    // Read from them once they serve: a process just spawned may not
    // listen yet (CI met a refused connection here).
    for i in &followers {
        cluster.wait_serving(*i).await;
    }
    converge(
        &cluster,
        &[0, 1, 2],
        "q.app",
        &BTreeSet::from(["h1".to_string(), "h2".to_string()]),
    )
    .await;
}

#[tokio::test]
async fn a_leader_cut_off_from_its_quorum_says_so_and_takes_no_writes() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    assert_eq!(c.register("cut.app", "sh001", "h1", "1").await.code(), 0);
    let addr = cluster.addr(leader);
    assert!(discoveryctl(&addr, None, &["health"]).await.is_ok());
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &followers {
        cluster.kill(*i);
    }
    // Past the lease (600 ms) without a quorum's acknowledgement, the
    // leader still leads, and says it sees no quorum.
    let mut status = c.status().await;
    for _ in 0..100 {
        if status["no_quorum"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = c.status().await;
    }
    let why = status["no_quorum"].as_str().unwrap_or_default().to_string();
    assert!(why.starts_with("no quorum: leader"), "{status}");
    assert_eq!(status["leader"], status["id"], "{status}");
    let health = discoveryctl(&addr, None, &["health"]).await.unwrap_err();
    assert!(
        health.contains("sees no quorum: no quorum: leader"),
        "{health}"
    );
    let shown = discoveryctl(&addr, None, &["status"]).await.unwrap();
    assert!(shown.contains("NO QUORUM: no quorum: leader"), "{shown}");
    let metrics = c.get("/metrics").await.text;
    assert!(metrics.contains("\ndiscovery_quorum 0\n"), "{metrics}");
    // A write is not appended where it could only wait: it is answered
    // "not applied", and never applies.
    let a = c.register("cut.app", "sh001", "h2", "1").await;
    assert_eq!(a.code(), -503, "{}", a.text);
    let message = a.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("no quorum, not applied"), "{message}");
    let log_before = status["last_log_index"].as_u64().unwrap();
    let after = c.status().await;
    assert_eq!(
        after["last_log_index"].as_u64().unwrap(),
        log_before,
        "{after}"
    );
    for i in &followers {
        cluster.spawn(*i);
    }
    let mut healthy = Err(String::new());
    for _ in 0..100 {
        healthy = discoveryctl(&addr, None, &["health"]).await;
        if healthy.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy.is_ok(), "{healthy:?}");
    for i in &followers {
        cluster.wait_serving(*i).await;
    }
    assert_eq!(c.register("cut.app", "sh001", "h3", "1").await.code(), 0);
    converge(
        &cluster,
        &[0, 1, 2],
        "cut.app",
        &BTreeSet::from(["h1".to_string(), "h3".to_string()]),
    )
    .await;
}

#[tokio::test]
async fn a_fourth_node_joins_by_snapshot_through_discoveryctl_and_leaves_again() {
    let mut cluster = Cluster::start(
        3,
        Timings {
            snapshot_every: 20,
            keep_logs: 0,
            ..Timings::default()
        },
    )
    .await;
    for n in 0..60 {
        assert_eq!(
            cluster
                .client(n % 3)
                .register("join.app", "sh001", &format!("h{n}"), "1")
                .await
                .code(),
            0
        );
    }
    let leader = cluster.leader().await;
    let leader_status = cluster.status(leader).await.unwrap();
    assert!(
        leader_status["snapshot_index"].as_u64().is_some(),
        "the log was compacted: {leader_status}"
    );

    let new = cluster.new_joiner(4);
    let run_ctl = |token: Option<&str>, args: &[&str]| {
        let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_discoveryctl"));
        ctl.env_remove("DISCOVERY_ADMIN_TOKEN")
            .args(["--node", &cluster.addr(0)]);
        if let Some(token) = token {
            ctl.args(["--token", token]);
        }
        ctl.args(args).output().expect("discoveryctl runs")
    };
    let ctl = |args: &[&str]| {
        let out = run_ctl(Some(ADMIN_TOKEN), args);
        assert!(
            out.status.success(),
            "discoveryctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let addr = cluster.addr(new);
    let peer_addr = cluster.peer_addr(new);
    let committed = leader_status["committed_index"].as_u64().unwrap();
    let add = add_learner_4("node4", &peer_addr, &addr);
    // Without the admin token, or with a wrong one, nothing changes.
    for token in [None, Some("not-the-token")] {
        let out = run_ctl(token, &add);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "add-learner with {token:?} worked");
        assert!(stderr.contains("token"), "{stderr}");
    }
    let members = cluster.status(leader).await.unwrap()["members"].clone();
    assert!(members.get("4").is_none(), "node 4 added: {members}");
    let refused = cluster
        .client(1)
        .http
        .post(format!("{}/admin/membership", cluster.client(1).base))
        .json(&json!({"change": "remove", "id": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], -401, "{body}");
    ctl(&add);
    // add-learner answers once the learner holds what was committed.
    let leader_status = cluster.status(leader).await.unwrap();
    let matched = leader_status["members"]["4"]["matched_index"].as_u64();
    assert!(
        matched.is_some_and(|i| i >= committed),
        "learner caught up when add-learner answered: {leader_status}"
    );
    let out = run_ctl(None, &["promote", "--id", "4"]);
    assert!(!out.status.success(), "promote without a token worked");
    ctl(&["promote", "--id", "4"]);
    cluster.wait_serving(new).await;
    let status = cluster.status(new).await.unwrap();
    assert!(
        status["snapshot_index"].as_u64().is_some(),
        "caught up by snapshot: {status}"
    );
    assert_eq!(hostnames(&cluster.client(new), "join.app").await.len(), 60);
    let shown = ctl(&["status"]);
    assert!(
        shown.contains("node4") && shown.contains("voter"),
        "{shown}"
    );

    let in_infra = |c: Client, addr: String| async move {
        let v = c
            .get("/discovery/fetch?env=dev&appid=infra.discovery&status=1")
            .await
            .json();
        v["data"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["addrs"] == json!([format!("http://{addr}")]))
    };
    let listed = |c: Client, addr: String| async move {
        let v = c.get("/discovery/nodes").await.json();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["addr"] == addr.as_str())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(in_infra(cluster.client(0), addr.clone()).await
        && listed(cluster.client(0), addr.clone()).await)
    {
        assert!(Instant::now() < deadline, "node4 never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes still work with four voters, and reach the new node.
    assert_eq!(
        cluster
            .client(new)
            .register("join.app", "sh001", "from-4", "1")
            .await
            .code(),
        0
    );

    let out = run_ctl(Some("wrong"), &["remove", "--id", "4"]);
    assert!(!out.status.success(), "remove with a wrong token worked");
    // Node 4 leaves by itself: discoveryctl asks it its id and removes it.
    let left = std::process::Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .env_remove("DISCOVERY_ADMIN_TOKEN")
        .args(["--node", &addr, "--token", ADMIN_TOKEN, "leave"])
        .output()
        .expect("discoveryctl runs");
    assert!(
        left.status.success(),
        "leave: {}",
        String::from_utf8_lossy(&left.stderr)
    );
    assert!(String::from_utf8_lossy(&left.stdout).contains("node 4 leaves"));
    let voters = cluster.status(leader).await.unwrap()["voters"].clone();
    assert_eq!(voters, json!([1, 2, 3]), "after leave");
    // Node 4, still running, knows it left: it says so and serves no more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster.status(new).await.unwrap();
        if status["removed"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 does not know it left: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = common::discoveryctl(&addr, None, &["health"])
        .await
        .expect_err("a node that left is not healthy");
    assert!(
        health.contains("node 4 was removed from the cluster"),
        "{health}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_infra(cluster.client(0), addr.clone()).await
        || listed(cluster.client(0), addr.clone()).await
    {
        assert!(
            Instant::now() < deadline,
            "node4 still published after removal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cluster
            .client(1)
            .register("join.app", "sh001", "after-remove", "1")
            .await
            .code(),
        0
    );
    // Removing a node that is not a member says so.
    let again = run_ctl(Some(ADMIN_TOKEN), &["remove", "--id", "4"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("node 4 is not a member"),
        "{stderr}"
    );
}

/// A read replica: a learner that is never promoted serves reads and
/// polls from its applied state, takes writes (handing them to the
/// leader), and is published in `infra.discovery` so SDKs spread their
/// polls over it; it does not vote.
#[tokio::test]
async fn a_learner_serves_reads_and_polls_and_is_published_as_a_node() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    for n in 0..5 {
        let a = cluster
            .client(n % 3)
            .register("replica.app", "sh001", &format!("h{n}"), "1")
            .await;
        assert_eq!(a.code(), 0, "{}", a.text);
    }
    let replica = cluster.new_joiner(4);
    let addr = cluster.addr(replica);
    let peer_addr = cluster.peer_addr(replica);
    // Its name, client address and zone are the node's own: asked.
    cluster
        .admin(&["add-learner", "--id", "4", "--raft-addr", &peer_addr])
        .await
        .expect("add-learner");
    // It answered once the replica serves: a read there is no -503.
    let first = cluster
        .client(replica)
        .get("/discovery/fetch?env=dev&appid=replica.app&status=1")
        .await;
    assert_eq!(first.code(), 0, "{}", first.text);
    let leader = cluster.leader().await;
    let added = cluster.status(leader).await.unwrap()["members"]["4"].clone();
    assert_eq!(added["name"], "node4", "{added}");
    assert_eq!(added["api_addr"], addr.as_str(), "{added}");
    assert_eq!(added["zone"], "sh001", "{added}");
    let leader = cluster.leader().await;
    let voters = cluster.status(leader).await.unwrap()["voters"].clone();
    assert_eq!(voters, json!([1, 2, 3]), "the replica does not vote");

    // Reads: what was written before it joined.
    let c = cluster.client(replica);
    assert_eq!(hostnames(&c, "replica.app").await.len(), 5);

    // A poll held on the replica wakes on a write sent to a voter.
    let ts = c.latest("replica.app").await;
    let poller = c.clone();
    let poll = tokio::spawn(async move {
        poller
            .get(&format!(
                "/discovery/polls?env=dev&hostname=w&appid=replica.app&latest_timestamp={ts}"
            ))
            .await
    });
    common::wait_held(&c, 1).await;
    let a = cluster
        .client((leader + 1) % 3)
        .register("replica.app", "sh001", "late", "1")
        .await;
    assert_eq!(a.code(), 0, "{}", a.text);
    let woken = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the replica's poll woke")
        .unwrap();
    assert_eq!(woken.code(), 0, "{}", woken.text);
    assert_eq!(
        woken.json()["data"]["replica.app"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // A write sent to the replica is carried out, and read back there.
    let a = c.register("replica.app", "sh001", "via-replica", "1").await;
    assert_eq!(a.code(), 0, "{}", a.text);
    assert!(hostnames(&c, "replica.app").await.contains("via-replica"));

    // Every node publishes the replica in infra.discovery.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in [0, 1, 2, replica] {
        loop {
            let v = cluster
                .client(i)
                .get("/discovery/fetch?env=dev&appid=infra.discovery&status=1")
                .await
                .json();
            let published = v["data"]["instances"]["sh001"]
                .as_array()
                .is_some_and(|all| {
                    all.iter()
                        .any(|n| n["addrs"] == json!([format!("http://{addr}")]))
                });
            if published {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} never published the replica: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // With its own certificate, the learner cannot vote itself in: the
    // repair route gives a vote back only to a node the leader took it
    // from.
    let learner = cluster.pki.issued(
        "learner4",
        &raft_discovery::peer::identity::Identity::Node {
            zone: "sh001".into(),
            id: 4,
        },
    );
    let leader = cluster.leader().await;
    let asked: Value = common::tls_client(&cluster.pki.ca_path(), Some(&learner))
        .post(format!(
            "https://{}{}",
            cluster.peer_addr(leader),
            raft_discovery::peer::paths::REPAIR
        ))
        .json(&json!({"node": 4, "step": "promote"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        asked["Err"]
            .as_str()
            .is_some_and(|e| e.contains("was not taken out of the vote")),
        "{asked}"
    );
    let voters = cluster.status(leader).await.unwrap()["voters"].clone();
    assert_eq!(voters, json!([1, 2, 3]), "the learner voted itself in");
}

/// `add-learner` with an id, a name or an address a member already has is
/// refused with a non-zero exit naming the clash, and changes nothing; the
/// same add sent again for a member exactly as it is succeeds.
#[tokio::test]
async fn add_learner_refuses_an_id_name_or_address_a_member_has() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let node = cluster.addr(0);
    let leader = cluster.leader().await;
    let before = cluster.status(leader).await.unwrap()["members"].clone();
    let (peer2, api2) = (cluster.peer_addr(1), cluster.addr(1));
    let add = |id: &'static str, name: &'static str, raft: String, api: String| {
        let args: Vec<String> = [
            "add-learner",
            "--id",
            id,
            "--name",
            name,
            "--raft-addr",
            &raft,
            "--api-addr",
            &api,
            "--zone",
            "sh001",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let node = node.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::discoveryctl(&node, Some(ADMIN_TOKEN), &args).await
        }
    };
    let free = || "127.0.0.1:1".to_string();
    for (attempt, says) in [
        (
            add("2", "node4", free(), free()).await,
            "node 2 is already a member, as node2",
        ),
        (
            add("4", "node2", free(), free()).await,
            "already has the name node2",
        ),
        (
            add("4", "node4", peer2.clone(), free()).await,
            "already has the peer address",
        ),
        (
            add("4", "node4", free(), api2.clone()).await,
            "already has the client address",
        ),
    ] {
        let refused = attempt.expect_err("a clash must be refused");
        assert!(refused.contains(says), "{refused}");
    }
    assert_eq!(cluster.status(leader).await.unwrap()["members"], before);
    // Without the token, the refusal says how to give one.
    let refused = common::discoveryctl(&node, None, &["remove", "--id", "9"])
        .await
        .expect_err("no token");
    assert!(
        refused.contains("--token") && refused.contains("DISCOVERY_ADMIN_TOKEN"),
        "{refused}"
    );
    // Node 2 exactly as it is: nothing to do, and said so as done.
    let again = add("2", "node2", peer2, api2).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(cluster.status(leader).await.unwrap()["members"], before);
}

/// `add-learner` at an address where no node answers is refused within
/// seconds with exit 1, saying so, and changes nothing (no learner is
/// committed, none is published); a node that is another id, or says
/// another client address than the one given, is refused naming both.
#[tokio::test]
async fn add_learner_refuses_a_node_that_is_not_there_or_not_the_one_asked() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let node = cluster.addr(0);
    let leader = cluster.leader().await;
    let before = cluster.status(leader).await.unwrap()["members"].clone();
    let ctl = |args: Vec<String>| {
        let node = node.clone();
        async move {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_discoveryctl"));
            cmd.env_remove("DISCOVERY_ADMIN_TOKEN")
                .args(["--node", &node, "--token", ADMIN_TOKEN])
                .args(&args);
            let started = Instant::now();
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).to_string(),
                started.elapsed(),
            )
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // A mistyped peer address: nothing listens there.
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let (code, stderr, took) =
        ctl(args(&["add-learner", "--id", "4", "--raft-addr", &nowhere])).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no node answers at peer address {nowhere}"))
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(cluster.status(leader).await.unwrap()["members"], before);
    let nodes = cluster.client(0).get("/discovery/nodes").await.json();
    assert_eq!(nodes["data"].as_array().map(Vec::len), Some(3), "{nodes}");

    // A node that is there, but is node 4, asked as node 5.
    let joiner = cluster.new_joiner(4);
    let peer = cluster.peer_addr(joiner);
    let up = Instant::now() + Duration::from_secs(10);
    while cluster.status(joiner).await.is_none() {
        assert!(Instant::now() < up, "node 4 never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, stderr, _) = ctl(args(&["add-learner", "--id", "5", "--raft-addr", &peer])).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is node 4 (node4), not node 5"), "{stderr}");
    // Node 4 with a client address it does not serve on.
    let wrong = format!("127.0.0.1:{}", common::free_port());
    let (code, stderr, _) = ctl(args(&[
        "add-learner",
        "--id",
        "4",
        "--raft-addr",
        &peer,
        "--api-addr",
        &wrong,
    ]))
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--api-addr {wrong} is not what node 4")),
        "{stderr}"
    );
    assert_eq!(cluster.status(leader).await.unwrap()["members"], before);
    // Without a peer address, the command itself refuses (clap: exit 2).
    let (code, stderr, _) = ctl(args(&["add-learner", "--id", "4"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--raft-addr"), "{stderr}");
}

/// A voter removed while it was away (paused, so it never received the
/// entry that removed it) learns it from its peers' refusals when it comes
/// back: it says so once, stops campaigning (its term stops rising), serves
/// no reads (-503 naming why) and `discoveryctl health` fails saying so;
/// the others go on without it.
#[tokio::test]
async fn a_node_removed_while_away_stops_campaigning_and_says_so_once() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let gone = (leader + 1) % 3;
    let id = cluster.status(gone).await.unwrap()["id"].as_u64().unwrap();
    cluster.freeze(gone, true);
    common::discoveryctl(
        &cluster.addr(leader),
        Some(ADMIN_TOKEN),
        &["remove", "--id", &id.to_string()],
    )
    .await
    .expect("remove");
    cluster.freeze(gone, false);
    let said = format!("node {id} was removed from the cluster");
    cluster.logged(gone, &said, Duration::from_secs(15)).await;
    let term = cluster.status(gone).await.unwrap()["term"].clone();
    // Many election timeouts (300-600 ms) later: no campaign since.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = cluster.status(gone).await.unwrap();
    assert_eq!(status["term"], term, "it still campaigns: {status}");
    assert!(
        status["removed"]
            .as_str()
            .is_some_and(|w| w.contains(&said)),
        "{status}"
    );
    assert_eq!(cluster.log(gone).matches(&said).count(), 1, "said once");
    cluster.assert_out_of_service(gone, &said).await;
    // The two others take writes without it.
    let a = cluster
        .client(leader)
        .register("after.app", "sh001", "h1", "1")
        .await;
    assert_eq!(a.code(), 0, "{}", a.text);
}

/// A learner removed while it was away (paused) never gets the entry
/// that removed it and asks no votes: it asks the leader it follows, is
/// refused as no member, and then says so once and serves no more reads
/// instead of serving a registry that no longer changes.
#[tokio::test]
async fn a_learner_removed_while_away_says_so_and_serves_no_more() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let learner = cluster.new_joiner(4);
    let peer = cluster.peer_addr(learner);
    cluster
        .admin(&["add-learner", "--id", "4", "--raft-addr", &peer])
        .await
        .expect("add-learner");
    cluster.freeze(learner, true);
    cluster
        .admin(&["remove", "--id", "4"])
        .await
        .expect("remove");
    cluster.freeze(learner, false);
    let said = "node 4 was removed from the cluster: leader";
    cluster.logged(learner, said, Duration::from_secs(15)).await;
    cluster.assert_out_of_service(learner, said).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.log(learner).matches(said).count(), 1, "said once");
}

/// The `discoveryctl` arguments that add node 4 of zone sh001 as a learner.
fn add_learner_4<'a>(name: &'a str, peer_addr: &'a str, api_addr: &'a str) -> [&'a str; 11] {
    [
        "add-learner",
        "--id",
        "4",
        "--name",
        name,
        "--raft-addr",
        peer_addr,
        "--api-addr",
        api_addr,
        "--zone",
        "sh001",
    ]
}
