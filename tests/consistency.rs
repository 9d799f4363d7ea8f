//! A node whose stored data was altered while it was stopped (an instance
//! changed in its Raft log on disk: a bit flip, an editor, a restore gone
//! wrong) is found out by the check it makes before it serves: it never
//! serves the altered registry, and rebuilds it from the cluster. An
//! operator can have any node rebuilt (`discoveryctl repair`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, Timings, ADMIN_TOKEN};

/// Checks every 300 ms.
fn checked() -> Timings {
    Timings {
        lifecycle: "[consistency]\ncheck_every_ms = 300\n".into(),
        ..Timings::default()
    }
}

/// What a rebuilt node says once a check finds it agrees.
const REBUILT: &str = "rebuilt from the cluster: this node agrees again";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_altered_on_disk_is_found_before_the_node_serves() {
    let mut cluster = Cluster::start(3, checked()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in ["keep-1", "flip-me", "keep-2"] {
        assert_eq!(c.register("stored.app", "sh001", h, "1").await.code(), 0);
    }
    let odd = (leader + 1) % 3;
    cluster.wait_serving(odd).await;
    cluster.terminate(odd).await;

    // One byte of the stored register of `flip-me`, in the node's log.
    let id = cluster.slots[odd].id;
    {
        let db = sled::open(cluster.data_dir_of(id).join("sled")).unwrap();
        let logs = db.open_tree("raft_log").unwrap();
        let mut altered = 0;
        for item in logs.iter() {
            let (key, value) = item.unwrap();
            let text = String::from_utf8(value.to_vec()).unwrap();
            if text.contains("\"flip-me\"") {
                logs.insert(key, text.replace("\"flip-me\"", "\"flip-mE\"").as_bytes())
                    .unwrap();
                altered += 1;
            }
        }
        assert_eq!(altered, 1, "the register is in one entry");
        db.flush().unwrap();
    }

    cluster.spawn(odd);
    // Never served: not the altered instance, nor anything.
    let status = cluster.never_served_until_diverged(odd, "stored.app").await;
    let why = status["diverged"].as_str().unwrap();
    assert!(why.contains("stored.app"), "{why}");
    // The others serve the registry as written.
    let fetched = c.fetch("stored.app", 3).await;
    assert!(fetched.text.contains("\"flip-me\""), "{}", fetched.text);
    // And so does the altered node, once rebuilt from them.
    cluster.logged(odd, REBUILT, Duration::from_secs(30)).await;
    cluster.wait_serving(odd).await;
    let fetched = cluster.client(odd).fetch("stored.app", 3).await;
    assert!(fetched.text.contains("\"flip-me\""), "{}", fetched.text);
    assert!(!fetched.text.contains("flip-mE"), "{}", fetched.text);
    cluster.one_registry(Duration::from_secs(10)).await;
}

/// `discoveryctl repair ID`, asked of any node, with the admin token.
fn repair(node: &str, id: u64, token: Option<&str>) -> std::process::Output {
    let mut ctl = Command::new(env!("CARGO_BIN_EXE_discoveryctl"));
    ctl.args(["--node", node])
        .env_remove("DISCOVERY_NODES")
        .env_remove("DISCOVERY_ADMIN_TOKEN");
    if let Some(token) = token {
        ctl.args(["--token", token]);
    }
    ctl.args(["repair", &id.to_string()])
        .output()
        .expect("discoveryctl runs")
}

/// An operator has a healthy voter rebuilt from the cluster: it gives up
/// its vote, starts again empty, is replicated to, and votes and serves
/// again with the same registry. Without the admin token nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_has_a_node_rebuilt() {
    let cluster = Cluster::start(3, checked()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.register("kept.app", "sh001", h, "1").await.code(), 0);
    }
    let target = (leader + 1) % 3;
    let id = cluster.slots[target].id;
    let addr = cluster.addr(leader);

    let refused = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || repair(&addr, id, None)
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !cluster.log(target).contains("repairing"),
        "{}",
        cluster.log(target)
    );

    let asked = tokio::task::spawn_blocking(move || repair(&addr, id, Some(ADMIN_TOKEN)))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&asked.stdout);
    assert!(
        asked.status.success() && said.contains(&format!("node {id} gives up its vote")),
        "{said}{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    cluster
        .logged(target, REBUILT, Duration::from_secs(30))
        .await;
    cluster.wait_serving(target).await;
    let status = cluster.status(target).await.unwrap();
    assert!(
        status["voters"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(id)),
        "{status}"
    );
    let fetched = cluster.client(target).fetch("kept.app", 3).await;
    for h in ["h1", "h2", "h3"] {
        assert!(fetched.text.contains(h), "{}", fetched.text);
    }
    assert_eq!(c.register("kept.app", "sh001", "h4", "1").await.code(), 0);
    cluster.one_registry(Duration::from_secs(10)).await;
}
