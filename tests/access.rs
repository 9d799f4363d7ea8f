//! Who may write through the client port, and HTTPS on it.

mod common;

use common::{Client, TestNode};
use raft_discovery::peer::certs;

/// A client of `node` whose connections come from `source`.
fn client_from(node: &TestNode, source: [u8; 4]) -> Client {
    Client::from_source(&node.base, source)
}

#[tokio::test]
async fn writes_from_outside_allow_write_from_get_403_and_reads_still_work() {
    let node = TestNode::start_with(1000, |c| {
        c.security.allow_write_from = vec!["127.0.0.1/32".into()];
    })
    .await;
    let inside = client_from(&node, [127, 0, 0, 1]);
    let outside = client_from(&node, [127, 0, 0, 2]);
    assert_eq!(
        inside.register("acl.app", "sh001", "h1", "1").await.code(),
        0
    );

    let key = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "acl.app"),
        ("hostname", "h1"),
    ];
    let register = outside.register("acl.app", "sh001", "h2", "1").await;
    let renew = outside.post("/discovery/renew", &key).await;
    let cancel = outside.post("/discovery/cancel", &key).await;
    let mut set_form = key.to_vec();
    set_form.push(("status", "2"));
    let set = outside.post("/discovery/set", &set_form).await;
    for (what, answer) in [
        ("register", register),
        ("renew", renew),
        ("cancel", cancel),
        ("set", set),
    ] {
        let body = answer.json();
        assert_eq!(body["code"], -403, "{what}: {}", answer.text);
        let message = body["message"].as_str().unwrap();
        // It names the rule, never the networks it lists.
        assert!(
            message.contains("127.0.0.2")
                && message.contains("allow_write_from")
                && !message.contains("127.0.0.1/32"),
            "{what}: {message}"
        );
    }

    // A browser's form post from another site is refused, even from an
    // allowed address; one from the node's own page is not.
    let form = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "form.app"),
        ("hostname", "h3"),
        ("status", "1"),
        ("addrs", "http://10.0.0.3:80"),
    ];
    let host = node.base.trim_start_matches("http://").to_string();
    for (header, value, code) in [
        ("origin", "http://evil.example".to_string(), -403),
        ("referer", "https://evil.example/page".to_string(), -403),
        ("origin", format!("http://{host}"), 0),
    ] {
        let answer: serde_json::Value = inside
            .http
            .post(format!("{}/discovery/register", node.base))
            .header(header, &value)
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["code"], code, "{header}: {value}: {answer}");
    }

    // Reads and polls from the same address are served, and show that none
    // of its writes went through.
    let fetched = outside.fetch("acl.app", 3).await.json();
    let instances = fetched["data"]["instances"]["sh001"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{fetched}");
    assert_eq!(instances[0]["hostname"], "h1");
    assert_eq!(instances[0]["status"], 1);
    let polled = outside
        .get("/discovery/polls?env=dev&hostname=me&appid=acl.app&latest_timestamp=0")
        .await;
    assert_eq!(polled.code(), 0, "{}", polled.text);
    node.stop().await;
}

#[tokio::test]
async fn the_client_port_serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::new_ca("client CA", 30).unwrap();
    let api = raft_discovery::peer::identity::Identity::Node {
        zone: "sh001".into(),
        id: 1,
    };
    let issued = certs::node_cert(&ca, &api, "api", &["127.0.0.1".into()], 30).unwrap();
    let (cert, key) = certs::write(dir.path(), "api", &issued).unwrap();
    let node = TestNode::start_https(1000, &ca.cert, |c| {
        c.tls.client_cert = cert.clone();
        c.tls.client_key = key.clone();
    })
    .await;
    let https = node.client();
    assert!(https.base.starts_with("https://"));
    let port = node
        .config
        .node
        .listen
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    assert_eq!(
        https.register("tls.app", "sh001", "h1", "1").await.code(),
        0
    );
    assert_eq!(https.fetch("tls.app", 1).await.code(), 0);
    // Plain HTTP on the same port gets no discovery answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/discovery/fetch?env=dev&appid=tls.app&status=1"
        ))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP was served"
    );
    node.stop().await;
}

/// A node process with `[security]` set as given, logging to a file.
struct Process {
    child: std::process::Child,
    client: Client,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn process_with(security: &str) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nlisten = \"{addr}\"\npeer_listen = \"127.0.0.1:{}\"\nadvertise = \"{addr}\"\n\
             data_dir = \"{}\"\n[tls]\ninsecure_peers = true\n[security]\n{security}\n",
            common::free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_discovery"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("discovery starts");
    let client = Client::from_source(&format!("http://{addr}"), [127, 0, 0, 1]);
    common::serving(&client).await;
    Process {
        child,
        client,
        log,
        _dir: dir,
    }
}

/// With `public_status = false` and a metrics token, strangers see no peer
/// address, storage figure or disk reading; either token shows them; and
/// wrong tokens sent in a loop cost one log line a minute per reason.
#[tokio::test]
async fn less_for_strangers_and_wrong_tokens_do_not_flood_the_log() {
    let node = process_with(
        "admin_token = \"admin-secret\"\npublic_status = false\nmetrics_token = \"metrics-secret\"",
    )
    .await;
    let c = &node.client;
    let get = |path: &'static str, token: Option<&'static str>| {
        let mut request = c.http.get(format!("{}{path}", c.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, stranger) = get("/admin/status", None).await;
    assert_eq!(code, 200);
    let stranger: serde_json::Value = serde_json::from_str(&stranger).unwrap();
    assert!(
        stranger["members"]["1"]["api_addr"].is_string(),
        "{stranger}"
    );
    assert!(
        stranger["members"]["1"].get("raft_addr").is_none(),
        "{stranger}"
    );
    assert!(stranger.get("storage").is_none(), "{stranger}");
    for token in ["admin-secret", "metrics-secret"] {
        let (_, inside) = get("/admin/status", Some(token)).await;
        let inside: serde_json::Value = serde_json::from_str(&inside).unwrap();
        assert!(inside["members"]["1"]["raft_addr"].is_string(), "{inside}");
        assert!(inside["storage"].is_object(), "{inside}");
    }

    // Probes are asked by orchestrators, which carry no token: open, and
    // one constant line that names nothing of the cluster.
    for (path, want) in [
        ("/admin/ready", r#"{"ready":true}"#),
        ("/admin/live", r#"{"live":true}"#),
    ] {
        assert_eq!(get(path, None).await, (200, want.to_string()), "{path}");
    }

    let (code, body) = get("/metrics", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("metrics_token"), "{body}");
    assert_eq!(get("/metrics", Some("wrong")).await.0, 401);
    for token in ["admin-secret", "metrics-secret"] {
        let (code, body) = get("/metrics", Some(token)).await;
        assert_eq!(code, 200);
        assert!(body.contains("disk_free_bytes"), "{body}");
    }

    // 300 wrong tokens, on two routes.
    for _ in 0..150 {
        assert_eq!(get("/admin/backup", Some("guess")).await.0, 401);
        assert_eq!(get("/metrics", Some("guess")).await.0, 401);
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    let lines = log.lines().filter(|l| l.contains("refused")).count();
    assert!(lines <= 3, "{lines} lines for 300 wrong tokens:\n{log}");
}

/// By default status and metrics stay open, as the console and a plain
/// Prometheus scrape expect.
#[tokio::test]
async fn by_default_status_and_metrics_are_open() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let status = c.status().await;
    assert!(status["members"]["1"]["raft_addr"].is_string(), "{status}");
    assert_eq!(c.get("/metrics").await.status, 200);
    node.stop().await;
}
