//! The compose cluster as seen from the host: its containers (found by the
//! labels docker-compose.yml puts on them), their client addresses, and
//! their Raft status over the admin API of the client port. The host never
//! changes the membership, so it needs no admin token; it talks to a peer
//! port only as the hostile peer ([`crate::hostile`]), with a key it
//! copies out of a container.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::check::Digest;
use crate::docker::docker;

/// One node: its id, where clients reach it, its container.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: u64,
    pub client: String,
    pub container: String,
    /// Its name on the raft network (the host of its `raft_addr` and of
    /// its certificate), given back when it reconnects.
    pub raft_alias: String,
}

/// The part of `/admin/status` the chaos run reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub id: u64,
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub protected: bool,
    pub quorum_ack_ms: Option<u64>,
    #[serde(default)]
    pub members: std::collections::BTreeMap<String, MemberStatus>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct MemberStatus {
    pub lag: Option<u64>,
}

/// A follower this far behind the leader's log still counts as caught up:
/// the workload keeps appending while the check runs.
const CAUGHT_UP_LAG: u64 = 200;

impl Status {
    /// Leads, and a quorum acknowledged it within `fresh`.
    pub fn leads(&self, fresh: Duration) -> bool {
        self.state == "Leader"
            && self
                .quorum_ack_ms
                .is_some_and(|ms| u128::from(ms) <= fresh.as_millis())
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The docker network peers talk on (peer port 7271, mutual TLS).
    pub raft_network: String,
    http: reqwest::Client,
    /// How recent a leader's quorum acknowledgement must be to count.
    pub fresh: Duration,
}

impl Cluster {
    /// Finds the nodes and the raft network by their labels.
    pub async fn discover(fresh: Duration) -> anyhow::Result<Cluster> {
        let listing = docker(&[
            "ps",
            "--all",
            "--filter",
            "label=raft-discovery.node",
            "--format",
            "{{.ID}} {{.Label \"raft-discovery.node\"}} {{.Label \"raft-discovery.client\"}} {{.Label \"raft-discovery.raft-alias\"}}",
        ])
        .await?;
        let mut nodes = Vec::new();
        for line in listing.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            anyhow::ensure!(f.len() == 4, "unexpected container listing: {line}");
            nodes.push(Node {
                id: f[1].parse()?,
                client: f[2].to_string(),
                container: f[0].to_string(),
                raft_alias: f[3].to_string(),
            });
        }
        nodes.sort_by_key(|n| n.id);
        anyhow::ensure!(
            nodes.len() >= 3,
            "found {} raft-discovery containers; start the cluster with `docker compose up -d`",
            nodes.len()
        );
        let ids: std::collections::BTreeSet<u64> = nodes.iter().map(|n| n.id).collect();
        anyhow::ensure!(
            ids.len() == nodes.len(),
            "containers of more than one raft-discovery cluster are present"
        );
        let networks = docker(&[
            "network",
            "ls",
            "--filter",
            "label=raft-discovery.network=raft",
            "--format",
            "{{.Name}}",
        ])
        .await?;
        let networks: Vec<&str> = networks.lines().collect();
        anyhow::ensure!(
            networks.len() == 1,
            "expected one raft network, found {networks:?}"
        );
        Ok(Cluster {
            nodes,
            raft_network: networks[0].to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(250))
                .build()?,
            fresh,
        })
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or(&self.nodes[0])
    }

    pub fn clients(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.clone()).collect()
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
        timeout: Duration,
    ) -> Option<T> {
        let r = self
            .http
            .get(format!("http://{}{path}", node.client))
            .timeout(timeout)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The node's status. A live node answers within a millisecond or
    /// two; one that takes longer than this is counted as silent.
    pub async fn status(&self, node: &Node) -> Option<Status> {
        self.get(node, "/admin/status", Duration::from_millis(250))
            .await
    }

    /// Whether the node serves `appid` in env dev (a fetch that is not
    /// `-404`); a node that does not answer counts as not serving it.
    pub async fn holds_app(&self, node: &Node, appid: &str) -> bool {
        let path = format!("/discovery/fetch?env=dev&appid={appid}&status=3");
        let answer: Option<serde_json::Value> = self.get(node, &path, Duration::from_secs(5)).await;
        answer.is_some_and(|a| a["code"] != -404)
    }

    pub async fn digest(&self, node: &Node) -> Option<Digest> {
        self.get(node, "/admin/digest", Duration::from_secs(5))
            .await
    }

    /// Every node's status, in node order (`None`: no answer).
    pub async fn statuses(&self) -> Vec<Option<Status>> {
        futures::future::join_all(self.nodes.iter().map(|n| self.status(n))).await
    }

    /// The node that leads with a fresh quorum, if one does.
    pub async fn leader(&self) -> Option<u64> {
        self.statuses()
            .await
            .into_iter()
            .flatten()
            .find(|s| s.leads(self.fresh))
            .map(|s| s.id)
    }

    /// Healthy: every node answers and serves, all follow one leader that
    /// has its quorum, and every follower has nearly caught up.
    pub async fn healthy(&self) -> bool {
        let statuses = self.statuses().await;
        let Some(all) = statuses.into_iter().collect::<Option<Vec<Status>>>() else {
            return false;
        };
        let Some(leader) = all.iter().find(|s| s.leads(self.fresh)) else {
            return false;
        };
        all.iter()
            .all(|s| !s.protected && s.leader == Some(leader.id))
            && self.nodes.iter().all(|n| {
                n.id == leader.id
                    || leader
                        .members
                        .get(&n.id.to_string())
                        .and_then(|m| m.lag)
                        .is_some_and(|lag| lag <= CAUGHT_UP_LAG)
            })
    }

    /// Waits until healthy; how long it took, or `None` after `timeout`.
    pub async fn wait_healthy(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.healthy().await {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}
