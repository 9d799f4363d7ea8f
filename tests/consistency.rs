//! Stored data altered on disk (a bit flip, an editor, a restore gone
//! wrong) is found before it is served: a log entry changed or removed
//! while the node was stopped, when it starts; a snapshot changed under a
//! running node, by the scrub. The node rebuilds from its cluster. An
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

/// Edits node `id`'s stored log while it is stopped, as a bit flip or an
/// editor would: `edit` is called with each entry's index and stored
/// bytes, and answers what to store instead (`Some(None)`: remove it).
/// How many entries it changed.
fn edit_log(
    cluster: &Cluster,
    id: u64,
    mut edit: impl FnMut(u64, &[u8]) -> Option<Option<Vec<u8>>>,
) -> usize {
    let db = sled::open(cluster.data_dir_of(id).join("sled")).unwrap();
    let logs = db.open_tree("raft_log").unwrap();
    let mut edited = 0;
    for item in logs.iter() {
        let (key, value) = item.unwrap();
        let index = u64::from_be_bytes(key.as_ref().try_into().unwrap());
        match edit(index, &value) {
            None => continue,
            Some(Some(bytes)) => logs.insert(key, bytes).unwrap(),
            Some(None) => logs.remove(key).unwrap(),
        };
        edited += 1;
    }
    db.flush().unwrap();
    edited
}

/// Three nodes checking every 300 ms, `stored.app` registered on `hosts`,
/// then a follower that has it all stopped: the cluster, the leader, the
/// follower.
async fn stopped_follower(hosts: &[&str]) -> (Cluster, usize, usize) {
    let mut cluster = Cluster::start(3, checked()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for h in hosts {
        assert_eq!(c.register("stored.app", "sh001", h, "1").await.code(), 0);
    }
    let odd = (leader + 1) % 3;
    cluster.wait_serving(odd).await;
    // Stopped only once it holds every register: a write is acknowledged
    // once the other follower has it, and an entry this one never got
    // cannot be damaged on its disk (nor its removal be a gap).
    let status = cluster.status(leader).await.expect("the leader's status");
    let last = status["last_log_index"].as_u64().expect("a log index");
    cluster.wait_applied(odd, last).await;
    cluster.terminate(odd).await;
    (cluster, leader, odd)
}

/// `bytes` with the first `from` replaced by `to` (of the same length).
fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let at = bytes.windows(from.len()).position(|w| w == from)?;
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    Some(out)
}

