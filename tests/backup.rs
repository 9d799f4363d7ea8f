//! `discoveryctl backup` and `restore`: a consistent copy of a registry,
//! restored through the log into another cluster, with the admin token.

mod common;

use common::{discoveryctl as ctl, TestNode};
use serde_json::Value;

const TOKEN: &str = "backup-test-token";

async fn node() -> TestNode {
    TestNode::start_with(2_000, |c| c.security.admin_token = TOKEN.into()).await
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
