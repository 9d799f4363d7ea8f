//! `discovery-bench`: load and measure a `discovery` server, or a
//! three-node cluster of them, on this machine. Result lines go to stdout,
//! ready to paste into a Markdown table; progress notes go to stderr,
//! prefixed with `#`.
//!
//! - one server: `fetch`, `polls`, `register`, `memory` (and `all`);
//! - a cluster (`cluster`): `cluster-register`, `failover`, `join`,
//!   `renews`, `lifecycle`; two zones of them (`zones`, linked through
//!   `relay`); `replicas` (held polls over voters and learners); `repair`
//!   (a replica made to diverge, found and rebuilt); and `compare-register`,
//!   `compare-failover`,
//!   which run one of them on several server variants (peer TLS on and
//!   off, the previous build) in turns within one run (`compare`);
//! - how nodes are configured and talk to each other: `peers` (client and
//!   peer ports, certificates made per run, admin token, or the one-port
//!   config of the build before the peer port);
//! - the pieces: `server` (processes), `load` (timed, paced or spread
//!   load), `http` (the client), `discovery` (requests and setup calls),
//!   `fill`, `stats`, `cpu` and `meter` (CPU and disk use), `lag`
//!   (replication lag of renews), `limits`.

mod bare;
mod cluster;
mod cluster_register;
mod compare;
mod cpu;
mod digest;
mod discovery;
mod failover;
mod fetch;
mod fill;
mod hostile;
mod http;
mod join;
mod lag;
mod lifecycle;
mod limits;
mod load;
mod memory;
mod meter;
mod migrate;
mod peers;
mod polls;
mod register;
mod relay;
mod renews;
mod repair;
mod replicas;
mod server;
mod stats;
mod zones;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use load::LoadArgs;
use peers::{OnOff, PeerMode};
use server::Launch;

/// The server's own default hold time; only `polls` needs a longer one.
const POLL_HOLD_MS: u64 = 30_000;

#[derive(Parser)]
#[command(name = "discovery-bench", about = "Benchmarks a discovery server")]
struct Cli {
    /// The server binary to start.
    #[arg(long, global = true, default_value = "target/release/discovery")]
    server: PathBuf,
    /// Peers of the servers started talk over mutual TLS, with
    /// certificates made for the run (`on`), or plain HTTP with
    /// `tls.insecure_peers` (`off`).
    #[arg(long, global = true, value_enum, default_value_t = OnOff::On)]
    peer_tls: OnOff,
    /// The --server binary is a build before the peer port (4d43a41 and
    /// older): configure it with one port for clients and peers and no
    /// [tls] or [security] (--peer-tls does not apply).
    #[arg(long, global = true)]
    legacy_config: bool,
    /// Threads of the bench itself. One by default, so that on a small
    /// machine the bench leaves the other cores to the server.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read throughput and latency of one fetch, or of any URL.
    Fetch(fetch::Args),
    /// Memory per held long poll and how fast a change wakes them all.
    Polls(polls::Args),
    /// Register and renew throughput and commit latency.
    Register(register::Args),
    /// Memory with many instances and restart-to-serving time.
    Memory(memory::Args),
    /// Register throughput and commit latency on a three-node cluster.
    ClusterRegister(cluster_register::Args),
    /// Time to write again after the leader is SIGKILLed, and failed reads.
    Failover(failover::Args),
    /// Time for a fourth node to catch up with a large registry.
    Join(join::Args),
    /// Renew throughput on a three-node cluster and the disk flushes it costs.
    Renews(renews::Args),
    /// A large registry renewing at its cadence: CPU and follower lag.
    Lifecycle(lifecycle::Args),
    /// `cluster-register` on several server variants in turns: peer TLS on
    /// and off, the previous build; the variants side by side.
    CompareRegister(compare::RegisterArgs),
    /// `failover` on several server variants in turns, side by side.
    CompareFailover(compare::FailoverArgs),
    /// Held-poll capacity of three voters and two learners (read replicas)
    /// against three voters alone.
    Replicas(replicas::Args),
    /// Two zones of three nodes: cross-zone propagation of registers, and
    /// catch-up after the link between the zones was cut.
    Zones(zones::Args),
    /// A three-node cluster linked both ways with an original discovery
    /// (a stand-in speaking only its API): the import of its fleet,
    /// propagation both ways, and the gaps consumers on each side see
    /// while a batch of providers moves (docs/migration.md).
    Migrate(migrate::Args),
    /// The attacks of one client on a three-node cluster with the product's
    /// limits (slow readers, bogus writes, a large restore, one address's
    /// polls, registrations that never renew), each figure by its bound.
    Hostile(hostile::Args),
    /// What the registry's digest costs, in process: a full digest of a
    /// million instances, the pass each check makes, one instance hashed.
    Digest(digest::Args),
    /// A replica made to diverge (a build with `--features failpoints`):
    /// how long until it is out of service, how long its repair takes.
    Repair(repair::Args),
    /// Everything above, in turn, with the defaults of each.
    All(AllArgs),
    /// The reference `polls` starts: holds requests, answers them on a wake.
    #[command(hide = true)]
    BareServer(bare::Args),
    /// The helper `replicas` starts per node: holds its polls, prints when
    /// each was answered.
    #[command(hide = true)]
    Hold(replicas::HoldArgs),
}

