//! The client side of Raft RPCs: binary frames (JSON to a peer of an
//! earlier build) over HTTP (mutual TLS) to a peer's listener, on the
//! node's one pooled [`PeerClient`]; whole snapshots as their file's bytes.

use std::future::Future;
use std::io::SeekFrom;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncSeekExt;
use tokio_util::io::ReaderStream;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Unreachable,
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
use crate::cluster::removal::{self, Refusals};
use crate::raft::{Member, NodeId, TypeConfig};

/// Makes a client per peer; all share the node's connection pool.
#[derive(Clone)]
pub struct Network {
    client: PeerClient,
    refusals: Arc<Refusals>,
}

impl Network {
    /// `refusals` hears which peers refuse this node's votes as no voter.
    pub fn new(client: PeerClient, refusals: Arc<Refusals>) -> Self {
        Network { client, refusals }
    }
}

/// The connection to one peer.
pub struct Peer {
    client: PeerClient,
    target: NodeId,
    member: Member,
    refusals: Arc<Refusals>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            member: node.clone(),
            refusals: self.refusals.clone(),
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
        let result = self.exchange(path, req, option).await.map_err(rpc_error)?;
        result.map_err(|e| self.remote(e))
    }

    async fn exchange<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, E>, LinkError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        self.client
            .call(&self.member, path, req, option.hard_ttl())
            .await
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, Member, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.member.clone(),
            e,
        ))
    }
}

fn rpc_error<E: std::error::Error>(e: LinkError) -> RPCError<NodeId, Member, E> {
    match e {
        LinkError::NotSent(_) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let mut rpc = rpc;
        // A follower behind gets at most about APPEND_BYTES at once and
        // answers within openraft's limit for one append (one heartbeat);
        // a larger batch would time out every time and never catch up.
        // openraft sends the rest from where this prefix ends.
        let sending = within_bytes(&rpc.entries, APPEND_BYTES);
        let cut_short = sending < rpc.entries.len();
        rpc.entries.truncate(sending);
        let last = rpc.entries.last().map(|e| e.log_id);
        let entries = rpc.entries.len() as u64;
        match self.exchange(paths::APPEND, &rpc, &option).await {
            Ok(Ok(AppendEntriesResponse::Success)) if cut_short => {
                Ok(AppendEntriesResponse::PartialSuccess(last))
            }
            Ok(result) => result.map_err(|e| self.remote(e)),
            // Too large for the follower to read: openraft sends again at
            // once with at most half as many entries.
            Err(LinkError::TooLarge) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            )),
            Err(e) => Err(rpc_error(e)),
        }
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
        match self.exchange(paths::VOTE, &rpc, &option).await {
            Ok(answer) => {
                self.refusals.answered(self.target);
                answer.map_err(|e| self.remote(e))
            }
            Err(LinkError::Refused(why)) if removal::says_removed(&why) => {
                self.refusals.refused(self.target);
                Err(rpc_error(LinkError::Refused(why)))
            }
            Err(e) => Err(rpc_error(e)),
        }
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

/// About the most bytes of entries one append carries (a single entry
/// larger than this goes alone).
const APPEND_BYTES: usize = 512 << 10;

/// How many of `entries`, from the first, fit in about `max` bytes (at
/// least one).
fn within_bytes(entries: &[openraft::Entry<TypeConfig>], max: usize) -> usize {
    let mut bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        bytes += match &entry.payload {
            openraft::EntryPayload::Normal(p) => p.commands.iter().map(|c| c.approx_bytes()).sum(),
            _ => 256,
        };
        if bytes > max {
            return i.max(1);
        }
    }
    entries.len()
}

/// What precedes the raw bytes of a snapshot sent whole.
#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, Member>,
}

/// The most a snapshot's header may take; the snapshot itself is not
/// bounded here (it streams to disk, bounded by the free-space reserve).
pub const MAX_HEADER: usize = 1 << 20;

/// Frames a snapshot's header: its length (8 bytes, big-endian), then the
/// header as JSON. The snapshot's own bytes follow it as they are.
pub fn frame_header(header: &SnapshotHeader) -> serde_json::Result<Vec<u8>> {
    let head = serde_json::to_vec(header)?;
    let mut frame = Vec::with_capacity(8 + head.len());
    frame.extend_from_slice(&(head.len() as u64).to_be_bytes());
    frame.extend_from_slice(&head);
    Ok(frame)
}

/// Reads a framed header from the start of `body`: the header and how
/// many bytes it took, `None` while more bytes are needed.
pub fn parse_header(body: &[u8]) -> Result<Option<(SnapshotHeader, usize)>, String> {
    let Some(len_bytes) = body.get(..8) else {
        return Ok(None);
    };
    let len = u64::from_be_bytes(len_bytes.try_into().expect("8 bytes"));
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_HEADER)
        .ok_or_else(|| format!("snapshot header of {len} bytes, at most {MAX_HEADER}"))?;
    let Some(head) = body.get(8..8 + len) else {
        return Ok(None);
    };
    let header = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    Ok(Some((header, 8 + len)))
}

impl Peer {
    /// Sends a whole snapshot in one request instead of openraft's JSON
    /// chunks (which would encode every byte as a JSON number), streamed
    /// from its file.
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
        let head =
            frame_header(&header).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut file = *snapshot.snapshot;
        file.seek(SeekFrom::Start(0))
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
            .chain(ReaderStream::with_capacity(file, 256 << 10));
        let response = self
            .client
            .http()
            .post(self.client.url(&self.member, paths::FULL_SNAPSHOT))
            .timeout(option.hard_ttl())
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
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
    fn a_framed_header_comes_apart_as_it_went_in() {
        let header = SnapshotHeader {
            vote: Vote::new(3, 1),
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: "s-1".into(),
            },
        };
        let mut body = frame_header(&header).unwrap();
        let len = body.len();
        body.extend_from_slice(b"{\"registry\":1}");
        let (back, used) = parse_header(&body).unwrap().unwrap();
        assert_eq!(back.vote, header.vote);
        assert_eq!(back.meta.snapshot_id, "s-1");
        assert_eq!(used, len);
        assert_eq!(&body[used..], b"{\"registry\":1}");
        // Cut short: more bytes needed, not an error.
        assert!(parse_header(&body[..4]).unwrap().is_none());
        assert!(parse_header(&body[..12]).unwrap().is_none());
        // A length past the bound is refused at once.
        let mut huge = (u64::MAX).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(parse_header(&huge).is_err());
    }
}
