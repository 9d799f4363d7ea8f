//! Real `discovery` processes forming a cluster on 127.0.0.1 ports, with
//! timings short enough for tests. Peers talk over mutual TLS, with
//! certificates made for the cluster in its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft_discovery::peer::certs::{self, Issued};
use raft_discovery::peer::identity::Identity;
use serde_json::Value;
use tempfile::TempDir;

use super::link::ZoneLink;
use super::{free_port, Client};

/// The admin token of every test cluster.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A certificate authority and the files it issued, in one directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Issued,
}

impl Pki {
    /// A new CA in `dir`.
    pub fn new(dir: &Path) -> Pki {
        Pki::named(dir, "test CA")
    }

    /// A new CA called `name` in `dir`.
    pub fn named(dir: &Path, name: &str) -> Pki {
        let ca = certs::new_ca(name, 30).expect("a CA");
        certs::write(dir, "ca", &ca).expect("CA written");
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(certs::CA_CERT)
    }

    /// Issues `identity`'s certificate, named `name`, for the loopback
    /// names; its paths.
    pub fn issue(&self, name: &str, identity: &Identity) -> (PathBuf, PathBuf) {
        let issued = self.issued(name, identity);
        certs::write(&self.dir, name, &issued).expect("certificate written")
    }

    /// `identity`'s certificate, named `name`, for the loopback names.
    pub fn issued(&self, name: &str, identity: &Identity) -> Issued {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        certs::node_cert(&self.ca, identity, name, &hosts, 30).expect("a certificate")
    }
}

/// Timings for tests: fast elections, a short bounded write wait.
pub struct Timings {
    /// Raft's heartbeat, which is also openraft's time limit for one
    /// append to a follower.
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub poll_hold_ms: u64,
    pub write_timeout_ms: u64,
    pub snapshot_every: u64,
    pub keep_logs: u64,
    /// Further sections (`[renew]`, `[eviction]`, `[zone_stream]`),
    /// verbatim.
    pub lifecycle: String,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            poll_hold_ms: 5_000,
            write_timeout_ms: 1_500,
            snapshot_every: 20_000,
            keep_logs: 5_000,
            lifecycle: String::new(),
        }
    }
}

/// One node's place in the cluster.
pub struct Slot {
    pub id: u64,
    /// The client port.
    pub port: u16,
    /// The peer port (mutual TLS).
    pub peer_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// The hosts nodes are known by: peers reach a node at `raft_host:port`,
/// clients are told `api_host:port`. Every node listens on 127.0.0.1.
pub struct Hosts {
    pub raft_host: String,
    pub api_host: String,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts {
            raft_host: "127.0.0.1".into(),
            api_host: "127.0.0.1".into(),
        }
    }
}

/// A cluster of processes; every process is killed when it is dropped.
pub struct Cluster {
    pub slots: Vec<Slot>,
    pub pki: Pki,
    dir: TempDir,
    timings: Timings,
    hosts: Hosts,
    /// The cluster's zone, and its `[zones]` section (the other zones).
    pub zone: String,
    zones_section: String,
    /// The `[tls]` keys of a zone that follows others: its link's
    /// certificate and the other zones' CAs.
    zone_tls: String,
}

/// What a zone that follows others adds to its nodes' files.
#[derive(Default)]
struct ZoneSections {
    /// `[zones]`.
    zones: String,
    /// `[tls]` keys: the link's certificate, the other zones' CAs.
    tls: String,
}

/// Where one zone's cluster listens, before it starts.
struct ZonePlan {
    zone: String,
    /// Client and peer port of each node.
    ports: Vec<(u16, u16)>,
}

impl Cluster {
    /// Starts `n` nodes as the initial members.
    pub async fn start(n: u64, timings: Timings) -> Cluster {
        Self::start_with_hosts(n, timings, Hosts::default()).await
    }

