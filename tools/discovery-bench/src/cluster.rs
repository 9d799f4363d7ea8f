//! A cluster of `discovery` processes on loopback ports, each started from a
//! configuration file of its own as an operator would (the layout of
//! `configs/node1..3.toml`), with the product's default Raft timings: what
//! the cluster benchmarks measure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::Instant;

use crate::discovery::{self, Status};
use crate::load::Outcome;
use crate::peers::{self, PeerMode, Pki, Ports};
use crate::server::{Launch, Server, Signal, Workdir};

/// How long a started (or restarted) node may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often a node's status is read while waiting on it.
const STATUS_EVERY: Duration = Duration::from_millis(20);

/// The `[raft]` keys of every node a benchmark may set; those not given
/// keep the server's defaults, which is what is measured unless told.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct RaftSettings {
    /// The nodes' `raft.heartbeat_ms`.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// The nodes' `raft.election_timeout_min_ms`.
    #[arg(long)]
    pub election_timeout_min_ms: Option<u64>,
    /// The nodes' `raft.election_timeout_max_ms`.
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// The nodes' `raft.snapshot_every`.
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// The nodes' `raft.keep_logs`.
    #[arg(long)]
    pub keep_logs: Option<u64>,
}

impl RaftSettings {
    /// The keys given, as lines of a `[raft]` section.
    fn toml(&self) -> String {
        [
            ("heartbeat_ms", self.heartbeat_ms),
            ("election_timeout_min_ms", self.election_timeout_min_ms),
            ("election_timeout_max_ms", self.election_timeout_max_ms),
            ("snapshot_every", self.snapshot_every),
            ("keep_logs", self.keep_logs),
        ]
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key} = {v}\n")))
        .collect()
    }

    /// What was changed from the defaults, for result lines.
    pub fn describe(&self) -> String {
        let set = self.toml();
        if set.is_empty() {
            "default raft timings".into()
        } else {
            set.trim_end().replace('\n', ", ")
        }
    }
}

/// One node: where it listens, its files, and its process while it runs.
struct Node {
    id: u64,
    ports: Ports,
    config: PathBuf,
    log: PathBuf,
    data: PathBuf,
    /// Set in its environment when it starts.
    env: Vec<(String, String)>,
    server: Option<Server>,
}

/// Running nodes, killed when dropped (before their directory is removed:
/// fields drop in order).
pub struct Cluster {
    nodes: Vec<Node>,
    launch: Launch,
    raft: RaftSettings,
    /// The run's CA, under peer TLS.
    pki: Option<Pki>,
    /// The cluster's zone, and sections its nodes' files end with.
    zone: Zone,
    dir: Workdir,
}

/// Which zone a cluster is, and what its nodes know of the others.
#[derive(Clone, Debug)]
pub struct Zone {
    pub name: String,
    /// Sections appended to every node's file (`[zones]`, ...).
    pub extra: String,
    /// Where the CA every zone trusts lives (made there by the first).
    pub pki_dir: Option<PathBuf>,
    /// The other zones this one follows (its `[zones]`).
    pub follows: Vec<String>,
}

impl Default for Zone {
    fn default() -> Self {
        Zone {
            name: crate::discovery::ZONE.into(),
            extra: String::new(),
            pki_dir: None,
            follows: Vec::new(),
        }
    }
}

impl Cluster {
    /// Starts nodes `1..=size` as the initial members and waits until each
    /// serves (knows the leader, start-up protection lifted). Each node has
    /// a client port and, unless the build has one port for both, a peer
    /// port; under peer TLS a CA is made for this cluster alone.
    pub async fn start(launch: &Launch, size: u64, raft: RaftSettings) -> Result<Cluster> {
        let ports = (1..=size)
            .map(|_| Ports::free(launch.peers))
            .collect::<Result<_>>()?;
        let cluster = Self::configure(launch, raft, ports, Zone::default())?;
        cluster.run().await
    }

