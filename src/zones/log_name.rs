//! Naming this zone's log. Other zones follow it by cursor, a place in
//! this log; a zone rebuilt from empty data directories starts another log
//! at the same indexes, and a cursor into the old one would skip or repeat
//! changes. So the zone's first leader proposes a random name once; every
//! replica applies it and snapshots keep it, every change and copy streamed
//! carries it, and a receiver whose cursor names another log gets a full
//! copy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Origin;
use crate::cluster::leader_watch::leading;
use crate::cluster::writer::Writer;
use crate::local::LocalRegistry;
use crate::raft::{NodeId, Raft};
use crate::registry::Command;
use crate::shutdown::stopped;

/// Names the log through the writer while this node leads, unless it is
/// named; ends once it is, or when the node stops.
pub async fn name_log(
    raft: Raft,
    me: NodeId,
    local: Arc<LocalRegistry>,
    writer: Writer,
    retry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    while local.read().log().is_none() {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = leading(&raft, me) => {}
        }
        if local.read().log().is_some() {
            return;
        }
        let log = format!("{:032x}", rand::random::<u128>());
        let named = writer.write(Command::NameLog { log: log.clone() }, Origin::Cluster);
        match named.await {
            Ok(Ok(_)) => tracing::info!(log, "this zone's log named"),
            // Named meanwhile by another leader: the loop ends.
            Ok(Err(_)) => {}
            Err(e) => {
                tracing::debug!("naming this zone's log: {e}");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    }
}
