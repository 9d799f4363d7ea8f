//! The import: while this node leads, it keeps what this cluster holds of
//! an original equal to what the original holds. A whole copy
//! (`fetch/all`) first and then every `full_every`, compared and only the
//! differences proposed; between them, long polls on every app the
//! original has (one per env and group of apps, with the apps'
//! `latest_timestamp` cursors), and each app a poll reports changed is
//! fetched whole (`fetchs`, waiting instances too) and compared. Changes
//! go through this cluster's log in batches, each naming the batch it
//! follows, so a batch proposed by two leaders is applied once.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use super::client::{in_queries, Original, Polled};
use super::diff;
use super::status::{Direction, Link, State};
use crate::auth::Origin;
use crate::clock::now;
use crate::cluster::batches::split_by_size;
use crate::cluster::leader_watch::leading;
use crate::cluster::writer::Writer;
use crate::local::LocalRegistry;
use crate::raft::{NodeId, Raft};
use crate::registry::zones::ZoneChange;
use crate::registry::{Command, Limits, Timestamp, CLUSTER_APPID};
use crate::shutdown::stopped;

/// The apps of each env the original holds, with the timestamp each was
/// last seen at: the polls' cursors.
type Cursors = BTreeMap<String, BTreeMap<String, Timestamp>>;

type Held = Pin<Box<dyn Future<Output = (String, Vec<String>, anyhow::Result<Polled>)> + Send>>;

/// What importing from one original needs.
pub struct Import {
    pub name: String,
    pub original: Arc<Original>,
    pub raft: Raft,
    pub me: NodeId,
    pub local: Arc<LocalRegistry>,
    pub writer: Writer,
    pub link: Arc<Link>,
    pub limits: Limits,
    /// How often the whole registry is compared (apps that appear, and
    /// apps that empty, which wake no poll).
    pub full_every: Duration,
    /// The pause after a failure.
    pub retry: Duration,
    /// The `hostname` this node polls the original under (a number added
    /// per poll: the original shares one channel per hostname).
    pub hostname: String,
    /// How long a whole comparison that would remove over
    /// [`MASS_REMOVAL_PERCENT`] of what is imported at once holds those
    /// removals back (an original node that lost its registry).
    pub mass_removal_hold: Duration,
    /// Whether this link exports too: own instances the original lost
    /// are then registered there again as soon as a comparison sees it.
    pub export: bool,
}

/// A whole comparison is due at most once per this many times as long as
/// the last one took: at most 5 % of the leader's time goes to them,
/// however large the original's registry.
pub const FULL_DUTY: u32 = 20;

/// A whole comparison removing more than this share of the imported
/// instances at once (and more than one) is held back: the original's own
/// self-preservation threshold, 15 %.
pub const MASS_REMOVAL_PERCENT: usize = 15;

/// Whether removing `removals` of `held` imported instances at once is a
/// mass removal, held back.
pub fn mass_removal(removals: usize, held: usize) -> bool {
    removals > 1 && removals * 100 > held * MASS_REMOVAL_PERCENT
}

