//! A data directory that is not this node's, or whose files are damaged,
//! stops the node at start with an error naming the file; it never starts
//! empty over it.

mod common;

use std::path::Path;

use common::{single_config, Client};
use raft_discovery::config::Config;
use raft_discovery::node::Node;

/// A node on `dir` that registers `n` instances and takes snapshots as it
/// goes, then stops.
async fn fill(dir: &Path, n: usize) -> Config {
    let mut config = single_config(dir);
    config.raft.snapshot_every = 5;
    config.raft.keep_logs = 0;
    let config = config.finish().unwrap();
    let node = Node::start(config.clone()).await.unwrap();
    let c = Client {
        base: format!("http://{}", node.addr()),
        http: reqwest::Client::new(),
    };
    for _ in 0..200 {
        if c.status().await["protected"] == false {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    for i in 0..n {
        let answer = c.register("disk.app", "sh001", &format!("h{i}"), "1").await;
        assert_eq!(answer.code(), 0, "{}", answer.text);
    }
    // Snapshots are built and the log purged behind them in the
    // background: the tests need the log compacted before the stop.
    if n >= 10 {
        let mut metrics = node.raft().metrics();
        let purged = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            metrics.wait_for(|m| m.purged.is_some()),
        )
        .await;
        assert!(purged.is_ok(), "the log was never compacted");
    }
    node.shutdown().await.unwrap();
    config
}

async fn refused(config: Config) -> String {
    match Node::start(config).await {
        Ok(node) => {
            node.shutdown().await.unwrap();
            panic!("the node started");
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_data_directory_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = fill(dir.path(), 3).await;
    config.node.id = 2;
    let e = refused(config.clone()).await;
    assert!(
        e.contains("node_id") && e.contains("belongs to node 1") && e.contains("node 2"),
        "{e}"
    );
    // Its own node starts.
    config.node.id = 1;
    let node = Node::start(config.clone()).await.unwrap();
    node.shutdown().await.unwrap();
    // A backup restored onto another node goes without the marker: that
    // node adopts it.
    std::fs::remove_file(dir.path().join("node_id")).unwrap();
    config.node.id = 2;
    let node = Node::start(config).await.unwrap();
    node.shutdown().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("node_id")).unwrap(),
        "2"
    );
}

#[tokio::test]
async fn a_truncated_snapshot_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = fill(dir.path(), 12).await;
    let snapshot = dir.path().join("snapshot.json");
    let bytes = std::fs::read(&snapshot).unwrap();
    std::fs::write(&snapshot, &bytes[..bytes.len() / 2]).unwrap();
    let e = refused(config).await;
    assert!(
        e.contains("snapshot.json") && e.contains("corrupt or truncated"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_snapshot_behind_a_compacted_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = fill(dir.path(), 12).await;
    std::fs::remove_file(dir.path().join("snapshot.json")).unwrap();
    let e = refused(config).await;
    assert!(
        e.contains("compacted up to index") && e.contains("snapshot.json"),
        "{e}"
    );
}

#[tokio::test]
async fn a_lost_log_is_refused_rather_than_started_empty() {
    let dir = tempfile::tempdir().unwrap();
    let config = fill(dir.path(), 3).await;
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    let e = refused(config.clone()).await;
    assert!(e.contains("holds no log") && e.contains("node_id"), "{e}");
}

#[tokio::test]
async fn a_corrupt_owner_marker_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = fill(dir.path(), 1).await;
    std::fs::write(dir.path().join("node_id"), "\u{0}garbage").unwrap();
    let e = refused(config).await;
    assert!(e.contains("node_id is corrupt"), "{e}");
}
