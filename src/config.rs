//! Node configuration: a TOML file (see `configs/`), overridden by
//! environment variables and command-line flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::overrides::{self, Sources};
use crate::raft::{Member, NodeId};

impl Config {
    /// The other zones' nodes, as members the peer link can reach.
    pub fn other_zones(&self) -> std::collections::BTreeMap<String, Vec<Member>> {
        self.zones
            .iter()
            .map(|(zone, addrs)| {
                let nodes = addrs
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| Member {
                        name: format!("{zone}-{}", i + 1),
                        raft_addr: addr.clone(),
                        api_addr: String::new(),
                        zone: zone.clone(),
                        rebuilding: false,
                    })
                    .collect();
                (zone.clone(), nodes)
            })
            .collect()
    }
}

/// What hyper itself lets through before answering a bare 414 / 431:
/// targets up to 65,534 bytes, heads up to its read buffer (8 KiB + 100 x
/// 4 KiB). The configured bounds must sit below, to answer with the
/// envelope.
const HYPER_MAX_URI: usize = 65_534;
const HYPER_MAX_HEAD: usize = (8 << 10) + 100 * (4 << 10);
use crate::registry::eviction::Policy;
use crate::registry::{Limits, Rules, Schedule};

/// Everything a node needs to run. Every field has a default so that a node
/// starts with no file at all.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub raft: RaftConfig,
    pub poll: PollConfig,
    pub storage: StorageConfig,
    pub renew: RenewConfig,
    pub eviction: EvictionConfig,
    pub tls: TlsConfig,
    pub security: SecurityConfig,
    pub limits: Limits,
    pub connections: ConnectionsConfig,
    pub log: LogConfig,
    #[serde(rename = "scheduler")]
    pub schedules: Vec<Schedule>,
    /// The other zones, each with some of its nodes' peer addresses
    /// (`host:port`, mutual TLS: their certificates from that zone's CA in
    /// `tls.zone_cas`, ours the zone link's): `[zones] "sh002" =
    /// ["10.2.0.10:7271"]`. This cluster is `node.zone`.
    pub zones: std::collections::BTreeMap<String, Vec<String>>,
    pub zone_stream: ZoneStreamConfig,
    pub consistency: ConsistencyConfig,
    /// Original discovery clusters this one follows both ways while a
    /// fleet moves over (`[[upstream]]`, see `docs/migration.md`).
    #[serde(rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
}

/// One original discovery cluster to follow (`[[upstream]]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// What this cluster calls it (in status, metrics, the log).
    pub name: String,
    /// What it is: `discovery`, Bilibili's original.
    pub kind: String,
    /// Client addresses (`host:port` or `http://host:port`) of some of its
    /// nodes; any of them answers.
    pub nodes: Vec<String>,
    /// Serve its instances here.
    pub import: bool,
    /// Register this cluster's own instances there.
    pub export: bool,
    /// How often its whole registry is compared with what is imported
    /// (apps that appear or empty between polls): no more often than
    /// twenty times as long as the last comparison took.
    pub full_every_ms: u64,
    /// The longest time between two comparisons of own instances with
    /// what was exported (one follows every change here besides).
    pub export_every_ms: u64,
    /// How often exported instances are renewed there (it evicts after
    /// 90 s without).
    pub renew_every_ms: u64,
    /// The bound on one call to it; on a long poll, added to the bound
    /// below.
    pub timeout_ms: u64,
    /// The bound on one long poll (its hold is 30 s).
    pub poll_timeout_ms: u64,
    /// How long removals of over 15 % of the imported instances at once,
    /// seen by a whole comparison, are held back (an original node that
    /// lost its registry): the original's eviction window, after which
    /// every live instance has registered there again.
    pub mass_removal_hold_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: "original".into(),
            kind: "discovery".into(),
            nodes: Vec::new(),
            import: true,
            export: true,
            full_every_ms: 5_000,
            export_every_ms: 1_000,
            renew_every_ms: 30_000,
            timeout_ms: 5_000,
            poll_timeout_ms: 40_000,
            mass_removal_hold_ms: 90_000,
        }
    }
}

/// Replicas proving they agree (see `crate::cluster::consistency`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// How often the leader puts a check through the log (also after every
    /// membership change); 0: never.
    pub check_every_ms: u64,
    /// Whether a replica found to differ repairs itself (gives up its
    /// vote, rebuilds from the cluster, gets its vote back once it agrees)
    /// without an operator. Off: it stays out of service for an operator
    /// to inspect, until `discoveryctl repair`.
    pub repair: bool,
    /// How long after one round of the storage scrub (every log entry and
    /// the snapshot read back and checked, at a slow pace) the next
    /// starts; 0: never (the log and snapshot are still checked at start).
    pub scrub_every_ms: u64,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig {
            check_every_ms: 30_000,
            repair: true,
            scrub_every_ms: 3_600_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's Raft id, unique in the cluster.
    pub id: NodeId,
    /// Published as the hostname of this node's `infra.discovery` instance.
    pub name: String,
    /// Where the client listener (discovery API, admin) listens.
    pub listen: String,
    /// Where the peer listener (Raft, forwarded writes) listens.
    pub peer_listen: String,
    /// `host:port` clients are told to use (in `infra.discovery`, `nodes`).
    pub advertise: String,
    /// `host:port` peers reach the peer listener on; defaults to the host
    /// of `advertise` with the port of `peer_listen`.
    pub raft_advertise: String,
    pub zone: String,
    pub env: String,
    pub region: String,
    pub data_dir: PathBuf,
    /// Serve only the original discovery's routes (`/discovery/*`): no
    /// admin routes, console or metrics. A stand-in for an original
    /// cluster in tests and demos of a migration.
    pub original_api: bool,
    /// The name of this node's pod in a StatefulSet (`name-N`): when set,
    /// the node's id is `id_base` plus the ordinal N, and its name, when
    /// not given, is the pod's (see `deploy/kubernetes`).
    pub pod_name: String,
    /// The id of the pod with ordinal 0 (`pod_name`).
    pub id_base: NodeId,
    /// A file in `/etc/hosts` format whose names peers are dialled at
    /// instead of asking DNS: for machines without DNS for the peers'
    /// names (the Kubernetes manifests' test maps pod names to loopback
    /// addresses with it).
    pub hosts_file: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The initial members; empty means a cluster of this node alone.
    pub members: Vec<MemberConfig>,
    /// This node joins an existing cluster (added through the admin API)
    /// and never initialises one of its own.
    pub join: bool,
    /// This node is a read replica: it never initialises a cluster, asks
    /// the cluster (`members`) to add it as a learner when it starts, with
    /// its peer certificate as its credential, and to remove it when it
    /// stops.
    pub learner: bool,
    /// The ids read replicas may take (`"101-199"`): a node whose
    /// certificate carries one of them may ask this cluster's leader to add
    /// it as a learner, or remove it. Empty: none may.
    pub replica_ids: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: NodeId,
    pub name: String,
    pub raft_addr: String,
    pub api_addr: String,
    #[serde(default)]
    pub zone: String,
}

