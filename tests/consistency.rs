//! A node whose stored data was altered while it was stopped (an instance
//! changed in its Raft log on disk: a bit flip, an editor, a restore gone
//! wrong) is found out by the check it makes before it serves: it never
//! serves the altered registry.

mod common;

use common::cluster::{Cluster, Timings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_altered_on_disk_is_found_before_the_node_serves() {
    let mut cluster = Cluster::start(
        3,
        Timings {
            lifecycle: "[consistency]\ncheck_every_ms = 300\n".into(),
            ..Timings::default()
        },
    )
    .await;
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
}
