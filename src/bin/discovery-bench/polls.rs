//! `polls`: what holding many long polls costs the server in memory, and
//! how fast one change reaches all of them. The wake latency of each poll
//! runs from sending the register to reading that poll's answer, so it
//! includes the bench reading every answer on its own thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};

use crate::discovery::{self, polls_target, post_form, succeeded, ENV, ZONE};
use crate::http::Conn;
use crate::load::REQUEST_TIMEOUT;
use crate::server::{Launch, Server, Workdir};
use crate::stats::{Latencies, Mib, Ms};

const APPID: &str = "fan.app";

pub const COUNT: u64 = 10_000;
pub const BATCH: usize = 200;

/// The server's hold time for this run: far above the time it takes to
/// open every poll, so none times out before the change.
const HOLD_MS: u64 = 300_000;

/// How long opening the polls, and then their answers, may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Long polls held at once, each on its own connection.
    #[arg(long, default_value_t = COUNT)]
    pub count: u64,
    /// Connections being opened at a time, so the server's listen backlog
    /// never overflows.
    #[arg(long, default_value_t = BATCH)]
    pub batch: usize,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    let launch = Launch {
        poll_hold_ms: HOLD_MS,
        ..launch.clone()
    };
    let dir = Workdir::new()?;
    let mut server = Server::start(&launch, &dir).await?;
    let addr = server.addr;
    discovery::register(addr, &instance_form("fan-0")).await?;
    let latest = discovery::fetch(addr, APPID).await?.latest_timestamp;
    // Let the server's allocations settle before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = server.rss()?;

    let opened = Instant::now();
    let mut polls = open(addr, args, latest).await?;
    wait_held(&mut server, &mut polls, args.count).await?;
    eprintln!(
        "# {} polls held after {:.1} s",
        args.count,
        opened.elapsed().as_secs_f64()
    );
    let held = server.rss()?;

    let mut trigger = Conn::connect(addr).await?;
    let mut request = Vec::new();
    post_form(
        &mut request,
        addr,
        "/discovery/register",
        &instance_form("fan-1"),
    );
    let cpu_before = server.cpu_time()?;
    let sent = Instant::now();
    let reply = timeout(REQUEST_TIMEOUT, trigger.send(&request))
        .await
        .context("the waking register was not answered in time")??;
    ensure!(
        succeeded(reply.status, reply.body),
        "the waking register answered HTTP {}: {}",
        reply.status,
        String::from_utf8_lossy(reply.body)
    );
    let commit = sent.elapsed();

    let (answered, mut latencies) = collect(&mut polls, sent).await;
    let cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let per_poll = held.saturating_sub(base) / args.count.max(1);
    println!(
        "polls: answered {answered}/{} wake {} memory {per_poll} B/poll (RSS {} -> {}, register {}, server CPU {})",
        args.count,
        latencies.summary(),
        Mib(base),
        Mib(held),
        Ms::from(commit),
        Ms::from(cpu)
    );
    ensure!(
        answered == args.count,
        "only {answered} of {} polls were answered",
        args.count
    );
    Ok(())
}

fn instance_form(hostname: &str) -> String {
    discovery::form(&[
        ("zone", ZONE),
        ("env", ENV),
        ("appid", APPID),
        ("hostname", hostname),
        ("status", "1"),
        ("addrs", "grpc://10.0.0.1:9000"),
    ])
}

/// Opens `count` polls, at most `batch` connecting at a time; each task
/// ends with the moment its answer was read.
async fn open(addr: SocketAddr, args: &Args, latest: i64) -> Result<JoinSet<Result<Instant>>> {
    let gate = Arc::new(Semaphore::new(args.batch.max(1)));
    let mut polls = JoinSet::new();
    for i in 0..args.count {
        let permit = gate.clone().acquire_owned().await?;
        let mut request = Vec::new();
        discovery::get(
            &mut request,
            addr,
            &polls_target(APPID, &format!("poller-{i}"), latest),
        );
        polls.spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            conn.write(&request).await?;
            drop(permit);
            let reply = conn.read().await?;
            let at = Instant::now();
            ensure!(
                succeeded(reply.status, reply.body),
                "poll answered HTTP {}: {}",
                reply.status,
                String::from_utf8_lossy(reply.body)
            );
            Ok(at)
        });
    }
    Ok(polls)
}

/// Waits until the server holds every poll; fails if one ends first.
async fn wait_held(
    server: &mut Server,
    polls: &mut JoinSet<Result<Instant>>,
    count: u64,
) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        if let Some(ended) = polls.try_join_next() {
            let why = match ended {
                Ok(Ok(_)) => "it was answered".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            bail!("a poll ended before the change: {why}");
        }
        server.check_alive()?;
        let status = discovery::status(server.addr).await?;
        if status.held_polls == count {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the server holds {} polls, not {count}, after {PHASE_TIMEOUT:?}",
                status.held_polls
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for every poll's answer; returns how many answered code 0 and
/// their latencies from `sent`.
async fn collect(polls: &mut JoinSet<Result<Instant>>, sent: Instant) -> (u64, Latencies) {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut answered = 0;
    let mut latencies = Latencies::default();
    let mut failure = None;
    while let Ok(Some(ended)) = timeout_at(deadline, polls.join_next()).await {
        match ended {
            Ok(Ok(at)) => {
                answered += 1;
                latencies.push(at.saturating_duration_since(sent));
            }
            Ok(Err(e)) => failure = Some(format!("{e:#}")),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    if let Some(why) = failure {
        eprintln!("# a poll failed: {why}");
    }
    (answered, latencies)
}