/// Raft timings. openraft 0.9 lets a follower that has heard from a
/// leader start an election only after a lease of `election_timeout_max_ms`
/// *plus* its own election timeout (drawn once, at start, from the range),
/// and a node that lost an election for a shorter log waits a further
/// `2 * election_timeout_max_ms` before its next one. A dead leader is thus
/// replaced `max + min` to `2 * max` after its last heartbeat, more when
/// the survivors' logs differ: the range is kept short for that reason.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long a write waits for a leader before answering `-503`.
    pub write_timeout_ms: u64,
    /// A snapshot is taken after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slightly lagging followers.
    pub keep_logs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollConfig {
    /// How long a long poll is held before answering `-304`.
    pub hold_ms: u64,
    /// What the rendered fetch answers kept for the polls and fetches that
    /// read them next may take, in MiB, all apps together; the oldest
    /// rendered goes first (`registry::rendered`).
    pub rendered_mb: u64,
}

/// The stream of this zone's own changes to the other zones.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZoneStreamConfig {
    /// How many of its latest own changes a node keeps for other zones
    /// (about 300 bytes each); a zone further behind gets a full copy.
    pub keep_changes: usize,
    /// How often each node asks every other zone for its nodes, which it
    /// lists in `infra.discovery`.
    pub nodes_every_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenewConfig {
    /// The leader replicates the renews it collected once per interval.
    pub batch_ms: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvictionConfig {
    /// An instance silent for longer is evicted.
    pub threshold_ms: u64,
    /// Under self-preservation, only instances silent for longer go.
    pub ceiling_ms: u64,
    /// Time between the leader's eviction rounds.
    pub every_ms: u64,
    /// How often clients renew (30 s for every SDK): sets the renews
    /// expected per window.
    pub renew_interval_ms: u64,
    /// The window over which renews are counted.
    pub window_ms: u64,
    /// Self-preservation starts below this share of the expected renews;
    /// a round evicts at most `size - ceil(size * keep_ratio)`.
    pub keep_ratio: f64,
}

/// TLS: mutual between peers (required unless `insecure_peers`), and
/// optionally HTTPS on the client port. Paths are relative to the working
/// directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// This zone's CA (PEM): this zone's nodes must present a certificate
    /// it signed.
    pub ca: PathBuf,
    /// This node's certificate (PEM), signed by `ca`, shown to peers; it
    /// must carry this node's identity (`discovery://<zone>/node/<id>`).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// With `link_key`: this zone's link certificate (PEM, from `ca`,
    /// `discovery://<zone>/link`), shown to the other zones' nodes.
    /// Needed when `[zones]` lists any.
    pub link_cert: PathBuf,
    pub link_key: PathBuf,
    /// Each other zone's CA (PEM), trusted for that zone's link only:
    /// `{ "sh002" = "certs/sh002/ca.pem" }`. Needed for each zone in
    /// `[zones]`.
    pub zone_cas: std::collections::BTreeMap<String, PathBuf>,
    /// Peers talk plain HTTP, unauthenticated: only for a cluster on one
    /// trusted machine. The node warns at start.
    pub insecure_peers: bool,
    /// With `client_key`: the client port speaks HTTPS with this
    /// certificate (off by default: the Go SDK speaks plain HTTP).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Bounds on client connections, so that slow, idle or numerous clients
/// cannot take a node's file descriptors or memory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// A request must arrive in full within this of its first byte.
    pub read_timeout_ms: u64,
    /// A kept-alive connection with no request this long is closed; longer
    /// than `poll.hold_ms`.
    pub idle_timeout_ms: u64,
    /// An answer the client reads nothing of for this long is cut and its
    /// connection closed (nginx's `send_timeout`).
    pub send_timeout_ms: u64,
    /// Bytes of large answers (`fetch/all`, backups) that may wait unsent
    /// at once, over all clients; past it such a request answers `-503`
    /// overloaded at once (one answer is always allowed, however large).
    pub max_unsent_bytes: usize,
    /// The largest request body on the client port (413 past it).
    pub max_body_bytes: usize,
    /// The longest request target, path and query (414 past it).
    pub max_uri_bytes: usize,
    /// The largest header block (431 past it).
    pub max_header_bytes: usize,
    /// Client connections open at once. Past it the longest-idle one is
    /// closed to make room; with none idle, `-503` overloaded.
    pub max_connections: usize,
    /// Long polls held at once; past it a poll answers `-503` at once.
    /// `/admin/changes` waits count as polls.
    pub max_held_polls: usize,
    /// Long polls one client address (an IPv6 /64) may hold at once;
    /// 0: a quarter of `max_held_polls`.
    pub max_held_polls_per_client: usize,
    /// Client connections one address may hold open; past it that
    /// address's longest-idle connection makes room, or the newcomer is
    /// refused. 0: a quarter of `max_connections`.
    pub max_connections_per_client: usize,
    /// New instances (a hostname not registered yet) one address may
    /// register: `new_instances_burst` at once, then this many a second.
    /// Renews and registering an existing instance again do not count.
    pub new_instances_per_sec: u32,
    pub new_instances_burst: u32,
    /// The same for one app (env and appid), from all addresses together.
    pub new_instances_per_app_per_sec: u32,
    pub new_instances_per_app_burst: u32,
    /// File descriptors kept back from client connections for peers, the
    /// log and snapshots.
    pub reserved_fds: usize,
}

