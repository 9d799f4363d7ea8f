//! `renews`: sustained renew throughput on a three-node cluster, with the
//! clients spread over every node, and the disk flushes the renews cost
//! each node's log.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::cluster::{print_by_role, Cluster, RaftSettings};
use crate::discovery::Fleet;
use crate::fill::fill;
use crate::load::{drive_spread, LoadArgs, Stop};
use crate::meter;
use crate::server::Launch;

pub const INSTANCES: u64 = 10_000;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub raft: RaftSettings,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Instances registered before the load; the renews go over them in
    /// turn.
    #[arg(long, default_value_t = INSTANCES)]
    pub instances: u64,
    /// Apps the instances are spread over.
    #[arg(long, default_value_t = crate::register::APPS)]
    pub apps: u64,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(args.instances > 0, "--instances must be above 0");
    let cluster = Cluster::start(launch, 3, args.raft).await?;
    let leader = cluster.leader().await?;
    let fleet = Fleet {
        prefix: "ren",
        apps: args.apps,
    };
    fill(cluster.addr(leader)?, fleet, args.instances).await?;

    let instances = args.instances;
    let render = fleet.renews(instances);
    let ids = cluster.ids();
    let addrs = cluster.addrs();
    let (outcomes, readings) = tokio::join!(
        drive_spread(
            &addrs,
            args.load.conns,
            Stop::window(&args.load),
            None,
            render,
        ),
        meter::window(
            &cluster,
            &ids,
            Duration::from_secs_f64(args.load.warmup),
            Duration::from_secs_f64(args.load.duration),
        ),
    );
    let (before, after) = readings?;
    let what = format!(
        "{} over 3 nodes, {instances} instances, leader node {leader}, {}, {}",
        args.load.describe(),
        args.raft.describe(),
        launch.peers.describe()
    );
    print_by_role("renews", &what, outcomes?, &ids, leader);
    let (usage, bench) = meter::usage(&before, &after);
    println!(
        "renews disk: {} ({})",
        meter::describe_flushes(&usage, leader),
        args.load.describe()
    );
    println!(
        "renews cpu: {}, bench {bench:.1} % (% of one core)",
        meter::describe_cpu(&usage, leader)
    );
    Ok(())
}
