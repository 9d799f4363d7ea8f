//! `failover`: the leader is SIGKILLed while clients write through every
//! node and read from the others. Each run measures the time from the kill
//! until the first write sent through a survivor after the kill succeeds,
//! the time until a survivor's `/admin/status` names a new leader, and the
//! reads on the survivors that failed meanwhile (there should be none:
//! followers serve reads from their applied registry).
//!
//! Between runs the killed node is restarted on its data directory and the
//! bench waits until it has caught up, so every run starts from a full
//! three-node cluster, led by whichever node won the last election.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::cluster::{Cluster, RaftSettings};
use crate::discovery::{self, fetch_target, get, post_form, Fleet};
use crate::fill::fill;
use crate::http::Conn;
use crate::load::{exchange, REQUEST_TIMEOUT};
use crate::server::Launch;
use crate::stats::{Latencies, Ms};

/// Instances registered before the first run, for the readers to fetch.
const READ_INSTANCES: u64 = 100;

/// The longest a run may go without a write succeeding again.
const GAP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the survivors' status is read for a new leader.
const STATUS_EVERY: Duration = Duration::from_millis(5);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub raft: RaftSettings,
    /// Leader kills, one per run.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// Writing clients per node, each sending a register every
    /// --write-every-ms.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    #[arg(long, default_value_t = 10)]
    pub write_every_ms: u64,
    /// Reading clients per survivor, each fetching every --read-every-ms.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    #[arg(long, default_value_t = 10)]
    pub read_every_ms: u64,
    /// Seconds of load before the kill, and after the cluster writes again.
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Instead of leader kills: a rolling restart of every node (SIGTERM,
    /// restart on its data, wait until caught up), followers first and
    /// the leader last, under the same write load; --runs rolling rounds.
    #[arg(long)]
    pub rolling: bool,
}

/// One write attempt: through which node, when it was sent and answered,
/// and whether it succeeded.
struct Attempt {
    node: u64,
    sent: Instant,
    done: Instant,
    ok: bool,
}

/// What one run measured.
pub struct Run {
    pub killed: u64,
    pub new_leader: u64,
    pub first_write: Duration,
    pub leaderless: Duration,
    pub reads: u64,
    pub failed_reads: u64,
    pub refused_writes: u64,
}

impl Run {
    /// The run's result line, after `label`.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label}: first write {}, no leader {}, failed reads {} of {} \
             (killed node {}, new leader node {}, {} writes refused through survivors)",
            Ms::from(self.first_write),
            Ms::from(self.leaderless),
            self.failed_reads,
            self.reads,
            self.killed,
            self.new_leader,
            self.refused_writes
        )
    }
}

/// The runs of one or more clusters, gathered.
#[derive(Default)]
pub struct Totals {
    pub first: Latencies,
    pub leaderless: Latencies,
    pub reads: u64,
    pub failed_reads: u64,
    pub runs: u32,
}

impl Totals {
    pub fn add(&mut self, run: &Run) {
        self.first.push(run.first_write);
        self.leaderless.push(run.leaderless);
        self.reads += run.reads;
        self.failed_reads += run.failed_reads;
        self.runs += 1;
    }

    /// `median … max …` of the first writes.
    pub fn first_write(&mut self) -> String {
        median_max(&mut self.first)
    }

    /// `median … max …` of the leaderless spans.
    pub fn no_leader(&mut self) -> String {
        median_max(&mut self.leaderless)
    }
}

fn median_max(l: &mut Latencies) -> String {
    format!("median {} max {}", Ms(l.median()), Ms(l.summary().max))
}

/// A cluster under failover: the writes' instance numbers and the fleet
/// the readers fetch.
pub struct Setup {
    numbers: Arc<AtomicU64>,
    read_fleet: Fleet,
}