impl ConnectionsConfig {
    /// Held polls one client may hold.
    pub fn polls_per_client(&self) -> usize {
        share(self.max_held_polls_per_client, self.max_held_polls)
    }

    /// Connections one client may hold open, of `max` in all.
    pub fn connections_per_client(&self, max: usize) -> usize {
        share(self.max_connections_per_client, max).min(max)
    }
}

/// A per-client bound: as set, or 0 for a quarter of the whole.
fn share(set: usize, whole: usize) -> usize {
    if set > 0 {
        set
    } else {
        (whole / 4).max(1)
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            read_timeout_ms: 10_000,
            idle_timeout_ms: 90_000,
            send_timeout_ms: 10_000,
            max_unsent_bytes: 256 << 20,
            max_body_bytes: 1 << 20,
            max_uri_bytes: 16 << 10,
            max_header_bytes: 32 << 10,
            max_connections: 16_000,
            max_held_polls: 15_000,
            max_held_polls_per_client: 0,
            max_connections_per_client: 0,
            new_instances_per_sec: 100,
            new_instances_burst: 1000,
            new_instances_per_app_per_sec: 100,
            new_instances_per_app_burst: 1000,
            reserved_fds: 512,
        }
    }
}

/// Who may change the registry and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// The bearer token membership changes need; `DISCOVERY_ADMIN_TOKEN`
    /// overrides it. Empty: membership changes are refused.
    pub admin_token: String,
    /// Networks (CIDRs, or single addresses) that may register, renew,
    /// cancel and set; others get `-403`. Reads and polls stay open.
    pub allow_write_from: Vec<String>,
    /// How far ahead of the leader's clock a command may be stamped.
    pub max_clock_skew_ms: u64,
    /// Whether `/admin/status` shows peer addresses and storage figures
    /// to anyone (the console reads it); false: only with the admin or
    /// metrics token, others get the rest.
    pub public_status: bool,
    /// When set, `/metrics` needs `Authorization: Bearer` with it (or the
    /// admin token); `DISCOVERY_METRICS_TOKEN` overrides it.
    pub metrics_token: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
    /// Free space (MiB) kept on the data directory's file system, on top
    /// of the last snapshot's size: below it the node refuses writes (and
    /// appends from the leader) and takes them again once space returns.
    pub min_free_mb: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            name: String::new(),
            listen: "0.0.0.0:7171".into(),
            peer_listen: "0.0.0.0:7271".into(),
            advertise: "127.0.0.1:7171".into(),
            raft_advertise: String::new(),
            zone: "sh001".into(),
            env: "dev".into(),
            region: "sh".into(),
            data_dir: PathBuf::from("data"),
            original_api: false,
            pod_name: String::new(),
            id_base: 1,
            hosts_file: PathBuf::new(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 500,
            write_timeout_ms: 3000,
            snapshot_every: 20_000,
            keep_logs: 5_000,
        }
    }
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            hold_ms: 30_000,
            rendered_mb: 32,
        }
    }
}

impl Default for ZoneStreamConfig {
    fn default() -> Self {
        ZoneStreamConfig {
            keep_changes: crate::zones::feed::KEEP_CHANGES,
            nodes_every_ms: 5_000,
        }
    }
}

impl Default for RenewConfig {
    fn default() -> Self {
        RenewConfig { batch_ms: 500 }
    }
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            threshold_ms: 90_000,
            ceiling_ms: 3_600_000,
            every_ms: 10_000,
            renew_interval_ms: 30_000,
            window_ms: 60_000,
            keep_ratio: 0.85,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            admin_token: String::new(),
            allow_write_from: vec!["0.0.0.0/0".into(), "::/0".into()],
            max_clock_skew_ms: 60_000,
            public_status: true,
            metrics_token: String::new(),
        }
    }
}

