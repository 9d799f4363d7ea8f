//! Two zones, a three-node cluster each, on 127.0.0.1: each zone writes
//! its own instances, streams them to the other, and serves every zone's.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{Cluster, Timings};
use common::link::ZoneLink;
use common::{hostnames, wait_held, Client};
use serde_json::Value;
use tokio::time::Instant;

/// Six or more processes each: one test at a time, so that a loaded
/// machine does not slow renewing clients into evictions.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Zones sh001 (A) and sh002 (B) of `n` nodes each, and the link between.
async fn zones_of(n: u64, timings: impl Fn() -> Timings) -> (Cluster, Cluster, ZoneLink) {
    let (mut zones, link) = Cluster::start_zones(n, &["sh001", "sh002"], timings).await;
    let b = zones.pop().unwrap();
    let a = zones.pop().unwrap();
    (a, b, link)
}

/// Waits until `check` holds for node `i`'s fetch of `appid` (all zones).
async fn until_fetched(
    c: &Cluster,
    i: usize,
    appid: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = c.client(i).fetch(appid, 3).await;
        let v = a.json();
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hosts_in(v: &Value, zone: &str) -> Vec<String> {
    v["data"]["instances"][zone]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["hostname"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn digests(c: &Cluster, i: usize) -> Value {
    c.client(i).get("/admin/digest").await.json()["partitions"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_in_one_zone_is_fetched_and_woken_in_the_other_and_writes_go_to_their_zone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b, _link) = zones_of(3, || Timings {
        lifecycle: "[zone_stream]\nnodes_every_ms = 300\n".into(),
        ..Timings::default()
    })
    .await;
    let ca = a.client(0);
    let cb = b.client(1);

    // B polls the app before it exists anywhere... then A registers it.
    assert_eq!(
        cb.register("zoned.app", "sh002", "b-host", "1")
            .await
            .code(),
        0
    );
    let latest = cb.latest("zoned.app").await;
    let poller = cb.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let a = poller
            .get(&format!(
                "/discovery/polls?env=dev&appid=zoned.app&latest_timestamp={latest}&hostname=p"
            ))
            .await;
        (a, started.elapsed())
    });
    wait_held(&cb, 1).await;
    assert_eq!(
        ca.register("zoned.app", "sh001", "a-host", "1")
            .await
            .code(),
        0
    );
    let (woken, took) = poll.await.unwrap();
    assert_eq!(woken.code(), 0, "{}", woken.text);
    assert!(took < Duration::from_secs(4), "woken after {took:?}");
    let woken = woken.json();
    let app = serde_json::json!({ "data": woken["data"]["zoned.app"] });
    assert_eq!(hosts_in(&app, "sh001"), ["a-host"], "{woken}");

    // Every node of both zones serves both zones' instances.
    for (c, n) in [(&a, 3), (&b, 3)] {
        for i in 0..n {
            until_fetched(c, i, "zoned.app", |v| {
                hosts_in(v, "sh001") == ["a-host"] && hosts_in(v, "sh002") == ["b-host"]
            })
            .await;
        }
    }

    // A write in B for an A instance is handed to A, and comes back.
    let set = cb
        .post(
            "/discovery/set",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "zoned.app"),
                ("hostname", "a-host"),
                ("status", "2"),
            ],
        )
        .await;
    assert_eq!(set.code(), 0, "{}", set.text);
    let renew = cb
        .post(
            "/discovery/renew",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "zoned.app"),
                ("hostname", "a-host"),
            ],
        )
        .await;
    assert_eq!(renew.code(), 0, "{}", renew.text);
    until_fetched(&a, 2, "zoned.app", |v| {
        v["data"]["instances"]["sh001"][0]["status"] == 2
    })
    .await;
    until_fetched(&b, 0, "zoned.app", |v| {
        v["data"]["instances"]["sh001"][0]["status"] == 2
    })
    .await;

    // A cancel in A reaches B.
    let cancel = ca
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "zoned.app"),
                ("hostname", "a-host"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), 0, "{}", cancel.text);
    until_fetched(&b, 2, "zoned.app", |v| hosts_in(v, "sh001").is_empty()).await;

    // Per origin, both zones hold the same: A's own equals B's copy of A,
    // and the other way round.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (da, db) = (digests(&a, 1).await, digests(&b, 2).await);
        let same = |zone: &str| da[zone]["digest"] == db[zone]["digest"];
        if same("sh001") && same("sh002") {
            assert_eq!(db["sh002"]["instances"], 1, "{db}");
            break;
        }
        assert!(Instant::now() < deadline, "A {da} B {db}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = b.client(0).status().await;
    assert!(
        status["zones"]["sh001"]["cursor"].as_u64().unwrap() > 0,
        "{status}"
    );

    // infra.discovery in B lists both zones' nodes (an SDK keeps its own
    // zone's); /discovery/nodes lists B's own, as the original's did.
    let v = until_fetched(&b, 1, "infra.discovery", |v| {
        hosts_in(v, "sh001").len() == 3 && hosts_in(v, "sh002").len() == 3
    })
    .await;
    let addrs: BTreeSet<&str> = v["data"]["instances"]["sh001"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["addrs"][0].as_str().unwrap())
        .collect();
    let a_addrs: BTreeSet<String> = (0..3).map(|i| format!("http://{}", a.addr(i))).collect();
    assert_eq!(addrs, a_addrs.iter().map(String::as_str).collect());
    let nodes = b.client(1).get("/discovery/nodes").await.json();
    let listed: Vec<&str> = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["zone"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["sh002"; 3], "{nodes}");
}

