//! `zones`: two zones of three nodes each on this machine, linked through
//! relays the bench can cut (docs/zones.md).
//!
//! - **Propagation**: registers in zone A at a steady rate; for each one
//!   acknowledged, the time until a poll held in zone B wakes with it, and
//!   as the reference measured in the same run, until a poll held in zone A
//!   itself does.
//! - **Catch-up**: zone A holds `--instances`; the link is cut for
//!   `--cut-secs` while A's instances renew at the SDK's cadence; then the
//!   time from the heal until every node of B holds a partition identical
//!   to A's own (same digest), and as the reference, how long B took to
//!   receive the same instances in the first place.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::{Cluster, RaftSettings, Zone};
use crate::discovery::{Fleet, ENV};
use crate::fill::fill;
use crate::load::{drive_spread, Stop};
use crate::peers::Ports;
use crate::relay::Link;
use crate::server::{Launch, Workdir};
use crate::stats::{Latencies, Ms};

const A: &str = "sh001";
const B: &str = "sh002";

/// Nodes per zone.
const SIZE: usize = 3;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub raft: RaftSettings,
    /// Registers per second in zone A while propagation is measured.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of registers.
    #[arg(long, default_value_t = 20.0)]
    pub secs: f64,
    /// Apps the registers go to, each polled in both zones.
    #[arg(long, default_value_t = 1000)]
    pub apps: u64,
    /// Instances of zone A for the catch-up (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    pub instances: u64,
    /// How long the link is cut.
    #[arg(long, default_value_t = 60)]
    pub cut_secs: u64,
    /// Renews per second in zone A during the cut; by default every
    /// instance once per 30 s, as SDKs renew.
    #[arg(long)]
    pub renew_rate: Option<f64>,
}

/// Two zones and the link between them.
struct Zones {
    a: Cluster,
    b: Cluster,
    link: Link,
    _certs: Workdir,
}

impl Zones {
    async fn start(launch: &Launch, raft: RaftSettings) -> Result<Zones> {
        ensure!(
            launch.peers.split_ports(),
            "zones need a build with a peer port (not --legacy-config)"
        );
        let link = Link::new();
        let certs = Workdir::new()?;
        let ports =
            || -> Result<Vec<Ports>> { (0..SIZE).map(|_| Ports::free(launch.peers)).collect() };
        let (a_ports, b_ports) = (ports()?, ports()?);
        // Each zone reaches the other's peer ports through the relays.
        let mut sections = Vec::new();
        for (other, their) in [(B, &b_ports), (A, &a_ports)] {
            let mut relays = Vec::new();
            for p in their {
                relays.push(format!("\"{}\"", link.relay(p.peer).await?));
            }
            sections.push(format!(
                "\n# Not evicting: instances the bench stops renewing stay.\n\
                 [eviction]\nthreshold_ms = 3600000\nceiling_ms = 7200000\n\n\
                 [zones]\n\"{other}\" = [{}]\n",
                relays.join(", ")
            ));
        }
        let zone = |name: &str, extra: String| Zone {
            name: name.into(),
            extra,
            pki_dir: Some(certs.path().to_path_buf()),
            follows: vec![if name == A { B } else { A }.to_string()],
        };
        let mut a = Cluster::configure(launch, raft, a_ports, zone(A, sections.remove(0)))?;
        let mut b = Cluster::configure(launch, raft, b_ports, zone(B, sections.remove(0)))?;
        a.spawn_all()?;
        b.spawn_all()?;
        a.wait_all_serving().await?;
        b.wait_all_serving().await?;
        Ok(Zones {
            a,
            b,
            link,
            _certs: certs,
        })
    }
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    ensure!(
        args.rate > 0.0 && args.apps > 0,
        "--rate and --apps above 0"
    );
    let zones = Zones::start(launch, args.raft).await?;
    propagation(&zones, args).await?;
    if args.instances > 0 {
        catch_up(&zones, args).await?;
    }
    Ok(())
}

/// When each hostname was first seen by a poll, per zone polled.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

async fn propagation(zones: &Zones, args: &Args) -> Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()?;
    let fleet = Fleet {
        prefix: "zprop",
        apps: args.apps,
    };
    let mut p = propagate(
        &http,
        fleet,
        args.rate,
        args.secs,
        &zones.a.addrs(),
        &zones.b.addrs(),
    )
    .await?;
    let what = format!(
        "{} of {} registers acknowledged by zone A in {:.1} s ({:.0}/s), {} apps polled in each zone, {}",
        p.acked,
        p.sent,
        p.sending.as_secs_f64(),
        p.sent as f64 / p.sending.as_secs_f64(),
        args.apps,
        args.raft.describe()
    );
    println!(
        "zones propagation A->B (register acknowledged in A to poll woken in B): {}, {} never woken ({what})",
        p.there.summary(),
        p.missing_there
    );
    println!(
        "zones propagation reference A->A (same register, poll held in A): {}, {} never woken",
        p.here.summary(),
        p.missing_here
    );
    Ok(())
}

