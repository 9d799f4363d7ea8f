//! The faults, injected on the real Docker Engine and undone again.
//!
//! Network faults act inside the container's network namespace with the
//! host's iptables (through nsenter), or on the compose network `raft`,
//! which carries peer traffic only (each node's peer port, 7271, over
//! mutual TLS; clients come in on 7171 through the `clients` network): a
//! node cut off from it still answers its clients, as a node on the wrong
//! side of a partition does. No rule names a port: the lossy link is the
//! node's interface on `raft`, whatever port peers use, and a cut-off node
//! loses everything but loopback.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;

use crate::cluster::Cluster;
use crate::docker::{docker, in_netns, inspect, pid};
use crate::hostile::{self, Forged, Hostile};

/// Share of packets dropped on a lossy link. Without netem (not in every
/// kernel) loss is how a link is made slow: TCP retransmits, at least
/// 200 ms each.
const LOSS: &str = "0.3";
/// Writes per second the data disk allows during a slow-disk fault.
const SLOW_DISK_IOPS: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FaultKind {
    /// SIGKILL the leader, start it again after the hold.
    KillLeader,
    /// SIGKILL a follower.
    KillFollower,
    /// Freeze the leader (docker pause): alive but silent.
    PauseLeader,
    /// Drop every packet a follower sends or receives.
    CutOffFollower,
    /// Disconnect the leader from the raft network: a minority of one
    /// that clients still reach.
    PartitionLeader,
    /// Drop 30% of the leader's raft traffic (its interface on the raft
    /// network) both ways.
    LossyNetLeader,
    /// Throttle writes to the leader's data disk.
    SlowDiskLeader,
    /// SIGKILL every node, then start them all.
    RestartAll,
    /// A process with a follower's certificate speaks for the leader to
    /// every other node (forged votes, appends, requests to campaign):
    /// each must be refused.
    HostilePeer,
}

impl FaultKind {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// Faults that enter namespaces or write cgroup files.
    pub fn needs_root(self) -> bool {
        matches!(
            self,
            FaultKind::CutOffFollower | FaultKind::LossyNetLeader | FaultKind::SlowDiskLeader
        )
    }

    /// Whether the fault is held for the hold time (a restart is not).
    pub fn held(self) -> bool {
        self != FaultKind::RestartAll
    }

    fn on_leader(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::PauseLeader
                | FaultKind::PartitionLeader
                | FaultKind::LossyNetLeader
                | FaultKind::SlowDiskLeader
        )
    }
}

/// An injected fault: what it hit and how to undo it.
pub struct Injected {
    pub kind: FaultKind,
    /// The nodes hit (all of them for a restart).
    pub targets: Vec<u64>,
    undo: Undo,
}

enum Undo {
    Start(Vec<String>),
    Unpause(String),
    /// iptables rules to delete, in the container's namespace.
    Rules(String, Vec<Vec<String>>),
    Reconnect {
        container: String,
        alias: String,
    },
    /// A cgroup file and the line that lifts the throttle.
    Cgroup(PathBuf, String),
    /// The hostile peer to stop.
    Hostile(Hostile),
}

/// Picks the target and injects the fault. `leader` is the node leading
/// now; a follower target is the next node after it.
pub async fn inject(kind: FaultKind, cluster: &Cluster, leader: u64) -> anyhow::Result<Injected> {
    let target = if kind.on_leader() {
        leader
    } else {
        let i = cluster
            .nodes
            .iter()
            .position(|n| n.id == leader)
            .unwrap_or(0);
        cluster.nodes[(i + 1) % cluster.nodes.len()].id
    };
    let node = cluster.node(target).clone();
    let c = node.container.clone();
    let (targets, undo) = match kind {
        FaultKind::KillLeader | FaultKind::KillFollower => {
            docker(&["kill", &c]).await?;
            (vec![target], Undo::Start(vec![c]))
        }
        FaultKind::PauseLeader => {
            docker(&["pause", &c]).await?;
            (vec![target], Undo::Unpause(c))
        }
        FaultKind::CutOffFollower => {
            let rules = vec![
                rule(&["INPUT", "!", "-i", "lo", "-j", "DROP"]),
                rule(&["OUTPUT", "!", "-o", "lo", "-j", "DROP"]),
            ];
            add_rules(&c, &rules).await?;
            (vec![target], Undo::Rules(c, rules))
        }
        FaultKind::PartitionLeader => {
            docker(&["network", "disconnect", &cluster.raft_network, &c]).await?;
            (
                vec![target],
                Undo::Reconnect {
                    container: c,
                    alias: node.raft_alias.clone(),
                },
            )
        }
        FaultKind::LossyNetLeader => {
            let dev = raft_interface(cluster, &c).await?;
            let rules = vec![
                random_drop("INPUT", "-i", &dev),
                random_drop("OUTPUT", "-o", &dev),
            ];
            add_rules(&c, &rules).await?;
            (vec![target], Undo::Rules(c, rules))
        }
        FaultKind::SlowDiskLeader => {
            let (file, throttle, lift) = disk_throttle(&c).await?;
            std::fs::write(&file, &throttle)
                .with_context(|| format!("writing {}", file.display()))?;
            (vec![target], Undo::Cgroup(file, lift))
        }
        FaultKind::HostilePeer => {
            let hostile = hostile::start(cluster, &node, leader).await?;
            (vec![target], Undo::Hostile(hostile))
        }
        FaultKind::RestartAll => {
            let all: Vec<String> = cluster.nodes.iter().map(|n| n.container.clone()).collect();
            let mut args = vec!["kill"];
            args.extend(all.iter().map(String::as_str));
            docker(&args).await?;
            (
                cluster.nodes.iter().map(|n| n.id).collect(),
                Undo::Start(all),
            )
        }
    };
    Ok(Injected {
        kind,
        targets,
        undo,
    })
}

