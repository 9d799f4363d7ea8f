//! `replicas`: how many held polls a cluster holds with learners (read
//! replicas) added, against its three voters alone.
//!
//! Every node holds the same number of polls, as SDKs spread over the nodes
//! `infra.discovery` lists; one register through the leader then wakes them
//! all, and the wake latency runs from sending it to each poll's answer
//! (replication and apply on the node included). A node holds at most
//! `connections.max_held_polls` (15,000 by default, under the 20,000 open
//! files a process may have here), so that is a cluster's capacity: three
//! nodes' worth, or five.
//!
//! The polls are held by one helper process per node (`hold`, this binary),
//! each within its own open-file limit; the helpers report each answer's
//! wall-clock time, and the bench compares them with the moment it sent the
//! change. Three layouts run in turn, each on a fresh cluster:
//! three voters at `--per-node`; three voters and two learners at the same
//! `--per-node` (five thirds of the polls); and three voters and two
//! learners holding the first layout's total (three fifths per node).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::cluster::{Cluster, RaftSettings};
use crate::discovery::{self, post_form};
use crate::http::Conn;
use crate::load::REQUEST_TIMEOUT;
use crate::polls::{self, instance_form, APPID, HOLD_MS};
use crate::server::Launch;
use crate::stats::{Latencies, Mib};

/// How long holding the polls, and then their answers, may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Polls each node holds in the first two layouts; the server's default
    /// cap is 15,000 per node.
    #[arg(long, default_value_t = 15_000)]
    pub per_node: u64,
    /// Learners added to the three voters.
    #[arg(long, default_value_t = 2)]
    pub learners: u64,
    /// Connections each helper opens at a time.
    #[arg(long, default_value_t = polls::BATCH)]
    pub batch: usize,
}

/// The helper process: holds polls on one node.
#[derive(clap::Args, Clone, Debug)]
pub struct HoldArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long)]
    pub count: u64,
    #[arg(long)]
    pub latest: i64,
    #[arg(long)]
    pub prefix: String,
    #[arg(long, default_value_t = polls::BATCH)]
    pub batch: usize,
}

/// One layout's figures.
struct Layout {
    label: String,
    nodes: u64,
    per_node: u64,
    answered: u64,
    wake: Latencies,
    /// The slowest node's p99, and which.
    worst_node: (u64, Duration),
    /// Resident bytes per held poll, averaged over the nodes.
    per_poll: u64,
    rss_held: Vec<u64>,
    cpu: Duration,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(args.per_node > 0, "--per-node must be above 0");
    let launch = Launch {
        poll_hold_ms: HOLD_MS,
        ..launch.clone()
    };
    let all = 3 + args.learners;
    let same_total = (args.per_node * 3).div_ceil(all);
    let plans = [
        (0, args.per_node),
        (args.learners, args.per_node),
        (args.learners, same_total),
    ];
    for (learners, per_node) in plans {
        let mut layout = layout(&launch, args, learners, per_node).await?;
        println!(
            "replicas {}: {} polls ({} per node) answered {} wake {} slowest node p99 {} \
             (node {}); memory {} B/poll; RSS held {}; CPU {:.1} us/woken poll ({})",
            layout.label,
            layout.nodes * layout.per_node,
            layout.per_node,
            layout.answered,
            layout.wake.summary(),
            crate::stats::Ms::from(layout.worst_node.1),
            layout.worst_node.0,
            layout.per_poll,
            layout
                .rss_held
                .iter()
                .map(|b| Mib(*b).to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            layout.cpu.as_secs_f64() * 1e6 / (layout.nodes * layout.per_node).max(1) as f64,
            launch.peers.describe(),
        );
        ensure!(
            layout.answered == layout.nodes * layout.per_node,
            "{}: only {} of {} polls were answered",
            layout.label,
            layout.answered,
            layout.nodes * layout.per_node
        );
    }
    Ok(())
}

async fn layout(launch: &Launch, args: &Args, learners: u64, per_node: u64) -> Result<Layout> {
    let mut cluster = Cluster::start(launch, 3, RaftSettings::default()).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.addr(leader)?;
    for _ in 0..learners {
        let id = cluster.start_joiner().await?;
        let ports = cluster.ports(id)?;
        discovery::add_learner(leader_addr, id, ports, cluster.admin_token()).await?;
        cluster.wait_serving(id).await?;
    }
    let ids = cluster.ids();
    let label = match learners {
        0 => "3 voters".to_string(),
        n => format!("3 voters + {n} learners"),
    };
    eprintln!("# {label}: nodes {ids:?}, leader {leader}");

    discovery::register(leader_addr, &instance_form("fan-0")).await?;
    let latest = applied_everywhere(&cluster).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base: Vec<u64> = ids
        .iter()
        .map(|id| cluster.server(*id)?.rss())
        .collect::<Result<_>>()?;

    let mut helpers = Vec::new();
    for id in &ids {
        helpers.push((
            *id,
            spawn_helper(cluster.addr(*id)?, per_node, latest, *id, args)?,
        ));
    }
    let opened = Instant::now();
    wait_held(&mut cluster, &ids, &mut helpers, per_node).await?;
    eprintln!(
        "# {label}: {} polls held after {:.1} s",
        per_node * ids.len() as u64,
        opened.elapsed().as_secs_f64()
    );
    let held: Vec<u64> = ids
        .iter()
        .map(|id| cluster.server(*id)?.rss())
        .collect::<Result<_>>()?;
    let cpu_before = cpu(&cluster, &ids)?;

    let mut wake = Vec::new();
    post_form(
        &mut wake,
        leader_addr,
        "/discovery/register",
        &instance_form("fan-1"),
    );
    let mut trigger = Conn::connect(leader_addr).await?;
    let sent = SystemTime::now();
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, trigger.send(&wake))
        .await
        .context("the change was not answered in time")??;
    ensure!(
        discovery::succeeded(reply.status, reply.body),
        "the change answered HTTP {}",
        reply.status
    );