/// What [`propagate`] measured.
pub struct Propagation {
    /// Acknowledgment on the writing side to poll woken on the other.
    pub there: Latencies,
    pub missing_there: usize,
    /// The same register to a poll woken on the writing side itself.
    pub here: Latencies,
    pub missing_here: usize,
    pub sent: u64,
    pub acked: usize,
    pub sending: Duration,
}

/// One instance per app of `fleet` registered on `from` first; then a
/// poll held on every app on both sides, and registers on `from` at `rate`
/// for `secs`: for each one acknowledged, when a poll on `to` (and one on
/// `from`) first showed it.
pub async fn propagate(
    http: &reqwest::Client,
    fleet: Fleet,
    rate: f64,
    secs: f64,
    from: &[SocketAddr],
    to: &[SocketAddr],
) -> Result<Propagation> {
    // One instance per app first, so that every poll starts on a known
    // app and timestamp on both sides.
    fill(from[0], fleet, fleet.apps).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_from, seen_to): (Seen, Seen) = Default::default();
    let mut pollers = Vec::new();
    for (side, seen) in [(from, &seen_from), (to, &seen_to)] {
        for app in 0..fleet.apps {
            let appid = fleet.appid(app);
            let addr = side[app as usize % side.len()];
            let latest = until_fetched(http, addr, &appid).await?;
            pollers.push(tokio::spawn(poll(
                http.clone(),
                addr,
                appid,
                latest,
                seen.clone(),
                stop.clone(),
            )));
        }
    }
    // Let every poll be held before the first register.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let total = (rate * secs) as u64;
    let acked: Seen = Default::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::with_capacity(total as usize);
    let started = Instant::now();
    for n in 0..total {
        tick.tick().await;
        let i = fleet.apps + n;
        let addr = from[n as usize % from.len()];
        let (http, acked) = (http.clone(), acked.clone());
        let form = fleet.register_form(i);
        let host = fleet.names(i).1;
        sent.push(tokio::spawn(async move {
            let answer = http
                .post(format!("http://{addr}/discovery/register"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await;
            let at = Instant::now();
            let ok = match answer {
                Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["code"] == 0),
                Err(_) => false,
            };
            if ok {
                acked.lock().insert(host, at);
            }
        }));
    }
    for s in sent {
        s.await?;
    }
    let sending = started.elapsed();
    // Stragglers: every acknowledged register should have woken both.
    let deadline = Instant::now() + Duration::from_secs(15);
    let all_woken = || {
        let acked = acked.lock();
        let (a, b) = (seen_from.lock(), seen_to.lock());
        acked.keys().all(|h| a.contains_key(h) && b.contains_key(h))
    };
    while Instant::now() < deadline && !all_woken() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.abort();
    }
    let acked = acked.lock().clone();
    let (there, missing_there) = latencies(&acked, &seen_to);
    let (here, missing_here) = latencies(&acked, &seen_from);
    Ok(Propagation {
        there,
        missing_there,
        here,
        missing_here,
        sent: total,
        acked: acked.len(),
        sending,
    })
}

/// Wake latencies of every acknowledged host seen, and how many were not.
fn latencies(acked: &HashMap<String, Instant>, seen: &Seen) -> (Latencies, usize) {
    let seen = seen.lock();
    let mut l = Latencies::default();
    let mut missing = 0;
    for (host, at) in acked {
        match seen.get(host) {
            Some(woken) => l.push(woken.saturating_duration_since(*at)),
            None => missing += 1,
        }
    }
    (l, missing)
}

