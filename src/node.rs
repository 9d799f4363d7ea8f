//! A running node: storage, Raft, the registry and its two listeners (the
//! client API, the peer surface) wired together, with an explicit shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::SnapshotPolicy;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::AdminToken;
use crate::clock::now;
use crate::cluster::appender::Appender;
use crate::cluster::bootstrap::{form_cluster, Forming};
use crate::cluster::catch_up::{lift_when_caught_up, ReadBarrier};
use crate::cluster::consistency::{propose_checks, start_check, Compare};
use crate::cluster::evictor::{evict_silent, EvictionState};
use crate::cluster::founding::Founding;
use crate::cluster::handover::{Handover, HandoverError, WriteGate};
use crate::cluster::identity::{self, ClusterId, Verdict};
use crate::cluster::leader_watch::count_leader_changes;
use crate::cluster::link::Link;
use crate::cluster::peers::{watch_peers, ProbeSettings};
use crate::cluster::protection::Protection;
use crate::cluster::removal::Refusals;
use crate::cluster::renewer::{RenewLedger, RenewSettings, Renewer};
use crate::cluster::repair::{self, Repair};
use crate::cluster::scrub::Scrub;
use crate::cluster::writer::{Checks, Writer};
use crate::config::{Config, LogFormat};
use crate::http::access::Access;
use crate::http::access_log::{self, AccessLog};
use crate::http::admin::Admin;
use crate::http::discovery::Api;
use crate::http::head::HeadLimits;
use crate::http::lean::HeldPolls;
use crate::http::observe::Observe;
use crate::local::LocalRegistry;
use crate::peer::client::PeerClient;
use crate::peer::guard::{Guard, Guarding};
use crate::peer::identity::Identity;
use crate::peer::network::Network;
use crate::peer::rotation;
use crate::peer::routes::PeerApi;
use crate::peer::tls::{self, CertFiles, PeerTls};
use crate::raft::data_dir;
use crate::raft::log_store::{LogStore, Records};
use crate::raft::space::SpaceGuard;
use crate::raft::state_machine::{SnapshotMetrics, StateMachine};
use crate::raft::{Member, Raft};
use crate::registry::{Registry, Schedules};
use crate::self_discovery::SelfDiscovery;
use crate::server::lean::Lean;
use crate::server::{open_files, serve, Bounds, Listener, Tls};
use crate::shutdown::{watch_core, Faults, Stop};
use crate::telemetry::Metrics;
use crate::zones::puller::{Contacts, Follow};
use crate::zones::router::Zones;

/// How long a peer request (a whole snapshot included) may take to arrive.
const PEER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections the peer listener keeps open: peers hold a few each.
const PEER_CONNECTIONS: usize = 1024;

/// TLS handshakes under way at once on the peer port, and how long one may
/// take: peers finish theirs in milliseconds, so sockets that never start
/// one (4,000 of them, in a test) are closed at once past this cap, or
/// after this time, never piling up.
const PEER_HANDSHAKES: usize = 64;
const PEER_HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);

/// The same on the client port, when it speaks HTTPS.
const CLIENT_HANDSHAKES: usize = 1024;

/// The certificate files the configuration names.
fn cert_files(config: &Config) -> CertFiles {
    let t = &config.tls;
    CertFiles {
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
        link: (!t.link_cert.as_os_str().is_empty())
            .then(|| (t.link_cert.clone(), t.link_key.clone())),
        zone_cas: t.zone_cas.clone(),
    }
}

/// A started node. Dropping it without `shutdown` leaves its tasks running.
pub struct Node {
    addr: SocketAddr,
    peer_addr: SocketAddr,
    raft: Raft,
    db: sled::Db,
    local: Arc<LocalRegistry>,
    handover: Handover,
    /// A read replica leaves its cluster when it stops: how it reaches the
    /// members to ask.
    replica: Option<(Link, Vec<Member>)>,
    /// Flushed once clients are let go.
    access_log: Option<Arc<AccessLog>>,
    /// Stops the client listener, first.
    clients_stop: watch::Sender<bool>,
    clients: tokio::task::JoinHandle<()>,
    /// Stops everything else.
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    faults: Faults,
}