/// Undoes a fault; for a hostile peer, what it sent.
pub async fn heal(cluster: &Cluster, injected: &Injected) -> anyhow::Result<Option<Arc<Forged>>> {
    match &injected.undo {
        Undo::Hostile(hostile) => return Ok(Some(hostile.stop().await)),
        Undo::Start(containers) => {
            let mut args = vec!["start"];
            args.extend(containers.iter().map(String::as_str));
            docker(&args).await?;
        }
        Undo::Unpause(c) => {
            docker(&["unpause", c]).await?;
        }
        Undo::Rules(c, rules) => {
            for r in rules {
                let mut args = vec!["-w", "-D"];
                args.extend(r.iter().map(String::as_str));
                in_netns(c, "iptables", &args).await?;
            }
        }
        // Back under its alias: the name peers dial, and the name its
        // certificate is valid for.
        Undo::Reconnect { container, alias } => {
            docker(&[
                "network",
                "connect",
                "--alias",
                alias,
                &cluster.raft_network,
                container,
            ])
            .await?;
        }
        Undo::Cgroup(file, lift) => {
            std::fs::write(file, lift).with_context(|| format!("writing {}", file.display()))?;
        }
    }
    Ok(None)
}

fn rule(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Drops a `LOSS` share of the packets on `chain` through interface `dev`
/// (`dir` is `-i` for incoming, `-o` for outgoing).
fn random_drop(chain: &str, dir: &str, dev: &str) -> Vec<String> {
    rule(&[
        chain,
        dir,
        dev,
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        LOSS,
        "-j",
        "DROP",
    ])
}

async fn add_rules(container: &str, rules: &[Vec<String>]) -> anyhow::Result<()> {
    for r in rules {
        let mut args = vec!["-w", "-I"];
        args.push(&r[0]);
        args.push("1");
        args.extend(r[1..].iter().map(String::as_str));
        in_netns(container, "iptables", &args).await?;
    }
    Ok(())
}

/// The container's interface on the raft network: all its peer traffic,
/// to its peer port and from it to theirs, and nothing else.
async fn raft_interface(cluster: &Cluster, container: &str) -> anyhow::Result<String> {
    let ip = inspect(
        container,
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            cluster.raft_network
        ),
    )
    .await?;
    let addrs = in_netns(container, "ip", &["-o", "-4", "addr", "show"]).await?;
    addrs
        .lines()
        .find(|l| l.contains(&format!(" {ip}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|dev| dev.split('@').next().unwrap_or(dev).to_string())
        .with_context(|| format!("no interface with {ip} in {container}"))
}

/// The cgroup file that throttles writes of the container's data volume,
/// the line that throttles and the line that lifts it (cgroup v1 blkio or
/// v2 io.max).
async fn disk_throttle(container: &str) -> anyhow::Result<(PathBuf, String, String)> {
    let source = inspect(
        container,
        "{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Source}}{{end}}{{end}}",
    )
    .await?;
    anyhow::ensure!(!source.is_empty(), "{container} has no /data mount");
    let dev = std::fs::metadata(&source)?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let disk = whole_disk(major, minor)?;
    let pid = pid(container).await?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if controllers.split(',').any(|c| c == "blkio") {
            let file = Path::new("/sys/fs/cgroup/blkio")
                .join(path.trim_start_matches('/'))
                .join("blkio.throttle.write_iops_device");
            return Ok((
                file,
                format!("{disk} {SLOW_DISK_IOPS}"),
                format!("{disk} 0"),
            ));
        }
    }
    if let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) {
        let file = Path::new("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join("io.max");
        return Ok((
            file,
            format!("{disk} wiops={SLOW_DISK_IOPS}"),
            format!("{disk} wiops=max"),
        ));
    }
    anyhow::bail!("no blkio or io cgroup for {container}")
}

/// `major:minor` of the disk holding a device: throttles apply to whole
/// disks, not partitions.
fn whole_disk(major: u32, minor: u32) -> anyhow::Result<String> {
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    anyhow::ensure!(
        sys.exists(),
        "the data volume is not on a block device ({major}:{minor})"
    );
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev"))?;
        Ok(parent.trim().to_string())
    } else {
        Ok(format!("{major}:{minor}"))
    }
}
