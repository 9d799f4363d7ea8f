//! `hostile`: the attacks of the "one client cannot take the cluster down"
//! issue, each from one ordinary client with no credentials, against a
//! three-node cluster with the product's limits (the bench's one-address
//! loads otherwise run with the per-address shares off), each figure
//! printed next to its bound:
//!
//! - slow readers: `readers` sockets ask `fetch/all` of one app of
//!   `instances` instances and never read, while a writer keeps changing
//!   that app: the leader's peak RSS above its idle RSS, and elections;
//! - bogus writes: `sets` concurrent `set`s of about 1 MB naming
//!   hostnames never registered, while a steady writer writes through a
//!   follower: its longest gap between two acknowledgements and its
//!   `-503`s;
//! - a restore of about `restore_mib` MiB, with the same steady writer;
//! - one address's polls: how many it holds of its share, and whether a
//!   second address still holds its own;
//! - registrations that never renew: the time until they are evicted,
//!   with eviction timings shortened (threshold `evict_secs`) and a few
//!   instances renewing, and whether self-preservation turned on.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{Cluster, RaftSettings, Zone};
use crate::discovery::{form, post_form, ENV, ZONE};
use crate::load::{drive, Stop};
use crate::server::{Launch, Shares};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Instances of the one app the slow readers ask for.
    #[arg(long, default_value_t = 50_000)]
    pub instances: u64,
    /// Sockets that ask `fetch/all` and never read.
    #[arg(long, default_value_t = 200)]
    pub readers: usize,
    /// How long the slow readers are watched (past the send timeout).
    #[arg(long, default_value_t = 15)]
    pub read_secs: u64,
    /// Concurrent bogus `set`s of about 1 MB.
    #[arg(long, default_value_t = 48)]
    pub sets: usize,
    /// MiB of instance data in the backup restored (at most 64).
    #[arg(long, default_value_t = 60)]
    pub restore_mib: u64,
    /// Eviction threshold for the registrations that never renew.
    #[arg(long, default_value_t = 10)]
    pub evict_secs: u64,
    /// Registrations that never renew.
    #[arg(long, default_value_t = 5_000)]
    pub flood: u64,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    println!("# hostile: {}", launch.describe());
    // Filling a registry from the bench's one address is not what is
    // measured: the pace of new instances is off there (the other shares
    // are the product's); the flood of registrations meets it.
    let filling = Launch {
        shares: Shares::PaceOff,
        ..launch.clone()
    };
    let product = Launch {
        shares: Shares::On,
        ..launch.clone()
    };
    slow_readers(&filling, args).await?;
    bogus_writes_and_restore(&filling, args).await?;
    polls(&product).await?;
    never_renewed(&product, args).await?;
    Ok(())
}

async fn cluster(launch: &Launch, extra: &str) -> Result<Cluster> {
    let ports = (0..3)
        .map(|_| crate::peers::Ports::free(launch.peers))
        .collect::<Result<_>>()?;
    let zone = Zone {
        extra: extra.to_string(),
        ..Zone::default()
    };
    Cluster::configure(launch, RaftSettings::default(), ports, zone)?
        .run()
        .await
}

fn http_from(source: [u8; 4]) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn term(cluster: &Cluster, id: u64) -> Result<u64> {
    let url = format!("http://{}/admin/status", cluster.addr(id)?);
    let status: Value = reqwest::get(url).await?.json().await?;
    status["term"].as_u64().context("no term")
}

/// The form of a register of `hostname` of `appid` at `addr`, up.
fn register_form(appid: &str, hostname: &str, addr: &str) -> String {
    form(&[
        ("zone", ZONE),
        ("env", ENV),
        ("appid", appid),
        ("hostname", hostname),
        ("status", "1"),
        ("addrs", addr),
    ])
}

