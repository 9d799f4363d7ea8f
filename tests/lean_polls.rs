//! Held polls are served outside hyper (`server::lean`): what a client
//! sees must not change. One kept-alive connection carries polls and every
//! other request in turn, pipelined or not; a poll head sent slowly is cut
//! off as any other; polls are counted and logged as before; what is not
//! framed beyond doubt goes to hyper, which answers it as it always has.

mod common;

use std::time::{Duration, Instant};

use common::{wait_held, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer read off a connection: status, head lines, body.
struct Answer {
    status: u16,
    head: Vec<String>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// Reads one answer (framed by its content-length) from `s`, keeping
/// what follows in `buf`.
async fn answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
            let mut lines = head.split("\r\n").map(str::to_string);
            let status_line = lines.next().unwrap();
            let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
            let head: Vec<String> = lines.collect();
            let len: usize = head
                .iter()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a content-length")
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8(buf[end + 4..end + 4 + len].to_vec()).unwrap();
                buf.drain(..end + 4 + len);
                return Answer { status, head, body };
            }
        }
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Holds a poll on `s` from the app's latest change, wakes it with a
/// register of `host` sent by `c`, and reads its answer.
async fn held_then_woken(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    c: &common::Client,
    host: &str,
) -> Answer {
    let latest = c.latest("lean.app").await;
    let held = poll_head(&format!(
        "env=dev&hostname=c&appid=lean.app&latest_timestamp={latest}"
    ));
    s.write_all(held.as_bytes()).await.unwrap();
    wait_held(c, 1).await;
    c.register("lean.app", "sh001", host, "1").await;
    answer(s, buf).await
}

fn poll_head(query: &str) -> String {
    format!("GET /discovery/polls?{query} HTTP/1.1\r\nHost: x\r\nUser-Agent: Go-http-client/1.1\r\n\r\n")
}