    /// Starts `n` nodes whose peers and clients know them by `hosts`.
    pub async fn start_with_hosts(n: u64, timings: Timings, hosts: Hosts) -> Cluster {
        Self::start_prepared(n, timings, hosts, |_| {}).await
    }

    /// Starts `n` nodes after `prepare` has seen the cluster, configured
    /// but not yet running (to mount a file system on a data directory,
    /// say).
    pub async fn start_prepared(
        n: u64,
        timings: Timings,
        hosts: Hosts,
        prepare: impl FnOnce(&Cluster),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new(&dir.path().join("certs"));
        let plan = ZonePlan {
            zone: "sh001".into(),
            ports: (0..n).map(|_| (free_port(), free_port())).collect(),
        };
        let cluster = Self::configure(dir, pki, &plan, ZoneSections::default(), timings, hosts);
        prepare(&cluster);
        cluster.run().await
    }

    /// Starts one cluster of `n` nodes per zone in `zones`, each knowing
    /// the others (`[zones]`) through the relays of one [`ZoneLink`], each
    /// zone with a CA of its own, trusting the others' for their links.
    pub async fn start_zones(
        n: u64,
        zones: &[&str],
        timings: impl Fn() -> Timings,
    ) -> (Vec<Cluster>, ZoneLink) {
        let link = ZoneLink::new();
        let plans: Vec<ZonePlan> = zones
            .iter()
            .map(|zone| ZonePlan {
                zone: zone.to_string(),
                ports: (0..n).map(|_| (free_port(), free_port())).collect(),
            })
            .collect();
        let dirs: Vec<TempDir> = plans
            .iter()
            .map(|_| tempfile::tempdir().expect("temp dir"))
            .collect();
        let cas: Vec<Pki> = dirs
            .iter()
            .zip(&plans)
            .map(|(dir, plan)| {
                Pki::named(&dir.path().join("certs"), &format!("CA of {}", plan.zone))
            })
            .collect();
        let mut clusters = Vec::new();
        for ((plan, dir), pki) in plans.iter().zip(dirs).zip(cas.iter()) {
            let others: Vec<String> = plans
                .iter()
                .filter(|p| p.zone != plan.zone)
                .map(|p| {
                    let addrs: Vec<String> = p
                        .ports
                        .iter()
                        .map(|(_, peer)| {
                            let relay = link.relay(([127, 0, 0, 1], *peer).into());
                            format!("\"127.0.0.1:{relay}\"")
                        })
                        .collect();
                    format!("\"{}\" = [{}]", p.zone, addrs.join(", "))
                })
                .collect();
            let section = format!("[zones]\n{}\n", others.join("\n"));
            let link = Identity::Link {
                zone: plan.zone.clone(),
            };
            let (link_cert, link_key) = pki.issue("link", &link);
            let mut zone_tls = format!(
                "link_cert = \"{}\"\nlink_key = \"{}\"\n[tls.zone_cas]\n",
                link_cert.display(),
                link_key.display()
            );
            for (other, ca) in plans.iter().zip(&cas).filter(|(p, _)| p.zone != plan.zone) {
                zone_tls += &format!("\"{}\" = \"{}\"\n", other.zone, ca.ca_path().display());
            }
            let pki = Pki {
                dir: pki.dir.clone(),
                ca: certs::Issued {
                    cert: pki.ca.cert.clone(),
                    key: pki.ca.key.clone(),
                },
            };
            let zone = ZoneSections {
                zones: section,
                tls: zone_tls,
            };
            clusters.push(Self::configure(
                dir,
                pki,
                plan,
                zone,
                timings(),
                Hosts::default(),
            ));
        }
        for cluster in &mut clusters {
            cluster.spawn_all();
        }
        for cluster in &clusters {
            cluster.wait_all_serving().await;
        }
        (clusters, link)
    }

