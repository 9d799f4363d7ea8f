//! `compare-register` and `compare-failover`: one cluster benchmark run
//! on several variants of the server in the same run, in turns, so that
//! whatever else loads the machine falls on every variant alike:
//! - `tls`: the `--server` build with mutual TLS between peers;
//! - `plain`: the same build with `insecure_peers` (plain HTTP);
//! - `before`: the `--before` build, the one before the peer port (one port
//!   for clients and peers, no `[tls]`/`[security]`, a write through a
//!   follower answered without waiting for the follower to apply it).
//!
//! Each round runs every variant once, on a fresh cluster, in an order
//! that rotates from round to round. Every round's lines are printed, then
//! the variants side by side.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use crate::cluster::{by_role, Cluster};
use crate::cluster_register;
use crate::failover::{self, Setup, Totals};
use crate::load::Outcome;
use crate::peers::PeerMode;
use crate::server::Launch;
use crate::stats::{Latencies, Ms};

/// One side of a comparison.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The --server build, peers on mutual TLS.
    Tls,
    /// The --server build, peers on plain HTTP (`insecure_peers`).
    Plain,
    /// The --before build with the one-port config.
    Before,
    /// The --prev build (a recent one, configured as this build is),
    /// peers on mutual TLS: what one change cost.
    Prev,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Tls => "tls",
            Variant::Plain => "plain",
            Variant::Before => "before",
            Variant::Prev => "prev",
        }
    }
}

/// Which variants, and where the previous build is.
#[derive(clap::Args, Clone, Debug)]
pub struct Variants {
    /// The variants compared, comma-separated: `tls`, `plain` (the
    /// --server build with peer TLS on and off), `before` (the --before
    /// build, configured with one port and no [tls]/[security]).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tls,plain")]
    pub variants: Vec<Variant>,
    /// The server binary of the build before the peer port, for the
    /// variant `before` (e.g. built from commit 4d43a41).
    #[arg(long)]
    pub before: Option<PathBuf>,
    /// The server binary of a recent build, configured as this one, for
    /// the variant `prev`.
    #[arg(long)]
    pub prev: Option<PathBuf>,
}

impl Variants {
    /// Each variant with how its servers are started.
    fn launches(&self, base: &Launch) -> Result<Vec<(Variant, Launch)>> {
        ensure!(!self.variants.is_empty(), "--variants is empty");
        let mut seen = Vec::new();
        for v in &self.variants {
            ensure!(!seen.contains(v), "{} is given twice", v.label());
            seen.push(*v);
        }
        self.variants
            .iter()
            .map(|&v| {
                let launch = match v {
                    Variant::Tls => Launch {
                        peers: PeerMode::Tls,
                        ..base.clone()
                    },
                    Variant::Plain => Launch {
                        peers: PeerMode::Plain,
                        ..base.clone()
                    },
                    Variant::Before => Launch {
                        binary: self
                            .before
                            .clone()
                            .context("the variant `before` needs --before <binary>")?,
                        peers: PeerMode::Legacy,
                        ..base.clone()
                    },
                    Variant::Prev => Launch {
                        binary: self
                            .prev
                            .clone()
                            .context("the variant `prev` needs --prev <binary>")?,
                        peers: PeerMode::Tls,
                        ..base.clone()
                    },
                };
                Ok((v, launch))
            })
            .collect()
    }
}

/// The order the variants run in round `round` (from 0): rotated by one
/// each round, so that over `n` rounds each variant runs once in every
/// position.
pub fn order(n: usize, round: usize) -> Vec<usize> {
    (0..n).map(|i| (i + round) % n).collect()
}

