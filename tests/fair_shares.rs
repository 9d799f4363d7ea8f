//! One client cannot take a node down: each attack of the "one client"
//! issue, run against a real node with small limits, and the bound that
//! stops it. (The flood of registrations that never renew is in
//! tests/eviction.rs, with the other eviction timings; the peer port's
//! handshake bound in tests/peer_security.rs.)

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestNode};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn log_index(status: &serde_json::Value) -> u64 {
    status["last_log_index"].as_u64().expect("a log index")
}

async fn set(c: &Client, hostnames: &[String], metadata: Option<&str>) -> common::Answer {
    let mut form: Vec<(&str, &str)> = vec![("zone", "sh001"), ("env", "dev"), ("appid", "a.app")];
    for h in hostnames {
        form.push(("hostname", h));
        form.push(("status", "1"));
        if let Some(m) = metadata {
            form.push(("metadata", m));
        }
    }
    c.post("/discovery/set", &form).await
}

#[tokio::test]
async fn writes_that_can_only_fail_or_are_too_large_never_reach_the_log() {
    let node = TestNode::start_with(1000, |c| c.limits.entry_bytes = 64 << 10).await;
    let c = node.client();
    for i in 0..10 {
        assert_eq!(
            c.register("a.app", "sh001", &format!("h{i}"), "1")
                .await
                .code(),
            0
        );
    }
    let before = log_index(&c.status().await);

    // 48 at once, each naming 200 hostnames of 240 bytes that were never
    // registered (about 50 KB apiece: within the entry bound, so it is the
    // registry that refuses them).
    let ghosts: Vec<String> = (0..200)
        .map(|i| format!("{i:04}-{}", "g".repeat(235)))
        .collect();
    let sets = (0..48).map(|_| set(&c, &ghosts, None));
    for answer in futures::future::join_all(sets).await {
        assert_eq!(answer.code(), -400, "{}", answer.text);
        assert!(answer.text.contains("hostname"), "{}", answer.text);
        assert!(answer.text.contains("not found"), "{}", answer.text);
    }
    // A cancel of an instance that is not there.
    let cancel = c
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "a.app"),
                ("hostname", "ghost"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), -404, "{}", cancel.text);
    // Registered hostnames, but more metadata than one log entry holds.
    let metadata = format!(
        "{{{}}}",
        (0..8)
            .map(|k| format!("\"k{k}\":\"{}\"", "v".repeat(1000)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let hosts: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    let big = set(&c, &hosts, Some(&metadata)).await;
    assert_eq!(big.code(), -400, "{}", big.text);
    assert!(big.text.contains("metadata"), "{}", big.text);
    assert!(big.text.contains("65536"), "{}", big.text);

    assert_eq!(
        log_index(&c.status().await),
        before,
        "nothing refused went into the log"
    );
    // What fits goes through.
    let fits = set(&c, &hosts[..2], Some(&metadata)).await;
    assert_eq!(fits.code(), 0, "{}", fits.text);
    assert!(log_index(&c.status().await) > before);
    node.stop().await;
}

#[tokio::test]
async fn one_address_holds_its_share_of_polls_and_others_still_poll() {
    let node = TestNode::start_with(3000, |c| {
        c.connections.max_held_polls = 8;
        c.connections.max_held_polls_per_client = 3;
    })
    .await;
    let c = node.client();
    assert_eq!(c.register("p.app", "sh001", "h1", "1").await.code(), 0);
    let latest = c.latest("p.app").await;
    let poll = format!("/discovery/poll?env=dev&hostname=x&appid=p.app&latest_timestamp={latest}");
    let flooder = Client::from_source(&node.base, [127, 0, 0, 2]);
    let held: Vec<_> = (0..3)
        .map(|_| {
            let (f, p) = (flooder.clone(), poll.clone());
            tokio::spawn(async move { f.get(&p).await })
        })
        .collect();
    common::wait_held(&c, 3).await;
    // A fourth from the same address: at once, overloaded.
    let started = Instant::now();
    let refused = flooder.get(&poll).await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, -503),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("per address"), "{}", refused.text);
    assert!(started.elapsed() < Duration::from_secs(1));
    // /admin/changes waits count as polls.
    let changes = flooder.get("/admin/changes?after=999999").await;
    assert_eq!(changes.status, 503, "{}", changes.text);
    // Another address still polls (held, then answered -304).
    let other = Client::from_source(&node.base, [127, 0, 0, 3]);
    let started = Instant::now();
    let answer = other.get(&poll).await;
    assert_eq!(answer.code(), -304, "{}", answer.text);
    assert!(started.elapsed() >= Duration::from_millis(2500));
    for h in held {
        assert_eq!(h.await.unwrap().code(), -304);
    }
    // Given back: the flooder polls again.
    let (a, b) = tokio::join!(flooder.get(&poll), async {
        common::wait_held(&c, 1).await;
        c.register("p.app", "sh001", "h2", "1").await
    });
    assert_eq!(b.code(), 0);
    assert_eq!(a.code(), 0, "{}", a.text);
    node.stop().await;
}

