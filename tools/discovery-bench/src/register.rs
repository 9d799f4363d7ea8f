//! `register` and `renew`: write throughput and commit latency, each write
//! answered only once it is committed to disk.

use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::discovery::{post_form, Fleet};
use crate::load::{drive, LoadArgs, Stop};
use crate::server::{Launch, Server, Workdir};

pub const APPS: u64 = 100;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Apps the registered instances are spread over.
    #[arg(long, default_value_t = APPS)]
    pub apps: u64,
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    let dir = Workdir::new()?;
    let server = Server::start(launch, &dir).await?;
    let addr = server.addr;
    let fleet = Fleet {
        prefix: "reg",
        apps: args.apps,
    };
    let what = format!("{}, {} apps", args.load.describe(), args.apps);

    // Every request registers a new instance.
    let register = Arc::new(move |n: u64, buf: &mut Vec<u8>| {
        post_form(buf, addr, "/discovery/register", &fleet.register_form(n));
    });
    let mut out = drive(addr, args.load.conns, Stop::window(&args.load), register).await?;
    println!("{}", out.line("register", &what));

    // Renew the instances just registered, in turn.
    let registered = out.issued;
    ensure!(registered > 0, "no instance was registered");
    let renew = Arc::new(move |n: u64, buf: &mut Vec<u8>| {
        post_form(
            buf,
            addr,
            "/discovery/renew",
            &fleet.renew_form(n % registered),
        );
    });
    let mut out = drive(addr, args.load.conns, Stop::window(&args.load), renew).await?;
    println!(
        "{}",
        out.line("renew", &format!("{what}, {registered} instances"))
    );
    Ok(())
}
