//! `discoveryctl backup` and `restore`: a consistent copy of a registry,
//! restored through the log into another cluster, with the admin token.

mod common;

use common::{discoveryctl as ctl, TestNode};
use serde_json::Value;

const TOKEN: &str = "backup-test-token";

async fn node() -> TestNode {
    TestNode::start_with(2_000, |c| c.security.admin_token = TOKEN.into()).await
}

/// Restores `backup` through `c`'s node with `token`: what it answered.
async fn restore(c: &common::Client, token: &str, backup: Vec<u8>) -> String {
    c.http
        .post(format!("{}/admin/restore", c.base))
        .bearer_auth(token)
        .body(backup)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Every instance as `(zone, hostname, addrs, metadata, version, status,
/// reg_timestamp)`, which a restore keeps.
async fn instances(node: &TestNode, appid: &str) -> Vec<Value> {
    let v = node
        .client()
        .get(&format!("/discovery/fetch?env=dev&appid={appid}&status=3"))
        .await
        .json();
    let mut all: Vec<Value> = v["data"]["instances"]
        .as_object()
        .into_iter()
        .flat_map(|z| z.values())
        .flat_map(|l| l.as_array().unwrap().clone())
        .map(|i| {
            serde_json::json!([
                i["zone"],
                i["hostname"],
                i["addrs"],
                i["metadata"],
                i["version"],
                i["status"],
                i["reg_timestamp"]
            ])
        })
        .collect();
    all.sort_by_key(|v| v.to_string());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_another_cluster_with_its_instances() {
    let from = node().await;
    let c = from.client();
    for (zone, host) in [("sh001", "a1"), ("sh001", "a2"), ("sh002", "b1")] {
        let r = c
            .post(
                "/discovery/register",
                &[
                    ("zone", zone),
                    ("env", "dev"),
                    ("appid", "kept.app"),
                    ("hostname", host),
                    ("status", "1"),
                    ("addrs", "grpc://10.0.0.1:9000"),
                    ("version", "v2"),
                    ("metadata", r#"{"weight":"5"}"#),
                ],
            )
            .await;
        assert_eq!(r.code(), 0, "{}", r.text);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry.json");
    let file_arg = file.to_str().unwrap();

    // Without the token: refused, no file.
    let refused = ctl(&from.base, None, &["backup", file_arg]).await;
    assert!(refused.unwrap_err().contains("refused"));
    assert!(!file.exists());
    let said = ctl(&from.base, Some(TOKEN), &["backup", file_arg])
        .await
        .unwrap();
    assert!(said.contains("instances at index"), "{said}");

    let to = node().await;
    let t = to.client();
    assert_eq!(
        t.register("replaced.app", "sh001", "x", "1").await.code(),
        0
    );
    // An app both hold, polled on the target with the target's latest
    // timestamp: the restore must wake it.
    assert_eq!(t.register("kept.app", "sh001", "old", "1").await.code(), 0);
    let latest_before = t.fetch("kept.app", 3).await.json()["data"]["latest_timestamp"].clone();
    let held = {
        let t = t.clone();
        let latest = latest_before.to_string();
        tokio::spawn(async move {
            t.get(&format!(
                "/discovery/poll?env=dev&appid=kept.app&hostname=p&latest_timestamp={latest}"
            ))
            .await
        })
    };
    let refused = ctl(&to.base, Some("wrong"), &["restore", file_arg]).await;
    assert!(refused.unwrap_err().contains("refused"));
    let said = ctl(&to.base, Some(TOKEN), &["restore", file_arg])
        .await
        .unwrap();
    assert!(said.contains("restored 3 instances"), "{said}");

    // The same instances, with what they stated and when they registered;
    // what the target held before is gone, and its held poll woke.
    assert_eq!(
        instances(&to, "kept.app").await,
        instances(&from, "kept.app").await
    );
    assert_eq!(instances(&to, "kept.app").await.len(), 3);
    assert_eq!(t.fetch("replaced.app", 3).await.code(), -404);
    let woke = held.await.unwrap();
    assert_eq!(woke.code(), 0, "the held poll woke: {}", woke.text);
    assert!(
        woke.text.contains("\"b1\"") && !woke.text.contains("\"old\""),
        "{}",
        woke.text
    );
    // A garbled file is refused, naming the parameter, and changes nothing.
    std::fs::write(&file, "{\"format\":1,\"registry\":").unwrap();
    let garbled = ctl(&to.base, Some(TOKEN), &["restore", file_arg]).await;
    assert!(garbled.unwrap_err().contains("backup"));
    assert_eq!(instances(&to, "kept.app").await.len(), 3);
    from.stop().await;
    to.stop().await;
}

/// A backup many times larger than one log entry restores in parts on a
/// three-node cluster: every node ends with the backup's instances and the
/// same digest, a steady writer meanwhile gets no -503 and no election
/// happens, and a restore's parts out of order are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_larger_than_an_entry_restores_in_parts_while_writes_go_on() {
    use common::cluster::{Cluster, Timings, ADMIN_TOKEN};
    let cluster = Cluster::start(
        3,
        Timings {
            // Small entries; and 1,500 new instances from one address at once.
            lifecycle: "[limits]\nentry_bytes = 65536\n\
                        [connections]\nnew_instances_burst = 5000\nnew_instances_per_app_burst = 5000\n"
                .into(),
            ..Timings::default()
        },
    )
    .await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    let metadata = format!("{{\"blob\":\"{}\"}}", "m".repeat(1000));
    let registers = (0..1500).map(|i| {
        let (c, metadata) = (c.clone(), metadata.clone());
        async move {
            let host = format!("host-{i:04}");
            c.post(
                "/discovery/register",
                &[
                    ("zone", "sh001"),
                    ("env", "dev"),
                    ("appid", if i % 3 == 0 { "small.app" } else { "big.app" }),
                    ("hostname", &host),
                    ("status", "1"),
                    ("addrs", "http://10.0.0.1:80"),
                    ("metadata", &metadata),
                ],
            )
            .await
        }
    });
    use futures::StreamExt;
    let answers: Vec<_> = futures::stream::iter(registers)
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(refused) = answers.iter().find(|a| a.code() != 0) {
        panic!("a register refused: {}", refused.text);
    }
    let admin = |path: &str| {
        c.http
            .get(format!("{}{path}", c.base))
            .bearer_auth(ADMIN_TOKEN)
    };
    let backup = admin("/admin/backup")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(backup.len() > 1_500_000, "{} bytes", backup.len());
    // Change the registry, then restore it as it was.
    for i in 0..20 {
        let host = format!("host-{:04}", i * 3 + 1);
        let r = c
            .post(
                "/discovery/cancel",
                &[
                    ("zone", "sh001"),
                    ("env", "dev"),
                    ("appid", "big.app"),
                    ("hostname", &host),
                ],
            )
            .await;
        assert_eq!(r.code(), 0, "{}", r.text);
    }
    let term = cluster.status(leader).await.unwrap()["term"].clone();
    // A steady writer through a follower while the restore runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (w, stop) = (cluster.client((leader + 1) % 3), stop.clone());
        tokio::spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = w.register("steady.app", "sh001", "w1", "1").await;
                codes.push(answer.code());
            }
            codes
        })
    };
    let restored = restore(&c, ADMIN_TOKEN, backup.to_vec()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = writer.await.unwrap();
    assert!(restored.contains("restored 1500 instances"), "{restored}");
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 0),
        "{codes:?}"
    );
    assert_eq!(
        cluster.status(leader).await.unwrap()["term"],
        term,
        "an election"
    );
    let log = cluster.log(leader);
    let parts: usize = log
        .lines()
        .find(|l| l.contains("registry restored from a backup"))
        .and_then(|l| l.split("parts=").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no restore line:\n{log}"));
    assert!(parts > 20, "{parts} parts");
    // Every node holds the backup's instances (the steady writer's
    // instance is gone with the restore, or came after it) and, at the
    // leader's applied index, they agree.
    let index = cluster.status(leader).await.unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    let mut digests = Vec::new();
    for i in 0..3 {
        cluster.wait_applied(i, index).await;
        let a = cluster.client(i);
        for _ in 0..100 {
            if a.fetch("big.app", 3).await.json()["data"]["instances"]["sh001"]
                .as_array()
                .is_some_and(|l| l.len() == 1000)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let big = a.fetch("big.app", 3).await.json();
        assert_eq!(
            big["data"]["instances"]["sh001"].as_array().unwrap().len(),
            1000
        );
        digests.push(a.get("/admin/digest").await.json()["digest"].clone());
    }
    assert!(
        digests.iter().all(|d| d.is_string()) && digests.windows(2).all(|w| w[0] == w[1]),
        "{digests:?}"
    );
}

/// Backups are written while they are sent: readers that never read hold
/// a few chunks each, not the whole registry, at most two backups are
/// written at once (a third is refused at once with -503), and a reader
/// that goes gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_never_read_a_backup_hold_little_and_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = node().await;
    let c = node.client();
    assert_eq!(c.register("big.app", "sh001", "seed", "1").await.code(), 0);
    let admin = |path: &str| c.http.get(format!("{}{path}", c.base)).bearer_auth(TOKEN);
    // A backup of about 12 MB, more than the sockets between a reader and
    // the node hold: the seed instance, many times, with large metadata.
    let seed: Value = admin("/admin/backup")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut backup = seed.clone();
    let template = seed["registry"]["apps"][0]["instances"][0].clone();
    let blob = "b".repeat(1000);
    let instances: Vec<Value> = (0..12_000)
        .map(|i| {
            let mut one = template.clone();
            one["hostname"] = format!("host-{i:05}").into();
            one["metadata"] = serde_json::json!({ "blob": blob });
            one
        })
        .collect();
    backup["registry"]["apps"][0]["instances"] = instances.into();
    let said = restore(&c, TOKEN, serde_json::to_vec(&backup).unwrap()).await;
    assert!(said.contains("restored 12000 instances"), "{said}");
    let rss_before = rss_kb();

    // Two readers that ask and never read, with small receive buffers.
    let addr = node.base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr.parse().unwrap()).await.unwrap();
        s.write_all(
            format!(
                "GET /admin/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // The answer has begun.
        let mut first = [0u8; 64];
        let n = s.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
        stalled.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // A third is refused at once while they hold their places.
    let third = admin("/admin/backup").send().await.unwrap();
    assert_eq!(third.status(), 503);
    let text = third.text().await.unwrap();
    assert!(
        text.contains("\"code\":-503") && text.contains("backups"),
        "{text}"
    );
    // What the two hold: far less than two copies of the backup (12 MB
    // each as JSON); measured on this test's whole process.
    if let (Some(before), Some(now)) = (rss_before, rss_kb()) {
        let grown = now.saturating_sub(before);
        assert!(grown < 16_000, "the process grew by {grown} KB");
    }
    // The readers go: their places come back, and a whole backup is read.
    drop(stalled);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = admin("/admin/backup").send().await.unwrap();
        if r.status() == 200 {
            let whole: Value = r.json().await.unwrap();
            let n = whole["registry"]["apps"][0]["instances"]
                .as_array()
                .unwrap()
                .len();
            assert_eq!(n, 12_000);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "places not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    node.stop().await;
}

/// This process's resident memory, in KB (Linux).
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
