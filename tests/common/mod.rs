//! Starts real nodes on 127.0.0.1 ports and talks to them over HTTP, as a
//! client would.
#![allow(dead_code)]

pub mod cluster;
pub mod link;

use std::net::TcpListener;
use std::time::Duration;

use raft_discovery::config::Config;
use raft_discovery::node::Node;
use serde_json::Value;
use tempfile::TempDir;

/// An HTTPS client trusting the CA in `ca`, presenting `identity` if
/// given: a peer, as far as its certificate goes.
pub fn tls_client(
    ca: &std::path::Path,
    identity: Option<&raft_discovery::peer::certs::Issued>,
) -> reqwest::Client {
    let ca = std::fs::read(ca).expect("CA file");
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a CA"))
        .timeout(Duration::from_secs(5));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.key, id.cert);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

/// Where test ports are taken from: below the kernel's ephemeral range
/// (32768 and up), so no outgoing connection's source port, and no port
/// the kernel hands out for `:0`, can be one a starting node is about to
/// bind.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port free at the time of asking, never the same twice in one test
/// process: tests start many nodes at once (two ports each), and a port
/// asked of the kernel, released, and bound a moment later by a spawned
/// node could meanwhile go to another test's node.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    // Test processes run one after another; spread them anyway.
    let offset = std::process::id() * 97;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "out of test ports");
        let port = (PORTS.start + (offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A lone node's configuration on free loopback ports, its data in `dir`.
pub fn single_config(dir: &std::path::Path) -> Config {
    let port = free_port();
    let mut config = Config::default();
    config.node.listen = format!("127.0.0.1:{port}");
    config.node.peer_listen = format!("127.0.0.1:{}", free_port());
    config.node.advertise = format!("127.0.0.1:{port}");
    // One node alone calls no peer.
    config.tls.insecure_peers = true;
    config.node.data_dir = dir.to_path_buf();
    config.node.name = "test1".into();
    config
}

/// A single node on its own data directory.
pub struct TestNode {
    node: Option<Node>,
    pub config: Config,
    pub base: String,
    http: reqwest::Client,
    _dir: TempDir,
}

impl TestNode {
    /// A fresh node whose long polls are held `hold_ms`.
    pub async fn start(hold_ms: u64) -> TestNode {
        Self::start_with(hold_ms, |_| {}).await
    }

    pub async fn start_with(hold_ms: u64, adjust: impl FnOnce(&mut Config)) -> TestNode {
        Self::start_on(hold_ms, adjust, None).await
    }

    /// A node whose client port speaks HTTPS with a certificate `ca_pem`
    /// signed, as `adjust` sets up.
    pub async fn start_https(
        hold_ms: u64,
        ca_pem: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> TestNode {
        Self::start_on(hold_ms, adjust, Some(ca_pem)).await
    }

    async fn start_on(
        hold_ms: u64,
        adjust: impl FnOnce(&mut Config),
        https_ca: Option<&str>,
    ) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = single_config(dir.path());
        config.poll.hold_ms = hold_ms;
        adjust(&mut config);
        // Where it listens, as `adjust` left it.
        let port = config
            .node
            .listen
            .rsplit_once(':')
            .expect("a port")
            .1
            .to_string();
        let config = config.finish().expect("valid config");
        let node = Node::start(config.clone()).await.expect("node starts");
        let (scheme, http) = match https_ca {
            None => ("http", reqwest::Client::new()),
            Some(ca) => {
                let ca = reqwest::Certificate::from_pem(ca.as_bytes()).expect("a CA");
                let http = reqwest::Client::builder()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(ca)
                    .build()
                    .expect("client");
                ("https", http)
            }
        };
        let t = TestNode {
            node: Some(node),
            base: format!("{scheme}://127.0.0.1:{port}"),
            http,
            config,
            _dir: dir,
        };
        t.wait_serving().await;
        t
    }

    /// Waits until reads are served (start-up protection lifted).
    pub async fn wait_serving(&self) {
        let http = &self.http;
        for _ in 0..200 {
            // A stand-in for the original serves no status: its reads are
            // served once protection is lifted.
            if self.config.node.original_api {
                if let Ok(r) = http
                    .get(format!("{}/discovery/fetch/all", self.base))
                    .send()
                    .await
                {
                    if r.status() == 200 {
                        return;
                    }
                }
            } else if let Ok(r) = http.get(format!("{}/admin/status", self.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["protected"] == false && v["leader"].is_u64() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("node at {} never served", self.base);
    }

    /// Stops the node and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
        // In one process, sled's flusher thread may hold the directory's
        // lock a moment after the old node is gone (a process that exits
        // releases it at once): the lock alone is waited for.
        let mut tries = 0;
        let node = loop {
            match Node::start(self.config.clone()).await {
                Ok(node) => break node,
                Err(e) if format!("{e:#}").contains("lock") && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node restarts: {e:#}"),
            }
        };
        self.node = Some(node);
        self.wait_serving().await;
    }

    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("clean shutdown");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: self.http.clone(),
        }
    }
}

/// The hostnames a fetch of `appid` on `c` shows, in every zone (none when
/// `-404`).
pub async fn hostnames(c: &Client, appid: &str) -> std::collections::BTreeSet<String> {
    let v = c.fetch(appid, 3).await.json();
    v["data"]["instances"]
        .as_object()
        .into_iter()
        .flat_map(|zones| zones.values())
        .flat_map(|z| z.as_array().cloned().unwrap_or_default())
        .map(|i| i["hostname"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until a fetch of `appid` on `c` lists `hostname` (a node other
/// than the one that took the write applies it a moment later).
pub async fn wait_listed(c: &Client, appid: &str, hostname: &str) {
    for _ in 0..500 {
        if hostnames(c, appid).await.contains(hostname) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{hostname} never listed: {}", c.fetch(appid, 3).await.text);
}

/// One answer: HTTP status, headers, body text and body JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The discovery code in the body.
    pub fn code(&self) -> i64 {
        self.json()["code"].as_i64().expect("a code")
    }
}

/// A plain HTTP client of one node.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    /// A client of `base` whose connections come from `source`.
    pub fn from_source(base: &str, source: [u8; 4]) -> Client {
        Client {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .local_address(std::net::IpAddr::from(source))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    async fn answer(r: reqwest::Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.expect("a body"),
        }
    }

    /// POST a form body given as `key=value` pairs (values url-encoded).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("request sent");
        Self::answer(r).await
    }

    /// GET with a raw query string.
    pub async fn get(&self, path_and_query: &str) -> Answer {
        let r = self
            .http
            .get(format!("{}{}", self.base, path_and_query))
            .send()
            .await
            .expect("request sent");
        Self::answer(r).await
    }

    pub async fn register(&self, appid: &str, zone: &str, hostname: &str, status: &str) -> Answer {
        self.post(
            "/discovery/register",
            &[
                ("zone", zone),
                ("env", "dev"),
                ("appid", appid),
                ("hostname", hostname),
                ("status", status),
                ("addrs", &format!("grpc://{hostname}:9000")),
            ],
        )
        .await
    }

    pub async fn fetch(&self, appid: &str, status: u32) -> Answer {
        self.get(&format!(
            "/discovery/fetch?env=dev&appid={appid}&status={status}"
        ))
        .await
    }

    /// The app's latest_timestamp, from a fetch.
    pub async fn latest(&self, appid: &str) -> i64 {
        let a = self.fetch(appid, 3).await;
        a.json()["data"]["latest_timestamp"]
            .as_i64()
            .unwrap_or_else(|| panic!("no timestamp in {}", a.text))
    }

    pub async fn status(&self) -> Value {
        self.get("/admin/status").await.json()
    }
}

/// A tmpfs of a few MiB mounted on a directory (root only), unmounted when
/// dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(dir: &std::path::Path, mb: u32) -> Self {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }

    /// Gives the file system `mb` MiB in all, keeping what it holds.
    pub fn grow(&self, mb: u32) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(ok.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Waits until the node behind `c` serves reads (start-up protection
/// lifted), for nodes started as processes.
pub async fn serving(c: &Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(r) = c.http.get(format!("{}/admin/status", c.base)).send().await {
            if r.json::<Value>()
                .await
                .is_ok_and(|v| v["protected"] == false)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never served", c.base);
}

/// Runs discoveryctl against `node`; its output, or its error.
pub async fn discoveryctl(
    node: &str,
    token: Option<&str>,
    args: &[&str],
) -> Result<String, String> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_discoveryctl"));
    cmd.env_remove("DISCOVERY_ADMIN_TOKEN")
        .args(["--node", node]);
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Waits until the node behind `c` holds `n` polls.
pub async fn wait_held(c: &Client, n: u64) {
    for _ in 0..200 {
        if c.status().await["held_polls"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never {n} held polls: {}", c.status().await);
}

/// The `discovery` binary as a lone node with plain peers, its data in
/// `dir`, serving clients on `port`: flags and output left to the caller.
pub fn single_node(dir: &std::path::Path, port: u16) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_discovery"));
    cmd.env_remove("DISCOVERY_ADMIN_TOKEN")
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--advertise", &format!("127.0.0.1:{port}")])
        .args(["--peer-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--insecure-peers");
    cmd
}

/// Copies the directory `from`, with everything in it, to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A directory from which Python imports `module`, `package` installed
/// there from PyPI first if it does not import yet (under cargo's scratch
/// directory, named `dir`).
pub fn python_package(dir: &str, module: &str, package: &str) -> std::path::PathBuf {
    use std::process::Command;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    // The first try's ModuleNotFoundError is expected: not printed.
    let importable = |stderr: std::process::Stdio| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .env("PYTHONPATH", &dir)
            .stderr(stderr)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(std::process::Stdio::null()) {
        let installed = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&dir)
            .arg(package)
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .status()
            .expect("python3 runs");
        assert!(installed.success(), "pip install {package} failed");
        assert!(
            importable(std::process::Stdio::inherit()),
            "{package} installed but {module} does not import"
        );
    }
    dir
}