#[tokio::test]
async fn new_instances_are_paced_per_address_and_per_app() {
    let node = TestNode::start_with(1000, |c| {
        c.connections.new_instances_burst = 5;
        c.connections.new_instances_per_sec = 1;
        c.connections.new_instances_per_app_burst = 8;
        c.connections.new_instances_per_app_per_sec = 1;
    })
    .await;
    let one = Client::from_source(&node.base, [127, 0, 0, 2]);
    let two = Client::from_source(&node.base, [127, 0, 0, 3]);
    for i in 0..5 {
        assert_eq!(
            one.register("a.app", "sh001", &format!("a{i}"), "1")
                .await
                .code(),
            0
        );
    }
    let over = one.register("a.app", "sh001", "a5", "1").await;
    assert_eq!((over.status, over.code()), (429, -503), "{}", over.text);
    assert!(
        over.text.contains("connections.new_instances_per_sec"),
        "{}",
        over.text
    );
    // Not new: registering again and renewing are never paced.
    for _ in 0..10 {
        assert_eq!(one.register("a.app", "sh001", "a0", "1").await.code(), 0);
        let renew = one
            .post(
                "/discovery/renew",
                &[
                    ("zone", "sh001"),
                    ("env", "dev"),
                    ("appid", "a.app"),
                    ("hostname", "a1"),
                ],
            )
            .await;
        assert_eq!(renew.code(), 0, "{}", renew.text);
    }
    // Another address has its own pace, but the app's is shared.
    for i in 0..3 {
        assert_eq!(
            two.register("a.app", "sh001", &format!("b{i}"), "1")
                .await
                .code(),
            0
        );
    }
    let app_over = two.register("a.app", "sh001", "b3", "1").await;
    assert_eq!(app_over.status, 429, "{}", app_over.text);
    assert!(app_over.text.contains("of a.app"), "{}", app_over.text);
    assert_eq!(two.register("b.app", "sh001", "b3", "1").await.code(), 0);
    // A second later, one more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(one.register("c.app", "sh001", "a5", "1").await.code(), 0);
    node.stop().await;
}

/// Sends a request on a socket with a small receive buffer and reads
/// nothing.
async fn ask_and_never_read(base: &str, source: [u8; 4], path: &str) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_and_large_answers_share_a_budget() {
    // 2,000 instances of 4 KB metadata: fetch/all is about 9 MB, more
    // than the sockets buffer. Each fetch/all holds 2,000 * 512 bytes of
    // the budget: one fits, two do not.
    let node = TestNode::start_with(1000, |c| {
        c.connections.send_timeout_ms = 1500;
        c.connections.max_unsent_bytes = 1_500_000;
        c.connections.new_instances_burst = 5000;
        c.connections.new_instances_per_app_burst = 5000;
    })
    .await;
    let c = node.client();
    let metadata = format!("{{\"blob\":\"{}\"}}", "m".repeat(4000));
    let mut registered = 0;
    let all: Vec<_> = futures::stream::iter(registers_vec(&c, &metadata))
        .buffer_unordered(32)
        .collect()
        .await;
    for a in &all {
        assert_eq!(a.code(), 0, "{}", a.text);
        registered += 1;
    }
    assert_eq!(registered, 2000);
    let whole = c.get("/discovery/fetch/all").await;
    assert_eq!(whole.status, 200);
    let full_len = whole.text.len();
    assert!(full_len > 8_000_000, "{full_len} bytes");

    let mut slow = ask_and_never_read(&node.base, [127, 0, 0, 2], "/discovery/fetch/all").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While it holds its answer, another address's fetch/all is refused
    // at once; fetch of one app is not held back.
    let other = Client::from_source(&node.base, [127, 0, 0, 3]);
    let refused = other.get("/discovery/fetch/all").await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, -503),
        "{}",
        refused.text
    );
    assert!(refused.text.contains("unsent"), "{}", refused.text);
    assert_eq!(other.fetch("big.app", 3).await.code(), 0);

    // The send timeout cuts the slow reader: what it gets is a part.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut got)).await;
    assert!(
        got.len() < full_len,
        "the slow reader was cut: {} of {full_len} bytes",
        got.len()
    );
    // Its share given back, the other address is served.
    let served = other.get("/discovery/fetch/all").await;
    assert_eq!(
        served.status,
        200,
        "{}",
        &served.text[..200.min(served.text.len())]
    );
    assert_eq!(served.text.len(), full_len);
    node.stop().await;
}

