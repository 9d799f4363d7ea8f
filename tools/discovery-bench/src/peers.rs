//! How the nodes under test talk to each other, and the configuration file
//! each is started from. The current build has a client port and a peer
//! port, peers on mutual TLS (or plain with `insecure_peers`) and an admin
//! token; the build before it (`--legacy-config`) had one port for both and
//! knows none of `peer_listen`, `[tls]` or `[security]` (its config refuses
//! unknown keys), so it gets a file of the old shape.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use raft_discovery::peer::certs::{self, Issued};
use raft_discovery::peer::identity::Identity;

/// The admin token of every node the bench starts (membership changes
/// need it).
pub const ADMIN_TOKEN: &str = "discovery-bench-admin-token";

/// How many days the bench's certificates are valid.
const CERT_DAYS: i64 = 7;

/// The peer setup of the server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// A peer port of its own, mutual TLS against a CA made for the run.
    Tls,
    /// A peer port of its own, plain HTTP (`tls.insecure_peers = true`).
    Plain,
    /// The build before the peer port: one port for clients and peers, no
    /// `[tls]`, no `[security]`.
    Legacy,
}

impl PeerMode {
    /// From the `--peer-tls` and `--legacy-config` flags.
    pub fn from_flags(peer_tls: OnOff, legacy: bool) -> PeerMode {
        match (legacy, peer_tls) {
            (true, _) => PeerMode::Legacy,
            (false, OnOff::On) => PeerMode::Tls,
            (false, OnOff::Off) => PeerMode::Plain,
        }
    }

    /// For result lines.
    pub fn describe(self) -> &'static str {
        match self {
            PeerMode::Tls => "peer TLS on",
            PeerMode::Plain => "peer TLS off",
            PeerMode::Legacy => "one-port config",
        }
    }

    /// Whether a node has a peer port apart from its client port.
    pub fn split_ports(self) -> bool {
        self != PeerMode::Legacy
    }

    /// The token membership changes must carry, if the build knows one.
    pub fn admin_token(self) -> Option<&'static str> {
        self.split_ports().then_some(ADMIN_TOKEN)
    }
}

/// `--peer-tls on|off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

/// Where a node listens: `peer` equals `client` under the one-port config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub client: SocketAddr,
    pub peer: SocketAddr,
}

impl Ports {
    /// Free loopback ports for a node of `mode`.
    pub fn free(mode: PeerMode) -> Result<Ports> {
        let client = crate::server::free_addr()?;
        let peer = if mode.split_ports() {
            crate::server::free_addr()?
        } else {
            client
        };
        Ok(Ports { client, peer })
    }
}

/// A node's certificate files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The zone link's certificate and key, for a node that follows other
    /// zones.
    pub link: Option<(PathBuf, PathBuf)>,
    /// The CA each followed zone's link comes from (here the same one).
    pub zone_cas: Vec<(String, PathBuf)>,
}

/// A CA made for one run, and the certificates it issues, in one
/// directory.
pub struct Pki {
    dir: PathBuf,
    ca: Issued,
}

impl Pki {
    /// A new CA in `dir`.
    pub fn new(dir: &Path) -> Result<Pki> {
        let ca = certs::new_ca("discovery-bench CA", CERT_DAYS)?;
        certs::write(dir, "ca", &ca)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    /// The CA in `dir` if there is one (a restarted server), else a new one.
    pub fn open_or_new(dir: &Path) -> Result<Pki> {
        if !dir.join(certs::CA_CERT).exists() {
            return Pki::new(dir);
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: certs::read_ca(dir)?,
        })
    }

    /// Issues the certificate of node `id` of `zone`, named `name`, for
    /// the loopback names, or reuses the one issued before (a restarted
    /// node keeps its files); with `follows` (other zones), the zone's link
    /// certificate too, and this CA as theirs.
    pub fn issue(&self, name: &str, zone: &str, id: u64, follows: &[String]) -> Result<TlsFiles> {
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let node = Identity::Node {
            zone: zone.into(),
            id,
        };
        let (cert, key) = self.made(name, &node, &hosts)?;
        let link = if follows.is_empty() {
            None
        } else {
            let link = Identity::Link { zone: zone.into() };
            Some(self.made(&format!("{zone}-link"), &link, &[])?)
        };
        let ca = self.dir.join(certs::CA_CERT);
        Ok(TlsFiles {
            zone_cas: follows.iter().map(|z| (z.clone(), ca.clone())).collect(),
            ca,
            cert,
            key,
            link,
        })
    }

