//! `discovery-chaos`: proof that failover is safe, on the docker-compose
//! cluster. It runs a discovery workload while injecting faults one after
//! another, lets the cluster heal between them, then checks that no
//! acknowledged write was lost, no instance appeared that nobody
//! registered, every node reached the same registry, and every watcher saw
//! the final state; it prints per-fault failover figures and exits
//! non-zero on any violation.
//!
//! - [`cluster`]: the nodes (found by container labels) and their status;
//! - [`docker`]: the docker CLI and nsenter;
//! - [`faults`]: each fault, injected and undone;
//! - [`client`]: discovery requests, answers classified for the history;
//! - [`history`]: what clients were told, per instance;
//! - [`workload`]: registrars, renewer, cancellers, prober;
//! - [`poller`]: the watchers;
//! - [`measure`]: leadership samples and probe writes, reduced to figures;
//! - [`check`]: the verdict on the final state;
//! - [`report`]: the tables.

mod check;
mod client;
mod cluster;
mod docker;
mod faults;
mod history;
mod measure;
mod poller;
mod report;
mod workload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use check::{AppState, Evidence, NodeState};
use client::Client;
use cluster::Cluster;
use faults::{FaultKind, Injected};
use history::{History, Key};
use measure::Record;
use report::Round;
use workload::{Settings, Workload};

#[derive(Parser)]
#[command(
    name = "discovery-chaos",
    about = "Fault injection and a safety check for the compose cluster"
)]
struct Cli {
    /// Fault rounds; faults are taken from --faults in turn.
    #[arg(long, default_value_t = 16)]
    rounds: usize,
    /// The faults, in the order they are injected.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill-leader,kill-follower,pause-leader,cut-off-follower,partition-leader,lossy-net-leader,slow-disk-leader,restart-all"
    )]
    faults: Vec<FaultKind>,
    /// How long each fault is held before it is undone.
    #[arg(long, default_value_t = 8)]
    hold_secs: u64,
    /// Pause after the cluster is healthy again, before the next fault.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// A cluster not healthy this long after a fault is undone fails the run.
    #[arg(long, default_value_t = 60)]
    heal_timeout_secs: u64,
    #[arg(long, default_value_t = 4)]
    apps: usize,
    #[arg(long, default_value_t = 2)]
    registrars: usize,
    #[arg(long, default_value_t = 2)]
    cancellers: usize,
    #[arg(long, default_value_t = 3)]
    pollers: usize,
    /// Registrars stop registering above this many live instances.
    #[arg(long, default_value_t = 200)]
    live_cap: usize,
    #[arg(long, default_value_t = 100)]
    register_every_ms: u64,
    #[arg(long, default_value_t = 300)]
    cancel_every_ms: u64,
    #[arg(long, default_value_t = 3000)]
    renew_every_ms: u64,
    /// The nodes' poll hold time (`poll.hold_ms`).
    #[arg(long, default_value_t = 30)]
    poll_hold_secs: u64,
    /// The nodes' eviction threshold (`eviction.threshold_ms`).
    #[arg(long, default_value_t = 90)]
    eviction_threshold_secs: u64,
    /// A leader whose quorum has not acknowledged it for longer does not
    /// count as one.
    #[arg(long, default_value_t = 300)]
    quorum_fresh_ms: u64,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Progress on stderr, stamped with the time since the start.