/// How much less `measured` is than `reference`, in percent.
pub fn cost(reference: f64, measured: f64) -> f64 {
    if reference <= 0.0 {
        return 0.0;
    }
    (1.0 - measured / reference) * 100.0
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The middle value, or the mean of the two middle ones.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(clap::Args, Clone, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub variants: Variants,
    /// Rounds; each runs every variant once on a fresh cluster.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub register: cluster_register::Args,
}

/// One variant's registers over every round.
struct RegisterSide {
    variant: Variant,
    launch: Launch,
    /// Registers/s of each round: all, through the leader, through
    /// followers.
    rates: Vec<f64>,
    led_rates: Vec<f64>,
    followed_rates: Vec<f64>,
    all: Latencies,
    led: Latencies,
    followed: Latencies,
    errors: u64,
    /// CPU per register summed over the nodes, each round, in us.
    cpu_us: Vec<f64>,
}

impl RegisterSide {
    fn line(&mut self) -> String {
        format!(
            "{:.0} req/s (rounds: {}), CPU {:.0} us/register (rounds: {}), all {}; \
             via leader {:.0} req/s {}; via followers {:.0} req/s {}; errors {}",
            mean(&self.rates),
            list(&self.rates),
            mean(&self.cpu_us),
            list(&self.cpu_us),
            self.all.summary(),
            mean(&self.led_rates),
            self.led.summary(),
            mean(&self.followed_rates),
            self.followed.summary(),
            self.errors
        )
    }
}

pub async fn register(base: &Launch, args: &RegisterArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be above 0");
    let mut sides: Vec<RegisterSide> = args
        .variants
        .launches(base)?
        .into_iter()
        .map(|(variant, launch)| RegisterSide {
            variant,
            launch,
            rates: Vec::new(),
            led_rates: Vec::new(),
            followed_rates: Vec::new(),
            all: Latencies::default(),
            led: Latencies::default(),
            followed: Latencies::default(),
            errors: 0,
            cpu_us: Vec::new(),
        })
        .collect();
    let r = &args.register;
    let what = format!(
        "{} over 3 nodes, {} apps, {}",
        r.load.describe(),
        r.apps,
        r.raft.describe()
    );
    for round in 0..args.rounds {
        for i in order(sides.len(), round) {
            let side = &mut sides[i];
            let label = format!(
                "compare-register round {} {}",
                round + 1,
                side.variant.label()
            );
            eprintln!("# {label}: {}", side.launch.describe());
            let m = cluster_register::measure(&side.launch, r).await?;
            side.cpu_us.push(m.cpu_per_register_us());
            let cpu_line = m.cpu_line();
            let (mut led, mut followed) = by_role(m.outcomes, &m.ids, m.leader);
            let (led_line, followed_line) = (
                led.line(&format!("{label} via leader"), &what),
                followed.line(&format!("{label} via followers"), &what),
            );
            side.led_rates.push(led.rate());
            side.followed_rates.push(followed.rate());
            side.led.append(&mut led.latencies.clone());
            side.followed.append(&mut followed.latencies.clone());
            let mut all = Outcome::default();
            all.merge(led);
            all.merge(followed);
            side.errors += all.errors;
            side.rates.push(all.rate());
            println!(
                "{}",
                all.line(&label, &format!("{what}, leader node {}", m.leader))
            );
            println!("{led_line}");
            println!("{followed_line}");
            println!("{label} {cpu_line}");
            side.all.append(&mut all.latencies);
        }
    }
    let what = format!("{what}, {} rounds", args.rounds);
    for side in &mut sides {
        println!(
            "compare-register {} ({}): {} ({what})",
            side.variant.label(),
            side.launch.describe(),
            side.line()
        );
    }
    let at: Vec<Variant> = sides.iter().map(|s| s.variant).collect();
    let find = |v: Variant| at.iter().position(|s| *s == v);
    if let (Some(t), Some(p)) = (find(Variant::Tls), find(Variant::Plain)) {
        let (tls, plain) = (&sides[t], &sides[p]);
        let paired: Vec<f64> = tls
            .rates
            .iter()
            .zip(&plain.rates)
            .map(|(t, p)| cost(*p, *t))
            .collect();
        let shown: Vec<String> = paired.iter().map(|c| format!("{c:.1} %")).collect();
        println!(
            "compare-register TLS cost: {:.1} % less throughput with peer TLS \
             ({:.0} req/s against {:.0} req/s without; per round {}, median {:.1} %; \
             target <= 10 %)",
            cost(mean(&plain.rates), mean(&tls.rates)),
            mean(&tls.rates),
            mean(&plain.rates),
            shown.join(", "),
            median(&paired)
        );
    }
    if let Some(b) = find(Variant::Before) {
        for after in [Variant::Plain, Variant::Tls] {
            let Some(a) = find(after) else { continue };
            let before = sides[b].followed.summary();
            let now = sides[a].followed.summary();
            println!(
                "compare-register via followers, before -> {}: p50 {} -> {}, p99 {} -> {}, \
                 {:.0} -> {:.0} req/s (read-your-writes wait{})",
                after.label(),
                Ms(before.p50),
                Ms(now.p50),
                Ms(before.p99),
                Ms(now.p99),
                mean(&sides[b].followed_rates),
                mean(&sides[a].followed_rates),
                if after == Variant::Tls {
                    " and peer TLS"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub variants: Variants,
    /// Rounds; each runs every variant on a fresh cluster, its share of
    /// --runs leader kills in a row.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// `--runs` is the number of leader kills per variant.
    #[command(flatten)]
    pub failover: failover::Args,
}

/// Round `round`'s share of `runs` over `rounds`.
pub fn runs_in(runs: u32, rounds: usize, round: usize) -> u32 {
    let rounds = rounds as u32;
    let round = round as u32;
    runs / rounds + u32::from(round < runs % rounds)
}

pub async fn failover(base: &Launch, args: &FailoverArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be above 0");
    ensure!(args.failover.runs > 0, "--runs must be above 0");
    let mut sides: Vec<(Variant, Launch, Totals)> = args
        .variants
        .launches(base)?
        .into_iter()
        .map(|(v, l)| (v, l, Totals::default()))
        .collect();
    for round in 0..args.rounds {
        let runs = runs_in(args.failover.runs, args.rounds, round);
        if runs == 0 {
            continue;
        }
        for i in order(sides.len(), round) {
            let (variant, launch, totals) = &mut sides[i];
            eprintln!(
                "# compare-failover round {} {}: {runs} runs, {}",
                round + 1,
                variant.label(),
                launch.describe()
            );
            let mut cluster = Cluster::start(launch, 3, args.failover.raft).await?;
            let setup = Setup::new(&cluster).await?;
            for _ in 0..runs {
                let run = setup.run(&mut cluster, &args.failover).await?;
                totals.add(&run);
                println!(
                    "{}",
                    run.line(&format!(
                        "compare-failover round {} {} run {}",
                        round + 1,
                        variant.label(),
                        totals.runs
                    ))
                );
            }
        }
    }
    let what = format!(
        "{} runs each in {} rounds, {}",
        args.failover.runs,
        args.rounds,
        args.failover.raft.describe()
    );
    for (variant, launch, totals) in &mut sides {
        println!(
            "compare-failover {} ({}): first write {}, no leader {}, failed reads {} of {} ({what})",
            variant.label(),
            launch.describe(),
            totals.first_write(),
            totals.no_leader(),
            totals.failed_reads,
            totals.reads
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_takes_every_position() {
        assert_eq!(order(2, 0), [0, 1]);
        assert_eq!(order(2, 1), [1, 0]);
        assert_eq!(order(2, 2), [0, 1]);
        for n in 1..=3 {
            for pos in 0..n {
                let mut at: Vec<usize> = (0..n).map(|r| order(n, r)[pos]).collect();
                at.sort_unstable();
                assert_eq!(at, (0..n).collect::<Vec<_>>(), "n {n} position {pos}");
            }
        }
    }

    #[test]
    fn runs_are_shared_over_rounds() {
        assert_eq!((0..2).map(|r| runs_in(10, 2, r)).sum::<u32>(), 10);
        assert_eq!(
            (0..3).map(|r| runs_in(10, 3, r)).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(
            (0..4).map(|r| runs_in(2, 4, r)).collect::<Vec<_>>(),
            [1, 1, 0, 0]
        );
    }

    #[test]
    fn median_of_rounds() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, -1.0, 2.0]), 2.0);
        assert_eq!(median(&[13.1, 3.0, -7.5, 3.6, 3.1, -0.9]), 3.05);
    }

    #[test]
    fn cost_in_percent() {
        assert!((cost(100.0, 90.0) - 10.0).abs() < 1e-9);
        assert!((cost(100.0, 110.0) + 10.0).abs() < 1e-9);
        assert_eq!(cost(0.0, 5.0), 0.0);
    }

    fn base() -> Launch {
        Launch {
            binary: "target/release/discovery".into(),
            poll_hold_ms: 30_000,
            peers: PeerMode::Tls,
            shares: crate::server::Shares::Off,
        }
    }

    #[test]
    fn variants_pick_binary_and_config() {
        let v = Variants {
            variants: vec![Variant::Before, Variant::Plain, Variant::Tls, Variant::Prev],
            before: Some("/tmp/prev-target/release/discovery".into()),
            prev: Some("/tmp/recent/discovery".into()),
        };
        let l = v.launches(&base()).unwrap();
        assert_eq!(l[0].1.peers, PeerMode::Legacy);
        assert_eq!(
            l[0].1.binary,
            PathBuf::from("/tmp/prev-target/release/discovery")
        );
        assert_eq!(l[1].1.peers, PeerMode::Plain);
        assert_eq!(l[1].1.binary, PathBuf::from("target/release/discovery"));
        assert_eq!(l[2].1.peers, PeerMode::Tls);
        assert_eq!(l[3].1.peers, PeerMode::Tls);
        assert_eq!(l[3].1.binary, PathBuf::from("/tmp/recent/discovery"));
        let missing = Variants {
            variants: vec![Variant::Before],
            before: None,
            prev: None,
        };
        assert!(missing.launches(&base()).is_err());
        let twice = Variants {
            variants: vec![Variant::Tls, Variant::Tls],
            before: None,
            prev: None,
        };
        assert!(twice.launches(&base()).is_err());
    }
}