    fn made(
        &self,
        name: &str,
        identity: &Identity,
        hosts: &[String],
    ) -> Result<(PathBuf, PathBuf)> {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}-key.pem"));
        if !cert.exists() {
            let issued = certs::node_cert(&self.ca, identity, name, hosts, CERT_DAYS)
                .with_context(|| format!("issuing {name}'s certificate"))?;
            certs::write(&self.dir, name, &issued)?;
        }
        Ok((cert, key))
    }
}

/// One member of the initial cluster, as `[cluster] members` lists it.
pub fn member(id: u64, ports: Ports, zone: &str) -> String {
    format!(
        r#"{{ id = {id}, name = "node{id}", raft_addr = "{peer}", api_addr = "{client}", zone = "{zone}" }}"#,
        peer = ports.peer,
        client = ports.client,
    )
}

/// The `[cluster]` section's `members` key.
pub fn members_in(all: &[(u64, Ports)], zone: &str) -> String {
    let lines: Vec<String> = all.iter().map(|&(id, p)| member(id, p, zone)).collect();
    format!("members = [\n  {},\n]", lines.join(",\n  "))
}

/// Everything a node's configuration file says.
pub struct NodeConfig<'a> {
    pub mode: PeerMode,
    pub id: u64,
    pub ports: Ports,
    pub data: &'a Path,
    /// The body of `[cluster]`: `members = [...]` or `join = true`.
    pub cluster: &'a str,
    /// Lines of `[raft]`.
    pub raft: &'a str,
    pub poll_hold_ms: u64,
    /// Required under [`PeerMode::Tls`], ignored otherwise.
    pub tls: Option<&'a TlsFiles>,
    /// The node's zone.
    pub zone: &'a str,
    /// Further sections, verbatim (`[zones]`, `[zone_stream]`).
    pub extra: &'a str,
}

fn quoted(path: &Path) -> toml::Value {
    toml::Value::String(path.display().to_string())
}

impl NodeConfig<'_> {
    /// The file's text.
    pub fn render(&self) -> Result<String> {
        let NodeConfig {
            mode,
            id,
            ports: Ports { client, peer },
            ..
        } = *self;
        let mut text = format!(
            "[node]\nid = {id}\nname = \"node{id}\"\nlisten = \"{client}\"\nadvertise = \"{client}\"\n"
        );
        if mode.split_ports() {
            text += &format!("peer_listen = \"{peer}\"\nraft_advertise = \"{peer}\"\n");
        }
        text += &format!(
            "zone = \"{zone}\"\ndata_dir = {data}\n\n[cluster]\n{cluster}\n\n\
             [raft]\n{raft}\n[poll]\nhold_ms = {hold}\n",
            zone = self.zone,
            data = quoted(self.data),
            cluster = self.cluster,
            raft = self.raft,
            hold = self.poll_hold_ms,
        );
        match mode {
            PeerMode::Tls => {
                let tls = self.tls.context("peer TLS needs the node's certificate")?;
                text += &format!(
                    "\n[tls]\nca = {}\ncert = {}\nkey = {}\n",
                    quoted(&tls.ca),
                    quoted(&tls.cert),
                    quoted(&tls.key)
                );
                if let Some((cert, key)) = &tls.link {
                    text += &format!("link_cert = {}\nlink_key = {}\n", quoted(cert), quoted(key));
                }
                if !tls.zone_cas.is_empty() {
                    text += "[tls.zone_cas]\n";
                    for (zone, ca) in &tls.zone_cas {
                        text +=
                            &format!("{} = {}\n", toml::Value::String(zone.clone()), quoted(ca));
                    }
                }
            }
            PeerMode::Plain => text += "\n[tls]\ninsecure_peers = true\n",
            PeerMode::Legacy => {}
        }
        if let Some(token) = mode.admin_token() {
            text += &format!("\n[security]\nadmin_token = \"{token}\"\n");
        }
        text += self.extra;
        Ok(text)
    }
}

