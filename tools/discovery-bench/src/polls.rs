//! `polls`: what holding many long polls costs the server in memory and
//! CPU, and how fast one change reaches all of them; measured in the same
//! run on the reference, a bare server on the same stack that only holds
//! requests and answers them all with the same bytes ([`crate::bare`]).
//! Each round runs both, on fresh processes, the order turning from round
//! to round. The wake latency of each poll runs from sending the change to
//! reading that poll's answer, so it includes the bench reading every
//! answer on its own thread.

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
use crate::peers::Ports;
use crate::server::{Launch, Server, Workdir};
use crate::stats::{Latencies, Mib, Ms};

pub const APPID: &str = "fan.app";

pub const COUNT: u64 = 10_000;
pub const BATCH: usize = 200;

/// The server's hold time for this run: far above the time it takes to
/// open every poll, so none times out before the change; below the
/// server's idle timeout (90 s), which must exceed it.
pub const HOLD_MS: u64 = 80_000;

/// How long opening the polls, and then their answers, may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Long polls held at once, each on its own connection.
    #[arg(long, default_value_t = COUNT)]
    pub count: u64,
    /// Connections being opened at a time, so the server's listen backlog
    /// never overflows.
    #[arg(long, default_value_t = BATCH)]
    pub batch: usize,
    /// Rounds; each runs the server and the reference once.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Seconds to wait between the polls being held and the change, with
    /// a line on stderr when it starts: time to attach a profiler to the
    /// wake alone (`perf record -p`, `callgrind_control -z`).
    #[arg(long, default_value_t = 0.0)]
    pub pause: f64,
}

/// What one run measured.
struct Run {
    answered: u64,
    wake: Latencies,
    /// Resident bytes per held poll.
    per_poll: u64,
    base: u64,
    held: u64,
    /// From sending the change to its answer.
    change: Duration,
    /// Server CPU from the change until every poll was answered.
    cpu: Duration,
    /// The user-space part of it (the rest is the kernel's: writes,
    /// closes).
    user: Duration,
}

impl Run {
    fn line(&mut self, label: &str, count: u64) -> String {
        format!(
            "polls {label}: answered {}/{count} wake {} memory {} B/poll (RSS {} -> {}) \
             CPU {:.1} us/woken poll, user {:.1} (change answered in {})",
            self.answered,
            self.wake.summary(),
            self.per_poll,
            Mib(self.base),
            Mib(self.held),
            self.cpu.as_secs_f64() * 1e6 / count.max(1) as f64,
            self.user.as_secs_f64() * 1e6 / count.max(1) as f64,
            Ms::from(self.change),
        )
    }
}

/// The server under test, or the reference.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subject {
    Ours,
    Bare,
}

impl Subject {
    fn label(self) -> &'static str {
        match self {
            Subject::Ours => "server",
            Subject::Bare => "reference",
        }
    }
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    let launch = Launch {
        poll_hold_ms: HOLD_MS,
        ..launch.clone()
    };
    // The reference answers with the bytes the server's polls get: taken
    // from the server's first round.
    let mut answer = None;
    let mut runs: Vec<(Subject, Run)> = Vec::new();
    for round in 0..args.rounds.max(1) {
        let order = if round % 2 == 0 {
            [Subject::Ours, Subject::Bare]
        } else {
            [Subject::Bare, Subject::Ours]
        };
        for subject in order {
            let mut run = match subject {
                Subject::Ours => {
                    let (run, body) = ours(&launch, args).await?;
                    answer.get_or_insert(body);
                    run
                }
                Subject::Bare => {
                    // The first round runs the server first.
                    let body = answer.as_deref().context("no answer to repeat yet")?;
                    bare(&launch, args, body).await?
                }
            };
            println!("{}", run.line(subject.label(), args.count));
            ensure!(
                run.answered == args.count,
                "{}: only {} of {} polls were answered",
                subject.label(),
                run.answered,
                args.count
            );
            runs.push((subject, run));
        }
    }
    if args.rounds > 1 {
        for subject in [Subject::Ours, Subject::Bare] {
            let mut all = Latencies::default();
            let (mut per_poll, mut cpu, mut user, mut n) =
                (0, Duration::ZERO, Duration::ZERO, 0u32);
            for (_, run) in runs.iter().filter(|(s, _)| *s == subject) {
                all.append(&mut run.wake.clone());
                per_poll += run.per_poll;
                cpu += run.cpu;
                user += run.user;
                n += 1;
            }
            println!(
                "polls {} over {n} rounds: wake {} memory {} B/poll CPU {:.1} us/woken poll, user {:.2}",
                subject.label(),
                all.summary(),
                per_poll / u64::from(n.max(1)),
                cpu.as_secs_f64() * 1e6 / f64::from(n.max(1)) / args.count.max(1) as f64,
                user.as_secs_f64() * 1e6 / f64::from(n.max(1)) / args.count.max(1) as f64,
            );
        }
    }
    Ok(())
}

