//! Filling a server with instances before it is measured, with many
//! concurrent registers so that setup takes seconds, not minutes.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::discovery::{post_form, Fleet};
use crate::load::{drive, Stop};

/// Concurrent registers while filling.
const CONNS: usize = 64;

/// Registers instances `0..count` of `fleet` and fails unless every one was
/// committed.
pub async fn fill(addr: SocketAddr, fleet: Fleet, count: u64) -> Result<()> {
    let render = Arc::new(move |n: u64, buf: &mut Vec<u8>| {
        post_form(buf, addr, "/discovery/register", &fleet.register_form(n));
    });
    let mut out = drive(addr, CONNS, Stop::Count(count), render).await?;
    ensure!(
        out.errors == 0,
        "{} of {count} registers failed while filling the server",
        out.errors
    );
    eprintln!(
        "# registered {count} instances over {} apps in {:.1} s ({:.0}/s, {})",
        fleet.apps,
        out.elapsed.as_secs_f64(),
        out.rate(),
        out.latencies.summary()
    );
    Ok(())
}
