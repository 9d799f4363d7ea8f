//! The peer surface: everything nodes say to each other, on a listener of
//! its own, apart from the client API. Raft append / vote / snapshots,
//! proposals, renews and membership changes handed to the leader, and the
//! bootstrap, read-index and liveness questions.
//!
//! - [`identity`]: who a certificate says its holder is;
//! - [`tls`]: mutual TLS against the zone's CA and the trusted zone CAs,
//!   and who a handshake proved the caller to be (and HTTPS for the
//!   client port);
//! - [`guard`]: the one check of every peer request against its caller;
//! - [`rotation`]: certificates replaced without a restart;
//! - [`certs`]: making the CA and node certificates;
//! - [`client`]: the calling side, the cluster's [`PeerLink`];
//! - [`network`]: openraft's RPCs over that client;
//! - [`framed`]: bodies in binary frames or JSON, answered in kind;
//! - [`routes`]: the serving side.
//!
//! [`PeerLink`]: crate::cluster::link::PeerLink

pub mod certs;
pub mod client;
pub mod framed;
pub mod guard;
pub mod identity;
pub mod network;
pub mod rotation;
pub mod routes;
pub mod tls;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use routes::PeerApi;

/// The routes of the peer listener.
pub mod paths {
    pub const APPEND: &str = "/internal/raft/append";
    pub const VOTE: &str = "/internal/raft/vote";
    pub const SNAPSHOT: &str = "/internal/raft/snapshot";
    /// A whole snapshot in one request: a framed header, then the raw bytes.
    pub const FULL_SNAPSHOT: &str = "/internal/raft/full-snapshot";
    /// Where followers hand proposals to the leader.
    pub const PROPOSE: &str = "/internal/propose";
    /// Where followers hand renews to the leader.
    pub const RENEW: &str = "/internal/renew";
    /// Where membership changes are handed to the leader.
    pub const MEMBERSHIP: &str = "/internal/membership";
    /// Whether a node has joined a cluster.
    pub const BOOTSTRAP: &str = "/internal/bootstrap";
    /// The leader's commit point, for a node catching up.
    pub const READ_INDEX: &str = "/internal/read-index";
    /// What a replica recorded at a check entry.
    pub const CHECK: &str = "/internal/check";
    /// Where a repairing node asks the leader for its vote to be taken
    /// or given back.
    pub const REPAIR: &str = "/internal/repair";
    /// Where a read replica asks the leader to add or remove it.
    pub const REPLICA: &str = "/internal/replica";
    /// Liveness probes.
    pub const HEALTH: &str = "/internal/health";
    /// The leader asks its successor to campaign.
    pub const ELECT: &str = "/internal/raft/elect";
    /// Where a request to hand leadership over is handed to the leader.
    pub const TRANSFER_LEADER: &str = "/internal/transfer-leader";
    /// Where another zone follows this zone's own changes.
    pub const ZONE_CHANGES: &str = "/internal/zone/changes";
    /// Where another zone hands a write for this zone's instances.
    pub const ZONE_WRITE: &str = "/internal/zone/write";
    /// Where another zone learns this zone's nodes.
    pub const ZONE_NODES: &str = "/internal/zone/nodes";

    /// Every peer route, for the tests that check none is served to clients.
    pub const ALL: [&str; 18] = [
        APPEND,
        VOTE,
        SNAPSHOT,
        FULL_SNAPSHOT,
        PROPOSE,
        RENEW,
        MEMBERSHIP,
        BOOTSTRAP,
        READ_INDEX,
        CHECK,
        REPAIR,
        REPLICA,
        HEALTH,
        ELECT,
        TRANSFER_LEADER,
        ZONE_CHANGES,
        ZONE_WRITE,
        ZONE_NODES,
    ];
}

/// Bodies that carry log entries (appends, proposals, renew batches): a
/// request holds at most `max_payload_entries` entries, and a sender whose
/// request is refused as too large (413) sends fewer entries at once.
/// Whole snapshots are not held in memory at all: they stream to disk.
pub const ENTRIES_LIMIT: usize = 256 << 20;

/// Bodies of votes and membership changes: a few hundred bytes each.
const SMALL_LIMIT: usize = 1 << 20;

/// What a connection past the peer listener's cap gets.
pub fn overloaded() -> Router {
    Router::new().fallback(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE })
}

fn entries() -> DefaultBodyLimit {
    DefaultBodyLimit::max(ENTRIES_LIMIT)
}

fn small() -> DefaultBodyLimit {
    DefaultBodyLimit::max(SMALL_LIMIT)
}

/// Every route of the peer listener, each behind the [`guard`]; anything
/// else is 404 to members and refused to others.
pub fn router(peers: Arc<PeerApi>) -> Router {
    let guard = peers.guard.clone();
    Router::new()
        .route(paths::APPEND, post(routes::append).layer(entries()))
        .route(paths::VOTE, post(routes::vote).layer(small()))
        .route(paths::SNAPSHOT, post(routes::snapshot).layer(entries()))
        .route(paths::FULL_SNAPSHOT, post(routes::full_snapshot))
        .route(paths::PROPOSE, post(routes::propose).layer(entries()))
        .route(paths::RENEW, post(routes::renew).layer(entries()))
        .route(paths::MEMBERSHIP, post(routes::membership).layer(small()))
        .route(paths::ELECT, post(routes::elect).layer(small()))
        .route(
            paths::TRANSFER_LEADER,
            post(routes::transfer_leader).layer(small()),
        )
        .route(paths::ZONE_CHANGES, get(routes::zone_changes))
        .route(paths::ZONE_WRITE, post(routes::zone_write).layer(entries()))
        .route(paths::ZONE_NODES, get(routes::zone_nodes))
        .route(paths::BOOTSTRAP, get(routes::bootstrap_state))
        .route(paths::READ_INDEX, get(routes::read_index))
        .route(paths::CHECK, get(routes::check))
        .route(paths::REPAIR, post(routes::repair).layer(small()))
        .route(paths::REPLICA, post(routes::replica).layer(small()))
        .route(paths::HEALTH, get(routes::health))
        .with_state(peers)
        .layer(axum::middleware::from_fn_with_state(guard, guard::check))
}
