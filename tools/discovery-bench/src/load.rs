//! The load driver: a fixed number of keep-alive connections, each sending
//! its next request as soon as the previous one is answered (closed loop)
//! or, when paced, as soon as the request is due; to one server or spread
//! over the nodes of a cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::discovery::succeeded;
use crate::http::Conn;
use crate::stats::Latencies;

/// How long a request (with its connect) may take before it counts as an
/// error; keeps the bench bounded when a server stops answering.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A pause after a failed request so a refused connection does not spin.
const BACKOFF: Duration = Duration::from_millis(10);

/// The shape of a timed load run.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring, so connections and caches are warm.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

impl LoadArgs {
    /// The run description printed after a result line.
    pub fn describe(&self) -> String {
        format!("{} conns, {} s", self.conns, self.duration)
    }
}

/// When a run ends.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Run for `warmup + measure`, recording only requests sent and
    /// answered inside the measured window.
    Window { warmup: Duration, measure: Duration },
    /// Send exactly this many requests, recording all of them.
    Count(u64),
}

impl Stop {
    pub fn window(args: &LoadArgs) -> Stop {
        Stop::Window {
            warmup: Duration::from_secs_f64(args.warmup),
            measure: Duration::from_secs_f64(args.duration),
        }
    }
}

/// Renders request number `n` (numbered across all connections) into the
/// buffer.
pub type Render = Arc<dyn Fn(u64, &mut Vec<u8>) + Send + Sync>;

/// Renders request number `n` (numbered across all nodes) for the node at
/// the address given.
pub type SpreadRender = Arc<dyn Fn(SocketAddr, u64, &mut Vec<u8>) + Send + Sync>;

/// What a run measured.
#[derive(Default)]
pub struct Outcome {
    /// Successes and failures recorded (in the window, or all for a count).
    pub ok: u64,
    pub errors: u64,
    pub latencies: Latencies,
    /// In a paced run, how late each recorded request was sent: whether
    /// the bench kept up with the pace.
    pub behind: Latencies,
    /// The recorded span: the window, or the whole run for a count.
    pub elapsed: Duration,
    /// Requests numbered, warm-up included: in a run that is not paced,
    /// instances `0..issued` were sent.
    pub issued: u64,
}

impl Outcome {
    /// Adds the counts and samples of another part of the same run.
    pub fn merge(&mut self, mut other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.append(&mut other.latencies);
        self.behind.append(&mut other.behind);
        self.elapsed = self.elapsed.max(other.elapsed);
        self.issued += other.issued;
    }

    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The standard result line: `label: N req/s p50 … errors E (extra)`.
    pub fn line(&mut self, label: &str, extra: &str) -> String {
        format!(
            "{label}: {:.0} req/s {} errors {} ({extra})",
            self.rate(),
            self.latencies.summary(),
            self.errors
        )
    }
}

/// Where one run's connections meet.
struct Shared {
    addr: SocketAddr,
    render: Render,
    next: AtomicU64,
    stop: Stop,
    /// Requests per second of a paced run.
    rate: Option<f64>,
    start: Instant,
}

impl Shared {
    /// The next request number and, when paced, when it is due; `None`
    /// when the run is over.
    fn next(&self) -> Option<(u64, Option<Instant>)> {
        let take = || self.next.fetch_add(1, Ordering::Relaxed);
        let due = |n: u64, rate: f64| self.start + Duration::from_secs_f64(n as f64 / rate);
        match (self.stop, self.rate) {
            // The clock is read before a number is taken, so every number
            // taken is sent: instances `0..issued` exist afterwards.
            (Stop::Window { warmup, measure }, None) => {
                (Instant::now() < self.start + warmup + measure).then(|| (take(), None))
            }
            (Stop::Window { warmup, measure }, Some(rate)) => {
                let n = take();
                let due = due(n, rate);
                (due < self.start + warmup + measure).then_some((n, Some(due)))
            }
            (Stop::Count(total), rate) => {
                let n = take();
                (n < total).then(|| (n, rate.map(|r| due(n, r))))
            }
        }
    }

    /// The span whose requests are recorded; open-ended for a count.
    fn window(&self) -> (Instant, Option<Instant>) {
        match self.stop {
            Stop::Window { warmup, measure } => {
                (self.start + warmup, Some(self.start + warmup + measure))
            }
            Stop::Count(_) => (self.start, None),
        }
    }
}

