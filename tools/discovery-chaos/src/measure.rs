//! Failover figures: who led at each moment (sampled from every node's
//! status) and how each probe write fared, reduced per fault to the time
//! without a leader and the time until writes succeeded again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cluster::{Cluster, Status};

/// Time between two looks at the cluster's leadership.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// A node's status answered longer ago than this says nothing of now.
const STALE: Duration = Duration::from_millis(250);

/// One look at the cluster.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    /// A node leading with a fresh quorum.
    pub leader: Option<u64>,
    /// The highest term any node reported.
    pub term: u64,
}

/// One probe write.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub started: Instant,
    pub ended: Instant,
    pub acked: bool,
}

/// What was measured, shared with the tasks that measure.
#[derive(Default)]
pub struct Record {
    samples: Mutex<Vec<Sample>>,
    probes: Mutex<Vec<Probe>>,
}

/// The figures of one fault.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Time within the window with no node leading with a quorum.
    pub no_leader: Duration,
    /// From injection to the end of the first acknowledged probe write
    /// sent after it.
    pub writes_back: Option<Duration>,
    /// Median and slowest acknowledged probe write in the window.
    pub write_p50: Option<Duration>,
    pub write_max: Option<Duration>,
    pub failed_writes: usize,
    /// Elections: how far the term moved.
    pub terms: u64,
}

impl Record {
    pub fn probe(&self, probe: Probe) {
        self.probes.lock().push(probe);
    }

    /// Looks at the cluster every 50 ms until `stop`. Each node is asked
    /// on its own, so one that does not answer (paused) does not slow the
    /// look at the others; an answer older than [`STALE`] no longer counts.
    pub async fn sample(self: Arc<Self>, cluster: Arc<Cluster>, stop: watch::Receiver<bool>) {
        let latest: Arc<Mutex<HashMap<u64, (Instant, Status)>>> = Arc::default();
        let mut askers = JoinSet::new();
        for node in cluster.nodes.clone() {
            let (cluster, latest, mut stop) = (cluster.clone(), latest.clone(), stop.clone());
            askers.spawn(async move {
                loop {
                    if let Some(status) = cluster.status(&node).await {
                        latest.lock().insert(node.id, (Instant::now(), status));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            });
        }
        let mut stop = stop;
        loop {
            let sample = {
                let latest = latest.lock();
                let now = Instant::now();
                Sample {
                    at: now,
                    leader: latest
                        .values()
                        .find(|(at, s)| now - *at <= STALE && s.leads(cluster.fresh))
                        .map(|(_, s)| s.id),
                    term: latest.values().map(|(_, s)| s.term).max().unwrap_or(0),
                }
            };
            self.samples.lock().push(sample);
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        while askers.join_next().await.is_some() {}
    }

    /// The figures of the window `[from, to)`.
    pub fn figures(&self, from: Instant, to: Instant) -> Figures {
        figures(&self.samples.lock(), &self.probes.lock(), from, to)
    }
}

pub fn figures(samples: &[Sample], probes: &[Probe], from: Instant, to: Instant) -> Figures {
    // Leadership before the window tells the state at its start.
    let before = samples.iter().rev().find(|s| s.at < from);
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .collect();
    let mut no_leader = Duration::ZERO;
    let mut last = (from, before.and_then(|s| s.leader));
    for s in &inside {
        if last.1.is_none() {
            no_leader += s.at - last.0;
        }
        last = (s.at, s.leader);
    }
    if last.1.is_none() {
        no_leader += to.saturating_duration_since(last.0);
    }
    let term_before = before.map_or(0, |s| s.term);
    let term_after = inside.iter().map(|s| s.term).max().unwrap_or(term_before);

    let window: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.started >= from && p.started < to)
        .collect();
    let writes_back = window
        .iter()
        .filter(|p| p.acked)
        .map(|p| p.ended - from)
        .min();
    let mut latencies: Vec<Duration> = window
        .iter()
        .filter(|p| p.acked)
        .map(|p| p.ended - p.started)
        .collect();
    latencies.sort();
    Figures {
        no_leader,
        writes_back,
        write_p50: latencies.get(latencies.len() / 2).copied(),
        write_max: latencies.last().copied(),
        failed_writes: window.iter().filter(|p| !p.acked).count(),
        terms: term_after.saturating_sub(term_before),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn leaderless_time_and_write_recovery_are_measured_from_injection() {
        let t = Instant::now();
        let sample = |at: u64, leader: Option<u64>, term| Sample {
            at: t + ms(at),
            leader,
            term,
        };
        let samples = [
            sample(0, Some(1), 3),
            sample(100, Some(1), 3),
            // injected at 150
            sample(200, None, 3),
            sample(300, None, 4),
            sample(400, Some(2), 4),
            sample(500, Some(2), 4),
        ];
        let probe = |start: u64, end: u64, acked| Probe {
            started: t + ms(start),
            ended: t + ms(end),
            acked,
        };
        let probes = [
            probe(120, 130, true),
            probe(160, 300, false),
            probe(300, 450, true),
            probe(450, 460, true),
        ];
        let f = figures(&samples, &probes, t + ms(150), t + ms(600));
        // Leader known until the sample at 200 said otherwise; back at 400.
        assert_eq!(f.no_leader, ms(200));
        assert_eq!(f.writes_back, Some(ms(300)));
        assert_eq!(f.failed_writes, 1);
        assert_eq!((f.write_p50, f.write_max), (Some(ms(150)), Some(ms(150))));
        assert_eq!(f.terms, 1);
    }

    #[test]
    fn a_window_that_never_sees_a_leader_is_leaderless_throughout() {
        let t = Instant::now();
        let samples = [Sample {
            at: t,
            leader: None,
            term: 1,
        }];
        let f = figures(&samples, &[], t + ms(10), t + ms(110));
        assert_eq!(f.no_leader, ms(100));
        assert_eq!(f.writes_back, None);
    }
}
