//! `migrate`: a three-node cluster linked both ways with an original
//! discovery (a stand-in: this project's node speaking only the original's
//! API), as in docs/migration.md.
//!
//! - **Import**: the original holds `--instances` over `--apps`; the time
//!   until the cluster holds all of them.
//! - **Propagation, both ways**: registers at a steady rate on one side;
//!   for each one acknowledged, the time until a poll held on the other
//!   side wakes with it, and as the reference measured in the same run,
//!   until a poll held on the same side does.
//! - **A moved batch**: the instances of `--batch-apps` apps move from the
//!   original to the cluster as the runbook says (each new instance
//!   registers with the cluster, and once the original shows it, the old
//!   one cancels there), while consumers hold polls on both sides; every
//!   answer they get is checked for a gap: a provider shown by neither its
//!   old nor its new instance.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::{Cluster, RaftSettings, Zone};
use crate::discovery::{form, Fleet, ENV, ZONE};
use crate::fill::fill;
use crate::peers::Ports;
use crate::server::{Launch, Server, Workdir};
use crate::stats::Ms;
use crate::zones::propagate;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub raft: RaftSettings,
    /// Apps of the original's fleet, each polled on both sides.
    #[arg(long, default_value_t = 1000)]
    pub apps: u64,
    /// Instances of the original's fleet.
    #[arg(long, default_value_t = 10_000)]
    pub instances: u64,
    /// Registers per second while propagation is measured, each way.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of registers, each way.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Apps whose instances move in the batch (all of each app's).
    #[arg(long, default_value_t = 50)]
    pub batch_apps: u64,
    /// The link's `export_every_ms` (the shipped default).
    #[arg(long, default_value_t = 1000)]
    pub export_every_ms: u64,
}

/// The original's fleet.
const FLEET: Fleet = Fleet {
    prefix: "mig",
    apps: 0,
};

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(
        args.apps > 0 && args.instances >= args.apps && args.batch_apps <= args.apps,
        "--apps above 0, --instances at least --apps, --batch-apps at most --apps"
    );
    let fleet = Fleet {
        apps: args.apps,
        ..FLEET
    };
    // The original: one node speaking only the original's API.
    let dir = Workdir::new()?;
    let ports = Ports::free(launch.peers)?;
    let original_env = [(
        "DISCOVERY_NODE_ORIGINAL_API".to_string(),
        "true".to_string(),
    )];
    let original = Server::spawn_env(launch, &dir, ports, &original_env)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()?;
    until_serving(&http, original.addr).await?;
    fill(original.addr, fleet, args.instances).await?;

    let section = format!(
        "\n[[upstream]]\nname = \"old\"\nnodes = [\"{}\"]\nexport_every_ms = {}\n",
        original.addr, args.export_every_ms
    );
    let started = Instant::now();
    let cluster = Cluster::configure(
        launch,
        args.raft,
        (0..3)
            .map(|_| Ports::free(launch.peers))
            .collect::<Result<_>>()?,
        Zone {
            extra: section,
            ..Zone::default()
        },
    )?
    .run()
    .await?;
    let took = until_imported(&http, &cluster, args.instances).await?;
    println!(
        "migrate import: {} instances of {} apps held by the cluster {} after it started ({:.1} s from the first node's start), {}",
        args.instances,
        args.apps,
        Ms::from(took),
        started.elapsed().as_secs_f64(),
        args.raft.describe()
    );

    let ours = cluster.addrs();
    let theirs = [original.addr];
    propagation(&http, args, "original->cluster", &theirs, &ours, "pmo").await?;
    propagation(&http, args, "cluster->original", &ours, &theirs, "pmc").await?;
    moved_batch(&http, args, fleet, &cluster, original.addr).await?;
    Ok(())
}