fn registers_vec(
    c: &Client,
    metadata: &str,
) -> Vec<impl std::future::Future<Output = common::Answer>> {
    (0..2000)
        .map(|i| {
            let (c, metadata) = (c.clone(), metadata.to_string());
            async move {
                let host = format!("host-{i}");
                c.post(
                    "/discovery/register",
                    &[
                        ("zone", "sh001"),
                        ("env", "dev"),
                        ("appid", "big.app"),
                        ("hostname", &host),
                        ("status", "1"),
                        ("addrs", "http://10.0.0.1:80"),
                        ("metadata", &metadata),
                    ],
                )
                .await
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_of_a_fleet_being_moved_are_paid_from_the_unsent_budget() {
    // An original holding 25,000 instances with long hostnames, all
    // imported here: `/admin/origins` lists every one (about 8 MB).
    const N: usize = 25_000;
    let original = TestNode::start_with(1000, |c| {
        c.node.original_api = true;
        c.connections.new_instances_burst = N as u32 + 100;
        c.connections.new_instances_per_app_burst = N as u32 + 100;
    })
    .await;
    let old = original.client();
    let registered: Vec<common::Answer> = futures::stream::iter((0..N).map(|i| {
        let old = old.clone();
        async move {
            let host = format!("{i:06}-{}", "h".repeat(230));
            let app = format!("moved.app{}", i % 25);
            old.register(&app, "sh001", &host, "1").await
        }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    assert!(registered.iter().all(|a| a.code() == 0));

    // 25,000 rows at 128 bytes each: 3.2 MB held per answer against a
    // budget of 5 MB (1.25 MB per address): one answer at a time.
    let node = TestNode::start_with(1000, |c| {
        c.upstreams = vec![raft_discovery::config::UpstreamConfig {
            name: "old".into(),
            nodes: vec![original.base.trim_start_matches("http://").to_string()],
            export: false,
            full_every_ms: 500,
            ..Default::default()
        }];
        c.connections.send_timeout_ms = 1500;
        c.connections.max_unsent_bytes = 5_000_000;
    })
    .await;
    let c = node.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = c.status().await;
        if status["upstreams"]["old"]["imported"].as_u64() == Some(N as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "never imported: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let whole = c.get("/admin/origins").await;
    assert_eq!(whole.status, 200);
    let rows: serde_json::Value = serde_json::from_str(&whole.text).unwrap();
    let listed: usize = rows
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert_eq!(listed, N);
    let full_len = whole.text.len();
    assert!(full_len > 7_000_000, "{full_len} bytes");

    // One address asks and reads nothing: it holds its answer's share.
    let mut slow = ask_and_never_read(&node.base, [127, 0, 0, 2], "/admin/origins").await;
    // Until the node has taken its request (and its share), the same
    // address is still served.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::from_source(&node.base, [127, 0, 0, 2])
        .get("/admin/origins")
        .await
        .status
        == 200
    {
        assert!(
            Instant::now() < deadline,
            "the unread answer never held its share"
        );
    }
    // The same address again, and another one: refused at once, named.
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let refused = Client::from_source(&node.base, source)
            .get("/admin/origins")
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (503, -503),
            "{}",
            refused.text
        );
        assert!(
            refused.text.contains("origins: bytes of answers unsent"),
            "{}",
            refused.text
        );
    }
    // The rest of the node is not held back.
    assert_eq!(c.fetch("moved.app3", 3).await.code(), 0);

    // The send timeout cuts the slow reader and gives its share back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut got)).await;
    assert!(
        got.len() < full_len,
        "cut: {} of {full_len} bytes",
        got.len()
    );
    let served = Client::from_source(&node.base, [127, 0, 0, 3])
        .get("/admin/origins")
        .await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text.len(), full_len);
    node.stop().await;
}
