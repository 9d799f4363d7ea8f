//! The poll hub: held polls register a watch on the apps they poll; a change
//! of an app wakes exactly the watches registered on it.
//!
//! A held poll costs one small entry per polled app and no task of its own:
//! the request's future sleeps until its watch is notified or its hold time
//! ends, and dropping the future (a client that disconnects) removes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::registry::AppKey;

/// Every held poll's watch, by the apps it watches.
#[derive(Default)]
pub struct PollHub {
    inner: Mutex<Inner>,
    /// Set when the node stops: held polls are answered at once.
    closed: AtomicBool,
}

#[derive(Default)]
struct Inner {
    by_app: HashMap<AppKey, HashMap<u64, Arc<Notify>>>,
    next_id: u64,
    /// Watches registered and not yet dropped: every poll asks, so it is
    /// kept rather than counted.
    held: usize,
    /// When watches were last woken, for the wake latency a woken poll
    /// reports.
    last_wake: Option<Instant>,
}

/// One held poll's registration; dropping it unregisters.
pub struct Watch {
    hub: Arc<PollHub>,
    id: u64,
    apps: Vec<AppKey>,
    notify: Arc<Notify>,
}

impl PollHub {
    pub fn new() -> Arc<Self> {
        Arc::new(PollHub::default())
    }

    /// Registers a watch on `apps`. Register before reading the registry:
    /// a change that lands in between is then not missed.
    pub fn watch(self: &Arc<Self>, apps: Vec<AppKey>) -> Watch {
        let notify = Arc::new(Notify::new());
        let mut inner = self.inner.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.held += 1;
        for app in &apps {
            inner
                .by_app
                .entry(app.clone())
                .or_default()
                .insert(id, notify.clone());
        }
        Watch {
            hub: self.clone(),
            id,
            apps,
            notify,
        }
    }

    /// Wakes the watches of the changed apps, and no other.
    pub fn notify(&self, changed: &[AppKey]) {
        let mut inner = self.inner.lock();
        inner.last_wake = Some(Instant::now());
        for app in changed {
            if let Some(watches) = inner.by_app.get(app) {
                watches.values().for_each(|n| n.notify_one());
            }
        }
    }

    /// Wakes every watch: the whole registry was replaced (a snapshot).
    pub fn notify_all(&self) {
        let mut inner = self.inner.lock();
        inner.last_wake = Some(Instant::now());
        inner
            .by_app
            .values()
            .flat_map(HashMap::values)
            .for_each(|n| n.notify_one());
    }

    /// The node stops: wakes every watch, and [`is_closed`] tells the held
    /// polls to answer now (`-304`, on a connection that then closes), so
    /// their clients poll another node instead of waiting out the hold.
    ///
    /// [`is_closed`]: PollHub::is_closed
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Time since watches were last woken: for a poll just woken, about
    /// the time from the change to now.
    pub fn since_last_wake(&self) -> Option<Duration> {
        self.inner.lock().last_wake.map(|at| at.elapsed())
    }

    /// How many polls are held.
    pub fn held(&self) -> usize {
        self.inner.lock().held
    }
}

impl Watch {
    /// Resolves when one of the watched apps changed since the watch was
    /// registered or last woke.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inner = self.hub.inner.lock();
        inner.held -= 1;
        for app in &self.apps {
            if let Some(watches) = inner.by_app.get_mut(app) {
                watches.remove(&self.id);
                if watches.is_empty() {
                    inner.by_app.remove(app);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(appid: &str) -> AppKey {
        AppKey::new("dev", appid)
    }

    async fn woke(w: &Watch) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn wakes_only_watchers_of_the_changed_app() {
        let hub = PollHub::new();
        let a = hub.watch(vec![key("a")]);
        let b = hub.watch(vec![key("b")]);
        let ab = hub.watch(vec![key("a"), key("b")]);
        hub.notify(&[key("a")]);
        assert!(woke(&a).await);
        assert!(!woke(&b).await);
        assert!(woke(&ab).await);
    }

    #[tokio::test]
    async fn closing_wakes_every_watch() {
        let hub = PollHub::new();
        let a = hub.watch(vec![key("a")]);
        let b = hub.watch(vec![key("b")]);
        assert!(!hub.is_closed());
        hub.close();
        assert!(hub.is_closed());
        assert!(woke(&a).await);
        assert!(woke(&b).await);
    }

    #[tokio::test]
    async fn a_change_before_waiting_is_not_lost() {
        let hub = PollHub::new();
        let a = hub.watch(vec![key("a")]);
        hub.notify(&[key("a")]);
        assert!(woke(&a).await);
    }

    #[tokio::test]
    async fn dropping_a_watch_unregisters_it() {
        let hub = PollHub::new();
        let a = hub.watch(vec![key("a"), key("b")]);
        let same_host_again = hub.watch(vec![key("a")]);
        assert_eq!(hub.held(), 2);
        drop(a);
        assert_eq!(hub.held(), 1);
        hub.notify(&[key("a")]);
        assert!(woke(&same_host_again).await);
        drop(same_host_again);
        assert_eq!(hub.held(), 0);
        assert!(hub.inner.lock().by_app.is_empty());
    }

    #[tokio::test]
    async fn notify_all_wakes_everyone() {
        let hub = PollHub::new();
        let a = hub.watch(vec![key("a")]);
        let b = hub.watch(vec![key("b")]);
        hub.notify_all();
        assert!(woke(&a).await && woke(&b).await);
    }
}
