//! Reading back, slowly, what the node stores while it runs: every log
//! entry (its checksum, that it decodes) and the snapshot file (its
//! CRC-32 against the one taken when it was written). A disk that changes
//! what it holds under a running node is found within a round, before the
//! node reads it back to serve or replicate. Damage is treated as a
//! divergence: an ERROR, `discovery_diverged`, reads refused, and the
//! repair ([`super::repair`]) rebuilds the node from its cluster.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::protection::Protection;
use super::repair::{Heard, Tell};
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::SnapshotCheck;
use crate::shutdown::stopped;
use crate::telemetry::Metrics;

/// Log entries read back at once, then a pause.
const ENTRIES_AT_ONCE: usize = 512;

/// Snapshot bytes read back at once, then a pause.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The pause between two batches: about 25,000 entries or 50 MiB of
/// snapshot a second at most, a few percent of one core.
const PAUSE: Duration = Duration::from_millis(20);

/// What the scrub reads and whom it tells.
pub struct Scrub {
    pub log: LogStore,
    pub snapshot: SnapshotCheck,
    pub protection: Arc<Protection>,
    pub metrics: Arc<Metrics>,
    pub repair: Tell,
    /// A round starts this long after the last one ended.
    pub every: Duration,
}

impl Scrub {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let round = tokio::select! {
                _ = stopped(&mut stop) => return,
                round = self.round() => round,
            };
            match round {
                Ok((entries, bytes)) => {
                    self.metrics.scrubs.inc();
                    tracing::debug!(entries, bytes, "storage read back and checked");
                }
                Err(damage) => {
                    let why = format!("stored data is damaged: {damage}");
                    tracing::error!("{why}");
                    self.metrics.diverged.set(1);
                    self.protection.diverge(why.clone());
                    let _ = self.repair.try_send(Heard::Diverged(why));
                    // Nothing more to find: the node is rebuilt or waits
                    // for an operator.
                    return;
                }
            }
        }
    }

    /// One pass over the log and the snapshot.
    async fn round(&self) -> Result<(u64, u64), String> {
        let (mut entries, mut from) = (0, Some(0));
        while let Some(at) = from {
            let log = self.log.clone();
            let (checked, next) =
                tokio::task::spawn_blocking(move || log.scrub_from(at, ENTRIES_AT_ONCE))
                    .await
                    .map_err(|e| e.to_string())??;
            entries += checked;
            from = next;
            tokio::time::sleep(PAUSE).await;
        }
        let bytes = self.snapshot.verify(SNAPSHOT_CHUNK, PAUSE).await?;
        Ok((entries, bytes))
    }
}
