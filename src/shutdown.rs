//! The shutdown signal every long-lived task of a node watches: a
//! `watch` flag that turns true once, when the node stops.

use tokio::sync::watch;

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Why a node stops on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It cannot go on: the process ends with this reason and a non-zero
    /// exit.
    Fault(String),
    /// It set out to rebuild its data from its cluster (see
    /// `crate::cluster::repair`): the process starts it again, empty.
    Rebuild(String),
}

/// Why the node cannot go on, once it cannot: its Raft core stopped on
/// its own (a panic, a storage failure), or most of its cluster says its
/// data is another cluster's. The first reason raised stands; the process
/// stops with it and a non-zero exit, so that a supervisor restarts it and
/// an operator reads why, rather than a node that answers `503` forever.
/// A node that sets out to rebuild its data stops the same way, and starts
/// again in the same process.
#[derive(Clone)]
pub struct Faults(watch::Sender<Option<Stop>>);

impl Default for Faults {
    fn default() -> Self {
        Faults(watch::Sender::new(None))
    }
}

impl Faults {
    /// Raises `why`, unless a reason was raised before.
    pub fn raise(&self, why: String) {
        self.stop(Stop::Fault(why));
    }

    /// Stops the node to rebuild its data, unless a fault was raised
    /// before.
    pub fn rebuild(&self, why: String) {
        self.stop(Stop::Rebuild(why));
    }

    fn stop(&self, stop: Stop) {
        self.0.send_if_modified(|reason| {
            if reason.is_some() {
                return false;
            }
            match &stop {
                Stop::Fault(why) => tracing::error!("{why}"),
                Stop::Rebuild(why) => tracing::warn!("stopping to rebuild: {why}"),
            }
            *reason = Some(stop);
            true
        });
    }

    /// The reason raised, once one is.
    pub async fn raised(&self) -> Stop {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let reason = rx.wait_for(Option::is_some).await.map(|r| r.clone());
        reason.ok().flatten().unwrap_or(Stop::Fault(String::new()))
    }
}

/// Raises a fault when `raft`'s core stops while the node is not stopping
/// (`stop` still false); ends when the node stops.
pub async fn watch_core(raft: crate::raft::Raft, faults: Faults, mut stop: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    loop {
        let state = metrics.borrow_and_update().running_state.clone();
        if let Err(e) = state {
            if !*stop.borrow() {
                faults.raise(format!("the Raft core stopped: {e}"));
            }
            return;
        }
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    if !*stop.borrow() {
                        faults.raise(
                            "the Raft core stopped without a word (a panic: see the lines above)"
                                .into(),
                        );
                    }
                    return;
                }
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_fault_raised_stands() {
        let faults = Faults::default();
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.raised().await }
        });
        faults.raise("first".into());
        faults.raise("second".into());
        faults.rebuild("third".into());
        assert_eq!(waiting.await.unwrap(), Stop::Fault("first".into()));
        assert_eq!(faults.raised().await, Stop::Fault("first".into()));
    }
}
