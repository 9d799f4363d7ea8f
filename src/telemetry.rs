//! A node's metrics, in the Prometheus text format (prometheus-client).
//!
//! The handles here are recorded into where things happen (requests, polls,
//! writes, flushes, snapshots); what is a reading of the node's state
//! (Raft indexes, held polls, instances) is set from a [`Sample`] taken
//! when `/metrics` is scraped. This module depends on nothing else of the
//! crate, so every layer may record into it.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    /// The envelope's code (`0`, `-304`, `-404`, ...), else the HTTP status.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    /// `at_once` (a change was there already), `woken` (a change came
    /// while held) or `not_modified` (the hold ran out: `-304`).
    pub answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabels {
    pub env: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub follower: String,
}

/// Another zone, by name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub zone: String,
}

/// What this node holds of another zone, and (on the leader, which
/// follows it) how that zone last answered.
#[derive(Clone, Debug, Default)]
pub struct ZoneSample {
    pub zone: String,
    pub cursor: u64,
    pub instances: usize,
    /// Since a batch from it was last applied; none before the first.
    pub applied_age: Option<Duration>,
    /// Since it last answered (leader only).
    pub last_answer_age: Option<Duration>,
    /// Entries of its log not yet applied here (leader only).
    pub behind: Option<u64>,
    /// Whether the last request to it failed (leader only).
    pub failing: Option<bool>,
}

/// One direction of the link with an original discovery cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    /// `import` or `export`.
    pub direction: &'static str,
}

/// How one direction of a link with an original is doing.
#[derive(Clone, Debug)]
pub struct UpstreamSample {
    pub labels: UpstreamLabels,
    /// 1 in step, 0 syncing or failing, -1 not worked here (off, or not
    /// the leader).
    pub state: i64,
    /// The age of the oldest change not yet carried over.
    pub lag: Duration,
    /// Instances imported from it, or exported to it (replicated: the
    /// same on every node).
    pub instances: usize,
}

/// How a held poll was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollAnswer {
    AtOnce,
    Woken,
    NotModified,
}

/// A reading of the node's state, taken at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub held_polls: usize,
    /// Bytes of rendered fetch answers kept, and the most they may take.
    pub rendered: (usize, usize),
    /// `(env, apps, instances)`.
    pub by_env: Vec<(String, usize, usize)>,
    pub self_preservation: Option<bool>,
    pub protected: bool,
    pub term: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    /// This node sees a quorum (see `cluster::quorum`).
    pub quorum: bool,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Entries each follower is behind the leader (leader only).
    pub follower_lag: Vec<(u64, u64)>,
    pub log_bytes_on_disk: u64,
    pub disk_free_bytes: Option<u64>,
    /// Every other zone.
    pub zones: Vec<ZoneSample>,
    /// Every original discovery cluster followed, each direction.
    pub upstreams: Vec<UpstreamSample>,
}

/// The handles of one endpoint: its latency, and its count per code.
/// Looked up by borrowed strings, so recording a request allocates
/// nothing once an endpoint and code have been seen.
struct EndpointHandles {
    seconds: Histogram,
    by_code: HashMap<String, Counter>,
}

/// Every metric of a node; shared as an `Arc`.
pub struct Metrics {
    registry: Registry,
    endpoints: RwLock<HashMap<String, EndpointHandles>>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<EndpointLabels, Histogram>,
    polls: Family<PollLabels, Counter>,
    poll_wake_seconds: Histogram,
    pub renews: Counter,
    pub evictions: Counter,
    pub access_log_dropped: Counter,
    pub forward_seconds: Histogram,
    pub flush_seconds: Histogram,
    pub snapshot_build_seconds: Histogram,
    pub snapshot_install_seconds: Histogram,
    pub snapshot_bytes: Gauge,
    pub leader_changes: Counter,
    /// 1 while this node's registry differs from its cluster's.
    pub diverged: Gauge,
    /// Check rounds this node compared, and the replicas the leader found
    /// diverged at its last one.
    pub checks: Counter,
    pub replicas_diverged: Gauge,
    /// Rounds of the storage scrub that read everything back intact.
    pub scrubs: Counter,
    /// Rebuilds from the cluster this node finished (counted when its
    /// check agrees again).
    pub rebuilds: Counter,
    held_polls: Gauge,
    rendered_bytes: Gauge,
    rendered_budget_bytes: Gauge,
    apps: Family<EnvLabels, Gauge>,
    instances: Family<EnvLabels, Gauge>,
    self_preservation: Gauge,
    protected: Gauge,
    term: Gauge,
    leader_id: Gauge,
    is_leader: Gauge,
    quorum: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    follower_lag: Family<FollowerLabels, Gauge>,
    log_bytes: Gauge,
    disk_free_bytes: Gauge,
    zone_cursor: Family<ZoneLabels, Gauge>,
    zone_instances: Family<ZoneLabels, Gauge>,
    zone_applied_age: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    zone_last_answer_age: Family<ZoneLabels, Gauge<f64, AtomicU64>>,
    zone_behind: Family<ZoneLabels, Gauge>,
    zone_failing: Family<ZoneLabels, Gauge>,
    /// Batches of changes and full copies this node applied from each
    /// other zone while leading.
    pub zone_batches: Family<ZoneLabels, Counter>,
    pub zone_full_copies: Family<ZoneLabels, Counter>,
    upstream_state: Family<UpstreamLabels, Gauge>,
    upstream_lag: Family<UpstreamLabels, Gauge<f64, AtomicU64>>,
    upstream_instances: Family<UpstreamLabels, Gauge>,
    /// Failed calls to an original, by direction (counted by its link).
    pub upstream_errors: Family<UpstreamLabels, Counter>,
}

