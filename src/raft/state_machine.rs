//! The registry as openraft's state machine, with snapshots kept as one
//! file in the data directory.
//!
//! Applying happens in memory ([`LocalRegistry`]); durability comes from the
//! log. A snapshot captures the registry at an applied log id; on start the
//! node loads the last snapshot and openraft replays the log after it.
//!
//! A snapshot records the sum of its instances' hashes, checked when it is
//! loaded; the CRC-32 of its file, taken as it is written, received or
//! loaded, is what the scrub checks it against while the node runs
//! ([`SnapshotCheck`]).

use std::io::{BufRead, BufReader};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::durable::{move_into_place, write_synced};
use super::space::SpaceGuard;
use super::{Member, NodeId, ProposalResult, StorageError, TypeConfig};
use crate::local::LocalRegistry;
use crate::registry::digest::Sum;
use crate::registry::{Frozen, Thawed};
use crate::wire;

/// The snapshot's file in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// Where a snapshot from the leader is written as it arrives, before it
/// is checked and moved over [`SNAPSHOT_FILE`].
pub const INCOMING_FILE: &str = "snapshot.incoming";

/// Where a snapshot is built before it replaces [`SNAPSHOT_FILE`].
pub const BUILDING_FILE: &str = "snapshot.building";

/// The snapshot file, the meta it holds and the CRC-32 of its bytes,
/// changed together: whoever opens the file under the lock gets the meta
/// and checksum that go with it.
#[derive(Clone, Default)]
struct Current(Arc<parking_lot::Mutex<Option<Stored>>>);

/// A snapshot's meta and the CRC-32 of its file's bytes.
type Stored = (SnapshotMeta<NodeId, Member>, u32);

impl Current {
    /// Moves a complete, synced snapshot file (whose bytes' CRC-32 is
    /// `crc`) over the current one.
    fn replace(
        &self,
        dir: &Path,
        from: &Path,
        meta: SnapshotMeta<NodeId, Member>,
        crc: u32,
    ) -> std::io::Result<()> {
        let mut current = self.0.lock();
        move_into_place(from, &dir.join(SNAPSHOT_FILE))?;
        *current = Some((meta, crc));
        Ok(())
    }