/// Watches node `i`, just started on damaged data, until it says it has
/// rebuilt from the cluster: nothing it answers meanwhile may hold
/// `forbidden` (what the damage put there).
async fn never_served_until_rebuilt(cluster: &Cluster, i: usize, appid: &str, forbidden: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.log(i).contains(REBUILT) {
        assert!(
            std::time::Instant::now() < deadline,
            "never rebuilt:\n{}",
            cluster.log(i)
        );
        // Not listening yet, or stopped to rebuild.
        if cluster.status(i).await.is_some() {
            let read = cluster.client(i).fetch(appid, 3).await;
            assert!(!read.text.contains(forbidden), "served: {}", read.text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.wait_serving(i).await;
    let read = cluster.client(i).fetch(appid, 3).await;
    assert_eq!(read.code(), 0, "{}", read.text);
    assert!(!read.text.contains(forbidden), "served: {}", read.text);
    cluster.one_registry(Duration::from_secs(10)).await;
}

/// One byte of a stored register changed on disk: its checksum no longer
/// holds. Found when the node starts, before anything is served; the node
/// gives up its vote and rebuilds from the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_changed_on_disk_is_found_before_the_node_serves() {
    let (mut cluster, leader, odd) = stopped_follower(&["keep-1", "flip-me", "keep-2"]).await;
    let id = cluster.slots[odd].id;
    let altered = edit_log(&cluster, id, |_, bytes| {
        replaced(bytes, b"flip-me", b"flip-mE").map(Some)
    });
    assert_eq!(altered, 1, "the register is in one entry");

    cluster.spawn(odd);
    never_served_until_rebuilt(&cluster, odd, "stored.app", "flip-mE").await;
    let log = cluster.log(odd);
    assert!(
        log.contains("stored data is damaged") && log.contains("checksum mismatch"),
        "{log}"
    );
    let fetched = cluster.client(odd).fetch("stored.app", 3).await;
    assert!(fetched.text.contains("\"flip-me\""), "{}", fetched.text);
    // It votes again.
    assert!(cluster.voters(leader).await.contains(&id));
}

/// An entry in the middle of the stored log removed on disk: found at
/// start as missing, and rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_entry_removed_on_disk_is_found_before_the_node_serves() {
    let (mut cluster, _, odd) = stopped_follower(&["keep-1", "lose-me", "keep-2"]).await;
    let id = cluster.slots[odd].id;
    let removed = edit_log(&cluster, id, |_, bytes| {
        replaced(bytes, b"lose-me", b"lose-me").map(|_| None)
    });
    assert_eq!(removed, 1);

    cluster.spawn(odd);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.log(odd).contains(REBUILT) {
        assert!(std::time::Instant::now() < deadline, "{}", cluster.log(odd));
        if cluster.status(odd).await.is_some() {
            let read = cluster.client(odd).fetch("stored.app", 3).await;
            if read.code() == 0 {
                assert!(
                    read.text.contains("lose-me"),
                    "served without it: {}",
                    read.text
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cluster.log(odd).contains("are missing"),
        "{}",
        cluster.log(odd)
    );
    cluster.wait_serving(odd).await;
    cluster.one_registry(Duration::from_secs(10)).await;
    let fetched = cluster.client(odd).fetch("stored.app", 3).await;
    assert!(fetched.text.contains("lose-me"), "{}", fetched.text);
}

/// The snapshot file changed on disk under a running node: the scrub
/// reads it back, finds its checksum broken, takes the node out of service
/// and has it rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_changed_under_a_running_node_is_found_by_the_scrub() {
    let cluster = Cluster::start(
        3,
        Timings {
            snapshot_every: 20,
            keep_logs: 0,
            lifecycle: "[consistency]\ncheck_every_ms = 300\nscrub_every_ms = 200\n".into(),
            ..Timings::default()
        },
    )
    .await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for k in 0..40 {
        let h = format!("h{k}");
        assert_eq!(c.register("stored.app", "sh001", &h, "1").await.code(), 0);
    }
    let odd = (leader + 1) % 3;
    let id = cluster.slots[odd].id;
    let snapshot = cluster.data_dir_of(id).join("snapshot.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !snapshot.exists() {
        assert!(std::time::Instant::now() < deadline, "no snapshot built");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // In place, as a disk would: the same file, one byte changed.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    // A hostname in the frame: its length (2), then "h1".
    let at = bytes.windows(3).position(|w| w == b"\x02h1").unwrap() + 1;
    bytes[at] = b'H';
    std::fs::OpenOptions::new()
        .write(true)
        .open(&snapshot)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
    cluster
        .logged(odd, "checksum mismatch", Duration::from_secs(10))
        .await;
    assert!(cluster.log(odd).contains("stored data is damaged"));
    cluster.logged(odd, REBUILT, Duration::from_secs(30)).await;
    cluster.wait_serving(odd).await;
    cluster.one_registry(Duration::from_secs(10)).await;
    let scrubs = cluster.client(leader).get("/metrics").await.text;
    assert!(
        scrubs.contains("discovery_storage_scrubs_total"),
        "{scrubs}"
    );
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
    assert!(cluster.voters(target).await.contains(&id));
    let fetched = cluster.client(target).fetch("kept.app", 3).await;
    for h in ["h1", "h2", "h3"] {
        assert!(fetched.text.contains(h), "{}", fetched.text);
    }
    assert_eq!(c.register("kept.app", "sh001", "h4", "1").await.code(), 0);
    cluster.one_registry(Duration::from_secs(10)).await;
}
