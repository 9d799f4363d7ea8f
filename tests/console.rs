//! The web console in a real browser: headless Chromium, driven over the
//! WebDriver protocol by chromedriver (Debian's `chromium` and
//! `chromium-driver`). An instance registered through the API shows up in
//! the page without a reload.
//!
//! Without Chromium the test says it was skipped, unless
//! `DISCOVERY_REQUIRE_BROWSER` is set (`.ci/run` installs Chromium and
//! sets it), where a missing browser fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, TestNode};
use serde_json::{json, Value};

fn found(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// chromedriver and the Chromium it drives, or why the test cannot run.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let driver = found(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let chromium = found(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]);
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        _ if std::env::var_os("DISCOVERY_REQUIRE_BROWSER").is_some() => {
            panic!("DISCOVERY_REQUIRE_BROWSER is set but chromium / chromedriver are missing")
        }
        _ => None,
    }
}

/// One WebDriver session on a chromedriver of its own.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn start(driver: &Path, chromium: &Path) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            let answer = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await;
            if let Ok(answer) = answer {
                let v: Value = answer.json().await.unwrap();
                match v["value"]["sessionId"].as_str() {
                    Some(id) => break id.to_string(),
                    None => panic!("no session: {v}"),
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Browser {
            driver: child,
            http,
            session: format!("{base}/session/{session}"),
        }
    }

    /// The `value` of a WebDriver answer.
    async fn value(request: reqwest::RequestBuilder) -> Value {
        let mut v: Value = request.send().await.unwrap().json().await.unwrap();
        v["value"].take()
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        Self::value(self.http.post(url).json(&body)).await
    }

    async fn open(&self, url: &str) {
        self.call("/url", json!({ "url": url })).await;
    }

    async fn run(&self, script: &str) -> Value {
        self.call("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn text(&self) -> String {
        self.run("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the page's text holds every one of `parts`.
    async fn wait_for(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text().await;
            if parts.iter().all(|p| text.contains(p)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {parts:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let url = format!("{}/screenshot", self.session);
        let v = Self::value(self.http.get(url)).await;
        decode_base64(v.as_str().expect("a screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (u32::from(value(*c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_registration_live_without_a_reload() {
    let Some((driver, chromium)) = browser() else {
        eprintln!("skipped: no chromium / chromedriver (apt-get install chromium chromium-driver)");
        return;
    };
    // Polls (the console's feed too) held 2 s, so the node stops quickly.
    let node = TestNode::start(2_000).await;
    let c = node.client();
    let first = c
        .post(
            "/discovery/register",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "console.app"),
                ("hostname", "h1"),
                ("status", "1"),
                ("addrs", "grpc://10.0.0.1:9000"),
                ("addrs", "http://10.0.0.1:8000"),
                ("version", "v1.4.2"),
                ("metadata", r#"{"weight":"10","color":"blue"}"#),
            ],
        )
        .await;
    assert_eq!(first.code(), 0, "{}", first.text);
    let page = node.client().http.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    // No inline script or style may run: the page's own are files.
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let text = page.text().await.unwrap();
    assert!(
        !text.contains("<script>") && !text.contains("<style>"),
        "{text}"
    );
    for (path, kind) in [
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ] {
        let file = node.client().http.get(node.url(path)).send().await.unwrap();
        assert_eq!(file.status(), 200, "{path}");
        let content_type = file.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert_eq!(file.headers()["x-content-type-options"], "nosniff");
    }

    let browser = Browser::start(&driver, &chromium).await;
    browser.open(&node.url("/")).await;
    // The apps, the members and the feed of changes load on their own:
    // the register shows in the feed once its long poll has answered.
    browser
        .wait_for(&[
            "console.app",
            "infra.discovery",
            "leader",
            "live",
            "register",
        ])
        .await;
    browser
        .run("document.querySelector('details[data-app=\"console.app\"]').open = true; return 1;")
        .await;
    browser.wait_for(&["weight=10", "v1.4.2"]).await;
    browser.run("window.__sameDocument = 42; return 1;").await;

    // Registered through the API while the page is open: a new app and a
    // second instance of the first. The page shows both, by itself.
    assert_eq!(
        c.register("live.app", "sh002", "h-live", "1").await.code(),
        0
    );
    assert_eq!(
        c.register("console.app", "sh001", "h2", "1").await.code(),
        0
    );
    // Zone names from clients that are names of JavaScript's own: the
    // page shows them like any other, and goes on working.
    for zone in ["constructor", "__proto__"] {
        let r = c
            .register("proto.app", zone, &format!("h-{zone}"), "1")
            .await;
        assert_eq!(r.code(), 0, "{}", r.text);
    }
    browser
        .wait_for(&["proto.app", "__proto__, constructor"])
        .await;
    let text = browser.wait_for(&["live.app", "2 instances"]).await;
    assert_eq!(
        browser.run("return window.__sameDocument;").await,
        json!(42),
        "the page reloaded:\n{text}"
    );
    // Expanded, the new instance is in the DOM with its zone and status.
    let row = browser
        .run(
            "document.querySelector('details[data-app=\"live.app\"]').open = true; \
             const r = document.querySelector('details[data-app=\"live.app\"] tr[data-host=\"h-live\"]'); \
             return r ? r.innerText : null;",
        )
        .await;
    let row = row.as_str().expect("a row for h-live");
    assert!(row.contains("h-live") && row.contains("up"), "{row}");
    let feed = browser
        .run("return document.getElementById('feed').innerText;")
        .await;
    assert!(feed.as_str().unwrap().contains("h-live"), "{feed}");

    // The search box narrows the apps.
    browser
        .run(
            "const s = document.getElementById('search'); s.value = 'h-live'; \
             s.dispatchEvent(new Event('input')); return 1;",
        )
        .await;
    let apps = browser
        .run("return document.getElementById('apps').innerText;")
        .await;
    let apps = apps.as_str().unwrap();
    assert!(
        apps.contains("live.app") && !apps.contains("console.app"),
        "{apps}"
    );

    browser
        .run(
            "const s = document.getElementById('search'); s.value = ''; \
             s.dispatchEvent(new Event('input')); \
             document.querySelector('details[data-app=\"console.app\"]').open = true; return 1;",
        )
        .await;
    let png = browser.screenshot().await;
    assert_eq!(&png[1..4], b"PNG");
    let out = std::env::var_os("DISCOVERY_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png"));
    std::fs::write(&out, png).unwrap();
    drop(browser);
    node.stop().await;
}

/// A node that follows an original discovery (a stand-in speaking only its
/// API): the console marks each instance with where it comes from, and
/// shows the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_where_each_instance_comes_from() {
    let Some((driver, chromium)) = browser() else {
        eprintln!("skipped: no chromium / chromedriver (apt-get install chromium chromium-driver)");
        return;
    };
    let original = TestNode::start_with(1_000, |c| c.node.original_api = true).await;
    let old = original.client();
    assert_eq!(old.register("old.app", "sh001", "o1", "1").await.code(), 0);
    let nodes = vec![original.base.trim_start_matches("http://").to_string()];
    let node = TestNode::start_with(2_000, |c| {
        c.upstreams = vec![raft_discovery::config::UpstreamConfig {
            name: "old".into(),
            nodes,
            full_every_ms: 500,
            export_every_ms: 100,
            poll_timeout_ms: 5_000,
            ..Default::default()
        }]
    })
    .await;
    let c = node.client();
    assert_eq!(c.register("new.app", "sh001", "n1", "1").await.code(), 0);
    let browser = Browser::start(&driver, &chromium).await;
    browser.open(&node.url("/")).await;
    browser
        .wait_for(&[
            "old.app",
            "new.app",
            "1 held for elsewhere",
            "original old: import following",
        ])
        .await;
    let row = |app: &str, host: &str| {
        format!(
            "document.querySelector('details[data-app=\"{app}\"]').open = true; \
             const r = document.querySelector('details[data-app=\"{app}\"] tr[data-host=\"{host}\"]'); \
             return r ? r.querySelector('td.origin').innerText : null;"
        )
    };
    assert_eq!(
        browser.run(&row("old.app", "o1")).await,
        json!("original old")
    );
    assert_eq!(browser.run(&row("new.app", "n1")).await, json!("here"));
    drop(browser);
    node.stop().await;
    original.stop().await;
}
