//! The verdict: the cluster's final state judged against what clients were
//! told. Plain logic over the evidence gathered after the run.
//!
//! An instance must be present when a register was acknowledged, nobody
//! tried to cancel it and it was renewed until the end without a silence
//! long enough to be evicted. It must be absent when a cancel was applied
//! (acknowledged or -404) and every register attempt was answered for
//! sure, since an unanswered register may be applied at any later time.
//! Anything else may go either way. Whatever the case, every instance a
//! node holds must be one somebody registered, with the data they sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use crate::history::{Answer, InstanceLog, Key};

/// A renew or register answered this long before the eviction threshold
/// ran out still counts as "maybe evicted": the leader stamps renews in
/// batches and a new leader restarts the count.
const EVICTION_MARGIN: Duration = Duration::from_secs(15);

/// An instance as a node holds it (the fields clients send).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub addrs: Vec<String>,
    pub status: u64,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
}

/// What `/admin/digest` answers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Digest {
    pub applied_index: Option<u64>,
    pub digest: String,
    pub instances: usize,
}

/// One node's final state; `None` where it did not answer.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub node: String,
    pub digest: Option<Digest>,
    pub instances: Option<HashMap<Key, Seen>>,
}

/// An app as a watcher sees it: its timestamp and up instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppState {
    pub latest_timestamp: i64,
    pub hosts: BTreeSet<String>,
}

/// What one poller saw last of each app it watched, and anything wrong it
/// saw on the way.
#[derive(Clone, Debug, Default)]
pub struct PollerState {
    pub name: String,
    pub apps: HashMap<String, AppState>,
    pub changes: u64,
    pub problems: Vec<String>,
}

/// Everything the verdict rests on.
pub struct Evidence<'a> {
    pub history: &'a HashMap<Key, InstanceLog>,
    /// Instances present before the run: they may stay or go.
    pub baseline: &'a HashSet<Key>,
    /// The data every register of a key sent.
    pub sent: fn(&Key) -> Seen,
    pub nodes: &'a [NodeState],
    /// The final state of each watched app, by appid.
    pub apps: &'a HashMap<String, AppState>,
    pub pollers: &'a [PollerState],
    pub eviction_threshold: Duration,
}

/// Where an instance must end up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Present,
    Absent,
    Either,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: &'static str,
    pub detail: String,
}

/// The verdict and how many instances each expectation covered.
#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    pub must_be_present: usize,
    pub must_be_absent: usize,
    pub either: usize,
}

/// Whether it went unrenewed long enough to be evicted while renewed.
fn silent_too_long(log: &InstanceLog, threshold: Duration) -> bool {
    log.longest_silence + EVICTION_MARGIN >= threshold
}

/// Whether an instance may have been evicted by the end.
fn evictable(log: &InstanceLog, threshold: Duration) -> bool {
    !log.renewed_to_the_end || silent_too_long(log, threshold)
}

/// Every register was answered for sure, at least one acknowledged.
fn surely_registered(log: &InstanceLog) -> bool {
    log.registers.acked > 0
        && log.registers.maybe == 0
        && log.registers_sent == log.registers.attempts()
}

pub fn expect(log: &InstanceLog, threshold: Duration) -> Expect {
    let cancel_applied = log.cancels.acked + log.cancels.not_found > 0;
    if log.registers.acked > 0 && log.cancels_sent == 0 && !evictable(log, threshold) {
        Expect::Present
    } else if cancel_applied
        && log.registers.maybe == 0
        && log.registers_sent == log.registers.attempts()
    {
        Expect::Absent
    } else {
        Expect::Either
    }
}

