//! Which instances the leader evicts, and when self-preservation stops it.
//!
//! Pure decisions over the registry; the leader's evictor task feeds them
//! the clock, the renews it has seen and a random source, and proposes the
//! result as an `Evict` command.

use std::collections::HashMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;

use super::instance::{InstanceKey, Timestamp};
use super::Registry;

/// The eviction rules.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Silent longer than this: evicted.
    pub threshold: Duration,
    /// Silent longer than this: evicted even under self-preservation.
    pub ceiling: Duration,
    /// Self-preservation starts when renews seen fall below this share of
    /// those expected; it also bounds a round to the share that may go.
    pub keep_ratio: f64,
    /// How often each instance is expected to renew.
    pub renew_interval: Duration,
    /// The window over which renews are counted.
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            threshold: Duration::from_secs(90),
            ceiling: Duration::from_secs(3600),
            keep_ratio: 0.85,
            renew_interval: Duration::from_secs(30),
            window: Duration::from_secs(60),
        }
    }
}

/// Self-preservation as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Preservation {
    /// Renews expected in the window (scaled down while the leader has led
    /// for less than a window).
    pub expected: u64,
    /// Renews seen in the window.
    pub seen: u64,
    /// Whether eviction is held back.
    pub protecting: bool,
}

impl Policy {
    /// Compares renews seen with renews expected from `instances`
    /// instances; `led_for` is how long this leader has been counting.
    pub fn preservation(&self, instances: usize, seen: u64, led_for: Duration) -> Preservation {
        let per_window = self.window.as_secs_f64() / self.renew_interval.as_secs_f64().max(1e-9);
        let counted = (led_for.as_secs_f64() / self.window.as_secs_f64().max(1e-9)).min(1.0);
        let expected = (instances as f64 * per_window * counted).floor() as u64;
        let protecting = expected > 0 && (seen as f64) < expected as f64 * self.keep_ratio;
        Preservation {
            expected,
            seen,
            protecting,
        }
    }

    /// The most instances one round may evict: `size - ceil(size * ratio)`,
    /// but at least one, or a registry of six instances or fewer could never
    /// evict a dead one.
    pub fn round_limit(&self, size: usize) -> usize {
        let bounded = size - (size as f64 * self.keep_ratio).ceil() as usize;
        bounded.max(1.min(size))
    }

    /// Chooses the instances to evict now, at random across apps.
    ///
    /// An instance's last sign of life is the latest of its replicated
    /// renew, a renew the leader accepted but has not yet replicated
    /// (`pending`), and `grace_from` (when this leader took over: it cannot
    /// have seen renews sent to the previous leader).
    pub fn choose(
        &self,
        registry: &Registry,
        now: Timestamp,
        grace_from: Timestamp,
        pending: &HashMap<InstanceKey, Timestamp>,
        protecting: bool,
        rng: &mut impl Rng,
    ) -> Vec<InstanceKey> {
        let limit = if protecting {
            self.ceiling
        } else {
            self.threshold
        };
        let cutoff = now.saturating_sub(limit.as_nanos() as Timestamp);
        let foreign = !registry.partitions().is_empty() || !registry.upstreams().is_empty();
        // This runs under the registry's read lock, which every write
        // waits for: an instance renewed in time is passed over on its
        // timestamps alone, and only the silent few have their key made.
        let (mut silent, never_renewed): (Vec<_>, Vec<_>) = registry
            .instances()
            .filter(|i| i.renew_timestamp.max(grace_from) < cutoff)
            .map(|i| (i.key(), i.renew_timestamp > i.reg_timestamp))
            .filter(|(k, _)| pending.get(k).is_none_or(|renew| *renew < cutoff))
            // Another zone's instances renew there, and only it evicts them;
            // an original's, likewise.
            .filter(|(k, _)| !foreign || !registry.is_foreign(k))
            .partition(|(_, renewed)| *renewed);
        // The bound on a round guards instances that were alive (they
        // renewed) against a fault that silences many at once. One that
        // registered and never renewed never showed it was: a flood of
        // them goes whole once silent past the limit, instead of 15 % a
        // round of a registry it inflates (a shrinking share: fifty
        // thousand took over sixty rounds).
        let most = self.round_limit(registry.own_len());
        if silent.len() > most {
            silent.shuffle(rng);
            silent.truncate(most);
        }
        let mut chosen: Vec<InstanceKey> = silent
            .into_iter()
            .chain(never_renewed)
            .map(|(k, _)| k)
            .collect();
        chosen.sort();
        chosen
    }

