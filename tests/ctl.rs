//! `discoveryctl` for the day-to-day: apps, one app's instances, and a
//! `tail -f` of an app, in tables or JSON; nodes from `DISCOVERY_NODES`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, TestNode};

fn ctl(node: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["--node", node])
        .args(args)
        .env_remove("DISCOVERY_NODES")
        .output()
        .expect("discoveryctl runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn apps_and_instances_show_the_registry_as_tables_or_json() {
    let node = TestNode::start(2_000).await;
    let c = node.client();
    for (app, host) in [("shop.cart", "h1"), ("shop.cart", "h2"), ("shop.pay", "p1")] {
        assert_eq!(c.register(app, "sh001", host, "1").await.code(), 0);
    }
    let addr = node.base.clone();
    let apps = tokio::task::spawn_blocking(move || ctl(&addr, &["apps", "--env", "dev"]))
        .await
        .unwrap();
    let cart = apps.lines().find(|l| l.contains("shop.cart")).expect(&apps);
    let cols: Vec<&str> = cart.split_whitespace().collect();
    assert_eq!(cols[..5], ["dev", "shop.cart", "2", "2", "sh001"], "{apps}");
    assert!(apps.contains("shop.pay"), "{apps}");

    let addr = node.base.clone();
    let listed = tokio::task::spawn_blocking(move || ctl(&addr, &["instances", "shop.cart"]))
        .await
        .unwrap();
    let h1 = listed.lines().find(|l| l.contains(" h1 ")).expect(&listed);
    assert!(h1.contains("up") && h1.contains("s ago"), "{listed}");
    assert!(listed.contains(" h2 "), "{listed}");

    let addr = node.base.clone();
    let json =
        tokio::task::spawn_blocking(move || ctl(&addr, &["--json", "instances", "shop.cart"]))
            .await
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["instances"]["sh001"].as_array().unwrap().len(), 2);

    // DISCOVERY_NODES: the first node is down, the second answers.
    let dead = format!("127.0.0.1:{}", free_port());
    let nodes = format!("{dead},{}", node.base);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
            .args(["--json", "apps"])
            .env("DISCOVERY_NODES", nodes)
            .env_remove("DISCOVERY_NODE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let appids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["appid"].as_str().unwrap())
        .collect();
    assert_eq!(appids, ["infra.discovery", "shop.cart", "shop.pay"], "{v}");
    node.stop().await;
}

// Multi-threaded: the test blocks on the watcher's output while the
// in-process node answers its polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_change_as_it_comes() {
    let node = TestNode::start(2_000).await;
    let c = node.client();
    assert_eq!(c.register("tail.app", "sh001", "h1", "1").await.code(), 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["--node", &node.base, "watch", "tail.app"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |lines: &std::sync::mpsc::Receiver<String>| {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from watch")
    };
    assert_eq!(next(&lines), "+ sh001 h1 up grpc://h1:9000 ");
    assert_eq!(c.register("tail.app", "sh001", "h2", "1").await.code(), 0);
    assert_eq!(next(&lines), "+ sh001 h2 up grpc://h2:9000 ");
    // Set to waiting: a change, not a departure.
    let set = |status: &'static str| {
        let c = c.clone();
        async move {
            let form = [
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "tail.app"),
                ("hostname", "h2"),
                ("status", status),
            ];
            let answer = c.post("/discovery/set", &form).await;
            assert_eq!(answer.code(), 0, "{}", answer.text);
        }
    };
    set("2").await;
    assert_eq!(next(&lines), "~ sh001 h2 waiting grpc://h2:9000 ");
    set("1").await;
    assert_eq!(next(&lines), "~ sh001 h2 up grpc://h2:9000 ");
    let cancel = c
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "tail.app"),
                ("hostname", "h1"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), 0);
    assert_eq!(next(&lines), "- sh001 h1");
    let _ = child.kill();
    let _ = child.wait();
    node.stop().await;
}

/// Output cut short (`discoveryctl apps | head -3`): the command ends
/// quietly on the closed pipe, without a panic.
#[tokio::test]
async fn output_cut_short_ends_quietly() {
    let node = TestNode::start(2_000).await;
    let c = node.client();
    for n in 0..50 {
        let app = format!("cut.app{n}");
        assert_eq!(c.register(&app, "sh001", "h1", "1").await.code(), 0);
    }
    let addr = node.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        // A pipe whose reading end is closed before anything is written.
        let mut fds = [0; 2];
        // SAFETY: a fresh pipe; each end is owned once below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the read end is ours alone; closing it is the point.
        unsafe { libc::close(fds[0]) };
        // SAFETY: the write end is ours alone, handed to the child.
        let write =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
            .args(["--node", &addr, "apps", "--env", "dev"])
            .env_remove("DISCOVERY_NODES")
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped())
            .output()
            .expect("discoveryctl runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
