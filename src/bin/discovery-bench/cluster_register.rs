//! `cluster-register`: register throughput and commit latency on a
//! three-node cluster, with the clients spread over every node, so that two
//! thirds of the registers reach the leader through a follower.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;

use crate::cluster::{print_by_role, Cluster, RaftSettings};
use crate::discovery::{post_form, Fleet};
use crate::load::{drive_spread, LoadArgs, Stop};
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

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
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
    let what = format!(
        "{} over 3 nodes, {} apps, leader node {leader}, {}",
        args.load.describe(),
        args.apps,
        args.raft.describe()
    );
    print_by_role("cluster-register", &what, outcomes, &cluster.ids(), leader);
    Ok(())
}
