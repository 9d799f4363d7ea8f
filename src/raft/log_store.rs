//! The Raft log, vote and commit point in sled.
//!
//! Appends are written to sled at once (so readers see them) and made
//! durable by one flusher task that fsyncs once for every append that
//! arrived while the previous fsync ran: many writes, one disk flush.
//! The entries appended last are also kept decoded ([`Recent`]), so the
//! reads Raft makes right after an append (to apply it, to replicate it)
//! do not decode them again.
//! It counts its flushes and appended entries, so an operator (or a
//! benchmark) can see how many disk flushes the write load costs.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageIOError, Vote};
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

use super::framing;
use super::recent::Recent;
use super::{NodeId, StorageError, TypeConfig};

/// The bytes of log entries kept decoded after they are appended: about a
/// second of the heaviest write load, which is what applying and
/// replicating them takes unless a follower is far behind.
const RECENT_BYTES: usize = 8 << 20;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
/// The records start-up checks read, opened without starting the store's
/// tasks (so a refused start leaves nothing holding the database).
pub struct Records {
    logs: sled::Tree,
    meta: sled::Tree,
}

impl Records {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Records {
            logs: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
        })
    }

    /// Whether the store holds nothing at all: no vote, no entry.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty() && self.logs.is_empty()
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, String> {
        let Some(raw) = self.meta.get(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| format!("record {:?} is corrupt: {e}", String::from_utf8_lossy(key)))
    }

    /// The index up to which the log was compacted, if it was.
    pub fn purged_index(&self) -> Result<Option<u64>, String> {
        Ok(self.read::<LogId<NodeId>>(LAST_PURGED)?.map(|l| l.index))
    }

    /// Reads back everything the store holds and checks it before the
    /// node starts on it: the vote and commit point decode; every entry's
    /// checksum holds, it decodes and sits under its own index; none is
    /// missing between the compaction point and the last. Answers how
    /// many entries were checked, or the first damage found.
    pub fn scrub(&self) -> Result<u64, String> {
        self.read::<Vote<NodeId>>(VOTE)?;
        self.read::<Option<LogId<NodeId>>>(COMMITTED)?;
        let purged = self.purged_index()?;
        let first = self.logs.first().map_err(|e| e.to_string())?;
        if let (Some(purged), Some((first, _))) = (purged, first) {
            let first = key_index(&first).unwrap_or(0);
            if first > purged + 1 {
                return Err(format!(
                    "log entries {} to {} are missing (compacted up to {purged})",
                    purged + 1,
                    first - 1
                ));
            }
        }
        let (mut total, mut from) = (0, Some(0));
        while let Some(at) = from {
            let (checked, next) = check_entries(&self.logs, at, 4096, true)?;
            // A gap between two batches: the entry after the last checked
            // must be the next one.
            if let Some(next) = next {
                if let Some(Ok((key, _))) = self.logs.range(index_key(next)..).next() {
                    let found = key_index(&key).unwrap_or(next);
                    if found != next {
                        return Err(format!("log entries {next} to {} are missing", found - 1));
                    }
                }
            }
            total += checked;
            from = next;
        }
        Ok(total)
    }
}

/// What the log store has done since the node started; both counts only
/// grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    /// Disk flushes (fsyncs) of the log: one per group of appends, one per
    /// vote saved, one per truncation.
    pub flushes: u64,
    /// Log entries appended.
    pub appended_entries: u64,
}

struct Counters {
    flushes: AtomicU64,
    appended_entries: AtomicU64,
    /// Each flush's time, for the metrics.
    flush_seconds: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            flushes: AtomicU64::default(),
            appended_entries: AtomicU64::default(),
            flush_seconds: crate::telemetry::latency(),
        }
    }
}

impl Counters {
    fn flushed(&self, took: Duration) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_seconds.observe(took.as_secs_f64());
    }
}

/// The log store; cheap to clone, every clone sees the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
    counters: Arc<Counters>,
    recent: Arc<parking_lot::Mutex<Recent>>,
}

