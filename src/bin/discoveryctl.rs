//! `discoveryctl`: look at a cluster, check a node's health, change the
//! membership.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use raft_discovery::cluster::membership::{Change, Changed, MEMBERSHIP_PATH};
use raft_discovery::raft::{Member, NodeId};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "discoveryctl",
    version,
    about = "Inspect and change a raft-discovery cluster"
)]
struct Cli {
    /// Any node of the cluster, `host:port` or `http://host:port`.
    #[arg(
        long,
        short = 'n',
        env = "DISCOVERY_NODE",
        default_value = "127.0.0.1:7171"
    )]
    node: String,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Leader, term, log, commit and applied index, members and their lag.
    Status,
    /// Exits 0 when the node serves (it knows a leader and has caught up),
    /// 1 otherwise: a health check for containers, which have no curl.
    Health {
        /// How long to wait for the node's answer.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Add a node as a learner; returns once it has caught up.
    AddLearner {
        #[arg(long)]
        id: NodeId,
        #[arg(long)]
        name: String,
        /// `host:port` peers reach it on.
        #[arg(long)]
        raft_addr: String,
        /// `host:port` clients reach it on; defaults to `raft_addr`.
        #[arg(long)]
        api_addr: Option<String>,
        #[arg(long, default_value = "sh001")]
        zone: String,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        id: NodeId,
    },
    /// Remove a node from the cluster.
    Remove {
        #[arg(long)]
        id: NodeId,
    },
}

fn base(node: &str) -> String {
    if node.starts_with("http://") {
        node.trim_end_matches('/').to_string()
    } else {
        format!("http://{node}")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = base(&cli.node);
    let change = match cli.command {
        Command::Status => {
            let status: Value = http
                .get(format!("{base}/admin/status"))
                .send()
                .await
                .with_context(|| format!("asking {base}"))?
                .json()
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            return Ok(());
        }
        Command::Health { timeout_ms } => {
            let status: Value = http
                .get(format!("{base}/admin/status"))
                .timeout(Duration::from_millis(timeout_ms))
                .send()
                .await
                .with_context(|| format!("asking {base}"))?
                .json()
                .await?;
            return healthy(&status);
        }
        Command::AddLearner {
            id,
            name,
            raft_addr,
            api_addr,
            zone,
        } => Change::AddLearner {
            id,
            member: Member {
                name,
                api_addr: api_addr.unwrap_or_else(|| raft_addr.clone()),
                raft_addr,
                zone,
            },
        },
        Command::Promote { id } => Change::Promote { id },
        Command::Remove { id } => Change::Remove { id },
    };
    let answer: Result<Changed, String> = http
        .post(format!("{base}{MEMBERSHIP_PATH}"))
        .json(&change)
        .send()
        .await
        .with_context(|| format!("asking {base}"))?
        .json()
        .await?;
    match answer {
        Ok(changed) => {
            println!("voters: {:?}", changed.voters);
            println!("nodes:  {:?}", changed.nodes);
            Ok(())
        }
        Err(e) => anyhow::bail!("refused: {e}"),
    }
}

/// Serving means: start-up protection lifted and a leader known.
fn healthy(status: &Value) -> anyhow::Result<()> {
    anyhow::ensure!(
        status["protected"] == false,
        "node {} is catching up",
        status["id"]
    );
    anyhow::ensure!(
        status["leader"].is_u64(),
        "node {} knows no leader",
        status["id"]
    );
    Ok(())
}

fn print_status(s: &Value) {
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!(
        "node {} is {}; leader {} term {}",
        show(&s["id"]),
        show(&s["state"]),
        show(&s["leader"]),
        show(&s["term"])
    );
    println!(
        "log {} committed {} applied {} snapshot {}",
        show(&s["last_log_index"]),
        show(&s["committed_index"]),
        show(&s["applied_index"]),
        show(&s["snapshot_index"])
    );
    println!(
        "instances {} held polls {} protected {}",
        show(&s["instances"]),
        show(&s["held_polls"]),
        show(&s["protected"])
    );
    println!(
        "{:<4} {:<12} {:<22} {:<22} {:<7} {:<8} {:<6}",
        "id", "name", "raft", "api", "role", "matched", "lag"
    );
    if let Some(members) = s["members"].as_object() {
        for (id, m) in members {
            let role = if m["voter"] == true {
                "voter"
            } else {
                "learner"
            };
            println!(
                "{:<4} {:<12} {:<22} {:<22} {:<7} {:<8} {:<6}",
                id,
                show(&m["name"]),
                show(&m["raft_addr"]),
                show(&m["api_addr"]),
                role,
                show(&m["matched_index"]),
                show(&m["lag"])
            );
        }
    }
}
