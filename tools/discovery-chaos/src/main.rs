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
//! - [`rounds`]: each fault aimed, injected, undone, healed;
//! - [`settle`]: the final state, read once the cluster is quiet;
//! - [`report`]: the tables;
//! - [`zones`]: zone faults on the two-zone cluster, checked per origin
//!   zone.

/// Progress on stderr, stamped with the time since the start.
macro_rules! say {
    ($start:expr, $($arg:tt)*) => {
        eprintln!("[{:7.1}s] {}", $start.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

mod check;
mod client;
mod cluster;
mod docker;
mod faults;
mod history;
mod hostile;
mod measure;
mod poller;
mod report;
mod rounds;
mod settle;
mod workload;
mod zones;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use check::Evidence;
use client::Client;
use cluster::Cluster;
use faults::{FaultKind, Injected};
use history::History;
use measure::Record;
use rounds::Plan;
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
    /// Run zone faults on the two-zone compose cluster
    /// (docker-compose.zones.yml) instead, with --zone-faults, --rounds,
    /// --hold-secs, --heal-timeout-secs, --apps and --register-every-ms.
    #[arg(long)]
    zones: bool,
    /// The zone faults, in the order they are injected.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cut-link,kill-zone-leader,restart-zone"
    )]
    zone_faults: Vec<zones::ZoneFault>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.zones {
        let plan = zones::Plan {
            rounds: cli.rounds,
            faults: cli.zone_faults.clone(),
            hold: Duration::from_secs(cli.hold_secs),
            heal_timeout: Duration::from_secs(cli.heal_timeout_secs),
            apps: cli.apps,
            register_every: Duration::from_millis(cli.register_every_ms),
        };
        if zones::run(&plan).await? > 0 {
            std::process::exit(1);
        }
        return Ok(());
    }
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
        settle::settled(&cluster, &client, Duration::from_secs(30))
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
    let plan = Plan {
        rounds: cli.rounds,
        faults: cli.faults.clone(),
        hold: Duration::from_secs(cli.hold_secs),
        settle: Duration::from_secs(cli.settle_secs),
        heal_timeout: Duration::from_secs(cli.heal_timeout_secs),
    };
    let current: Arc<Mutex<Option<Injected>>> = Arc::default();
    let rounds = tokio::select! {
        r = rounds::fault_rounds(&plan, &cluster, &workload, &record, &current, start) => r,
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
    let states = settle::settled(&cluster, &client, Duration::from_secs(60)).await;
    let apps = settle::final_apps(&cluster, &client, &settings.appids()).await;
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
    for round in &rounds {
        let Some(forged) = &round.forged else {
            continue;
        };
        if forged.accepted.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            verdict.violations.push(check::Violation {
                kind: "forged peer message accepted",
                detail: format!("round {}: {}", round.n, forged.summary()),
            });
        }
    }
    if rounds.iter().any(|r| r.forged.is_some()) {
        for node in &cluster.nodes {
            if cluster.holds_app(node, hostile::FORGED_APP).await {
                verdict.violations.push(check::Violation {
                    kind: "forged write applied",
                    detail: format!("node {} serves {}", node.id, hostile::FORGED_APP),
                });
            }
        }
    }
    let unhealed = rounds
        .iter()
        .filter(|r| r.ran && r.healed.is_none())
        .count();
    let not_run = rounds
        .iter()
        .filter(|r| !r.ran && r.note.as_deref() != Some(rounds::SKIPPED))
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
        report::violations(&verdict, unhealed, not_run),
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