/// Eviction 4 s after the last renew (rounds every 200 ms), renews
/// replicated every 100 ms: long enough for two zones to converge once
/// their clients stop renewing, before anything is evicted.
fn lifecycle() -> Timings {
    Timings {
        lifecycle: r#"
[renew]
batch_ms = 100

[eviction]
threshold_ms = 4000
ceiling_ms = 20000
every_ms = 200
renew_interval_ms = 500
window_ms = 1500
keep_ratio = 0.85
"#
        .into(),
        ..Timings::default()
    }
}

/// Renews `hosts` of `appid` in `zone` through `c` every 250 ms until
/// `stop` (answers ignored: a cancelled host answers -404).
fn keep_renewing(
    c: Client,
    zone: &'static str,
    appid: &'static str,
    hosts: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for host in &hosts {
                let form = [
                    ("zone", zone),
                    ("env", "dev"),
                    ("appid", appid),
                    ("hostname", host.as_str()),
                ];
                let _ = c
                    .http
                    .post(format!("{}/discovery/renew", c.base))
                    .form(&form)
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

async fn register_all(c: &Client, appid: &str, zone: &str, hosts: &[String]) {
    for h in hosts {
        let r = c.register(appid, zone, h, "1").await;
        assert_eq!(r.code(), 0, "{h}: {}", r.text);
    }
}

fn named(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Waits until node `i` of `c` shows exactly `want` for `appid`.
async fn until_hosts(
    c: &Cluster,
    i: usize,
    appid: &str,
    want: &BTreeSet<String>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = hostnames(&c.client(i), appid).await;
        if &got == want {
            return;
        }
        if Instant::now() > deadline {
            let status = c.status(i).await;
            panic!(
                "node {i} of {}: {got:?}, want {want:?}; status {status:?}",
                c.addr(i)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every running node of both zones holds, per origin zone, a
/// partition with the digest the origin's own nodes hold.
async fn until_converged(a: &Cluster, b: &Cluster, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let mut all = Vec::new();
        for c in [a, b] {
            for i in 0..c.slots.len() {
                if c.status(i).await.is_some() {
                    all.push(digests(c, i).await);
                }
            }
        }
        let same = |zone: &str| {
            all.iter().all(|d| {
                d[zone]["digest"].is_string() && d[zone]["digest"] == all[0][zone]["digest"]
            })
        };
        if same("sh001") && same("sh002") {
            return all[0].clone();
        }
        assert!(Instant::now() < deadline, "never converged: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the nodes of `c` say of `zone` in their status, summed: batches
/// and full copies applied from it.
async fn stream_counts(c: &Cluster, zone: &str) -> (u64, u64) {
    let mut counts = (0, 0);
    for i in 0..c.slots.len() {
        if let Some(s) = c.status(i).await {
            counts.0 += s["zones"][zone]["batches"].as_u64().unwrap_or(0);
            counts.1 += s["zones"][zone]["full_copies"].as_u64().unwrap_or(0);
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_leaves_both_zones_writing_and_keeps_the_other_zone_until_it_heals() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b, link) = zones_of(3, lifecycle).await;
    let stop = Arc::new(AtomicBool::new(false));

    // Ten renewed instances in each zone, and one in A that never renews.
    let a_keep = named("a-keep", 10);
    let b_keep = named("b-keep", 10);
    register_all(&a.client(0), "cut.app", "sh001", &a_keep).await;
    register_all(&b.client(0), "cut.app", "sh002", &b_keep).await;
    // (What each zone registers during the cut is renewed too, once it
    // exists.)
    let a_new = named("a-during", 5);
    let b_new = named("b-during", 5);
    let renewed = |keep: &[String], new: &[String]| [keep, new].concat();
    let renewers = [
        keep_renewing(
            a.client(1),
            "sh001",
            "cut.app",
            renewed(&a_keep, &a_new),
            stop.clone(),
        ),
        keep_renewing(
            b.client(1),
            "sh002",
            "cut.app",
            renewed(&b_keep, &b_new),
            stop.clone(),
        ),
    ];
    register_all(&a.client(2), "cut.app", "sh001", &["a-silent".to_string()]).await;
    let mut want: BTreeSet<String> = a_keep.iter().chain(&b_keep).cloned().collect();
    want.insert("a-silent".into());
    until_hosts(&b, 2, "cut.app", &want, Duration::from_secs(10)).await;

    // A evicts its silent instance; B learns it from A.
    want.remove("a-silent");
    until_hosts(&b, 2, "cut.app", &want, Duration::from_secs(15)).await;
    let (batches_before, full_before) = stream_counts(&b, "sh001").await;

    // The link is cut: each zone goes on taking its own writes.
    link.cut();
    let cut_at = Instant::now();
    register_all(&a.client(0), "cut.app", "sh001", &a_new).await;
    register_all(&b.client(1), "cut.app", "sh002", &b_new).await;
    let cancel = a
        .client(2)
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "cut.app"),
                ("hostname", "a-keep-9"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), 0, "{}", cancel.text);
    assert!(
        cut_at.elapsed() < Duration::from_secs(3),
        "own writes took {:?} with the link cut",
        cut_at.elapsed()
    );
    // A write in B for an instance of A cannot be handed there.
    let handed = b
        .client(0)
        .post(
            "/discovery/set",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "cut.app"),
                ("hostname", "a-keep-0"),
                ("status", "2"),
            ],
        )
        .await;
    assert_eq!(handed.code(), -503, "{}", handed.text);

    // Past the eviction threshold without a word from A: B keeps A's
    // instances as last seen, and says how old its copy is.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let mut b_sees: BTreeSet<String> = want.clone();
    b_sees.extend(b_new.iter().cloned());
    for i in 0..3 {
        until_hosts(&b, i, "cut.app", &b_sees, Duration::from_secs(1)).await;
    }
    let b_leader = b.leader().await;
    let status = b.client(b_leader).status().await;
    let seen = &status["zones"]["sh001"];
    assert!(
        seen["last_answer_ms"].as_u64().unwrap() >= 4_000,
        "{status}"
    );
    assert_eq!(seen["instances"], 10, "{status}");
    let metrics = b.client(b_leader).get("/metrics").await.text;
    let reading = |name: &str| -> f64 {
        let prefix = format!("{name}{{zone=\"sh001\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(reading("discovery_zone_instances"), 10.0);
    assert!(reading("discovery_zone_last_answer_age_seconds") >= 4.0);

    // Healed, and the clients stop renewing (so that the zones stand
    // still): every zone holds every origin's partition as the origin
    // does, resumed from the cursor (no full copy).
    link.heal();
    stop.store(true, Ordering::Relaxed);
    for r in renewers {
        r.await.unwrap();
    }
    want.extend(a_new.iter().cloned());
    want.extend(b_new.iter().cloned());
    want.remove("a-keep-9");
    let converged = until_converged(&a, &b, Duration::from_secs(30)).await;
    assert_eq!(converged["sh001"]["instances"], 14, "{converged}");
    assert_eq!(converged["sh002"]["instances"], 15, "{converged}");
    for (c, i) in [(&a, 0), (&b, 1)] {
        until_hosts(c, i, "cut.app", &want, Duration::from_secs(5)).await;
    }
    let (batches, full) = stream_counts(&b, "sh001").await;
    assert!(batches > batches_before, "{batches} batches");
    assert_eq!(full, full_before, "a full copy was sent after the cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_leaders_killed_during_a_stream_of_writes_lose_nothing_across_zones() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut a, mut b, _link) = zones_of(3, Timings::default).await;
    let acked = Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let clients: Vec<Client> = (0..3).map(|i| a.client(i)).collect();
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let host = format!("w-{n}");
                let c = &clients[n % clients.len()];
                let form = [
                    ("zone", "sh001"),
                    ("env", "dev"),
                    ("appid", "stream.app"),
                    ("hostname", host.as_str()),
                    ("status", "1"),
                    ("addrs", "http://10.0.0.1:80"),
                ];
                let Ok(r) = c
                    .http
                    .post(format!("{}/discovery/register", c.base))
                    .form(&form)
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                if v["code"] == 0 {
                    acked.lock().insert(host);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader_a = a.leader().await;
    a.kill(leader_a);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader_b = b.leader().await;
    b.kill(leader_b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    a.spawn(leader_a);
    b.spawn(leader_b);
    a.wait_serving(leader_a).await;
    b.wait_serving(leader_b).await;

    let acked = acked.lock().clone();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    let converged = until_converged(&a, &b, Duration::from_secs(30)).await;
    for i in 0..3 {
        let seen = hostnames(&b.client(i), "stream.app").await;
        let lost: Vec<_> = acked.difference(&seen).collect();
        assert!(lost.is_empty(), "B node {i} lacks {lost:?}");
    }
    assert!(
        converged["sh001"]["instances"].as_u64().unwrap() >= acked.len() as u64,
        "{converged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_behind_what_the_origin_keeps_gets_a_full_copy() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b, link) = zones_of(1, || Timings {
        lifecycle: "[zone_stream]\nkeep_changes = 20\n".into(),
        ..Timings::default()
    })
    .await;
    let (ca, cb) = (a.client(0), b.client(0));
    register_all(&ca, "full.app", "sh001", &named("before", 3)).await;
    until_hosts(
        &b,
        0,
        "full.app",
        &named("before", 3).into_iter().collect(),
        Duration::from_secs(10),
    )
    .await;
    let (_, full_before) = stream_counts(&b, "sh001").await;

    link.cut();
    // More changes than A keeps, one of them removing an instance B holds.
    register_all(&ca, "full.app", "sh001", &named("during", 40)).await;
    let cancel = ca
        .post(
            "/discovery/cancel",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "full.app"),
                ("hostname", "before-0"),
            ],
        )
        .await;
    assert_eq!(cancel.code(), 0, "{}", cancel.text);
    assert!(
        cb.status().await["zones"]["sh001"]["cursor"]
            .as_u64()
            .unwrap()
            > 0
    );
    link.heal();

    let mut want: BTreeSet<String> = named("during", 40).into_iter().collect();
    want.extend(["before-1".to_string(), "before-2".to_string()]);
    until_hosts(&b, 0, "full.app", &want, Duration::from_secs(30)).await;
    let converged = until_converged(&a, &b, Duration::from_secs(10)).await;
    assert_eq!(converged["sh001"]["instances"], 42, "{converged}");
    let (_, full) = stream_counts(&b, "sh001").await;
    assert_eq!(full, full_before + 1, "B was sent {full} full copies");

    // B's leader holds a request on A's only node for A's next change: A
    // stops without waiting out that hold.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    let mut a = a;
    a.terminate(0).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "a node holding another zone's request took {:?} to stop",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_rebuilt_from_empty_data_is_copied_whole_by_the_other_zone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut a, b, _link) = zones_of(1, Timings::default).await;
    register_all(&a.client(0), "rebuilt.app", "sh001", &named("old", 5)).await;
    let old: BTreeSet<String> = named("old", 5).into_iter().collect();
    until_hosts(&b, 0, "rebuilt.app", &old, Duration::from_secs(10)).await;
    let cursor = b.status(0).await.unwrap()["zones"]["sh001"]["cursor"]
        .as_u64()
        .unwrap();
    let (_, full_before) = stream_counts(&b, "sh001").await;

    // Zone A's data is lost and the zone starts again, empty: a new log
    // whose indexes run over the same numbers as the old one's.
    a.kill(0);
    let data = a.data_dir_of(a.slots[0].id);
    std::fs::remove_dir_all(&data).unwrap();
    a.spawn(0);
    a.wait_serving(0).await;
    // Past B's cursor in the old log, one write per entry: a cursor read
    // as a bare index would take the new entries after it for the
    // continuation of the old log.
    let new = named("new", cursor as usize + 5);
    for host in &new {
        let r = a
            .client(0)
            .register("rebuilt.app", "sh001", host, "1")
            .await;
        assert_eq!(r.code(), 0, "{}", r.text);
    }
    let want: BTreeSet<String> = new.into_iter().collect();
    until_hosts(&b, 0, "rebuilt.app", &want, Duration::from_secs(20)).await;
    let converged = until_converged(&a, &b, Duration::from_secs(10)).await;
    assert_eq!(converged["sh001"]["instances"], want.len(), "{converged}");
    let (_, full) = stream_counts(&b, "sh001").await;
    assert!(full > full_before, "no full copy of the rebuilt zone");
    assert!(
        b.log(0).contains("zone's log changed"),
        "B did not say why:\n{}",
        b.log(0)
    );
}

/// Each zone is a trust domain of its own: zone B's link certificate reads
/// zone A's stream and nothing else of A; B's node certificates, and a link
/// of A minted by B's CA, prove nobody to A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_zones_certificates_reach_the_zone_routes_only_as_that_zones_link() {
    use raft_discovery::peer::certs::Issued;
    use raft_discovery::peer::identity::Identity;
    use raft_discovery::peer::paths;

    let _one = ONE_AT_A_TIME.lock().await;
    let (a, b, _link) = zones_of(1, Timings::default).await;
    let read = |stem: &str| Issued {
        cert: std::fs::read_to_string(b.pki.dir.join(format!("{stem}.pem"))).unwrap(),
        key: std::fs::read_to_string(b.pki.dir.join(format!("{stem}-key.pem"))).unwrap(),
    };
    let b_link = common::tls_client(&a.pki.ca_path(), Some(&read("link")));
    let b_node = common::tls_client(&a.pki.ca_path(), Some(&read("node1")));
    let forged_a_link = b.pki.issued(
        "a-link",
        &Identity::Link {
            zone: "sh001".into(),
        },
    );
    let forged = common::tls_client(&a.pki.ca_path(), Some(&forged_a_link));
    let base = format!("https://{}", a.peer_addr(0));
    let get = |client: &reqwest::Client, path: &str| client.get(format!("{base}{path}")).send();
    let status = |r: reqwest::Result<reqwest::Response>| r.map(|r| r.status().as_u16()).unwrap();

    // The link reads A's stream and nodes.
    let changes = format!("{}?after=0&hold_ms=0", paths::ZONE_CHANGES);
    assert_eq!(status(get(&b_link, &changes).await), 200);
    assert_eq!(status(get(&b_link, paths::ZONE_NODES).await), 200);
    // ...and nothing of A's cluster.
    for path in [
        paths::APPEND,
        paths::VOTE,
        paths::PROPOSE,
        paths::MEMBERSHIP,
    ] {
        let r = b_link
            .post(format!("{base}{path}"))
            .json(&Value::Null)
            .send()
            .await;
        assert_eq!(status(r), 403, "{path}");
    }
    assert_eq!(status(get(&b_link, paths::HEALTH).await), 403);
    // It may hand A a write of A's own instances only.
    let write = |zone: &str| {
        serde_json::json!({"Command": {"Register": {
            "registration": {"region": "sh", "zone": zone, "env": "dev", "appid": "linked.app",
                             "hostname": "h1", "addrs": ["http://10.0.0.1:80"], "version": "",
                             "metadata": {}, "status": 1},
            "at": raft_discovery::clock::now()
        }}})
    };
    let zone_write = format!("{base}{}", paths::ZONE_WRITE);
    let r = b_link.post(&zone_write).json(&write("sh002")).send().await;
    assert_eq!(status(r), 403);
    let r = b_link.post(&zone_write).json(&write("sh001")).send().await;
    assert_eq!(status(r), 200);
    // B's node certificate, and A's link as B's CA would mint it: nobody.
    for (who, client) in [("B's node", &b_node), ("A's link from B's CA", &forged)] {
        assert_eq!(status(get(client, &changes).await), 403, "{who}");
        assert_eq!(status(get(client, paths::HEALTH).await), 403, "{who}");
    }
    let log = a.log(0);
    assert!(
        log.contains("the CA of zone sh002 is trusted for zone sh002's link only"),
        "{log}"
    );
}