impl Setup {
    /// Registers the instances the readers fetch.
    pub async fn new(cluster: &Cluster) -> Result<Setup> {
        let read_fleet = Fleet {
            prefix: "foread",
            apps: 1,
        };
        fill(
            cluster.addr(cluster.leader().await?)?,
            read_fleet,
            READ_INSTANCES,
        )
        .await?;
        Ok(Setup {
            numbers: Arc::new(AtomicU64::new(0)),
            read_fleet,
        })
    }

    /// One leader kill; the killed node is restarted on its data and has
    /// caught up when this returns.
    pub async fn run(&self, cluster: &mut Cluster, args: &Args) -> Result<Run> {
        let run = one_run(cluster, args, &self.read_fleet, &self.numbers).await?;
        eprintln!("# restarting node {} on its data", run.killed);
        cluster.restart(run.killed).await?;
        Ok(run)
    }
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(args.runs > 0, "--runs must be above 0");
    let mut cluster = Cluster::start(launch, 3, args.raft).await?;
    if args.rolling {
        return rolling(&mut cluster, args, launch).await;
    }
    let setup = Setup::new(&cluster).await?;
    let mut totals = Totals::default();
    for n in 1..=args.runs {
        let run = setup.run(&mut cluster, args).await?;
        println!("{}", run.line(&format!("failover run {n}")));
        totals.add(&run);
    }
    let what = format!(
        "{} runs, {}, {}",
        args.runs,
        args.raft.describe(),
        launch.peers.describe()
    );
    println!("failover first write: {} ({what})", totals.first_write());
    println!("failover no leader: {} ({what})", totals.no_leader());
    println!(
        "failover failed reads: {} of {} ({what})",
        totals.failed_reads, totals.reads
    );
    Ok(())
}

async fn one_run(
    cluster: &mut Cluster,
    args: &Args,
    read_fleet: &Fleet,
    numbers: &Arc<AtomicU64>,
) -> Result<Run> {
    let leader = cluster.leader().await?;
    let survivors: Vec<(u64, SocketAddr)> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .map(|id| Ok((id, cluster.addr(id)?)))
        .collect::<Result<_>>()?;
    let (stop_tx, stop) = watch::channel(false);
    let fleet = Fleet {
        prefix: "fowrite",
        apps: 10,
    };
    let (mut clients, mut attempts) = writers(cluster, args, fleet, numbers, &stop)?;
    let mut readers = JoinSet::new();
    let read_target = fetch_target(&read_fleet.appid(0));
    for &(_, addr) in &survivors {
        for _ in 0..args.readers {
            readers.spawn(read(
                addr,
                read_target.clone(),
                Duration::from_millis(args.read_every_ms),
                stop.clone(),
            ));
        }
    }

    let settle = Duration::from_secs_f64(args.settle);
    tokio::time::sleep(settle).await;
    eprintln!("# killing leader node {leader}");
    let killed = cluster.kill(leader).await?;
    let watcher = tokio::spawn(new_leader(survivors.clone(), leader));

    // The first write through a survivor sent after the kill that succeeds.
    let deadline = killed + GAP_TIMEOUT;
    let mut refused_writes = 0;
    let first_write = loop {
        let attempt = match timeout(deadline - Instant::now(), attempts.recv()).await {
            Ok(Some(a)) => a,
            Ok(None) => bail!("every writer stopped"),
            Err(_) => bail!("no write succeeded within {GAP_TIMEOUT:?} of the kill"),
        };
        if attempt.node == leader || attempt.sent < killed {
            continue;
        }
        if attempt.ok {
            break attempt.done - killed;
        }
        refused_writes += 1;
    };
    let (new_leader, elected) = timeout(GAP_TIMEOUT, watcher).await???;
    tokio::time::sleep(settle).await;
    let _ = stop_tx.send(true);
    while clients.join_next().await.is_some() {}
    let (mut reads, mut failed_reads) = (0, 0);
    while let Some(counts) = readers.join_next().await {
        let (ok, failed) = counts?;
        reads += ok + failed;
        failed_reads += failed;
    }
    Ok(Run {
        killed: leader,
        new_leader,
        first_write,
        leaderless: elected - killed,
        reads,
        failed_reads,
        refused_writes,
    })
}