    /// The `silent_since` an eviction carries: instances renewed after it
    /// (in the log, before the eviction applies) are kept.
    pub fn silent_since(&self, now: Timestamp, protecting: bool) -> Timestamp {
        let limit = if protecting {
            self.ceiling
        } else {
            self.threshold
        };
        now.saturating_sub(limit.as_nanos() as Timestamp)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::registry::{Command, Metadata, Registration, Status};

    const S: i64 = 1_000_000_000;

    fn registry(n: usize, renewed_at: impl Fn(usize) -> Timestamp) -> Registry {
        let mut r = Registry::default();
        for i in 0..n {
            r.apply(&Command::Register {
                registration: Registration {
                    region: String::new(),
                    zone: "z".into(),
                    env: "dev".into(),
                    appid: format!("app{}", i % 7),
                    hostname: format!("h{i}"),
                    addrs: vec!["grpc://x:1".into()],
                    version: String::new(),
                    metadata: Metadata::new(),
                    status: Status::Up,
                },
                at: renewed_at(i) - 1,
            });
        }
        // Each renewed once since it registered: alive instances, whose
        // eviction a round bounds.
        for i in 0..n {
            let key = InstanceKey {
                env: "dev".into(),
                appid: format!("app{}", i % 7),
                zone: "z".into(),
                hostname: format!("h{i}"),
            };
            r.apply(&Command::Renew {
                keys: vec![key],
                at: renewed_at(i),
            });
        }
        r
    }

    #[test]
    fn instances_that_never_renewed_go_whole_once_silent_and_the_others_in_bounded_rounds() {
        let now = 10_000 * S;
        // 20 that renewed, all silent; then 100 that registered and never
        // renewed, all silent.
        let mut r = registry(20, |i| now - 200 * S + i as i64);
        for i in 0..100 {
            r.apply(&Command::Register {
                registration: Registration {
                    region: String::new(),
                    zone: "z".into(),
                    env: "dev".into(),
                    appid: "flood".into(),
                    hostname: format!("f{i}"),
                    addrs: vec!["grpc://x:1".into()],
                    version: String::new(),
                    metadata: Metadata::new(),
                    status: Status::Up,
                },
                at: now - 100 * S,
            });
        }
        let chosen = policy().choose(
            &r,
            now,
            0,
            &HashMap::new(),
            false,
            &mut StdRng::seed_from_u64(1),
        );
        let flood = chosen.iter().filter(|k| k.appid == "flood").count();
        assert_eq!(flood, 100);
        // The renewed ones: at most the round's share of all 120.
        assert_eq!(chosen.len() - flood, policy().round_limit(120));
        // Under protection, the ceiling holds for them too.
        let protected = policy().choose(
            &r,
            now,
            0,
            &HashMap::new(),
            true,
            &mut StdRng::seed_from_u64(1),
        );
        assert!(protected.is_empty());
    }

    fn policy() -> Policy {
        Policy {
            threshold: Duration::from_secs(90),
            ceiling: Duration::from_secs(3600),
            ..Policy::default()
        }
    }

    #[test]
    fn the_round_limit_is_what_the_spec_says() {
        let p = policy();
        assert_eq!(p.round_limit(100), 15);
        assert_eq!(p.round_limit(20), 3);
        assert_eq!(p.round_limit(7), 1);
        // Small registries still evict, one a round.
        assert_eq!(p.round_limit(6), 1);
        assert_eq!(p.round_limit(1), 1);
        assert_eq!(p.round_limit(0), 0);
    }

    #[test]
    fn only_instances_silent_past_the_threshold_are_chosen() {
        let now = 10_000 * S;
        // h0..h2 silent for 100 s, the rest renewed 10 s ago.
        let r = registry(20, |i| {
            if i < 3 {
                now - 100 * S + i as i64
            } else {
                now - 10 * S + i as i64
            }
        });
        let chosen = policy().choose(
            &r,
            now,
            0,
            &HashMap::new(),
            false,
            &mut StdRng::seed_from_u64(1),
        );
        let hosts: Vec<&str> = chosen.iter().map(|k| k.hostname.as_str()).collect();
        assert_eq!(hosts, vec!["h0", "h1", "h2"]);
    }

    #[test]
    fn a_round_takes_at_most_the_bounded_share_at_random() {
        let now = 10_000 * S;
        let r = registry(20, |i| now - 200 * S + i as i64);
        let a = policy().choose(
            &r,
            now,
            0,
            &HashMap::new(),
            false,
            &mut StdRng::seed_from_u64(1),
        );
        let b = policy().choose(
            &r,
            now,
            0,
            &HashMap::new(),
            false,
            &mut StdRng::seed_from_u64(2),
        );
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 3);
        assert_ne!(a, b, "different random picks");
    }

    #[test]
    fn a_new_leader_gives_everyone_a_full_threshold() {
        let now = 10_000 * S;
        let r = registry(5, |_| now - 200 * S);
        let took_over = now - 30 * S;
        let chosen = policy().choose(
            &r,
            now,
            took_over,
            &HashMap::new(),
            false,
            &mut StdRng::seed_from_u64(1),
        );
        assert!(chosen.is_empty());
    }

    #[test]
    fn pending_renews_count_as_signs_of_life() {
        let now = 10_000 * S;
        let r = registry(20, |i| now - 200 * S + i as i64);
        let key = r.instances().find(|i| i.hostname == "h0").unwrap().key();
        let pending = HashMap::from([(key.clone(), now - S)]);
        let chosen = policy().choose(&r, now, 0, &pending, false, &mut StdRng::seed_from_u64(1));
        assert!(!chosen.contains(&key));
    }

    #[test]
    fn under_protection_only_the_ceiling_evicts() {
        let now = 10_000 * S;
        let r = registry(20, |i| {
            if i == 0 {
                now - 4000 * S
            } else {
                now - 200 * S
            }
        });
        let chosen = policy().choose(
            &r,
            now,
            0,
            &HashMap::new(),
            true,
            &mut StdRng::seed_from_u64(1),
        );
        let hosts: Vec<&str> = chosen.iter().map(|k| k.hostname.as_str()).collect();
        assert_eq!(hosts, vec!["h0"]);
    }

    #[test]
    fn protection_starts_below_the_expected_share() {
        let p = policy();
        let full = Duration::from_secs(120);
        // 100 instances renewing every 30 s: 200 renews a minute expected.
        assert_eq!(p.preservation(100, 200, full).expected, 200);
        assert!(!p.preservation(100, 170, full).protecting);
        assert!(p.preservation(100, 169, full).protecting);
        // A leader of 30 s expects half a window's worth.
        assert_eq!(
            p.preservation(100, 100, Duration::from_secs(30)).expected,
            100
        );
        assert!(!p.preservation(0, 0, full).protecting);
    }
}