/// Waits until the original serves reads.
async fn until_serving(http: &reqwest::Client, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .get(format!("http://{addr}/discovery/fetch/all"))
            .send()
            .await
        {
            if r.status() == 200 {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "{addr} never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the cluster's leader says it imported `count` instances.
async fn until_imported(http: &reqwest::Client, cluster: &Cluster, count: u64) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let leader = cluster.leader().await?;
        let v: Value = http
            .get(format!("http://{}/admin/status", cluster.addr(leader)?))
            .send()
            .await?
            .json()
            .await?;
        if v["upstreams"]["old"]["imported"].as_u64() == Some(count) {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "never imported {count}: {}",
            v["upstreams"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers on `from` at the bench's rate; for each one acknowledged,
/// the time until a poll held on `to` wakes with it, and (the reference)
/// until one held on `from` does.
async fn propagation(
    http: &reqwest::Client,
    args: &Args,
    label: &str,
    from: &[SocketAddr],
    to: &[SocketAddr],
    prefix: &'static str,
) -> Result<()> {
    // Apps of their own, so the moved batch's polls see none of this.
    let fleet = Fleet {
        prefix,
        apps: args.apps,
    };
    let mut p = propagate(http, fleet, args.rate, args.secs, from, to).await?;
    println!(
        "migrate propagation {label} (register acknowledged on one side to poll woken on the other): {}, {} never woken ({} of {} registers acknowledged at {:.0}/s, {} apps polled on each side)",
        p.there.summary(),
        p.missing_there,
        p.acked,
        p.sent,
        args.rate,
        args.apps,
    );
    println!(
        "migrate propagation reference {label} (same register, poll held on the same side): {}, {} never woken",
        p.here.summary(),
        p.missing_here
    );
    Ok(())
}

/// What the consumers of one side saw during the move.
#[derive(Default)]
struct Watched {
    answers: AtomicU64,
    gapped: AtomicU64,
    empty: AtomicU64,
}

/// Holds polls of `appid` on `addr` until `stop`, checking each answer:
/// every provider slot `(old, new)` shown by one of its two instances.
async fn watch(
    http: reqwest::Client,
    addr: SocketAddr,
    appid: String,
    slots: Vec<(String, String)>,
    seen: Arc<Watched>,
    stop: Arc<AtomicBool>,
) {
    let mut latest = 0;
    while !stop.load(Ordering::Relaxed) {
        let url = format!(
            "http://{addr}/discovery/polls?env={ENV}&appid={appid}&latest_timestamp={latest}&hostname=consumer"
        );
        let Ok(r) = http.get(url).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        if v["code"] != 0 {
            continue;
        }
        let app = &v["data"][appid.as_str()];
        if let Some(ts) = app["latest_timestamp"].as_i64() {
            latest = ts;
        }
        let hosts: BTreeSet<&str> = app["instances"][ZONE]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["hostname"].as_str())
            .collect();
        seen.answers.fetch_add(1, Ordering::Relaxed);
        if hosts.is_empty() {
            seen.empty.fetch_add(1, Ordering::Relaxed);
        }
        if slots
            .iter()
            .any(|(old, new)| !hosts.contains(old.as_str()) && !hosts.contains(new.as_str()))
        {
            seen.gapped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether `addr` lists `hostname` in `appid`.
async fn lists(http: &reqwest::Client, addr: SocketAddr, appid: &str, hostname: &str) -> bool {
    let Ok(r) = http
        .get(format!(
            "http://{addr}/discovery/fetch?env={ENV}&appid={appid}&status=3"
        ))
        .send()
        .await
    else {
        return false;
    };
    let Ok(v) = r.json::<Value>().await else {
        return false;
    };
    v["data"]["instances"][ZONE]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["hostname"] == hostname)
}

async fn moved_batch(
    http: &reqwest::Client,
    args: &Args,
    fleet: Fleet,
    cluster: &Cluster,
    original: SocketAddr,
) -> Result<()> {
    let ours = cluster.addrs();
    // Each app's providers: instance n of the fleet is app n % apps.
    let mut slots: HashMap<u64, Vec<(String, String)>> = HashMap::new();
    for n in 0..args.instances {
        let app = n % args.apps;
        if app < args.batch_apps {
            let old = fleet.names(n).1;
            let new = format!("moved-{old}");
            slots.entry(app).or_default().push((old, new));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (on_ours, on_theirs) = (Arc::new(Watched::default()), Arc::new(Watched::default()));
    let mut watchers = Vec::new();
    for (app, s) in &slots {
        let appid = fleet.appid(*app);
        for (addr, seen) in [
            (ours[*app as usize % ours.len()], &on_ours),
            (original, &on_theirs),
        ] {
            watchers.push(tokio::spawn(watch(
                http.clone(),
                addr,
                appid.clone(),
                s.clone(),
                seen.clone(),
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nodes = &ours;
    let moves: Vec<(String, String, String, SocketAddr)> = slots
        .iter()
        .flat_map(|(app, s)| {
            let appid = fleet.appid(*app);
            s.iter().enumerate().map(move |(k, (old, new))| {
                (
                    appid.clone(),
                    old.clone(),
                    new.clone(),
                    nodes[k % nodes.len()],
                )
            })
        })
        .collect();
    let count = moves.len();
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(moves)
        .map(|(appid, old, new, node)| async move {
            move_one(http, &appid, &old, &new, node, original)
                .await
                .err()
                .map(|e| format!("{appid}/{old}: {e:#}"))
        })
        .buffer_unordered(16)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let took = started.elapsed();
    ensure!(failures.is_empty(), "moves failed: {failures:?}");
    // The last answers, then the end state on both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.abort();
    }
    for (app, s) in &slots {
        let appid = fleet.appid(*app);
        for addr in [ours[0], original] {
            for (old, new) in s {
                ensure!(
                    lists(http, addr, &appid, new).await && !lists(http, addr, &appid, old).await,
                    "{addr} does not list {appid} as moved ({new} without {old})"
                );
            }
        }
    }
    let show = |s: &Watched| {
        format!(
            "{} gapped and {} empty of {} answers",
            s.gapped.load(Ordering::Relaxed),
            s.empty.load(Ordering::Relaxed),
            s.answers.load(Ordering::Relaxed)
        )
    };
    println!(
        "migrate moved batch: {count} instances of {} apps moved in {:.1} s (new instance registered with the cluster, old cancelled in the original once it showed the new); consumers polling the cluster: {}; consumers polling the original: {}",
        args.batch_apps,
        took.as_secs_f64(),
        show(&on_ours),
        show(&on_theirs)
    );
    Ok(())
}

/// Moves one provider: its new instance registers with the cluster, and
/// once the original shows it (exported), its old one cancels there.
async fn move_one(
    http: &reqwest::Client,
    appid: &str,
    old: &str,
    new: &str,
    node: SocketAddr,
    original: SocketAddr,
) -> Result<()> {
    let register = form(&[
        ("zone", ZONE),
        ("env", ENV),
        ("appid", appid),
        ("hostname", new),
        ("status", "1"),
        ("addrs", &format!("grpc://{new}:9000")),
    ]);
    let v: Value = http
        .post(format!("http://{node}/discovery/register"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(register)
        .send()
        .await?
        .json()
        .await?;
    ensure!(v["code"] == 0, "register: {v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lists(http, original, appid, new).await {
        ensure!(Instant::now() < deadline, "never exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = form(&[
        ("zone", ZONE),
        ("env", ENV),
        ("appid", appid),
        ("hostname", old),
    ]);
    let v: Value = http
        .post(format!("http://{original}/discovery/cancel"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(cancel)
        .send()
        .await
        .context("cancel")?
        .json()
        .await?;
    ensure!(v["code"] == 0, "cancel: {v}");
    Ok(())
}
