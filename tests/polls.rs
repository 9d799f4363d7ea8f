//! Long polls over real HTTP: answered at once, held until a change or the
//! hold time, released when the client leaves.

mod common;

use std::time::{Duration, Instant};

use common::{wait_held, Client, TestNode};
use serde_json::json;

async fn poll(c: &Client, query: &str) -> (common::Answer, Duration) {
    let start = Instant::now();
    let a = c.get(&format!("/discovery/polls?{query}")).await;
    (a, start.elapsed())
}

#[tokio::test]
async fn polls_from_zero_answer_at_once() {
    let node = TestNode::start(5000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    let (a, took) = poll(&c, "env=dev&hostname=c1&appid=demo.app&latest_timestamp=0").await;
    assert!(took < Duration::from_secs(2));
    assert_eq!(a.headers["kratos-status-code"], "0");
    let fetched = c.fetch("demo.app", 1).await.json()["data"].clone();
    assert_eq!(
        a.json(),
        json!({"code":0,"data":{"demo.app":fetched},"error":{"-404":null},"message":"0"})
    );
    assert!(a
        .text
        .starts_with(r#"{"code":0,"data":{"demo.app":{"instances":"#));
    assert!(a
        .text
        .ends_with(r#"},"error":{"-404":null},"message":"0"}"#));

    let (a, _) = poll(
        &c,
        "env=dev&hostname=c1&appid=demo.app&appid=no.such.app&latest_timestamp=0&latest_timestamp=0",
    )
    .await;
    assert_eq!(a.json()["error"], json!({"-404": ["no.such.app"]}));
    assert!(a.json()["data"].get("no.such.app").is_none());

    // Comma-joined lists, as the Python SDK sends them.
    let (a, _) = poll(
        &c,
        "env=dev&hostname=c1&appid=demo.app,infra.discovery&latest_timestamp=0,0",
    )
    .await;
    let data = a.json()["data"].as_object().unwrap().clone();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec!["demo.app", "infra.discovery"]
    );
    node.stop().await;
}

#[tokio::test]
async fn singular_poll_answers_fetch_data_or_not_found() {
    let node = TestNode::start(5000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    let fetched = c.fetch("demo.app", 1).await;
    let a = c
        .get("/discovery/poll?env=dev&hostname=c1&appid=demo.app&latest_timestamp=0")
        .await;
    assert_eq!(a.text, fetched.text);
    let a = c
        .get("/discovery/poll?env=dev&hostname=c1&appid=demo.app")
        .await;
    assert_eq!(a.text, fetched.text, "no latest_timestamp means 0");
    let a = c
        .get("/discovery/poll?env=dev&hostname=c1&appid=no.such.app&latest_timestamp=0")
        .await;
    assert_eq!(a.text, r#"{"code":-404,"message":"no.such.app not found"}"#);
    assert_eq!(a.headers["kratos-status-code"], "-404");
    node.stop().await;
}

#[tokio::test]
async fn an_unchanged_poll_is_held_until_not_modified() {
    let node = TestNode::start(800).await;
    let c = node.client();
    c.register("quiet.app", "sh001", "q1", "1").await;
    let ts = c.latest("quiet.app").await;
    let (a, took) = poll(
        &c,
        &format!("env=dev&hostname=w1&appid=quiet.app&latest_timestamp={ts}"),
    )
    .await;
    assert_eq!(a.text, r#"{"code":-304,"message":"-304","ttl":1}"#);
    assert_eq!(a.headers["kratos-status-code"], "-304");
    assert!(took >= Duration::from_millis(750), "held {took:?}");
    assert!(took < Duration::from_millis(3000), "held {took:?}");

    // Singular poll, unknown apps, future timestamps and apps whose
    // instances all wait are held the same way.
    let a = c
        .get(&format!(
            "/discovery/poll?env=dev&hostname=w2&appid=quiet.app&latest_timestamp={ts}"
        ))
        .await;
    assert_eq!(a.code(), -304);
    let (a, took) = poll(
        &c,
        "env=dev&hostname=w4&appid=no.such.app&latest_timestamp=0",
    )
    .await;
    assert_eq!(a.code(), -304);
    assert!(took >= Duration::from_millis(750));
    let (a, _) = poll(
        &c,
        &format!(
            "env=dev&hostname=f1&appid=quiet.app&latest_timestamp={}",
            ts + 1000
        ),
    )
    .await;
    assert_eq!(a.code(), -304);
    c.register("down.app", "sh001", "d1", "2").await;
    let (a, _) = poll(&c, "env=dev&hostname=c1&appid=down.app&latest_timestamp=0").await;
    assert_eq!(
        a.code(),
        -304,
        "an app with no up instance does not answer: {}",
        a.text
    );
    node.stop().await;
}

/// Starts a poll in the background, waits until the node holds it, runs
/// `change`, and returns the poll's answer and how long it waited.
async fn woken_by<F, Fut>(
    c: &Client,
    query: String,
    held_before: u64,
    change: F,
) -> (common::Answer, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let poller = c.clone();
    let task = tokio::spawn(async move { poll(&poller, &query).await });
    wait_held(c, held_before + 1).await;
    change().await;
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("poll answered before its hold ended")
        .unwrap()
}

#[tokio::test]
async fn polls_wake_on_register_cancel_and_set() {
    let node = TestNode::start(10_000).await;
    let c = node.client();
    c.register("change.app", "sh001", "c1", "1").await;
    c.register("change.app", "sh001", "c2", "1").await;

    let ts = c.latest("change.app").await;
    let q = format!("env=dev&hostname=w3&appid=change.app&latest_timestamp={ts}");
    let (a, took) = woken_by(&c, q, 0, || async {
        assert_eq!(c.register("change.app", "sh001", "c3", "1").await.code(), 0);
    })
    .await;
    assert_eq!(a.code(), 0);
    assert!(took < Duration::from_secs(3));
    assert_eq!(
        a.json()["data"]["change.app"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(
        a.json()["data"]["change.app"]["latest_timestamp"]
            .as_i64()
            .unwrap()
            > ts
    );

    let ts = c.latest("change.app").await;
    let q = format!("env=dev&hostname=w3&appid=change.app&latest_timestamp={ts}");
    let (a, _) = woken_by(&c, q, 0, || async {
        let cancel = [
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "change.app"),
            ("hostname", "c3"),
        ];
        assert_eq!(c.post("/discovery/cancel", &cancel).await.code(), 0);
    })
    .await;
    assert_eq!(
        a.json()["data"]["change.app"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let ts = c.latest("change.app").await;
    let q = format!("env=dev&hostname=w3&appid=change.app&latest_timestamp={ts}");
    let (a, _) = woken_by(&c, q, 0, || async {
        let set = [
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "change.app"),
            ("hostname", "c2"),
            ("status", "2"),
        ];
        assert_eq!(c.post("/discovery/set", &set).await.code(), 0);
    })
    .await;
    let up = a.json()["data"]["change.app"]["instances"]["sh001"].clone();
    assert_eq!(
        up.as_array().unwrap().len(),
        1,
        "polls answer up instances only: {up}"
    );
    assert_eq!(up[0]["hostname"], "c1");
    node.stop().await;
}

#[tokio::test]
async fn a_multi_app_poll_answers_only_the_changed_app() {
    let node = TestNode::start(10_000).await;
    let c = node.client();
    c.register("a.app", "sh001", "a1", "1").await;
    c.register("b.app", "sh001", "b1", "1").await;
    let (ta, tb) = (c.latest("a.app").await, c.latest("b.app").await);
    let q = format!(
        "env=dev&hostname=w&appid=a.app&appid=b.app&latest_timestamp={ta}&latest_timestamp={tb}"
    );
    let (a, _) = woken_by(&c, q, 0, || async {
        c.register("b.app", "sh001", "b2", "1").await;
    })
    .await;
    let data = a.json()["data"].as_object().unwrap().clone();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["b.app"]);
    node.stop().await;
}

#[tokio::test]
async fn a_poll_on_an_unknown_app_wakes_when_it_registers() {
    let node = TestNode::start(10_000).await;
    let c = node.client();
    let q = "env=dev&hostname=w7&appid=late.app&latest_timestamp=0".to_string();
    let (a, _) = woken_by(&c, q, 0, || async {
        c.register("late.app", "sh001", "l1", "1").await;
    })
    .await;
    assert_eq!(
        a.json()["data"]["late.app"]["instances"]["sh001"][0]["hostname"],
        "l1"
    );
    assert_eq!(
        a.json()["error"],
        json!({"-404": null}),
        "the app exists when answered"
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_poll_parameters_are_named() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    for (query, param) in [
        (
            "env=dev&hostname=c1&appid=a&appid=b&latest_timestamp=0",
            "latest_timestamp",
        ),
        ("env=dev&hostname=c1&appid=a", "latest_timestamp"),
        ("env=dev&appid=a&latest_timestamp=0", "hostname"),
        ("hostname=c1&appid=a&latest_timestamp=0", "env"),
        ("env=dev&hostname=c1&latest_timestamp=0", "appid"),
        (
            "env=dev&hostname=c1&appid=a&latest_timestamp=soon",
            "latest_timestamp",
        ),
    ] {
        let (a, took) = poll(&c, query).await;
        assert_eq!(a.code(), -400, "{query}");
        assert!(
            a.json()["message"].as_str().unwrap().starts_with(param),
            "{query}: {}",
            a.text
        );
        assert!(took < Duration::from_millis(900), "refused at once");
    }
    let a = c.get("/discovery/poll?env=dev&appid=a").await;
    assert_eq!(a.code(), -400);
    node.stop().await;
}

#[tokio::test]
async fn a_disconnecting_client_releases_its_poll_at_once() {
    let node = TestNode::start(30_000).await;
    let c = node.client();
    c.register("quiet.app", "sh001", "q1", "1").await;
    let ts = c.latest("quiet.app").await;
    let poller = c.clone();
    let task = tokio::spawn(async move {
        poller
            .get(&format!(
                "/discovery/polls?env=dev&hostname=gone&appid=quiet.app&latest_timestamp={ts}"
            ))
            .await
    });
    wait_held(&c, 1).await;
    task.abort();
    let start = Instant::now();
    wait_held(&c, 0).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "released after {:?}",
        start.elapsed()
    );
    node.stop().await;
}

#[tokio::test]
async fn the_go_sdk_repoll_with_one_more_app_gets_the_next_change() {
    let node = TestNode::start(30_000).await;
    let c = node.client();
    c.register("a.app", "sh001", "a1", "1").await;
    c.register("b.app", "sh001", "b1", "1").await;
    let (ta, tb) = (c.latest("a.app").await, c.latest("b.app").await);

    // The SDK holds a poll on a.app under its hostname...
    let poller = c.clone();
    let first = tokio::spawn(async move {
        poller
            .get(&format!(
                "/discovery/polls?env=dev&hostname=sdk&appid=a.app&latest_timestamp={ta}"
            ))
            .await
    });
    wait_held(&c, 1).await;
    // ...drops it to watch one more app, and polls again at once.
    first.abort();
    let q = format!(
        "env=dev&hostname=sdk&appid=a.app&appid=b.app&latest_timestamp={ta}&latest_timestamp={tb}"
    );
    let (a, took) = woken_by(&c, q, 0, || async {
        c.register("a.app", "sh001", "a2", "1").await;
    })
    .await;
    assert!(took < Duration::from_secs(3));
    assert_eq!(
        a.json()["data"]["a.app"]["instances"]["sh001"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    node.stop().await;
}

#[tokio::test]
async fn several_polls_from_one_hostname_are_each_answered() {
    let node = TestNode::start(10_000).await;
    let c = node.client();
    c.register("a.app", "sh001", "a1", "1").await;
    let ta = c.latest("a.app").await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let poller = c.clone();
        tasks.push(tokio::spawn(async move {
            poller
                .get(&format!(
                    "/discovery/polls?env=dev&hostname=same&appid=a.app&latest_timestamp={ta}"
                ))
                .await
        }));
    }
    wait_held(&c, 3).await;
    c.register("a.app", "sh001", "a2", "1").await;
    for t in tasks {
        let a = tokio::time::timeout(Duration::from_secs(3), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.code(), 0);
    }
    node.stop().await;
}

#[tokio::test]
async fn polls_of_infra_discovery_answer_in_any_env() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let (a, _) = poll(
        &c,
        "env=prod&hostname=c1&appid=infra.discovery&latest_timestamp=0",
    )
    .await;
    let i = &a.json()["data"]["infra.discovery"]["instances"]["sh001"][0];
    assert_eq!(
        i["addrs"],
        json!([format!("http://{}", node.config.node.advertise)])
    );
    let ts = a.json()["data"]["infra.discovery"]["latest_timestamp"]
        .as_i64()
        .unwrap();
    let (a, _) = poll(
        &c,
        &format!("env=prod&hostname=c1&appid=infra.discovery&latest_timestamp={ts}"),
    )
    .await;
    assert_eq!(a.code(), -304, "no membership change, no answer");
    node.stop().await;
}

/// The value of one unlabelled gauge in a `/metrics` text.
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// A client fetching every app cannot make the node keep every rendered
/// answer: what is kept stays within `poll.rendered_mb`, and an answer
/// pushed out is rendered again, the same bytes.
#[tokio::test]
async fn rendered_answers_kept_stay_within_their_budget() {
    let node = TestNode::start_with(5000, |c| c.poll.rendered_mb = 1).await;
    let c = node.client();
    // 20 apps of 10 instances with 7,000 bytes of metadata each: an
    // answer is about 70 KB, all of them 1.4 MB, over the 1 MiB budget.
    let metadata = format!(r#"{{"blob":"{}"}}"#, "x".repeat(7000));
    let apps: Vec<String> = (0..20).map(|a| format!("big.app{a:02}")).collect();
    for appid in &apps {
        for h in 0..10 {
            let a = c
                .post(
                    "/discovery/register",
                    &[
                        ("zone", "sh001"),
                        ("env", "dev"),
                        ("appid", appid),
                        ("hostname", &format!("h{h}")),
                        ("status", "1"),
                        ("addrs", "http://10.0.0.1:80"),
                        ("metadata", &metadata),
                    ],
                )
                .await;
            assert_eq!(a.code(), 0, "{}", a.text);
        }
    }
    let mut first = Vec::new();
    for appid in &apps {
        let a = c.fetch(appid, 1).await;
        assert_eq!(a.code(), 0, "{}", a.text);
        assert!(a.text.len() > 70_000, "{} bytes", a.text.len());
        first.push(a.text);
    }
    let metrics = c.get("/metrics").await.text;
    let (kept, budget) = (
        gauge(&metrics, "discovery_rendered_bytes"),
        gauge(&metrics, "discovery_rendered_budget_bytes"),
    );
    assert_eq!(budget, 1 << 20);
    assert!(kept > 0 && kept <= budget, "{kept} bytes kept");
    // Twice over, in the same order: every answer was pushed out before it
    // was asked again, and is rendered again the same.
    for (appid, before) in apps.iter().zip(&first) {
        assert_eq!(&c.fetch(appid, 1).await.text, before, "{appid}");
    }
    let kept = gauge(&c.get("/metrics").await.text, "discovery_rendered_bytes");
    assert!(kept <= budget, "{kept} bytes kept");
}