/// The command-line flags that start a lone node (the single-node
/// benchmarks) with the peer setup of `mode`.
pub fn single_flags(mode: PeerMode, ports: Ports, tls: Option<&TlsFiles>) -> Result<Vec<String>> {
    let mut flags = Vec::new();
    let mut add = |flag: &str, value: String| {
        flags.push(flag.to_string());
        flags.push(value);
    };
    match mode {
        PeerMode::Legacy => {}
        PeerMode::Plain => {
            add("--peer-listen", ports.peer.to_string());
            flags.push("--insecure-peers".into());
        }
        PeerMode::Tls => {
            let tls = tls.context("peer TLS needs the node's certificate")?;
            add("--peer-listen", ports.peer.to_string());
            add("--tls-ca", tls.ca.display().to_string());
            add("--tls-cert", tls.cert.display().to_string());
            add("--tls-key", tls.key.display().to_string());
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ZONE;
    use raft_discovery::config::Config;

    fn ports(client: u16, peer: u16) -> Ports {
        Ports {
            client: SocketAddr::from(([127, 0, 0, 1], client)),
            peer: SocketAddr::from(([127, 0, 0, 1], peer)),
        }
    }

    fn files() -> TlsFiles {
        TlsFiles {
            ca: "/tmp/c/ca.pem".into(),
            cert: "/tmp/c/node1.pem".into(),
            key: "/tmp/c/node1-key.pem".into(),
            link: None,
            zone_cas: Vec::new(),
        }
    }

    /// Node 1's file of a three-node cluster in `mode`.
    fn render(mode: PeerMode, tls: Option<&TlsFiles>) -> String {
        let split = mode.split_ports();
        let all: Vec<(u64, Ports)> = (1..=3)
            .map(|id| {
                let client = 7000 + id as u16;
                (id, ports(client, if split { client + 100 } else { client }))
            })
            .collect();
        NodeConfig {
            mode,
            id: 1,
            ports: all[0].1,
            data: Path::new("/tmp/d/node1/data"),
            cluster: &members_in(&all, ZONE),
            raft: "heartbeat_ms = 50\n",
            poll_hold_ms: 30_000,
            tls,
            zone: ZONE,
            extra: "",
        }
        .render()
        .unwrap()
    }

    /// Parsed and checked as the current server does at start.
    fn current(text: &str) -> Config {
        toml::from_str::<Config>(text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .finish()
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn peer_addrs(config: &Config) -> Vec<(String, String)> {
        let m = &config.cluster.members;
        m.iter()
            .map(|m| (m.raft_addr.clone(), m.api_addr.clone()))
            .collect()
    }

    #[test]
    fn tls_config_names_the_peer_port_and_the_certificates() {
        let config = current(&render(PeerMode::Tls, Some(&files())));
        assert_eq!(config.node.listen, "127.0.0.1:7001");
        assert_eq!(config.node.advertise, "127.0.0.1:7001");
        assert_eq!(config.node.peer_listen, "127.0.0.1:7101");
        assert_eq!(config.node.raft_advertise, "127.0.0.1:7101");
        assert_eq!(config.tls.ca, PathBuf::from("/tmp/c/ca.pem"));
        assert_eq!(config.tls.cert, PathBuf::from("/tmp/c/node1.pem"));
        assert_eq!(config.tls.key, PathBuf::from("/tmp/c/node1-key.pem"));
        assert!(!config.tls.insecure_peers);
        assert_eq!(config.admin_token().as_deref(), Some(ADMIN_TOKEN));
        assert_eq!(config.raft.heartbeat_ms, 50);
        assert_eq!(config.poll.hold_ms, 30_000);
        assert_eq!(
            peer_addrs(&config)[1],
            ("127.0.0.1:7102".into(), "127.0.0.1:7002".into())
        );
    }

    #[test]
    fn tls_needs_the_files() {
        let config = NodeConfig {
            mode: PeerMode::Tls,
            id: 1,
            ports: ports(1, 2),
            data: Path::new("d"),
            cluster: "join = true",
            raft: "",
            poll_hold_ms: 1,
            tls: None,
            zone: ZONE,
            extra: "",
        };
        assert!(config.render().is_err());
    }

    #[test]
    fn plain_config_turns_peer_tls_off() {
        let config = current(&render(PeerMode::Plain, None));
        assert_eq!(config.node.peer_listen, "127.0.0.1:7101");
        assert!(config.tls.insecure_peers);
        assert_eq!(config.tls.ca, PathBuf::new());
        assert_eq!(config.admin_token().as_deref(), Some(ADMIN_TOKEN));
        assert_eq!(peer_addrs(&config)[2].0, "127.0.0.1:7103");
    }

    #[test]
    fn legacy_config_has_one_port_and_only_the_old_keys() {
        let text = render(PeerMode::Legacy, Some(&files()));
        let value: toml::Value = toml::from_str(&text).unwrap();
        let table = value.as_table().unwrap();
        // The sections and `[node]` keys the build before the peer port
        // knew (its config refuses any other).
        let old_sections = ["node", "cluster", "raft", "poll", "storage", "renew"];
        for section in table.keys() {
            assert!(old_sections.contains(&section.as_str()), "{section}");
        }
        let old_node = [
            "id",
            "name",
            "listen",
            "advertise",
            "raft_advertise",
            "zone",
            "env",
            "region",
            "data_dir",
        ];
        for key in table["node"].as_table().unwrap().keys() {
            assert!(old_node.contains(&key.as_str()), "[node] {key}");
        }
        assert_eq!(table["node"]["listen"].as_str(), Some("127.0.0.1:7001"));
        for m in table["cluster"]["members"].as_array().unwrap() {
            assert_eq!(m["raft_addr"], m["api_addr"]);
        }
        // And the current build refuses it: it needs a peer setup.
        assert!(toml::from_str::<Config>(&text).unwrap().finish().is_err());
    }

    #[test]
    fn a_joiner_says_so() {
        let text = NodeConfig {
            mode: PeerMode::Plain,
            id: 4,
            ports: ports(7004, 7104),
            data: Path::new("/tmp/d/node4/data"),
            cluster: "join = true",
            raft: "",
            poll_hold_ms: 30_000,
            tls: None,
            zone: ZONE,
            extra: "",
        }
        .render()
        .unwrap();
        let config = current(&text);
        assert!(config.cluster.join);
        assert_eq!(config.node.id, 4);
        assert!(config.cluster.members.is_empty());
    }

    #[test]
    fn single_node_flags_per_mode() {
        let p = ports(7001, 7101);
        assert!(single_flags(PeerMode::Legacy, p, None).unwrap().is_empty());
        assert_eq!(
            single_flags(PeerMode::Plain, p, None).unwrap(),
            ["--peer-listen", "127.0.0.1:7101", "--insecure-peers"]
        );
        assert_eq!(
            single_flags(PeerMode::Tls, p, Some(&files())).unwrap(),
            [
                "--peer-listen",
                "127.0.0.1:7101",
                "--tls-ca",
                "/tmp/c/ca.pem",
                "--tls-cert",
                "/tmp/c/node1.pem",
                "--tls-key",
                "/tmp/c/node1-key.pem"
            ]
        );
        assert!(single_flags(PeerMode::Tls, p, None).is_err());
    }

    #[test]
    fn modes_from_flags() {
        assert_eq!(PeerMode::from_flags(OnOff::On, false), PeerMode::Tls);
        assert_eq!(PeerMode::from_flags(OnOff::Off, false), PeerMode::Plain);
        assert_eq!(PeerMode::from_flags(OnOff::On, true), PeerMode::Legacy);
        assert_eq!(PeerMode::Legacy.admin_token(), None);
        assert!(!PeerMode::Legacy.split_ports());
    }

    #[test]
    fn issued_files_are_made_once() {
        let dir = std::env::temp_dir().join(format!("bench-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = Pki::new(&dir).unwrap();
        let first = pki.issue("node1", ZONE, 1, &[]).unwrap();
        assert!(first.ca.exists() && first.cert.exists() && first.key.exists());
        let again = pki.issue("node1", ZONE, 1, &[]).unwrap();
        assert_eq!(first, again);
        let reopened = Pki::open_or_new(&dir).unwrap();
        assert_eq!(reopened.ca.cert, pki.ca.cert);
        let second = reopened.issue("node2", ZONE, 2, &[]).unwrap();
        assert!(second.cert.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
