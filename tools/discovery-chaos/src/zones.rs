//! `--zones`: the two-zone compose cluster (docker-compose.zones.yml)
//! under zone faults: the link between the zones cut, a zone's leader
//! killed, a whole zone restarted. Each zone takes registers and cancels
//! of its own instances all along; at the end, per origin zone, every node
//! of every zone must hold every acknowledged register and no
//! acknowledged cancel, nothing nobody sent, and the same partition (the
//! same digest).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use crate::docker::docker;

/// One node of one zone.
#[derive(Clone, Debug)]
struct Node {
    zone: String,
    id: u64,
    client: String,
    container: String,
    link_alias: String,
}

/// A zone fault, injected and undone.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneFault {
    /// Disconnect every node of the first zone from the link network.
    CutLink,
    /// SIGKILL the first zone's leader; start it again when undone.
    KillZoneLeader,
    /// Restart every node of the second zone at once.
    RestartZone,
}

impl ZoneFault {
    fn name(self) -> &'static str {
        match self {
            ZoneFault::CutLink => "cut-link",
            ZoneFault::KillZoneLeader => "kill-zone-leader",
            ZoneFault::RestartZone => "restart-zone",
        }
    }
}

pub struct Plan {
    pub rounds: usize,
    pub faults: Vec<ZoneFault>,
    pub hold: Duration,
    pub heal_timeout: Duration,
    pub apps: usize,
    pub register_every: Duration,
}

/// What clients were told, per origin zone.
#[derive(Default)]
struct Told {
    /// Every hostname a register was sent for, by zone.
    sent: BTreeMap<String, BTreeSet<String>>,
    /// Registers acknowledged, and not cancelled since.
    live: BTreeMap<String, BTreeSet<String>>,
    /// Cancels acknowledged.
    cancelled: BTreeMap<String, BTreeSet<String>>,
    /// Cancels sent without an answer: either way is right.
    unsure: BTreeSet<String>,
}

struct Zones {
    nodes: Vec<Node>,
    link_network: String,
    http: reqwest::Client,
}