    let mut all = Latencies::default();
    let mut answered = 0;
    let mut worst_node = (0, Duration::ZERO);
    for (id, helper) in helpers {
        let times = finish(helper)
            .await
            .with_context(|| format!("node {id}'s polls"))?;
        answered += times.len() as u64;
        let mut mine = Latencies::default();
        for t in times {
            let d = t.duration_since(sent).unwrap_or_default();
            mine.push(d);
            all.push(d);
        }
        let p99 = Duration::from_nanos(mine.summary().p99);
        if p99 >= worst_node.1 {
            worst_node = (id, p99);
        }
    }
    let cpu = cpu(&cluster, &ids)?.saturating_sub(cpu_before);
    let per_poll = held
        .iter()
        .zip(&base)
        .map(|(h, b)| h.saturating_sub(*b))
        .sum::<u64>()
        / (per_node * ids.len() as u64).max(1);
    Ok(Layout {
        label,
        nodes: ids.len() as u64,
        per_node,
        answered,
        wake: all,
        worst_node,
        per_poll,
        rss_held: held,
        cpu,
    })
}

/// Waits until every node serves `fan-0`; returns the app's timestamp.
async fn applied_everywhere(cluster: &Cluster) -> Result<i64> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    'again: loop {
        ensure!(Instant::now() < deadline, "fan-0 did not reach every node");
        let mut latest = None;
        for id in cluster.ids() {
            match discovery::fetch(cluster.addr(id)?, APPID).await {
                Ok(f) if f.instances == 1 && latest.is_none_or(|l| l == f.latest_timestamp) => {
                    latest = Some(f.latest_timestamp)
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'again;
                }
            }
        }
        return latest.context("no nodes");
    }
}

fn cpu(cluster: &Cluster, ids: &[u64]) -> Result<Duration> {
    ids.iter().map(|id| cluster.server(*id)?.cpu_time()).sum()
}

fn spawn_helper(addr: SocketAddr, count: u64, latest: i64, id: u64, args: &Args) -> Result<Child> {
    let me = std::env::current_exe().context("finding the bench's own binary")?;
    Command::new(me)
        .arg("hold")
        .arg(format!("--addr={addr}"))
        .arg(format!("--count={count}"))
        .arg(format!("--latest={latest}"))
        .arg(format!("--prefix=node{id}-poller"))
        .arg(format!("--batch={}", args.batch))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a helper")
}

/// Waits until every node holds `count` polls; fails if a helper ends
/// first.
async fn wait_held(
    cluster: &mut Cluster,
    ids: &[u64],
    helpers: &mut [(u64, Child)],
    count: u64,
) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        for (id, helper) in helpers.iter_mut() {
            if let Some(status) = helper.try_wait()? {
                bail!("the helper holding node {id}'s polls ended first: {status}");
            }
        }
        let mut short = Vec::new();
        for id in ids {
            cluster.check_alive(*id)?;
            let held = cluster.status(*id).await?.held_polls;
            if held < count {
                short.push((*id, held));
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("after {PHASE_TIMEOUT:?}, nodes hold only (node, polls) {short:?} of {count}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads a helper's answer times once it ends.
async fn finish(mut helper: Child) -> Result<Vec<SystemTime>> {
    let mut out = String::new();
    let mut stdout = helper.stdout.take().context("no helper output")?;
    tokio::time::timeout(PHASE_TIMEOUT, stdout.read_to_string(&mut out))
        .await
        .context("the helper did not finish")??;
    let status = helper.wait().await?;
    ensure!(status.success(), "the helper failed: {status}");
    out.lines()
        .map(|l| {
            let nanos: u64 = l
                .trim()
                .parse()
                .with_context(|| format!("helper line {l:?}"))?;
            Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
        })
        .collect()
}

/// The helper: holds `count` polls on one node and prints, once all are
/// answered, each answer's wall-clock time in nanoseconds since the epoch;
/// fails if any poll fails.
pub fn hold(args: &HoldArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut polls = polls::open_polls(
            args.addr,
            args.count,
            args.batch,
            APPID,
            &args.prefix,
            args.latest,
        )
        .await?;
        // Answer moments are read on the monotonic clock and turned into
        // wall-clock time from one reading of both.
        let (mono, wall) = (Instant::now(), SystemTime::now());
        let deadline = Instant::now() + Duration::from_millis(HOLD_MS) + PHASE_TIMEOUT;
        let mut out = String::new();
        while let Ok(Some(ended)) = tokio::time::timeout_at(deadline, polls.join_next()).await {
            let at = ended??;
            let when = if at >= mono {
                wall + (at - mono)
            } else {
                wall - (mono - at)
            };
            let nanos = when.duration_since(UNIX_EPOCH)?.as_nanos();
            out.push_str(&format!("{nanos}\n"));
        }
        ensure!(
            polls.is_empty(),
            "{} polls were not answered in time",
            polls.len()
        );
        print!("{out}");
        Ok(())
    })
}
