//! `lifecycle`: the steady state of a large registry on a three-node
//! cluster. Every instance renews once per cadence (30 s, as every SDK
//! does), the renews spread evenly over time and over the nodes. Measured:
//! the renew rate the bench achieved and how late it sent (so a slow load
//! generator shows), the CPU each node used, the disk flushes of each log,
//! and how long a renew takes to show on the followers.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::cluster::{by_role, Cluster, RaftSettings};
use crate::discovery::Fleet;
use crate::fill::fill;
use crate::lag::{self, Plan};
use crate::load::{drive_spread, Stop};
use crate::meter;
use crate::server::Launch;

pub const INSTANCES: u64 = 100_000;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub raft: RaftSettings,
    /// Instances registered, each renewed once per --cadence.
    #[arg(long, default_value_t = INSTANCES)]
    pub instances: u64,
    /// Apps the instances are spread over. Ten instances an app keeps the
    /// followers' fetches that watch for renews small.
    #[arg(long, default_value_t = 10_000)]
    pub apps: u64,
    /// Seconds between two renews of one instance.
    #[arg(long, default_value_t = 30.0)]
    pub cadence: f64,
    /// Measured seconds (two cadences by default).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seconds of renewing before measuring.
    #[arg(long, default_value_t = 5.0)]
    pub warmup: f64,
    /// Connections the renews are sent on, spread over the nodes.
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(
        args.instances > 0 && args.cadence > 0.0,
        "--instances and --cadence must be above 0"
    );
    let cluster = Cluster::start(launch, 3, args.raft).await?;
    let leader = cluster.leader().await?;
    let fleet = Fleet {
        prefix: "life",
        apps: args.apps,
    };
    fill(cluster.addr(leader)?, fleet, args.instances).await?;

    let instances = args.instances;
    let rate = instances as f64 / args.cadence;
    let render = fleet.renews(instances);
    let ids = cluster.ids();
    let addrs = cluster.addrs();
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.duration);
    let plan = Plan {
        via: addrs.clone(),
        followers: ids
            .iter()
            .filter(|id| **id != leader)
            .map(|id| cluster.addr(*id))
            .collect::<Result<_>>()?,
        fleet,
        instances,
    };
    eprintln!(
        "# renewing {instances} instances every {} s: {rate:.0} renews/s for {} s",
        args.cadence,
        args.warmup + args.duration
    );
    let (outcomes, readings, lag) = tokio::join!(
        drive_spread(
            &addrs,
            args.conns,
            Stop::Window { warmup, measure },
            Some(rate),
            render,
        ),
        meter::window(&cluster, &ids, warmup, measure),
        lag::sample(&plan, warmup, warmup + measure),
    );
    let (before, after) = readings?;
    let mut lag = lag?;
    let (mut led, followed) = by_role(outcomes?, &ids, leader);
    led.merge(followed);
    let mut out = led;
    let what = format!(
        "{instances} instances every {} s, {} conns over 3 nodes, {} s, leader node {leader}, {}, {}",
        args.cadence,
        args.conns,
        args.duration,
        args.raft.describe(),
        launch.peers.describe()
    );
    println!(
        "lifecycle renews: {:.0}/s of {rate:.0}/s due, {} errors {}, sent behind schedule {} ({what})",
        out.rate(),
        out.latencies.summary(),
        out.errors,
        out.behind.summary()
    );
    let (usage, bench) = meter::usage(&before, &after);
    println!(
        "lifecycle cpu: {}, bench {bench:.1} % (% of one core; {what})",
        meter::describe_cpu(&usage, leader)
    );
    println!(
        "lifecycle disk: {} ({what})",
        meter::describe_flushes(&usage, leader)
    );
    println!(
        "lifecycle follower lag: {} over {} samples, {} not shown within 10 s ({what})",
        lag.shown.summary(),
        lag.shown.len(),
        lag.missed
    );
    Ok(())
}
