//! The origin's side of the stream to other zones: the changes this zone
//! made to its own instances, by the log index of the entry that made
//! them, for the last so many changes. Every node of the zone applies the
//! same log, so any of them answers the same.
//!
//! It also knows the term of every entry it holds, so that a receiver's
//! cursor names an entry (index and term), not a bare index: a cursor into
//! another history of this zone's log (its data directories restored from
//! a copy, say) does not match, and gets a full copy.

use std::collections::VecDeque;

use crate::registry::zones::ZoneChange;

/// At most this many changes are kept; a receiver further behind gets a
/// full copy.
pub const KEEP_CHANGES: usize = 200_000;

/// Recent own changes, in log order.
#[derive(Debug)]
pub struct ZoneFeed {
    entries: VecDeque<(u64, Vec<ZoneChange>)>,
    changes: usize,
    keep: usize,
    /// Every change of entries after this index is held.
    start: u64,
    /// The last log index applied (with changes or not).
    last: u64,
    /// Where each term starts, from `start` on: `(first index, term)`.
    terms: VecDeque<(u64, u64)>,
}

/// What a receiver standing at `after` is owed.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// The changes of entries `(after, to]`, in order.
    Changes { to: u64, changes: Vec<ZoneChange> },
    /// Nothing changed after `after` (yet).
    Nothing,
    /// The changes it needs are no longer held: it needs a full copy.
    TooOld,
}

impl Default for ZoneFeed {
    fn default() -> Self {
        ZoneFeed::keeping(KEEP_CHANGES)
    }
}

impl ZoneFeed {
    pub fn keeping(keep: usize) -> Self {
        ZoneFeed {
            entries: VecDeque::new(),
            changes: 0,
            keep,
            start: 0,
            last: 0,
            terms: VecDeque::new(),
        }
    }

    /// Entry `index` was written in `term`.
    fn term_from(&mut self, index: u64, term: u64) {
        if self.terms.back().is_none_or(|(_, t)| *t != term) {
            self.terms.push_back((index, term));
        }
    }

