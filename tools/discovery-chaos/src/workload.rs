//! The clients that run while faults are injected:
//!
//! - registrars register new instances (retrying on another node when an
//!   answer does not come), up to a number of live instances;
//! - a renewer renews every live instance, as SDKs do;
//! - cancellers take live instances away from the renewer and cancel them;
//! - a prober re-registers one instance back to back on the nodes the
//!   current fault spares, for the failover figures;
//! - pollers watch every app (see [`crate::poller`]).
//!
//! Hostnames are never reused, so a cancelled instance comes back only if
//! the cluster applied a register nobody was told succeeded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::check::PollerState;
use crate::client::{Client, ENV, ZONE};
use crate::history::{Answer, History, Key};
use crate::measure::{Probe, Record};
use crate::poller::Poller;

/// Attempts of one register or cancel before it is given up as "maybe".
const ATTEMPTS: usize = 3;
/// Renews under way at once.
const RENEW_CONCURRENCY: usize = 16;
/// Probe writes under way at once.
const MAX_PROBES: usize = 128;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Makes this run's hostnames unique.
    pub run: String,
    pub apps: usize,
    pub registrars: usize,
    pub cancellers: usize,
    pub pollers: usize,
    pub live_cap: usize,
    pub register_every: Duration,
    pub cancel_every: Duration,
    pub renew_every: Duration,
    pub poll_hold: Duration,
    pub seed: u64,
}

impl Settings {
    /// The apps registrars and pollers use; the probe's app is apart.
    pub fn appids(&self) -> Vec<String> {
        (0..self.apps).map(|i| format!("chaos.app{i}")).collect()
    }
}

/// What the workload's tasks share.
struct Shared {
    client: Client,
    nodes: Vec<String>,
    history: Arc<History>,
    /// Instances the renewer keeps alive, cancellers pick from.
    live: Mutex<Vec<Key>>,
    /// Nodes the prober leaves alone (those the current fault hit).
    spared: Mutex<HashSet<String>>,
    record: Arc<Record>,
}

/// The running workload.
pub struct Workload {
    shared: Arc<Shared>,
    stop_writes: watch::Sender<bool>,
    writers: JoinSet<()>,
    stop_polls: watch::Sender<bool>,
    pollers: JoinSet<()>,
    pub poller_states: Vec<Arc<Mutex<PollerState>>>,
}

fn key(appid: &str, hostname: String) -> Key {
    Key {
        env: ENV.into(),
        appid: appid.into(),
        zone: ZONE.into(),
        hostname,
    }
}

impl Shared {
    fn pick(&self, rng: &mut StdRng, not: Option<usize>) -> usize {
        loop {
            let i = rng.gen_range(0..self.nodes.len());
            if Some(i) != not || self.nodes.len() == 1 {
                return i;
            }
        }
    }

    /// Registers `key`, trying other nodes while answers do not come; the
    /// last answer.
    async fn register(&self, key: &Key, rng: &mut StdRng) -> Answer {
        let mut last = None;
        let mut answer = Answer::Maybe("not sent".into());
        for _ in 0..ATTEMPTS {
            let at = self.pick(rng, last);
            last = Some(at);
            self.history.registering(key);
            answer = self.client.register(&self.nodes[at], key).await;
            self.history
                .registered(key, &answer, Instant::now().into_std());
            if !matches!(answer, Answer::Maybe(_)) {
                break;
            }
        }
        answer
    }

    async fn cancel(&self, key: &Key, rng: &mut StdRng) {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let at = self.pick(rng, last);
            last = Some(at);
            self.history.cancelling(key);
            let answer = self.client.cancel(&self.nodes[at], key).await;
            self.history.cancelled(key, &answer);
            if !matches!(answer, Answer::Maybe(_)) {
                return;
            }
        }
    }
}

impl Workload {
    /// Registers one anchor instance per app (so every app always has an
    /// up instance for pollers to see), then starts every task.
    pub async fn start(
        settings: &Settings,
        client: Client,
        nodes: Vec<String>,
        history: Arc<History>,
        baseline: Arc<HashSet<Key>>,
        record: Arc<Record>,
    ) -> anyhow::Result<Workload> {
        let shared = Arc::new(Shared {
            client: client.clone(),
            nodes: nodes.clone(),
            history: history.clone(),
            live: Mutex::new(Vec::new()),
            spared: Mutex::new(HashSet::new()),
            record,
        });
        let mut rng = StdRng::seed_from_u64(settings.seed);
        let mut anchors = Vec::new();
        for appid in settings.appids() {
            let anchor = key(&appid, format!("{}-anchor", settings.run));
            let deadline = Instant::now() + Duration::from_secs(60);
            while shared.register(&anchor, &mut rng).await != Answer::Acked {
                anyhow::ensure!(Instant::now() < deadline, "could not register {anchor:?}");
            }
            history.renewing(&anchor);
            anchors.push(anchor);
        }

        let (stop_writes, stopped) = watch::channel(false);
        let mut writers = JoinSet::new();
        for r in 0..settings.registrars {
            writers.spawn(registrar(
                shared.clone(),
                settings.clone(),
                r,
                stopped.clone(),
            ));
        }
        for c in 0..settings.cancellers {
            writers.spawn(canceller(
                shared.clone(),
                settings.clone(),
                c,
                stopped.clone(),
            ));
        }
        writers.spawn(renewer(
            shared.clone(),
            anchors.clone(),
            settings.clone(),
            stopped.clone(),
        ));
        writers.spawn(prober(shared.clone(), settings.run.clone(), stopped));

        let (stop_polls, polls_stopped) = watch::channel(false);
        let mut pollers = JoinSet::new();
        let mut poller_states = Vec::new();
        for p in 0..settings.pollers {
            let state = Arc::new(Mutex::new(PollerState {
                name: format!("{}-poller{p}", settings.run),
                ..PollerState::default()
            }));
            poller_states.push(state.clone());
            let poller = Poller {
                client: client.clone(),
                nodes: nodes.clone(),
                first: p,
                apps: settings.appids(),
                hold: settings.poll_hold,
                history: history.clone(),
                baseline: baseline.clone(),
                state,
            };
            pollers.spawn(poller.run(polls_stopped.clone()));
        }
        Ok(Workload {
            shared,
            stop_writes,
            writers,
            stop_polls,
            pollers,
            poller_states,
        })
    }

