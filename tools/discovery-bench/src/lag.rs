//! How long a renew takes to show on the followers. A sampler renews a
//! random instance and, from the moment the answer arrives, reads each
//! follower's fetch of the instance's app every few milliseconds until it
//! shows a `renew_timestamp` at least the one the answer carried (the
//! leader stamps the replicated renew no earlier than it answered).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rand::Rng;
use serde_json::Value;
use tokio::time::{timeout, Instant};

use crate::discovery::{fetch_target, get, post_form, renew_timestamp, succeeded, Fleet};
use crate::http::Conn;
use crate::load::REQUEST_TIMEOUT;
use crate::stats::Latencies;

/// How often a follower is read while waiting for a renew to show.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// A renew not shown after this long counts as missed.
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two samples of one sampler is random up to this
/// long, longer than the leader's renew batch interval (500 ms), so that
/// renews land at every phase of it rather than in step with it.
const PAUSE: Duration = Duration::from_millis(600);

/// What the samplers measured.
#[derive(Default)]
pub struct Lag {
    /// One sample per follower per renew.
    pub shown: Latencies,
    /// Follower reads of a renew that did not show within the timeout.
    pub missed: u64,
}

/// Where and what to sample.
#[derive(Clone)]
pub struct Plan {
    /// One sampler renews through each of these.
    pub via: Vec<SocketAddr>,
    pub followers: Vec<SocketAddr>,
    pub fleet: Fleet,
    /// Instances `0..instances` of the fleet exist.
    pub instances: u64,
}

/// Samples renews acknowledged between `from` and `to` from now.
pub async fn sample(plan: &Plan, from: Duration, to: Duration) -> Result<Lag> {
    let start = Instant::now();
    let samplers = plan
        .via
        .iter()
        .map(|&via| sampler(plan, via, start + from, start + to));
    let mut lag = Lag::default();
    for mut part in futures::future::try_join_all(samplers).await? {
        lag.shown.append(&mut part.shown);
        lag.missed += part.missed;
    }
    Ok(lag)
}

async fn sampler(plan: &Plan, via: SocketAddr, from: Instant, to: Instant) -> Result<Lag> {
    let mut lag = Lag::default();
    let mut renewing = Conn::connect(via).await?;
    let mut followers = Vec::new();
    for &addr in &plan.followers {
        followers.push((addr, Conn::connect(addr).await?));
    }
    tokio::time::sleep_until(from).await;
    while Instant::now() < to {
        let n = rand::thread_rng().gen_range(0..plan.instances);
        let (appid, hostname) = plan.fleet.names(n);
        let renewed = renew(&mut renewing, via, &plan.fleet, n).await?;
        let acked = Instant::now();
        let shows = followers
            .iter_mut()
            .map(|(addr, conn)| shown(conn, *addr, &appid, &hostname, renewed, acked));
        for result in futures::future::try_join_all(shows).await? {
            match result {
                Some(d) => lag.shown.push(d),
                None => lag.missed += 1,
            }
        }
        let pause = rand::thread_rng().gen_range(Duration::ZERO..PAUSE);
        tokio::time::sleep(pause).await;
    }
    Ok(lag)
}

/// Renews instance `n` through `addr`; its `renew_timestamp` in the answer.
async fn renew(conn: &mut Conn, addr: SocketAddr, fleet: &Fleet, n: u64) -> Result<i64> {
    let mut request = Vec::new();
    post_form(&mut request, addr, "/discovery/renew", &fleet.renew_form(n));
    let reply = timeout(REQUEST_TIMEOUT, conn.send(&request))
        .await
        .context("a sampled renew was not answered in time")??;
    ensure!(
        succeeded(reply.status, reply.body),
        "a sampled renew answered HTTP {}: {}",
        reply.status,
        String::from_utf8_lossy(reply.body)
    );
    let json: Value = serde_json::from_slice(reply.body).context("parsing a renew answer")?;
    json["data"]["renew_timestamp"]
        .as_i64()
        .context("renew answer without data.renew_timestamp")
}

/// Reads the follower at `addr` until it shows `hostname` renewed at
/// `renewed` or later; how long after `acked` it did, or `None` if it did
/// not in time.
async fn shown(
    conn: &mut Conn,
    addr: SocketAddr,
    appid: &str,
    hostname: &str,
    renewed: i64,
    acked: Instant,
) -> Result<Option<Duration>> {
    let mut request = Vec::new();
    get(&mut request, addr, &fetch_target(appid));
    loop {
        let reply = timeout(REQUEST_TIMEOUT, conn.send(&request))
            .await
            .context("a follower fetch was not answered in time")??;
        let seen = Instant::now();
        ensure!(
            succeeded(reply.status, reply.body),
            "a follower fetch answered HTTP {}",
            reply.status
        );
        if renew_timestamp(reply.body, hostname)? >= renewed {
            return Ok(Some(seen - acked));
        }
        if seen - acked > SHOW_TIMEOUT {
            return Ok(None);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
