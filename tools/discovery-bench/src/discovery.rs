//! What the bench asks of a discovery server: requests rendered as HTTP/1.1
//! bytes, the names of the instances it registers, and the few one-shot
//! calls used for setup and checks.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use tokio::time::timeout;

use crate::http::Conn;
use crate::load::{SpreadRender, REQUEST_TIMEOUT};
use crate::peers::Ports;

pub const ENV: &str = "dev";
pub const ZONE: &str = "sh001";

/// Renders a GET request into `buf`.
pub fn get(buf: &mut Vec<u8>, host: SocketAddr, target: &str) {
    buf.clear();
    buf.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
}

/// Renders a form POST into `buf`.
pub fn post_form(buf: &mut Vec<u8>, host: SocketAddr, path: &str, form: &str) {
    buf.clear();
    buf.extend_from_slice(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
    );
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A set of instances spread over apps. Instance `n` goes to app
/// `n % apps`, so registering them in order touches every app early.
#[derive(Clone, Copy)]
pub struct Fleet {
    pub prefix: &'static str,
    pub apps: u64,
}

impl Fleet {
    pub fn appid(&self, app: u64) -> String {
        format!("{}.app.{app:04}", self.prefix)
    }

    /// The appid and hostname of instance `n`.
    pub fn names(&self, n: u64) -> (String, String) {
        let app = n % self.apps;
        let hostname = format!("{}-{app:04}-{:03}", self.prefix, n / self.apps);
        (self.appid(app), hostname)
    }

    /// The register form of instance `n`.
    pub fn register_form(&self, n: u64) -> String {
        let (appid, hostname) = self.names(n);
        let addr = format!(
            "grpc://10.{}.{}.{}:9000",
            (n >> 16) & 255,
            (n >> 8) & 255,
            n & 255
        );
        form(&[
            ("zone", ZONE),
            ("env", ENV),
            ("appid", &appid),
            ("hostname", &hostname),
            ("status", "1"),
            ("addrs", &addr),
            ("version", "v1"),
            ("metadata", r#"{"weight":"10"}"#),
        ])
    }

    /// The renew form of instance `n`.
    pub fn renew_form(&self, n: u64) -> String {
        let (appid, hostname) = self.names(n);
        form(&[
            ("zone", ZONE),
            ("env", ENV),
            ("appid", &appid),
            ("hostname", &hostname),
        ])
    }

    /// Request `n` of a load renewing the first `instances` of the fleet
    /// over and over, sent to whichever node the load picks.
    pub fn renews(self, instances: u64) -> SpreadRender {
        Arc::new(move |addr: SocketAddr, n: u64, buf: &mut Vec<u8>| {
            post_form(
                buf,
                addr,
                "/discovery/renew",
                &self.renew_form(n % instances),
            );
        })
    }
}

/// The request target of a fetch of the up instances of `appid`.
pub fn fetch_target(appid: &str) -> String {
    format!(
        "/discovery/fetch?{}",
        form(&[("env", ENV), ("appid", appid), ("status", "1")])
    )
}

/// The request target of a long poll on `appid`.
pub fn polls_target(appid: &str, hostname: &str, latest_timestamp: i64) -> String {
    format!(
        "/discovery/polls?{}",
        form(&[
            ("env", ENV),
            ("hostname", hostname),
            ("appid", appid),
            ("latest_timestamp", &latest_timestamp.to_string()),
        ])
    )
}

/// Whether an answer counts as a success: HTTP 200, and code 0 when the
/// body is a discovery envelope (any other body, as from a plain URL, is
/// judged by its status alone).
pub fn succeeded(status: u16, body: &[u8]) -> bool {
    status == 200 && (!body.starts_with(br#"{"code":"#) || body.starts_with(br#"{"code":0,"#))
}

/// What `/admin/status` says, as far as the bench cares.
#[derive(Deserialize)]
pub struct Status {
    pub state: String,
    pub leader: Option<u64>,
    pub protected: bool,
    pub instances: u64,
    pub held_polls: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub storage: Storage,
}

/// The disk work of a node's log since it started (`storage` in
/// `/admin/status`).
#[derive(Clone, Copy, Default, Deserialize)]
pub struct Storage {
    pub flushes: u64,
    pub appended_entries: u64,
}

impl Status {
    pub fn applied(&self) -> u64 {
        self.applied_index.unwrap_or(0)
    }

    pub fn committed(&self) -> u64 {
        self.committed_index.unwrap_or(0)
    }
}

/// One request on a fresh connection; the answer's status and body.
pub async fn once(addr: SocketAddr, request: &[u8]) -> Result<(u16, Vec<u8>)> {
    timeout(REQUEST_TIMEOUT, async {
        let mut conn = Conn::connect(addr).await?;
        let reply = conn.send(request).await?;
        Ok((reply.status, reply.body.to_vec()))
    })
    .await
    .context("no answer in time")?
}

pub async fn status(addr: SocketAddr) -> Result<Status> {
    let mut req = Vec::new();
    get(&mut req, addr, "/admin/status");
    let (code, body) = once(addr, &req).await?;
    ensure!(code == 200, "/admin/status answered HTTP {code}");
    serde_json::from_slice(&body).context("parsing /admin/status")
}

/// Registers one instance and checks that the server committed it.
pub async fn register(addr: SocketAddr, form: &str) -> Result<()> {
    let mut req = Vec::new();
    post_form(&mut req, addr, "/discovery/register", form);
    let (code, body) = once(addr, &req).await?;
    ensure!(
        succeeded(code, &body),
        "register answered HTTP {code}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// Adds node `id`, serving clients on `node.client` and peers on
/// `node.peer`, to the cluster as a learner through the admin API of the
/// node at `addr` (with the admin token, if the build wants one); answers
/// once the leader says it has caught up.
pub async fn add_learner(
    addr: SocketAddr,
    id: u64,
    node: Ports,
    token: Option<&str>,
) -> Result<()> {
    let request = add_learner_request(addr, id, node, token);
    // Catching up may take long: wait as long as the server does.
    let mut conn = Conn::connect(addr).await?;
    let reply = timeout(LEARNER_TIMEOUT, conn.send(request.as_bytes()))
        .await
        .context("adding the learner took too long")??;
    let answer: Value = serde_json::from_slice(reply.body).with_context(|| {
        format!(
            "/admin/membership answered HTTP {}: {}",
            reply.status,
            String::from_utf8_lossy(reply.body)
        )
    })?;
    ensure!(
        answer.get("Ok").is_some(),
        "adding node {id} as a learner failed: {answer}"
    );
    Ok(())
}

/// The `add_learner` request: the new node's peer port is its Raft
/// address, its client port its API address.
fn add_learner_request(addr: SocketAddr, id: u64, node: Ports, token: Option<&str>) -> String {
    let body = serde_json::json!({
        "change": "add_learner",
        "id": id,
        "name": format!("node{id}"),
        "raft_addr": node.peer.to_string(),
        "api_addr": node.client.to_string(),
        "zone": ZONE,
    })
    .to_string();
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /admin/membership HTTP/1.1\r\nHost: {addr}\r\n{authorization}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// How long the server itself lets a membership change take.
const LEARNER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The `renew_timestamp` of instance `hostname` in a fetch answer's body.
pub fn renew_timestamp(body: &[u8], hostname: &str) -> Result<i64> {
    let json: Value = serde_json::from_slice(body).context("parsing the fetch answer")?;
    json["data"]["instances"]
        .as_object()
        .context("fetch answer without data.instances")?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .find(|i| i["hostname"] == hostname)
        .and_then(|i| i["renew_timestamp"].as_i64())
        .with_context(|| format!("{hostname} is not in the fetch answer"))
}

/// A successful fetch: its exact body and what the bench reads from it.
pub struct Fetched {
    pub body: Vec<u8>,
    pub latest_timestamp: i64,
    pub instances: usize,
}

pub async fn fetch(addr: SocketAddr, appid: &str) -> Result<Fetched> {
    let mut req = Vec::new();
    get(&mut req, addr, &fetch_target(appid));
    let (code, body) = once(addr, &req).await?;
    ensure!(
        succeeded(code, &body),
        "fetch {appid} answered HTTP {code}: {}",
        String::from_utf8_lossy(&body)
    );
    let json: Value = serde_json::from_slice(&body).context("parsing the fetch answer")?;
    let data = &json["data"];
    let latest_timestamp = data["latest_timestamp"]
        .as_i64()
        .context("fetch answer without data.latest_timestamp")?;
    let instances = data["instances"]
        .as_object()
        .context("fetch answer without data.instances")?
        .values()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .sum();
    Ok(Fetched {
        body,
        latest_timestamp,
        instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_learner_names_the_peer_port_and_carries_the_token() {
        let at = SocketAddr::from(([127, 0, 0, 1], 7001));
        let node = Ports {
            client: SocketAddr::from(([127, 0, 0, 1], 7004)),
            peer: SocketAddr::from(([127, 0, 0, 1], 7104)),
        };
        let request = add_learner_request(at, 4, node, Some("s3cret"));
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /admin/membership HTTP/1.1\r\n"));
        assert!(head.contains("\r\nAuthorization: Bearer s3cret\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["raft_addr"], "127.0.0.1:7104");
        assert_eq!(json["api_addr"], "127.0.0.1:7004");
        assert_eq!(json["id"], 4);
        let plain = add_learner_request(at, 4, node, None);
        assert!(!plain.contains("Authorization"));
    }
}