impl Node {
    /// Opens the data directory, recovers the registry from it, starts Raft
    /// and serves clients and peers on the configured addresses.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let me = Identity::Node {
            zone: config.node.zone.clone(),
            id: config.node.id,
        };
        let peer_tls = if config.tls.insecure_peers {
            tracing::warn!(
                "tls.insecure_peers = true: peers talk plain HTTP, and anyone who reaches {} \
                 can write this node's log",
                config.node.peer_listen
            );
            None
        } else {
            let tls = PeerTls::load(&cert_files(&config), &me)?;
            tracing::info!(identity = %tls.me.uri(), expires = %tls.expires, "peer certificate");
            Some(tls)
        };
        let client_tls = if config.tls.client_cert.as_os_str().is_empty() {
            None
        } else {
            Some(tls::client_port(
                &config.tls.client_cert,
                &config.tls.client_key,
            )?)
        };
        let hosts = crate::peer::client::Hosts::read(&config.node.hosts_file)?;
        let peer_client = PeerClient::resolving(peer_tls.as_ref(), hosts)?;
        let (peer_server_tls, rotate) = match &peer_tls {
            Some(tls) => {
                let (source, rotate) = rotation::start(tls, peer_client.clone());
                (Some(source), Some(rotate))
            }
            None => (None, None),
        };
        let link: Link = Arc::new(peer_client.clone());
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        // A rebuild under way: the old log and snapshot go aside before the
        // log is opened (again, after a crash half-way).
        let mut rebuilding = data_dir::rebuilding(&data_dir)?;
        if let Some(rebuild) = rebuilding.as_mut().filter(|r| !r.set_aside) {
            let to = data_dir::set_aside(&data_dir, rebuild)?;
            tracing::warn!(
                attempt = rebuild.attempts,
                "rebuilding this node's registry from the cluster: its log and snapshot \
                 were set aside in {}",
                to.display()
            );
        }
        let db = sled::Config::new()
            .path(data_dir.join("sled"))
            .cache_capacity(config.storage.cache_mb << 20)
            .open()
            .with_context(|| {
                format!(
                    "opening the log in {} (corrupt or truncated?)",
                    data_dir.join("sled").display()
                )
            })?;

        let metrics = Arc::new(Metrics::new());
        let mut registry = Registry::new(Schedules::new(config.schedules.clone()));
        registry.stream_own(!config.zones.is_empty());
        registry
            .rendered()
            .set_budget((config.poll.rendered_mb as usize) << 20);
        let local = LocalRegistry::keeping(registry, config.zone_stream.keep_changes);
        let space = SpaceGuard::new(&data_dir, config.storage.min_free_mb << 20);
        let state_machine = StateMachine::open(
            &data_dir,
            local.clone(),
            space.clone(),
            SnapshotMetrics {
                build_seconds: metrics.snapshot_build_seconds.clone(),
                install_seconds: metrics.snapshot_install_seconds.clone(),
                bytes: metrics.snapshot_bytes.clone(),
            },
        )?;
        let records = Records::open(&db)?;
        // A voter of a configured cluster on a directory no node ever
        // used decides first whether it founds the cluster or lost its
        // disk (see `cluster::founding`).
        let pristine = !data_dir::claimed(&data_dir)
            && records.is_empty()
            && state_machine.applied_index().is_none()
            && rebuilding.is_none();
        let founding = Arc::new(Founding::new(
            pristine && !config.cluster.join && config.initial_members().len() > 1,
        ));
        data_dir::check(
            &data_dir,
            config.node.id,
            &records,
            &state_machine,
            rebuilding.is_some(),
        )?;
        // Everything stored is read back and checked before it is used.
        let scrubbed = std::time::Instant::now();
        let damage = match records.scrub() {
            Err(e) => Some(format!("{}: {e}", data_dir.join("sled").display())),
            Ok(entries) => {
                tracing::info!(
                    entries,
                    ms = scrubbed.elapsed().as_millis() as u64,
                    "log read back and checked"
                );
                state_machine.damage().map(str::to_string)
            }
        };
        drop(records);
        let mut members = config.initial_members();
        for member in state_machine.members() {
            if !members.iter().any(|(id, _)| *id == member.0) {
                members.push(member);
            }
        }
        // Data that records its cluster is checked against the members'
        // before anything is served from it.
        let cluster = ClusterId::default();
        let faults = Faults::default();
        let mut undecided = None;
        let id_client = peer_client.clone();
        if let Some(recorded) = data_dir::recorded_cluster(&data_dir)? {
            let within = Duration::from_millis(config.raft.election_timeout_max_ms.max(500));
            match identity::ask(&link, config.node.id, &recorded, &members, within).await {
                Verdict::Ours => {}
                Verdict::Foreign(theirs) => anyhow::bail!(identity::refusal(&recorded, &theirs)),
                // Asked again once the node runs, until they can tell.
                Verdict::Undecided => undecided = Some((recorded.clone(), members.clone())),
            }
            cluster.set(&recorded);
            peer_client.set_cluster(&recorded)?;
        }
        // Damaged storage is never served: the node gives its vote up and
        // starts again empty, to be replicated to (see `cluster::repair`).
        if let Some(damage) = damage {
            tracing::error!("stored data is damaged: {damage}");
            drop((state_machine, db));
            repair::rebuild_damaged(
                &link,
                config.node.id,
                &members,
                &data_dir,
                damage,
                Duration::from_millis(config.raft.election_timeout_max_ms * 20),
            )
            .await?;
            return Box::pin(Node::start(config)).await;
        }
        let log_store = LogStore::open(&db, metrics.flush_seconds.clone())?;

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
        let snapshot_check = state_machine.check();
        let refusals = Refusals::new();
        let network = Network::new(peer_client, refusals.clone());
        let raft_started = std::time::Instant::now();
        let raft = Raft::new(
            config.node.id,
            Arc::new(raft_config),
            network,
            log_store.clone(),
            state_machine,
        )
        .await?;
        tracing::info!(
            ms = raft_started.elapsed().as_millis() as u64,
            "raft started"
        );
        // The membership as the data directory holds it (snapshot and log),
        // against this node's configuration.
        let stored: Vec<_> = raft
            .with_raft_state(|state| {
                state
                    .membership_state
                    .effective()
                    .membership()
                    .nodes()
                    .map(|(id, member)| (*id, member.clone()))
                    .collect()
            })
            .await?;
        match crate::cluster::membership::restarted_as(config.node.id, &config.me(), &stored) {
            Ok(told) => told.iter().for_each(|w| tracing::warn!("{w}")),
            Err(why) => {
                let _ = raft.shutdown().await;
                anyhow::bail!(why);
            }
        }

        let listener = crate::server::listen::bind(&config.node.listen)
            .await
            .with_context(|| format!("listening on {}", config.node.listen))?;
        let addr = listener.local_addr()?;
        let peer_listener = crate::server::listen::bind(&config.node.peer_listen)
            .await
            .with_context(|| format!("listening on {}", config.node.peer_listen))?;
        let peer_addr = peer_listener.local_addr()?;

        let (shutdown, stop) = watch::channel(false);
        let (tell_repair, repair_hears) = tokio::sync::mpsc::channel(8);
        let nodes = SelfDiscovery::new(local.hub().clone());
        let protection = Arc::new(Protection::new());
        let wait_for_leader = Duration::from_millis(config.raft.write_timeout_ms);
        let lease = Duration::from_millis(config.raft.election_timeout_max_ms);
        let handover = Handover {
            raft: raft.clone(),
            me: config.node.id,
            gate: WriteGate::default(),
            link: link.clone(),
            // A lease for the leader's own to lapse if it was just
            // elected, then the catch-up and one vote round.
            within: lease * 3,
            lease,
        };
        let appender = Appender::start(
            raft.clone(),
            handover.gate.clone(),
            config.limits.entry_bytes,
            lease,
        );
        let writer = Writer::start(
            raft.clone(),
            link.clone(),
            wait_for_leader,
            Checks {
                rules: config.rules(),
                local: local.clone(),
                reads: ReadBarrier {
                    raft: raft.clone(),
                    me: config.node.id,
                    link: link.clone(),
                    within: wait_for_leader,
                },
            },
            space.clone(),
            metrics.forward_seconds.clone(),
            appender.clone(),
        );
        let policy = config.eviction_policy();
        let ledger = RenewLedger::new(policy.window);
        let renew_settings = RenewSettings {
            me: config.node.id,
            batch: Duration::from_millis(config.renew.batch_ms),
            wait_for_leader,
            quorum_within: Duration::from_millis(config.raft.election_timeout_max_ms),
            limits: config.limits,
        };
        let renewer = Renewer::start(
            raft.clone(),
            local.clone(),
            ledger.clone(),
            writer.clone(),
            link.clone(),
            renew_settings.clone(),
            stop.clone(),
        );
        let zones = Zones {
            own: config.node.zone.clone(),
            others: Arc::new(config.other_zones()),
            link: link.clone(),
            within: wait_for_leader,
        };
        let contacts = Arc::new(Contacts::counting(
            metrics.zone_batches.clone(),
            metrics.zone_full_copies.clone(),
        ));
        let eviction = Arc::new(EvictionState {
            evictions: metrics.evictions.clone(),
            ..EvictionState::default()
        });
        let api = Arc::new(Api {
            local: local.clone(),
            writer: writer.clone(),
            renewer: renewer.clone(),
            zones: zones.clone(),
            nodes: nodes.clone(),
            protection: protection.clone(),
            poll_hold: config.poll_hold(),
            polls: crate::fair::Shares::new(
                config.connections.max_held_polls,
                config.connections.polls_per_client(),
            ),
            unsent: crate::fair::Budget::new(config.connections.max_unsent_bytes),
            new_instances: crate::fair::NewInstances::new(
                (
                    config.connections.new_instances_per_sec,
                    config.connections.new_instances_burst,
                ),
                (
                    config.connections.new_instances_per_app_per_sec,
                    config.connections.new_instances_per_app_burst,
                ),
            ),
            env: config.node.env.clone(),
            metrics: metrics.clone(),
            reads: ReadBarrier {
                raft: raft.clone(),
                me: config.node.id,
                link: link.clone(),
                within: wait_for_leader,
            },
        });
        let access = Arc::new(Access {
            allow_write_from: config.write_networks()?,
            admin_token: AdminToken::new(config.admin_token()),
            metrics_token: AdminToken::new(config.metrics_token()),
            public_status: config.security.public_status,
        });
        let guard = Guard::new(Guarding {
            raft: raft.clone(),
            configured: config.cluster.members.iter().map(|m| m.id).collect(),
            zones: config.zones.keys().cloned().collect(),
            admin: AdminToken::new(config.admin_token()),
            insecure: config.tls.insecure_peers,
            cluster: cluster.clone(),
            faults: faults.clone(),
            founding: founding.clone(),
        });
        let peers = Arc::new(PeerApi {
            founding: founding.clone(),
            replica_pace: Default::default(),
            replica_ids: config.replica_ids()?,
            raft: raft.clone(),
            guard,
            zone: config.node.zone.clone(),
            local: local.clone(),
            ledger: ledger.clone(),
            renew: renew_settings,
            rules: config.rules(),
            access: access.clone(),
            space: space.clone(),
            data_dir: data_dir.clone(),
            receiving_snapshot: tokio::sync::Mutex::new(()),
            cluster: cluster.clone(),
            handover: handover.clone(),
            appender,
            writer: writer.clone(),
            renewer,
            nodes: nodes.clone(),
            stop: stop.clone(),
            app_lists: crate::fair::Shares::new(
                crate::peer::routes::APP_LISTS.0,
                crate::peer::routes::APP_LISTS.1,
            ),
            me: (config.node.id, config.me()),
            protection: protection.clone(),
            link: link.clone(),
        });
        let links = crate::upstream::links(&config.upstreams, &metrics.upstream_errors);
        let admin = Admin {
            upstreams: links.clone().into(),
            metrics: metrics.clone(),
            space: space.clone(),
            raft: raft.clone(),
            api: api.clone(),
            log: log_store.clone(),
            eviction: eviction.clone(),
            link: link.clone(),
            handover: handover.clone(),
            contacts: contacts.clone(),
            access: access.clone(),
            backups: Arc::new(tokio::sync::Semaphore::new(
                crate::http::admin::BACKUPS_AT_ONCE,
            )),
            repair: tell_repair.clone(),
        };

        let c = &config.connections;
        let files = open_files::raise();
        let max_connections = match files {
            Ok(files) => {
                let cap = c
                    .max_connections
                    .min((files.soft as usize).saturating_sub(c.reserved_fds).max(1));
                tracing::info!(
                    soft = files.soft,
                    was = files.was,
                    hard = files.hard,
                    max_connections = cap,
                    backlog = crate::server::listen::system_backlog(),
                    "open files limit"
                );
                cap
            }
            Err(e) => {
                tracing::warn!("cannot read or raise the open files limit: {e}");
                c.max_connections
            }
        };
        let idle = Duration::from_millis(c.idle_timeout_ms);
        let access_log = config.log.access.then(|| {
            AccessLog::start(
                match config.log.format {
                    LogFormat::Text => access_log::Format::Text,
                    LogFormat::Json => access_log::Format::Json,
                },
                metrics.access_log_dropped.clone(),
            )
        });
        let mut tasks = JoinSet::new();
        // Clients are let go first when the node stops, while Raft and the
        // peers still run, so writes under way can still be applied here.
        let (clients_stop, clients_stopped) = watch::channel(false);
        let observe = Observe {
            metrics: metrics.clone(),
            head: HeadLimits {
                uri_bytes: c.max_uri_bytes,
                header_bytes: c.max_header_bytes,
            },
            access_log: access_log.clone(),
        };
        let lean: Arc<dyn Lean> = Arc::new(HeldPolls::new(api.clone(), observe.clone()));
        let clients = tokio::spawn(serve(
            Listener {
                tcp: listener,
                router: crate::http::router(
                    api,
                    admin,
                    access,
                    c.max_body_bytes,
                    observe,
                    config.node.original_api,
                ),
                lean: Some(lean),
                tls: client_tls.map(Tls::fixed),
                name: "client",
                bounds: Bounds {
                    read_within: Duration::from_millis(c.read_timeout_ms),
                    idle,
                    send_within: Duration::from_millis(c.send_timeout_ms),
                    max_connections,
                    per_client: c.connections_per_client(max_connections),
                    handshakes: CLIENT_HANDSHAKES,
                    handshake_within: Duration::from_millis(c.read_timeout_ms),
                    overloaded: crate::http::overloaded(),
                },
            },
            clients_stopped,
        ));
        tasks.spawn(serve(
            Listener {
                tcp: peer_listener,
                router: crate::peer::router(peers),
                lean: None,
                tls: peer_server_tls,
                name: "peer",
                bounds: Bounds {
                    // Snapshots come whole in one request.
                    read_within: PEER_READ_TIMEOUT,
                    idle,
                    send_within: PEER_READ_TIMEOUT,
                    max_connections: PEER_CONNECTIONS,
                    // A peer node keeps a few pooled connections; an
                    // address holding a quarter of the cap is not one.
                    per_client: PEER_CONNECTIONS / 4,
                    handshakes: PEER_HANDSHAKES,
                    handshake_within: PEER_HANDSHAKE_WITHIN,
                    overloaded: crate::peer::overloaded(),
                },
            },
            stop.clone(),
        ));
        let follow = Arc::new(Follow {
            raft: raft.clone(),
            me: config.node.id,
            local: local.clone(),
            writer: writer.clone(),
            zones,
            contacts,
            retry: Duration::from_millis(config.raft.heartbeat_ms * 10),
        });
        // The log's name is the cluster's id (and what other zones' cursors
        // name): proposed once by the first leader, recorded by every node.
        tasks.spawn(crate::zones::log_name::name_log(
            raft.clone(),
            config.node.id,
            local.clone(),
            follow.writer.clone(),
            Duration::from_millis(config.raft.heartbeat_ms * 10),
            stop.clone(),
        ));
        tasks.spawn(
            identity::Recorder {
                local: local.clone(),
                id: cluster,
                data_dir: data_dir.clone(),
                learned: Box::new(move |id| {
                    if let Err(e) = id_client.set_cluster(id) {
                        tracing::warn!("sending the cluster id to peers: {e}");
                    }
                }),
                every: Duration::from_millis(config.raft.heartbeat_ms * 2),
            }
            .run(stop.clone()),
        );
        crate::upstream::start(
            &config.upstreams,
            &links,
            &crate::upstream::Wiring {
                raft: raft.clone(),
                me: config.node.id,
                name: config.node.name.clone(),
                local: local.clone(),
                writer: writer.clone(),
                limits: config.limits,
                retry: Duration::from_millis(config.raft.heartbeat_ms * 10),
            },
            &mut tasks,
            &stop,
        )?;
        for zone in config.zones.keys() {
            tasks.spawn(follow.clone().run(zone.clone(), stop.clone()));
            tasks.spawn(crate::zones::nodes::follow(
                follow.zones.clone(),
                zone.clone(),
                nodes.clone(),
                Duration::from_millis(config.zone_stream.nodes_every_ms.max(100)),
                stop.clone(),
            ));
        }
        tasks.spawn(evict_silent(
            raft.clone(),
            config.node.id,
            local.clone(),
            ledger,
            writer.clone(),
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
            link.clone(),
            now,
            stop.clone(),
        ));

        if let Some(rotate) = rotate {
            let (files, me) = (cert_files(&config), me.clone());
            tasks.spawn(rotate.reload_when_asked(files, me, stop.clone()));
        }
        tasks.spawn(watch_core(raft.clone(), faults.clone(), stop.clone()));
        tasks.spawn(crate::cluster::removal::watch(
            raft.clone(),
            config.node.id,
            refusals,
            protection.clone(),
            link.clone(),
            Duration::from_millis(config.raft.heartbeat_ms * 5),
            stop.clone(),
        ));
        if config.consistency.check_every_ms > 0 {
            tasks.spawn(propose_checks(
                raft.clone(),
                config.node.id,
                writer.clone(),
                Duration::from_millis(config.consistency.check_every_ms),
                stop.clone(),
            ));
        }
        let judged = watch::Sender::new(0);
        let checked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            if config.consistency.check_every_ms > 0 {
                Box::pin(start_check(
                    writer.clone(),
                    local.clone(),
                    judged.subscribe(),
                    Duration::from_secs(10),
                ))
            } else {
                Box::pin(async {})
            };
        tasks.spawn(
            Compare {
                raft: raft.clone(),
                me: config.node.id,
                local: local.clone(),
                link: link.clone(),
                protection: protection.clone(),
                handover: handover.clone(),
                metrics: metrics.clone(),
                judged,
                repair: tell_repair.clone(),
            }
            .run(stop.clone()),
        );
        if config.consistency.scrub_every_ms > 0 {
            tasks.spawn(
                Scrub {
                    log: log_store.clone(),
                    snapshot: snapshot_check,
                    protection: protection.clone(),
                    metrics: metrics.clone(),
                    repair: tell_repair,
                    every: Duration::from_millis(config.consistency.scrub_every_ms),
                }
                .run(stop.clone()),
            );
        }
        // A node that rebuilds waits to be replicated to, whatever its
        // configuration says: it must never form a cluster of its own.
        let join = config.cluster.join || rebuilding.is_some();
        tasks.spawn(
            Repair {
                raft: raft.clone(),
                me: config.node.id,
                link: link.clone(),
                handover: handover.clone(),
                data_dir: data_dir.clone(),
                faults: faults.clone(),
                automatic: config.consistency.repair,
                rebuilding,
                rebuilds: metrics.rebuilds.clone(),
            }
            .run(repair_hears, stop.clone()),
        );
        if let Some((recorded, members)) = undecided {
            tasks.spawn(identity::keep_asking(
                link.clone(),
                config.node.id,
                recorded,
                members,
                Duration::from_millis(config.raft.election_timeout_max_ms.max(500)),
                faults.clone(),
                stop.clone(),
            ));
        }
        tasks.spawn(count_leader_changes(
            raft.clone(),
            metrics.leader_changes.clone(),
            stop.clone(),
        ));
        let retry = Duration::from_millis(config.raft.heartbeat_ms * 2);
        let replica = config.cluster.learner.then(|| {
            let members: Vec<Member> = config
                .initial_members()
                .into_iter()
                .filter(|(id, _)| *id != config.node.id)
                .map(|(_, m)| m)
                .collect();
            (link.clone(), members)
        });
        if let Some((link, members)) = &replica {
            tasks.spawn(crate::cluster::replica::join(
                link.clone(),
                (config.node.id, config.me()),
                members.clone(),
                Duration::from_secs(1),
                stop.clone(),
            ));
        }
        if !join {
            tasks.spawn(form_cluster(
                raft.clone(),
                Forming {
                    me: config.node.id,
                    initial: config.initial_members(),
                    link: link.clone(),
                    retry,
                    founding,
                    data_dir: data_dir.clone(),
                    faults: faults.clone(),
                },
                stop.clone(),
            ));
        }
        tasks.spawn(lift_when_caught_up(
            raft.clone(),
            config.node.id,
            nodes,
            protection,
            link,
            retry,
            checked,
            stop,
        ));
        tracing::info!(id = config.node.id, %addr, %peer_addr, "node started");
        Ok(Node {
            addr,
            peer_addr,
            raft,
            db,
            local,
            handover,
            replica,
            access_log,
            clients_stop,
            clients,
            shutdown,
            tasks,
            faults,
        })
    }

    /// Resolves with the reason once the node stops on its own (see
    /// [`Faults`]): the caller stops it, then exits with an error or, for
    /// a rebuild, starts it again.
    pub async fn stops(&self) -> Stop {
        self.faults.raised().await
    }

    /// The address the client listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the peer listener is bound to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops in an order that costs the cluster nothing: a leader first
    /// hands its leadership to the most caught-up voter; then clients are
    /// let go (held polls answered, writes under way finished) while Raft
    /// still runs; then the peer listener, Raft and storage stop.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        // A stopping node must not campaign: cut off from heartbeats while
        // it stops, it would raise its term, and on its return that term
        // would depose the leader for nothing.
        self.raft.runtime_config().elect(false);
        if self.raft.metrics().borrow().current_leader == Some(self.handover.me) {
            match self.handover.here(None).await {
                Ok(to) => tracing::info!(to, "stopping: leadership handed over"),
                Err(HandoverError::NoOtherVoter) => {}
                Err(e) => tracing::warn!("stopping without handing leadership over: {e}"),
            }
        }
        if let Some((link, members)) = &self.replica {
            crate::cluster::replica::leave(&self.raft, link, self.handover.me, members).await;
        }
        self.local.hub().close();
        let _ = self.clients_stop.send(true);
        let _ = (&mut self.clients).await;
        // The last requests' lines, before the process exits.
        if let Some(log) = &self.access_log {
            log.flush();
        }
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.raft
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("raft shutdown: {e}"))?;
        crate::raft::log_store::flush(&self.db).await?;
        Ok(())
    }
}
