//! The serving side of the peer surface: Raft RPCs, proposals, renews and
//! membership changes handed to the leader, and what bootstrap, catch-up
//! and the liveness probe ask. Every request has passed the [`guard`]
//! first, which resolved its [`Caller`]; what a body claims about its
//! sender (a vote's candidate, an append's leader) is checked here against
//! that caller.
//!
//! [`guard`]: super::guard

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use futures::StreamExt;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::Snapshot;

use tokio::io::AsyncWriteExt;

use super::framed::Framed;
use super::guard::Guard;
use super::identity::Caller;
use super::network::parse_header;
use crate::auth::{Access, Origin};
use crate::cluster::appender::Appender;
use crate::cluster::bootstrap::BootstrapState;
use crate::cluster::catch_up::{self, ReadIndex};
use crate::cluster::founding::Founding;
use crate::cluster::handover::{self, ElectRequest, Handover, HandoverError};
use crate::cluster::identity::ClusterId;
use crate::cluster::link::Link;
use crate::cluster::membership::{self, Change, Changed};
use crate::cluster::protection::Protection;
use crate::cluster::renewer::{
    self, ForwardRenews, ForwardedRenews, RenewLedger, RenewSettings, Renewer,
};
use crate::cluster::repair::{self, RepairStep};
use crate::cluster::replica;
use crate::cluster::writer::{self, Committed, Forward, ForwardError, WriteError, Writer};
use crate::local::{CheckRecord, LocalRegistry};
use crate::raft::space::SpaceGuard;
use crate::raft::state_machine::{create_incoming, INCOMING_FILE};
use crate::raft::{Member, NodeId, Raft, TypeConfig};
use crate::registry::Rules;
use crate::self_discovery::{NodeView, SelfDiscovery};
use crate::shutdown::stopped;
use crate::zones::router::{ZoneWrite, ZoneWritten};
use crate::zones::{puller, ZoneAnswer, ZoneCursor};

/// What the peer routes see.
pub struct PeerApi {
    pub raft: Raft,
    /// Who may call what; the routes check bodies' claims with it.
    pub guard: Arc<Guard>,
    /// This node's zone: the only one other zones may write into.
    pub zone: String,
    pub local: Arc<LocalRegistry>,
    pub ledger: Arc<RenewLedger>,
    pub renew: RenewSettings,
    /// What every proposed command is checked against.
    pub rules: Rules,
    /// What every proposed command's sender is checked against.
    pub access: Arc<Access>,
    /// The free-space reserve of this node's data directory.
    pub space: SpaceGuard,
    /// Where snapshots from the leader are received.
    pub data_dir: PathBuf,
    /// Held while one is received and installed.
    pub receiving_snapshot: tokio::sync::Mutex<()>,
    /// Handing leadership over, when this node leads.
    pub handover: Handover,
    /// Proposes what followers hand this node as leader.
    pub appender: Appender,
    /// Writes other zones hand to this one.
    pub writer: Writer,
    pub renewer: Renewer,
    /// This zone's nodes, which other zones list in `infra.discovery`.
    pub nodes: Arc<SelfDiscovery>,
    /// The cluster this node belongs to, once known: calls from nodes of
    /// another are refused.
    pub cluster: ClusterId,
    /// Turns true when the node stops: held requests answer at once, so
    /// that the listener's graceful stop does not wait out their hold.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Check questions asking for every app's digest, held or being
    /// answered at once ([`APP_LISTS`]).
    pub app_lists: Arc<crate::fair::Shares>,
    /// This node as its configuration describes it, told to a leader
    /// adding it.
    pub me: (NodeId, Member),
    /// Whether this node serves reads yet, told to peers' probes.
    pub protection: Arc<Protection>,
    /// How this node reaches its peers (a learner it adds, as leader).
    pub link: Link,
    /// Whether this pristine voter still decides, and whom it told.
    pub founding: Arc<Founding>,
    /// When each read replica's last request was taken here.
    pub replica_pace: replica::Pace,
    /// The ids read replicas may take (`cluster.replica_ids`).
    pub replica_ids: Option<std::ops::RangeInclusive<NodeId>>,
}

/// Check questions that ask for every app's digest (a copy of about 100
/// bytes an app: 1 MB for 10,000 apps) held or answered at once, in all
/// and per address. Only a replica that found itself diverged asks, once,
/// of one node that agrees; more are refused with 503 at once (the asker
/// then names no apps in its error, and loses nothing else).
pub const APP_LISTS: (usize, usize) = (4, 1);

