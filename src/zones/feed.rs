//! The origin's side of the stream to other zones: the changes this zone
//! made to its own instances, by the log index of the entry that made
//! them, for the last so many changes. Every node of the zone applies the
//! same log, so any of them answers the same.

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
        }
    }

    /// Entry `index` was applied and made `changes` to own instances.
    pub fn record(&mut self, index: u64, changes: Vec<ZoneChange>) {
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
    }

    /// Entry `index` was applied and changed no own instance.
    pub fn advance(&mut self, index: u64) {
        self.last = index;
    }

    /// The registry was replaced at `index` (a snapshot installed, a backup
    /// restored, the node started from a snapshot): nothing before is held.
    pub fn reset(&mut self, index: u64) {
        self.entries.clear();
        self.changes = 0;
        self.start = index;
        self.last = index;
    }

    /// The last log index applied.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// What a receiver whose cursor is `after` needs next: at most about
    /// `max` changes (whole entries, at least one).
    pub fn since(&self, after: u64, max: usize) -> Since {
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
        let first = self.entries.partition_point(|(i, _)| *i <= after);
        let mut changes = Vec::new();
        let mut to = after;
        for (index, entry) in self.entries.range(first..) {
            if !changes.is_empty() && changes.len() + entry.len() > max {
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
        feed.reset(1);
        feed.record(2, vec![gone("a")]);
        feed.advance(3);
        feed.record(4, vec![gone("b"), gone("c")]);
        assert_eq!(
            feed.since(1, 100),
            Since::Changes {
                to: 4,
                changes: vec![gone("a"), gone("b"), gone("c")]
            }
        );
        assert_eq!(
            feed.since(2, 100),
            Since::Changes {
                to: 4,
                changes: vec![gone("b"), gone("c")]
            }
        );
        assert_eq!(feed.since(4, 100), Since::Nothing);
        // Bounded batches, whole entries.
        assert_eq!(
            feed.since(1, 2),
            Since::Changes {
                to: 2,
                changes: vec![gone("a")]
            }
        );
        // A cursor of 0: a full copy; beyond what this node applied: wait.
        assert_eq!(feed.since(0, 100), Since::TooOld);
        assert_eq!(feed.since(9, 100), Since::Nothing);
        // Before this node applied anything, there is nothing to copy.
        assert_eq!(ZoneFeed::keeping(100).since(0, 100), Since::Nothing);
    }

    #[test]
    fn a_receiver_behind_what_is_kept_needs_a_full_copy() {
        let mut feed = ZoneFeed::keeping(2);
        feed.reset(10);
        feed.record(11, vec![gone("a")]);
        feed.record(12, vec![gone("b")]);
        assert!(matches!(feed.since(10, 10), Since::Changes { to: 12, .. }));
        feed.record(13, vec![gone("c")]);
        assert_eq!(feed.since(10, 10), Since::TooOld);
        assert_eq!(
            feed.since(11, 10),
            Since::Changes {
                to: 13,
                changes: vec![gone("b"), gone("c")]
            }
        );
        feed.reset(20);
        assert_eq!(feed.since(13, 10), Since::TooOld);
        assert_eq!(feed.since(20, 10), Since::Nothing);
    }
}
