//! A node answers a write only once its own state holds it: a fetch sent
//! to the same node right after sees the change, on followers too.

mod common;

use common::cluster::{Cluster, Timings};
use common::{hostnames, Client};

const PAIRS: usize = 1000;
const WORKERS: usize = 8;

/// `PAIRS` register-then-fetch pairs, then as many cancel-then-fetch
/// pairs, spread over `WORKERS` concurrent clients of one node; the misses
/// of each phase.
async fn pairs(c: Client, node: usize) -> (usize, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let c = c.clone();
        tasks.spawn(async move {
            let appid = format!("ryw.n{node}.w{w}");
            let hosts: Vec<String> = (w..PAIRS)
                .step_by(WORKERS)
                .map(|k| format!("h{k}"))
                .collect();
            let mut missed = (0, 0);
            for h in &hosts {
                assert_eq!(c.register(&appid, "sh001", h, "1").await.code(), 0);
                if !hostnames(&c, &appid).await.contains(h) {
                    missed.0 += 1;
                }
            }
            for h in &hosts {
                let cancelled = c
                    .post(
                        "/discovery/cancel",
                        &[
                            ("zone", "sh001"),
                            ("env", "dev"),
                            ("appid", &appid),
                            ("hostname", h),
                        ],
                    )
                    .await;
                assert_eq!(cancelled.code(), 0, "{}", cancelled.text);
                if hostnames(&c, &appid).await.contains(h) {
                    missed.1 += 1;
                }
            }
            missed
        });
    }
    let mut missed = (0, 0);
    while let Some(m) = tasks.join_next().await {
        let m = m.expect("worker");
        missed = (missed.0 + m.0, missed.1 + m.1);
    }
    missed
}

#[tokio::test]
async fn every_follower_reads_its_own_writes() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let runs = followers.iter().map(|&f| pairs(cluster.client(f), f));
    let results = futures::future::join_all(runs).await;
    for (f, (registers, cancels)) in followers.iter().zip(results) {
        assert_eq!(
            (registers, cancels),
            (0, 0),
            "follower {f}: misses after {PAIRS} registers and {PAIRS} cancels"
        );
    }
}

/// A write acknowledged by one node is never refused by another as if it
/// had not happened: a cancel sent to a second node right after the
/// register was acknowledged by the first is carried out, however far
/// behind the second node's applied state is (it refuses only after
/// confirming with the leader that it holds every acknowledged write).
#[tokio::test]
async fn a_cancel_on_another_node_right_after_a_register_is_never_refused() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Each pair of nodes, both ways: registered on one, cancelled on the
    // other; followers apply a moment after the leader acknowledges.
    let routes = [
        (leader, followers[0]),
        (leader, followers[1]),
        (followers[0], followers[1]),
        (followers[1], followers[0]),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (r, (on, off)) in routes.into_iter().enumerate() {
        let (reg, can) = (cluster.client(on), cluster.client(off));
        tasks.spawn(async move {
            let appid = format!("across.r{r}");
            let mut refused = Vec::new();
            for k in 0..150 {
                let h = format!("h{k}");
                assert_eq!(reg.register(&appid, "sh001", &h, "1").await.code(), 0);
                let cancelled = can
                    .post(
                        "/discovery/cancel",
                        &[
                            ("zone", "sh001"),
                            ("env", "dev"),
                            ("appid", &appid),
                            ("hostname", &h),
                        ],
                    )
                    .await;
                if cancelled.code() != 0 {
                    refused.push(format!("{appid}/{h}: {}", cancelled.text));
                }
            }
            refused
        });
    }
    let mut refused = Vec::new();
    while let Some(r) = tasks.join_next().await {
        refused.extend(r.expect("worker"));
    }
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
}
