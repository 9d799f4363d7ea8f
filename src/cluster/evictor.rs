//! The leader's eviction rounds: instances silent past the threshold are
//! removed through the log, so every replica evicts the same instances at
//! the same log position. Followers never evict.

use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::batches::keys_in_entries;
use super::renewer::RenewLedger;
use super::writer::Writer;
use crate::auth::Origin;
use crate::clock::now;
use crate::local::LocalRegistry;
use crate::raft::{NodeId, Raft};
use crate::registry::eviction::{Policy, Preservation};
use crate::registry::{Applied, Command, Timestamp};

/// What the evictor shares with the admin status.
#[derive(Default)]
pub struct EvictionState {
    /// The last round's self-preservation reading (leader only).
    pub preservation: Mutex<Option<Preservation>>,
    /// Instances this node evicted as leader (shares the metric's count).
    pub evictions: Counter,
}

/// Runs an eviction round every `every` while this node leads.
#[allow(clippy::too_many_arguments)]
pub async fn evict_silent(
    raft: Raft,
    me: NodeId,
    local: Arc<LocalRegistry>,
    ledger: Arc<RenewLedger>,
    writer: Writer,
    policy: Policy,
    every: Duration,
    state: Arc<EvictionState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut leading_since: Option<(Instant, Timestamp)> = None;
    let mut was_protecting = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
        if raft.metrics().borrow().current_leader != Some(me) {
            leading_since = None;
            *state.preservation.lock() = None;
            continue;
        }
        let (since, grace_from) = *leading_since.get_or_insert_with(|| (Instant::now(), now()));
        let at = now();
        let pending = ledger.pending();
        let (preservation, keys) = {
            let registry = local.read();
            // Only instances that renewed once are expected to renew: a
            // flood of registrations that never renew cannot hold back
            // eviction (of themselves, and of everyone else's dead).
            let p = policy.preservation(
                registry.renewing_len(),
                ledger.seen_in_window(),
                since.elapsed(),
            );
            let keys = policy.choose(&registry, at, grace_from, &pending, p.protecting, &mut rng);
            (p, keys)
        };
        if preservation.protecting != was_protecting {
            was_protecting = preservation.protecting;
            if preservation.protecting {
                tracing::warn!(
                    seen = preservation.seen,
                    expected = preservation.expected,
                    "self-preservation on: too few renews, evicting only instances silent past the ceiling"
                );
            } else {
                tracing::info!(
                    seen = preservation.seen,
                    expected = preservation.expected,
                    "self-preservation off"
                );
            }
        }
        *state.preservation.lock() = Some(preservation);
        if keys.is_empty() {
            continue;
        }
        let silent_since = policy.silent_since(at, preservation.protecting);
        let entry_bytes = writer.entry_bytes();
        let mut evicted = 0;
        // A round of many keys goes as several commands, each fitting one
        // log entry, one after the other.
        for keys in keys_in_entries(keys, entry_bytes) {
            let command = Command::Evict {
                keys,
                silent_since,
                at,
            };
            match writer.write(command, Origin::Cluster).await {
                Ok(Ok(Applied::Evicted(gone))) => evicted += gone.len(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("eviction not replicated: {e}");
                    break;
                }
            }
        }
        if evicted > 0 {
            state.evictions.inc_by(evicted as u64);
            tracing::info!(
                count = evicted,
                protecting = preservation.protecting,
                "evicted silent instances"
            );
        }
    }
}
