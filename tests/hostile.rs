//! Malformed and hostile writes over real HTTP: each is refused with the
//! `-400` envelope naming the parameter (and the limit), and the registry
//! digest is unchanged after every one.

mod common;

use common::{Client, TestNode};

/// A raw form body POSTed as is, so tests can send bytes no encoder would.
async fn post_raw(c: &Client, path: &str, content_type: &str, body: &str) -> common::Answer {
    let r = c
        .http
        .post(format!("{}{}", c.base, path))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    common::Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.expect("a body"),
    }
}

const FORM: &str = "application/x-www-form-urlencoded";
const BASE: &str =
    "zone=sh001&env=dev&appid=good.app&hostname=h1&status=1&addrs=http%3A%2F%2F10.0.0.1%3A80";

/// Each case: the path, the raw form body, and what the message must
/// start with.
fn cases() -> Vec<(&'static str, String, &'static str)> {
    let many = |name: &str, n: usize, value: &dyn Fn(usize) -> String| {
        (0..n)
            .map(|i| format!("{name}={}", value(i)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let register = |extra: &str| format!("{BASE}&{extra}").replace("appid=good.app&", "");
    vec![
        (
            "/discovery/register",
            register("appid=a%00b"),
            "appid: must not hold control",
        ),
        (
            "/discovery/register",
            register("appid=a%0D%0AX-Injected:%201"),
            "appid: must not hold control",
        ),
        (
            "/discovery/register",
            format!("{BASE}&region=sh%07"),
            "region: must not hold control",
        ),
        (
            "/discovery/register",
            register("appid=%FF%FE"),
            "appid: not valid UTF-8",
        ),
        (
            "/discovery/register",
            register("appid=a%G0b"),
            "appid: has a % not followed by two hex digits",
        ),
        (
            "/discovery/register",
            register("appid=ab%"),
            "appid: has a % not followed by two hex digits",
        ),
        (
            "/discovery/cancel",
            "zone=sh001&env=dev&appid=good.app&hostname=h1%2".to_string(),
            "hostname: has a % not followed by two hex digits",
        ),
        (
            "/discovery/register",
            register("appid=%C0%AF"),
            "appid: not valid UTF-8",
        ),
        (
            "/discovery/register",
            register(&format!("appid={}", "a".repeat(100_000))),
            "appid: 100000 bytes, at most 255",
        ),
        (
            "/discovery/register",
            format!(
                "{}&{}",
                BASE.replace("&addrs=http%3A%2F%2F10.0.0.1%3A80", ""),
                many("addrs", 10_000, &|i| format!(
                    "http%3A%2F%2Fh%3A{}",
                    1 + i % 60000
                ))
            ),
            "addrs: 10000 addresses, at most 16",
        ),
        (
            "/discovery/register",
            format!(
                "{}&addrs=not%20a%20url",
                BASE.replace("&addrs=http%3A%2F%2F10.0.0.1%3A80", "")
            ),
            "addrs: \"not a url\" is not scheme://host:port",
        ),
        (
            "/discovery/register",
            format!(
                "{}&addrs=javascript%3Aalert(1)",
                BASE.replace("&addrs=http%3A%2F%2F10.0.0.1%3A80", "")
            ),
            "addrs: \"javascript:alert(1)\" is not",
        ),
        (
            "/discovery/register",
            format!(
                "{BASE}&metadata=%7B{}%7D",
                (0..10_000)
                    .map(|i| format!("%22k{i}%22:%22v%22"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "metadata: 10000 keys, at most 64",
        ),
        (
            "/discovery/register",
            format!(
                "{BASE}&metadata=%7B%22k%22:%22{}%22%7D",
                "v".repeat(1_000_000)
            ),
            "metadata: 1000001 bytes, at most 8192",
        ),
        (
            "/discovery/register",
            format!("{BASE}&version={}", "v".repeat(200)),
            "version: 200 bytes, at most 128",
        ),
        (
            "/discovery/register",
            format!("{BASE}&zone=sh002"),
            "zone: given 2 times",
        ),
        (
            "/discovery/register",
            BASE.replace("appid=good.app", "appid=infra.discovery"),
            "appid: infra.discovery is the cluster's own app",
        ),
        (
            "/discovery/cancel",
            format!(
                "zone=sh001&env=dev&appid=good.app&{}",
                many("hostname", 10_000, &|i| format!("h{i}"))
            ),
            "hostname: given 10000 times",
        ),
        (
            "/discovery/renew",
            "zone=sh001&env=dev&appid=good.app&hostname=h1%00".to_string(),
            "hostname: must not hold control",
        ),
        (
            "/discovery/set",
            "zone=sh001&env=dev&appid=good.app&hostname=h1&status=&status=".to_string(),
            "status: nothing to change",
        ),
        (
            "/discovery/set",
            "zone=sh001&env=dev&appid=good.app&hostname=h1".to_string(),
            "status: nothing to change",
        ),
        (
            "/discovery/set",
            format!(
                "zone=sh001&env=dev&appid=good.app&hostname=h1&metadata=%7B%22k%22:%22{}%22%7D",
                "v".repeat(10_000)
            ),
            "metadata: 10001 bytes, at most 8192",
        ),
    ]
}

#[tokio::test]
async fn every_hostile_write_is_refused_naming_the_parameter_and_changes_nothing() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let ok = post_raw(&c, "/discovery/register", FORM, BASE).await;
    assert_eq!(ok.code(), 0, "{}", ok.text);
    let digest = c.get("/admin/digest").await.json()["digest"].clone();
    for (path, body, expected) in cases() {
        let answer = post_raw(&c, path, FORM, &body).await;
        let v = answer.json();
        assert_eq!(answer.status, 200, "{path} {expected}: {}", answer.text);
        assert_eq!(v["code"], -400, "{path} {expected}: {}", answer.text);
        let message = v["message"].as_str().unwrap();
        assert!(
            message.starts_with(expected),
            "{path}: {message:?} does not start with {expected:?}"
        );
        assert_eq!(
            c.get("/admin/digest").await.json()["digest"],
            digest,
            "{path} {expected} changed the registry"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn a_json_body_is_json_whatever_the_case_of_its_media_type() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let body = r#"{"zone":"sh001","env":"dev","appid":"json.app","hostname":"h1","status":1,"addrs":["http://10.0.0.1:80"]}"#;
    for ct in ["Application/JSON", "APPLICATION/JSON; charset=UTF-8"] {
        let a = post_raw(&c, "/discovery/register", ct, body).await;
        assert_eq!(a.code(), 0, "{ct}: {}", a.text);
    }
    // A field holding an object where a string belongs: refused, naming it.
    let object = body.replace("\"json.app\"", "{\"x\":\"json.app\"}");
    let a = post_raw(&c, "/discovery/register", "application/json", &object).await;
    assert_eq!(a.code(), -400, "{}", a.text);
    assert!(a.json()["message"].as_str().unwrap().starts_with("appid: "));
    // JSON with a control character is refused like a form.
    let bad = body.replace("\"h1\"", "\"h1\\u0000\"");
    let a = post_raw(&c, "/discovery/register", "application/json", &bad).await;
    assert_eq!(a.code(), -400, "{}", a.text);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("hostname: "));
    node.stop().await;
}

#[tokio::test]
async fn any_bytes_in_always_an_envelope_out() {
    use rand::{Rng, SeedableRng};
    let node = TestNode::start(1000).await;
    let c = node.client();
    let digest = c.get("/admin/digest").await.json()["digest"].clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let alphabet = b"=&%+,{}\"[]:abcz019\x00\r\n\xff\xc0 ";
    for i in 0..300 {
        let path = [
            "/discovery/register",
            "/discovery/renew",
            "/discovery/cancel",
            "/discovery/set",
        ][i % 4];
        let len = rng.gen_range(0..120);
        let body: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let ct = ["application/json", FORM, "Application/JSON", "text/plain"][rng.gen_range(0..4)];
        let r = c
            .http
            .post(format!("{}{}", c.base, path))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .expect("an answer");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} {body:?}: not JSON ({e}): {text}"));
        assert!(v["code"].is_i64(), "{path}: {text}");
        assert_ne!(v["code"], 0, "{path} {body:?} was accepted: {text}");
        assert_eq!(status, 200, "{path}: {text}");
    }
    assert_eq!(c.get("/admin/digest").await.json()["digest"], digest);
    node.stop().await;
}