    /// Writes the files of a cluster of `zone` whose nodes listen on
    /// `ports` (ids 1, 2, ...), without starting it.
    pub fn configure(
        launch: &Launch,
        raft: RaftSettings,
        ports: Vec<Ports>,
        zone: Zone,
    ) -> Result<Cluster> {
        let dir = Workdir::new()?;
        let all: Vec<(u64, Ports)> = (1..).zip(ports).collect();
        let section = peers::members_in(&all, &zone.name);
        let pki = match launch.peers {
            PeerMode::Tls => {
                let certs = zone
                    .pki_dir
                    .clone()
                    .unwrap_or_else(|| dir.path().join("certs"));
                std::fs::create_dir_all(&certs)?;
                Some(Pki::open_or_new(&certs)?)
            }
            _ => None,
        };
        let mut cluster = Cluster {
            nodes: Vec::new(),
            launch: launch.clone(),
            raft,
            pki,
            zone,
            dir,
        };
        for (id, ports) in all {
            let node = cluster.write_node(id, ports, &section)?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    /// Starts every node configured and waits until each serves.
    pub async fn run(mut self) -> Result<Cluster> {
        self.spawn_all()?;
        self.wait_all_serving().await?;
        Ok(self)
    }

    /// Starts every node without waiting.
    pub fn spawn_all(&mut self) -> Result<()> {
        for id in self.ids() {
            self.spawn(id)?;
        }
        Ok(())
    }

    /// Waits until every node serves.
    pub async fn wait_all_serving(&mut self) -> Result<()> {
        for id in self.ids() {
            self.wait_serving(id).await?;
        }
        eprintln!(
            "# {}-node cluster of zone {} serving in {} ({})",
            self.nodes.len(),
            self.zone.name,
            self.dir.path().display(),
            self.launch.describe()
        );
        Ok(())
    }

    /// Writes node `id`'s configuration file (and, under peer TLS, issues
    /// its certificate).
    fn write_node(&self, id: u64, ports: Ports, cluster_section: &str) -> Result<Node> {
        let root = self.dir.path().join(format!("node{id}"));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let data = root.join("data");
        let tls = match &self.pki {
            Some(pki) => Some(pki.issue(
                &format!("{}-node{id}", self.zone.name),
                &self.zone.name,
                id,
                &self.zone.follows,
            )?),
            None => None,
        };
        let text = peers::NodeConfig {
            mode: self.launch.peers,
            id,
            ports,
            data: &data,
            cluster: cluster_section,
            raft: &self.raft.toml(),
            poll_hold_ms: self.launch.poll_hold_ms,
            tls: tls.as_ref(),
            zone: &self.zone.name,
            extra: &self.zone.extra,
        }
        .render()?;
        let config = root.join("node.toml");
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Node {
            id,
            ports,
            config,
            log: root.join("server.log"),
            data,
            env: Vec::new(),
            server: None,
        })
    }

    fn node(&self, id: u64) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// Starts (or restarts, on its data) node `id` without waiting for it.
    fn spawn(&mut self, id: u64) -> Result<()> {
        let launch = self.launch.clone();
        let node = self.node_mut(id)?;
        if node.server.is_some() {
            bail!("node {id} already runs");
        }
        node.server = Some(Server::spawn_config(
            &launch,
            &node.config,
            &node.log,
            node.ports,
            &node.env,
        )?);
        Ok(())
    }

    /// Sets `key` in node `id`'s environment from its next start on.
    pub fn set_env(&mut self, id: u64, key: &str, value: &str) -> Result<()> {
        self.node_mut(id)?.env.push((key.into(), value.into()));
        Ok(())
    }

    /// Node `id`'s log so far.
    pub fn log(&self, id: u64) -> Result<String> {
        let path = &self.node(id)?.log;
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    /// The ids of every node, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Node `id`'s client address.
    pub fn addr(&self, id: u64) -> Result<SocketAddr> {
        Ok(self.node(id)?.ports.client)
    }

    /// Node `id`'s client and peer addresses.
    pub fn ports(&self, id: u64) -> Result<Ports> {
        Ok(self.node(id)?.ports)
    }

    /// The client address of every node, in id order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.ports.client).collect()
    }

    /// The token membership changes need, if the build knows one.
    pub fn admin_token(&self) -> Option<&'static str> {
        self.launch.peers.admin_token()
    }