/// `all` takes the timed-load shape and the sizes worth shrinking for a
/// quick run; everything else is at its default.
#[derive(clap::Args)]
struct AllArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Long polls held (see `polls --count`).
    #[arg(long, default_value_t = polls::COUNT)]
    count: u64,
    /// Instances registered (see `memory --instances`).
    #[arg(long, default_value_t = memory::INSTANCES)]
    instances: u64,
}

/// The server's allocator, so that the reference `polls` measures
/// ([`bare`]) runs on the server's stack.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let nofile = limits::raise_nofile()?;
    if let Command::BareServer(args) = &cli.command {
        return bare::serve(args);
    }
    if let Command::Hold(args) = &cli.command {
        return replicas::hold(args);
    }
    if let Command::Digest(args) = &cli.command {
        return digest::run(args);
    }
    eprintln!("# open-file limit {nofile}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let launch = Launch {
        binary: cli.server.clone(),
        poll_hold_ms: POLL_HOLD_MS,
        peers: PeerMode::from_flags(cli.peer_tls, cli.legacy_config),
        shares: crate::server::Shares::Off,
    };
    runtime.block_on(async {
        // On Ctrl-C the command is dropped, which kills its server.
        tokio::select! {
            result = run(&launch, cli.command) => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        }
    })
}

async fn run(launch: &Launch, command: Command) -> Result<()> {
    match command {
        Command::Fetch(args) => fetch::run(launch, &args).await,
        Command::Polls(args) => polls::run(launch, &args).await,
        Command::Register(args) => register::run(launch, &args).await,
        Command::Memory(args) => memory::run(launch, &args).await,
        Command::ClusterRegister(args) => cluster_register::run(launch, &args).await,
        Command::Failover(args) => failover::run(launch, &args).await,
        Command::Join(args) => join::run(launch, &args).await,
        Command::Renews(args) => renews::run(launch, &args).await,
        Command::Lifecycle(args) => lifecycle::run(launch, &args).await,
        Command::CompareRegister(args) => compare::register(launch, &args).await,
        Command::CompareFailover(args) => compare::failover(launch, &args).await,
        Command::Zones(args) => zones::run(launch, &args).await,
        Command::Migrate(args) => migrate::run(launch, &args).await,
        Command::Replicas(args) => replicas::run(launch, &args).await,
        Command::Hostile(args) => hostile::run(launch, &args).await,
        Command::Repair(args) => repair::run(launch, &args).await,
        Command::BareServer(_) | Command::Hold(_) | Command::Digest(_) => {
            unreachable!("run before the runtime starts")
        }
        Command::All(all) => {
            fetch::run(launch, &fetch::Args::new(all.load.clone())).await?;
            let polls = polls::Args {
                count: all.count,
                batch: polls::BATCH,
                rounds: 1,
                pause: 0.0,
            };
            polls::run(launch, &polls).await?;
            let register = register::Args {
                load: all.load,
                apps: register::APPS,
            };
            register::run(launch, &register).await?;
            let memory = memory::Args {
                instances: all.instances,
                apps: memory::APPS,
                settle: memory::SETTLE,
            };
            memory::run(launch, &memory).await
        }
    }
}