/// Registers `count` instances of `appid` with `metadata_bytes` of
/// metadata each, 64 at a time.
async fn fill_app(
    addr: SocketAddr,
    appid: &'static str,
    count: u64,
    metadata_bytes: usize,
) -> Result<()> {
    let metadata = format!("{{\"blob\":\"{}\"}}", "m".repeat(metadata_bytes));
    let render = Arc::new(move |n: u64, buf: &mut Vec<u8>| {
        let host = format!("{appid}-{n:07}");
        let body = form(&[
            ("zone", ZONE),
            ("env", ENV),
            ("appid", appid),
            ("hostname", &host),
            ("status", "1"),
            (
                "addrs",
                &format!(
                    "grpc://10.{}.{}.{}:9000",
                    (n >> 16) & 255,
                    (n >> 8) & 255,
                    n & 255
                ),
            ),
            ("metadata", &metadata),
        ]);
        post_form(buf, addr, "/discovery/register", &body);
    });
    let out = drive(addr, 64, Stop::Count(count), render).await?;
    ensure!(
        out.errors == 0,
        "{} of {count} registers failed",
        out.errors
    );
    Ok(())
}

/// A writer that registers one instance again and again through `addr`
/// until stopped: the longest time between two acknowledgements, and the
/// answers that were not 0.
struct Steady {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, u64, u64)>,
}

