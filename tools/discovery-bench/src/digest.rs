//! What the registry's digest costs (issue 25), in process, on the
//! library's own registry: a full digest of every instance from scratch
//! (what a node pays once its registry is read back at start, instance by
//! instance), the pass over the apps that `/admin/digest` and every check
//! make, and one change; each beside its reference, measured in the same
//! run: the digest before this one (SHA-256 of the registry's JSON, made on
//! every `/admin/digest`). What keeping it costs each write is
//! `compare-register` against the build before it.

use std::time::{Duration, Instant};

use anyhow::Result;
use raft_discovery::registry::digest::{hash, Sum};
use raft_discovery::registry::{Command, Registration, Registry, Status};

#[derive(clap::Args)]
pub struct Args {
    /// Instances in the registry.
    #[arg(long, default_value_t = 1_000_000)]
    instances: usize,
    /// Instances per app.
    #[arg(long, default_value_t = 100)]
    per_app: usize,
}

fn register(i: usize, per_app: usize) -> Command {
    Command::Register {
        registration: Registration {
            region: "sh".into(),
            zone: format!("sh00{}", i % 3),
            env: "prod".into(),
            appid: format!("app.{:06}", i / per_app),
            hostname: format!("host-{i:08}"),
            addrs: vec![format!(
                "grpc://10.{}.{}.{}:9000",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255
            )],
            version: "v1.2.3".into(),
            metadata: raft_discovery::registry::parse_metadata(r#"{"weight":"10","color":"blue"}"#)
                .expect("metadata"),
            status: Status::Up,
        },
        at: 1_700_000_000_000_000_000 + i as i64,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn run(args: &Args) -> Result<()> {
    let mut registry = Registry::default();
    let built = Instant::now();
    for i in 0..args.instances {
        registry.apply(&register(i, args.per_app));
    }
    let built = built.elapsed();
    let apps = args.instances.div_ceil(args.per_app);
    println!(
        "registry: {} instances in {apps} apps, built in {} ({:.2} µs a register applied, its digest kept)",
        args.instances,
        ms(built),
        built.as_secs_f64() * 1e6 / args.instances as f64
    );

    // A full digest from scratch: every instance hashed.
    let apps_now = registry.shared_apps();
    let started = Instant::now();
    let mut sum = Sum::default();
    for (_, _, app) in &apps_now {
        for instance in app.instances() {
            sum.add(instance);
        }
    }
    let full = started.elapsed();
    let kept: Sum = apps_now
        .iter()
        .fold(Sum::default(), |s, (_, _, a)| s.plus(a.digest()));
    anyhow::ensure!(sum == kept, "the kept digest is not the digest afresh");
    // The reference: the digest before this one, SHA-256 of the JSON.
    let started = Instant::now();
    let old = registry.to_snapshot().digest();
    let json = started.elapsed();
    println!(
        "full digest of {} instances from scratch: {} ({:.2} µs an instance); reference, the \
         digest before (SHA-256 of the registry's JSON, made on every /admin/digest): {} ({})",
        args.instances,
        ms(full),
        full.as_secs_f64() * 1e6 / args.instances as f64,
        ms(json),
        &old[..8]
    );

    // What /admin/digest and each check make now: a pass over the apps.
    let rounds = 20;
    let started = Instant::now();
    let mut last = String::new();
    for _ in 0..rounds {
        last = registry.digest();
    }
    let pass = started.elapsed() / rounds;
    println!(
        "the registry's digest (a pass over {apps} apps, what /admin/digest and every check \
         make): {} ({})",
        ms(pass),
        &last[..8]
    );

    // One change: a renew's hash out and in, against the renew alone
    // (the same instance's fields, no hash).
    let sample = registry
        .shared_apps()
        .into_iter()
        .next()
        .and_then(|(_, _, a)| a.instances().next().cloned())
        .expect("an instance");
    let n = 200_000;
    let started = Instant::now();
    let mut acc = 0u128;
    for _ in 0..n {
        acc = acc.wrapping_add(hash(std::hint::black_box(&sample)));
    }
    let one = started.elapsed() / n;
    std::hint::black_box(acc);
    println!(
        "one instance hashed: {:.0} ns (a renew or set costs two: out and in)",
        one.as_secs_f64() * 1e9
    );
    Ok(())
}
