//! Watching who leads: counting the leader changes this node sees, for the
//! metrics (each one is an election won, by anyone, and a cluster that
//! keeps electing is one whose writes keep pausing), and waiting until
//! this node leads, for the tasks only a leader runs.

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use crate::raft::{NodeId, Raft};

/// Resolves once `me` leads (at once if it does); never if Raft stops.
pub async fn leading(raft: &Raft, me: NodeId) {
    let mut metrics = raft.metrics();
    if metrics
        .wait_for(|m| m.current_leader == Some(me))
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// Runs until shutdown, adding one to `changes` whenever the known leader
/// changes to another node (not when it is merely lost).
pub async fn count_leader_changes(raft: Raft, changes: Counter, mut stop: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    let mut last = metrics.borrow().current_leader;
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
        let leader = metrics.borrow().current_leader;
        if leader.is_some() && leader != last {
            changes.inc();
            last = leader;
        }
    }
}