/// Entries from the leader. Short of disk room, this node takes
/// heartbeats only and answers `507` for entries, which the leader treats
/// as unreachable: it backs off and sends them again, so this node lags
/// instead of failing its store, and catches up once space returns.
///
/// The refused request still counts as a heartbeat here (it goes to Raft
/// without its entries): a follower that heard nothing from its leader
/// would campaign every election timeout, and each campaign, lost for its
/// shorter log, would still depose the leader.
pub async fn append(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    body: Framed<AppendEntriesRequest<TypeConfig>>,
) -> Result<Response, (StatusCode, String)> {
    let (req, encoding) = (body.value, body.encoding);
    let leader = req.vote.leader_id().voted_for();
    peers.guard.claims(&caller, "an append", leader)?;
    if !req.entries.is_empty() {
        if let Err(full) = peers.space.check() {
            let heartbeat = AppendEntriesRequest {
                entries: Vec::new(),
                ..req
            };
            let _ = peers.raft.append_entries(heartbeat).await;
            return Err((StatusCode::INSUFFICIENT_STORAGE, full.to_string()));
        }
    }
    let answered: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
        peers.raft.append_entries(req).await;
    Ok(encoding.answer(answered))
}

pub async fn vote(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    body: Framed<VoteRequest<NodeId>>,
) -> Result<Response, (StatusCode, String)> {
    let (req, encoding) = (body.value, body.encoding);
    let candidate = req.vote.leader_id().voted_for();
    peers.guard.claims(&caller, "a vote request", candidate)?;
    let answered: Result<VoteResponse<NodeId>, RaftError<NodeId>> = peers.raft.vote(req).await;
    Ok(encoding.answer(answered))
}

pub async fn snapshot(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    body: Framed<InstallSnapshotRequest<TypeConfig>>,
) -> Result<Response, (StatusCode, String)> {
    let (req, encoding) = (body.value, body.encoding);
    let leader = req.vote.leader_id().voted_for();
    peers.guard.claims(&caller, "a snapshot", leader)?;
    let answered: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        peers.raft.install_snapshot(req).await;
    Ok(encoding.answer(answered))
}

/// A whole snapshot from the leader: a framed header, then the snapshot's
/// bytes, streamed to the data directory's incoming file as they arrive
/// (never held whole in memory), then installed from there. One at a
/// time: they share that file.
pub async fn full_snapshot(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Json<Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>, (StatusCode, String)> {
    let _one = peers.receiving_snapshot.lock().await;
    if let Err(full) = peers.space.check() {
        return Err((StatusCode::INSUFFICIENT_STORAGE, full.to_string()));
    }
    let mut chunks = body.into_data_stream();
    let mut start = Vec::new();
    let (header, used) = loop {
        if let Some(parsed) = parse_header(&start).map_err(|e| (StatusCode::BAD_REQUEST, e))? {
            break parsed;
        }
        match chunks.next().await {
            Some(chunk) => start.extend_from_slice(&chunk.map_err(received)?),
            None => return Err((StatusCode::BAD_REQUEST, "snapshot cut short".into())),
        }
    };
    let leader = header.vote.leader_id().voted_for();
    peers.guard.claims(&caller, "a snapshot", leader)?;
    let mut file = create_incoming(&peers.data_dir).await.map_err(stored)?;
    let mut bytes = (start.len() - used) as u64;
    file.write_all(&start[used..]).await.map_err(stored)?;
    drop(start);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(received)?;
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(stored)?;
    }
    file.flush().await.map_err(stored)?;
    tracing::info!(bytes, vote = %header.vote, "snapshot received");
    let snapshot = Snapshot {
        meta: header.meta,
        snapshot: Box::new(file),
    };
    let installed = peers
        .raft
        .install_full_snapshot(header.vote, snapshot)
        .await;
    // Installed, it was moved into place; refused, it is only in the way.
    let _ = tokio::fs::remove_file(peers.data_dir.join(INCOMING_FILE)).await;
    Ok(Json(installed))
}

fn received(e: axum::Error) -> (StatusCode, String) {
    (
        StatusCode::BAD_REQUEST,
        format!("receiving a snapshot: {e}"),
    )
}

fn stored(e: std::io::Error) -> (StatusCode, String) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("storing a snapshot: {e}"),
    )
}

