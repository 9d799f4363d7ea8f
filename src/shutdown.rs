//! The shutdown signal every long-lived task of a node watches: a
//! `watch` flag that turns true once, when the node stops.

use tokio::sync::watch;

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Why the node cannot go on, once it cannot: its Raft core stopped on
/// its own (a panic, a storage failure), or most of its cluster says its
/// data is another cluster's. The first reason raised stands; the process
/// stops with it and a non-zero exit, so that a supervisor restarts it and
/// an operator reads why, rather than a node that answers `503` forever.
#[derive(Clone)]
pub struct Faults(watch::Sender<Option<String>>);

impl Default for Faults {
    fn default() -> Self {
        Faults(watch::Sender::new(None))
    }
}

impl Faults {
    /// Raises `why`, unless a reason was raised before.
    pub fn raise(&self, why: String) {
        self.0.send_if_modified(|reason| {
            if reason.is_some() {
                return false;
            }
            tracing::error!("{why}");
            *reason = Some(why);
            true
        });
    }

    /// The reason raised, once one is.
    pub async fn raised(&self) -> String {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let reason = rx.wait_for(Option::is_some).await.map(|r| r.clone());
        reason.ok().flatten().unwrap_or_default()
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
        assert_eq!(waiting.await.unwrap(), "first");
        assert_eq!(faults.raised().await, "first");
    }
}
