//! `cluster-register`: register throughput and commit latency on a
//! three-node cluster, with the clients spread over every node, so that two
//! thirds of the registers reach the leader through a follower.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;

use crate::cluster::{print_by_role, Cluster, RaftSettings};
use crate::discovery::{post_form, Fleet};
use crate::load::{drive_spread, LoadArgs, Outcome, Stop};
use crate::server::Launch;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub raft: RaftSettings,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Apps the registered instances are spread over.
    #[arg(long, default_value_t = crate::register::APPS)]
    pub apps: u64,
}

/// What one run on a fresh cluster measured: one outcome per node, in id
/// order.
pub struct Measured {
    pub leader: u64,
    pub ids: Vec<u64>,
    pub outcomes: Vec<Outcome>,
}

/// Starts a three-node cluster and runs the register load on it.
pub async fn measure(launch: &Launch, args: &Args) -> Result<Measured> {
    let cluster = Cluster::start(launch, 3, args.raft).await?;
    let leader = cluster.leader().await?;
    let fleet = Fleet {
        prefix: "creg",
        apps: args.apps,
    };
    // Every request registers a new instance.
    let render = Arc::new(move |addr: SocketAddr, n: u64, buf: &mut Vec<u8>| {
        post_form(buf, addr, "/discovery/register", &fleet.register_form(n));
    });
    let outcomes = drive_spread(
        &cluster.addrs(),
        args.load.conns,
        Stop::window(&args.load),
        None,
        render,
    )
    .await?;
    Ok(Measured {
        leader,
        ids: cluster.ids(),
        outcomes,
    })
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    let Measured {
        leader,
        ids,
        outcomes,
    } = measure(launch, args).await?;
    let what = format!(
        "{} over 3 nodes, {} apps, leader node {leader}, {}, {}",
        args.load.describe(),
        args.apps,
        args.raft.describe(),
        launch.peers.describe()
    );
    print_by_role("cluster-register", &what, outcomes, &ids, leader);
    Ok(())
}