impl Import {
    /// Imports while this node leads, until the node stops.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = leading(&self.raft, self.me) => {}
            }
            self.link.state(Direction::Import, State::Syncing);
            let failed_at = Instant::now();
            let result = tokio::select! {
                _ = stopped(&mut stop) => return,
                r = self.follow() => r,
            };
            match result {
                Ok(()) => self.link.state(Direction::Import, State::Standby),
                Err(e) => {
                    tracing::warn!(upstream = %self.name, "import: {e:#}");
                    self.link
                        .failed(Direction::Import, format!("{e:#}"), failed_at);
                    tokio::time::sleep(self.retry).await;
                }
            }
        }
    }

    fn leads(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.me)
    }

    /// One stretch of leadership: a whole copy, then polls, until this
    /// node no longer leads (`Ok`) or a call fails.
    async fn follow(&self) -> anyhow::Result<()> {
        let mut cursors = Cursors::new();
        let mut mass_since = None;
        let mut next_full = self.compare_all(&mut cursors, &mut mass_since).await?;
        let mut serial = 0u64;
        let mut polls = self.polls(&cursors, &mut serial);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !self.leads() {
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep_until(next_full) => {
                    let before: BTreeSet<(String, String)> = apps(&cursors);
                    next_full = self.compare_all(&mut cursors, &mut mass_since).await?;
                    if apps(&cursors) != before {
                        // New apps polled too (and gone ones no more).
                        polls = self.polls(&cursors, &mut serial);
                    }
                }
                Some((env, appids, answer)) = polls.next() => {
                    serial += 1;
                    match answer? {
                        Polled::NotModified => {}
                        Polled::Changed(stamps) => {
                            self.link.behind(Direction::Import, Instant::now());
                            self.compare_apps(&env, stamps, &mut cursors).await?;
                        }
                    }
                    let group = cursors
                        .get(&env)
                        .map(|apps| {
                            appids
                                .iter()
                                .filter_map(|a| apps.get(a).map(|t| (a.clone(), *t)))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    if !group.is_empty() {
                        polls.push(self.poll(env, group, serial));
                    }
                }
            }
        }
    }

    /// A long poll on one group of apps of one env.
    fn poll(&self, env: String, group: Vec<(String, Timestamp)>, serial: u64) -> Held {
        let original = self.original.clone();
        let hostname = format!("{}-{serial}", self.hostname);
        Box::pin(async move {
            let answer = original.polls(&env, &hostname, &group).await;
            (env, group.into_iter().map(|(a, _)| a).collect(), answer)
        })
    }

    /// Polls on every app of every env, in groups, each under a hostname
    /// of its own (`serial` counts them).
    fn polls(&self, cursors: &Cursors, serial: &mut u64) -> FuturesUnordered<Held> {
        let held = FuturesUnordered::new();
        for (env, apps) in cursors {
            let apps: Vec<(String, Timestamp)> =
                apps.iter().map(|(a, t)| (a.clone(), *t)).collect();
            for group in in_queries(&apps) {
                *serial += 1;
                held.push(self.poll(env.clone(), group, *serial));
            }
        }
        held
    }

    /// The whole original compared with what is held of it; when the next
    /// comparison is due: after `full_every`, or, when a comparison takes
    /// long (a large registry), [`FULL_DUTY`] times as long as this one.
    async fn compare_all(
        &self,
        cursors: &mut Cursors,
        mass_since: &mut Option<Instant>,
    ) -> anyhow::Result<tokio::time::Instant> {
        let seen_at = Instant::now();
        let read = self.original.fetch_all().await?;
        let mut seen = Cursors::new();
        for i in &read.instances {
            if *i.appid == *CLUSTER_APPID {
                continue;
            }
            let t = seen
                .entry(i.env.to_string())
                .or_default()
                .entry(i.appid.to_string())
                .or_insert(0);
            *t = (*t).max(i.latest_timestamp);
        }
        // A cursor a poll moved further stays.
        for (env, apps) in &mut seen {
            for (appid, t) in apps.iter_mut() {
                if let Some(known) = cursors.get(env).and_then(|a| a.get(appid)) {
                    *t = (*t).max(*known);
                }
            }
        }
        *cursors = seen;
        let (mut changes, refused) = self.compare(|_| true, read.instances).await?;
        let held = self
            .local
            .read()
            .upstreams()
            .get(&self.name)
            .map_or(0, |u| u.keys.len());
        let removals = changes
            .iter()
            .filter(|c| matches!(c, ZoneChange::Remove(_)))
            .count();
        if !mass_removal(removals, held) {
            *mass_since = None;
        } else if mass_since.get_or_insert(seen_at).elapsed() < self.mass_removal_hold {
            tracing::warn!(
                upstream = %self.name,
                removals,
                imported = held,
                hold_s = self.mass_removal_hold.as_secs(),
                "the original dropped many instances at once (a node that lost its registry?): \
                 they stay here until it holds still that long"
            );
            changes.retain(|c| !matches!(c, ZoneChange::Remove(_)));
        }
        self.propose(changes, refused + read.unreadable, seen_at)
            .await?;
        let took = seen_at.elapsed();
        Ok(tokio::time::Instant::now() + self.full_every.max(took * FULL_DUTY))
    }

    /// Some apps of one env the original reported changed, fetched whole
    /// and compared.
    async fn compare_apps(
        &self,
        env: &str,
        stamps: BTreeMap<String, Timestamp>,
        cursors: &mut Cursors,
    ) -> anyhow::Result<()> {
        let seen_at = Instant::now();
        let appids: Vec<String> = stamps.keys().cloned().collect();
        let mut read = super::client::Read::default();
        let mut fetched = BTreeMap::new();
        for group in in_queries(&stamps.into_iter().collect::<Vec<_>>()) {
            let ids: Vec<String> = group.into_iter().map(|(a, _)| a).collect();
            let (r, s) = self.original.fetchs(env, &ids).await?;
            read.instances.extend(r.instances);
            read.unreadable += r.unreadable;
            fetched.extend(s);
        }
        let apps = cursors.entry(env.to_string()).or_default();
        for appid in &appids {
            match fetched.get(appid) {
                Some(t) => {
                    apps.insert(appid.clone(), *t);
                }
                // Gone meanwhile: the next whole comparison finds it again.
                None => {
                    apps.remove(appid);
                }
            }
        }
        let scope: BTreeSet<&str> = appids.iter().map(String::as_str).collect();
        let (changes, refused) = self
            .compare(
                |k| k.env == env && scope.contains(k.appid.as_str()),
                read.instances,
            )
            .await?;
        self.propose(changes, refused + read.unreadable, seen_at)
            .await
    }

    /// What differs within `scope` between what is held here (current:
    /// confirmed with the cluster first) and `theirs`; own instances the
    /// original lost are registered there again meanwhile. The changes,
    /// and how many of theirs were past this cluster's limits.
    async fn compare(
        &self,
        scope: impl Fn(&crate::registry::InstanceKey) -> bool,
        theirs: Vec<crate::registry::Instance>,
    ) -> anyhow::Result<(Vec<ZoneChange>, usize)> {
        super::confirmed(&self.raft).await?;
        let diff::Diff {
            changes,
            refused,
            lost,
        } = {
            let registry = self.local.read();
            diff::changes(&registry, &self.name, scope, theirs, &self.limits)
        };
        self.register_again(lost).await;
        Ok((changes, refused))
    }

    /// Registers again, at once, own instances exported there that the
    /// original lost (when this link exports): its consumers would miss
    /// them until the next renew otherwise.
    async fn register_again(&self, lost: Vec<crate::registry::InstanceKey>) {
        if !self.export || lost.is_empty() {
            return;
        }
        let instances: Vec<_> = {
            let registry = self.local.read();
            lost.iter()
                .filter_map(|k| registry.get(k).cloned())
                .collect()
        };
        let original = &self.original;
        let failed = futures::stream::iter(instances)
            .map(|i| async move { original.register(&i).await.is_err() })
            .buffer_unordered(16)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        tracing::info!(
            upstream = %self.name,
            lost = lost.len(),
            failed,
            "own instances the original lost registered there again"
        );
    }

    /// Proposes `changes` in batches that each fit an entry.
    async fn propose(
        &self,
        changes: Vec<ZoneChange>,
        left_out: usize,
        seen_at: Instant,
    ) -> anyhow::Result<()> {
        if left_out > 0 {
            tracing::debug!(
                upstream = %self.name,
                left_out,
                "instances of the original past this cluster's limits, or unreadable, are not imported"
            );
        }
        if changes.is_empty() {
            self.link.in_step(Direction::Import, 0);
            return Ok(());
        }
        self.link.behind(Direction::Import, seen_at);
        let batches = split_by_size(
            changes.into_iter(),
            ZoneChange::approx_bytes,
            self.writer.entry_bytes() / 2,
        );
        let n = batches.len() as u64;
        for changes in batches {
            let from = self
                .local
                .read()
                .upstreams()
                .get(&self.name)
                .map_or(0, |u| u.cursor);
            let command = Command::UpstreamApply {
                upstream: self.name.clone(),
                from,
                changes,
                at: now(),
            };
            match self.writer.write(command, Origin::Cluster).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => anyhow::bail!("a batch not applied: {e}"),
                Err(e) => anyhow::bail!("a batch not proposed: {e}"),
            }
        }
        self.link.in_step(Direction::Import, n);
        Ok(())
    }
}

fn apps(cursors: &Cursors) -> BTreeSet<(String, String)> {
    cursors
        .iter()
        .flat_map(|(env, apps)| apps.keys().map(move |a| (env.clone(), a.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mass_removal_is_over_fifteen_percent_and_more_than_one() {
        assert!(!mass_removal(1, 1), "the last instance of a small import");
        assert!(!mass_removal(15, 100));
        assert!(mass_removal(16, 100));
        assert!(mass_removal(2, 3));
        assert!(!mass_removal(0, 0));
    }
}
