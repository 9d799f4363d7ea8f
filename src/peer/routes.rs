//! The serving side of the peer surface: Raft RPCs, proposals, renews and
//! membership changes handed to the leader, and what bootstrap, catch-up
//! and the liveness probe ask. Only peers holding a certificate of the
//! cluster CA reach these handlers.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::Snapshot;

use super::network::unframe_snapshot;
use crate::cluster::bootstrap::BootstrapState;
use crate::cluster::catch_up::{self, ReadIndex};
use crate::cluster::membership::{self, Change, Changed};
use crate::cluster::renewer::{self, ForwardedRenews, RenewLedger, RenewSettings};
use crate::cluster::writer::{self, Committed, ForwardError};
use crate::local::LocalRegistry;
use crate::raft::space::SpaceGuard;
use crate::raft::{NodeId, Proposal, Raft, TypeConfig};
use crate::registry::{InstanceKey, Rules};

/// What the peer routes see.
pub struct PeerApi {
    pub raft: Raft,
    pub local: Arc<LocalRegistry>,
    pub ledger: Arc<RenewLedger>,
    pub renew: RenewSettings,
    /// What every proposed command is checked against.
    pub rules: Rules,
    /// The free-space reserve of this node's data directory.
    pub space: SpaceGuard,
}

/// Entries from the leader. Short of disk room, this node takes
/// heartbeats only and answers `507` for entries, which the leader treats
/// as unreachable: it backs off and sends them again, so this node lags
/// instead of failing its store, and catches up once space returns.
pub async fn append(
    State(peers): State<Arc<PeerApi>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Result<Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>, (StatusCode, String)> {
    if !req.entries.is_empty() {
        if let Err(full) = peers.space.check() {
            return Err((StatusCode::INSUFFICIENT_STORAGE, full.to_string()));
        }
    }
    Ok(Json(peers.raft.append_entries(req).await))
}

pub async fn vote(
    State(peers): State<Arc<PeerApi>>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(peers.raft.vote(req).await)
}

pub async fn snapshot(
    State(peers): State<Arc<PeerApi>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(peers.raft.install_snapshot(req).await)
}

/// A whole snapshot from the leader, framed by [`frame_snapshot`].
pub async fn full_snapshot(
    State(peers): State<Arc<PeerApi>>,
    body: Bytes,
) -> Result<Json<Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>, (StatusCode, String)> {
    let (header, data) = unframe_snapshot(&body).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let snapshot = Snapshot {
        meta: header.meta,
        snapshot: Box::new(Cursor::new(data.to_vec())),
    };
    Ok(Json(
        peers
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await,
    ))
}

pub async fn propose(
    State(peers): State<Arc<PeerApi>>,
    Json(proposal): Json<Proposal>,
) -> Json<Result<Committed, ForwardError>> {
    Json(writer::accept_forwarded(&peers.raft, &peers.rules, &peers.space, proposal).await)
}

pub async fn membership(
    State(peers): State<Arc<PeerApi>>,
    Json(change): Json<Change>,
) -> Json<Result<Changed, String>> {
    Json(membership::accept_forwarded(&peers.raft, change).await)
}

pub async fn bootstrap_state(State(peers): State<Arc<PeerApi>>) -> Json<BootstrapState> {
    Json(BootstrapState {
        initialized: peers.raft.is_initialized().await.unwrap_or(true),
    })
}

pub async fn read_index(State(peers): State<Arc<PeerApi>>) -> Json<ReadIndex> {
    Json(catch_up::read_index(&peers.raft).await)
}

pub async fn renew(
    State(peers): State<Arc<PeerApi>>,
    Json(keys): Json<Vec<InstanceKey>>,
) -> Json<ForwardedRenews> {
    Json(renewer::accept_forwarded(
        &peers.raft,
        &peers.local,
        &peers.ledger,
        &peers.renew,
        &keys,
    ))
}
