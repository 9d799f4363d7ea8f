//! Slow, idle and numerous clients cannot take a node's connections: a
//! request must arrive within the read timeout, an idle connection is
//! closed, past the cap the longest-idle connection makes room, and with
//! every connection busy (or every poll slot taken) a newcomer is told
//! "overloaded" at once.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn node(adjust: impl FnOnce(&mut raft_discovery::config::Config)) -> TestNode {
    TestNode::start_with(1000, |c| {
        c.connections.read_timeout_ms = 500;
        c.connections.idle_timeout_ms = 1500;
        adjust(c);
    })
    .await
}

fn addr(node: &TestNode) -> String {
    node.config.node.listen.clone()
}

/// Waits until the server closes `stream` (EOF or reset); how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_request_dripped_a_byte_at_a_time_is_cut_off() {
    let node = node(|_| {}).await;
    let mut s = TcpStream::connect(addr(&node)).await.unwrap();
    let request = b"GET /discovery/fetch?env=dev&appid=a&status=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let start = Instant::now();
    let mut cut = false;
    for byte in request {
        if s.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the whole request was dripped in {:?}",
        start.elapsed()
    );
    // Cut by the read timeout (500 ms), well before the idle timeout
    // (1.5 s) would have.
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    node.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let node = node(|_| {}).await;
    let mut s = TcpStream::connect(addr(&node)).await.unwrap();
    s.write_all(b"GET /discovery/nodes HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("the idle connection was kept");
    assert!(took >= Duration::from_millis(1200), "closed after {took:?}");

    // A poll held for the whole hold time is not idle.
    let c = node.client();
    let latest = {
        assert_eq!(c.register("idle.app", "sh001", "h1", "1").await.code(), 0);
        c.latest("idle.app").await
    };
    let polled = c
        .get(&format!(
            "/discovery/poll?env=dev&hostname=me&appid=idle.app&latest_timestamp={latest}"
        ))
        .await;
    assert_eq!(polled.code(), -304, "{}", polled.text);
    node.stop().await;
}

#[tokio::test]
async fn past_the_cap_an_idle_connection_makes_room_and_with_none_idle_a_newcomer_is_told_overloaded(
) {
    let node = TestNode::start_with(1000, |c| {
        c.poll.hold_ms = 5000;
        c.connections.idle_timeout_ms = 10_000;
        c.connections.read_timeout_ms = 10_000;
        c.connections.max_connections = 8;
        c.connections.max_held_polls = 3;
        // The global caps, from one address (the per-address shares have
        // tests of their own, in fair_shares.rs).
        c.connections.max_connections_per_client = 8;
        c.connections.max_held_polls_per_client = 3;
    })
    .await;
    let c = node.client();
    assert_eq!(c.register("cap.app", "sh001", "h1", "1").await.code(), 0);
    let latest = c.latest("cap.app").await;

    // Eight idle connections fill the node; a fetch still gets through,
    // and the oldest idle connection is the one closed for it.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(addr(&node)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh = reqwest::Client::new();
    let started = Instant::now();
    let fetched = fresh
        .get(format!(
            "{}/discovery/fetch?env=dev&appid=cap.app&status=1",
            node.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2))
            .await
            .is_some(),
        "the oldest idle connection was kept"
    );
    drop(idle);
    drop(fresh);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Three held polls take every poll slot: a fourth is refused at once.
    let poll = format!(
        "{}/discovery/poll?env=dev&hostname=me&appid=cap.app&latest_timestamp={latest}",
        node.base
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let http = reqwest::Client::new();
        let url = poll.clone();
        held.push(tokio::spawn(async move { http.get(url).send().await }));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.status().await["held_polls"] != 3 {
        assert!(Instant::now() < deadline, "polls never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let refused = reqwest::get(&poll).await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], -503, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("overloaded"));
    assert!(started.elapsed() < Duration::from_millis(500));

    // With the polls' three connections and five requests half sent, every
    // connection is busy: a newcomer is told overloaded at once.
    let mut busy = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr(&node)).await.unwrap();
        s.write_all(b"GET /discovery/nodes HTTP/1.1\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let answer = reqwest::get(format!("{}/discovery/nodes", node.base))
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["message"], "overloaded: too many connections");
    assert!(started.elapsed() < Duration::from_millis(500));
    drop(busy);
    for h in held {
        let _ = h.await;
    }
    node.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_in_the_envelope() {
    let node = node(|c| c.connections.max_body_bytes = 4096).await;
    let answer = node
        .client()
        .http
        .post(format!("{}/discovery/register", node.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("appid={}", "a".repeat(8192)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["code"], -413, "{body}");
    node.stop().await;
}

#[tokio::test]
async fn a_long_target_gets_414_and_long_headers_431_in_the_envelope() {
    let node = node(|_| {}).await;
    let http = &node.client().http;
    // A fetchs naming more apps than 16 KiB of target holds.
    let appids = "&appid=some.long.application.name".repeat(600);
    let long = http
        .get(format!(
            "{}/discovery/fetchs?env=dev&status=1{appids}",
            node.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 414);
    let body: serde_json::Value = long.json().await.unwrap();
    assert_eq!(body["code"], -414, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("max_uri_bytes"),
        "{body}"
    );

    let mut heavy = http.get(format!("{}/discovery/nodes", node.base));
    for i in 0..40 {
        heavy = heavy.header(format!("x-filler-{i}"), "f".repeat(1000));
    }
    let heavy = heavy.send().await.unwrap();
    assert_eq!(heavy.status(), 431);
    let body: serde_json::Value = heavy.json().await.unwrap();
    assert_eq!(body["code"], -431, "{body}");

    // Within the bounds, the same requests are served.
    let fine = http
        .get(format!(
            "{}/discovery/fetchs?env=dev&status=1&appid=infra.discovery",
            node.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    node.stop().await;
}