/// Runs `conns` connections against `addr` until `stop`.
pub async fn drive(addr: SocketAddr, conns: usize, stop: Stop, render: Render) -> Result<Outcome> {
    run(addr, conns, stop, None, render).await
}

/// Runs `conns` connections spread evenly over `addrs` until `stop`, each
/// node's share as in [`drive`]; returns one outcome per address, in order.
///
/// Request numbers interleave (node `k` of `m` sends `k`, `k + m`, …), so
/// together the nodes cover the numbers one `drive` would. With a `rate`
/// the run is paced: the nodes share the rate equally and request `j` is
/// due about `j / rate` after the start, whatever node it goes to.
pub async fn drive_spread(
    addrs: &[SocketAddr],
    conns: usize,
    stop: Stop,
    rate: Option<f64>,
    render: SpreadRender,
) -> Result<Vec<Outcome>> {
    let nodes = addrs.len();
    let m = nodes as u64;
    let runs = addrs.iter().enumerate().map(|(k, &addr)| {
        let k64 = k as u64;
        let conns = share(conns as u64, k64, m) as usize;
        let stop = match stop {
            Stop::Count(total) => Stop::Count(share(total, k64, m)),
            window => window,
        };
        let render = render.clone();
        let mine: Render = Arc::new(move |n, buf: &mut Vec<u8>| render(addr, n * m + k64, buf));
        run(addr, conns, stop, rate.map(|r| r / nodes as f64), mine)
    });
    futures::future::try_join_all(runs).await
}

/// Node `k`'s share of `total` over `m` nodes: the numbers `k, k + m, …`
/// below `total`.
fn share(total: u64, k: u64, m: u64) -> u64 {
    total / m + u64::from(k < total % m)
}

async fn run(
    addr: SocketAddr,
    conns: usize,
    stop: Stop,
    rate: Option<f64>,
    render: Render,
) -> Result<Outcome> {
    let shared = Arc::new(Shared {
        addr,
        render,
        next: AtomicU64::new(0),
        stop,
        rate,
        start: Instant::now(),
    });
    let mut workers = JoinSet::new();
    for _ in 0..conns {
        workers.spawn(worker(shared.clone()));
    }
    let mut total = Outcome::default();
    while let Some(part) = workers.join_next().await {
        total.merge(part?);
    }
    total.elapsed = match stop {
        Stop::Window { measure, .. } => measure,
        Stop::Count(_) => shared.start.elapsed(),
    };
    total.issued = match stop {
        Stop::Window { .. } => shared.next.load(Ordering::Relaxed),
        Stop::Count(n) => n,
    };
    Ok(total)
}

/// One connection's loop; reconnects after a failure or a server close.
async fn worker(shared: Arc<Shared>) -> Outcome {
    let (from, to) = shared.window();
    let mut out = Outcome::default();
    let mut request = Vec::with_capacity(512);
    let mut conn: Option<Conn> = None;
    while let Some((n, due)) = shared.next() {
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        (shared.render)(n, &mut request);
        let sent = Instant::now();
        if let Some(due) = due.filter(|_| sent >= from) {
            out.behind.push(sent - due);
        }
        let result = timeout(REQUEST_TIMEOUT, exchange(&mut conn, shared.addr, &request)).await;
        let done = Instant::now();
        if matches!(result, Ok(Ok(true))) {
            if sent >= from && to.is_none_or(|to| done <= to) {
                out.ok += 1;
                out.latencies.push(done - sent);
            }
        } else {
            if sent >= from {
                out.errors += 1;
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
    out
}

/// One request on the connection in `slot` (opened if there is none);
/// whether it succeeded. The connection is put back only if it can carry
/// another request, so a failure or timeout leaves the slot empty.
pub async fn exchange(slot: &mut Option<Conn>, addr: SocketAddr, request: &[u8]) -> Result<bool> {
    let mut conn = match slot.take() {
        Some(c) => c,
        None => Conn::connect(addr).await?,
    };
    let reply = conn.send(request).await?;
    let good = succeeded(reply.status, reply.body);
    if conn.reusable() {
        *slot = Some(conn);
    }
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_the_total_exactly() {
        for total in [0, 1, 2, 63, 64, 65, 100_000] {
            let shares: Vec<u64> = (0..3).map(|k| share(total, k, 3)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            for (k, s) in shares.iter().enumerate() {
                let numbers = (k as u64..total).step_by(3).count() as u64;
                assert_eq!(*s, numbers, "node {k} of 3, total {total}");
            }
        }
    }
}
