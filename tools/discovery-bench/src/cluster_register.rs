//! `cluster-register`: register throughput and commit latency on a
//! three-node cluster, with the clients spread over every node, so that two
//! thirds of the registers reach the leader through a follower.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::cluster::{print_by_role, Cluster, RaftSettings};
use crate::cpu;
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
    /// CPU time (user and system) each node used in the measured window,
    /// in id order.
    pub cpu: Vec<Duration>,
}

impl Measured {
    /// CPU time per register summed over the nodes, in microseconds.
    pub fn cpu_per_register_us(&self) -> f64 {
        let registers: u64 = self.outcomes.iter().map(|o| o.ok).sum();
        let cpu: Duration = self.cpu.iter().sum();
        cpu.as_secs_f64() * 1e6 / registers.max(1) as f64
    }

    /// `cpu <us> us/register (leader <us>, followers <us>, <us>)`.
    pub fn cpu_line(&self) -> String {
        let registers = self.outcomes.iter().map(|o| o.ok).sum::<u64>().max(1) as f64;
        let per = |d: &Duration| d.as_secs_f64() * 1e6 / registers;
        let mut leader = 0.0;
        let mut followers = Vec::new();
        for (id, cpu) in self.ids.iter().zip(&self.cpu) {
            if *id == self.leader {
                leader = per(cpu);
            } else {
                followers.push(format!("{:.0}", per(cpu)));
            }
        }
        format!(
            "CPU {:.0} us/register over the nodes (leader {leader:.0}, followers {})",
            self.cpu_per_register_us(),
            followers.join(", ")
        )
    }
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
    // The nodes' CPU time over the measured window (after the warm-up),
    // read from /proc while the load runs.
    let ids = cluster.ids();
    let nodes: Vec<u32> = ids
        .iter()
        .map(|&id| cluster.server(id).map(|s| s.pid()))
        .collect::<Result<_>>()?;
    let (warmup, window) = (
        Duration::from_secs_f64(args.load.warmup),
        Duration::from_secs_f64(args.load.duration),
    );
    let cpu = tokio::spawn(async move {
        let times = || -> Result<Vec<Duration>> {
            nodes.iter().map(|&pid| cpu::process_time(pid)).collect()
        };
        tokio::time::sleep(warmup).await;
        let start = times()?;
        tokio::time::sleep(window).await;
        let end = times()?;
        Ok::<_, anyhow::Error>(end.iter().zip(&start).map(|(e, s)| *e - *s).collect())
    });
    let outcomes = drive_spread(
        &cluster.addrs(),
        args.load.conns,
        Stop::window(&args.load),
        None,
        render,
    )
    .await?;
    let cpu: Vec<Duration> = cpu.await??;
    Ok(Measured {
        leader,
        ids,
        outcomes,
        cpu,
    })
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    let measured = measure(launch, args).await?;
    let cpu = measured.cpu_line();
    let Measured {
        leader,
        ids,
        outcomes,
        ..
    } = measured;
    let what = format!(
        "{} over 3 nodes, {} apps, leader node {leader}, {}, {}",
        args.load.describe(),
        args.apps,
        args.raft.describe(),
        launch.peers.describe()
    );
    print_by_role("cluster-register", &what, outcomes, &ids, leader);
    println!("cluster-register {cpu}");
    Ok(())
}