    /// The term of entry `index`, if it is held (from `start` on).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index < self.start || index > self.last {
            return None;
        }
        let after = self.terms.partition_point(|(first, _)| *first <= index);
        after.checked_sub(1).map(|i| self.terms[i].1)
    }

    /// Entry `index`, of `term`, was applied and made `changes` to own
    /// instances.
    pub fn record(&mut self, index: u64, term: u64, changes: Vec<ZoneChange>) {
        self.term_from(index, term);
        self.last = index;
        if changes.is_empty() {
            return;
        }
        self.changes += changes.len();
        self.entries.push_back((index, changes));
        while self.changes > self.keep {
            let Some((dropped, gone)) = self.entries.pop_front() else {
                break;
            };
            self.changes -= gone.len();
            self.start = dropped;
        }
        // Terms that ended before `start` are no longer needed.
        while self.terms.len() > 1 && self.terms[1].0 <= self.start {
            self.terms.pop_front();
        }
    }

    /// Entry `index`, of `term`, was applied and changed no own instance.
    pub fn advance(&mut self, index: u64, term: u64) {
        self.term_from(index, term);
        self.last = index;
    }

    /// The registry was replaced at `index` (a snapshot installed, a backup
    /// restored, the node started from a snapshot): nothing before is held.
    pub fn reset(&mut self, index: u64, term: u64) {
        self.entries.clear();
        self.changes = 0;
        self.start = index;
        self.last = index;
        self.terms.clear();
        self.terms.push_back((index, term));
    }

    /// The last log index applied.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// What a receiver whose cursor is entry `after` of `term` (0: a
    /// receiver that does not say) needs next: changes of at most about
    /// `max_bytes` (as a log entry counts them; whole entries, at least
    /// one), so that the receiver proposes them as one entry of its own.
    pub fn since(&self, after: u64, term: u64, max_bytes: usize) -> Since {
        // A node that has applied nothing yet has nothing to copy: a copy
        // "at index 0" would leave the receiver at 0, asking again.
        if self.last == 0 {
            return Since::Nothing;
        }
        if after == 0 || after < self.start {
            return Since::TooOld;
        }
        // A receiver ahead of this node heard from a node further on: this
        // one has nothing to add until it catches up. (A full copy from
        // here would move the receiver back.)
        if after > self.last {
            return Since::Nothing;
        }
        // The entry the receiver stands on is not this log's: it followed
        // another history of it.
        if term != 0 && self.term_at(after) != Some(term) {
            return Since::TooOld;
        }
        let first = self.entries.partition_point(|(i, _)| *i <= after);
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut to = after;
        for (index, entry) in self.entries.range(first..) {
            bytes += entry.iter().map(ZoneChange::approx_bytes).sum::<usize>();
            if !changes.is_empty() && bytes > max_bytes {
                break;
            }
            changes.extend(entry.iter().cloned());
            to = *index;
        }
        if changes.is_empty() {
            Since::Nothing
        } else {
            Since::Changes { to, changes }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::InstanceKey;

    /// Room for every change of these tests.
    const ALL: usize = 1 << 20;

    fn gone(host: &str) -> ZoneChange {
        ZoneChange::Remove(InstanceKey {
            env: "dev".into(),
            appid: "a".into(),
            zone: "sh001".into(),
            hostname: host.into(),
        })
    }

    #[test]
    fn a_receiver_gets_the_changes_after_its_cursor_in_order() {
        let mut feed = ZoneFeed::keeping(100);
        feed.reset(1, 1);
        feed.record(2, 1, vec![gone("a")]);
        feed.advance(3, 1);
        feed.record(4, 1, vec![gone("b"), gone("c")]);
        assert_eq!(
            feed.since(1, 0, ALL),
            Since::Changes {
                to: 4,
                changes: vec![gone("a"), gone("b"), gone("c")]
            }
        );
        assert_eq!(
            feed.since(2, 0, ALL),
            Since::Changes {
                to: 4,
                changes: vec![gone("b"), gone("c")]
            }
        );
        assert_eq!(feed.since(4, 0, ALL), Since::Nothing);
        // Bounded batches, whole entries: the bytes of two changes admit
        // entry 2 (one change) but not entry 4 as well (two more).
        let two = 2 * gone("a").approx_bytes();
        assert_eq!(
            feed.since(1, 0, two),
            Since::Changes {
                to: 2,
                changes: vec![gone("a")]
            }
        );
        // A cursor of 0: a full copy; beyond what this node applied: wait.
        assert_eq!(feed.since(0, 0, ALL), Since::TooOld);
        assert_eq!(feed.since(9, 0, ALL), Since::Nothing);
        // Before this node applied anything, there is nothing to copy.
        assert_eq!(ZoneFeed::keeping(100).since(0, 0, ALL), Since::Nothing);
    }

    #[test]
    fn a_receiver_behind_what_is_kept_needs_a_full_copy() {
        let mut feed = ZoneFeed::keeping(2);
        feed.reset(10, 1);
        feed.record(11, 1, vec![gone("a")]);
        feed.record(12, 1, vec![gone("b")]);
        assert!(matches!(
            feed.since(10, 0, ALL),
            Since::Changes { to: 12, .. }
        ));
        feed.record(13, 1, vec![gone("c")]);
        assert_eq!(feed.since(10, 0, ALL), Since::TooOld);
        assert_eq!(
            feed.since(11, 0, ALL),
            Since::Changes {
                to: 13,
                changes: vec![gone("b"), gone("c")]
            }
        );
        feed.reset(20, 1);
        assert_eq!(feed.since(13, 0, ALL), Since::TooOld);
        assert_eq!(feed.since(20, 0, ALL), Since::Nothing);
    }

    #[test]
    fn a_cursor_on_an_entry_of_another_term_needs_a_full_copy() {
        let mut feed = ZoneFeed::keeping(100);
        feed.reset(10, 2);
        feed.record(11, 2, vec![gone("a")]);
        feed.advance(12, 3);
        feed.record(13, 3, vec![gone("b")]);
        assert_eq!(feed.term_at(10), Some(2));
        assert_eq!(feed.term_at(12), Some(3));
        assert_eq!(feed.term_at(14), None);
        assert!(matches!(
            feed.since(11, 2, ALL),
            Since::Changes { to: 13, .. }
        ));
        // Entry 11 of term 1 is not this log's entry 11.
        assert_eq!(feed.since(11, 1, ALL), Since::TooOld);
        assert_eq!(feed.since(12, 2, ALL), Since::TooOld);
        assert_eq!(feed.since(13, 3, ALL), Since::Nothing);
        // Beyond what this node applied it cannot tell yet: wait.
        assert_eq!(feed.since(20, 9, ALL), Since::Nothing);
    }
}