pub fn judge(e: &Evidence) -> Verdict {
    let mut v = Verdict::default();
    let mut flag = |kind, detail: String| v.violations.push(Violation { kind, detail });

    // Every node at one log index, with one registry.
    let digests: Vec<(&str, &Digest)> = e
        .nodes
        .iter()
        .filter_map(|n| n.digest.as_ref().map(|d| (n.node.as_str(), d)))
        .collect();
    for n in e
        .nodes
        .iter()
        .filter(|n| n.digest.is_none() || n.instances.is_none())
    {
        flag("unreachable", format!("{} gave no final state", n.node));
    }
    if let Some((first, d0)) = digests.first() {
        for (name, d) in &digests[1..] {
            if d.applied_index != d0.applied_index {
                flag(
                    "not converged",
                    format!(
                        "{name} at index {:?}, {first} at {:?}",
                        d.applied_index, d0.applied_index
                    ),
                );
            } else if d.digest != d0.digest {
                flag(
                    "diverged",
                    format!("{name} and {first} differ at index {:?}", d.applied_index),
                );
            }
        }
    }

    // Each instance clients touched, on each node.
    for (key, log) in e.history {
        let expected = expect(log, e.eviction_threshold);
        match expected {
            Expect::Present => v.must_be_present += 1,
            Expect::Absent => v.must_be_absent += 1,
            Expect::Either => v.either += 1,
        }
        let sure = surely_registered(log) && !silent_too_long(log, e.eviction_threshold);
        if sure && log.renews_unknown > 0 {
            flag(
                "renew said unknown",
                format!(
                    "{key:?}: {} renews of an acknowledged instance answered -404",
                    log.renews_unknown
                ),
            );
        }
        if sure && log.cancels.first == Some(Answer::NotFound) {
            flag(
                "lost",
                format!("{key:?}: acknowledged, but the first cancel found nothing"),
            );
        }
        for node in e.nodes {
            let Some(instances) = &node.instances else {
                continue;
            };
            match (expected, instances.contains_key(key)) {
                (Expect::Present, false) => flag(
                    "lost",
                    format!(
                        "{key:?}: acknowledged and renewed, missing on {}",
                        node.node
                    ),
                ),
                (Expect::Absent, true) => flag(
                    "resurrected",
                    format!("{key:?}: cancelled, still on {}", node.node),
                ),
                _ => {}
            }
        }
    }

    // Nothing anybody did not register, nothing with other data.
    for node in e.nodes {
        for (key, seen) in node.instances.iter().flatten() {
            let known = e.history.get(key).is_some_and(|l| l.registers_sent > 0);
            if !known && !e.baseline.contains(key) {
                flag(
                    "phantom",
                    format!("{key:?} on {}: nobody registered it", node.node),
                );
            } else if known && *seen != (e.sent)(key) {
                flag(
                    "corrupted",
                    format!(
                        "{key:?} on {}: {seen:?}, registered {:?}",
                        node.node,
                        (e.sent)(key)
                    ),
                );
            }
        }
    }

    // Watchers end where the registry ends.
    for p in e.pollers {
        for problem in &p.problems {
            flag("poll", format!("{}: {problem}", p.name));
        }
        for (appid, want) in e.apps {
            match p.apps.get(appid) {
                Some(got) if got == want => {}
                got => flag(
                    "poller behind",
                    format!(
                        "{} last saw {appid} as {got:?}, the registry ends at {want:?}",
                        p.name
                    ),
                ),
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::history::History;

    const THRESHOLD: Duration = Duration::from_secs(90);

    fn key(host: &str) -> Key {
        Key {
            env: "chaos".into(),
            appid: "a".into(),
            zone: "z".into(),
            hostname: host.into(),
        }
    }

    fn sent(key: &Key) -> Seen {
        Seen {
            addrs: vec![format!("grpc://{}:9000", key.hostname)],
            status: 1,
            version: "v1".into(),
            metadata: BTreeMap::new(),
        }
    }

    fn maybe() -> Answer {
        Answer::Maybe("timeout".into())
    }

    /// A history: each instance's register answers, then whether it was
    /// renewed to the end, then its cancel answers.
    fn history(items: &[(&str, &[Answer], &[Answer])]) -> HashMap<Key, InstanceLog> {
        let h = History::default();
        let t = Instant::now();
        for (host, registers, cancels) in items {
            let k = key(host);
            for a in *registers {
                h.registering(&k);
                h.registered(&k, a, t);
            }
            h.renewing(&k);
            for a in *cancels {
                h.cancelling(&k);
                h.cancelled(&k, a);
            }
        }
        h.close(t + Duration::from_secs(5))
    }

    fn node(name: &str, hosts: &[&str]) -> NodeState {
        NodeState {
            node: name.into(),
            digest: Some(Digest {
                applied_index: Some(10),
                digest: "d".into(),
                instances: hosts.len(),
            }),
            instances: Some(hosts.iter().map(|h| (key(h), sent(&key(h)))).collect()),
        }
    }

    fn judge_nodes(history: &HashMap<Key, InstanceLog>, nodes: &[NodeState]) -> Verdict {
        judge(&Evidence {
            history,
            baseline: &HashSet::from([key("old")]),
            sent,
            nodes,
            apps: &HashMap::new(),
            pollers: &[],
            eviction_threshold: THRESHOLD,
        })
    }

    fn kinds(v: &Verdict) -> Vec<&'static str> {
        v.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn expectations_follow_what_clients_were_told() {
        let h = history(&[
            ("acked", &[Answer::Acked], &[]),
            ("acked-late", &[maybe(), Answer::Acked], &[]),
            ("only-maybe", &[maybe()], &[]),
            ("cancelled", &[Answer::Acked], &[Answer::Acked]),
            (
                "cancel-retried",
                &[Answer::Acked],
                &[maybe(), Answer::NotFound],
            ),
            ("cancel-maybe", &[Answer::Acked], &[maybe()]),
            (
                "maybe-then-cancelled",
                &[maybe(), Answer::Acked],
                &[Answer::Acked],
            ),
        ]);
        let e = |host| expect(&h[&key(host)], THRESHOLD);
        assert_eq!(e("acked"), Expect::Present);
        assert_eq!(e("acked-late"), Expect::Present);
        assert_eq!(e("only-maybe"), Expect::Either);
        assert_eq!(e("cancelled"), Expect::Absent);
        assert_eq!(e("cancel-retried"), Expect::Absent);
        assert_eq!(e("cancel-maybe"), Expect::Either);
        // The unanswered register may land after the cancel.
        assert_eq!(e("maybe-then-cancelled"), Expect::Either);
    }

    #[test]
    fn a_long_silence_makes_an_acknowledged_instance_evictable() {
        let h = History::default();
        let t = Instant::now();
        let k = key("quiet");
        h.registering(&k);
        h.registered(&k, &Answer::Acked, t);
        h.renewing(&k);
        let log = &h.close(t + THRESHOLD)[&k];
        assert_eq!(expect(log, THRESHOLD), Expect::Either);
    }

    #[test]
    fn lost_resurrected_phantom_and_corrupted_instances_are_violations() {
        let h = history(&[
            ("acked", &[Answer::Acked], &[]),
            ("cancelled", &[Answer::Acked], &[Answer::Acked]),
            ("only-maybe", &[maybe()], &[]),
        ]);
        let good = [
            node("n1", &["acked", "old"]),
            node("n2", &["acked", "only-maybe"]),
        ];
        assert!(judge_nodes(&h, &good).violations.is_empty());

        let mut bad = node("n3", &["cancelled", "ghost"]);
        if let Some(instances) = &mut bad.instances {
            instances.insert(
                key("only-maybe"),
                Seen {
                    status: 2,
                    ..sent(&key("only-maybe"))
                },
            );
        }
        let v = judge_nodes(&h, &[good[0].clone(), bad]);
        let mut k = kinds(&v);
        k.sort();
        assert_eq!(k, ["corrupted", "lost", "phantom", "resurrected"]);
        assert_eq!((v.must_be_present, v.must_be_absent, v.either), (1, 1, 1));
    }

    #[test]
    fn nodes_must_meet_at_one_index_with_one_registry() {
        let h = history(&[]);
        let mut other = node("n2", &[]);
        other.digest.as_mut().unwrap().digest = "e".into();
        assert_eq!(
            kinds(&judge_nodes(&h, &[node("n1", &[]), other.clone()])),
            ["diverged"]
        );
        other.digest.as_mut().unwrap().applied_index = Some(11);
        assert_eq!(
            kinds(&judge_nodes(&h, &[node("n1", &[]), other])),
            ["not converged"]
        );
        let silent = NodeState {
            node: "n3".into(),
            digest: None,
            instances: None,
        };
        assert_eq!(
            kinds(&judge_nodes(&h, &[node("n1", &[]), silent])),
            ["unreachable"]
        );
    }

    #[test]
    fn a_cancel_or_renew_finding_nothing_of_an_acknowledged_instance_is_a_loss() {
        let h = History::default();
        let t = Instant::now();
        let (a, b) = (key("a"), key("b"));
        for k in [&a, &b] {
            h.registering(k);
            h.registered(k, &Answer::Acked, t);
            h.renewing(k);
        }
        h.renewed(&a, &Answer::NotFound, t);
        h.cancelling(&b);
        h.cancelled(&b, &Answer::NotFound);
        let history = h.close(t + Duration::from_secs(1));
        let v = judge_nodes(&history, &[node("n1", &["a"])]);
        let mut k = kinds(&v);
        k.sort();
        assert_eq!(k, ["lost", "renew said unknown"]);
    }

    #[test]
    fn pollers_must_end_at_the_final_state() {
        let h = history(&[]);
        let want = AppState {
            latest_timestamp: 5,
            hosts: BTreeSet::from(["x".to_string()]),
        };
        let apps = HashMap::from([("a".to_string(), want.clone())]);
        let behind = PollerState {
            name: "p1".into(),
            apps: HashMap::from([(
                "a".to_string(),
                AppState {
                    latest_timestamp: 4,
                    ..want.clone()
                },
            )]),
            changes: 3,
            problems: vec!["went back".into()],
        };
        let v = judge(&Evidence {
            history: &h,
            baseline: &HashSet::new(),
            sent,
            nodes: &[],
            apps: &apps,
            pollers: &[behind],
            eviction_threshold: THRESHOLD,
        });
        assert_eq!(kinds(&v), ["poll", "poller behind"]);
    }
}
