//! A data directory knows the cluster it belongs to: a node started on
//! another cluster's data (an operator's error: node 3's directory of
//! another cluster of the same shape copied in) refuses to start and says
//! so, or, if its peers could not tell when it started, stops once they
//! can; it never serves the other cluster's registry, nor takes this
//! cluster's entries as its own.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Timings};

/// Waits until node `i` has recorded its cluster's id in its data
/// directory, and returns it.
async fn recorded(cluster: &Cluster, id: u64) -> String {
    let file = cluster.data_dir_of(id).join("cluster_id");
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text.trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never written", file.display());
}

/// Two clusters of the same shape, each with a few writes; node 3 of the
/// first stopped and its data directory replaced by node 3's of the
/// second (stopped too).
async fn swapped() -> (Cluster, Cluster, String, String) {
    let ours = Cluster::start(3, Timings::default()).await;
    let theirs = Cluster::start(3, Timings::default()).await;
    for (cluster, appid) in [(&ours, "ours.app"), (&theirs, "theirs.app")] {
        let leader = cluster.leader().await;
        let c = cluster.client(leader);
        for h in ["h1", "h2", "h3"] {
            assert_eq!(c.register(appid, "sh001", h, "1").await.code(), 0);
        }
    }
    let (ours_id, theirs_id) = (recorded(&ours, 3).await, recorded(&theirs, 3).await);
    assert_ne!(ours_id, theirs_id);
    // Every node of a cluster records the same id, and status shows it.
    assert_eq!(recorded(&ours, 1).await, ours_id);
    assert_eq!(
        ours.status(0).await.unwrap()["cluster_id"].as_str(),
        Some(ours_id.as_str())
    );
    (ours, theirs, ours_id, theirs_id)
}

async fn replace_node3(ours: &mut Cluster, theirs: &mut Cluster) {
    theirs.terminate(2).await;
    ours.terminate(2).await;
    let dir = ours.data_dir_of(3);
    std::fs::remove_dir_all(&dir).unwrap();
    common::copy_dir(&theirs.data_dir_of(3), &dir);
}

/// Waits for node 3 to stop on its own, and asserts it failed saying
/// `said`; its log.
async fn exits_saying(ours: &mut Cluster, said: &str) -> String {
    let status = ours
        .exited(2, Duration::from_secs(20))
        .await
        .expect("node 3 still runs on another cluster's data");
    assert!(!status.success(), "{status}");
    let log = ours.log(2);
    assert!(log.contains(said), "{log}");
    log
}

/// The cluster takes writes with two of three, and node 3 holds none of
/// the other cluster's instances.
async fn ours_unharmed(ours: &Cluster) {
    let leader = ours.leader().await;
    let c = ours.client(leader);
    assert_eq!(c.register("ours.app", "sh001", "h4", "1").await.code(), 0);
    assert_eq!(c.fetch("theirs.app", 3).await.code(), -404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_clusters_data_refuses_to_start() {
    let (mut ours, mut theirs, ours_id, theirs_id) = swapped().await;
    replace_node3(&mut ours, &mut theirs).await;
    ours.spawn(2);
    let said = format!(
        "this data directory belongs to cluster {theirs_id}, but most members of the \
         cluster configured here belong to cluster {ours_id}"
    );
    exits_saying(&mut ours, &said).await;
    ours_unharmed(&ours).await;
}

/// Its peers away when it starts, the node cannot tell at once; it serves
/// nothing of the other cluster meanwhile, and stops once they answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_clusters_data_stops_once_its_peers_can_tell() {
    let (mut ours, mut theirs, ours_id, theirs_id) = swapped().await;
    replace_node3(&mut ours, &mut theirs).await;
    ours.freeze(0, true);
    ours.freeze(1, true);
    ours.spawn(2);
    // It starts (its peers never answered), and serves nothing meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ours.status(2).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fetched = ours.client(2).fetch("theirs.app", 3).await;
    assert_ne!(
        fetched.code(),
        0,
        "served another cluster's app: {}",
        fetched.text
    );
    ours.freeze(0, false);
    ours.freeze(1, false);
    let said = format!("this data directory belongs to cluster {theirs_id}");
    let log = exits_saying(&mut ours, &said).await;
    assert!(log.contains(&ours_id), "{log}");
    ours_unharmed(&ours).await;
}