pub async fn propose(State(peers): State<Arc<PeerApi>>, body: Framed<Forward>) -> Response {
    let answered: Result<Committed, ForwardError> = writer::accept_forwarded(
        &peers.appender,
        &peers.rules,
        &peers.access,
        &peers.space,
        body.value,
    )
    .await;
    body.encoding.answer(answered)
}

/// A repairing member asks this node, the leader, for its vote to be taken
/// or given back: for itself only (see `cluster::repair`).
pub async fn repair(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<RepairStep>,
) -> Result<Json<Result<(), String>>, (StatusCode, String)> {
    peers
        .guard
        .claims(&caller, "a repair step", Some(request.node))?;
    Ok(Json(repair::accept(&peers.raft, request).await))
}

/// A read replica asks this node, the leader, to add or remove it: for
/// itself only (see `cluster::replica`).
pub async fn replica(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<replica::Request>,
) -> Result<Json<Result<(), String>>, (StatusCode, String)> {
    peers
        .guard
        .claims(&caller, "a read replica's request", Some(request.node))?;
    Ok(Json(
        replica::accept(
            &peers.raft,
            &peers.link,
            &peers.replica_pace,
            peers.replica_ids.as_ref(),
            request,
        )
        .await,
    ))
}

pub async fn membership(
    State(peers): State<Arc<PeerApi>>,
    Json(change): Json<Change>,
) -> Json<Result<Changed, String>> {
    Json(membership::accept_forwarded(&peers.raft, &peers.link, change).await)
}

/// The leader hands its leadership to this node: campaign now.
pub async fn elect(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ElectRequest>,
) -> Result<Json<Result<(), String>>, (StatusCode, String)> {
    peers
        .guard
        .claims(&caller, "a request to campaign", Some(request.from))?;
    Ok(Json(
        handover::accept_elect(&peers.raft, peers.handover.me, request).await,
    ))
}

/// A peer hands on an operator's request to hand leadership over: carried
/// out here only if this node leads, never handed on again.
pub async fn transfer_leader(
    State(peers): State<Arc<PeerApi>>,
    Json(successor): Json<Option<NodeId>>,
) -> Json<Result<NodeId, HandoverError>> {
    Json(peers.handover.here(successor).await)
}

/// Another zone follows this zone's own changes after its cursor: answered
/// at once when there are some (or a full copy is due), else held up to
/// `hold_ms` (at most the stream's hold) for the next.
pub async fn zone_changes(
    State(peers): State<Arc<PeerApi>>,
    Query(q): Query<ZoneChangesQuery>,
) -> Json<ZoneAnswer> {
    let hold = Duration::from_millis(q.hold_ms).min(puller::HOLD);
    let cursor = ZoneCursor {
        after: q.after,
        term: q.term,
        log: q.log,
    };
    // The receiver proposes a batch as one entry of its own log: as large
    // as it says it takes (earlier builds do not say), and no larger than
    // this node's own entries.
    let own = peers.rules.limits.entry_bytes;
    let bytes = match q.bytes {
        0 => own,
        theirs => theirs.min(own),
    };
    let mut moved = peers.local.zone_feed_moved();
    let mut stop = peers.stop.clone();
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        moved.borrow_and_update();
        let answer = peers.local.zone_changes(&cursor, bytes);
        if !matches!(answer, ZoneAnswer::Nothing { .. }) {
            return Json(answer);
        }
        let more = tokio::select! {
            r = tokio::time::timeout_at(deadline, moved.changed()) => r.is_ok_and(|r| r.is_ok()),
            _ = stopped(&mut stop) => false,
        };
        if !more {
            return Json(answer);
        }
    }
}

/// The cursor's fields one by one: a query string cannot hold a nested
/// (flattened) struct's numbers.
#[derive(serde::Deserialize)]
pub struct ZoneChangesQuery {
    after: u64,
    #[serde(default)]
    term: u64,
    #[serde(default)]
    log: Option<String>,
    /// The most bytes of changes the receiver takes in one answer.
    #[serde(default)]
    bytes: usize,
    #[serde(default)]
    hold_ms: u64,
}

/// Another zone hands a write for one of this zone's instances: carried
/// out here as a client's would be.
pub async fn zone_write(
    State(peers): State<Arc<PeerApi>>,
    Json(write): Json<ZoneWrite>,
) -> Result<Json<Result<ZoneWritten, WriteError>>, (StatusCode, String)> {
    write
        .allowed_into(&peers.zone)
        .map_err(|why| (StatusCode::FORBIDDEN, format!("refused: {why}")))?;
    Ok(Json(match write {
        ZoneWrite::Command(command) => peers
            .writer
            .write(command, Origin::Cluster)
            .await
            .map(ZoneWritten::Outcome),
        ZoneWrite::Renew(key) => peers
            .renewer
            .renew(key, Origin::Cluster)
            .await
            .map(ZoneWritten::Renewal),
    }))
}

