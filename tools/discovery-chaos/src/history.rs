//! What the clients were told, per instance: the evidence the checker
//! judges the cluster's final state against.
//!
//! Every attempt is noted *before* its request is sent, so an instance seen
//! anywhere (a poll answer, a node's registry) that the history does not
//! know was never asked for by anyone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// `(env, appid, zone, hostname)`: what identifies an instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub env: String,
    pub appid: String,
    pub zone: String,
    pub hostname: String,
}

/// What a client learned from one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Code 0: committed and applied.
    Acked,
    /// Code -404: applied, and found nothing to act on.
    NotFound,
    /// Refused before it reached the log (-400): certainly not applied.
    Refused(i64),
    /// No answer, a timeout, -503 or -500: it may or may not be applied,
    /// now or later.
    Maybe(String),
}

/// Outcomes of one kind of write to one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub acked: u32,
    pub not_found: u32,
    pub refused: u32,
    pub maybe: u32,
    /// The answer to the first attempt.
    pub first: Option<Answer>,
}

impl Tally {
    fn note(&mut self, answer: &Answer) {
        match answer {
            Answer::Acked => self.acked += 1,
            Answer::NotFound => self.not_found += 1,
            Answer::Refused(_) => self.refused += 1,
            Answer::Maybe(_) => self.maybe += 1,
        }
        self.first.get_or_insert_with(|| answer.clone());
    }

    pub fn attempts(&self) -> u32 {
        self.acked + self.not_found + self.refused + self.maybe
    }
}

/// Everything clients did to one instance.
#[derive(Clone, Debug, Default)]
pub struct InstanceLog {
    pub registers: Tally,
    /// Register attempts sent; more than `registers.attempts()` while some
    /// are under way.
    pub registers_sent: u32,
    pub cancels: Tally,
    pub cancels_sent: u32,
    pub renews: Tally,
    /// Renews answered -404 before anyone tried to cancel the instance.
    pub renews_unknown: u32,
    /// Still renewed when the workload stopped (never handed to a
    /// canceller).
    pub renewed_to_the_end: bool,
    /// The longest time between two acknowledged registers or renews while
    /// it was renewed: past the eviction threshold it may have gone.
    pub longest_silence: Duration,
    last_ack: Option<Instant>,
}

/// The shared record of every client's writes.
#[derive(Default)]
pub struct History {
    instances: Mutex<HashMap<Key, InstanceLog>>,
}

impl History {
    /// Notes that a register of `key` is about to be sent.
    pub fn registering(&self, key: &Key) {
        self.instances
            .lock()
            .entry(key.clone())
            .or_default()
            .registers_sent += 1;
    }

    pub fn registered(&self, key: &Key, answer: &Answer, at: Instant) {
        let mut instances = self.instances.lock();
        let log = instances.entry(key.clone()).or_default();
        log.registers.note(answer);
        if *answer == Answer::Acked {
            log.acked_at(at);
        }
    }

    /// Notes that the renewer takes over `key`.
    pub fn renewing(&self, key: &Key) {
        if let Some(log) = self.instances.lock().get_mut(key) {
            log.renewed_to_the_end = true;
        }
    }

    pub fn renewed(&self, key: &Key, answer: &Answer, at: Instant) {
        if let Some(log) = self.instances.lock().get_mut(key) {
            log.renews.note(answer);
            match answer {
                Answer::Acked => log.acked_at(at),
                Answer::NotFound if log.cancels_sent == 0 => log.renews_unknown += 1,
                _ => {}
            }
        }
    }

    /// Notes that a cancel of `key` is about to be sent; it is no longer
    /// renewed from then on.
    pub fn cancelling(&self, key: &Key) {
        let mut instances = self.instances.lock();
        let log = instances.entry(key.clone()).or_default();
        log.renewed_to_the_end = false;
        log.cancels_sent += 1;
    }

    pub fn cancelled(&self, key: &Key, answer: &Answer) {
        if let Some(log) = self.instances.lock().get_mut(key) {
            log.cancels.note(answer);
        }
    }

    /// Whether any client ever tried to register `key`.
    pub fn knows(&self, key: &Key) -> bool {
        self.instances
            .lock()
            .get(key)
            .is_some_and(|l| l.registers_sent > 0)
    }

    /// The record when the workload stopped at `end`: the silence of each
    /// renewed instance runs until then.
    pub fn close(&self, end: Instant) -> HashMap<Key, InstanceLog> {
        let mut instances = self.instances.lock();
        for log in instances.values_mut() {
            if log.renewed_to_the_end {
                log.acked_at(end);
            }
        }
        instances.clone()
    }
}

impl InstanceLog {
    fn acked_at(&mut self, at: Instant) {
        if let Some(last) = self.last_ack {
            self.longest_silence = self.longest_silence.max(at.saturating_duration_since(last));
        }
        self.last_ack = Some(self.last_ack.map_or(at, |l| l.max(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str) -> Key {
        Key {
            env: "chaos".into(),
            appid: "a".into(),
            zone: "z".into(),
            hostname: host.into(),
        }
    }

    #[test]
    fn silence_is_the_longest_gap_between_acknowledgements_until_the_end() {
        let h = History::default();
        let t = Instant::now();
        let k = key("h1");
        assert!(!h.knows(&k));
        h.registering(&k);
        assert!(h.knows(&k));
        h.registered(&k, &Answer::Acked, t);
        h.renewing(&k);
        h.renewed(&k, &Answer::Acked, t + Duration::from_secs(3));
        h.renewed(
            &k,
            &Answer::Maybe("timeout".into()),
            t + Duration::from_secs(6),
        );
        h.renewed(&k, &Answer::Acked, t + Duration::from_secs(10));
        let log = &h.close(t + Duration::from_secs(11))[&k];
        assert_eq!(log.longest_silence, Duration::from_secs(7));
        assert_eq!(log.renews.acked, 2);
        assert_eq!(log.renews.maybe, 1);
        assert!(log.renewed_to_the_end);

        h.renewed(&k, &Answer::NotFound, t + Duration::from_secs(11));
        h.cancelling(&k);
        h.cancelled(&k, &Answer::NotFound);
        // A renew under way when the cancel went out may find nothing.
        h.renewed(&k, &Answer::NotFound, t + Duration::from_secs(12));
        let log = &h.close(t + Duration::from_secs(100))[&k];
        assert_eq!(log.renews_unknown, 1);
        assert!(
            !log.renewed_to_the_end,
            "a cancelled instance is not renewed"
        );
        assert_eq!(log.cancels.first, Some(Answer::NotFound));
    }
}