/// Latency buckets from 100 µs to about 52 s (doubling).
pub fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("discovery"),
            endpoints: RwLock::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            polls: Family::default(),
            poll_wake_seconds: latency(),
            renews: Counter::default(),
            evictions: Counter::default(),
            access_log_dropped: Counter::default(),
            forward_seconds: latency(),
            flush_seconds: latency(),
            snapshot_build_seconds: latency(),
            snapshot_install_seconds: latency(),
            snapshot_bytes: Gauge::default(),
            leader_changes: Counter::default(),
            diverged: Gauge::default(),
            checks: Counter::default(),
            replicas_diverged: Gauge::default(),
            scrubs: Counter::default(),
            rebuilds: Counter::default(),
            held_polls: Gauge::default(),
            rendered_bytes: Gauge::default(),
            rendered_budget_bytes: Gauge::default(),
            apps: Family::default(),
            instances: Family::default(),
            self_preservation: Gauge::default(),
            protected: Gauge::default(),
            term: Gauge::default(),
            leader_id: Gauge::default(),
            is_leader: Gauge::default(),
            quorum: Gauge::default(),
            last_log_index: Gauge::default(),
            committed_index: Gauge::default(),
            applied_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            follower_lag: Family::default(),
            log_bytes: Gauge::default(),
            disk_free_bytes: Gauge::default(),
            zone_cursor: Family::default(),
            zone_instances: Family::default(),
            zone_applied_age: Family::default(),
            zone_last_answer_age: Family::default(),
            zone_behind: Family::default(),
            zone_failing: Family::default(),
            zone_batches: Family::default(),
            zone_full_copies: Family::default(),
            upstream_state: Family::default(),
            upstream_lag: Family::default(),
            upstream_instances: Family::default(),
            upstream_errors: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "Client requests by endpoint and answer code",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer a client request (polls: including the hold)",
            m.request_seconds.clone(),
        );
        r.register(
            "polls",
            "Polls answered: at_once, woken by a change, or not_modified (-304)",
            m.polls.clone(),
        );
        r.register(
            "poll_wake_seconds",
            "From a change being applied to a held poll it woke being answered",
            m.poll_wake_seconds.clone(),
        );
        r.register("polls_held", "Polls held now", m.held_polls.clone());
        r.register(
            "rendered_bytes",
            "Bytes of rendered fetch answers kept for their next readers",
            m.rendered_bytes.clone(),
        );
        r.register(
            "rendered_budget_bytes",
            "The most the rendered fetch answers kept may take (poll.rendered_mb)",
            m.rendered_budget_bytes.clone(),
        );
        r.register("apps", "Apps in the registry, by env", m.apps.clone());
        r.register(
            "instances",
            "Instances in the registry, by env",
            m.instances.clone(),
        );
        r.register(
            "renews",
            "Renews this node answered (rate() gives renews per second)",
            m.renews.clone(),
        );
        r.register(
            "evictions",
            "Instances evicted by this node as leader",
            m.evictions.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access-log lines dropped because stderr did not keep up",
            m.access_log_dropped.clone(),
        );
        r.register(
            "self_preservation",
            "1 while eviction is held back (leader only; -1 when not leading)",
            m.self_preservation.clone(),
        );
        r.register(
            "protected",
            "1 while the node is catching up and refuses reads (start-up protection)",
            m.protected.clone(),
        );
        r.register("raft_term", "The current Raft term", m.term.clone());
        r.register(
            "raft_leader_id",
            "The leader this node knows (0: none)",
            m.leader_id.clone(),
        );
        r.register("raft_is_leader", "1 on the leader", m.is_leader.clone());
        r.register(
            "quorum",
            "1 while this node sees a quorum: it follows a leader, or it leads and a quorum \
             acknowledged it within the lease; 0 on a leader cut off (it takes no writes) \
             and on a node that knows no leader",
            m.quorum.clone(),
        );
        r.register(
            "raft_last_log_index",
            "The last log index this node holds",
            m.last_log_index.clone(),
        );
        r.register(
            "raft_committed_index",
            "The last log index known committed",
            m.committed_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "The last log index applied to the registry",
            m.applied_index.clone(),
        );
        r.register(
            "raft_snapshot_index",
            "The log index the last snapshot covers",
            m.snapshot_index.clone(),
        );
        r.register(
            "raft_follower_lag_entries",
            "Entries each follower is behind (reported by the leader)",
            m.follower_lag.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Leader changes this node has seen (elections won by anyone)",
            m.leader_changes.clone(),
        );
        r.register(
            "diverged",
            "1 while this node's registry differs from what most of its cluster holds at the same log index (it serves no reads until repaired)",
            m.diverged.clone(),
        );
        r.register(
            "consistency_checks",
            "Consistency checks this node compared with its peers",
            m.checks.clone(),
        );
        r.register(
            "storage_scrubs",
            "Rounds of the storage scrub that read the log and snapshot back intact",
            m.scrubs.clone(),
        );
        r.register(
            "rebuilds",
            "Rebuilds of this node's registry from its cluster, after a divergence or damage, \
             finished since it started",
            m.rebuilds.clone(),
        );
        r.register(
            "replicas_diverged",
            "Replicas the leader found differing from the majority at its last consistency check",
            m.replicas_diverged.clone(),
        );
        r.register(
            "raft_snapshot_build_seconds",
            "Time to build and write a snapshot (_count: snapshots built)",
            m.snapshot_build_seconds.clone(),
        );
        r.register(
            "raft_snapshot_install_seconds",
            "Time to install a received snapshot (_count: snapshots installed)",
            m.snapshot_install_seconds.clone(),
        );
        r.register(
            "raft_snapshot_bytes",
            "Size of the last snapshot built or installed",
            m.snapshot_bytes.clone(),
        );
        r.register(
            "forward_seconds",
            "Time for the leader to answer a write batch this node handed it (_count: batches forwarded)",
            m.forward_seconds.clone(),
        );
        r.register(
            "storage_flush_seconds",
            "Time of one disk flush (fsync) of the Raft log (_count: flushes)",
            m.flush_seconds.clone(),
        );
        r.register(
            "storage_log_bytes",
            "Bytes the Raft log takes on disk",
            m.log_bytes.clone(),
        );
        r.register(
            "storage_disk_free_bytes",
            "Free bytes on the data directory's file system",
            m.disk_free_bytes.clone(),
        );
        r.register(
            "zone_cursor",
            "The other zone's log index this zone's copy of it reflects",
            m.zone_cursor.clone(),
        );
        r.register(
            "zone_instances",
            "Instances of the other zone held here",
            m.zone_instances.clone(),
        );
        r.register(
            "zone_applied_age_seconds",
            "Since a batch from the other zone was last applied (-1: never)",
            m.zone_applied_age.clone(),
        );
        r.register(
            "zone_last_answer_age_seconds",
            "Since the other zone last answered (leader only; -1 elsewhere)",
            m.zone_last_answer_age.clone(),
        );
        r.register(
            "zone_behind_entries",
            "Entries of the other zone's log not yet applied here (leader only; -1 elsewhere)",
            m.zone_behind.clone(),
        );
        r.register(
            "zone_failing",
            "1 while the last request to the other zone failed (leader only; -1 elsewhere)",
            m.zone_failing.clone(),
        );
        r.register(
            "zone_batches",
            "Batches of changes from the other zone this node applied as leader",
            m.zone_batches.clone(),
        );
        r.register(
            "zone_full_copies",
            "Full copies of the other zone this node applied as leader",
            m.zone_full_copies.clone(),
        );
        r.register(
            "upstream_state",
            "The link with an original discovery: 1 in step, 0 syncing or failing, -1 not worked here (off, or not the leader)",
            m.upstream_state.clone(),
        );
        r.register(
            "upstream_lag_seconds",
            "The age of the oldest change not yet carried over to the other side (0: in step)",
            m.upstream_lag.clone(),
        );
        r.register(
            "upstream_instances",
            "Instances imported from the original, or exported to it",
            m.upstream_instances.clone(),
        );
        r.register(
            "upstream_errors",
            "Calls to the original that failed (this node, while leading)",
            m.upstream_errors.clone(),
        );
        m
    }

    /// One client request answered.
    pub fn request(&self, endpoint: &str, code: &str, took: Duration) {
        {
            let endpoints = self.endpoints.read();
            if let Some(e) = endpoints.get(endpoint) {
                if let Some(count) = e.by_code.get(code) {
                    count.inc();
                    e.seconds.observe(took.as_secs_f64());
                    return;
                }
            }
        }
        // First time for this endpoint or code: make its handles (the
        // families keep them; these are clones of the same counters).
        let mut endpoints = self.endpoints.write();
        let e = endpoints
            .entry(endpoint.to_string())
            .or_insert_with(|| EndpointHandles {
                seconds: self
                    .request_seconds
                    .get_or_create(&EndpointLabels {
                        endpoint: endpoint.to_string(),
                    })
                    .clone(),
                by_code: HashMap::new(),
            });
        let count = e.by_code.entry(code.to_string()).or_insert_with(|| {
            self.requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.to_string(),
                    code: code.to_string(),
                })
                .clone()
        });
        count.inc();
        e.seconds.observe(took.as_secs_f64());
    }

    /// One poll answered; `woke_after` is the time since the change that
    /// woke it, for polls woken while held.
    pub fn poll(&self, answer: PollAnswer, woke_after: Option<Duration>) {
        let answer = match answer {
            PollAnswer::AtOnce => "at_once",
            PollAnswer::Woken => "woken",
            PollAnswer::NotModified => "not_modified",
        };
        self.polls.get_or_create(&PollLabels { answer }).inc();
        if let Some(after) = woke_after {
            self.poll_wake_seconds.observe(after.as_secs_f64());
        }
    }

    /// Sets the readings of the node's state.
    pub fn set(&self, s: &Sample) {
        fn gauge(g: &Gauge, v: Option<u64>) {
            g.set(v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
        }
        gauge(&self.held_polls, Some(s.held_polls as u64));
        gauge(&self.rendered_bytes, Some(s.rendered.0 as u64));
        gauge(&self.rendered_budget_bytes, Some(s.rendered.1 as u64));
        self.apps.clear();
        self.instances.clear();
        for (env, apps, instances) in &s.by_env {
            let env = EnvLabels { env: env.clone() };
            self.apps.get_or_create(&env).set(*apps as i64);
            self.instances.get_or_create(&env).set(*instances as i64);
        }
        gauge(&self.self_preservation, s.self_preservation.map(u64::from));
        gauge(&self.protected, Some(u64::from(s.protected)));
        gauge(&self.term, Some(s.term));
        gauge(&self.leader_id, Some(s.leader.unwrap_or(0)));
        gauge(&self.is_leader, Some(u64::from(s.is_leader)));
        gauge(&self.quorum, Some(u64::from(s.quorum)));
        gauge(&self.last_log_index, s.last_log_index);
        gauge(&self.committed_index, s.committed_index);
        gauge(&self.applied_index, s.applied_index);
        gauge(&self.snapshot_index, s.snapshot_index);
        self.follower_lag.clear();
        for (id, lag) in &s.follower_lag {
            gauge(
                &self.follower_lag.get_or_create(&FollowerLabels {
                    follower: id.to_string(),
                }),
                Some(*lag),
            );
        }
        gauge(&self.log_bytes, Some(s.log_bytes_on_disk));
        gauge(&self.disk_free_bytes, s.disk_free_bytes);
        let seconds = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64());
        for z in &s.zones {
            let zone = ZoneLabels {
                zone: z.zone.clone(),
            };
            gauge(&self.zone_cursor.get_or_create(&zone), Some(z.cursor));
            gauge(
                &self.zone_instances.get_or_create(&zone),
                Some(z.instances as u64),
            );
            self.zone_applied_age
                .get_or_create(&zone)
                .set(seconds(z.applied_age));
            self.zone_last_answer_age
                .get_or_create(&zone)
                .set(seconds(z.last_answer_age));
            gauge(&self.zone_behind.get_or_create(&zone), z.behind);
            gauge(
                &self.zone_failing.get_or_create(&zone),
                z.failing.map(u64::from),
            );
        }
        for u in &s.upstreams {
            self.upstream_state.get_or_create(&u.labels).set(u.state);
            self.upstream_lag
                .get_or_create(&u.labels)
                .set(u.lag.as_secs_f64());
            self.upstream_instances
                .get_or_create(&u.labels)
                .set(u.instances as i64);
        }
    }

    /// Everything in the Prometheus text format (0.0.4), as `/metrics`
    /// announces it.
    pub fn encode(&self) -> String {
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &self.registry)
            .expect("writing to a String cannot fail");
        text_format(&open)
    }
}

