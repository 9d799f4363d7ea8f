//! The `discovery` server: one registry node.

use std::io::IsTerminal;

use clap::Parser;
use raft_discovery::config::{Config, Flags, LogFormat};
use raft_discovery::node::Node;
use raft_discovery::shutdown::Stop;
use tokio::signal::unix::{signal, SignalKind};

/// jemalloc rather than glibc's malloc: with ten thousand held polls waking
/// at once, glibc's malloc was the top of the profile (arena lock contention,
/// chunk unlinking), and a held poll cost 12.8 KB resident against 8.7 KB
/// with jemalloc. An idle node starts about 20 MB larger (see
/// docs/benchmarks.md). The `system-alloc` feature leaves glibc's malloc,
/// for heap profilers that hook it.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read as it starts (`_RJEM_MALLOC_CONF` in the
/// environment still overrides them). Pages freed go back to the system
/// from a thread of jemalloc's own about a second after they went unused,
/// not ten seconds later and only when some allocation happens to check:
/// rendering every app's answer once (consumers fetching all of a million
/// instances) left 125 MiB behind that way, and raised the peak by as much
/// (docs/benchmarks.md).
#[cfg(not(feature = "system-alloc"))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 43] = b"background_thread:true,dirty_decay_ms:1000\0";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let loaded = Config::load(&flags, &env)?;
    if flags.print_config {
        print!("{}", loaded.config.describe(&loaded.sources)?);
        return Ok(());
    }
    let config = loaded.config;
    // Lines go to stderr from a thread of their own: the access log writes
    // one per request, and a slow terminal or pipe must not slow requests
    // (past 128k lines waiting, lines are dropped, not requests).
    // Buffered: the writer thread drains every waiting line, then flushes
    // once, so a busy node makes one write per batch, not one per line.
    let (writer, _flushed_at_exit) = tracing_appender::non_blocking(
        std::io::BufWriter::with_capacity(64 << 10, std::io::stderr()),
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into());
    // Colours only on a terminal: piped to a file or `docker logs`, escape
    // codes would only get in the way of grep.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match config.log.format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    // Fail points named in `FAILPOINTS`, in test builds only.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let node = Node::start(config.clone()).await?;
        let stop = tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
            why = node.stops() => Some(why),
        };
        tracing::info!("shutting down");
        if let Err(e) = node.shutdown().await {
            tracing::warn!("stopping: {e}");
        }
        match stop {
            // A non-zero exit, with the reason, for the supervisor.
            Some(Stop::Fault(why)) => return Err(anyhow::anyhow!("stopped: {why}")),
            // Started again, empty, to be replicated to.
            Some(Stop::Rebuild(_)) => tracing::info!("starting again to rebuild"),
            None => return Ok(()),
        }
    }
}
