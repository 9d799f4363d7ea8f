//! Moving a fleet off an original discovery cluster: this cluster follows
//! the original (`[[upstream]]` in the configuration) both ways while
//! consumers and providers move over, one batch at a time (see
//! `docs/migration.md`).
//!
//! - [`client`]: the original's public HTTP API, as its SDKs call it;
//! - [`diff`]: what to change here to equal the original (no I/O);
//! - [`import`]: the leader keeping the original's instances here;
//! - [`export`]: the leader keeping this cluster's own instances there;
//! - [`status`]: how the link is doing, for status and metrics.
//!
//! What the replicated state keeps of an original, and who owns which
//! instance, is [`crate::registry::upstream`].

pub mod client;
pub mod diff;
pub mod export;
pub mod import;
pub mod report;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::writer::Writer;
use crate::config::UpstreamConfig;
use crate::local::LocalRegistry;
use crate::raft::{NodeId, Raft};
use crate::registry::Limits;
use crate::telemetry::UpstreamLabels;

/// Waits until this node, still leading, has applied everything committed
/// before now. A new leader's registry may lag its log: work read from it
/// would register there what was cancelled here meanwhile.
pub async fn confirmed(raft: &Raft) -> anyhow::Result<()> {
    raft.ensure_linearizable()
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("not confirmed as the leader: {e}"))
}

/// What the links run with.
pub struct Wiring {
    pub raft: Raft,
    pub me: NodeId,
    /// This node's name: what it polls the original as.
    pub name: String,
    pub local: Arc<LocalRegistry>,
    pub writer: Writer,
    pub limits: Limits,
    pub retry: Duration,
}

/// The status of the link with every configured original, failures
/// counted into `errors`.
pub fn links(
    upstreams: &[UpstreamConfig],
    errors: &Family<UpstreamLabels, Counter>,
) -> Vec<Arc<status::Link>> {
    upstreams
        .iter()
        .map(|u| {
            Arc::new(status::Link::new(
                &u.name,
                u.import,
                u.export,
                errors.clone(),
            ))
        })
        .collect()
}

/// Starts the import and export of every configured original, each
/// reporting to its link (see [`links`], in the same order).
pub fn start(
    upstreams: &[UpstreamConfig],
    links: &[Arc<status::Link>],
    wiring: &Wiring,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for (u, link) in upstreams.iter().zip(links) {
        let original = Arc::new(client::Original::new(
            &u.nodes,
            Duration::from_millis(u.timeout_ms),
            Duration::from_millis(u.poll_timeout_ms),
        )?);
        if u.import {
            let import = Arc::new(import::Import {
                name: u.name.clone(),
                original: original.clone(),
                raft: wiring.raft.clone(),
                me: wiring.me,
                local: wiring.local.clone(),
                writer: wiring.writer.clone(),
                link: link.clone(),
                limits: wiring.limits,
                full_every: Duration::from_millis(u.full_every_ms),
                retry: wiring.retry,
                hostname: format!("raft-discovery-{}", wiring.name),
                mass_removal_hold: Duration::from_millis(u.mass_removal_hold_ms),
                export: u.export,
            });
            tasks.spawn(import.run(stop.clone()));
        }
        if u.export {
            let export = Arc::new(export::Export {
                name: u.name.clone(),
                original,
                raft: wiring.raft.clone(),
                me: wiring.me,
                local: wiring.local.clone(),
                writer: wiring.writer.clone(),
                link: link.clone(),
                every: Duration::from_millis(u.export_every_ms),
                renew_every: Duration::from_millis(u.renew_every_ms),
            });
            tasks.spawn(export.run(stop.clone()));
        }
    }
    Ok(())
}