/// Another zone asks for this zone's nodes (its own only: what this node
/// heard of other zones is not passed on).
pub async fn zone_nodes(State(peers): State<Arc<PeerApi>>) -> Json<Vec<NodeView>> {
    Json(peers.nodes.own())
}

#[derive(Debug, serde::Deserialize)]
pub struct BootstrapQuery {
    /// Who asks, as it says: a pristine node that may count this one in.
    from: Option<NodeId>,
}

pub async fn bootstrap_state(
    State(peers): State<Arc<PeerApi>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<BootstrapQuery>,
) -> Json<BootstrapState> {
    let initialized = peers.raft.is_initialized().await.unwrap_or(true);
    // Counted in by the asker (see `cluster::founding`): the node its
    // certificate proves, or with plain peers the one it says it is.
    let asker = match caller {
        Caller::Node(id) => Some(id).filter(|id| q.from == Some(*id)),
        Caller::Unproven => q.from,
        _ => None,
    };
    if let (false, Some(asker)) = (initialized, asker) {
        peers.founding.told(asker);
    }
    Json(BootstrapState {
        initialized,
        cluster: peers.cluster.get(),
        node: Some(peers.me.clone()),
    })
}

/// Whether this node answers (200) and serves reads (503 "catching up"
/// while it does not): a learner is published in `infra.discovery` once
/// it has served.
pub async fn health(State(peers): State<Arc<PeerApi>>) -> (StatusCode, &'static str) {
    if peers.protection.is_on() {
        (StatusCode::SERVICE_UNAVAILABLE, "catching up")
    } else {
        (StatusCode::OK, "ok")
    }
}

/// The longest a replica holds a check question until it applies the
/// check entry.
const CHECK_HOLD: Duration = Duration::from_secs(5);

#[derive(Debug, serde::Deserialize)]
pub struct CheckQuery {
    index: u64,
    #[serde(default)]
    apps: bool,
    #[serde(default)]
    hold_ms: u64,
}

/// What this node recorded at check entry `index`, once it has applied
/// it (held up to `hold_ms`, at most [`CHECK_HOLD`], or until this node
/// stops): none when it keeps no record of that index (applied long ago,
/// or not a check here).
pub async fn check(
    State(peers): State<Arc<PeerApi>>,
    ConnectInfo(from): ConnectInfo<std::net::SocketAddr>,
    Query(q): Query<CheckQuery>,
) -> Result<Json<Option<CheckRecord>>, (StatusCode, String)> {
    let _share = match q.apps {
        true => Some(peers.app_lists.take(from.ip()).map_err(|e| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("every app's digest is being answered to others: {e}"),
            )
        })?),
        false => None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.hold_ms).min(CHECK_HOLD);
    let mut checked = peers.local.checked();
    let mut stop = peers.stop.clone();
    loop {
        let latest = *checked.borrow_and_update();
        if let Some(record) = peers.local.check_at(q.index) {
            return Ok(Json(Some(CheckRecord {
                index: record.index,
                digest: record.digest.clone(),
                instances: record.instances,
                apps: if q.apps {
                    record.apps.clone()
                } else {
                    Vec::new()
                },
            })));
        }
        // A later check recorded and none at this index: none is kept.
        if latest >= q.index {
            return Ok(Json(None));
        }
        // A node that stops answers at once: its listener waits for
        // every answer before it closes.
        let changed = tokio::select! {
            _ = stopped(&mut stop) => return Ok(Json(None)),
            changed = tokio::time::timeout_at(deadline, checked.changed()) => changed,
        };
        if changed.is_err() {
            return Ok(Json(None));
        }
    }
}

pub async fn read_index(State(peers): State<Arc<PeerApi>>) -> Json<ReadIndex> {
    Json(catch_up::read_index(&peers.raft).await)
}

pub async fn renew(State(peers): State<Arc<PeerApi>>, body: Framed<ForwardRenews>) -> Response {
    let answered: ForwardedRenews = renewer::accept_forwarded(
        &peers.raft,
        &peers.local,
        &peers.ledger,
        &peers.renew,
        &peers.access,
        body.value.into(),
    );
    body.encoding.answer(answered)
}
