//! The cap on a listener's open connections, in all and per client. A new
//! connection past the cap takes the place of the connection idle the
//! longest (as nginx drains idle keep-alive connections), so clients
//! holding idle connections cannot lock out the others; with none idle,
//! the newcomer is told the node is overloaded. A client at its own share
//! makes room among its own connections only, so one address cannot take
//! every place (nginx's `limit_conn`, Consul's
//! `http_max_conns_per_client`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::watch::ConnState;

/// The open connections of one listener, at most `max`, at most
/// `per_client` from one client.
pub struct Slots {
    max: usize,
    per_client: usize,
    epoch: Instant,
    open: Mutex<Open>,
}

/// Idle connections looked at when one must make room: the longest-idle
/// of the first this many, oldest first, goes. Looking at all of them made
/// every connection accepted past the cap cost a walk over every open
/// one, which under a flood of connections was most of the accept loop's
/// time.
const CANDIDATES: usize = 64;

#[derive(Default)]
struct Open {
    next: u64,
    /// By id: in the order they were opened.
    conns: BTreeMap<u64, (IpAddr, Arc<ConnState>)>,
    by_client: HashMap<IpAddr, usize>,
}

impl Open {
    /// Closes an idle connection that `from` accepts (the longest-idle of
    /// the [`CANDIDATES`] opened first); false when none is idle.
    fn make_room(&mut self, from: impl Fn(IpAddr) -> bool) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, (ip, c))| from(*ip) && c.is_idle())
            .take(CANDIDATES)
            .min_by_key(|(_, (_, c))| c.idle_since())
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.remove(id).close.notify_one();
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: u64) -> Arc<ConnState> {
        let (ip, state) = self.conns.remove(&id).expect("an open connection");
        if let Some(n) = self.by_client.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_client.remove(&ip);
            }
        }
        state
    }
}

/// A connection's place; frees it when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if open.conns.contains_key(&self.id) {
            open.remove(self.id);
        }
    }
}

impl Slots {
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Slots {
            max,
            per_client: per_client.clamp(1, max.max(1)),
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
        })
    }

    /// A place for a new connection from `ip`, closing the longest-idle
    /// one if a cap is reached (the client's own when at its share);
    /// `None` when every connection it could replace is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let client = crate::fair::client_of(ip);
        let mut open = self.open.lock();
        let mine = open.by_client.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client {
            if !open.make_room(|other| other == client) {
                return None;
            }
        } else if open.conns.len() >= self.max && !open.make_room(|_| true) {
            return None;
        }
        open.next += 1;
        let id = open.next;
        let state = ConnState::new(self.epoch);
        open.conns.insert(id, (client, state.clone()));
        *open.by_client.entry(client).or_insert(0) += 1;
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn past_the_cap_the_longest_idle_makes_room_and_busy_ones_stay() {
        let slots = Slots::new(2, 2);
        let a = slots.admit(ip(1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = slots.admit(ip(2)).unwrap();
        assert_eq!(slots.open(), 2);
        // Both idle: the older one (a) goes.
        let c = slots.admit(ip(3)).unwrap();
        assert_eq!(slots.open(), 2);
        drop(a); // its task ends; the slot was already taken from it
        assert_eq!(slots.open(), 2);
        drop((b, c));
        assert_eq!(slots.open(), 0);
        assert!(slots.open.lock().by_client.is_empty());
    }

    #[test]
    fn with_every_connection_busy_a_newcomer_is_refused() {
        let slots = Slots::new(1, 1);
        let held = slots.admit(ip(1)).unwrap();
        assert!(held.state.begin_request());
        assert!(slots.admit(ip(2)).is_none());
        held.state.answered();
        assert!(slots.admit(ip(2)).is_some());
    }

    #[test]
    fn a_client_at_its_share_makes_room_among_its_own_only() {
        let slots = Slots::new(10, 3);
        let others: Vec<Slot> = (0..2).map(|_| slots.admit(ip(2)).unwrap()).collect();
        let mine: Vec<Slot> = (0..3).map(|_| slots.admit(ip(1)).unwrap()).collect();
        // At its share with all three busy: refused, though places remain.
        for s in &mine {
            s.state.begin_request();
        }
        assert!(slots.admit(ip(1)).is_none());
        // One of its own idle: that one goes, not another client's.
        mine[0].state.answered();
        let again = slots.admit(ip(1)).unwrap();
        assert_eq!(slots.open(), 5);
        assert_eq!(slots.open.lock().by_client[&ip(2)], 2);
        assert_eq!(slots.open.lock().by_client[&ip(1)], 3);
        drop((others, mine, again));
        assert_eq!(slots.open(), 0);
    }
}
