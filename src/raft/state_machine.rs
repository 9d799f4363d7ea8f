//! The registry as openraft's state machine, with snapshots kept as one
//! file in the data directory.
//!
//! Applying happens in memory ([`LocalRegistry`]); durability comes from the
//! log. A snapshot captures the registry at an applied log id; on start the
//! node loads the last snapshot and openraft replays the log after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::space::SpaceGuard;
use super::{Member, NodeId, ProposalResult, StorageError, TypeConfig};
use crate::local::LocalRegistry;
use crate::registry::RegistrySnapshot;

/// The snapshot's file in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// The bytes of a snapshot, as stored on disk and sent to peers.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, Member>,
    registry: RegistrySnapshot,
}

/// The state machine; owned by openraft's state machine task.
pub struct StateMachine {
    local: Arc<LocalRegistry>,
    dir: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    built: u64,
    /// Told each snapshot's size: the next one needs as much room.
    space: SpaceGuard,
}

impl StateMachine {
    /// Opens the state machine over `local`, restoring the last snapshot
    /// found in `dir`.
    pub fn open(dir: &Path, local: Arc<LocalRegistry>, space: SpaceGuard) -> anyhow::Result<Self> {
        let mut sm = StateMachine {
            local,
            dir: dir.to_path_buf(),
            last_applied: None,
            membership: StoredMembership::default(),
            built: 0,
            space,
        };
        let path = dir.join(SNAPSHOT_FILE);
        if path.exists() {
            let bytes = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt or truncated ({e}): refusing to start without the \
                     registry it holds; restore it from a backup, or move the data \
                     directory away and add this node back as a new one",
                    path.display()
                )
            })?;
            sm.space.snapshot_written(bytes.len() as u64);
            sm.last_applied = file.meta.last_log_id;
            sm.membership = file.meta.last_membership;
            sm.local
                .restore(file.registry, file.meta.last_log_id.map(|l| l.index));
        }
        Ok(sm)
    }

    /// The log index the restored snapshot covers.
    pub fn applied_index(&self) -> Option<u64> {
        self.last_applied.map(|l| l.index)
    }
}

/// Writes a snapshot durably, whole or not at all.
fn write_snapshot(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    super::data_dir::write_atomically(&dir.join(SNAPSHOT_FILE), bytes)
}

async fn persist(dir: PathBuf, bytes: Arc<Vec<u8>>) -> Result<(), StorageError> {
    tokio::task::spawn_blocking(move || write_snapshot(&dir, &bytes))
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
    Ok(())
}

/// Builds one snapshot from a copy of the registry taken when openraft asked.
pub struct Builder {
    dir: PathBuf,
    space: SpaceGuard,
    meta: SnapshotMeta<NodeId, Member>,
    registry: Option<RegistrySnapshot>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let file = SnapshotFile {
            meta: self.meta.clone(),
            registry: self.registry.take().unwrap_or_default(),
        };
        let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let bytes = Arc::new(bytes);
        persist(self.dir.clone(), bytes.clone()).await?;
        self.space.snapshot_written(bytes.len() as u64);
        tracing::info!(
            last_log_id = ?self.meta.last_log_id,
            size = bytes.len(),
            "snapshot built"
        );
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(Arc::unwrap_or_clone(bytes))),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            let outcomes = match entry.payload {
                EntryPayload::Normal(proposal) => self.local.apply(index, &proposal.commands),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.local.skip(index);
                    Vec::new()
                }
                EntryPayload::Blank => {
                    self.local.skip(index);
                    Vec::new()
                }
            };
            results.push(ProposalResult { outcomes });
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        self.built += 1;
        let id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.built),
            None => format!("none-{}", self.built),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: id,
        };
        Builder {
            dir: self.dir.clone(),
            space: self.space.clone(),
            meta,
            registry: Some(self.local.read().to_snapshot()),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        // The leader sends the bytes of its own snapshot file, whose meta is
        // `meta`: they are stored as they came.
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let size = bytes.len() as u64;
        persist(self.dir.clone(), Arc::new(bytes)).await?;
        self.space.snapshot_written(size);
        self.local
            .restore(file.registry, meta.last_log_id.map(|l| l.index));
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
