//! A node recovers its registry from its own data directory.

mod common;

use std::process::{Child, Stdio};

use common::{free_port, serving, Client, TestNode};

async fn register_some(c: &Client, n: usize) {
    for i in 0..n {
        let app = format!("app{}", i % 3);
        assert_eq!(
            c.register(&app, "sh001", &format!("h{i}"), "1")
                .await
                .code(),
            0
        );
    }
    let set = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "app0"),
        ("hostname", "h0"),
        ("status", "2"),
    ];
    assert_eq!(c.post("/discovery/set", &set).await.code(), 0);
    let cancel = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "app1"),
        ("hostname", "h1"),
    ];
    assert_eq!(c.post("/discovery/cancel", &cancel).await.code(), 0);
}

async fn everything(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for app in ["app0", "app1", "app2"] {
        out.push(c.fetch(app, 3).await.text);
    }
    out
}

#[tokio::test]
async fn a_restarted_node_has_its_instances_and_timestamps_back() {
    // A small snapshot interval: the restart loads a snapshot and replays
    // the log after it.
    let mut node = TestNode::start_with(1000, |c| {
        c.raft.snapshot_every = 10;
        c.raft.keep_logs = 2;
    })
    .await;
    let c = node.client();
    register_some(&c, 25).await;
    let before = everything(&c).await;
    let status = c.status().await;
    assert!(
        status["snapshot_index"].as_u64().is_some(),
        "a snapshot was taken: {status}"
    );
    node.restart().await;
    let c = node.client();
    assert_eq!(everything(&c).await, before);
    assert_eq!(c.status().await["instances"], 24);
    // And it keeps taking writes where it left off.
    assert_eq!(c.register("app2", "sh001", "after", "1").await.code(), 0);
    node.stop().await;
}

struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> Process {
    let child = common::single_node(dir, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("discovery starts");
    Process { child }
}

/// A lone node that took `n` writes and was then killed: its data
/// directory, its port, a client, and everything it held.
async fn killed_after(n: usize) -> (tempfile::TempDir, u16, Client, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let c = Client {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let mut process = spawn(dir.path(), port);
    serving(&c).await;
    register_some(&c, n).await;
    let before = everything(&c).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    (dir, port, c, before)
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let (dir, port, c, before) = killed_after(12).await;
    let _process = spawn(dir.path(), port);
    serving(&c).await;
    assert_eq!(everything(&c).await, before);
}

/// A node restarted on its data directory with another `--zone` refuses
/// to start (exit non-zero) saying the zone is stored there and how to
/// move a node, rather than serving on as the old zone without a word.
#[tokio::test]
async fn a_restart_with_another_zone_is_refused_saying_why() {
    let (dir, port, _, _) = killed_after(2).await;
    let stderr = dir.path().join("stderr");
    let mut child = common::single_node(dir.path(), port)
        .args(["--zone", "second"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("discovery runs");
    // It must end by itself; one still running after 20 s serves on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let said = std::fs::read_to_string(&stderr).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("it runs with another zone: {said}"));
    assert!(!status.success(), "it started: {said}");
    assert!(
        said.contains(
            "is of zone sh001 in the cluster membership stored in its data directory, not second"
        ) && said.contains("discoveryctl remove --id 1"),
        "{said}"
    );
}
