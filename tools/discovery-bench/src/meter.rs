//! What a run costs each node: CPU time (from `/proc`) and disk flushes of
//! its log (the `storage` counters of `/admin/status`), read at the start
//! and at the end of the measured window.

use std::fmt::Write;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::cpu;
use crate::discovery::Storage;

/// Every running node's counters, and the bench's own CPU time, at a
/// moment.
pub struct Reading {
    at: Instant,
    nodes: Vec<(u64, Duration, Storage)>,
    bench: Duration,
}

/// Reads the counters of the nodes `ids`.
pub async fn read(cluster: &Cluster, ids: &[u64]) -> Result<Reading> {
    let mut nodes = Vec::new();
    for &id in ids {
        let storage = cluster.status(id).await?.storage;
        nodes.push((id, cluster.server(id)?.cpu_time()?, storage));
    }
    Ok(Reading {
        at: Instant::now(),
        nodes,
        bench: cpu::own_time()?,
    })
}

/// Reads the counters `warmup` from now and again `measure` later.
pub async fn window(
    cluster: &Cluster,
    ids: &[u64],
    warmup: Duration,
    measure: Duration,
) -> Result<(Reading, Reading)> {
    let start = Instant::now();
    tokio::time::sleep_until(start + warmup).await;
    let before = read(cluster, ids).await?;
    tokio::time::sleep_until(start + warmup + measure).await;
    let after = read(cluster, ids).await?;
    Ok((before, after))
}

/// One node's use over a window.
pub struct Usage {
    pub id: u64,
    /// Percent of one core.
    pub cpu: f64,
    pub flushes_per_s: f64,
    pub entries_per_s: f64,
}

/// Each node's use between two readings, and the bench's CPU percent.
pub fn usage(before: &Reading, after: &Reading) -> (Vec<Usage>, f64) {
    let wall = after.at - before.at;
    let secs = wall.as_secs_f64().max(1e-9);
    let nodes = before
        .nodes
        .iter()
        .zip(&after.nodes)
        .map(|((id, cpu0, s0), (_, cpu1, s1))| Usage {
            id: *id,
            cpu: cpu::percent(cpu1.saturating_sub(*cpu0), wall),
            flushes_per_s: s1.flushes.saturating_sub(s0.flushes) as f64 / secs,
            entries_per_s: s1.appended_entries.saturating_sub(s0.appended_entries) as f64 / secs,
        })
        .collect();
    let bench = cpu::percent(after.bench.saturating_sub(before.bench), wall);
    (nodes, bench)
}

/// `leader (node 2) X, follower (node 1) Y, …`, the leader first.
fn per_node(usage: &[Usage], leader: u64, show: impl Fn(&Usage) -> String) -> String {
    let mut out = String::new();
    let ordered = usage
        .iter()
        .filter(|u| u.id == leader)
        .chain(usage.iter().filter(|u| u.id != leader));
    for u in ordered {
        let role = if u.id == leader { "leader" } else { "follower" };
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{role} (node {}) {}", u.id, show(u));
    }
    out
}

/// The CPU of each node as a percentage of one core.
pub fn describe_cpu(usage: &[Usage], leader: u64) -> String {
    per_node(usage, leader, |u| format!("{:.1} %", u.cpu))
}

/// The log flushes and appended entries per second of each node.
pub fn describe_flushes(usage: &[Usage], leader: u64) -> String {
    per_node(usage, leader, |u| {
        format!(
            "{:.1} flushes/s ({:.1} entries/s)",
            u.flushes_per_s, u.entries_per_s
        )
    })
}