/// `--writers` writing clients through every node, registering into
/// `fleet` until `stop`; their attempts come on the returned channel.
fn writers(
    cluster: &Cluster,
    args: &Args,
    fleet: Fleet,
    numbers: &Arc<AtomicU64>,
    stop: &watch::Receiver<bool>,
) -> Result<(JoinSet<()>, mpsc::UnboundedReceiver<Attempt>)> {
    let (attempts_tx, attempts) = mpsc::unbounded_channel();
    let mut clients = JoinSet::new();
    for id in cluster.ids() {
        let addr = cluster.addr(id)?;
        for _ in 0..args.writers {
            clients.spawn(write(
                id,
                addr,
                fleet,
                numbers.clone(),
                Duration::from_millis(args.write_every_ms),
                attempts_tx.clone(),
                stop.clone(),
            ));
        }
    }
    Ok((clients, attempts))
}

/// Registers a new instance through `addr` every `every` until stopped,
/// reporting each attempt.
async fn write(
    node: u64,
    addr: SocketAddr,
    fleet: Fleet,
    numbers: Arc<AtomicU64>,
    every: Duration,
    attempts: mpsc::UnboundedSender<Attempt>,
    stop: watch::Receiver<bool>,
) {
    let mut conn = None;
    let mut request = Vec::new();
    let mut next = Instant::now();
    while !*stop.borrow() {
        tokio::time::sleep_until(next).await;
        let n = numbers.fetch_add(1, Ordering::Relaxed);
        post_form(
            &mut request,
            addr,
            "/discovery/register",
            &fleet.register_form(n),
        );
        let sent = Instant::now();
        next = sent + every;
        let ok = matches!(
            timeout(REQUEST_TIMEOUT, exchange(&mut conn, addr, &request)).await,
            Ok(Ok(true))
        );
        let done = Instant::now();
        if attempts
            .send(Attempt {
                node,
                sent,
                done,
                ok,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Fetches `target` from `addr` every `every` until stopped; returns the
/// reads that succeeded and those that failed.
async fn read(
    addr: SocketAddr,
    target: String,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> (u64, u64) {
    let mut request = Vec::new();
    get(&mut request, addr, &target);
    let mut conn: Option<Conn> = None;
    let (mut ok, mut failed) = (0, 0);
    let mut next = Instant::now();
    while !*stop.borrow() {
        tokio::time::sleep_until(next).await;
        next = Instant::now() + every;
        match timeout(REQUEST_TIMEOUT, exchange(&mut conn, addr, &request)).await {
            Ok(Ok(true)) => ok += 1,
            answer => {
                failed += 1;
                eprintln!("# a read on {addr} failed: {answer:?}");
            }
        }
    }
    (ok, failed)
}

/// Waits until a survivor's status names a leader other than `old`;
/// returns it and when it was seen.
async fn new_leader(survivors: Vec<(u64, SocketAddr)>, old: u64) -> Result<(u64, Instant)> {
    loop {
        for &(_, addr) in &survivors {
            if let Ok(status) = discovery::status(addr).await {
                if let Some(leader) = status.leader.filter(|l| *l != old) {
                    return Ok((leader, Instant::now()));
                }
            }
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

/// One node's restart in a rolling round, as the writes saw it.
struct Restart {
    node: u64,
    was_leader: bool,
    /// The longest time between two successful writes (through any node)
    /// from the SIGTERM until the node had caught up again.
    longest_gap: Duration,
    /// When that gap began, after the SIGTERM.
    gap_from: Duration,
    /// When the node had exited, and when it served again, after the
    /// SIGTERM.
    exited: Duration,
    serving: Duration,
    /// Writes sent through the other, running nodes meanwhile that failed:
    /// a client that retries elsewhere sees these.
    failed_elsewhere: u64,
    /// Writes sent through the restarting node that failed (its client's
    /// retry goes to another node).
    failed_here: u64,
}

/// Rolling restarts under write load: every node in turn, followers first.
async fn rolling(cluster: &mut Cluster, args: &Args, launch: &Launch) -> Result<()> {
    let numbers = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let fleet = Fleet {
        prefix: "rollwrite",
        apps: 10,
    };
    let (mut clients, mut attempts_rx) = writers(cluster, args, fleet, &numbers, &stop)?;
    let settle = Duration::from_secs_f64(args.settle);
    let mut windows = Vec::new();
    for round in 1..=args.runs {
        tokio::time::sleep(settle).await;
        let leader = cluster.leader().await?;
        let mut order: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
        order.push(leader);
        for id in order {
            eprintln!(
                "# round {round}: restarting node {id}{}",
                if id == leader { " (leader)" } else { "" }
            );
            let from = cluster.terminate(id).await?;
            let exited = from.elapsed();
            cluster.restart(id).await?;
            let serving = from.elapsed();
            tokio::time::sleep(settle).await;
            windows.push(Window {
                node: id,
                was_leader: id == leader,
                from,
                to: Instant::now(),
                exited,
                serving,
            });
        }
    }
    let _ = stop_tx.send(true);
    while clients.join_next().await.is_some() {}
    let mut attempts = Vec::new();
    while let Some(a) = attempts_rx.recv().await {
        attempts.push(a);
    }
    let restarts: Vec<Restart> = windows.iter().map(|w| restart_seen(&attempts, w)).collect();
    let what = format!("{}, {}", args.raft.describe(), launch.peers.describe());
    for r in &restarts {
        println!(
            "rolling restart of node {}{}: longest write gap {} (from +{}; exited +{}, caught up +{}), \
             failed writes through running nodes {}, through it {}",
            r.node,
            if r.was_leader { " (leader)" } else { "" },
            Ms::from(r.longest_gap),
            Ms::from(r.gap_from),
            Ms::from(r.exited),
            Ms::from(r.serving),
            r.failed_elsewhere,
            r.failed_here
        );
    }
    let mut followers = Latencies::default();
    let mut leaders = Latencies::default();
    for r in &restarts {
        if r.was_leader {
            leaders.push(r.longest_gap);
        } else {
            followers.push(r.longest_gap);
        }
    }
    let elsewhere: u64 = restarts.iter().map(|r| r.failed_elsewhere).sum();
    println!(
        "rolling restart, follower write gap: {} ({what})",
        median_max(&mut followers)
    );
    println!(
        "rolling restart, leader write gap: {} ({what})",
        median_max(&mut leaders)
    );
    println!(
        "rolling restart, writes failed through running nodes: {elsewhere} of {} ({what})",
        attempts.len()
    );
    Ok(())
}

/// One node's restart: from its SIGTERM to the end of the settle time
/// after it caught up.
struct Window {
    node: u64,
    was_leader: bool,
    from: Instant,
    to: Instant,
    exited: Duration,
    serving: Duration,
}

/// What the writes saw during one node's restart.
fn restart_seen(attempts: &[Attempt], w: &Window) -> Restart {
    let Window { node, from, to, .. } = *w;
    let mut done: Vec<Instant> = attempts
        .iter()
        .filter(|a| a.ok && a.done >= from && a.done <= to)
        .map(|a| a.done)
        .collect();
    done.sort();
    let (mut longest_gap, mut gap_from) = (Duration::ZERO, Duration::ZERO);
    let mut last = from;
    for d in done.iter().copied().chain(std::iter::once(to)) {
        if d - last > longest_gap {
            longest_gap = d - last;
            gap_from = last - from;
        }
        last = d;
    }
    let during = |a: &&Attempt| !a.ok && a.sent >= from && a.sent <= to;
    Restart {
        node,
        was_leader: w.was_leader,
        longest_gap,
        gap_from,
        exited: w.exited,
        serving: w.serving,
        failed_elsewhere: attempts
            .iter()
            .filter(during)
            .filter(|a| a.node != node)
            .count() as u64,
        failed_here: attempts
            .iter()
            .filter(during)
            .filter(|a| a.node == node)
            .count() as u64,
    }
}
