//! Leadership handed over without an election: on request
//! (`discoveryctl transfer-leader`) and before a leader stops (SIGTERM),
//! with writes through every node meanwhile, none of which fails. And a
//! stopping node lets its held polls go at once.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, Timings, ADMIN_TOKEN};
use common::{Client, TestNode};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The test cluster's lease (`election_timeout_max_ms`): a leader lost
/// without a handover is replaced only after it, plus an election timeout.
const LEASE: Duration = Duration::from_millis(600);

/// Writes through `clients` in a loop until `stop`; returns every answer's
/// code.
fn write_through(clients: Vec<Client>, stop: Arc<AtomicBool>) -> JoinSet<Vec<i64>> {
    let mut writers = JoinSet::new();
    for (w, c) in clients.into_iter().enumerate() {
        let stop = stop.clone();
        writers.spawn(async move {
            let mut codes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let a = c
                    .register("handover.app", "sh001", &format!("w{w}-{n}"), "1")
                    .await;
                codes.push(a.code());
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            codes
        });
    }
    writers
}

async fn failed_writes(mut writers: JoinSet<Vec<i64>>) -> (usize, usize) {
    let (mut all, mut failed) = (0, 0);
    while let Some(codes) = writers.join_next().await {
        let codes = codes.unwrap();
        all += codes.len();
        failed += codes.iter().filter(|c| **c != 0).count();
    }
    (all, failed)
}

fn term(status: &serde_json::Value) -> u64 {
    status["term"].as_u64().expect("a term")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_hands_leadership_to_the_named_voter_and_no_write_fails() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let before = term(&cluster.status(leader).await.unwrap());
    let to = (leader + 1) % 3;
    let asked = (leader + 2) % 3;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = write_through((0..3).map(|i| cluster.client(i)).collect(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Asked through the third node: it hands the request to the leader.
    let out = Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["--node", &cluster.addr(asked), "--token", ADMIN_TOKEN])
        .args(["transfer-leader", "--to", &cluster.slots[to].id.to_string()])
        .output()
        .expect("discoveryctl runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), format!("node {} leads", cluster.slots[to].id));

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (all, failed) = failed_writes(writers).await;
    assert!(all >= 10, "only {all} writes");
    assert_eq!(failed, 0, "{failed} of {all} writes failed");
    for i in 0..3 {
        let s = cluster.status(i).await.unwrap();
        assert_eq!(s["leader"].as_u64(), Some(cluster.slots[to].id), "{s}");
        // One term, won by a single vote round: no timeout, no split vote.
        assert_eq!(term(&s), before + 1, "{s}");
    }

    // Without the token, nobody moves the leader.
    let refused = reqwest::Client::new()
        .post(format!(
            "http://{}/admin/transfer-leader",
            cluster.addr(asked)
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["code"].as_i64().is_some_and(|c| c != 0), "{body}");
    // A node that is not a voter is refused by name.
    let out = Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["--node", &cluster.addr(asked), "--token", ADMIN_TOKEN])
        .args(["transfer-leader", "--to", "9"])
        .output()
        .expect("discoveryctl runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node 9 is not a voter"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_by_sigterm_hands_over_first_and_no_write_fails() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let before = term(&cluster.status(leader).await.unwrap());
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = write_through(
        survivors.iter().map(|i| cluster.client(*i)).collect(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped = Instant::now();
    let watch = {
        let clients: Vec<Client> = survivors.iter().map(|i| cluster.client(*i)).collect();
        let old = cluster.slots[leader].id;
        tokio::spawn(async move {
            loop {
                for c in &clients {
                    let s = c.status().await;
                    if s["leader"].as_u64().is_some_and(|l| l != old) {
                        return (stopped.elapsed(), s);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    cluster.terminate(leader).await;
    let (took, status) = watch.await.unwrap();
    // Without a handover the survivors would wait out the lease first.
    assert!(took < LEASE, "a new leader after {took:?}: {status}");
    assert_eq!(term(&status), before + 1, "{status}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (all, failed) = failed_writes(writers).await;
    assert!(all >= 10, "only {all} writes");
    assert_eq!(failed, 0, "{failed} of {all} writes failed");
}

#[tokio::test]
async fn a_stopping_node_answers_its_held_polls_at_once() {
    let node = TestNode::start(30_000).await;
    let c = node.client();
    assert_eq!(c.register("held.app", "sh001", "h1", "1").await.code(), 0);
    let latest = c.latest("held.app").await;
    let poller = c.clone();
    let poll = tokio::spawn(async move {
        poller
            .get(&format!(
                "/discovery/polls?env=dev&appid=held.app&latest_timestamp={latest}&hostname=p"
            ))
            .await
    });
    // The poll is held once the node counts it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.status().await["held_polls"] != 1 {
        assert!(Instant::now() < deadline, "the poll was never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    node.stop().await;
    let answer = poll.await.unwrap();
    assert_eq!(answer.code(), -304, "{}", answer.text);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop took {:?} with a poll held for 30 s",
        started.elapsed()
    );
}
