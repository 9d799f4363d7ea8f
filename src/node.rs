//! A running node: storage, Raft, the registry and the HTTP server wired
//! together, with an explicit shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::peers::{watch_peers, ProbeSettings};
use crate::cluster::protection::Protection;
use crate::cluster::writer::Writer;
use crate::config::Config;
use crate::http::discovery::{now, Api};
use crate::local::LocalRegistry;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;
use crate::registry::{Registry, Schedules};
use crate::self_discovery::SelfDiscovery;

/// A started node. Dropping it without `shutdown` leaves its tasks running.
pub struct Node {
    addr: SocketAddr,
    raft: Raft,
    db: sled::Db,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Node {
    /// Opens the data directory, recovers the registry from it, starts Raft
    /// and serves HTTP on the configured address.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let db = sled::Config::new()
            .path(data_dir.join("sled"))
            .cache_capacity(config.storage.cache_mb << 20)
            .open()
            .with_context(|| format!("opening sled in {}", data_dir.display()))?;

        let local = LocalRegistry::new(Registry::new(Schedules::new(config.schedules.clone())));
        let state_machine = StateMachine::open(&data_dir, local.clone())?;
        let mut log_store = LogStore::open(&db)?;
        let last_log_index = log_store
            .get_log_state()
            .await?
            .last_log_id
            .map(|l| l.index);

        let raft_config = openraft::Config {
            cluster_name: "raft-discovery".into(),
            heartbeat_interval: config.raft.heartbeat_ms,
            election_timeout_min: config.raft.election_timeout_min_ms,
            election_timeout_max: config.raft.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
            max_in_snapshot_log_to_keep: config.raft.keep_logs,
            max_payload_entries: 64,
            install_snapshot_timeout: 60_000,
            ..Default::default()
        }
        .validate()?;
        let network = Network::new(Duration::from_millis(500))?;
        let raft = Raft::new(
            config.node.id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await?;

        let listener = TcpListener::bind(&config.node.listen)
            .await
            .with_context(|| format!("listening on {}", config.node.listen))?;
        let addr = listener.local_addr()?;

        let (shutdown, stop) = watch::channel(false);
        let nodes = SelfDiscovery::new(local.hub().clone());
        let protection = Arc::new(Protection::new());
        let api = Arc::new(Api {
            local: local.clone(),
            writer: Writer::start(
                raft.clone(),
                Duration::from_millis(config.raft.write_timeout_ms),
            ),
            nodes: nodes.clone(),
            protection: protection.clone(),
            poll_hold: config.poll_hold(),
            env: config.node.env.clone(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::http::serve(
            listener,
            crate::http::router(api, raft.clone()),
            stop.clone(),
        ));
        tasks.spawn(watch_peers(
            raft.clone(),
            nodes.clone(),
            ProbeSettings {
                me: config.node.id,
                region: config.node.region.clone(),
                every: Duration::from_millis(config.raft.heartbeat_ms * 5),
                lost_after: Duration::from_millis(config.raft.election_timeout_max_ms * 2),
            },
            now,
            stop.clone(),
        ));

        if !raft.is_initialized().await? {
            let members: BTreeMap<_, _> = config.initial_members().into_iter().collect();
            tracing::info!(?members, "initialising a new cluster");
            raft.initialize(members).await?;
        }
        tasks.spawn(catch_up(
            raft.clone(),
            last_log_index,
            nodes,
            protection,
            stop,
        ));
        tracing::info!(id = config.node.id, %addr, "node started");
        Ok(Node {
            addr,
            raft,
            db,
            shutdown,
            tasks,
        })
    }

    /// The address the HTTP server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops serving, stops Raft and flushes storage.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.raft
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Lifts start-up protection once this node has applied everything its own
/// log held when it started and publishes the cluster's members.
async fn catch_up(
    raft: Raft,
    target: Option<u64>,
    nodes: Arc<SelfDiscovery>,
    protection: Arc<Protection>,
    mut stop: watch::Receiver<bool>,
) {
    let caught_up = async {
        let mut metrics = raft.metrics();
        let reached = metrics
            .wait_for(|m| m.last_applied.map(|l| l.index) >= target)
            .await
            .is_ok();
        reached
    };
    let published = async {
        while !nodes.has_members() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        (ok, ()) = futures::future::join(caught_up, published) => if ok { protection.lift() },
        _ = crate::http::stopped(&mut stop) => {}
    }
}
