//! `join`: a fourth node joins a three-node cluster that holds many
//! instances. It is added as a learner through the admin API, and the time
//! runs from that request until the new node has applied the leader's
//! commit index of the moment of the join, serves reads (start-up
//! protection lifted) and holds every instance.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::{Cluster, RaftSettings};
use crate::discovery::{self, get, Fleet};
use crate::fill::fill;
use crate::memory;
use crate::stats::{Mib, Ms};

/// How long the new node may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the new node's status is read.
const STATUS_EVERY: Duration = Duration::from_millis(10);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Instances registered before the join, spread evenly over --apps.
    #[arg(long, default_value_t = memory::INSTANCES)]
    pub instances: u64,
    #[arg(long, default_value_t = memory::APPS)]
    pub apps: u64,
    #[command(flatten)]
    pub raft: RaftSettings,
}

pub async fn run(launch: &crate::server::Launch, args: &Args) -> Result<()> {
    ensure!(
        args.apps > 0 && args.instances.is_multiple_of(args.apps),
        "--instances must be a multiple of --apps"
    );
    let per_app = args.instances / args.apps;
    let mut cluster = Cluster::start(launch, 3, args.raft).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.addr(leader)?;
    let fleet = Fleet {
        prefix: "join",
        apps: args.apps,
    };
    fill(leader_addr, fleet, args.instances).await?;

    let joiner = cluster.start_joiner().await?;
    let joiner_addr = cluster.addr(joiner)?;
    let joiner_ports = cluster.ports(joiner)?;
    let token = cluster.admin_token();
    let before = cluster.status(leader).await?;
    let target = before.committed();
    eprintln!(
        "# adding node {joiner} as a learner: leader commit index {target}, \
         last log index {}, snapshot index {:?}",
        before.last_log_index.unwrap_or(0),
        before.snapshot_index
    );
    let start = Instant::now();
    let added = tokio::spawn(async move {
        discovery::add_learner(leader_addr, joiner, joiner_ports, token).await?;
        anyhow::Ok(start.elapsed())
    });

    // Caught up: applied the target, protection lifted, every instance
    // held, and a fetch of the last app registered answers them all.
    let probe = fleet.appid(args.apps - 1);
    let caught_up = loop {
        if let Ok(s) = cluster.status(joiner).await {
            if s.applied() >= target && !s.protected && s.instances >= before.instances {
                if let Ok(f) = discovery::fetch(joiner_addr, &probe).await {
                    if f.instances as u64 == per_app {
                        break start.elapsed();
                    }
                }
            }
        }
        if start.elapsed() > CATCH_UP_TIMEOUT {
            bail!("node {joiner} did not catch up within {CATCH_UP_TIMEOUT:?}");
        }
        tokio::time::sleep(STATUS_EVERY).await;
    };
    let answered = added.await??;

    let held = count_all(joiner_addr).await?;
    ensure!(
        held == args.instances,
        "the new node serves {held} instances, {} were registered",
        args.instances
    );
    let status = cluster.status(joiner).await?;
    let snapshot = match status.snapshot_index {
        Some(index) => format!(
            "installed a snapshot at index {index} of {} (leader's file {})",
            Mib(file_size(&cluster.data_dir(joiner)?)?),
            Mib(file_size(&cluster.data_dir(leader)?)?)
        ),
        None => format!(
            "no snapshot: replicated {} log entries",
            status.storage.appended_entries
        ),
    };
    println!(
        "join: caught up in {} ({} instances, {} apps; applied index {} >= leader's commit {target} \
         at the join; admin answered in {}; {snapshot}; {}, {})",
        Ms::from(caught_up),
        args.instances,
        args.apps,
        status.applied(),
        Ms::from(answered),
        args.raft.describe(),
        launch.peers.describe()
    );
    Ok(())
}

/// Instances a node serves in `fetch/all`, the cluster's own
/// `infra.discovery` aside.
async fn count_all(addr: std::net::SocketAddr) -> Result<u64> {
    let mut request = Vec::new();
    get(&mut request, addr, "/discovery/fetch/all");
    let (code, body) = discovery::once(addr, &request).await?;
    ensure!(
        discovery::succeeded(code, &body),
        "fetch/all answered HTTP {code}"
    );
    let json: Value = serde_json::from_slice(&body).context("parsing fetch/all")?;
    let apps = json["data"]
        .as_object()
        .context("fetch/all answer without data")?;
    Ok(apps
        .iter()
        .filter(|(appid, _)| *appid != "infra.discovery")
        .filter_map(|(_, instances)| instances.as_array())
        .map(|i| i.len() as u64)
        .sum())
}

/// The size of the snapshot file in a node's data directory.
fn file_size(data: &Path) -> Result<u64> {
    let path = data.join("snapshot.json");
    Ok(std::fs::metadata(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}
