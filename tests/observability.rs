//! What an operator watches: `/metrics` in the Prometheus text format, and
//! one access-log line per request (text or JSON lines).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Timings};
use common::{free_port, serving, Client, TestNode};

/// The value of the sample `name` (labels included, exactly) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_polls_and_raft_state() {
    let node = TestNode::start(300).await;
    let c = node.client();
    assert_eq!(
        c.register("metrics.app", "sh001", "h1", "1").await.code(),
        0
    );
    assert_eq!(c.fetch("metrics.app", 3).await.code(), 0);
    assert_eq!(
        c.post("/discovery/renew", &[("zone", "sh001")])
            .await
            .code(),
        -400
    );
    let renewed = c
        .post(
            "/discovery/renew",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "metrics.app"),
                ("hostname", "h1"),
            ],
        )
        .await;
    assert_eq!(renewed.code(), 0);
    // A poll answered at once, one held until it runs out (-304), and one
    // woken by a register.
    let latest = c.fetch("metrics.app", 3).await.json()["data"]["latest_timestamp"]
        .as_i64()
        .unwrap();
    let poll = |since: i64| {
        let c = c.clone();
        async move {
            c.get(&format!(
                "/discovery/poll?env=dev&appid=metrics.app&hostname=p&latest_timestamp={since}"
            ))
            .await
        }
    };
    assert_eq!(poll(0).await.code(), 0);
    assert_eq!(poll(latest).await.code(), -304);
    let woken = tokio::spawn(poll(latest));
    // Register only once the poll is held, so it is woken, not answered.
    while c.get("/admin/status").await.json()["held_polls"] != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        c.register("metrics.app", "sh001", "h2", "1").await.code(),
        0
    );
    assert_eq!(woken.await.unwrap().code(), 0);
    assert_eq!(c.get("/no/such/path").await.status, 404);

    let scraped = node
        .client()
        .http
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = scraped.text().await.unwrap();
    let expect = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name}:\n{text}"));
    assert_eq!(
        expect(r#"discovery_http_requests_total{endpoint="/discovery/register",code="0"}"#),
        2.0
    );
    assert_eq!(
        expect(r#"discovery_http_requests_total{endpoint="/discovery/renew",code="-400"}"#),
        1.0
    );
    assert_eq!(
        expect(r#"discovery_http_requests_total{endpoint="other",code="404"}"#),
        1.0
    );
    assert_eq!(
        expect(r#"discovery_http_requests_total{endpoint="/discovery/poll",code="-304"}"#),
        1.0
    );
    assert!(
        expect(r#"discovery_http_request_duration_seconds_count{endpoint="/discovery/fetch"}"#)
            >= 2.0
    );
    assert_eq!(expect(r#"discovery_polls_total{answer="at_once"}"#), 1.0);
    assert_eq!(
        expect(r#"discovery_polls_total{answer="not_modified"}"#),
        1.0
    );
    assert_eq!(expect(r#"discovery_polls_total{answer="woken"}"#), 1.0);
    assert_eq!(expect("discovery_poll_wake_seconds_count"), 1.0);
    assert!(expect("discovery_poll_wake_seconds_sum") < 1.0);
    assert_eq!(expect("discovery_renews_total"), 1.0);
    assert_eq!(expect(r#"discovery_instances{env="dev"}"#), 2.0);
    assert_eq!(expect(r#"discovery_apps{env="dev"}"#), 1.0);
    assert_eq!(expect("discovery_raft_is_leader"), 1.0);
    assert_eq!(expect("discovery_raft_leader_id"), 1.0);
    assert!(expect("discovery_raft_term") >= 1.0);
    assert!(expect("discovery_raft_applied_index") >= 3.0);
    assert_eq!(
        expect("discovery_raft_applied_index"),
        expect("discovery_raft_committed_index")
    );
    assert_eq!(expect("discovery_raft_leader_changes_total"), 1.0);
    assert_eq!(expect("discovery_protected"), 0.0);
    assert!(expect("discovery_storage_flush_seconds_count") >= 2.0);
    assert!(expect("discovery_storage_log_bytes") > 0.0);
    assert!(expect("discovery_storage_disk_free_bytes") > 0.0);
    assert_eq!(expect("discovery_polls_held"), 0.0);
    node.stop().await;
}

/// A node process with `config`, its stderr read line by line.
struct Logged {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Logged {
    fn start(config: &str) -> (Logged, Client) {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("node.toml");
        let port = free_port();
        std::fs::write(
            &path,
            format!(
                "[node]\nlisten = \"127.0.0.1:{port}\"\npeer_listen = \"127.0.0.1:{}\"\n\
                 data_dir = \"{}\"\n[tls]\ninsecure_peers = true\n{config}",
                free_port(),
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_discovery"))
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let client = Client {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        (Logged { child, lines }, client)
    }

    /// The first line that contains every one of `parts`.
    fn find(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no line with {parts:?}");
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn every_request_leaves_one_access_log_line() {
    let (node, c) = Logged::start("");
    serving(&c).await;
    assert_eq!(c.register("logged.app", "sh001", "h1", "1").await.code(), 0);
    let line = node.find(&["access", "/discovery/register", "appid=logged.app"]);
    for part in [
        "method=POST",
        "code=0",
        "status=200",
        "latency_ms=",
        "remote=127.0.0.1:",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
    assert_eq!(c.fetch("nothing.here", 3).await.code(), -404);
    let line = node.find(&["access", "/discovery/fetch", "appid=nothing.here"]);
    assert!(
        line.contains("method=GET") && line.contains("code=-404"),
        "{line}"
    );
}

#[tokio::test]
async fn the_access_log_can_be_json_lines_or_off() {
    let (node, c) = Logged::start("[log]\nformat = \"json\"\n");
    serving(&c).await;
    assert_eq!(c.register("json.app", "sh001", "h1", "1").await.code(), 0);
    let line = node.find(&["\"access\"", "/discovery/register"]);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["target"], "access");
    assert_eq!(v["fields"]["path"], "/discovery/register");
    assert_eq!(v["fields"]["code"], "0");
    assert_eq!(v["fields"]["method"], "POST");
    assert!(v["fields"]["params"]
        .as_str()
        .unwrap()
        .contains("hostname=h1"));
    drop(node);

    let (node, c) = Logged::start("[log]\naccess = false\n");
    serving(&c).await;
    assert_eq!(c.register("quiet.app", "sh001", "h1", "1").await.code(), 0);
    // The node logs nothing of the request; its own lines go on.
    assert_eq!(c.fetch("quiet.app", 3).await.code(), 0);
    let lines: Vec<String> =
        std::iter::from_fn(|| node.lines.recv_timeout(Duration::from_millis(500)).ok()).collect();
    assert!(!lines.iter().any(|l| l.contains("quiet.app")), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("node started")),
        "{lines:#?}"
    );
}

/// Metric names (`discovery_…`) in `text`, with the suffixes Prometheus
/// adds to counters and histograms taken off.
/// Runs Prometheus' `promtool` with `input` on its standard input; `None`
/// where it is not installed, unless DISCOVERY_REQUIRE_PROMTOOL is set
/// (CI installs it, Debian's `prometheus`), where that fails the test.
fn promtool(args: &[&str], input: &str) -> Option<std::process::Output> {
    use std::io::Write;
    let spawned = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("DISCOVERY_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here: {e}"
            );
            eprintln!("promtool not found: its checks are skipped");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

fn names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("discovery_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_alerts_name_only_metrics_a_node_exports() {
    // A leader with followers, an instance, a poll, another zone it
    // follows, and an original discovery it follows (a stand-in): every
    // family has a sample.
    let original = TestNode::start_with(1_000, |c| c.node.original_api = true).await;
    let upstream = format!(
        "[[upstream]]\nname = \"old\"\nnodes = [\"{}\"]\n",
        original.base.trim_start_matches("http://")
    );
    let (zones, _link) = Cluster::start_zones(3, &["sh001", "sh002"], || Timings {
        lifecycle: upstream.clone(),
        ..Timings::default()
    })
    .await;
    let cluster = &zones[0];
    let c = cluster.client(cluster.leader().await);
    assert_eq!(c.register("dash.app", "sh001", "h1", "1").await.code(), 0);
    let poll = "/discovery/poll?env=dev&appid=dash.app&hostname=p&latest_timestamp=0";
    assert_eq!(c.get(poll).await.code(), 0);
    let text = c.get("/metrics").await.text;
    // Prometheus' own checker finds nothing to say of what a node
    // exports (every family has its help text) nor of the alert rules.
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    if let Some(out) = promtool(&["check", "metrics"], &text) {
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let rules = docs.join("alerts.yml").display().to_string();
        let out = promtool(&["check", "rules", &rules], "").unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let exported = names_in(&text);
    let dashboard = std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    let alerts = std::fs::read_to_string(docs.join("alerts.yml")).unwrap();
    for (file, text) in [("dashboard", dashboard), ("alerts", alerts)] {
        let used = names_in(&text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} names {unknown:?}, not exported");
    }
}

#[tokio::test]
async fn the_access_log_escapes_what_clients_send_redacts_tokens_and_is_flushed_on_stop() {
    let (mut node, c) = Logged::start("");
    serving(&c).await;
    // A raw CR/LF in a form body, and a token in the query.
    let body = "zone=sh001&env=dev&appid=forge.app\r\n2026-01-01T00:00:00Z  INFO access: \
                request method=GET path=/forged&hostname=h1&status=1&addrs=http%3A%2F%2F10.0.0.1%3A80";
    let answer = c
        .http
        .post(format!("{}/discovery/register?token=s3cret", c.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Stopped at once: the line must still be written.
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(
        unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) },
        0
    );
    let line = node.find(&["access", "/discovery/register"]);
    assert!(
        line.contains("appid=forge.app\\x0D\\x0A2026-01-01"),
        "{line}"
    );
    assert!(line.contains("token=<redacted>"), "{line}");
    let status = node.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = node.lines.try_iter().collect();
    assert!(
        rest.iter()
            .all(|l| !l.contains("path=/forged") && !l.contains("s3cret")),
        "{rest:#?}"
    );
}