/// One run on a fresh server; also returns the body its polls were
/// answered with.
async fn ours(launch: &Launch, args: &Args) -> Result<(Run, Vec<u8>)> {
    let dir = Workdir::new()?;
    let mut server = Server::start(launch, &dir).await?;
    let addr = server.addr;
    discovery::register(addr, &instance_form("fan-0")).await?;
    let latest = discovery::fetch(addr, APPID).await?.latest_timestamp;
    let mut wake = Vec::new();
    post_form(
        &mut wake,
        addr,
        "/discovery/register",
        &instance_form("fan-1"),
    );
    let run = measure(&mut server, Subject::Ours, args, latest, &wake).await?;
    // What a poll from before the change is answered: the same bytes as
    // every held poll got.
    let mut request = Vec::new();
    discovery::get(&mut request, addr, &polls_target(APPID, "after", latest));
    let (code, body) = discovery::once(addr, &request).await?;
    ensure!(
        succeeded(code, &body),
        "the poll after the change answered HTTP {code}"
    );
    Ok((run, body))
}

/// One run on a fresh reference, answering with `body`.
async fn bare(launch: &Launch, args: &Args, body: &[u8]) -> Result<Run> {
    let dir = Workdir::new()?;
    let me = Launch {
        binary: std::env::current_exe().context("finding the bench's own binary")?,
        ..launch.clone()
    };
    let ports = Ports::free(launch.peers)?;
    let mut server = Server::spawn_bare(&me, &dir, ports)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while held(&server, Subject::Bare).await.is_err() {
        server.check_alive()?;
        ensure!(
            Instant::now() < deadline,
            "the reference did not start serving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut wake = Vec::new();
    let head = format!(
        "POST /wake HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    wake.extend_from_slice(head.as_bytes());
    wake.extend_from_slice(body);
    measure(&mut server, Subject::Bare, args, 0, &wake).await
}

/// Holds `args.count` polls on `server`, sends `wake`, and measures.
async fn measure(
    server: &mut Server,
    subject: Subject,
    args: &Args,
    latest: i64,
    wake: &[u8],
) -> Result<Run> {
    let addr = server.addr;
    // Let the server's allocations settle before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = server.rss()?;

    let opened = Instant::now();
    let mut polls = open(addr, args, latest).await?;
    wait_held(server, subject, &mut polls, args.count).await?;
    eprintln!(
        "# {}: {} polls held after {:.1} s",
        subject.label(),
        args.count,
        opened.elapsed().as_secs_f64()
    );
    let held = server.rss()?;
    if args.pause > 0.0 {
        let pause = Duration::try_from_secs_f64(args.pause).context("--pause")?;
        eprintln!("# pausing {} s before the change", args.pause);
        tokio::time::sleep(pause).await;
    }

    let mut trigger = Conn::connect(addr).await?;
    let (user_before, system_before) = server.cpu_times()?;
    let sent = Instant::now();
    let reply = timeout(REQUEST_TIMEOUT, trigger.send(wake))
        .await
        .context("the change was not answered in time")??;
    ensure!(
        succeeded(reply.status, reply.body),
        "the change answered HTTP {}: {}",
        reply.status,
        String::from_utf8_lossy(reply.body)
    );
    let change = sent.elapsed();

    let (answered, wake) = collect(&mut polls, sent).await;
    let (user_after, system_after) = server.cpu_times()?;
    let user = user_after.saturating_sub(user_before);
    let cpu = user + system_after.saturating_sub(system_before);
    Ok(Run {
        answered,
        wake,
        per_poll: held.saturating_sub(base) / args.count.max(1),
        base,
        held,
        change,
        cpu,
        user,
    })
}

/// How many polls `server` holds.
async fn held(server: &Server, subject: Subject) -> Result<u64> {
    match subject {
        Subject::Ours => Ok(discovery::status(server.addr).await?.held_polls),
        Subject::Bare => {
            let mut request = Vec::new();
            discovery::get(&mut request, server.addr, "/held");
            let (code, body) = discovery::once(server.addr, &request).await?;
            ensure!(code == 200, "/held answered HTTP {code}");
            Ok(std::str::from_utf8(&body)?.trim().parse()?)
        }
    }
}

pub fn instance_form(hostname: &str) -> String {
    discovery::form(&[
        ("zone", ZONE),
        ("env", ENV),
        ("appid", APPID),
        ("hostname", hostname),
        ("status", "1"),
        ("addrs", "grpc://10.0.0.1:9000"),
    ])
}

/// Opens `args.count` polls of the bench's app.
async fn open(addr: SocketAddr, args: &Args, latest: i64) -> Result<JoinSet<Result<Instant>>> {
    open_polls(addr, args.count, args.batch, APPID, "poller", latest).await
}

/// Opens `count` polls of `appid` (pollers `{prefix}-{i}`), at most `batch`
/// connecting at a time; each task ends with the moment its answer was
/// read.
pub async fn open_polls(
    addr: SocketAddr,
    count: u64,
    batch: usize,
    appid: &str,
    prefix: &str,
    latest: i64,
) -> Result<JoinSet<Result<Instant>>> {
    let gate = Arc::new(Semaphore::new(batch.max(1)));
    let mut polls = JoinSet::new();
    for i in 0..count {
        let permit = gate.clone().acquire_owned().await?;
        let mut request = Vec::new();
        discovery::get(
            &mut request,
            addr,
            &polls_target(appid, &format!("{prefix}-{i}"), latest),
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
    subject: Subject,
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
        let held = held(server, subject).await?;
        if held == count {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} holds {held} polls, not {count}, after {PHASE_TIMEOUT:?}",
                subject.label()
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