    /// The current snapshot, its file opened at the start.
    fn open(&self, dir: &Path) -> std::io::Result<Option<Snapshot<TypeConfig>>> {
        let current = self.0.lock();
        let Some((meta, _)) = current.clone() else {
            return Ok(None);
        };
        let file = std::fs::File::open(dir.join(SNAPSHOT_FILE))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

/// What the scrub checks the snapshot file against while the node runs.
#[derive(Clone)]
pub struct SnapshotCheck {
    dir: PathBuf,
    current: Current,
}

impl SnapshotCheck {
    /// Reads the current snapshot file back, `chunk` bytes at a time with
    /// `pause` between chunks, and checks its CRC-32 against the one taken
    /// when it was written: the bytes read, or the damage found. A file
    /// replaced meanwhile is read whole from the handle opened first.
    pub async fn verify(&self, chunk: usize, pause: std::time::Duration) -> Result<u64, String> {
        use tokio::io::AsyncReadExt;
        let path = self.dir.join(SNAPSHOT_FILE);
        let (file, expected) = {
            let current = self.current.0.lock();
            let Some((_, crc)) = current.as_ref() else {
                return Ok(0);
            };
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
            (file, *crc)
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0; chunk.max(4096)];
        let mut total = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
            tokio::time::sleep(pause).await;
        }
        let computed = hasher.finalize();
        if computed != expected {
            return Err(format!(
                "{}: checksum mismatch (written {expected:08x}, read back {computed:08x}): \
                 changed on disk",
                path.display()
            ));
        }
        Ok(total)
    }
}

/// A reader or writer that takes the CRC-32 of the bytes passing through.
struct Crc<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T> Crc<T> {
    fn new(inner: T) -> Self {
        Crc {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

impl<T: std::io::Write> std::io::Write for Crc<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<T: std::io::Read> std::io::Read for Crc<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The bytes of a snapshot, as stored on disk and sent to peers: read
/// back app by app into the registry they hold ([`Thawed`]).
#[derive(Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, Member>,
    /// The sum of the instances' hashes when written; none in snapshots
    /// written before it was recorded.
    #[serde(default)]
    instances_sum: Option<Sum>,
    registry: Thawed,
}

/// A [`SnapshotFile`] as it is written: from the registry frozen when
/// openraft asked, which shares its apps rather than copying them.
#[derive(Serialize)]
struct SnapshotFileOut<'a> {
    meta: &'a SnapshotMeta<NodeId, Member>,
    /// Always some: written as [`SnapshotFile`] reads it.
    instances_sum: Option<Sum>,
    registry: &'a Frozen,
}

/// The state machine; owned by openraft's state machine task.
///
/// Snapshots live in files and travel as files: built by serialising the
/// registry straight to disk, sent to a follower from the file, received
/// into [`INCOMING_FILE`] and read back from it, so no snapshot is ever
/// held whole in memory as bytes.
pub struct StateMachine {
    local: Arc<LocalRegistry>,
    dir: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    built: u64,
    /// The meta of the snapshot in [`SNAPSHOT_FILE`], if there is one.
    current: Current,
    /// Told each snapshot's size: the next one needs as much room.
    space: SpaceGuard,
    metrics: SnapshotMetrics,
    /// What was found wrong with the snapshot loaded at start, if anything.
    damage: Option<String>,
}

/// What snapshots are measured by.
#[derive(Clone)]
pub struct SnapshotMetrics {
    pub build_seconds: Histogram,
    pub install_seconds: Histogram,
    pub bytes: Gauge,
}

impl StateMachine {
    /// Opens the state machine over `local`, restoring the last snapshot
    /// found in `dir`.
    pub fn open(
        dir: &Path,
        local: Arc<LocalRegistry>,
        space: SpaceGuard,
        metrics: SnapshotMetrics,
    ) -> anyhow::Result<Self> {
        let mut sm = StateMachine {
            local,
            dir: dir.to_path_buf(),
            last_applied: None,
            membership: StoredMembership::default(),
            built: 0,
            current: Current::default(),
            space,
            metrics,
            damage: None,
        };
        let path = dir.join(SNAPSHOT_FILE);
        if path.exists() {
            let started = Instant::now();
            let (file, size, crc) = read_snapshot(&path).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt or truncated ({e}): refusing to start without the \
                     registry it holds; restore it from a backup, or move the data \
                     directory away and add this node back as a new one",
                    path.display()
                )
            })?;
            sm.space.snapshot_written(size);
            sm.metrics.bytes.set(size as i64);
            sm.last_applied = file.meta.last_log_id;
            sm.membership = file.meta.last_membership.clone();
            sm.local
                .restore(file.registry, file.meta.last_log_id.map(position));
            let read_back = sm.local.read().instances_sum();
            if let Some(written) = file.instances_sum.filter(|w| *w != read_back) {
                sm.damage = Some(format!(
                    "{} holds instances whose hashes sum to {}, but they summed to {} when it \
                     was written: changed on disk",
                    path.display(),
                    read_back.hex(),
                    written.hex()
                ));
            }
            tracing::info!(
                size,
                instances = sm.local.read().len(),
                ms = started.elapsed().as_millis() as u64,
                "snapshot read"
            );
            *sm.current.0.lock() = Some((file.meta, crc));
        }
        Ok(sm)
    }

    /// What was found wrong with the snapshot loaded at start, if anything:
    /// the node must not serve from it.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// What the scrub checks the snapshot file against.
    pub fn check(&self) -> SnapshotCheck {
        SnapshotCheck {
            dir: self.dir.clone(),
            current: self.current.clone(),
        }
    }

    /// The log index the restored snapshot covers.
    pub fn applied_index(&self) -> Option<u64> {
        self.last_applied.map(|l| l.index)
    }

    /// The members (voters and learners) of the membership applied here.
    pub fn members(&self) -> Vec<(NodeId, Member)> {
        self.membership
            .membership()
            .nodes()
            .map(|(id, member)| (*id, member.clone()))
            .collect()
    }
}