fn register_request(hostname: &str) -> String {
    let form = format!(
        "zone=sh001&env=dev&appid=lean.app&hostname={hostname}&addrs=http%3A%2F%2F10.0.0.1%3A80&status=1"
    );
    format!(
        "POST /discovery/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
}

#[tokio::test]
async fn one_connection_carries_polls_and_other_requests_in_turn_and_pipelined() {
    let node = TestNode::start(5000).await;
    let c = node.client();
    let mut s = TcpStream::connect(&node.config.node.listen).await.unwrap();
    let mut buf = Vec::new();

    // A register (hyper), then a poll from zero (here), then a fetch
    // (hyper), then a poll again: one connection, in turn.
    s.write_all(register_request("h1").as_bytes())
        .await
        .unwrap();
    let a = answer(&mut s, &mut buf).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"code":0,"message":"0","ttl":1}"#)
    );
    s.write_all(poll_head("env=dev&hostname=c&appid=lean.app&latest_timestamp=0").as_bytes())
        .await
        .unwrap();
    let polled = answer(&mut s, &mut buf).await;
    assert_eq!(polled.status, 200);
    assert_eq!(polled.header("kratos-status-code"), Some("0"));
    assert_eq!(
        polled.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(polled.header("date").is_some());
    assert!(
        polled.body.contains(r#""hostname":"h1""#),
        "{}",
        polled.body
    );
    // The same poll through hyper and the router (a request that asks to
    // close its connection is hyper's): the same body, the same headers
    // but hyper's `connection: close`, in the same order.
    let mut other = TcpStream::connect(&node.config.node.listen).await.unwrap();
    let closing = poll_head("env=dev&hostname=c&appid=lean.app&latest_timestamp=0")
        .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    other.write_all(closing.as_bytes()).await.unwrap();
    let routed = answer(&mut other, &mut Vec::new()).await;
    assert_eq!(routed.body, polled.body);
    let names = |a: &Answer| -> Vec<String> {
        a.head
            .iter()
            .map(|l| l.split(": ").next().unwrap().to_string())
            .filter(|n| n != "connection")
            .collect()
    };
    assert_eq!(names(&routed), names(&polled));

    // Pipelined: a fetch, a poll and a register in one write, answered in
    // order; the poll is answered at once (the app changed since 0).
    let pipelined = format!(
        "GET /discovery/fetch?env=dev&appid=lean.app&status=1 HTTP/1.1\r\nHost: x\r\n\r\n{}{}",
        poll_head("env=dev&hostname=c&appid=lean.app&latest_timestamp=0"),
        register_request("h2"),
    );
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let fetched = answer(&mut s, &mut buf).await;
    assert!(
        fetched
            .body
            .starts_with(r#"{"code":0,"message":"0","ttl":1,"data":{"instances""#),
        "{}",
        fetched.body
    );
    let polled = answer(&mut s, &mut buf).await;
    assert!(
        polled.body.starts_with(r#"{"code":0,"data":{"lean.app""#),
        "{}",
        polled.body
    );
    let registered = answer(&mut s, &mut buf).await;
    assert_eq!(registered.body, r#"{"code":0,"message":"0","ttl":1}"#);

    // A held poll on this connection, woken by a register on another;
    // the connection then carries a fetch that sees both instances.
    let woken = held_then_woken(&mut s, &mut buf, &c, "h3").await;
    assert!(woken.body.contains(r#""hostname":"h3""#), "{}", woken.body);
    s.write_all(
        b"GET /discovery/fetch?env=dev&appid=lean.app&status=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let fetched = answer(&mut s, &mut buf).await;
    for host in ["h1", "h2", "h3"] {
        assert!(fetched.body.contains(&format!(r#""hostname":"{host}""#)));
    }
    assert!(buf.is_empty());

    // Counted and logged under their endpoint, as through the router.
    let metrics = c.get("/metrics").await.text;
    let polls_counted = metrics.lines().any(|l| {
        l.starts_with("discovery_http_requests_total")
            && l.contains(r#"endpoint="/discovery/polls""#)
    });
    assert!(polls_counted, "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn bad_polls_and_polls_past_the_head_limits_answer_as_before() {
    let node = TestNode::start_with(5000, |c| {
        c.connections.max_uri_bytes = 256;
    })
    .await;
    node.client().register("b.app", "sh001", "h1", "1").await;
    let mut s = TcpStream::connect(&node.config.node.listen).await.unwrap();
    let mut buf = Vec::new();
    // A parameter named in a -400, here.
    s.write_all(poll_head("env=dev&hostname=c&appid=a&latest_timestamp=x").as_bytes())
        .await
        .unwrap();
    let bad = answer(&mut s, &mut buf).await;
    assert_eq!(bad.header("kratos-status-code"), Some("-400"));
    assert!(bad.body.contains("latest_timestamp"), "{}", bad.body);
    // Over the target limit: the router's 414 in the envelope.
    let long = format!(
        "env=dev&hostname=c&appid={}&latest_timestamp=0",
        "a".repeat(300)
    );
    s.write_all(poll_head(&long).as_bytes()).await.unwrap();
    let refused = answer(&mut s, &mut buf).await;
    assert_eq!(refused.status, 414);
    assert!(refused.body.contains("max_uri_bytes"), "{}", refused.body);
    // A wrong method on the poll path: the router's answer.
    s.write_all(b"POST /discovery/polls HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let wrong = answer(&mut s, &mut buf).await;
    assert_eq!(wrong.status, 405);
    // A poll with a body is hyper's (and the router's): the body's
    // parameters count, as before.
    let body = "latest_timestamp=0";
    s.write_all(
        format!(
            "GET /discovery/polls?env=dev&hostname=c&appid=b.app HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let with_body = answer(&mut s, &mut buf).await;
    assert_eq!(with_body.status, 200);
    assert!(
        with_body.body.starts_with(r#"{"code":0,"data":{"b.app""#),
        "{}",
        with_body.body
    );
    // With Connection: close: hyper's to the end; answered,
    // then closed.
    s.write_all(b"GET /discovery/polls?env=dev&hostname=c&appid=b.app&latest_timestamp=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let last = answer(&mut s, &mut buf).await;
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    node.stop().await;
}

#[tokio::test]
async fn a_poll_head_dripped_a_byte_at_a_time_is_cut_off() {
    let node = TestNode::start_with(1000, |c| {
        c.connections.read_timeout_ms = 500;
        c.connections.idle_timeout_ms = 1500;
    })
    .await;
    let mut s = TcpStream::connect(&node.config.node.listen).await.unwrap();
    let request = poll_head("env=dev&hostname=c&appid=a&latest_timestamp=0");
    let start = Instant::now();
    let mut cut = false;
    for byte in request.as_bytes() {
        if s.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut one = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut one)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a head sent over {:?} was read", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "cut after {:?}",
        start.elapsed()
    );
    node.stop().await;
}

#[tokio::test]
async fn bytes_sent_while_a_poll_is_held_wait_for_its_answer() {
    let node = TestNode::start(30_000).await;
    let c = node.client();
    c.register("lean.app", "sh001", "h1", "1").await;
    let latest = c.latest("lean.app").await;
    // A held poll followed by a fetch before its answer: the poll stays
    // held, the fetch is answered after it. (A client that closes a held
    // poll releases it at once: tests/polls.rs.)
    let held = poll_head(&format!(
        "env=dev&hostname=c&appid=lean.app&latest_timestamp={latest}"
    ));
    let mut s = TcpStream::connect(&node.config.node.listen).await.unwrap();
    s.write_all(held.as_bytes()).await.unwrap();
    wait_held(&c, 1).await;
    s.write_all(
        b"GET /discovery/fetch?env=dev&appid=lean.app&status=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    // Nothing tells when the node has seen those bytes: time for it to
    // (wrongly) answer the poll because of them, then the poll must still
    // be held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_held(&c, 1).await;
    c.register("lean.app", "sh001", "h2", "1").await;
    let mut buf = Vec::new();
    let woken = answer(&mut s, &mut buf).await;
    assert!(woken.body.contains(r#""hostname":"h2""#));
    let fetched = answer(&mut s, &mut buf).await;
    assert!(fetched.body.contains(r#""hostname":"h2""#));
    node.stop().await;
}

/// A kept-alive connection idle after an answer (hyper's or a poll's), or
/// one whose head is half sent, does not hold up a node that stops:
/// readiness left over from the request's reads must not leave it reading
/// with no eye on the stop.
#[tokio::test]
async fn a_node_stops_at_once_with_connections_idle_after_answers() {
    let node = TestNode::start_with(1000, |c| {
        c.connections.idle_timeout_ms = 60_000;
    })
    .await;
    node.client().register("lean.app", "sh001", "h1", "1").await;
    // A register whose body is longer than the first read of its head:
    // hyper reads the body's end exactly, which leaves the socket marked
    // readable though it has nothing more.
    let form = format!(
        "zone=sh001&env=dev&appid=lean.app&hostname=h2&addrs=http%3A%2F%2F10.0.0.1%3A80&status=1&metadata=%7B%22k%22%3A%22{}%22%7D",
        "x".repeat(3000)
    );
    let register = format!(
        "POST /discovery/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut idle = Vec::new();
    for request in [
        register,
        "GET /discovery/fetch?env=dev&appid=lean.app&status=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            .to_string(),
        poll_head("env=dev&hostname=c&appid=lean.app&latest_timestamp=0"),
    ] {
        let mut s = TcpStream::connect(&node.config.node.listen).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        answer(&mut s, &mut Vec::new()).await;
        idle.push(s);
    }
    // And one whose head has not come whole.
    let mut half = TcpStream::connect(&node.config.node.listen).await.unwrap();
    half.write_all(b"GET /discovery/polls?env=dev HTTP/1.1\r\nHo")
        .await
        .unwrap();
    idle.push(half);
    // Nothing tells when the node has read the half head: time for it to
    // be reading the rest when the stop comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("the node stopped");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "stopped after {:?}",
        start.elapsed()
    );
    for mut s in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    }
}

/// A connection that only fetched for a while is hyper's from then on
/// (`HYPER_AFTER`): a poll it sends later is still held and woken.
#[tokio::test]
async fn a_connection_that_fetched_many_times_still_holds_a_poll() {
    let node = TestNode::start(30_000).await;
    let c = node.client();
    c.register("lean.app", "sh001", "h1", "1").await;
    let mut s = TcpStream::connect(&node.config.node.listen).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..20 {
        s.write_all(
            b"GET /discovery/fetch?env=dev&appid=lean.app&status=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        assert!(answer(&mut s, &mut buf)
            .await
            .body
            .contains(r#""hostname":"h1""#));
    }
    let woken = held_then_woken(&mut s, &mut buf, &c, "h2").await;
    assert!(woken.body.contains(r#""hostname":"h2""#), "{}", woken.body);
    node.stop().await;
}
