//! A running node: storage, Raft, the registry and the HTTP server wired
//! together, with an explicit shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::now;
use crate::cluster::bootstrap::form_cluster;
use crate::cluster::catch_up::lift_when_caught_up;
use crate::cluster::evictor::{evict_silent, EvictionState};
use crate::cluster::peers::{watch_peers, ProbeSettings};
use crate::cluster::protection::Protection;
use crate::cluster::renewer::{RenewLedger, RenewSettings, Renewer};
use crate::cluster::writer::Writer;
use crate::config::Config;
use crate::http::admin::Admin;
use crate::http::discovery::Api;
use crate::http::internal::PeerApi;
use crate::local::LocalRegistry;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, CONNECT_TIMEOUT};
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
        let log_store = LogStore::open(&db)?;

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
        let network = Network::new(CONNECT_TIMEOUT)?;
        let raft = Raft::new(
            config.node.id,
            Arc::new(raft_config),
            network,
            log_store.clone(),
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
        let wait_for_leader = Duration::from_millis(config.raft.write_timeout_ms);
        let writer = Writer::start(raft.clone(), wait_for_leader);
        let policy = config.eviction_policy();
        let ledger = RenewLedger::new(policy.window);
        let renew_settings = RenewSettings {
            me: config.node.id,
            batch: Duration::from_millis(config.renew.batch_ms),
            wait_for_leader,
            quorum_within: Duration::from_millis(config.raft.election_timeout_max_ms),
        };
        let renewer = Renewer::start(
            raft.clone(),
            local.clone(),
            ledger.clone(),
            writer.clone(),
            renew_settings.clone(),
            stop.clone(),
        );
        let eviction = Arc::new(EvictionState::default());
        let api = Arc::new(Api {
            local: local.clone(),
            writer: writer.clone(),
            renewer,
            nodes: nodes.clone(),
            protection: protection.clone(),
            poll_hold: config.poll_hold(),
            env: config.node.env.clone(),
        });
        let peers = Arc::new(PeerApi {
            raft: raft.clone(),
            local: local.clone(),
            ledger: ledger.clone(),
            renew: renew_settings,
        });
        let admin = Admin {
            raft: raft.clone(),
            api: api.clone(),
            log: log_store.clone(),
            eviction: eviction.clone(),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::http::serve(
            listener,
            crate::http::router(api, peers, admin),
            stop.clone(),
        ));
        tasks.spawn(evict_silent(
            raft.clone(),
            config.node.id,
            local.clone(),
            ledger,
            writer,
            policy,
            Duration::from_millis(config.eviction.every_ms),
            eviction,
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

        let retry = Duration::from_millis(config.raft.heartbeat_ms * 2);
        if !config.cluster.join {
            tasks.spawn(form_cluster(
                raft.clone(),
                config.node.id,
                config.initial_members(),
                retry,
                stop.clone(),
            ));
        }
        tasks.spawn(lift_when_caught_up(
            raft.clone(),
            config.node.id,
            nodes,
            protection,
            retry,
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