impl Steady {
    fn start(addr: SocketAddr) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://{addr}/discovery/register");
            let body = register_form("steady.app", "steady-1", "grpc://10.9.9.9:9000");
            let (mut last, mut gap, mut unavailable, mut acked) =
                (Instant::now(), Duration::ZERO, 0, 0);
            while !flag.load(Ordering::Relaxed) {
                let answer = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.clone())
                    .send()
                    .await;
                let code = match answer {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["code"].as_i64()),
                    Err(_) => None,
                };
                if code == Some(0) {
                    gap = gap.max(last.elapsed());
                    last = Instant::now();
                    acked += 1;
                } else {
                    unavailable += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (gap.max(last.elapsed()), unavailable, acked)
        });
        Steady { stop, task }
    }

    async fn finish(self) -> Result<(Duration, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

async fn slow_readers(launch: &Launch, args: &Args) -> Result<()> {
    let mut cluster = cluster(launch, "").await?;
    let leader = cluster.leader().await?;
    let addr = cluster.addr(leader)?;
    fill_app(addr, "big.app", args.instances, 100).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = cluster.server(leader)?.rss()?;
    let term_before = term(&cluster, leader).await?;
    // Changes to the app while the readers hold it: each would copy it.
    let changes = {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let body = form(&[
                    ("zone", ZONE),
                    ("env", ENV),
                    ("appid", "big.app"),
                    ("hostname", &format!("change-{n}")),
                    ("status", "1"),
                    ("addrs", "grpc://10.8.8.8:9000"),
                ]);
                n += 1;
                let _ = http
                    .post(format!("http://{addr}/discovery/register"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (stop, task)
    };
    let mut readers = Vec::with_capacity(args.readers);
    for i in 0..args.readers {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        // A handful of addresses, as a few attacking hosts.
        socket.bind(SocketAddr::from(([127, 0, 1, (i % 8) as u8 + 1], 0)))?;
        let mut stream = socket.connect(addr).await?;
        stream
            .write_all(
                format!("GET /discovery/fetch/all HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
            )
            .await?;
        readers.push(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let mut peak = idle;
    while started.elapsed() < Duration::from_secs(args.read_secs) {
        peak = peak.max(cluster.server(leader)?.rss()?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    changes.0.store(true, Ordering::Relaxed);
    changes.1.await?;
    // What each reader got, all read at once: refused at once (503), or
    // closed by the node within a few seconds (cut by the send timeout,
    // having had part of its answer), or neither (still served).
    let outcomes = futures::future::join_all(readers.into_iter().map(|mut r| async move {
        let mut head = [0u8; 12];
        let _ = tokio::time::timeout(Duration::from_secs(2), r.read_exact(&mut head)).await;
        if head.starts_with(b"HTTP/1.1 503") {
            return (1, 0);
        }
        // Drained as fast as it comes: what the sockets still hold of a cut
        // answer, then its end; an answer still served is read whole and
        // the connection stays open (keep-alive), so only a connection the
        // node closed ends.
        let mut buf = vec![0u8; 64 << 10];
        let ended = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        (0, usize::from(ended.is_ok()))
    }))
    .await;
    let refused: usize = outcomes.iter().map(|o| o.0).sum();
    let cut: usize = outcomes.iter().map(|o| o.1).sum();
    let elections = term(&cluster, leader).await? - term_before;
    cluster.check_alive(leader)?;
    println!(
        "slow readers: {} sockets ask fetch/all of {} instances and never read, the app changing 10 times a second: \
         leader RSS {:.0} MB idle, peak {:.0} MB above it (bound: 300 MB); {refused} refused at once (overloaded), \
         {cut} cut by the send timeout; elections: {elections} (bound: 0)",
        args.readers,
        args.instances,
        idle as f64 / 1e6,
        peak.saturating_sub(idle) as f64 / 1e6,
    );
    Ok(())
}

async fn bogus_writes_and_restore(launch: &Launch, args: &Args) -> Result<()> {
    let cluster = cluster(launch, "").await?;
    let leader = cluster.leader().await?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("a follower")?;
    let addr = cluster.addr(leader)?;
    let term_before = term(&cluster, leader).await?;

    // 48 sets of about 1 MB naming hostnames never registered.
    let ghosts: String = (0..700)
        .map(|i| {
            format!(
                "hostname={i:04}{}&status=1&metadata=%7B%22k%22%3A%22{}%22%7D&",
                "g".repeat(240),
                "v".repeat(1150)
            )
        })
        .collect();
    let body = format!("{ghosts}zone={ZONE}&env={ENV}&appid=steady.app");
    let steady = Steady::start(cluster.addr(follower)?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let sets = (0..args.sets).map(|_| {
        let body = body.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/discovery/set"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or_default();
            anyhow::Ok((status, v["code"].as_i64().unwrap_or(0)))
        }
    });
    let answers = futures::future::join_all(sets).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (gap, unavailable, acked) = steady.finish().await?;
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Ok((_, -400)) | Ok((413, _))))
        .count();
    println!(
        "bogus writes: {} concurrent sets of {:.1} MB naming hostnames never registered: {refused} refused \
         (-400 before the log, or 413) in {} ms; a steady writer through a follower meanwhile: {acked} acknowledged, \
         longest gap {} ms (bound: 1,000 ms), {unavailable} not acknowledged (bound: 0)",
        args.sets,
        body.len() as f64 / 1e6,
        took.as_millis(),
        gap.as_millis(),
    );

    // A restore of about restore_mib MiB: instances of 1,200 bytes of
    // metadata, about 1.55 KB each as the node counts them.
    let count = args.restore_mib * (1 << 20) / 1550;
    fill_app(addr, "restored.app", count, 1200).await?;
    let token = cluster
        .admin_token()
        .context("the build has no admin token")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let backup = http
        .get(format!("http://{addr}/admin/backup"))
        .bearer_auth(token)
        .send()
        .await?
        .bytes()
        .await?;
    let steady = Steady::start(cluster.addr(follower)?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let said = http
        .post(format!("http://{addr}/admin/restore"))
        .bearer_auth(token)
        .body(backup.clone())
        .send()
        .await?
        .text()
        .await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (gap, unavailable, acked) = steady.finish().await?;
    ensure!(said.contains("restored"), "the restore failed: {said}");
    let elections = term(&cluster, leader).await? - term_before;
    println!(
        "restore: a backup of {:.1} MB ({count} instances) restored in {:.1} s ({}); a steady writer through a \
         follower meanwhile: {acked} acknowledged, longest gap {} ms, {unavailable} not acknowledged (bound: 0); \
         elections over both: {elections} (bound: 0)",
        backup.len() as f64 / 1e6,
        took.as_secs_f64(),
        said.trim(),
        gap.as_millis(),
    );
    Ok(())
}

async fn polls(launch: &Launch) -> Result<()> {
    let cluster = cluster(launch, "").await?;
    let leader = cluster.leader().await?;
    let addr = cluster.addr(leader)?;
    let http = reqwest::Client::new();
    let body = register_form("polled.app", "p1", "grpc://10.7.7.7:9000");
    http.post(format!("http://{addr}/discovery/register"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let fetched: Value = http
        .get(format!(
            "http://{addr}/discovery/fetch?env={ENV}&appid=polled.app&status=1"
        ))
        .send()
        .await?
        .json()
        .await?;
    let latest = fetched["data"]["latest_timestamp"]
        .as_i64()
        .context("latest_timestamp")?;
    let target =
        format!("/discovery/poll?env={ENV}&appid=polled.app&hostname=x&latest_timestamp={latest}");
    // One address asks for 4,000 polls (its share is a quarter of 15,000).
    let held_by = |source: [u8; 4], n: usize| {
        let target = target.clone();
        async move {
            let mut sockets = Vec::with_capacity(n);
            for _ in 0..n {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                let mut s = socket.connect(addr).await?;
                s.write_all(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                    .await?;
                sockets.push(s);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Held: nothing answered yet.
            let mut held = 0;
            for s in &mut sockets {
                let mut byte = [0u8; 1];
                if tokio::time::timeout(Duration::from_millis(2), s.read(&mut byte))
                    .await
                    .is_err()
                {
                    held += 1;
                }
            }
            anyhow::Ok((held, sockets))
        }
    };
    let (flood_held, _flood) = held_by([127, 0, 2, 1], 4_000).await?;
    let (other_held, _other) = held_by([127, 0, 2, 2], 100).await?;
    println!(
        "polls: one address asks for 4,000 held polls: {flood_held} held, {} answered -503 at once \
         (bound: its share, 3,750 of 15,000); a second address meanwhile: {other_held} of 100 held (bound: 100)",
        4_000 - flood_held,
    );
    Ok(())
}

async fn never_renewed(launch: &Launch, args: &Args) -> Result<()> {
    let threshold = args.evict_secs * 1000;
    let extra = format!(
        "[eviction]\nthreshold_ms = {threshold}\nceiling_ms = {}\nevery_ms = 1000\n\
         renew_interval_ms = 2000\nwindow_ms = 6000\n",
        threshold * 30
    );
    let cluster = cluster(launch, &extra).await?;
    let leader = cluster.leader().await?;
    let addr = cluster.addr(leader)?;
    let http = reqwest::Client::new();
    let register = |appid: &'static str, host: String| {
        let http = http.clone();
        async move {
            let body = register_form(appid, &host, "grpc://10.6.6.6:9000");
            http.post(format!("http://{addr}/discovery/register"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
        }
    };
    // Twenty instances that renew every second, for two windows.
    for i in 0..20 {
        register("alive.app", format!("alive-{i}")).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let renewing = {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for i in 0..20 {
                    let body = form(&[
                        ("zone", ZONE),
                        ("env", ENV),
                        ("appid", "alive.app"),
                        ("hostname", &format!("alive-{i}")),
                    ]);
                    let _ = http
                        .post(format!("http://{addr}/discovery/renew"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(12)).await;
    // The flood, from another address, at its pace.
    let flooder = http_from([127, 0, 3, 1])?;
    let flooded = Instant::now();
    let mut accepted = 0u64;
    for i in 0..args.flood {
        let body = form(&[
            ("zone", ZONE),
            ("env", ENV),
            ("appid", "flood.app"),
            ("hostname", &format!("flood-{i}")),
            ("status", "1"),
            ("addrs", "grpc://10.5.5.5:9000"),
        ]);
        let r = flooder
            .post(format!("http://{addr}/discovery/register"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        if r.status().as_u16() == 200 {
            accepted += 1;
        }
    }
    let registered_in = flooded.elapsed();
    let mut protecting = false;
    let gone_after = loop {
        let status: Value = http
            .get(format!("http://{addr}/admin/status"))
            .send()
            .await?
            .json()
            .await?;
        protecting |= status["self_preservation"]["protecting"] == true;
        let left: Value = http
            .get(format!(
                "http://{addr}/discovery/fetch?env={ENV}&appid=flood.app&status=3"
            ))
            .send()
            .await?
            .json()
            .await?;
        if left["code"] == -404 {
            break format!(
                "all evicted {:.1} s after the first",
                flooded.elapsed().as_secs_f64()
            );
        }
        if flooded.elapsed() > Duration::from_millis(threshold * 6) {
            let n = left["data"]["instances"][ZONE]
                .as_array()
                .map_or(0, Vec::len);
            break format!(
                "{n} still registered {:.0} s after the first",
                flooded.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::Relaxed);
    renewing.await?;
    println!(
        "never renewed: {accepted} of {} registrations accepted from one address in {:.1} s (the rest paced, HTTP 429), \
         none renewing, beside 20 that renew: {gone_after} (threshold {} s, ceiling {} s; \
         bound: the threshold plus the time they took to arrive and a round); self-preservation on: {protecting} \
         (bound: false)",
        args.flood,
        registered_in.as_secs_f64(),
        args.evict_secs,
        args.evict_secs * 30,
    );
    Ok(())
}