impl LogStore {
    /// Opens the log trees of `db` and starts the flusher task, which ends
    /// when the last clone of the store is dropped.
    pub fn open(db: &sled::Db, flush_seconds: Histogram) -> Result<Self, sled::Error> {
        let (flusher, pending) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters {
            flush_seconds,
            ..Counters::default()
        });
        tokio::spawn(flush_in_groups(db.clone(), pending, counters.clone()));
        Ok(LogStore {
            db: db.clone(),
            logs: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            flusher,
            counters,
            recent: Arc::new(parking_lot::Mutex::new(Recent::new(RECENT_BYTES))),
        })
    }

    /// Flushes and appended entries so far.
    pub fn stats(&self) -> StorageStats {
        StorageStats {
            flushes: self.counters.flushes.load(Ordering::Relaxed),
            appended_entries: self.counters.appended_entries.load(Ordering::Relaxed),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageIOError<NodeId>> {
        let Some(raw) = self.meta.get(key).map_err(|e| StorageIOError::read(&e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StorageIOError::read(&e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageIOError<NodeId>> {
        let raw = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        self.meta
            .insert(key, raw)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageIOError<NodeId>> {
        let started = Instant::now();
        let flushed = flush(&self.db).await;
        self.counters.flushed(started.elapsed());
        flushed.map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    /// Checks up to `max` stored entries from index `from` on, as the
    /// start-up scrub does but for gaps (entries compacted or truncated
    /// meanwhile are no damage): how many, and where to go on from.
    pub fn scrub_from(&self, from: u64, max: usize) -> Result<(u64, Option<u64>), String> {
        check_entries(&self.logs, from, max, false)
    }

    /// Bytes the store takes on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// The commit point openraft last recorded here.
    pub fn committed_index(&self) -> Option<u64> {
        self.read_meta::<Option<LogId<NodeId>>>(COMMITTED)
            .ok()
            .flatten()
            .flatten()
            .map(|l| l.index)
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, StorageIOError<NodeId>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(LAST_PURGED)?
            .flatten())
    }
}

/// Makes everything written to `db` so far durable.
///
/// sled 0.34's `flush_async` can lose its wake-up when two flushes are
/// awaited at once (spacejam/sled#1241, #1308), and this store flushes from
/// two places (grouped appends, votes and truncations): a follower
/// truncating its log while appends were being flushed hung its Raft for
/// good. The blocking flush has no such race; it runs on the blocking pool.
pub async fn flush(db: &sled::Db) -> Result<(), sled::Error> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(flushed) => flushed.map(|_| ()),
        Err(e) => Err(sled::Error::Io(std::io::Error::other(e))),
    }
}

/// Calls every waiting append's callback after one flush that covers it.
async fn flush_in_groups(
    db: sled::Db,
    mut pending: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>,
    counters: Arc<Counters>,
) {
    let mut group = Vec::new();
    while pending.recv_many(&mut group, 4096).await > 0 {
        let started = Instant::now();
        let result = flush(&db).await;
        counters.flushed(started.elapsed());
        for callback in group.drain(..) {
            callback.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Removes every entry up to `index`, by key: the keys are known from the
/// first one, so no entry is read. One by one, not as one batch: sled
/// applies a batch under a lock that shuts out every other write to the
/// database, and removing 20,000 entries at once held the log's appends
/// (and so every register) for up to 700 ms. Nothing reads below the
/// purge point recorded first, and an interrupted removal is finished by
/// the next one, which starts from the first entry left.
fn remove_through(logs: &sled::Tree, index: u64) -> Result<(), sled::Error> {
    let Some((first, _)) = logs.first()? else {
        return Ok(());
    };
    let Ok(first) = <[u8; 8]>::try_from(first.as_ref()) else {
        return Ok(());
    };
    for i in u64::from_be_bytes(first)..=index {
        logs.remove(index_key(i))?;
    }
    Ok(())
}

fn decode_entry(key: &[u8], raw: &[u8]) -> Result<Entry<TypeConfig>, StorageIOError<NodeId>> {
    framing::decode(raw).map_err(|e| {
        StorageIOError::read_logs(&std::io::Error::other(format!(
            "log entry {}: {e}",
            key_index(key).map_or("?".to_string(), |i| i.to_string())
        )))
    })
}

fn key_index(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// Reads back up to `max` stored entries from index `from` on and checks
/// each: its checksum, that it decodes, that it is stored under its own
/// index and, with `gaps`, that none is missing between two of them.
/// Answers how many were checked and where to go on from (none past the
/// last), or the first damage found.
fn check_entries(
    logs: &sled::Tree,
    from: u64,
    max: usize,
    gaps: bool,
) -> Result<(u64, Option<u64>), String> {
    let mut checked = 0;
    let mut previous: Option<u64> = None;
    for item in logs.range(index_key(from)..).take(max) {
        let (key, raw) = item.map_err(|e| format!("reading the log: {e}"))?;
        let index = key_index(&key).ok_or_else(|| format!("a log key of {} bytes", key.len()))?;
        let entry = framing::decode(&raw).map_err(|e| format!("log entry {index}: {e}"))?;
        if entry.log_id.index != index {
            return Err(format!(
                "log entry {index}: stored under index {index}, but is entry {}",
                entry.log_id.index
            ));
        }
        if let Some(before) = previous.filter(|b| gaps && *b + 1 != index) {
            return Err(format!(
                "log entries {} to {} are missing",
                before + 1,
                index - 1
            ));
        }
        previous = Some(index);
        checked += 1;
    }
    let next = match previous {
        Some(last) if checked as usize == max => Some(last + 1),
        _ => None,
    };
    Ok((checked, next))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let first = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let past = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.recent.lock().get(first, past) {
            return Ok(entries);
        }
        let start = Bound::Included(index_key(first));
        let end = past.map_or(Bound::Unbounded, |p| Bound::Excluded(index_key(p)));
        let mut entries = Vec::new();
        for item in self.logs.range::<[u8; 8], _>((start, end)) {
            let (key, raw) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(decode_entry(&key, &raw)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self
            .logs
            .last()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((key, raw)) => Some(decode_entry(&key, &raw)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote)?;
        self.flush().await?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.read_meta(VOTE)?)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.write_meta(COMMITTED, &committed)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Entry by entry, not as one sled batch: a batch seals sled's IO
        // buffer before and after it, two writes handed to sled's thread
        // pool (which wakes every idle pool thread for each), on every node
        // for every entry. A crash between two inserts leaves a prefix of
        // the entries (sled recovers writes in order), which Raft allows:
        // none of them was reported flushed yet.
        let mut count = 0;
        for entry in entries {
            let raw = framing::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            let size = raw.len();
            self.logs
                .insert(index_key(entry.log_id.index), raw)
                .map_err(|e| StorageIOError::write_logs(&e))?;
            self.recent.lock().push(entry, size);
            count += 1;
        }
        self.counters
            .appended_entries
            .fetch_add(count, Ordering::Relaxed);
        self.flusher.send(callback).map_err(|_| {
            StorageIOError::write_logs(&std::io::Error::other("log flusher stopped"))
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.recent.lock().truncate(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.logs.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.logs
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flush().await?;
        Ok(())
    }

    /// Records the purge, and removes the entries off Raft's task: openraft
    /// awaits this in the task that commits writes, and removing the tens
    /// of thousands of entries a snapshot makes obsolete took long enough to
    /// stall writes. Nothing reads below the recorded point; an entry a
    /// crash left there is removed by the next purge, which starts from the
    /// first entry.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.write_meta(LAST_PURGED, &Some(log_id))?;
        self.recent.lock().purge(log_id.index);
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = remove_through(&logs, log_id.index) {
                tracing::warn!(index = log_id.index, "removing purged log entries: {e}");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flushes_are_counted() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut store = LogStore::open(&db, crate::telemetry::latency()).unwrap();
        assert_eq!(store.stats(), StorageStats::default());
        store.save_vote(&Vote::new(1, 1)).await.unwrap();
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(
            store.stats(),
            StorageStats {
                flushes: 2,
                appended_entries: 0
            }
        );
        // Every clone counts into the same figures.
        assert_eq!(store.clone().stats().flushes, 2);
    }

    #[test]
    fn removing_through_an_index_leaves_the_rest() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let logs = db.open_tree("raft_log").unwrap();
        for i in 3..=10u64 {
            logs.insert(index_key(i), b"entry".as_slice()).unwrap();
        }
        remove_through(&logs, 6).unwrap();
        let left: Vec<u64> = logs
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
            .collect();
        assert_eq!(left, vec![7, 8, 9, 10]);
        // Again, and past the end: nothing breaks.
        remove_through(&logs, 6).unwrap();
        remove_through(&logs, 20).unwrap();
        assert!(logs.is_empty());
    }
}
