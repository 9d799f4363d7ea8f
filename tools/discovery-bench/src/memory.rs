//! `memory`: the server's resident memory with many instances, and how long
//! it takes from a restart on the same data until it serves them again,
//! after a clean stop (SIGTERM) and after a crash (SIGKILL).

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use tokio::time::Instant;

use crate::discovery::{self, Fleet};
use crate::fill::fill;
use crate::server::{Launch, Server, Signal, Workdir};
use crate::stats::{Mib, Ms};

/// 1,000 apps x 100 instances: a large registry with apps big enough that
/// a fetch answer is not trivial.
pub const INSTANCES: u64 = 100_000;
pub const APPS: u64 = 1_000;
pub const SETTLE: f64 = 3.0;

/// How long a restarted server may take to serve again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Instances registered, spread evenly over --apps.
    #[arg(long, default_value_t = INSTANCES)]
    pub instances: u64,
    #[arg(long, default_value_t = APPS)]
    pub apps: u64,
    /// Seconds to wait before reading memory, so that it settles.
    #[arg(long, default_value_t = SETTLE)]
    pub settle: f64,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(
        args.apps > 0 && args.instances.is_multiple_of(args.apps),
        "--instances must be a multiple of --apps"
    );
    let per_app = args.instances / args.apps;
    let settle = Duration::from_secs_f64(args.settle);
    let fleet = Fleet {
        prefix: "mem",
        apps: args.apps,
    };
    let dir = Workdir::new()?;
    let mut server = Server::start(launch, &dir).await?;
    let addr = server.addr;
    tokio::time::sleep(settle).await;
    let empty = server.rss()?;
    fill(addr, fleet, args.instances).await?;
    tokio::time::sleep(settle).await;
    let full = server.rss()?;
    println!(
        "memory: {} instances ({} apps x {per_app}) RSS {} (empty {}, {} B/instance), peak while loading {}",
        args.instances,
        args.apps,
        Mib(full),
        Mib(empty),
        full.saturating_sub(empty) / args.instances.max(1),
        Mib(server.peak()?)
    );

    // fetch/all streams: the answer is never whole in the server's memory.
    let mut request = Vec::new();
    discovery::get(&mut request, addr, "/discovery/fetch/all");
    let asked = Instant::now();
    let (code, body) = discovery::once(addr, &request).await?;
    ensure!(code == 200, "fetch/all answered HTTP {code}");
    let took = asked.elapsed();
    tokio::time::sleep(settle).await;
    println!(
        "fetch/all: {:.1} MB in {} RSS after {}, peak so far {}",
        body.len() as f64 / 1e6,
        Ms::from(took),
        Mib(server.rss()?),
        Mib(server.peak()?)
    );
    drop(body);

    // Consumers fetch every app: what a node keeps of the answers it gave
    // (rendered fetch data is cached per app until the app changes).
    let asked = Instant::now();
    for app in 0..args.apps {
        discovery::fetch(addr, &fleet.appid(app)).await?;
    }
    let took = asked.elapsed();
    tokio::time::sleep(settle).await;
    println!(
        "every app fetched once: {} apps in {} RSS after {}, peak so far {}",
        args.apps,
        Ms::from(took),
        Mib(server.rss()?),
        Mib(server.peak()?)
    );

    // The app registered last is checked: it is the most likely to be
    // missing if the restart lost the tail of the log.
    let probe = fleet.appid(args.apps - 1);
    for signal in [Signal::Term, Signal::Kill] {
        let ports = server.ports();
        let stopped = server.stop(signal).await?;
        let spawned = Instant::now();
        server = Server::spawn(launch, &dir, ports)?;
        let serving = wait_serving(&mut server, &probe, per_app, spawned).await?;
        let instances = discovery::status(addr).await?.instances;
        tokio::time::sleep(settle).await;
        println!(
            "restart after {}: serving in {} (stop took {}, {instances} instances) RSS {}, peak since the restart {}",
            signal.name(),
            Ms::from(serving),
            Ms::from(stopped),
            Mib(server.rss()?),
            Mib(server.peak()?)
        );
    }
    Ok(())
}

/// Polls a fetch of `appid` until it answers with all `expect` instances;
/// returns the time since `spawned`.
async fn wait_serving(
    server: &mut Server,
    appid: &str,
    expect: u64,
    spawned: Instant,
) -> Result<Duration> {
    loop {
        server.check_alive()?;
        if let Ok(f) = discovery::fetch(server.addr, appid).await {
            if f.instances as u64 == expect {
                return Ok(spawned.elapsed());
            }
        }
        if spawned.elapsed() > RESTART_TIMEOUT {
            bail!("{appid} was not served with {expect} instances within {RESTART_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
