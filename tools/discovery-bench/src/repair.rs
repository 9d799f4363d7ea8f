//! How long a replica whose registry diverges is served from, and how long
//! its repair takes (issue 25), on three nodes with the product's defaults
//! (a check every 30 s, repair on), after a fill. The divergence is made by
//! the `diverge` fail point, so `--server` must be a build with the
//! `failpoints` feature (see docs/benchmarks.md); the bench says so when it
//! is not. Reference, measured in the same run: the same follower stopped
//! and started again on its data, to serving with what the leader had
//! committed (what any restart costs).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::{Cluster, RaftSettings};
use crate::discovery::{get, once, register, Fleet};
use crate::fill::fill;
use crate::server::Launch;

#[derive(clap::Args)]
pub struct Args {
    /// Instances registered before the replica diverges.
    #[arg(long, default_value_t = 10_000)]
    instances: u64,
    /// Apps they are spread over.
    #[arg(long, default_value_t = 100)]
    apps: u64,
}

/// How long the divergence may take to be found: a check period and then
/// some.
const FOUND_WITHIN: Duration = Duration::from_secs(90);

/// How long a repair may take.
const REPAIRED_WITHIN: Duration = Duration::from_secs(120);

/// How often the diverged node is looked at.
const EVERY: Duration = Duration::from_millis(10);

async fn json(addr: SocketAddr, path: &str) -> Result<Value> {
    let mut req = Vec::new();
    get(&mut req, addr, path);
    let (code, body) = once(addr, &req).await?;
    ensure!(code == 200, "{path} answered HTTP {code}");
    serde_json::from_slice(&body).with_context(|| format!("parsing {path}"))
}

/// Whether node `id` (at `addr`) serves again as a voter with the
/// leader's registry.
async fn repaired(addr: SocketAddr, leader: SocketAddr, id: u64) -> Result<bool> {
    let status = json(addr, "/admin/status").await?;
    let votes = status["voters"]
        .as_array()
        .is_some_and(|v| v.contains(&Value::from(id)));
    if status["protected"] != false
        || !status["diverged"].is_null()
        || !votes
        || status["members"][id.to_string()]["rebuilding"] == true
    {
        return Ok(false);
    }
    let (mine, theirs) = (
        json(addr, "/admin/digest").await?,
        json(leader, "/admin/digest").await?,
    );
    Ok(mine["applied_index"] == theirs["applied_index"] && mine["digest"] == theirs["digest"])
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    let mut cluster = Cluster::start(launch, 3, RaftSettings::default()).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.addr(leader)?;
    let fleet = Fleet {
        prefix: "repair",
        apps: args.apps,
    };
    fill(leader_addr, fleet, args.instances).await?;
    let odd = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("no follower")?;
    let odd_addr = cluster.addr(odd)?;

    // The reference: a plain restart of the same follower.
    let stopped = cluster.terminate(odd).await?;
    cluster.set_env(odd, "FAILPOINTS", "diverge=return(tamper.app)")?;
    cluster.restart(odd).await?;
    let restart = stopped.elapsed();
    // What reading the log back at start cost, as the node logged it.
    let scrubbed = cluster
        .log(odd)?
        .lines()
        .rfind(|l| l.contains("log read back and checked"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or("?")
                    .to_string()
            };
            format!("{} entries in {} ms", field("entries="), field("ms="))
        })
        .unwrap_or_else(|| "not logged".into());

    // The divergence: the follower changes its registry behind the log's
    // back when it applies this register.
    let tamper = Fleet {
        prefix: "tamper",
        apps: 1,
    };
    let at = Instant::now();
    register(leader_addr, &tamper.register_form(0)).await?;
    let found = loop {
        let out = match json(odd_addr, "/admin/status").await {
            Ok(status) => status["protected"] == true,
            // Stopped to rebuild.
            Err(_) => true,
        };
        if out {
            break at.elapsed();
        }
        if at.elapsed() > FOUND_WITHIN {
            let log = cluster.log(odd)?;
            if !log.contains("failpoint") && !log.contains("differs") {
                bail!(
                    "node {odd} never diverged: is {} built with --features failpoints?",
                    launch.binary.display()
                );
            }
            bail!("node {odd} diverged and was not found within {FOUND_WITHIN:?}");
        }
        tokio::time::sleep(EVERY).await;
    };
    let out_at = Instant::now();
    loop {
        if repaired(odd_addr, leader_addr, odd).await.unwrap_or(false) {
            break;
        }
        ensure!(
            out_at.elapsed() < REPAIRED_WITHIN,
            "node {odd} not repaired within {REPAIRED_WITHIN:?}"
        );
        tokio::time::sleep(EVERY).await;
    }
    let repair = out_at.elapsed();
    let log = cluster.log(odd)?;
    ensure!(
        log.contains("rebuilt from the cluster"),
        "node {odd} serves again without saying it rebuilt"
    );
    let instances = json(odd_addr, "/admin/status").await?["instances"].clone();
    println!(
        "repair: {} instances in {} apps, 3 nodes, default raft timings, a check every 30 s",
        args.instances, args.apps
    );
    println!(
        "  found out of service {:.2} s after the write that made it diverge \
         (target: within 35 s)",
        found.as_secs_f64()
    );
    println!(
        "  repaired {:.2} s later: serving and voting again, digest equal to the leader's, \
         {instances} instances (target: within 5 s)",
        repair.as_secs_f64()
    );
    println!(
        "  reference: the same follower stopped and started on its data, serving again in \
         {:.2} s (its log read back and checked at start: {scrubbed})",
        restart.as_secs_f64()
    );
    Ok(())
}