    /// Writes every node's configuration.
    fn configure(
        dir: TempDir,
        pki: Pki,
        plan: &ZonePlan,
        zone_sections: ZoneSections,
        timings: Timings,
        hosts: Hosts,
    ) -> Cluster {
        let zone = &plan.zone;
        let ports = &plan.ports;
        let members: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (p, peer))| {
                format!(
                    r#"{{ id = {}, name = "node{}", raft_addr = "{}:{peer}", api_addr = "{}:{p}", zone = "{zone}" }}"#,
                    i + 1,
                    i + 1,
                    hosts.raft_host,
                    hosts.api_host,
                )
            })
            .collect();
        let mut cluster = Cluster {
            slots: Vec::new(),
            pki,
            dir,
            timings,
            hosts,
            zone: zone.clone(),
            zones_section: zone_sections.zones,
            zone_tls: zone_sections.tls,
        };
        for (i, (port, peer_port)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let members = format!("members = [{}]", members.join(", "));
            let slot = cluster.slot(id, *port, *peer_port, &members);
            cluster.slots.push(slot);
        }
        cluster
    }

    /// Starts every node and waits until each serves.
    async fn run(mut self) -> Cluster {
        self.spawn_all();
        self.wait_all_serving().await;
        self
    }

    fn spawn_all(&mut self) {
        for i in 0..self.slots.len() {
            self.spawn(i);
        }
    }

    async fn wait_all_serving(&self) {
        for i in 0..self.slots.len() {
            self.wait_serving(i).await;
        }
    }

    fn slot(&self, id: u64, port: u16, peer_port: u16, cluster_section: &str) -> Slot {
        let t = &self.timings;
        let me = Identity::Node {
            zone: self.zone.clone(),
            id,
        };
        let (cert, key) = self.pki.issue(&format!("node{id}"), &me);
        let text = format!(
            r#"
[node]
id = {id}
name = "node{id}"
listen = "127.0.0.1:{port}"
peer_listen = "127.0.0.1:{peer_port}"
advertise = "{api}:{port}"
raft_advertise = "{raft}:{peer_port}"
data_dir = "{data}"
zone = "{zone}"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
{zone_tls}
[security]
admin_token = "{ADMIN_TOKEN}"

[cluster]
{cluster_section}

[raft]
heartbeat_ms = {heartbeat}
election_timeout_min_ms = {election_min}
election_timeout_max_ms = {election_max}
write_timeout_ms = {write}
snapshot_every = {snap}
keep_logs = {keep}

[poll]
hold_ms = {hold}

{lifecycle}

{zones_section}
"#,
            api = self.hosts.api_host,
            raft = self.hosts.raft_host,
            data = self.data_dir_of(id).display(),
            ca = self.pki.ca_path().display(),
            cert = cert.display(),
            key = key.display(),
            write = t.write_timeout_ms,
            heartbeat = t.heartbeat_ms,
            election_min = t.election_timeout_min_ms,
            election_max = t.election_timeout_max_ms,
            snap = t.snapshot_every,
            keep = t.keep_logs,
            hold = t.poll_hold_ms,
            lifecycle = t.lifecycle,
            zone = self.zone,
            zones_section = self.zones_section,
            zone_tls = self.zone_tls,
        );
        let config = self.dir.path().join(format!("node{id}.toml"));
        std::fs::write(&config, text).expect("config written");
        Slot {
            id,
            port,
            peer_port,
            config,
            log: self.dir.path().join(format!("node{id}.log")),
            process: None,
        }
    }

    /// The process id of node `i`, running.
    pub fn pid(&self, i: usize) -> u32 {
        self.slots[i].process.as_ref().expect("node runs").id()
    }

    /// Asks node `i`, with the admin token, to hand the leadership to node
    /// `to`; its answer (`{"Ok": to}` once done).
    pub async fn transfer_leader(&self, i: usize, to: u64) -> Value {
        let c = self.client(i);
        c.http
            .post(format!("{}/admin/transfer-leader", c.base))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .json(&serde_json::json!({ "to": to }))
            .send()
            .await
            .expect("transfer-leader answered")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Node `i`'s configuration file.
    pub fn config_of(&self, i: usize) -> &Path {
        &self.slots[i].config
    }

    /// The data directory of the node with this id.
    pub fn data_dir_of(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// `discoveryctl ARGS` against node 0 with the admin token, as an
    /// operator runs it: its output, or what it said on failing.
    pub async fn admin(&self, args: &[&str]) -> Result<String, String> {
        super::discoveryctl(&self.addr(0), Some(ADMIN_TOKEN), args).await
    }

    /// Asserts that node `i` is out of service for `why`: reads answer
    /// -503 and `discoveryctl health` fails, both saying so.
    pub async fn assert_out_of_service(&self, i: usize, why: &str) {
        let read = self
            .client(i)
            .get("/discovery/fetch?env=dev&appid=infra.discovery&status=1")
            .await;
        assert_eq!(read.code(), -503, "{}", read.text);
        assert!(read.text.contains(why), "{}", read.text);
        let health = super::discoveryctl(&self.addr(i), None, &["health"])
            .await
            .expect_err("a node out of service is not healthy");
        assert!(health.contains(why), "{health}");
    }

    /// Adds a node that joins the running cluster (not yet a member).
    pub fn new_joiner(&mut self, id: u64) -> usize {
        self.new_joiner_with_env(id, &[])
    }

    /// Adds a joining node with these environment variables set.
    pub fn new_joiner_with_env(&mut self, id: u64, env: &[(&str, &str)]) -> usize {
        let slot = self.slot(id, free_port(), free_port(), "join = true");
        self.slots.push(slot);
        let i = self.slots.len() - 1;
        self.spawn_with_env(i, env);
        i
    }

    /// Starts (or restarts) node `i` on its data directory.
    pub fn spawn(&mut self, i: usize) {
        self.spawn_with_env(i, &[]);
    }

    /// Starts (or restarts) node `i` with these environment variables set
    /// (`FAILPOINTS`, say).
    pub fn spawn_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let slot = &mut self.slots[i];
        assert!(slot.process.is_none(), "node {} already runs", slot.id);
        // Each node logs to a file in the cluster's directory, for tests
        // that read it; DISCOVERY_TEST_LOGS=DIR puts it there instead, to
        // keep.
        let path = match std::env::var_os("DISCOVERY_TEST_LOGS") {
            Some(dir) => PathBuf::from(dir).join(format!("node{}-{}.log", slot.id, slot.port)),
            None => slot.log.clone(),
        };
        slot.log.clone_from(&path);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let child = Command::new(env!("CARGO_BIN_EXE_discovery"))
            .arg("--config")
            .arg(&slot.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG")
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "warn,raft_discovery::peer::routes=info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("discovery starts");
        slot.process = Some(child);
    }

    /// Restarts node `i` as an impostor: same id and addresses, an empty
    /// data directory, and a certificate issued by `pki` (another CA).
    pub fn impostor(&mut self, i: usize, pki: &Pki) {
        self.kill(i);
        let slot = &self.slots[i];
        let name = format!("node{}", slot.id);
        let me = Identity::Node {
            zone: self.zone.clone(),
            id: slot.id,
        };
        let (cert, key) = pki.issue(&name, &me);
        let text = std::fs::read_to_string(&slot.config).expect("config");
        let mut lines = Vec::new();
        for line in text.lines() {
            let line = match line.split_once(" = ").map(|(k, _)| k) {
                Some("ca") => format!("ca = \"{}\"", pki.ca_path().display()),
                Some("cert") => format!("cert = \"{}\"", cert.display()),
                Some("key") => format!("key = \"{}\"", key.display()),
                Some("data_dir") => format!(
                    "data_dir = \"{}\"",
                    self.dir
                        .path()
                        .join(format!("impostor{}", slot.id))
                        .display()
                ),
                _ => line.to_string(),
            };
            lines.push(line);
        }
        std::fs::write(&slot.config, lines.join("\n")).expect("config written");
        self.spawn(i);
    }

    /// Waits up to `within` for node `i` to exit on its own: its exit
    /// status, or none if it still runs.
    pub async fn exited(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.slots[i].process.as_mut().expect("node runs");
            if let Some(status) = child.try_wait().expect("child state") {
                self.slots[i].process = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.slots[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs node `i` and waits until it has exited (a clean stop).
    pub async fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.slots[i].process.take() else {
            return;
        };
        // SAFETY: signalling our own child process by its pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("child state").is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} did not stop",
                self.slots[i].id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) node `i`: alive, its
    /// connections open, answering nothing, as a paused container.
    pub fn freeze(&self, i: usize, frozen: bool) {
        let child = self.slots[i].process.as_ref().expect("node runs");
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child process by its pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    }

    pub fn client(&self, i: usize) -> Client {
        Client {
            base: format!("http://127.0.0.1:{}", self.slots[i].port),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// Node `i`'s client address.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.slots[i].port)
    }

    /// Node `i`'s peer address.
    pub fn peer_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.slots[i].peer_port)
    }

    /// What node `i` has logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.slots[i].log).unwrap_or_default()
    }

    /// The status of node `i`, if it answers.
    pub async fn status(&self, i: usize) -> Option<Value> {
        let c = self.client(i);
        let r = c
            .http
            .get(format!("{}/admin/status", c.base))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Watches node `i`, just started, until it says its registry differs
    /// from the cluster's, reading `appid` from it all along: not one read
    /// may be answered meanwhile. Its status then.
    pub async fn never_served_until_diverged(&self, i: usize, appid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "never found diverged:\n{}",
                self.log(i)
            );
            let Some(status) = self.status(i).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let read = self.client(i).fetch(appid, 3).await;
            assert_ne!(read.code(), 0, "served while diverged: {}", read.text);
            if status["diverged"].is_string() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `i` serves reads (knows a leader, caught up).
    pub async fn wait_serving(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.status(i).await {
                if s["protected"] == false && s["leader"].is_u64() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} never served", self.slots[i].id);
    }

    /// The index of the node that leads, as the running nodes agree.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for i in 0..self.slots.len() {
                if self.slots[i].process.is_none() {
                    continue;
                }
                if let Some(s) = self.status(i).await {
                    if s["state"] == "Leader" {
                        return i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader");
    }

    /// Waits until the running nodes stand at one applied index, and
    /// checks that their registries are then the same: the digest they
    /// agree on (`/admin/digest`'s answer).
    pub async fn one_registry(&self, within: Duration) -> Value {
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].process.is_some())
            .collect();
        let deadline = Instant::now() + within;
        loop {
            let mut digests = Vec::new();
            for i in &running {
                digests.push(self.client(*i).get("/admin/digest").await.json());
            }
            let index = digests[0]["applied_index"].as_u64();
            if digests.iter().all(|d| d["applied_index"].as_u64() == index) {
                assert!(
                    digests.iter().all(|d| d["digest"] == digests[0]["digest"]),
                    "same index, different registries: {digests:?}"
                );
                return digests.swap_remove(0);
            }
            assert!(Instant::now() < deadline, "never at one index: {digests:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The voters node `i` knows.
    pub async fn voters(&self, i: usize) -> Vec<u64> {
        let status = self.status(i).await.expect("node answers");
        status["voters"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }

    /// Waits until node `i`'s log says `text`.
    pub async fn logged(&self, i: usize, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log(i).contains(text) {
            assert!(
                Instant::now() < deadline,
                "never logged {text:?}:\n{}\nothers:\n{}",
                self.log(i),
                (0..self.slots.len())
                    .filter(|j| *j != i)
                    .map(|j| self.log(j))
                    .collect::<Vec<_>>()
                    .join("\n-----\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.status(i).await {
                if s["applied_index"].as_u64().unwrap_or(0) >= index {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node {} never applied {index}", self.slots[i].id);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
    }
}
