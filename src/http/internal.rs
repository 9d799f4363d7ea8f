//! Routes peers call: Raft RPCs and proposals forwarded by followers.

use std::io::Cursor;

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

use crate::cluster::bootstrap::BootstrapState;
use crate::cluster::catch_up::{self, ReadIndex};
use crate::cluster::writer::{accept_forwarded, ForwardError};
use crate::raft::network::unframe_snapshot;
use crate::raft::{NodeId, Proposal, ProposalResult, Raft, TypeConfig};

pub async fn append(
    State(raft): State<Raft>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(raft.append_entries(req).await)
}

pub async fn vote(
    State(raft): State<Raft>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(raft.vote(req).await)
}

pub async fn snapshot(
    State(raft): State<Raft>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(raft.install_snapshot(req).await)
}

/// A whole snapshot from the leader, framed by [`frame_snapshot`].
pub async fn full_snapshot(
    State(raft): State<Raft>,
    body: Bytes,
) -> Result<Json<Result<SnapshotResponse<NodeId>, Fatal<NodeId>>>, (StatusCode, String)> {
    let (header, data) = unframe_snapshot(&body).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let snapshot = Snapshot {
        meta: header.meta,
        snapshot: Box::new(Cursor::new(data.to_vec())),
    };
    Ok(Json(
        raft.install_full_snapshot(header.vote, snapshot).await,
    ))
}

pub async fn propose(
    State(raft): State<Raft>,
    Json(proposal): Json<Proposal>,
) -> Json<Result<ProposalResult, ForwardError>> {
    Json(accept_forwarded(&raft, proposal).await)
}

pub async fn bootstrap_state(State(raft): State<Raft>) -> Json<BootstrapState> {
    Json(BootstrapState {
        initialized: raft.is_initialized().await.unwrap_or(true),
    })
}

pub async fn read_index(State(raft): State<Raft>) -> Json<ReadIndex> {
    Json(catch_up::read_index(&raft).await)
}
