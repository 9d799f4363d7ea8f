//! The final state: every node's registry, read once all nodes stand at
//! one log index, and each watched app as the leader ends it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::check::{AppState, NodeState};
use crate::client::Client;
use crate::cluster::Cluster;
use crate::history::Key;

/// Every node's final state, read once all nodes stand at the same log
/// index and it does not move while their registries are read.
pub struct Settled {
    pub nodes: Vec<NodeState>,
}

impl Settled {
    /// Instances on the first node that answered: what was there before.
    pub fn baseline(&self) -> HashSet<Key> {
        self.nodes
            .iter()
            .find_map(|n| n.instances.as_ref())
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn digest(&self) -> String {
        self.nodes
            .iter()
            .find_map(|n| n.digest.as_ref())
            .map_or("-".into(), |d| {
                d.digest[..12.min(d.digest.len())].to_string()
            })
    }

    pub fn index(&self) -> String {
        self.nodes
            .iter()
            .find_map(|n| n.digest.as_ref()?.applied_index)
            .map_or("-".into(), |i| i.to_string())
    }
}

pub async fn settled(cluster: &Cluster, client: &Client, timeout: Duration) -> Settled {
    let deadline = Instant::now() + timeout;
    loop {
        let before =
            futures::future::join_all(cluster.nodes.iter().map(|n| cluster.digest(n))).await;
        let same_index = before.iter().all(|d| d.is_some())
            && before.windows(2).all(|w| {
                w[0].as_ref().map(|d| d.applied_index) == w[1].as_ref().map(|d| d.applied_index)
            });
        let instances =
            futures::future::join_all(cluster.nodes.iter().map(|n| client.all(&n.client))).await;
        let after =
            futures::future::join_all(cluster.nodes.iter().map(|n| cluster.digest(n))).await;
        let still = before.iter().zip(&after).all(|(b, a)| {
            b.as_ref().map(|d| d.applied_index) == a.as_ref().map(|d| d.applied_index)
        });
        if (same_index && still) || Instant::now() >= deadline {
            return Settled {
                nodes: cluster
                    .nodes
                    .iter()
                    .zip(before.into_iter().zip(instances))
                    .map(|(n, (digest, instances))| NodeState {
                        node: format!("node{}", n.id),
                        digest,
                        instances: instances.ok(),
                    })
                    .collect(),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each watched app as the leader holds it at the end.
pub async fn final_apps(
    cluster: &Cluster,
    client: &Client,
    appids: &[String],
) -> HashMap<String, AppState> {
    let node = match cluster.leader().await {
        Some(id) => cluster.node(id).client.clone(),
        None => cluster.nodes[0].client.clone(),
    };
    let mut apps = HashMap::new();
    for appid in appids {
        if let Ok(state) = client.fetch(&node, appid).await {
            apps.insert(appid.clone(), state);
        }
    }
    apps
}