impl Zones {
    async fn discover() -> Result<Zones> {
        let listing = docker(&[
            "ps",
            "--filter",
            "label=raft-discovery.zone",
            "--format",
            "{{.ID}} {{.Label \"raft-discovery.zone\"}} {{.Label \"raft-discovery.node\"}} {{.Label \"raft-discovery.client\"}} {{.Label \"raft-discovery.link-alias\"}}",
        ])
        .await?;
        let mut nodes = Vec::new();
        for line in listing.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(f.len() == 5, "unexpected container listing: {line}");
            nodes.push(Node {
                container: f[0].into(),
                zone: f[1].into(),
                id: f[2].parse()?,
                client: f[3].into(),
                link_alias: f[4].into(),
            });
        }
        nodes.sort_by(|a, b| (&a.zone, a.id).cmp(&(&b.zone, b.id)));
        let zones: BTreeSet<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
        ensure!(
            zones.len() == 2 && nodes.len() >= 4,
            "found zones {zones:?} in {} containers; start docker-compose.zones.yml",
            nodes.len()
        );
        let networks = docker(&[
            "network",
            "ls",
            "--filter",
            "label=raft-discovery.network=link",
            "--format",
            "{{.Name}}",
        ])
        .await?;
        let networks: Vec<&str> = networks.lines().collect();
        ensure!(
            networks.len() == 1,
            "expected one link network, found {networks:?}"
        );
        Ok(Zones {
            nodes,
            link_network: networks[0].to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    fn names(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.nodes.iter().map(|n| n.zone.clone()).collect();
        set.into_iter().collect()
    }

    fn of(&self, zone: &str) -> Vec<Node> {
        self.nodes
            .iter()
            .filter(|n| n.zone == zone)
            .cloned()
            .collect()
    }

    async fn get(&self, client: &str, path: &str) -> Result<Value> {
        Ok(self
            .http
            .get(format!("http://{client}{path}"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The node of `zone` that leads it, as it says.
    async fn leader(&self, zone: &str) -> Option<Node> {
        for n in self.of(zone) {
            if let Ok(s) = self.get(&n.client, "/admin/status").await {
                if s["state"] == "Leader" {
                    return Some(n);
                }
            }
        }
        None
    }

    /// Every node serves (knows a leader, start-up protection lifted).
    async fn healthy(&self) -> bool {
        for n in &self.nodes {
            match self.get(&n.client, "/admin/status").await {
                Ok(s) if s["protected"] == false && s["leader"].is_u64() => {}
                _ => return false,
            }
        }
        true
    }

    async fn wait_healthy(&self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.healthy().await {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Every node's digest of every origin zone's partition, when all
    /// answer and agree.
    async fn converged(&self) -> Option<BTreeMap<String, String>> {
        let mut agreed: Option<BTreeMap<String, String>> = None;
        for n in &self.nodes {
            let d = self.get(&n.client, "/admin/digest").await.ok()?;
            let mine: BTreeMap<String, String> = self
                .names()
                .into_iter()
                .map(|z| {
                    let digest = d["partitions"][&z]["digest"].as_str().unwrap_or("");
                    (z, digest.to_string())
                })
                .collect();
            if mine.values().any(String::is_empty) {
                return None;
            }
            match &agreed {
                None => agreed = Some(mine),
                Some(a) if *a != mine => return None,
                _ => {}
            }
        }
        agreed
    }

    async fn wait_converged(&self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.converged().await.is_some() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    async fn inject(&self, fault: ZoneFault) -> Result<String> {
        let zones = self.names();
        Ok(match fault {
            ZoneFault::CutLink => {
                for n in self.of(&zones[0]) {
                    docker(&["network", "disconnect", &self.link_network, &n.container]).await?;
                }
                format!("zone {} cut off the link", zones[0])
            }
            ZoneFault::KillZoneLeader => {
                let leader = self
                    .leader(&zones[0])
                    .await
                    .with_context(|| format!("zone {} has no leader", zones[0]))?;
                docker(&["kill", &leader.container]).await?;
                format!("zone {} leader node {} killed", zones[0], leader.id)
            }
            ZoneFault::RestartZone => {
                let containers: Vec<String> = self
                    .of(&zones[1])
                    .into_iter()
                    .map(|n| n.container)
                    .collect();
                let mut args = vec!["restart", "-t", "10"];
                args.extend(containers.iter().map(String::as_str));
                docker(&args).await?;
                format!("zone {} restarted", zones[1])
            }
        })
    }

    async fn heal(&self, fault: ZoneFault) -> Result<()> {
        let zones = self.names();
        match fault {
            ZoneFault::CutLink => {
                for n in self.of(&zones[0]) {
                    docker(&[
                        "network",
                        "connect",
                        "--alias",
                        &n.link_alias,
                        &self.link_network,
                        &n.container,
                    ])
                    .await?;
                }
            }
            ZoneFault::KillZoneLeader => {
                let mut args = vec!["start"];
                let all: Vec<String> = self.nodes.iter().map(|n| n.container.clone()).collect();
                args.extend(all.iter().map(String::as_str));
                docker(&args).await?;
            }
            ZoneFault::RestartZone => {}
        }
        Ok(())
    }
}

fn appid(n: usize, apps: usize) -> String {
    format!("zchaos.app.{}", n % apps)
}

/// One zone's writer.
struct Writer {
    http: reqwest::Client,
    zone: String,
    nodes: Vec<Node>,
    apps: usize,
    every: Duration,
    run: String,
    told: Arc<Mutex<Told>>,
    stop: Arc<AtomicBool>,
}

/// Registers (and now and then cancels) instances of `zone` through its
/// own nodes until `stop`, telling `told` what was acknowledged.
async fn writer(w: Writer) {
    let Writer {
        http,
        zone,
        nodes,
        apps: plan_apps,
        every,
        run,
        told,
        stop,
    } = w;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let node = &nodes[n % nodes.len()];
        let host = format!("{run}-{zone}-{n}");
        let app = appid(n, plan_apps);
        let mut form = vec![
            ("zone", zone.as_str()),
            ("env", "dev"),
            ("appid", app.as_str()),
            ("hostname", host.as_str()),
        ];
        told.lock()
            .sent
            .entry(zone.clone())
            .or_default()
            .insert(host.clone());
        let mut register = form.clone();
        register.extend([("status", "1"), ("addrs", "http://10.0.0.1:80")]);
        if post(&http, &node.client, "/discovery/register", &register).await == Some(0) {
            told.lock()
                .live
                .entry(zone.clone())
                .or_default()
                .insert(host.clone());
        }
        // Every fifth instance is cancelled right after, through another
        // node of its zone.
        if n.is_multiple_of(5)
            && told
                .lock()
                .live
                .get(&zone)
                .is_some_and(|l| l.contains(&host))
        {
            let other = &nodes[(n + 1) % nodes.len()];
            form.truncate(4);
            match post(&http, &other.client, "/discovery/cancel", &form).await {
                Some(0) => {
                    let mut t = told.lock();
                    t.live.entry(zone.clone()).or_default().remove(&host);
                    t.cancelled.entry(zone.clone()).or_default().insert(host);
                }
                Some(_) => {}
                None => {
                    let mut t = told.lock();
                    t.live.entry(zone.clone()).or_default().remove(&host);
                    t.unsure.insert(host);
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The answer's code; none when there was no answer.
async fn post(
    http: &reqwest::Client,
    client: &str,
    path: &str,
    form: &[(&str, &str)],
) -> Option<i64> {
    let r = http
        .post(format!("http://{client}{path}"))
        .form(form)
        .send()
        .await
        .ok()?;
    r.json::<Value>().await.ok()?["code"].as_i64()
}

/// Renews every live instance of every zone every 20 s (eviction is
/// 90 s), through its own zone's nodes, until `stop`.
async fn renewer(
    http: reqwest::Client,
    zones: Vec<(String, Vec<Node>)>,
    apps: usize,
    told: Arc<Mutex<Told>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        for (zone, nodes) in &zones {
            let live: Vec<String> = told
                .lock()
                .live
                .get(zone)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for (i, host) in live.iter().enumerate() {
                let n: usize = host
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let app = appid(n, apps);
                let form = [
                    ("zone", zone.as_str()),
                    ("env", "dev"),
                    ("appid", app.as_str()),
                    ("hostname", host.as_str()),
                ];
                let _ = post(
                    &http,
                    &nodes[i % nodes.len()].client,
                    "/discovery/renew",
                    &form,
                )
                .await;
            }
        }
        for _ in 0..200 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the rounds and the check; the number of violations.
pub async fn run(plan: &Plan) -> Result<usize> {
    let start = Instant::now();
    let zones = Zones::discover().await?;
    let names = zones.names();
    say!(
        start,
        "zones {names:?}, link network {}",
        zones.link_network
    );
    zones
        .wait_healthy(plan.heal_timeout)
        .await
        .context("the zones are not healthy to begin with")?;
    let run = format!(
        "z{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let told = Arc::new(Mutex::new(Told::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for zone in &names {
        tasks.push(tokio::spawn(writer(Writer {
            http: zones.http.clone(),
            zone: zone.clone(),
            nodes: zones.of(zone),
            apps: plan.apps,
            every: plan.register_every,
            run: run.clone(),
            told: told.clone(),
            stop: stop.clone(),
        })));
    }
    let renewing: Vec<(String, Vec<Node>)> =
        names.iter().map(|z| (z.clone(), zones.of(z))).collect();
    tasks.push(tokio::spawn(renewer(
        zones.http.clone(),
        renewing,
        plan.apps,
        told.clone(),
        stop.clone(),
    )));
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut violations = Vec::new();
    println!("## Zone chaos run {run}\n\n| round | fault | what | healthy after | zones identical after |\n|---|---|---|---|---|");
    for round in 0..plan.rounds {
        let fault = plan.faults[round % plan.faults.len()];
        let what = zones.inject(fault).await?;
        say!(start, "round {}: {what}", round + 1);
        tokio::time::sleep(plan.hold).await;
        zones.heal(fault).await?;
        let healthy = zones.wait_healthy(plan.heal_timeout).await;
        let converged = zones.wait_converged(plan.heal_timeout).await;
        let shown = |d: Option<Duration>| {
            d.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        println!(
            "| {} | {} | {what} | {} | {} (writes going on) |",
            round + 1,
            fault.name(),
            shown(healthy),
            shown(converged)
        );
        if healthy.is_none() {
            violations.push(format!(
                "round {}: not healthy within {:?}",
                round + 1,
                plan.heal_timeout
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let converged = zones.wait_converged(plan.heal_timeout).await;
    if converged.is_none() {
        violations.push("the zones' partitions never became identical once writes stopped".into());
    }
    let told = std::mem::take(&mut *told.lock());
    let mut checked = 0;
    for n in &zones.nodes {
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for app in 0..plan.apps {
            let v = zones
                .get(
                    &n.client,
                    &format!(
                        "/discovery/fetch?env=dev&appid={}&status=3",
                        appid(app, plan.apps)
                    ),
                )
                .await?;
            for (zone, list) in v["data"]["instances"].as_object().into_iter().flatten() {
                for i in list.as_array().into_iter().flatten() {
                    if let Some(h) = i["hostname"].as_str().filter(|h| h.starts_with(&run)) {
                        seen.entry(zone.clone()).or_default().insert(h.to_string());
                    }
                }
            }
        }
        for origin in &names {
            let here = seen.get(origin).cloned().unwrap_or_default();
            let live = told.live.get(origin).cloned().unwrap_or_default();
            let lost: Vec<_> = live.difference(&here).collect();
            let sent = told.sent.get(origin).cloned().unwrap_or_default();
            let unknown: Vec<_> = here.difference(&sent).collect();
            let back: Vec<_> = told
                .cancelled
                .get(origin)
                .into_iter()
                .flatten()
                .filter(|h| here.contains(*h))
                .collect();
            checked += live.len();
            for (kind, list) in [
                ("lost", lost),
                ("never sent", unknown),
                ("cancelled but present", back),
            ] {
                if !list.is_empty() {
                    violations.push(format!(
                        "zone {} node {} ({}), origin {origin}: {kind}: {list:?}",
                        n.zone, n.id, n.client,
                    ));
                }
            }
        }
    }
    let count =
        |m: &BTreeMap<String, BTreeSet<String>>| m.values().map(BTreeSet::len).sum::<usize>();
    println!(
        "\n{} registers sent, {} acknowledged and live, {} cancels acknowledged, {} cancels unanswered; {checked} live instances checked on {} nodes; zones identical {} after the writes stopped.\n",
        count(&told.sent),
        count(&told.live),
        count(&told.cancelled),
        told.unsure.len(),
        zones.nodes.len(),
        converged.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    if violations.is_empty() {
        println!("Verdict: no violation (per origin zone: nothing acknowledged lost, nothing unsent, no cancelled instance back, identical partitions everywhere).");
    } else {
        println!("Verdict: {} violations:\n", violations.len());
        for v in &violations {
            println!("- {v}");
        }
    }
    Ok(violations.len())
}