/// Reads a snapshot file as it streams from disk (never whole in memory:
/// next to the registry it holds, that would be its size again), with its
/// size and CRC-32.
fn read_snapshot(path: &Path) -> std::io::Result<(SnapshotFile, u64, u32)> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = Crc::new(file);
    let mut buffered = BufReader::with_capacity(1 << 20, &mut reader);
    // A frame (this build) starts with its version; JSON (earlier builds,
    // read and replaced by the next snapshot) with `{`.
    let json = buffered.fill_buf()?.first() == Some(&b'{');
    let parsed: SnapshotFile = if json {
        serde_json::from_reader(buffered).map_err(io_error)?
    } else {
        let parsed = wire::read(&mut buffered).map_err(io_error)?;
        // Read to its end, as JSON's reader does: the checksum covers the
        // whole file, and bytes past the snapshot are damage.
        let after = std::io::copy(&mut buffered, &mut std::io::sink())?;
        if after > 0 {
            return Err(io_error(format!("{after} bytes after the snapshot")));
        }
        parsed
    };
    Ok((parsed, size, reader.hasher.finalize()))
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Creates (empty) the file a snapshot from the leader is received into.
pub async fn create_incoming(dir: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::File::create(dir.join(INCOMING_FILE)).await
}

/// Builds one snapshot from a copy of the registry taken when openraft asked.
pub struct Builder {
    dir: PathBuf,
    space: SpaceGuard,
    metrics: SnapshotMetrics,
    current: Current,
    meta: SnapshotMeta<NodeId, Member>,
    /// The registry when openraft asked; taken by the build.
    registry: Option<Frozen>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = Instant::now();
        let registry = self
            .registry
            .take()
            .ok_or_else(|| StorageIOError::write_snapshot(None, &io_error("built twice")))?;
        let (dir, current, meta) = (self.dir.clone(), self.current.clone(), self.meta.clone());
        // Serialised straight into the file: no copy of the bytes in memory.
        let (snapshot, size) = tokio::task::spawn_blocking(move || {
            let building = dir.join(BUILDING_FILE);
            let file = SnapshotFileOut {
                meta: &meta,
                instances_sum: Some(registry.instances_sum()),
                registry: &registry,
            };
            let mut crc = 0;
            write_synced(&building, |w| {
                let mut w = Crc::new(w);
                wire::write(&mut w, &file).map_err(io_error)?;
                crc = w.hasher.finalize();
                Ok(())
            })?;
            drop(registry);
            let size = std::fs::metadata(&building)?.len();
            current.replace(&dir, &building, meta, crc)?;
            let snapshot = current
                .open(&dir)?
                .ok_or_else(|| io_error("snapshot vanished"))?;
            Ok::<_, std::io::Error>((snapshot, size))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.space.snapshot_written(size);
        self.metrics
            .build_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.bytes.set(size as i64);
        tracing::info!(last_log_id = ?self.meta.last_log_id, size, "snapshot built");
        Ok(snapshot)
    }
}

/// An entry's index and term.
fn position(log_id: LogId<NodeId>) -> (u64, u64) {
    (log_id.index, log_id.leader_id.term)
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
            // Tests (the `failpoints` feature): a storage failure here
            // stops the Raft core, as a failing disk would.
            fail::fail_point!("apply", |_| Err(StorageIOError::apply(
                entry.log_id,
                &std::io::Error::other("failpoint apply")
            )
            .into()));
            self.last_applied = Some(entry.log_id);
            let (index, term) = (entry.log_id.index, entry.log_id.leader_id.term);
            let outcomes = match entry.payload {
                EntryPayload::Normal(proposal) => self.local.apply(index, term, &proposal.commands),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.local.skip(index, term);
                    Vec::new()
                }
                EntryPayload::Blank => {
                    self.local.skip(index, term);
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
            metrics: self.metrics.clone(),
            current: self.current.clone(),
            meta,
            registry: Some(self.local.read().freeze()),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = create_incoming(&self.dir)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    /// Installs the snapshot received into [`INCOMING_FILE`] (by
    /// `begin_receiving_snapshot`, or by the peer route that streams a
    /// whole snapshot there): checks it parses, moves it over the
    /// snapshot file, and restores the registry from it.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let signature = meta.signature();
        let file = snapshot.into_std().await;
        file.sync_all()
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?;
        drop(file);
        let (dir, current, installed) = (self.dir.clone(), self.current.clone(), meta.clone());
        let (parsed, size) = tokio::task::spawn_blocking(move || {
            let incoming = dir.join(INCOMING_FILE);
            let (parsed, size, crc) = read_snapshot(&incoming)?;
            current.replace(&dir, &incoming, installed, crc)?;
            Ok::<_, std::io::Error>((parsed, size))
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &e))?
        .map_err(|e| StorageIOError::read_snapshot(Some(signature), &e))?;
        self.space.snapshot_written(size);
        self.metrics
            .install_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.bytes.set(size as i64);
        self.local
            .restore(parsed.registry, meta.last_log_id.map(position));
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(last_log_id = ?meta.last_log_id, size, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.current
            .open(&self.dir)
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Command, Metadata, Registration, Registry, Status};

    fn registry() -> Registry {
        let mut r = Registry::default();
        for i in 0..20 {
            r.apply(&Command::Register {
                registration: Registration {
                    region: "sh".into(),
                    zone: "sh001".into(),
                    env: "dev".into(),
                    appid: format!("app{}", i % 3),
                    hostname: format!("h{i}"),
                    addrs: vec!["http://10.0.0.1:80".into()],
                    version: String::new(),
                    metadata: Metadata::new(),
                    status: Status::Up,
                },
                at: 100 + i,
            });
        }
        r
    }

    fn file(r: &Registry) -> (SnapshotMeta<NodeId, Member>, Frozen) {
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "s-1".into(),
        };
        (meta, r.freeze())
    }

    #[test]
    fn a_snapshot_is_read_as_a_frame_and_as_the_json_earlier_builds_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry();
        let (meta, frozen) = file(&r);
        let out = SnapshotFileOut {
            meta: &meta,
            instances_sum: Some(frozen.instances_sum()),
            registry: &frozen,
        };
        let framed = dir.path().join("framed");
        let mut bytes = Vec::new();
        wire::write(&mut bytes, &out).unwrap();
        std::fs::write(&framed, &bytes).unwrap();
        let json = dir.path().join("json");
        std::fs::write(&json, serde_json::to_vec(&out).unwrap()).unwrap();
        assert!(bytes.len() < std::fs::metadata(&json).unwrap().len() as usize);
        for path in [&framed, &json] {
            let (read, size, crc) = read_snapshot(path).unwrap();
            let whole = std::fs::read(path).unwrap();
            assert_eq!(size, whole.len() as u64);
            assert_eq!(crc, crc32fast::hash(&whole), "the checksum covers the file");
            assert_eq!(read.instances_sum, Some(frozen.instances_sum()));
            let mut back = Registry::default();
            back.restore(read.registry);
            assert_eq!(back.to_snapshot(), r.to_snapshot());
        }
        // Cut short, or with bytes after it: refused.
        std::fs::write(&framed, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read_snapshot(&framed).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&framed, &longer).unwrap();
        let Err(e) = read_snapshot(&framed) else {
            panic!("read with a byte after it");
        };
        let e = e.to_string();
        assert!(e.contains("after the snapshot"), "{e}");
    }
}
