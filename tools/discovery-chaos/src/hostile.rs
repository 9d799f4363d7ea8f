//! The hostile peer: a process holding a member's key (a follower's
//! certificate, copied out of its container) that speaks for the leader to
//! every other node while the fault is held: votes for the leader's id at
//! a term far ahead, appends as the leader carrying a forged registration,
//! and requests to campaign. Every one must be refused (403): one that is
//! not is a violation, and the run's checker then finds whether it changed
//! anything (the forged app must be nowhere, the digests must agree).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Node};
use crate::docker::{docker, inspect};

/// The app the forged appends register: it must never appear.
pub const FORGED_APP: &str = "hostile.app";

/// The peer port inside every container.
const PEER_PORT: u16 = 7271;

/// How often each forged message goes to each node.
const EVERY: Duration = Duration::from_millis(100);

/// What the hostile peer sent and what became of it.
#[derive(Debug, Default)]
pub struct Forged {
    pub sent: AtomicU64,
    /// Refused with 403, as it must be.
    pub refused: AtomicU64,
    /// Answered with success: a violation.
    pub accepted: AtomicU64,
    /// Not answered (the target was down, say).
    pub unanswered: AtomicU64,
}

impl Forged {
    pub fn summary(&self) -> String {
        format!(
            "hostile peer: {} forged messages, {} refused, {} accepted, {} unanswered",
            self.sent.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.unanswered.load(Ordering::Relaxed)
        )
    }
}

/// A running hostile peer.
pub struct Hostile {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    pub forged: Arc<Forged>,
}

impl Hostile {
    /// Stops it; what it sent.
    pub async fn stop(&self) -> Arc<Forged> {
        let _ = self.stop.send(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.forged.clone()
    }
}

/// Copies `thief`'s certificate, key and CA out of its container (the
/// files its configuration names) and starts sending, as the leader, to
/// every node but `thief`.
pub async fn start(cluster: &Cluster, thief: &Node, leader: u64) -> anyhow::Result<Hostile> {
    let dir = Scratch::new()?;
    let config = copy_out(&thief.container, "/etc/discovery/discovery.toml", &dir.0).await?;
    let tls: toml::Value = toml::from_str(&std::fs::read_to_string(&config)?)?;
    let path = |key: &str| {
        tls.get("tls")
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("{}: no tls.{key}", thief.container))
    };
    let ca = std::fs::read(copy_out(&thief.container, &path("ca")?, &dir.0).await?)?;
    let cert = std::fs::read(copy_out(&thief.container, &path("cert")?, &dir.0).await?)?;
    let key = std::fs::read(copy_out(&thief.container, &path("key")?, &dir.0).await?)?;
    drop(dir);
    let mut identity = key;
    identity.extend_from_slice(&cert);
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .timeout(Duration::from_secs(2));
    // Each node by the name its certificate carries, at its address on
    // the raft network (not reachable by that name from the host).
    let mut targets = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.id != thief.id) {
        let template = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            cluster.raft_network
        );
        let ip: IpAddr = inspect(&node.container, &template)
            .await?
            .parse()
            .with_context(|| format!("{} has no address on the raft network", node.container))?;
        builder = builder.resolve(&node.raft_alias, SocketAddr::new(ip, PEER_PORT));
        targets.push(format!("https://{}:{PEER_PORT}", node.raft_alias));
    }
    let http = builder.build()?;
    let term = cluster
        .statuses()
        .await
        .into_iter()
        .flatten()
        .map(|s| s.term)
        .max()
        .unwrap_or(1);
    let (stop, mut stopped) = watch::channel(false);
    let forged = Arc::new(Forged::default());
    let counts = forged.clone();
    let task = tokio::spawn(async move {
        let mut index = 1_000_000u64;
        loop {
            for base in &targets {
                for (path, body) in messages(leader, term, index) {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    let sent = http.post(format!("{base}{path}")).json(&body).send().await;
                    let counter = match sent {
                        Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN => &counts.refused,
                        Ok(r) if r.status().is_success() => &counts.accepted,
                        _ => &counts.unanswered,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            index += 1;
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    });
    Ok(Hostile {
        stop,
        task: Mutex::new(Some(task)),
        forged,
    })
}

/// A vote, an append and a request to campaign, each speaking for
/// `leader`.
fn messages(leader: u64, term: u64, index: u64) -> Vec<(&'static str, serde_json::Value)> {
    let log_id = |i: u64| json!({"leader_id": {"term": term, "node_id": leader}, "index": i});
    let register = json!({"Register": {
        "registration": {
            "region": "sh", "zone": "sh001", "env": "dev", "appid": FORGED_APP,
            "hostname": format!("forged-{index}"), "addrs": ["http://10.6.6.6:80"],
            "version": "", "metadata": {}, "status": 1
        },
        "at": 1
    }});
    vec![
        (
            "/internal/raft/vote",
            json!({
                "vote": {"leader_id": {"term": term + 100, "node_id": leader}, "committed": false},
                "last_log_id": log_id(index),
            }),
        ),
        (
            "/internal/raft/append",
            json!({
                "vote": {"leader_id": {"term": term, "node_id": leader}, "committed": true},
                "prev_log_id": log_id(index - 1),
                "entries": [{"log_id": log_id(index), "payload": {"Normal": {"commands": [register]}}}],
                "leader_commit": log_id(index),
            }),
        ),
        (
            "/internal/raft/elect",
            json!({"from": leader, "last_log_index": index}),
        ),
    ]
}

/// A directory of this process's own, removed with everything in it (the
/// stolen key) when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("discovery-chaos-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `path` out of `container` into `dir`; the copy's path.
async fn copy_out(container: &str, path: &str, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let name = Path::new(path)
        .file_name()
        .with_context(|| format!("{path}: not a file"))?;
    let to = dir.join(name);
    docker(&[
        "cp",
        &format!("{container}:{path}"),
        &to.display().to_string(),
    ])
    .await?;
    Ok(to)
}
