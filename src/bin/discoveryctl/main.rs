//! `discoveryctl`: look at a cluster, check a node's health, change the
//! membership, make the cluster's certificates.

mod kubernetes;
mod registry;
mod scheduler;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use raft_discovery::cluster::membership::{Change, Changed};
use raft_discovery::http::{MEMBERSHIP_PATH, REPAIR_PATH, TRANSFER_LEADER_PATH};
use raft_discovery::peer::certs;
use raft_discovery::peer::identity::Identity;
use raft_discovery::raft::{Member, NodeId};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "discoveryctl",
    version,
    about = "Inspect and change a raft-discovery cluster"
)]
struct Cli {
    /// Nodes of the cluster, `host:port` or `http://host:port`, comma
    /// separated: the first that answers is used. Without it,
    /// `DISCOVERY_NODES` (as the SDKs read it), else 127.0.0.1:7171.
    #[arg(long, short = 'n', env = "DISCOVERY_NODE", value_delimiter = ',')]
    node: Vec<String>,
    /// Print the raw JSON answer.
    #[arg(long)]
    json: bool,
    /// The admin token membership changes need.
    #[arg(long, env = "DISCOVERY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA (PEM) to trust when the node serves HTTPS (`https://host:port`).
    #[arg(long, env = "DISCOVERY_CACERT")]
    cacert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Leader, term, log, commit and applied index, members and their lag.
    Status,
    /// Every app: instances, how many are up, zones.
    Apps {
        #[arg(long)]
        env: Option<String>,
    },
    /// One app's instances: zone, status, last renew, version, addresses,
    /// metadata.
    Instances {
        appid: String,
        #[arg(long, default_value = "dev")]
        env: String,
    },
    /// Long-polls one app and prints each change as it comes (`+` added,
    /// `~` changed, a status change to waiting included, `-` gone): a
    /// `tail -f` of the app.
    Watch {
        appid: String,
        #[arg(long, default_value = "dev")]
        env: String,
    },
    /// Exits 0 when the node serves (it knows a leader and has caught up),
    /// 1 otherwise: a health check for containers, which have no curl.
    Health {
        /// How long to wait for the node's answer.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Ask again until it serves, for up to this many seconds (a
        /// script's wait for a node it just started); 0: ask once.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Add a node as a learner; returns once it has caught up and serves
    /// reads (at most 60 s). The node must be running (`join = true`): it
    /// is asked who it is first, and a node that does not answer is
    /// refused with nothing changed.
    AddLearner {
        #[arg(long)]
        id: NodeId,
        /// `host:port` peers reach it on (its `[node] raft_advertise`).
        #[arg(long)]
        raft_addr: String,
        /// Its name; by default the one the node says it has.
        #[arg(long)]
        name: Option<String>,
        /// `host:port` clients reach it on; by default the one the node
        /// advertises (`[node] advertise`). Given, it must be that one.
        #[arg(long)]
        api_addr: Option<String>,
        /// Its zone; by default the node's own, which must be the
        /// cluster's.
        #[arg(long)]
        zone: Option<String>,
        /// How long to wait for it to catch up and serve, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=60))]
        wait: u64,
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
    /// A consistent copy of the whole registry (confirmed with the leader)
    /// into FILE (`-`: standard output); needs the admin token.
    Backup { file: PathBuf },
    /// Replaces the whole registry of the cluster `--node` belongs to with
    /// FILE's (`-`: standard input), through the log (any cluster, a new
    /// one too); needs the admin token.
    Restore { file: PathBuf },
    /// The leader hands its leadership to voter ID (default: the most
    /// caught-up one) without an election gap; needs the admin token.
    TransferLeader {
        #[arg(long)]
        to: Option<NodeId>,
    },
    /// The node `--node` names leaves the cluster cleanly: a leader first
    /// hands its leadership over, then the node is removed from the
    /// membership, and can be stopped without the others counting it
    /// missing.
    Leave,
    /// Node ID (default: the node `--node` names) rebuilds its registry
    /// from the cluster: it gives up its vote, sets its data aside, is
    /// replicated to from the start, and votes and serves again once a
    /// check finds it agrees; needs the admin token.
    Repair { id: Option<NodeId> },
    /// The scheduler served with an app (how its clients split traffic
    /// between zones), set at run time through the log; set and clear need
    /// the admin token.
    #[command(subcommand)]
    Scheduler(Scheduler),
    /// The links with original discovery clusters (`[[upstream]]`, see
    /// docs/migration.md): state, lag, instances imported and exported,
    /// errors, as the leader works them; `forget` drops what is held of
    /// one whose link is off (admin token).
    Upstream {
        #[command(subcommand)]
        command: Option<Upstream>,
    },
    /// Make the certificates for mutual TLS between peers.
    #[command(subcommand)]
    Certs(Certs),
}

#[derive(Subcommand)]
enum Scheduler {
    /// The schedulers set at run time (which win) and the configuration
    /// file's.
    List,
    /// Sets APPID's scheduler, replacing one set before: one `--rule
    /// SRC=DST:WEIGHT[,DST:WEIGHT...]` per source zone.
    Set {
        appid: String,
        /// Only in this env (default: every env).
        #[arg(long)]
        env: Option<String>,
        #[arg(long = "rule", required = true, value_parser = scheduler::parse_rule)]
        rules: Vec<raft_discovery::registry::SchedulerRule>,
    },
    /// Clears what was set for APPID (the configuration file's applies
    /// again).
    Clear {
        appid: String,
        #[arg(long)]
        env: Option<String>,
    },
}

#[derive(Subcommand)]
enum Upstream {
    /// Each link, each direction (the default).
    Status,
    /// Drops every instance imported from NAME and the record of what was
    /// exported there: the last step of a migration, once NAME is gone
    /// from every node's configuration.
    Forget { name: String },
}

#[derive(Subcommand)]
enum Certs {
    /// Make the cluster CA: DIR/ca.pem and DIR/ca-key.pem (keep the key
    /// off the nodes).
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, default_value = "raft-discovery cluster CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Make a node's certificate, signed by the zone's CA in DIR:
    /// DIR/NAME.pem and DIR/NAME-key.pem. It carries the node's identity
    /// (discovery://ZONE/node/ID), which must match its node.id and
    /// node.zone.
    Node {
        /// The node's name, e.g. node1.
        name: String,
        /// The node's id (node.id).
        #[arg(long)]
        id: u64,
        /// The node's zone (node.zone); each zone has its own CA.
        #[arg(long, default_value = "sh001")]
        zone: String,
        /// A name or IP address peers dial this node by (its raft_addr
        /// host); repeat for several.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        issuing: Issuing,
    },
    /// Make the zone's link certificate (discovery://ZONE/link), which its
    /// nodes show other zones: DIR/NAME.pem and DIR/NAME-key.pem. Other
    /// zones trust it through this zone's CA (their tls.zone_cas), for the
    /// zone routes only.
    Link {
        #[arg(long, default_value = "sh001")]
        zone: String,
        #[arg(long, default_value = "link")]
        name: String,
        #[command(flatten)]
        issuing: Issuing,
    },
    /// Make whatever a zone lacks and keep what it has: the zone's CA in
    /// CA_DIR (its certificate copied to DIR), each node's certificate in
    /// DIR (made anew if it carries another identity), and with --link the
    /// zone's link certificate. Safe to run on every start.
    Cluster {
        /// NAME:ID=HOST[,HOST...]: a node, its id, and the names peers
        /// dial it by.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        #[arg(long, default_value = "sh001")]
        zone: String,
        /// Also the zone's link certificate, DIR/link.pem.
        #[arg(long)]
        link: bool,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Where the CA and its key live; defaults to DIR.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Also write the zone's CA certificate here, for the other zones
        /// to trust for this zone's link (their tls.zone_cas).
        #[arg(long)]
        publish_ca: Option<PathBuf>,
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Print the identity a certificate carries and when it expires.
    Show { cert: PathBuf },
    /// Make what a zone on Kubernetes lacks (as `cluster` does) and print
    /// the Secrets the manifests of deploy/kubernetes mount: one per pod
    /// (`discovery-tls-POD`: ca.crt, tls.crt, tls.key), the link's, the
    /// other zones' CAs. `kubectl apply -f` the output; see
    /// docs/kubernetes.md.
    Kubernetes(kubernetes::Kubernetes),
}

/// Where a certificate is issued, for how long, and whether over one.
#[derive(clap::Args)]
struct Issuing {
    /// The directory of the zone's CA, where the files are written.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 825)]
    days: i64,
    /// Re-issue: replace NAME's certificate and key if they exist (a
    /// running node takes them on SIGHUP).
    #[arg(long)]
    replace: bool,
}

fn base(node: &str) -> String {
    if node.starts_with("http://") || node.starts_with("https://") {
        node.trim_end_matches('/').to_string()
    } else {
        format!("http://{node}")
    }
}

/// Issues `identity`'s certificate as NAME in DIR, signed by DIR's CA.
fn issue(
    issuing: &Issuing,
    name: &str,
    identity: &Identity,
    hosts: &[String],
) -> anyhow::Result<()> {
    let Issuing { dir, days, replace } = issuing;
    let ca = certs::read_ca(dir)?;
    let issued = certs::node_cert(&ca, identity, name, hosts, *days)?;
    let (cert, key) = if *replace {
        certs::replace(dir, name, &issued)?
    } else {
        certs::write(dir, name, &issued)?
    };
    println!(
        "{name}: {} (key {}), {}{}",
        cert.display(),
        key.display(),
        identity.uri(),
        if hosts.is_empty() {
            String::new()
        } else {
            format!(", for {}", hosts.join(", "))
        }
    );
    Ok(())
}

/// NAME:ID=HOST[,HOST...]
fn node_spec(text: &str) -> anyhow::Result<certs::NodeSpec> {
    let parsed = text.split_once('=').and_then(|(node, hosts)| {
        let (name, id) = node.split_once(':')?;
        Some(certs::NodeSpec {
            name: name.to_string(),
            id: id.parse().ok()?,
            hosts: hosts.split(',').map(str::to_string).collect(),
        })
    });
    parsed.with_context(|| {
        format!("{text:?}: expected NAME:ID=HOST[,HOST...], e.g. node1:1=raft-node1")
    })
}

fn make_certs(command: Certs) -> anyhow::Result<()> {
    match command {
        Certs::Init { dir, name, days } => {
            let ca = certs::new_ca(&name, days)?;
            let (cert, key) = certs::write(&dir, "ca", &ca)?;
            println!("CA: {} (key {})", cert.display(), key.display());
        }
        Certs::Node {
            name,
            id,
            zone,
            hosts,
            issuing,
        } => issue(&issuing, &name, &Identity::Node { zone, id }, &hosts)?,
        Certs::Link {
            zone,
            name,
            issuing,
        } => issue(&issuing, &name, &Identity::Link { zone }, &[])?,
        Certs::Cluster {
            nodes,
            zone,
            link,
            dir,
            ca_dir,
            publish_ca,
            days,
        } => {
            let nodes = nodes
                .iter()
                .map(|n| node_spec(n))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ca_dir = ca_dir.unwrap_or_else(|| dir.clone());
            for made in certs::ensure_cluster(&ca_dir, &dir, &zone, &nodes, link, days)? {
                println!("made {}", made.display());
            }
            if let Some(path) = publish_ca {
                let ca = certs::read_ca(&ca_dir)?;
                if std::fs::read_to_string(&path).ok().as_deref() != Some(ca.cert.as_str()) {
                    std::fs::write(&path, &ca.cert)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("published the CA of zone {zone} as {}", path.display());
                }
            }
        }
        Certs::Kubernetes(k) => kubernetes::run(k)?,
        Certs::Show { cert } => {
            let (identity, expires) = certs::describe(&cert)?;
            println!("{} ({identity}), valid until {expires}", identity.uri());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Output cut short (`discoveryctl apps | head -3`) ends the process
    // quietly, as it does Unix tools, rather than a panic on the next
    // line printed.
    // SAFETY: sets the process-wide action of one signal back to its
    // default; nothing in this program installs a handler for it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(120));
    if let Some(path) = &cli.cacert {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let http = builder.build()?;
    if let Command::Certs(command) = cli.command {
        return make_certs(command);
    }
    let nodes = if cli.node.is_empty() {
        std::env::var("DISCOVERY_NODES")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').map(|n| n.trim().to_string()).collect())
            .unwrap_or_else(|| vec!["127.0.0.1:7171".to_string()])
    } else {
        cli.node.clone()
    };
    let base = first_answering(&http, &nodes).await;
    let change = match cli.command {
        Command::Certs(_) => unreachable!("handled above"),
        Command::Apps { env } => {
            return registry::apps(&http, &base, env.as_deref(), cli.json).await
        }
        Command::Instances { appid, env } => {
            return registry::instances(&http, &base, &appid, &env, cli.json).await
        }
        Command::Watch { appid, env } => {
            return registry::watch(&http, &base, &appid, &env, cli.json).await
        }
        Command::Scheduler(Scheduler::List) => {
            return scheduler::list(&http, &base, cli.json).await
        }
        Command::Scheduler(Scheduler::Set { appid, env, rules }) => {
            let token = cli.token.as_deref();
            return scheduler::change(&http, &base, token, &appid, env.as_deref(), Some(rules))
                .await;
        }
        Command::Scheduler(Scheduler::Clear { appid, env }) => {
            let token = cli.token.as_deref();
            return scheduler::change(&http, &base, token, &appid, env.as_deref(), None).await;
        }
        Command::Upstream { command } => {
            return match command.unwrap_or(Upstream::Status) {
                Upstream::Status => upstream::status(&http, &base, cli.json).await,
                Upstream::Forget { name } => {
                    upstream::forget(&http, &base, cli.token.as_deref(), &name).await
                }
            }
        }
        Command::Status => {
            let status = node_status(http.get(format!("{base}/admin/status")), &base).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            return Ok(());
        }
        Command::Health { timeout_ms, wait } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let request = http
                    .get(format!("{base}/admin/status"))
                    .timeout(Duration::from_millis(timeout_ms));
                let outcome = match node_status(request, &base).await {
                    Ok(status) => healthy(&status),
                    Err(e) => Err(e),
                };
                match outcome {
                    Err(_) if std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    done => return done,
                }
            }
        }
        Command::AddLearner {
            id,
            name,
            raft_addr,
            api_addr,
            zone,
            wait,
        } => Change::AddLearner {
            id,
            wait_secs: Some(wait),
            // What is left out the leader asks the node itself.
            member: Member {
                name: name.unwrap_or_default(),
                api_addr: api_addr.unwrap_or_default(),
                raft_addr,
                zone: zone.unwrap_or_default(),
                rebuilding: false,
            },
        },
        Command::Promote { id } => Change::Promote { id },
        Command::Remove { id } => Change::Remove { id },
        Command::Backup { file } => {
            let mut request = http.get(format!("{base}/admin/backup"));
            if let Some(token) = &cli.token {
                request = request.bearer_auth(token);
            }
            let answer = request
                .send()
                .await
                .with_context(|| format!("asking {base}"))?
                .bytes()
                .await?;
            let backup: Value = serde_json::from_slice(&answer)
                .with_context(|| format!("{base} answered no backup"))?;
            if let Some(message) = backup.get("message").and_then(Value::as_str) {
                anyhow::bail!("refused: {message}");
            }
            let instances: usize = backup["registry"]["apps"]
                .as_array()
                .map(|apps| {
                    apps.iter()
                        .map(|a| a["instances"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            if file.as_os_str() == "-" {
                // To standard output (`kubectl exec … backup - > FILE`);
                // the summary to standard error.
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&answer)?;
                out.flush()?;
                eprintln!("{instances} instances at index {}", backup["applied_index"]);
                return Ok(());
            }
            // Written beside it, then renamed: never a half-written FILE.
            let tmp = file.with_extension("partial");
            std::fs::write(&tmp, &answer).with_context(|| format!("writing {}", file.display()))?;
            std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
            println!(
                "{instances} instances at index {} written to {}",
                backup["applied_index"],
                file.display()
            );
            return Ok(());
        }
        Command::Restore { file } => {
            let body = if file.as_os_str() == "-" {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut body)
                    .context("reading standard input")?;
                body
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let request = http.post(format!("{base}/admin/restore")).body(body);
            let message = admin_envelope(request, cli.token.as_deref(), &base).await?;
            println!("{message}");
            return Ok(());
        }
        Command::TransferLeader { to } => {
            let leader = transfer_leader(&http, &base, cli.token.as_deref(), to).await?;
            println!("node {leader} leads");
            return Ok(());
        }
        Command::Repair { id } => {
            let status = node_status(http.get(format!("{base}/admin/status")), &base).await?;
            let target = match id {
                Some(id) if status["id"].as_u64() != Some(id) => {
                    let addr = status["members"][id.to_string()]["api_addr"]
                        .as_str()
                        .filter(|a| !a.is_empty())
                        .with_context(|| format!("{base} knows no client address of node {id}"))?;
                    let scheme = base.split("://").next().unwrap_or("http");
                    format!("{scheme}://{addr}")
                }
                _ => base.clone(),
            };
            let message: String = admin_post(
                &http,
                &format!("{target}{REPAIR_PATH}"),
                &serde_json::json!({}),
                cli.token.as_deref(),
            )
            .await?;
            println!("{message}");
            return Ok(());
        }
        Command::Leave => {
            let status = node_status(http.get(format!("{base}/admin/status")), &base).await?;
            let id = status["id"]
                .as_u64()
                .with_context(|| format!("{base} did not say its id: {status}"))?;
            if status["leader"].as_u64() == Some(id)
                && status["voters"].as_array().map_or(0, Vec::len) > 1
            {
                let leader = transfer_leader(&http, &base, cli.token.as_deref(), None).await?;
                println!("node {id} handed its leadership to node {leader}");
            }
            println!("node {id} leaves");
            Change::Remove { id }
        }
    };
    let changed: Changed = admin_post(
        &http,
        &format!("{base}{MEMBERSHIP_PATH}"),
        &change,
        cli.token.as_deref(),
    )
    .await?;
    println!("voters: {:?}", changed.voters);
    println!("nodes:  {:?}", changed.nodes);
    Ok(())
}

/// What `/admin/status` of the node at `base` answers, asked by `request`.
async fn node_status(request: reqwest::RequestBuilder, base: &str) -> anyhow::Result<Value> {
    Ok(request
        .send()
        .await
        .with_context(|| format!("asking {base}"))?
        .json()
        .await?)
}

/// Sends an admin request with the token and reads the discovery envelope
/// it answers: its message when the code is 0, else an error with it.
async fn admin_envelope(
    request: reqwest::RequestBuilder,
    token: Option<&str>,
    base: &str,
) -> anyhow::Result<String> {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let answer: Value = request
        .send()
        .await
        .with_context(|| format!("asking {base}"))?
        .json()
        .await?;
    let message = answer["message"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(answer["code"] == 0, "refused: {message}");
    Ok(message)
}

/// Posts `body` to an admin route with the token, and reads its
/// `{"Ok":…}` / `{"Err":"…"}` answer; a refusal before the request is
/// looked at (a missing or wrong token) comes as the discovery envelope.
async fn admin_post<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    body: &impl serde::Serialize,
    token: Option<&str>,
) -> anyhow::Result<T> {
    let mut request = http.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer: Value = request
        .send()
        .await
        .with_context(|| format!("asking {url}"))?
        .json()
        .await?;
    if let Some(message) = answer.get("message").and_then(Value::as_str) {
        anyhow::bail!("refused: {message}");
    }
    let answer: Result<T, String> = serde_json::from_value(answer)?;
    answer.map_err(|e| anyhow::anyhow!("refused: {e}"))
}

/// Asks the node at `base` to have the leader hand its leadership over;
/// answers the new leader.
async fn transfer_leader(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    to: Option<NodeId>,
) -> anyhow::Result<NodeId> {
    admin_post(
        http,
        &format!("{base}{TRANSFER_LEADER_PATH}"),
        &serde_json::json!({ "to": to }),
        token,
    )
    .await
}

/// The first of `nodes` whose status answers within a second; the first
/// of them when none does (its error then says which node failed).
async fn first_answering(http: &reqwest::Client, nodes: &[String]) -> String {
    for node in nodes {
        let b = base(node);
        let answered = http
            .get(format!("{b}/admin/status"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answered.is_ok() {
            return b;
        }
    }
    base(&nodes[0])
}

/// Serving means: start-up protection lifted, a leader known, and a
/// quorum seen (a leader cut off from its quorum takes no writes).
fn healthy(status: &Value) -> anyhow::Result<()> {
    if let Some(why) = status["removed"].as_str() {
        anyhow::bail!("{why}");
    }
    if let Some(why) = status["diverged"].as_str() {
        anyhow::bail!("node {} diverged: {why}", status["id"]);
    }
    if let Some(why) = status["no_quorum"].as_str() {
        anyhow::bail!("node {} sees no quorum: {why}", status["id"]);
    }
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
    if let Some(why) = s["diverged"].as_str() {
        println!("DIVERGED: {why}");
    }
    if let Some(why) = s["no_quorum"].as_str() {
        println!("NO QUORUM: {why}");
    }
    if let Some(why) = s["removed"].as_str() {
        println!("REMOVED: {why}");
    }
    for (name, link) in s["upstreams"].as_object().into_iter().flatten() {
        println!(
            "upstream {name}: import {} ({} imported), export {} ({} exported)",
            show(&link["import"]["state"]),
            show(&link["imported"]),
            show(&link["export"]["state"]),
            show(&link["exported"])
        );
    }
    println!(
        "{:<4} {:<12} {:<22} {:<22} {:<7} {:<8} {:<6}",
        "id", "name", "raft", "api", "role", "matched", "lag"
    );
    if let Some(members) = s["members"].as_object() {
        for (id, m) in members {
            // A voter whose vote was taken to rebuild its data is a
            // learner until it agrees again.
            let role = if m["voter"] == true {
                "voter"
            } else if m["rebuilding"] == true {
                "rebuilding"
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