/// prometheus-client writes OpenMetrics: a counter's family is named
/// without `_total` while its samples carry it, and the text ends with
/// `# EOF`. The Prometheus text format names a counter's family as its
/// samples, and has no end marker: read as that format (as `promtool check
/// metrics` and scrapers that do not ask for OpenMetrics read it), every
/// counter lacked its help text.
fn text_format(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE ", "# UNIT "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                text.push_str(prefix);
                text.push_str(name);
                if counters.contains(name) {
                    text.push_str("_total");
                }
                if !tail.is_empty() {
                    text.push(' ');
                    text.push_str(tail);
                }
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_and_sampled_values_come_out_as_prometheus_text() {
        let m = Metrics::new();
        m.request("/discovery/fetch", "0", Duration::from_millis(2));
        m.request("/discovery/fetch", "0", Duration::from_millis(3));
        m.request("/discovery/poll", "-304", Duration::from_secs(30));
        m.poll(PollAnswer::Woken, Some(Duration::from_millis(4)));
        m.renews.inc_by(5);
        m.set(&Sample {
            held_polls: 7,
            by_env: vec![("dev".into(), 2, 30)],
            term: 3,
            leader: Some(1),
            is_leader: true,
            quorum: true,
            follower_lag: vec![(2, 0), (3, 12)],
            zones: vec![ZoneSample {
                zone: "sh002".into(),
                cursor: 40,
                instances: 9,
                applied_age: Some(Duration::from_millis(1500)),
                ..ZoneSample::default()
            }],
            upstreams: vec![UpstreamSample {
                labels: UpstreamLabels {
                    upstream: "old".into(),
                    direction: "import",
                },
                state: 1,
                lag: Duration::from_millis(250),
                instances: 12,
            }],
            ..Sample::default()
        });
        m.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: "old".into(),
                direction: "export",
            })
            .inc();
        let text = m.encode();
        for line in [
            r#"discovery_http_requests_total{endpoint="/discovery/fetch",code="0"} 2"#,
            r#"discovery_http_requests_total{endpoint="/discovery/poll",code="-304"} 1"#,
            r#"discovery_polls_total{answer="woken"} 1"#,
            "discovery_poll_wake_seconds_count 1",
            "discovery_renews_total 5",
            "discovery_polls_held 7",
            r#"discovery_instances{env="dev"} 30"#,
            r#"discovery_apps{env="dev"} 2"#,
            "discovery_raft_term 3",
            "discovery_raft_is_leader 1",
            "discovery_quorum 1",
            r#"discovery_raft_follower_lag_entries{follower="3"} 12"#,
            r#"discovery_zone_cursor{zone="sh002"} 40"#,
            r#"discovery_zone_instances{zone="sh002"} 9"#,
            r#"discovery_zone_applied_age_seconds{zone="sh002"} 1.5"#,
            r#"discovery_zone_last_answer_age_seconds{zone="sh002"} -1.0"#,
            r#"discovery_zone_failing{zone="sh002"} -1"#,
            r#"discovery_upstream_state{upstream="old",direction="import"} 1"#,
            r#"discovery_upstream_lag_seconds{upstream="old",direction="import"} 0.25"#,
            r#"discovery_upstream_instances{upstream="old",direction="import"} 12"#,
            r#"discovery_upstream_errors_total{upstream="old",direction="export"} 1"#,
            "discovery_self_preservation -1",
            "discovery_raft_applied_index -1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // The text format: a counter's family named as its samples, no
        // OpenMetrics end marker.
        assert!(text.contains("# HELP discovery_renews_total Renews this node answered"));
        assert!(text.contains("# TYPE discovery_renews_total counter"));
        assert!(!text.contains("# EOF"), "{text}");
        for help in text.lines().filter_map(|l| l.strip_prefix("# HELP ")) {
            let name = help.split(' ').next().unwrap();
            assert!(
                text.lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(name)),
                "{name} has help but no sample"
            );
        }
    }
}