    /// Keeps the prober off these nodes (the ones a fault hit).
    pub fn spare(&self, nodes: &[String]) {
        *self.shared.spared.lock() = nodes.iter().cloned().collect();
    }

    /// Instances being renewed now.
    pub fn live(&self) -> usize {
        self.shared.live.lock().len()
    }

    /// Stops every writer and waits for the requests under way.
    pub async fn stop_writes(&mut self) {
        let _ = self.stop_writes.send(true);
        while self.writers.join_next().await.is_some() {}
    }

    /// Stops the pollers; what each saw last.
    pub async fn stop_polls(&mut self) -> Vec<PollerState> {
        let _ = self.stop_polls.send(true);
        while self.pollers.join_next().await.is_some() {}
        self.poller_states
            .iter()
            .map(|s| s.lock().clone())
            .collect()
    }
}

/// Sleeps `d` unless stopped first; whether to go on.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}

async fn registrar(
    shared: Arc<Shared>,
    settings: Settings,
    r: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(settings.seed ^ (0x100 + r as u64));
    let appids = settings.appids();
    let mut seq = 0usize;
    while pause(settings.register_every, &mut stop).await {
        if shared.live.lock().len() >= settings.live_cap {
            continue;
        }
        let k = key(
            &appids[seq % appids.len()],
            format!("{}-r{r}-{seq}", settings.run),
        );
        seq += 1;
        // Acknowledged or perhaps applied: either way clients renew it.
        if matches!(
            shared.register(&k, &mut rng).await,
            Answer::Acked | Answer::Maybe(_)
        ) {
            shared.history.renewing(&k);
            shared.live.lock().push(k);
        }
    }
}

async fn canceller(
    shared: Arc<Shared>,
    settings: Settings,
    c: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(settings.seed ^ (0x200 + c as u64));
    while pause(settings.cancel_every, &mut stop).await {
        let picked = {
            let mut live = shared.live.lock();
            if live.is_empty() {
                continue;
            }
            let i = rng.gen_range(0..live.len());
            live.swap_remove(i)
        };
        shared.cancel(&picked, &mut rng).await;
    }
}

async fn renewer(
    shared: Arc<Shared>,
    anchors: Vec<Key>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let rng = Mutex::new(StdRng::seed_from_u64(settings.seed ^ 0x300));
    loop {
        let round = Instant::now();
        let mut keys = anchors.clone();
        keys.extend(shared.live.lock().iter().cloned());
        futures::stream::iter(keys)
            .for_each_concurrent(RENEW_CONCURRENCY, |k| {
                let shared = shared.clone();
                let at = shared.pick(&mut rng.lock(), None);
                async move {
                    let answer = shared.client.renew(&shared.nodes[at], &k).await;
                    shared
                        .history
                        .renewed(&k, &answer, Instant::now().into_std());
                }
            })
            .await;
        let rest = settings.renew_every.saturating_sub(round.elapsed());
        if !pause(rest, &mut stop).await {
            return;
        }
    }
}

/// Sends a probe write every 50 ms without waiting for the ones under
/// way: one stuck on a dead leader's connection must not hide that writes
/// sent after it succeed.
async fn prober(shared: Arc<Shared>, run: String, mut stop: watch::Receiver<bool>) {
    let k = Arc::new(key("chaos.probe", format!("{run}-probe")));
    let mut turn = 0usize;
    let mut under_way = JoinSet::new();
    while pause(Duration::from_millis(50), &mut stop).await {
        while under_way.try_join_next().is_some() {}
        let targets: Vec<String> = {
            let spared = shared.spared.lock();
            shared
                .nodes
                .iter()
                .filter(|n| !spared.contains(*n))
                .cloned()
                .collect()
        };
        let Some(node) = targets.get(turn % targets.len().max(1)).cloned() else {
            continue;
        };
        turn += 1;
        if under_way.len() >= MAX_PROBES {
            continue;
        }
        let (shared, k) = (shared.clone(), k.clone());
        under_way.spawn(async move {
            shared.history.registering(&k);
            let started = Instant::now();
            let answer = shared.client.register(&node, &k).await;
            let ended = Instant::now();
            shared.history.registered(&k, &answer, ended.into_std());
            let acked = answer == Answer::Acked;
            if acked {
                // Re-registered back to back, it needs no renews of its own.
                shared.history.renewing(&k);
            }
            shared.record.probe(Probe {
                started,
                ended,
                acked,
            });
        });
    }
    while under_way.join_next().await.is_some() {}
}