    /// Node `id`'s process, while it runs.
    pub fn server(&self, id: u64) -> Result<&Server> {
        self.node(id)?
            .server
            .as_ref()
            .with_context(|| format!("node {id} does not run"))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> Result<PathBuf> {
        Ok(self.node(id)?.data.clone())
    }

    pub async fn status(&self, id: u64) -> Result<Status> {
        discovery::status(self.addr(id)?).await
    }

    /// Fails if node `id` should run and has exited.
    pub fn check_alive(&mut self, id: u64) -> Result<()> {
        match self.node_mut(id)?.server.as_mut() {
            Some(server) => server.check_alive(),
            None => bail!("node {id} does not run"),
        }
    }

    /// Waits until node `id` serves reads and knows a leader.
    pub async fn wait_serving(&mut self, id: u64) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive(id)?;
            if let Ok(s) = self.status(id).await {
                if s.leader.is_some() && !s.protected {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("node {id} did not serve within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
    }

    /// The id of the leader, once a running node says it leads.
    pub async fn leader(&self) -> Result<u64> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for node in self.nodes.iter().filter(|n| n.server.is_some()) {
                if let Ok(s) = discovery::status(node.ports.client).await {
                    if s.state == "Leader" {
                        return Ok(node.id);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("no node led within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
    }

    /// SIGKILLs node `id`; returns the moment the signal was sent.
    pub async fn kill(&mut self, id: u64) -> Result<Instant> {
        self.stop(id, Signal::Kill).await
    }

    /// SIGTERMs node `id` and waits until it has exited; returns the
    /// moment the signal was sent.
    pub async fn terminate(&mut self, id: u64) -> Result<Instant> {
        self.stop(id, Signal::Term).await
    }

    async fn stop(&mut self, id: u64, signal: Signal) -> Result<Instant> {
        let server = self
            .node_mut(id)?
            .server
            .take()
            .with_context(|| format!("node {id} does not run"))?;
        let at = Instant::now();
        server.stop(signal).await?;
        Ok(at)
    }

    /// Restarts node `id` on its data and waits until it has applied what
    /// the leader had committed when it came back, and serves.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.spawn(id)?;
        self.wait_serving(id).await?;
        let leader = self.leader().await?;
        let target = self.status(leader).await?.committed();
        self.wait_applied(id, target).await
    }

    /// Waits until node `id` has applied index `target`.
    pub async fn wait_applied(&mut self, id: u64, target: u64) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive(id)?;
            if let Ok(s) = self.status(id).await {
                if s.applied() >= target {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("node {id} did not apply index {target} within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
    }

    /// Starts a new node that joins the running cluster (not a member until
    /// added through the admin API); returns its id once it answers.
    pub async fn start_joiner(&mut self) -> Result<u64> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let node = self.write_node(id, Ports::free(self.launch.peers)?, "join = true")?;
        self.nodes.push(node);
        self.spawn(id)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.status(id).await.is_err() {
            self.check_alive(id)?;
            if Instant::now() >= deadline {
                bail!("node {id} did not answer within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(STATUS_EVERY).await;
        }
        Ok(id)
    }
}

/// Splits the outcomes of a run spread over the nodes (one per node, in id
/// order) into the leader's and the followers' together.
pub fn by_role(outcomes: Vec<Outcome>, ids: &[u64], leader: u64) -> (Outcome, Outcome) {
    let mut led = Outcome::default();
    let mut followed = Outcome::default();
    for (out, id) in outcomes.into_iter().zip(ids) {
        if *id == leader {
            led.merge(out);
        } else {
            followed.merge(out);
        }
    }
    (led, followed)
}

/// Prints the result lines of a run spread over the nodes: all requests,
/// then those sent to the leader and those a follower forwarded.
pub fn print_by_role(label: &str, what: &str, outcomes: Vec<Outcome>, ids: &[u64], leader: u64) {
    let (mut led, mut followed) = by_role(outcomes, ids, leader);
    let lines = [
        led.line(&format!("{label} via leader"), what),
        followed.line(&format!("{label} via followers"), what),
    ];
    led.merge(followed);
    println!("{}", led.line(label, what));
    for line in lines {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::RaftSettings;

    #[test]
    fn only_the_keys_given_reach_the_config() {
        assert_eq!(RaftSettings::default().toml(), "");
        assert_eq!(RaftSettings::default().describe(), "default raft timings");
        let set = RaftSettings {
            heartbeat_ms: Some(50),
            keep_logs: Some(0),
            ..RaftSettings::default()
        };
        assert_eq!(set.toml(), "heartbeat_ms = 50\nkeep_logs = 0\n");
        assert_eq!(set.describe(), "heartbeat_ms = 50, keep_logs = 0");
    }
}
