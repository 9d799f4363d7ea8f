//! The fault rounds: aim each fault, inject it, hold it, undo it, wait
//! for the cluster to heal, and keep the figures of the window.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::docker;
use crate::faults::{self, FaultKind, Injected};
use crate::measure::Record;
use crate::report::Round;
use crate::workload::Workload;

/// The note of a round skipped for want of root.
pub const SKIPPED: &str = "skipped: needs root";

/// What the rounds are.
pub struct Plan {
    pub rounds: usize,
    /// Taken in turn.
    pub faults: Vec<FaultKind>,
    pub hold: Duration,
    /// Pause after the cluster is healthy again.
    pub settle: Duration,
    pub heal_timeout: Duration,
}

/// Runs the fault rounds; stops early if the cluster does not heal.
pub async fn fault_rounds(
    plan: &Plan,
    cluster: &Cluster,
    workload: &Workload,
    record: &Record,
    current: &Mutex<Option<Injected>>,
    start: Instant,
) -> Vec<Round> {
    let root = docker::is_root();
    let mut rounds = Vec::new();
    for n in 1..=plan.rounds {
        let kind = plan.faults[(n - 1) % plan.faults.len()];
        let mut round = Round {
            n,
            fault: kind,
            targets: Vec::new(),
            figures: Default::default(),
            no_leader_after_undo: Duration::ZERO,
            forged: None,
            ran: false,
            healed: None,
            note: None,
        };
        if kind.needs_root() && !root {
            round.note = Some(SKIPPED.into());
            rounds.push(round);
            continue;
        }
        let Some(leader) = wait_leader(cluster, plan.heal_timeout).await else {
            round.note = Some("no leader to aim at".into());
            rounds.push(round);
            break;
        };
        let injected = match faults::inject(kind, cluster, leader).await {
            Ok(i) => i,
            Err(e) => {
                say!(start, "round {n}: {} failed to inject: {e:#}", kind.name());
                round.note = Some(format!("not injected: {e:#}"));
                rounds.push(round);
                continue;
            }
        };
        // The fault is in effect once the command that injects it returns.
        let injected_at = Instant::now();
        round.ran = true;
        round.targets.clone_from(&injected.targets);
        let hit: Vec<String> = injected
            .targets
            .iter()
            .map(|id| cluster.node(*id).client.clone())
            .collect();
        if hit.len() < cluster.nodes.len() {
            workload.spare(&hit);
        }
        say!(
            start,
            "round {n}: {} on node {:?} (leader was {leader})",
            kind.name(),
            injected.targets
        );
        *current.lock() = Some(injected);
        if kind.held() {
            tokio::time::sleep(plan.hold).await;
        }
        let injected = current.lock().take();
        let heal_started = Instant::now();
        if let Some(injected) = &injected {
            match faults::heal(cluster, injected).await {
                Ok(Some(forged)) => {
                    say!(start, "round {n}: {}", forged.summary());
                    round.note = Some(forged.summary());
                    round.forged = Some(forged);
                }
                Ok(None) => {}
                Err(e) => round.note = Some(format!("undo failed: {e:#}")),
            }
        }
        round.healed = cluster
            .wait_healthy(plan.heal_timeout)
            .await
            .map(|_| heal_started.elapsed());
        let healthy_at = Instant::now();
        workload.spare(&[]);
        round.figures = record.figures(injected_at, healthy_at);
        round.no_leader_after_undo = record.figures(heal_started, healthy_at).no_leader;
        say!(
            start,
            "round {n}: healed after {:?}; no leader {:?}, writes back after {:?}",
            round.healed,
            round.figures.no_leader,
            round.figures.writes_back
        );
        let healed = round.healed.is_some();
        rounds.push(round);
        if !healed {
            say!(start, "the cluster did not heal: no more faults");
            break;
        }
        tokio::time::sleep(plan.settle).await;
    }
    rounds
}

/// The node leading with its quorum, waiting up to `timeout` for one.
async fn wait_leader(cluster: &Cluster, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(l) = cluster.leader().await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
