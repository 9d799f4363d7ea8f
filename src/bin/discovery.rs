//! The `discovery` server: one registry node.

use clap::Parser;
use raft_discovery::config::{Config, Flags};
use raft_discovery::node::Node;
use tokio::signal::unix::{signal, SignalKind};

/// jemalloc rather than glibc's malloc: with ten thousand held polls waking
/// at once, glibc's malloc was the top of the profile (arena lock contention,
/// chunk unlinking), and a held poll cost 12.8 KB resident against 8.7 KB
/// with jemalloc. An idle node starts about 20 MB larger (see
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(&Flags::parse())?;
    let node = Node::start(config).await?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    node.shutdown().await
}
