//! The log entries appended last, kept decoded.
//!
//! Raft reads every entry back right after appending it: to apply it, and,
//! on the leader, to send it to each follower. Read from sled, each read is
//! a lookup and a JSON decode of the whole entry, on every node (three to
//! five decodes of every entry in a three-node cluster). The window answers
//! those reads from memory; older entries (a follower far behind, a restart)
//! are read from sled as before.

use std::collections::VecDeque;

use openraft::Entry;

use super::TypeConfig;

/// A contiguous run of the last appended entries, bounded in bytes (as
/// encoded in the log).
pub struct Recent {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(max_bytes: usize) -> Self {
        Recent {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Keeps `entry`, `size` bytes in the log, as the newest; the oldest
    /// go to stay within the bound. One that does not follow the newest
    /// kept starts the window afresh.
    pub fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        if self
            .last()
            .is_some_and(|last| last + 1 != entry.log_id.index)
        {
            self.clear();
        }
        if size > self.max_bytes {
            self.clear();
            return;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > self.max_bytes {
            self.pop_front();
        }
    }

    /// Forgets the entries from `index` on (the log was truncated there).
    pub fn truncate(&mut self, index: u64) {
        while self.last().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets the entries up to `index` (the log was purged through it).
    pub fn purge(&mut self, index: u64) {
        while self.first().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries `start..end` (`end` exclusive, `None` to the newest),
    /// if every one of them is kept; else `None`, and the caller reads the
    /// log.
    pub fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first()?;
        let last = self.last()?;
        let end = end.unwrap_or(last + 1);
        if start >= end {
            return None;
        }
        if start < first || end > last + 1 {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    fn window(range: std::ops::RangeInclusive<u64>, max_bytes: usize) -> Recent {
        let mut recent = Recent::new(max_bytes);
        for i in range {
            recent.push(entry(i), 10);
        }
        recent
    }

    #[test]
    fn answers_only_ranges_it_holds_whole() {
        let recent = window(5..=9, 1000);
        assert_eq!(indexes(recent.get(5, Some(10))), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.get(7, Some(9))), Some(vec![7, 8]));
        assert_eq!(indexes(recent.get(8, None)), Some(vec![8, 9]));
        assert_eq!(
            indexes(recent.get(4, Some(7))),
            None,
            "starts before the window"
        );
        assert_eq!(indexes(recent.get(8, Some(11))), None, "ends after it");
        assert_eq!(indexes(recent.get(7, Some(7))), None, "empty");
        assert_eq!(indexes(Recent::new(1000).get(1, None)), None);
    }

    #[test]
    fn keeps_within_its_bound_dropping_the_oldest() {
        let recent = window(1..=10, 35);
        assert_eq!(indexes(recent.get(8, None)), Some(vec![8, 9, 10]));
        assert_eq!(indexes(recent.get(7, None)), None);
        // An entry larger than the bound is not kept, and breaks the run.
        let mut recent = window(1..=3, 35);
        recent.push(entry(4), 100);
        assert_eq!(indexes(recent.get(1, None)), None);
        recent.push(entry(5), 10);
        assert_eq!(indexes(recent.get(5, None)), Some(vec![5]));
    }

    #[test]
    fn follows_truncation_purge_and_gaps() {
        let mut recent = window(1..=10, 1000);
        recent.truncate(8);
        assert_eq!(indexes(recent.get(6, None)), Some(vec![6, 7]));
        recent.push(entry(8), 10);
        assert_eq!(indexes(recent.get(7, None)), Some(vec![7, 8]));
        recent.purge(6);
        assert_eq!(indexes(recent.get(6, None)), None);
        assert_eq!(indexes(recent.get(7, None)), Some(vec![7, 8]));
        // A snapshot installed: appends resume further on.
        recent.push(entry(50), 10);
        assert_eq!(indexes(recent.get(7, None)), None);
        assert_eq!(indexes(recent.get(50, None)), Some(vec![50]));
        // Truncating everything, then appending anew.
        recent.truncate(1);
        assert_eq!(indexes(recent.get(50, None)), None);
        recent.push(entry(3), 10);
        assert_eq!(indexes(recent.get(3, None)), Some(vec![3]));
    }
}
