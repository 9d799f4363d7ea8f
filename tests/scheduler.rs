//! The per-app scheduler changed at run time through the admin API and
//! `discoveryctl scheduler`: replicated, served in the `[{src, dst}]` shape
//! the SDKs read, waking polls, winning over the configuration file's.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{discoveryctl, wait_held, TestNode};
use raft_discovery::registry::{Schedule, SchedulerRule};
use serde_json::{json, Value};

const TOKEN: &str = "scheduler-test-token";

async fn scheduler_of(node: &TestNode, appid: &str) -> Value {
    let v = node.client().fetch(appid, 3).await.json();
    v["data"]["scheduler"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_set_at_run_time_is_served_wakes_polls_and_outlives_a_restart() {
    let mut node = TestNode::start_with(10_000, |c| {
        c.security.admin_token = TOKEN.into();
        c.schedules = vec![Schedule {
            appid: "filed.app".into(),
            env: None,
            rules: vec![SchedulerRule {
                src: "sh001".into(),
                dst: BTreeMap::from([("sh001".to_string(), 1)]),
            }],
        }];
    })
    .await;
    let c = node.client();
    for app in ["sched.app", "filed.app"] {
        assert_eq!(c.register(app, "sh001", "h1", "1").await.code(), 0);
    }
    assert!(scheduler_of(&node, "sched.app").await.is_null());

    // A poll held on the app wakes with the new scheduler.
    let latest = c.latest("sched.app").await;
    let poller = c.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let a = poller
            .get(&format!(
                "/discovery/polls?env=dev&appid=sched.app&latest_timestamp={latest}&hostname=p"
            ))
            .await;
        (a, started.elapsed())
    });
    wait_held(&c, 1).await;
    let out = discoveryctl(
        &node.base,
        Some(TOKEN),
        &[
            "scheduler",
            "set",
            "sched.app",
            "--rule",
            "sh001=sh001:3,sh002:1",
            "--rule",
            "sh002=sh002:1",
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("scheduler set"), "{out}");
    let (woken, took) = poll.await.unwrap();
    assert!(took < Duration::from_secs(5), "woken after {took:?}");
    let want = json!([
        {"src": "sh001", "dst": {"sh001": 3, "sh002": 1}},
        {"src": "sh002", "dst": {"sh002": 1}}
    ]);
    assert_eq!(
        woken.json()["data"]["sched.app"]["scheduler"],
        want,
        "{}",
        woken.text
    );
    assert_eq!(scheduler_of(&node, "sched.app").await, want);

    // One set at run time wins over the file's; cleared, the file's is back.
    discoveryctl(
        &node.base,
        Some(TOKEN),
        &["scheduler", "set", "filed.app", "--rule", "sh001=sh002:1"],
    )
    .await
    .unwrap();
    assert_eq!(
        scheduler_of(&node, "filed.app").await,
        json!([{"src": "sh001", "dst": {"sh002": 1}}])
    );
    let listed = discoveryctl(&node.base, None, &["scheduler", "list"])
        .await
        .unwrap();
    assert!(
        listed.contains("sched.app") && listed.contains("config"),
        "{listed}"
    );
    discoveryctl(
        &node.base,
        Some(TOKEN),
        &["scheduler", "clear", "filed.app"],
    )
    .await
    .unwrap();
    assert_eq!(
        scheduler_of(&node, "filed.app").await,
        json!([{"src": "sh001", "dst": {"sh001": 1}}])
    );

    // Without the token, or with a scheduler that sends traffic nowhere,
    // nothing changes.
    let refused = discoveryctl(&node.base, None, &["scheduler", "clear", "sched.app"]).await;
    assert!(refused.unwrap_err().contains("refused"));
    let bad = c
        .http
        .post(node.url("/admin/scheduler"))
        .bearer_auth(TOKEN)
        .json(&json!({"appid": "sched.app", "scheduler": [{"src": "sh001", "dst": {"sh001": -1}}]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(bad["code"], -400, "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("scheduler"),
        "{bad}"
    );
    assert_eq!(scheduler_of(&node, "sched.app").await, want);

    // It is in the log: a restarted node serves it.
    node.restart().await;
    assert_eq!(scheduler_of(&node, "sched.app").await, want);
    node.stop().await;
}