/// The app's timestamp, once `addr` serves it.
pub async fn until_fetched(http: &reqwest::Client, addr: SocketAddr, appid: &str) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = http
            .get(format!(
                "http://{addr}/discovery/fetch?env={ENV}&appid={appid}&status=3"
            ))
            .send()
            .await?
            .json()
            .await?;
        if let Some(ts) = v["data"]["latest_timestamp"].as_i64() {
            return Ok(ts);
        }
        ensure!(
            Instant::now() < deadline,
            "{addr} never served {appid}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Holds polls of `appid` on `addr` one after another, noting when each
/// of zone A's hosts was first seen, until `stop`.
async fn poll(
    http: reqwest::Client,
    addr: SocketAddr,
    appid: String,
    mut latest: i64,
    seen: Seen,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let url = format!(
            "http://{addr}/discovery/polls?env={ENV}&appid={appid}&latest_timestamp={latest}&hostname=bench"
        );
        let Ok(r) = http.get(url).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        let at = Instant::now();
        let app = &v["data"][appid.as_str()];
        if v["code"] != 0 {
            continue;
        }
        if let Some(ts) = app["latest_timestamp"].as_i64() {
            latest = ts;
        }
        let mut seen = seen.lock();
        for i in app["instances"][A].as_array().into_iter().flatten() {
            if let Some(host) = i["hostname"].as_str() {
                seen.entry(host.to_string()).or_insert(at);
            }
        }
    }
}

/// Every node of B holds A's partition as A's leader holds it.
async fn identical(zones: &Zones) -> Result<bool> {
    let leader = zones.a.leader().await?;
    let own = partition_digest(zones.a.addr(leader)?).await?;
    for addr in zones.b.addrs() {
        if partition_digest(addr).await? != own {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn partition_digest(addr: SocketAddr) -> Result<String> {
    let v: Value = reqwest::get(format!("http://{addr}/admin/digest"))
        .await?
        .json()
        .await?;
    v["partitions"][A]["digest"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{addr} has no digest of {A}: {v}"))
}

/// Waits until B is identical to A; the time it took.
async fn until_identical(zones: &Zones, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    while !identical(zones).await? {
        if started.elapsed() > within {
            let mut seen = Vec::new();
            for addr in zones.b.addrs() {
                let v: Value = reqwest::get(format!("http://{addr}/admin/status"))
                    .await?
                    .json()
                    .await?;
                seen.push(v["zones"][A].to_string());
            }
            anyhow::bail!("zone B not identical to A after {within:?}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed())
}

/// Batches and full copies B's nodes applied from A.
async fn stream_counts(zones: &Zones) -> Result<(u64, u64)> {
    let mut counts = (0, 0);
    for addr in zones.b.addrs() {
        let v: Value = reqwest::get(format!("http://{addr}/admin/status"))
            .await?
            .json()
            .await?;
        counts.0 += v["zones"][A]["batches"].as_u64().unwrap_or(0);
        counts.1 += v["zones"][A]["full_copies"].as_u64().unwrap_or(0);
    }
    Ok(counts)
}

async fn catch_up(zones: &Zones, args: &Args) -> Result<()> {
    let fleet = Fleet {
        prefix: "zcatch",
        apps: 1000,
    };
    let a_leader = zones.a.leader().await?;
    let filled = Instant::now();
    fill(zones.a.addr(a_leader)?, fleet, args.instances).await?;
    let fill_took = filled.elapsed();
    let initial = until_identical(zones, Duration::from_secs(600)).await?;
    println!(
        "zones catch-up reference: zone B identical to A {} after A finished taking {} registers ({:.1} s at {:.0}/s), link up all along",
        Ms::from(initial),
        args.instances,
        fill_took.as_secs_f64(),
        args.instances as f64 / fill_took.as_secs_f64(),
    );

    let (batches_before, full_before) = stream_counts(zones).await?;
    let rate = args
        .renew_rate
        .unwrap_or(args.instances as f64 / 30.0)
        .max(1.0);
    zones.link.cut();
    eprintln!(
        "# link cut for {} s; zone A renews {rate:.0}/s meanwhile",
        args.cut_secs
    );
    let stop = Stop::Window {
        warmup: Duration::ZERO,
        measure: Duration::from_secs(args.cut_secs),
    };
    let outcomes = drive_spread(
        &zones.a.addrs(),
        32,
        stop,
        Some(rate),
        fleet.renews(args.instances),
    )
    .await?;
    let (renewed, failed): (u64, u64) = outcomes
        .iter()
        .fold((0, 0), |(ok, err), o| (ok + o.ok, err + o.errors));
    zones.link.heal();
    let took = until_identical(zones, Duration::from_secs(600)).await?;
    let (batches, full) = stream_counts(zones).await?;
    let instances = zones.a.status(a_leader).await?.instances;
    println!(
        "zones catch-up after a {} s cut: zone B identical to A {} after the link healed ({} instances in A, {renewed} renews in A during the cut ({failed} failed), {} batches and {} full copies to catch up, {})",
        args.cut_secs,
        Ms::from(took),
        instances,
        batches - batches_before,
        full - full_before,
        args.raft.describe()
    );
    Ok(())
}