macro_rules! say {
    ($start:expr, $($arg:tt)*) => {
        eprintln!("[{:7.1}s] {}", $start.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let start = Instant::now();
    let cluster = Arc::new(Cluster::discover(Duration::from_millis(cli.quorum_fresh_ms)).await?);
    say!(
        start,
        "nodes {:?}, raft network {}",
        cluster.clients(),
        cluster.raft_network
    );
    cluster
        .wait_healthy(Duration::from_secs(cli.heal_timeout_secs))
        .await
        .ok_or_else(|| anyhow::anyhow!("the cluster is not healthy to begin with"))?;

    let client = Client::new()?;
    let baseline = Arc::new(
        settled(&cluster, &client, Duration::from_secs(30))
            .await
            .baseline(),
    );
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let settings = Settings {
        run: run.clone(),
        apps: cli.apps,
        registrars: cli.registrars,
        cancellers: cli.cancellers,
        pollers: cli.pollers,
        live_cap: cli.live_cap,
        register_every: Duration::from_millis(cli.register_every_ms),
        cancel_every: Duration::from_millis(cli.cancel_every_ms),
        renew_every: Duration::from_millis(cli.renew_every_ms),
        poll_hold: Duration::from_secs(cli.poll_hold_secs),
        seed: cli.seed,
    };
    let history = Arc::new(History::default());
    let record = Arc::new(Record::default());
    let (stop_sampling, sampling) = watch::channel(false);
    let sampler = tokio::spawn(record.clone().sample(cluster.clone(), sampling));
    let mut workload = Workload::start(
        &settings,
        client.clone(),
        cluster.clients(),
        history.clone(),
        baseline.clone(),
        record.clone(),
    )
    .await?;
    say!(
        start,
        "run {run}: workload started ({} baseline instances)",
        baseline.len()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The faults. Ctrl-C undoes the one under way before leaving.
    let current: Arc<Mutex<Option<Injected>>> = Arc::default();
    let rounds = tokio::select! {
        r = fault_rounds(&cli, &cluster, &workload, &record, &current, start) => r,
        _ = tokio::signal::ctrl_c() => {
            let injected = current.lock().take();
            if let Some(injected) = injected {
                say!(start, "interrupted: undoing {}", injected.kind.name());
                faults::heal(&cluster, &injected).await?;
            }
            anyhow::bail!("interrupted");
        }
    };

    // Quiet, then the verdict.
    say!(
        start,
        "stopping the writers ({} live instances)",
        workload.live()
    );
    workload.stop_writes().await;
    let history = history.close(std::time::Instant::now());
    let _ = cluster
        .wait_healthy(Duration::from_secs(cli.heal_timeout_secs))
        .await;
    let states = settled(&cluster, &client, Duration::from_secs(60)).await;
    let apps = final_apps(&cluster, &client, &settings.appids()).await;
    let catch_up = Duration::from_secs(cli.poll_hold_secs + 10);
    let deadline = Instant::now() + catch_up;
    while Instant::now() < deadline
        && !workload.poller_states.iter().all(|p| {
            apps.iter()
                .all(|(a, want)| p.lock().apps.get(a) == Some(want))
        })
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pollers = workload.stop_polls().await;
    let _ = stop_sampling.send(true);
    let _ = sampler.await;

    let mut verdict = check::judge(&Evidence {
        history: &history,
        baseline: &baseline,
        sent: client::sent,
        nodes: &states.nodes,
        apps: &apps,
        pollers: &pollers,
        eviction_threshold: Duration::from_secs(cli.eviction_threshold_secs),
    });
    for appid in settings.appids().iter().filter(|a| !apps.contains_key(*a)) {
        verdict.violations.push(check::Violation {
            kind: "unreadable",
            detail: format!("{appid}: no final state from the leader"),
        });
    }
    let unhealed = rounds
        .iter()
        .filter(|r| r.ran && r.healed.is_none())
        .count();
    let not_run = rounds
        .iter()
        .filter(|r| !r.ran && r.note.as_deref() != Some(SKIPPED))
        .count();
    let text = format!(
        "## Chaos run {run}\n\n{} fault rounds, hold {} s, on {} nodes; digest {} at index {}.\n\n### Per fault\n\n{}\n### By fault kind\n\n{}\n### Workload and verdict\n\n{}\n{}",
        rounds.iter().filter(|r| r.ran).count(),
        cli.hold_secs,
        cluster.nodes.len(),
        states.digest(),
        states.index(),
        report::rounds(&rounds),
        report::by_fault(&rounds),
        report::summary(&history, &pollers, &verdict),
        violations_text(&verdict, unhealed, not_run),
    );
    println!("{text}");
    if let Some(path) = &cli.report {
        std::fs::write(path, &text)?;
    }
    if !verdict.violations.is_empty() || unhealed > 0 || not_run > 0 {
        std::process::exit(1);
    }
    Ok(())
}

const SKIPPED: &str = "skipped: needs root";

fn violations_text(verdict: &check::Verdict, unhealed: usize, not_run: usize) -> String {
    let mut out = String::new();
    if unhealed > 0 {
        out.push_str(&format!(
            "\n**{unhealed} fault(s) after which the cluster did not heal.**\n"
        ));
    }
    if not_run > 0 {
        out.push_str(&format!(
            "\n**{not_run} fault(s) could not be injected (see the notes).**\n"
        ));
    }
    if verdict.violations.is_empty() {
        out.push_str("\nNo violations.\n");
    } else {
        out.push_str("\n**Violations:**\n\n");
        for v in verdict.violations.iter().take(50) {
            out.push_str(&format!("- {}: {}\n", v.kind, v.detail));
        }
        if verdict.violations.len() > 50 {
            out.push_str(&format!("- … and {} more\n", verdict.violations.len() - 50));
        }
    }
    out
}

/// Runs the fault rounds; stops early if the cluster does not heal.
async fn fault_rounds(
    cli: &Cli,
    cluster: &Cluster,
    workload: &Workload,
    record: &Record,
    current: &Mutex<Option<Injected>>,
    start: Instant,
) -> Vec<Round> {
    let root = docker::is_root();
    let mut rounds = Vec::new();
    for n in 1..=cli.rounds {
        let kind = cli.faults[(n - 1) % cli.faults.len()];
        let mut round = Round {
            n,
            fault: kind,
            targets: Vec::new(),
            figures: Default::default(),
            no_leader_after_undo: Duration::ZERO,
            ran: false,
            healed: None,
            note: None,
        };
        if kind.needs_root() && !root {
            round.note = Some(SKIPPED.into());
            rounds.push(round);
            continue;
        }
        let Some(leader) = wait_leader(cluster, Duration::from_secs(cli.heal_timeout_secs)).await
        else {
            round.note = Some("no leader to aim at".into());
            rounds.push(round);
            break;
        };
        let injected = match faults::inject(kind, cluster, leader).await {
            Ok(i) => i,
            Err(e) => {
                say!(start, "round {n}: {} failed to inject: {e:#}", kind.name());
                round.note = Some(format!("not injected: {e:#}"));
                rounds.push(round);
                continue;
            }
        };
        // The fault is in effect once the command that injects it returns.
        let injected_at = Instant::now();
        round.ran = true;
        round.targets.clone_from(&injected.targets);
        let hit: Vec<String> = injected
            .targets
            .iter()
            .map(|id| cluster.node(*id).client.clone())
            .collect();
        if hit.len() < cluster.nodes.len() {
            workload.spare(&hit);
        }
        say!(
            start,
            "round {n}: {} on node {:?} (leader was {leader})",
            kind.name(),
            injected.targets
        );
        *current.lock() = Some(injected);
        if kind.held() {
            tokio::time::sleep(Duration::from_secs(cli.hold_secs)).await;
        }
        let injected = current.lock().take();
        let heal_started = Instant::now();
        if let Some(injected) = &injected {
            if let Err(e) = faults::heal(cluster, injected).await {
                round.note = Some(format!("undo failed: {e:#}"));
            }
        }
        round.healed = cluster
            .wait_healthy(Duration::from_secs(cli.heal_timeout_secs))
            .await
            .map(|_| heal_started.elapsed());
        let healthy_at = Instant::now();
        workload.spare(&[]);
        round.figures = record.figures(injected_at, healthy_at);
        round.no_leader_after_undo = record.figures(heal_started, healthy_at).no_leader;
        say!(
            start,
            "round {n}: healed after {:?}; no leader {:?}, writes back after {:?}",
            round.healed,
            round.figures.no_leader,
            round.figures.writes_back
        );
        let healed = round.healed.is_some();
        rounds.push(round);
        if !healed {
            say!(start, "the cluster did not heal: no more faults");
            break;
        }
        tokio::time::sleep(Duration::from_secs(cli.settle_secs)).await;
    }
    rounds
}

/// The node leading with its quorum, waiting up to `timeout` for one.
async fn wait_leader(cluster: &Cluster, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(l) = cluster.leader().await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Every node's final state, read once all nodes stand at the same log
/// index and it does not move while their registries are read.
struct Settled {
    nodes: Vec<NodeState>,
}

impl Settled {
    /// Instances on the first node that answered: what was there before.
    fn baseline(&self) -> HashSet<Key> {
        self.nodes
            .iter()
            .find_map(|n| n.instances.as_ref())
            .map(|i| i.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn digest(&self) -> String {
        self.nodes
            .iter()
            .find_map(|n| n.digest.as_ref())
            .map_or("-".into(), |d| {
                d.digest[..12.min(d.digest.len())].to_string()
            })
    }

    fn index(&self) -> String {
        self.nodes
            .iter()
            .find_map(|n| n.digest.as_ref()?.applied_index)
            .map_or("-".into(), |i| i.to_string())
    }
}

async fn settled(cluster: &Cluster, client: &Client, timeout: Duration) -> Settled {
    let deadline = Instant::now() + timeout;
    loop {
        let before =
            futures::future::join_all(cluster.nodes.iter().map(|n| cluster.digest(n))).await;
        let same_index = before.iter().all(|d| d.is_some())
            && before.windows(2).all(|w| {
                w[0].as_ref().map(|d| d.applied_index) == w[1].as_ref().map(|d| d.applied_index)
            });
        let instances =
            futures::future::join_all(cluster.nodes.iter().map(|n| client.all(&n.client))).await;
        let after =
            futures::future::join_all(cluster.nodes.iter().map(|n| cluster.digest(n))).await;
        let still = before.iter().zip(&after).all(|(b, a)| {
            b.as_ref().map(|d| d.applied_index) == a.as_ref().map(|d| d.applied_index)
        });
        if (same_index && still) || Instant::now() >= deadline {
            return Settled {
                nodes: cluster
                    .nodes
                    .iter()
                    .zip(before.into_iter().zip(instances))
                    .map(|(n, (digest, instances))| NodeState {
                        node: format!("node{}", n.id),
                        digest,
                        instances: instances.ok(),
                    })
                    .collect(),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each watched app as the leader holds it at the end.
async fn final_apps(
    cluster: &Cluster,
    client: &Client,
    appids: &[String],
) -> HashMap<String, AppState> {
    let node = match cluster.leader().await {
        Some(id) => cluster.node(id).client.clone(),
        None => cluster.nodes[0].client.clone(),
    };
    let mut apps = HashMap::new();
    for appid in appids {
        if let Ok(state) = client.fetch(&node, appid).await {
            apps.insert(appid.clone(), state);
        }
    }
    apps
}
