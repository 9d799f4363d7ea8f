//! The client side of Raft RPCs: JSON over HTTP (mutual TLS) to a peer's
//! listener, on the node's one pooled [`PeerClient`].

use std::future::Future;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::client::{link_error, PeerClient};
use super::paths;
use crate::cluster::link::LinkError;
use crate::raft::{Member, NodeId, TypeConfig};

/// Makes a client per peer; all share the node's connection pool.
#[derive(Clone)]
pub struct Network {
    client: PeerClient,
}

impl Network {
    pub fn new(client: PeerClient) -> Self {
        Network { client }
    }
}

/// The connection to one peer.
pub struct Peer {
    client: PeerClient,
    target: NodeId,
    member: Member,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            member: node.clone(),
        }
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, E> = self
            .client
            .post(&self.member, path, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                LinkError::NotSent(_) => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(paths::APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(paths::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(paths::VOTE, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        tokio::select! {
            result = self.send_full_snapshot(vote, snapshot, &option) => result,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

/// What precedes the raw bytes of a snapshot sent whole.
#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, Member>,
}

/// Frames a snapshot: the header's length (8 bytes, big-endian), the header
/// as JSON, then the snapshot's own bytes, sent as they are.
pub fn frame_snapshot(header: &SnapshotHeader, data: &[u8]) -> serde_json::Result<Vec<u8>> {
    let head = serde_json::to_vec(header)?;
    let mut body = Vec::with_capacity(8 + head.len() + data.len());
    body.extend_from_slice(&(head.len() as u64).to_be_bytes());
    body.extend_from_slice(&head);
    body.extend_from_slice(data);
    Ok(body)
}

/// Splits a framed snapshot into its header and bytes.
pub fn unframe_snapshot(body: &[u8]) -> Result<(SnapshotHeader, &[u8]), String> {
    let len_bytes: [u8; 8] = body
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("snapshot frame too short")?;
    let len = usize::try_from(u64::from_be_bytes(len_bytes)).map_err(|e| e.to_string())?;
    let head = body.get(8..8 + len).ok_or("snapshot header cut short")?;
    let header = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    Ok((header, &body[8 + len..]))
}

impl Peer {
    /// Sends a whole snapshot in one request instead of openraft's JSON
    /// chunks (which would encode every byte as a JSON number).
    async fn send_full_snapshot(
        &self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta,
        };
        let body = frame_snapshot(&header, snapshot.snapshot.get_ref())
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let response = self
            .client
            .http()
            .post(self.client.url(&self.member, paths::FULL_SNAPSHOT))
            .timeout(option.hard_ttl())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| match link_error(e) {
                e @ LinkError::NotSent(_) => StreamingError::Unreachable(Unreachable::new(&e)),
                e => StreamingError::Network(NetworkError::new(&e)),
            })?;
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = response
            .json()
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            StreamingError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                e,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_snapshot_comes_apart_as_it_went_in() {
        let header = SnapshotHeader {
            vote: Vote::new(3, 1),
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: "s-1".into(),
            },
        };
        let body = frame_snapshot(&header, b"{\"registry\":1}").unwrap();
        let (back, data) = unframe_snapshot(&body).unwrap();
        assert_eq!(back.vote, header.vote);
        assert_eq!(back.meta.snapshot_id, "s-1");
        assert_eq!(data, b"{\"registry\":1}");
        assert!(unframe_snapshot(&body[..4]).is_err());
        assert!(unframe_snapshot(&body[..12]).is_err());
    }
}