/// How the node logs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// One line per client request, to the target `access` (so
    /// `RUST_LOG=access=off` also silences it).
    pub access: bool,
    /// `text` (human-readable) or `json` (one JSON object per line).
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access: true,
            format: LogFormat::Text,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_mb: 16,
            min_free_mb: 128,
        }
    }
}

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Default, Parser)]
#[command(
    name = "discovery",
    version,
    about = "A discovery-compatible registry on Raft"
)]
pub struct Flags {
    /// The TOML configuration file.
    #[arg(long, short = 'c', env = "DISCOVERY_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "DISCOVERY_NODE_ID")]
    pub node_id: Option<NodeId>,
    #[arg(long, env = "DISCOVERY_NAME")]
    pub name: Option<String>,
    #[arg(long, env = "DISCOVERY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "DISCOVERY_LISTEN")]
    pub listen: Option<String>,
    #[arg(long, env = "DISCOVERY_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    #[arg(long, env = "DISCOVERY_ADVERTISE")]
    pub advertise: Option<String>,
    #[arg(long, env = "DISCOVERY_RAFT_ADVERTISE")]
    pub raft_advertise: Option<String>,
    #[arg(long, env = "DISCOVERY_ZONE")]
    pub zone: Option<String>,
    /// The deploy env (`dev`, `uat`, `prod`, ...); `--deploy.env` as the
    /// original spelt it.
    #[arg(long, alias = "deploy.env", env = "DISCOVERY_ENV")]
    pub env: Option<String>,
    #[arg(long, env = "DISCOVERY_REGION")]
    pub region: Option<String>,
    /// Long-poll hold time in milliseconds.
    #[arg(long, env = "DISCOVERY_POLL_HOLD_MS")]
    pub poll_hold_ms: Option<u64>,
    /// Join an existing cluster instead of forming one.
    #[arg(long, env = "DISCOVERY_JOIN")]
    pub join: bool,
    /// The cluster CA, this node's certificate and key (PEM) for mutual
    /// TLS between peers.
    #[arg(long, env = "DISCOVERY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "DISCOVERY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "DISCOVERY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Plain, unauthenticated HTTP between peers (one trusted machine only).
    #[arg(long, env = "DISCOVERY_INSECURE_PEERS")]
    pub insecure_peers: bool,
    /// The bearer token membership changes need.
    #[arg(long, env = "DISCOVERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The bearer token `/metrics` needs (none: open).
    #[arg(long, env = "DISCOVERY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Per-address shares (connections.max_held_polls_per_client,
    /// max_connections_per_client, new_instances_per_sec): behind a proxy
    /// every client has the proxy's address, and a load generator on one
    /// machine is one address.
    #[arg(long, env = "DISCOVERY_MAX_HELD_POLLS_PER_CLIENT")]
    pub max_held_polls_per_client: Option<usize>,
    #[arg(long, env = "DISCOVERY_MAX_CONNECTIONS_PER_CLIENT")]
    pub max_connections_per_client: Option<usize>,
    #[arg(long, env = "DISCOVERY_NEW_INSTANCES_PER_SEC")]
    pub new_instances_per_sec: Option<u32>,
    #[arg(long, env = "DISCOVERY_NEW_INSTANCES_PER_APP_PER_SEC")]
    pub new_instances_per_app_per_sec: Option<u32>,
    /// Any setting of the file, `section.key=value` (`raft.heartbeat_ms=100`);
    /// as `DISCOVERY_<SECTION>_<KEY>` in the environment. Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the effective settings, each with its source (file, env,
    /// flag, default), and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The original's environment: `ZONE`, `REGION` and `DEPLOY_ENV` (what its
/// `-zone`, `-region` and `-deploy.env` flags default to) set the node's
/// zone, region and env where the file says nothing of them, as the
/// original's `[env]` section took precedence over them. Our own variables
/// and flags, applied after, win over both.
fn apply_original_env(
    table: &mut toml::Table,
    sources: &mut Sources,
    lookup: impl Fn(&str) -> Option<String>,
) {
    for (key, var) in [
        ("zone", "ZONE"),
        ("region", "REGION"),
        ("env", "DEPLOY_ENV"),
    ] {
        let path = format!("node.{key}");
        if sources.contains_key(&path) {
            continue;
        }
        if let Some(value) = lookup(var).filter(|v| !v.is_empty()) {
            let node = table
                .entry("node")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(node) = node.as_table_mut() {
                node.insert(key.to_string(), toml::Value::String(value));
                sources.insert(path, format!("env {var}"));
            }
        }
    }
}

/// Records `source` for every setting that differs between `before` and
/// `after`.
fn note_changes(
    before: &[(String, toml::Value)],
    after: &[(String, toml::Value)],
    source: &str,
    sources: &mut Sources,
) {
    for (path, value) in after {
        if !before.iter().any(|(p, v)| p == path && v == value) {
            sources.insert(path.clone(), source.to_string());
        }
    }
}

/// A configuration as loaded, with where each setting came from and what
/// to tell the operator once logging runs.
pub struct Loaded {
    pub config: Config,
    /// `section.key` to its source (`file …`, `env …`, `--set …`, `flag`,
    /// `derived`); a setting absent here has its default.
    pub sources: Sources,
    /// `DISCOVERY_*` variables that are no setting.
    pub warnings: Vec<String>,
}

/// Settings whose values `--print-config` does not show.
pub const SECRETS: [&str; 2] = ["security.admin_token", "security.metrics_token"];

/// `DISCOVERY_*` variables that are no `DISCOVERY_<SECTION>_<KEY>` setting
/// and are not to be warned of: the named flags' own (`--zone` is also
/// `DISCOVERY_ZONE`), the file's path, and what other programs read from
/// the same environment (the SDKs' node list, discoveryctl's, the compose
/// scripts' image, the test suite's switches).
fn read_elsewhere() -> Vec<String> {
    use clap::CommandFactory;
    let mut names: Vec<String> = Flags::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    names.extend(
        [
            "DISCOVERY_NODES",
            "DISCOVERY_NODE",
            "DISCOVERY_CACERT",
            "DISCOVERY_IMAGE",
            "DISCOVERY_TEST_LOGS",
            "DISCOVERY_REQUIRE_BROWSER",
            "DISCOVERY_REQUIRE_PROMTOOL",
            "DISCOVERY_SKIP_PYTHON_SDK",
            "DISCOVERY_BENCH_KEEP",
            "DISCOVERY_SCREENSHOT",
            "DISCOVERY_REQUIRE_KUBECTL",
        ]
        .map(String::from),
    );
    names
}

impl Config {
    /// The file, then the original's `ZONE`/`REGION`/`DEPLOY_ENV` where the
    /// file is silent, then the `DISCOVERY_<SECTION>_<KEY>` variables of
    /// `env`, then `--set`, then the named flags (and their variables);
    /// each setting's source kept.
    pub fn load(flags: &Flags, env: &[(String, String)]) -> anyhow::Result<Loaded> {
        let defaults = toml::Table::try_from(Config::default())?;
        let mut sources = Sources::new();
        let mut table = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                // Parsed as the config first: its errors name the line.
                let _: Config =
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                let raw: toml::Table = toml::from_str(&text)?;
                for (key, _) in overrides::flatten(&raw) {
                    sources.insert(key, format!("file {}", path.display()));
                }
                raw
            }
            None => toml::Table::new(),
        };
        apply_original_env(&mut table, &mut sources, |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        });
        let elsewhere = read_elsewhere();
        let elsewhere: Vec<&str> = elsewhere.iter().map(String::as_str).collect();
        let warnings = overrides::apply_env(&mut table, &defaults, env, &elsewhere, &mut sources)
            .map_err(|e| anyhow::anyhow!(e))?;
        overrides::apply_sets(&mut table, &defaults, &flags.set, &mut sources)
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut config: Config = table.try_into().context("the settings")?;
        let before = config.settings()?;
        config.apply(flags);
        let flagged = config.settings()?;
        note_changes(&before, &flagged, "flag", &mut sources);
        let config = config.finish()?;
        note_changes(&flagged, &config.settings()?, "derived", &mut sources);
        Ok(Loaded {
            config,
            sources,
            warnings,
        })
    }

    /// Every setting, as `section.key` and value.
    pub fn settings(&self) -> anyhow::Result<Vec<(String, toml::Value)>> {
        Ok(overrides::flatten(&toml::Table::try_from(self)?))
    }

    /// The effective settings as TOML, each with its source, secrets not
    /// shown (`discovery --print-config`).
    pub fn describe(&self, sources: &Sources) -> anyhow::Result<String> {
        Ok(overrides::describe(
            &toml::Table::try_from(self)?,
            sources,
            &SECRETS,
        ))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    fn apply(&mut self, flags: &Flags) {
        let n = &mut self.node;
        let set = |field: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                field.clone_from(v);
            }
        };
        if let Some(id) = flags.node_id {
            n.id = id;
        }
        set(&mut n.name, &flags.name);
        set(&mut n.listen, &flags.listen);
        set(&mut n.peer_listen, &flags.peer_listen);
        set(&mut n.advertise, &flags.advertise);
        set(&mut n.raft_advertise, &flags.raft_advertise);
        set(&mut n.zone, &flags.zone);
        set(&mut n.env, &flags.env);
        set(&mut n.region, &flags.region);
        if let Some(dir) = &flags.data_dir {
            n.data_dir.clone_from(dir);
        }
        if let Some(ms) = flags.poll_hold_ms {
            self.poll.hold_ms = ms;
        }
        if flags.join {
            self.cluster.join = true;
        }
        let t = &mut self.tls;
        for (field, value) in [
            (&mut t.ca, &flags.tls_ca),
            (&mut t.cert, &flags.tls_cert),
            (&mut t.key, &flags.tls_key),
        ] {
            if let Some(v) = value {
                field.clone_from(v);
            }
        }
        if flags.insecure_peers {
            t.insecure_peers = true;
        }
        set(&mut self.security.admin_token, &flags.admin_token);
        set(&mut self.security.metrics_token, &flags.metrics_token);
        let c = &mut self.connections;
        if let Some(n) = flags.max_held_polls_per_client {
            c.max_held_polls_per_client = n;
        }
        if let Some(n) = flags.max_connections_per_client {
            c.max_connections_per_client = n;
        }
        if let Some(n) = flags.new_instances_per_sec {
            c.new_instances_per_sec = n;
        }
        if let Some(n) = flags.new_instances_per_app_per_sec {
            c.new_instances_per_app_per_sec = n;
        }
    }

    /// Each `[[upstream]]` can work, and none twice.
    fn check_upstreams(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for u in &self.upstreams {
            crate::registry::upstream_name_ok(&u.name)
                .map_err(|e| anyhow::anyhow!("[[upstream]] name {:?}: {e}", u.name))?;
            anyhow::ensure!(
                names.insert(&u.name),
                "[[upstream]] {:?} is given twice",
                u.name
            );
            anyhow::ensure!(
                u.kind == "discovery",
                "[[upstream]] {:?}: kind {:?} is not known (\"discovery\" is)",
                u.name,
                u.kind
            );
            anyhow::ensure!(
                !u.nodes.is_empty(),
                "[[upstream]] {:?} names no node",
                u.name
            );
            anyhow::ensure!(
                u.import || u.export,
                "[[upstream]] {:?}: neither import nor export",
                u.name
            );
            anyhow::ensure!(
                [
                    u.full_every_ms,
                    u.export_every_ms,
                    u.renew_every_ms,
                    u.timeout_ms,
                    u.poll_timeout_ms
                ]
                .iter()
                .all(|ms| *ms > 0),
                "[[upstream]] {:?}: every *_ms must be above 0",
                u.name
            );
        }
        anyhow::ensure!(
            !self.node.original_api || self.upstreams.is_empty(),
            "node.original_api stands in for an original cluster: it follows none ([[upstream]])"
        );
        Ok(())
    }

    /// Fills derived defaults and checks what cannot work.
    pub fn finish(mut self) -> anyhow::Result<Config> {
        anyhow::ensure!(
            !self.zones.contains_key(&self.node.zone),
            "[zones] lists the other zones; {:?} is this node's own zone (node.zone)",
            self.node.zone
        );
        if let Some((zone, _)) = self.zones.iter().find(|(_, nodes)| nodes.is_empty()) {
            anyhow::bail!("[zones] {zone:?} names no node");
        }
        if !self.node.pod_name.is_empty() {
            let ordinal = ordinal(&self.node.pod_name)?;
            self.node.id = self.node.id_base.checked_add(ordinal).with_context(|| {
                format!("node.id_base {} + ordinal {ordinal}", self.node.id_base)
            })?;
            if self.node.name.is_empty() {
                self.node.name.clone_from(&self.node.pod_name);
            }
        }
        if self.node.name.is_empty() {
            self.node.name = format!("discovery-{}", self.node.id);
        }
        self.replica_ids()?;
        if self.cluster.learner {
            self.cluster.join = true;
            anyhow::ensure!(
                !self.cluster.members.is_empty(),
                "cluster.learner = true: cluster.members must name the members to ask"
            );
        }
        self.check_upstreams()?;
        if self.node.raft_advertise.is_empty() {
            self.node.raft_advertise = format!(
                "{}:{}",
                host(&self.node.advertise),
                port(&self.node.peer_listen)?
            );
        }
        let t = &self.tls;
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        let peer_files = [&t.ca, &t.cert, &t.key]
            .into_iter()
            .filter(|p| set(p))
            .count();
        if t.insecure_peers {
            anyhow::ensure!(
                peer_files == 0,
                "tls.insecure_peers = true with tls.ca/cert/key set: choose one"
            );
        } else {
            anyhow::ensure!(
                peer_files == 3,
                "peers talk over mutual TLS: set tls.ca, tls.cert and tls.key \
                 (make them with `discoveryctl certs init` and `discoveryctl certs node`), \
                 or tls.insecure_peers = true for a cluster on one trusted machine"
            );
        }
        anyhow::ensure!(
            set(&t.client_cert) == set(&t.client_key),
            "tls.client_cert and tls.client_key go together"
        );
        anyhow::ensure!(
            set(&t.link_cert) == set(&t.link_key),
            "tls.link_cert and tls.link_key go together"
        );
        if let Some(zone) = t.zone_cas.keys().find(|z| !self.zones.contains_key(*z)) {
            anyhow::bail!("tls.zone_cas names zone {zone:?}, which [zones] does not list");
        }
        if !t.insecure_peers && !self.zones.is_empty() {
            anyhow::ensure!(
                set(&t.link_cert),
                "[zones] lists other zones: set tls.link_cert and tls.link_key, this zone's \
                 link certificate (`discoveryctl certs link --zone {}`)",
                self.node.zone
            );
            if let Some(zone) = self.zones.keys().find(|z| !t.zone_cas.contains_key(*z)) {
                anyhow::bail!(
                    "[zones] lists {zone:?}: set tls.zone_cas.{zone} to that zone's CA \
                     certificate, trusted for its link only"
                );
            }
        }
        self.write_networks()?;
        let l = &self.limits;
        anyhow::ensure!(
            [
                l.name_bytes,
                l.addrs,
                l.addr_bytes,
                l.version_bytes,
                l.metadata_keys,
                l.metadata_bytes,
                l.set_hostnames
            ]
            .iter()
            .all(|n| *n > 0),
            "every limits.* must be above 0"
        );
        anyhow::ensure!(
            l.entry_bytes >= 64 << 10,
            "limits.entry_bytes must be at least 65536: one instance at the other limits takes about 20 KB"
        );
        let r = &self.raft;
        anyhow::ensure!(
            r.heartbeat_ms > 0 && r.heartbeat_ms < r.election_timeout_min_ms,
            "raft.heartbeat_ms must be above 0 and below raft.election_timeout_min_ms"
        );
        anyhow::ensure!(
            r.election_timeout_min_ms < r.election_timeout_max_ms,
            "raft.election_timeout_min_ms must be below raft.election_timeout_max_ms"
        );
        anyhow::ensure!(self.poll.hold_ms > 0, "poll.hold_ms must be above 0");
        let c = &self.connections;
        anyhow::ensure!(
            c.idle_timeout_ms > self.poll.hold_ms,
            "connections.idle_timeout_ms must be above poll.hold_ms"
        );
        anyhow::ensure!(
            c.read_timeout_ms > 0
                && c.send_timeout_ms > 0
                && c.max_unsent_bytes > 0
                && c.max_body_bytes > 0
                && c.max_connections > 0
                && c.max_held_polls > 0,
            "connections.* must be above 0"
        );
        anyhow::ensure!(
            c.new_instances_per_sec > 0
                && c.new_instances_burst > 0
                && c.new_instances_per_app_per_sec > 0
                && c.new_instances_per_app_burst > 0,
            "connections.new_instances_* must be above 0"
        );
        anyhow::ensure!(
            (1..HYPER_MAX_URI).contains(&c.max_uri_bytes)
                && (1..HYPER_MAX_HEAD).contains(&c.max_header_bytes),
            "connections.max_uri_bytes must be below {HYPER_MAX_URI} and \
             connections.max_header_bytes below {HYPER_MAX_HEAD}: past those the HTTP \
             layer refuses on its own, without the JSON envelope"
        );
        anyhow::ensure!(self.renew.batch_ms > 0, "renew.batch_ms must be above 0");
        let e = &self.eviction;
        anyhow::ensure!(
            e.every_ms > 0 && e.renew_interval_ms > 0 && e.window_ms > 0,
            "eviction.every_ms, renew_interval_ms and window_ms must be above 0"
        );
        anyhow::ensure!(
            e.threshold_ms <= e.ceiling_ms,
            "eviction.threshold_ms must not exceed eviction.ceiling_ms"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&e.keep_ratio),
            "eviction.keep_ratio must be within 0..=1"
        );
        if !self.cluster.members.is_empty() && !self.cluster.join {
            anyhow::ensure!(
                self.cluster.members.iter().any(|m| m.id == self.node.id),
                "cluster.members must list this node (id {})",
                self.node.id
            );
        }
        Ok(self)
    }

    /// This node as a cluster member.
    pub fn me(&self) -> Member {
        Member {
            name: self.node.name.clone(),
            raft_addr: self.node.raft_advertise.clone(),
            api_addr: self.node.advertise.clone(),
            zone: self.node.zone.clone(),
            rebuilding: false,
        }
    }

    /// The initial members: the configured list, or this node alone.
    pub fn initial_members(&self) -> Vec<(NodeId, Member)> {
        if self.cluster.members.is_empty() {
            return vec![(self.node.id, self.me())];
        }
        self.cluster
            .members
            .iter()
            .map(|m| {
                let member = Member {
                    name: m.name.clone(),
                    raft_addr: m.raft_addr.clone(),
                    api_addr: m.api_addr.clone(),
                    zone: if m.zone.is_empty() {
                        self.node.zone.clone()
                    } else {
                        m.zone.clone()
                    },
                    rebuilding: false,
                };
                (m.id, member)
            })
            .collect()
    }

    /// The ids read replicas may take (`cluster.replica_ids`), if any.
    pub fn replica_ids(&self) -> anyhow::Result<Option<std::ops::RangeInclusive<NodeId>>> {
        let text = self.cluster.replica_ids.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let range = text
            .split_once('-')
            .and_then(|(a, b)| Some(a.trim().parse().ok()?..=b.trim().parse().ok()?))
            .filter(|r: &std::ops::RangeInclusive<NodeId>| !r.is_empty())
            .with_context(|| {
                format!("cluster.replica_ids {text:?}: expected FIRST-LAST, e.g. \"101-199\"")
            })?;
        Ok(Some(range))
    }

    /// The eviction rules.
    pub fn eviction_policy(&self) -> Policy {
        let e = &self.eviction;
        Policy {
            threshold: Duration::from_millis(e.threshold_ms),
            ceiling: Duration::from_millis(e.ceiling_ms),
            keep_ratio: e.keep_ratio,
            renew_interval: Duration::from_millis(e.renew_interval_ms),
            window: Duration::from_millis(e.window_ms),
        }
    }

    pub fn poll_hold(&self) -> Duration {
        Duration::from_millis(self.poll.hold_ms)
    }

    /// `security.allow_write_from` parsed; a bare address is a network of
    /// one.
    pub fn write_networks(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.security
            .allow_write_from
            .iter()
            .map(|net| {
                net.parse::<ipnet::IpNet>()
                    .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .with_context(|| {
                        format!("security.allow_write_from: {net:?} is not a network (CIDR)")
                    })
            })
            .collect()
    }

    /// The admin token, if one is set.
    pub fn admin_token(&self) -> Option<String> {
        let token = self.security.admin_token.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    /// The token `/metrics` needs, if any.
    pub fn metrics_token(&self) -> Option<String> {
        let token = self.security.metrics_token.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    /// What every command is checked against.
    pub fn rules(&self) -> Rules {
        Rules {
            max_clock_skew: (self.security.max_clock_skew_ms as i64).saturating_mul(1_000_000),
            limits: self.limits,
        }
    }
}

/// The ordinal of a StatefulSet's pod, the number after the last `-` of
/// its name.
fn ordinal(pod: &str) -> anyhow::Result<NodeId> {
    pod.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .with_context(|| {
            format!("node.pod_name {pod:?} is no StatefulSet pod's name (NAME-ORDINAL)")
        })
}

/// The host part of `host:port` (brackets kept for IPv6).
fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

fn port(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("{addr:?} has no port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with plain peer traffic, as a one-machine setup says.
    fn insecure() -> Config {
        let mut c = Config::default();
        c.tls.insecure_peers = true;
        c
    }

    #[test]
    fn defaults_start_a_single_node() {
        let c = insecure().finish().unwrap();
        assert_eq!(c.node.name, "discovery-1");
        assert_eq!(c.node.raft_advertise, "127.0.0.1:7271");
        assert_eq!(c.initial_members().len(), 1);
        assert_eq!(c.poll_hold(), Duration::from_secs(30));
    }

    #[test]
    fn flags_override_the_file() {
        let mut c: Config = toml::from_str(
            r#"
            [node]
            id = 2
            zone = "sh002"
            [poll]
            hold_ms = 500
            "#,
        )
        .unwrap();
        c.apply(&Flags {
            zone: Some("sh009".into()),
            poll_hold_ms: Some(100),
            insecure_peers: true,
            ..Flags::default()
        });
        let c = c.finish().unwrap();
        assert_eq!(
            (c.node.id, c.node.zone.as_str(), c.poll.hold_ms),
            (2, "sh009", 100)
        );
    }

    #[test]
    fn unknown_keys_and_bad_timeouts_are_refused() {
        assert!(toml::from_str::<Config>("[node]\nnope = 1").is_err());
        let mut c = insecure();
        c.raft.heartbeat_ms = 5000;
        assert!(c.finish().is_err());
    }

    #[test]
    fn peers_need_certificates_unless_plain_is_asked_for() {
        let err = Config::default().finish().unwrap_err().to_string();
        assert!(err.contains("insecure_peers"), "{err}");
        let mut c = Config::default();
        c.tls.ca = "ca.pem".into();
        c.tls.cert = "n1.pem".into();
        c.tls.key = "n1-key.pem".into();
        assert!(c.clone().finish().is_ok());
        c.tls.insecure_peers = true;
        assert!(c.finish().is_err(), "both plain and TLS");
        let mut half = insecure();
        half.tls.client_cert = "c.pem".into();
        assert!(half.finish().is_err());
    }

    #[test]
    fn a_pods_name_gives_the_id_and_name() {
        let mut c = insecure();
        c.node.pod_name = "discovery-replica-2".into();
        c.node.id_base = 101;
        let c = c.finish().unwrap();
        assert_eq!(
            (c.node.id, c.node.name.as_str()),
            (103, "discovery-replica-2")
        );
        let mut c = insecure();
        c.node.pod_name = "discovery".into();
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("no StatefulSet pod's name"), "{e}");
        // A read replica never forms a cluster, and must know whom to ask.
        let mut c = insecure();
        c.cluster.learner = true;
        assert!(c.clone().finish().is_err());
        c.cluster.members.push(MemberConfig {
            id: 1,
            name: "n1".into(),
            raft_addr: "n1:7271".into(),
            api_addr: "n1:7171".into(),
            zone: String::new(),
        });
        assert!(c.finish().unwrap().cluster.join);
        let mut c = insecure();
        c.cluster.replica_ids = "101-199".into();
        assert_eq!(c.replica_ids().unwrap(), Some(101..=199));
        c.cluster.replica_ids = "199-101".into();
        assert!(c.finish().is_err());
    }

    #[test]
    fn write_networks_take_cidrs_and_addresses() {
        let mut c = insecure();
        c.security.allow_write_from = vec!["10.0.0.0/8".into(), "127.0.0.1".into()];
        let nets = c.write_networks().unwrap();
        assert_eq!(nets[1].to_string(), "127.0.0.1/32");
        c.security.allow_write_from.push("10.0.0.0/33".into());
        assert!(c.finish().is_err());
    }

    #[test]
    fn a_dead_leader_is_replaced_within_a_second_by_default() {
        let r = insecure().finish().unwrap().raft;
        // The lease (the maximum) plus the follower's own timeout.
        let first_election = r.election_timeout_max_ms + r.election_timeout_max_ms;
        assert!(first_election <= 1_000, "{first_election} ms");
        // Several heartbeats fit in the shortest wait, so a busy leader is
        // not replaced for one late heartbeat.
        assert!(r.heartbeat_ms * 10 <= r.election_timeout_max_ms + r.election_timeout_min_ms);
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> (tempfile::NamedTempFile, Flags) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            insecure_peers: true,
            ..Flags::default()
        };
        (f, flags)
    }

    #[test]
    fn the_originals_zone_region_and_deploy_env_apply_where_the_file_is_silent() {
        let original = env(&[("ZONE", "sh002"), ("REGION", "bj"), ("DEPLOY_ENV", "uat")]);
        let (_f, flags) = file("");
        let c = Config::load(&flags, &original).unwrap().config;
        assert_eq!(
            (
                c.node.zone.as_str(),
                c.node.region.as_str(),
                c.node.env.as_str()
            ),
            ("sh002", "bj", "uat")
        );

        // The file's own [node] zone wins, as the original's [env] did.
        let (_f, mut flags) = file("[node]\nzone = \"sh001\"\n");
        let loaded = Config::load(&flags, &original).unwrap();
        assert_eq!(
            (
                loaded.config.node.zone.as_str(),
                loaded.config.node.env.as_str()
            ),
            ("sh001", "uat")
        );
        assert_eq!(loaded.sources["node.env"], "env DEPLOY_ENV");

        // And our own flags win over everything.
        flags.zone = Some("sh009".into());
        flags.env = Some("prod".into());
        let c = Config::load(&flags, &original).unwrap().config;
        assert_eq!(
            (c.node.zone.as_str(), c.node.env.as_str()),
            ("sh009", "prod")
        );
    }

    #[test]
    fn every_setting_is_overridden_by_its_variable_or_set_and_its_source_kept() {
        let (_f, mut flags) = file("[raft]\nheartbeat_ms = 40\n[log]\naccess = false\n");
        flags.set = vec!["limits.entry_bytes=70000".into()];
        let loaded = Config::load(
            &flags,
            &env(&[
                ("DISCOVERY_LOG_ACCESS", "true"),
                ("DISCOVERY_SECURITY_ALLOW_WRITE_FROM", "10.0.0.0/8"),
                ("DISCOVERY_CONNECTIONS_MAX_CONNECTIONS", "900"),
                ("DISCOVERY_RAFT_HEARTBEET_MS", "1"),
            ]),
        )
        .unwrap();
        let c = &loaded.config;
        assert_eq!(c.raft.heartbeat_ms, 40);
        assert!(c.log.access);
        assert_eq!(c.security.allow_write_from, vec!["10.0.0.0/8".to_string()]);
        assert_eq!(c.connections.max_connections, 900);
        assert_eq!(c.limits.entry_bytes, 70_000);
        let s = &loaded.sources;
        assert!(s["raft.heartbeat_ms"].starts_with("file "), "{s:?}");
        assert_eq!(s["log.access"], "env DISCOVERY_LOG_ACCESS");
        assert_eq!(s["limits.entry_bytes"], "--set limits.entry_bytes");
        assert_eq!(s["tls.insecure_peers"], "flag");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("DISCOVERY_RAFT_HEARTBEET_MS"));
        // The named flags' own variables and other programs' are no news.
        let quiet = Config::load(
            &flags,
            &env(&[("DISCOVERY_ZONE", "sh001"), ("DISCOVERY_NODES", "a:1")]),
        )
        .unwrap();
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
        // Every key of the defaults is reachable by one variable.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let places = crate::overrides::places(&defaults);
        for (path, _) in Config::default().settings().unwrap() {
            assert!(
                places.values().any(|p| p.path() == path),
                "{path} has no variable"
            );
        }
        let described = c.describe(s).unwrap();
        assert!(
            described.contains("heartbeat_ms = 40  # file "),
            "{described}"
        );
    }

    #[test]
    fn single_toml_shows_every_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/single.toml");
        let mut shown = Config::from_file(Path::new(path)).unwrap();
        // The two settings it changes, and says so: a lone node talks to
        // no peer, so it needs no certificates and keeps its plain peer
        // listener on loopback.
        assert!(shown.tls.insecure_peers);
        assert_eq!(shown.node.peer_listen, "127.0.0.1:7271");
        shown.tls.insecure_peers = false;
        shown.node.peer_listen = NodeConfig::default().peer_listen;
        assert_eq!(format!("{shown:?}"), format!("{:?}", Config::default()));
    }

    fn shipped(dir: &str) -> Vec<Config> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| {
                Config::from_file(path)
                    .and_then(Config::finish)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
            })
            .collect()
    }

    #[test]
    fn the_shipped_configs_parse() {
        assert!(shipped(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).len() >= 5);
    }

    #[test]
    fn the_two_zone_configs_name_each_others_peers() {
        let all = shipped(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/zones"));
        assert_eq!(all.len(), 6);
        let peers = |zone: &str| -> Vec<String> {
            all.iter()
                .filter(|c| c.node.zone == zone)
                .map(|c| c.node.peer_listen.clone())
                .collect()
        };
        for c in &all {
            let other = if c.node.zone == "sh001" {
                "sh002"
            } else {
                "sh001"
            };
            assert_eq!(c.zones.keys().collect::<Vec<_>>(), [other]);
            assert_eq!(c.zones[other], peers(other), "{}", c.node.name);
            let members: Vec<String> = c
                .cluster
                .members
                .iter()
                .map(|m| m.raft_addr.clone())
                .collect();
            assert_eq!(members, peers(&c.node.zone));
        }
    }
}
