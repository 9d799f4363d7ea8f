//! `consistent=1`: a read a follower answers only after confirming the
//! leader's commit point, for clients that must not read stale data.

mod common;

use common::cluster::{Cluster, Timings};

#[tokio::test]
async fn a_consistent_read_confirms_with_the_leader_or_refuses() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let l = cluster.client(leader);
    let f = cluster.client(follower);
    assert_eq!(l.register("strict.app", "sh001", "h1", "1").await.code(), 0);

    // Written on the leader, read on a follower: the confirmed read holds it.
    let read = f
        .get("/discovery/fetch?env=dev&appid=strict.app&status=3&consistent=1")
        .await;
    assert_eq!(read.code(), 0, "{}", read.text);
    assert!(read.text.contains("\"hostname\":\"h1\""), "{}", read.text);
    let polled = f
        .get("/discovery/polls?env=dev&hostname=c&appid=strict.app&latest_timestamp=0&consistent=1")
        .await;
    assert_eq!(polled.code(), 0, "{}", polled.text);
    let bad = f
        .get("/discovery/fetch?env=dev&appid=strict.app&status=3&consistent=2")
        .await;
    assert_eq!(bad.code(), -400);
    assert!(bad.text.contains("consistent"), "{}", bad.text);

    // Alone, the follower still answers from what it has, but cannot
    // confirm that it is current: a consistent read is refused.
    cluster.kill(leader);
    cluster.kill(other);
    let stale = f
        .get("/discovery/fetch?env=dev&appid=strict.app&status=3")
        .await;
    assert_eq!(stale.code(), 0, "{}", stale.text);
    for path in [
        "/discovery/fetch?env=dev&appid=strict.app&status=3&consistent=1",
        "/discovery/fetchs?env=dev&appid=strict.app&status=3&consistent=1",
        "/discovery/polls?env=dev&hostname=c&appid=strict.app&latest_timestamp=0&consistent=1",
    ] {
        let refused = f.get(path).await;
        assert_eq!(refused.code(), -503, "{path}: {}", refused.text);
        assert!(refused.text.contains("consistent read"), "{}", refused.text);
    }
}
