//! The export: while this node leads, this cluster's own instances are
//! registered with the original (again when they change), renewed there,
//! and cancelled there once gone here. What was registered is recorded in
//! the log (each key with the `dirty_timestamp` it had), so the next
//! leader carries on from there: nothing exported is forgotten (it would
//! stay on the original until evicted) and nothing unchanged is
//! registered twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokio::sync::watch;

use super::client::Original;
use super::status::{since_stamp, Direction, Link, State};
use crate::auth::Origin;
use crate::clock::now;
use crate::cluster::batches::split_by_size;
use crate::cluster::leader_watch::leading;
use crate::cluster::writer::Writer;
use crate::local::LocalRegistry;
use crate::raft::{NodeId, Raft};
use crate::registry::{approx_key_bytes, Command, Instance, InstanceKey, Timestamp, CLUSTER_APPID};
use crate::shutdown::stopped;

/// Calls to the original under way at once.
const AT_ONCE: usize = 16;

/// What exporting to one original needs.
pub struct Export {
    pub name: String,
    pub original: Arc<Original>,
    pub raft: Raft,
    pub me: NodeId,
    pub local: Arc<LocalRegistry>,
    pub writer: Writer,
    pub link: Arc<Link>,
    /// The longest time between two comparisons of own instances with
    /// what was exported (one follows every change here besides).
    pub every: Duration,
    /// How often every exported instance is renewed there (the original
    /// evicts after 90 s without).
    pub renew_every: Duration,
}

/// What one round has to do, as read from the registry.
#[derive(Default)]
struct Work {
    /// Own instances not exported as they now are.
    register: Vec<Instance>,
    /// Exported, gone from here: cancelled there.
    cancel: Vec<InstanceKey>,
    /// Exported, now held for the original (its copy won) or another
    /// zone: forgotten, not cancelled.
    forget: Vec<InstanceKey>,
}

impl Export {
    /// Exports while this node leads, until the node stops.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = leading(&self.raft, self.me) => {}
            }
            self.link.state(Direction::Export, State::Syncing);
            // A new leader renews at once: the last one may have died
            // before its round.
            let mut renewed: Option<Instant> = None;
            let mut changed = self.local.feed().subscribe();
            while self.leads() {
                changed.borrow_and_update();
                let failed = self.round().await.err();
                if let Some(e) = &failed {
                    self.link
                        .failed(Direction::Export, format!("{e:#}"), Instant::now());
                }
                if renewed.is_none_or(|at| at.elapsed() >= self.renew_every) {
                    match self.renew().await {
                        Ok(()) => renewed = Some(Instant::now()),
                        Err(e) => {
                            self.link
                                .failed(Direction::Export, format!("{e:#}"), Instant::now())
                        }
                    }
                }
                // The next round at the next change here (a register,
                // cancel, set, eviction), or after `every` at the latest;
                // after a failure, after `every`.
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(self.every) => {}
                    _ = changed.changed(), if failed.is_none() => {}
                }
            }
            self.link.state(Direction::Export, State::Standby);
        }
    }

    fn leads(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.me)
    }

    fn work(&self) -> Work {
        let registry = self.local.read();
        let none = Default::default();
        let exported = registry
            .upstreams()
            .get(&self.name)
            .map_or(&none, |u| &u.exported);
        let mut work = Work::default();
        for i in registry.instances() {
            if *i.appid == *CLUSTER_APPID {
                continue;
            }
            let key = i.key();
            if exported.get(&key) == Some(&i.dirty_timestamp) || registry.is_foreign(&key) {
                continue;
            }
            work.register.push(i.clone());
        }
        for key in exported.keys() {
            if registry.get(key).is_none() {
                work.cancel.push(key.clone());
            } else if registry.is_foreign(key) {
                work.forget.push(key.clone());
            }
        }
        work
    }

    /// Carries every change of own instances over, and records it.
    async fn round(&self) -> anyhow::Result<()> {
        super::confirmed(&self.raft).await?;
        let work = self.work();
        if work.register.is_empty() && work.cancel.is_empty() && work.forget.is_empty() {
            self.link.in_step(Direction::Export, 0);
            return Ok(());
        }
        if let Some(oldest) = work.register.iter().map(|i| i.dirty_timestamp).min() {
            self.link.behind(Direction::Export, since_stamp(oldest));
        }
        if !work.cancel.is_empty() {
            self.link.behind(Direction::Export, Instant::now());
        }
        let original = &self.original;
        let registered: Vec<anyhow::Result<(InstanceKey, Timestamp)>> = stream::iter(work.register)
            .map(|i| async move {
                original.register(&i).await?;
                Ok((i.key(), i.dirty_timestamp))
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        let cancelled: Vec<anyhow::Result<InstanceKey>> = stream::iter(work.cancel)
            .map(|k| async move {
                original.cancel(&k).await?;
                Ok(k)
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        let mut first_error = None;
        let mut exported = Vec::new();
        for r in registered {
            match r {
                Ok(e) => exported.push(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut withdrawn = work.forget;
        for r in cancelled {
            match r {
                Ok(k) => withdrawn.push(k),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let done = (exported.len() + withdrawn.len()) as u64;
        self.record(exported, withdrawn).await?;
        match first_error {
            None => {
                self.link.in_step(Direction::Export, done);
                Ok(())
            }
            Some(e) => {
                self.link.did(Direction::Export, done);
                Err(e)
            }
        }
    }

    /// Records what the original now holds, in entries that each fit.
    async fn record(
        &self,
        exported: Vec<(InstanceKey, Timestamp)>,
        withdrawn: Vec<InstanceKey>,
    ) -> anyhow::Result<()> {
        let max = self.writer.entry_bytes() / 2;
        let mut commands = Vec::new();
        for exported in split_by_size(exported.into_iter(), |(k, _)| approx_key_bytes(k) + 16, max)
        {
            commands.push((exported, Vec::new()));
        }
        for withdrawn in split_by_size(withdrawn.into_iter(), approx_key_bytes, max) {
            commands.push((Vec::new(), withdrawn));
        }
        for (exported, withdrawn) in commands {
            let command = Command::UpstreamExported {
                upstream: self.name.clone(),
                exported,
                withdrawn,
                at: now(),
            };
            match self.writer.write(command, Origin::Cluster).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => anyhow::bail!("recording the export: {e}"),
                Err(e) => anyhow::bail!("recording the export: {e}"),
            }
        }
        Ok(())
    }

    /// Renews every exported instance still own here; one the original
    /// lost (evicted while this cluster could not reach it) is registered
    /// again.
    async fn renew(&self) -> anyhow::Result<()> {
        super::confirmed(&self.raft).await?;
        let keys: Vec<Instance> = {
            let registry = self.local.read();
            registry
                .upstreams()
                .get(&self.name)
                .map(|u| {
                    u.exported
                        .keys()
                        .filter(|k| !registry.is_foreign(k))
                        .filter_map(|k| registry.get(k).cloned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let original = &self.original;
        let results: Vec<anyhow::Result<()>> = stream::iter(keys)
            .map(|i| async move {
                if !original.renew(&i.key()).await? {
                    original.register(&i).await?;
                }
                Ok(())
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        let renewed = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.link.did(Direction::Export, renewed);
        results.into_iter().collect()
    }
}
