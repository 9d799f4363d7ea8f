//! The cap on a listener's open connections. A new connection past the cap
//! takes the place of the connection idle the longest (as nginx drains idle
//! keep-alive connections), so clients holding idle connections cannot
//! lock out the others; with none idle, the newcomer is told the node is
//! overloaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::watch::ConnState;

/// The open connections of one listener, at most `max`.
pub struct Slots {
    max: usize,
    epoch: Instant,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next: u64,
    conns: HashMap<u64, Arc<ConnState>>,
}

/// A connection's place; frees it when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.lock().conns.remove(&self.id);
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max,
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
        })
    }

    /// A place for a new connection, closing the longest-idle one if the
    /// cap is reached; `None` when every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock();
        if open.conns.len() >= self.max {
            let (&victim, _) = open
                .conns
                .iter()
                .filter(|(_, c)| c.is_idle())
                .min_by_key(|(_, c)| c.idle_since())?;
            if let Some(evicted) = open.conns.remove(&victim) {
                evicted.close.notify_one();
            }
        }
        open.next += 1;
        let id = open.next;
        let state = ConnState::new(self.epoch);
        open.conns.insert(id, state.clone());
        Some(Slot {
            slots: self.clone(),
            id,
            state,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_longest_idle_makes_room_and_busy_ones_stay() {
        let slots = Slots::new(2);
        let a = slots.admit().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = slots.admit().unwrap();
        assert_eq!(slots.open(), 2);
        // Both idle: the older one (a) goes.
        let c = slots.admit().unwrap();
        assert_eq!(slots.open(), 2);
        drop(a); // its task ends; the slot was already taken from it
        assert_eq!(slots.open(), 2);
        drop((b, c));
        assert_eq!(slots.open(), 0);
    }

    #[test]
    fn with_every_connection_busy_a_newcomer_is_refused() {
        let slots = Slots::new(1);
        let held = slots.admit().unwrap();
        assert!(held.state.begin_request());
        assert!(slots.admit().is_none());
        held.state.answered();
        assert!(slots.admit().is_some());
    }
}
