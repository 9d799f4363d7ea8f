//! `fetch`: read throughput and latency of `GET /discovery/fetch`, or of any
//! loopback URL, so that nginx serving the same bytes is measured by the
//! same client in the same run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};

use crate::discovery::{self, fetch_target, get, succeeded, Fleet};
use crate::fill::fill;
use crate::http::Url;
use crate::load::{drive, LoadArgs, Stop};
use crate::server::{Launch, Server, Workdir};

pub const APPS: u64 = 1_000;
pub const PER_APP: u64 = 10;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Apps registered before the load.
    #[arg(long, default_value_t = APPS)]
    pub apps: u64,
    /// Instances registered per app.
    #[arg(long, default_value_t = PER_APP)]
    pub per_app: u64,
    /// Spread the fetches over all apps instead of fetching one.
    #[arg(long)]
    pub spread: bool,
    /// Save the exact body of a fetch of the first app here, for nginx to
    /// serve as a static file.
    #[arg(long)]
    pub save_body: Option<PathBuf>,
    /// Load this URL (GET, loopback only) instead of a discovery server; no
    /// server is started and nothing is registered.
    #[arg(long, conflicts_with_all = ["target", "spread", "save_body"])]
    pub url: Option<String>,
    /// Use the discovery server already running at this base URL (loopback
    /// only) instead of starting one.
    #[arg(long)]
    pub target: Option<String>,
    /// What the result line starts with.
    #[arg(long, default_value = "fetch")]
    pub label: String,
}

impl Args {
    pub fn new(load: LoadArgs) -> Args {
        Args {
            load,
            apps: APPS,
            per_app: PER_APP,
            spread: false,
            save_body: None,
            url: None,
            target: None,
            label: "fetch".into(),
        }
    }
}

pub async fn run(launch: &Launch, args: &Args) -> Result<()> {
    if let Some(url) = &args.url {
        return load_url(url, args).await;
    }
    // Server before workdir: dropped in this order, the server is killed
    // before its directory is removed.
    let (addr, _running) = match &args.target {
        Some(target) => (Url::parse(target)?.addr, None),
        None => {
            let dir = Workdir::new()?;
            let server = Server::start(launch, &dir).await?;
            (server.addr, Some((server, dir)))
        }
    };
    let fleet = Fleet {
        prefix: "bench",
        apps: args.apps,
    };
    fill(addr, fleet, args.apps * args.per_app).await?;
    let first = discovery::fetch(addr, &fleet.appid(0)).await?;
    ensure!(
        first.instances as u64 == args.per_app,
        "fetch of {} found {} instances, registered {}",
        fleet.appid(0),
        first.instances,
        args.per_app
    );
    if let Some(path) = &args.save_body {
        std::fs::write(path, &first.body).with_context(|| format!("writing {}", path.display()))?;
    }
    let apps = if args.spread { args.apps } else { 1 };
    let requests: Vec<Vec<u8>> = (0..apps)
        .map(|app| {
            let mut buf = Vec::new();
            get(&mut buf, addr, &fetch_target(&fleet.appid(app)));
            buf
        })
        .collect();
    let mut out = drive(
        addr,
        args.load.conns,
        Stop::window(&args.load),
        replay(requests),
    )
    .await?;
    let what = if args.spread {
        format!("{apps} apps, body ~{} B", first.body.len())
    } else {
        format!("body {} B", first.body.len())
    };
    println!(
        "{}",
        out.line(&args.label, &format!("{}, {what}", args.load.describe()))
    );
    Ok(())
}

/// Loads a plain URL.
async fn load_url(url: &str, args: &Args) -> Result<()> {
    let url = Url::parse(url)?;
    let mut request = Vec::new();
    get(&mut request, url.addr, &url.path);
    let (status, body) = discovery::once(url.addr, &request).await?;
    ensure!(
        succeeded(status, &body),
        "{} answered HTTP {status}",
        url.path
    );
    let mut out = drive(
        url.addr,
        args.load.conns,
        Stop::window(&args.load),
        replay(vec![request]),
    )
    .await?;
    println!(
        "{}",
        out.line(
            &args.label,
            &format!("{}, body {} B", args.load.describe(), body.len())
        )
    );
    Ok(())
}

/// Sends pre-rendered requests in turn: no formatting in the hot loop.
fn replay(requests: Vec<Vec<u8>>) -> crate::load::Render {
    Arc::new(move |n, buf: &mut Vec<u8>| {
        buf.clear();
        buf.extend_from_slice(&requests[(n % requests.len() as u64) as usize]);
    })
}
