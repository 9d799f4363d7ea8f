//! A watcher, as an SDK's long poll is: it polls the chaos apps on one node,
//! moves to another when that one fails, and keeps the last state it saw
//! of each app. It notes anything a watcher must never see: a timestamp
//! that does not move forward, an instance nobody registered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::check::PollerState;
use crate::client::{Client, Polled, ENV, ZONE};
use crate::history::{History, Key};

/// What a poller needs.
pub struct Poller {
    pub client: Client,
    pub nodes: Vec<String>,
    /// The node it starts on.
    pub first: usize,
    pub apps: Vec<String>,
    pub hold: Duration,
    pub history: Arc<History>,
    pub baseline: Arc<HashSet<Key>>,
    pub state: Arc<Mutex<PollerState>>,
}

impl Poller {
    /// Polls until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = self.state.lock().name.clone();
        let mut seen: HashMap<String, i64> = self.apps.iter().map(|a| (a.clone(), 0)).collect();
        let mut at = self.first;
        // Each unknown instance is told once, however many answers hold it.
        let mut phantoms: HashSet<Key> = HashSet::new();
        loop {
            let node = &self.nodes[at % self.nodes.len()];
            let apps: Vec<(String, i64)> = self.apps.iter().map(|a| (a.clone(), seen[a])).collect();
            let answer = tokio::select! {
                a = self.client.poll(node, &name, &apps, self.hold) => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            match answer {
                Ok(Polled::Changed(changed)) => {
                    let mut state = self.state.lock();
                    for (appid, app) in changed {
                        let before = seen.get(&appid).copied().unwrap_or(0);
                        if app.latest_timestamp <= before {
                            state.problems.push(format!(
                                "{appid} answered at {} after {before} from {node}",
                                app.latest_timestamp
                            ));
                        }
                        for host in &app.hosts {
                            let key = Key {
                                env: ENV.into(),
                                appid: appid.clone(),
                                zone: ZONE.into(),
                                hostname: host.clone(),
                            };
                            let unknown =
                                !self.history.knows(&key) && !self.baseline.contains(&key);
                            if unknown && phantoms.insert(key.clone()) {
                                state
                                    .problems
                                    .push(format!("{key:?} from {node}: nobody registered it"));
                            }
                        }
                        seen.insert(appid.clone(), app.latest_timestamp);
                        state.apps.insert(appid, app);
                        state.changes += 1;
                    }
                }
                Ok(Polled::NotModified) => {}
                Err(_) => {
                    at += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }
}
