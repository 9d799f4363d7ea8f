//! A full disk: writes are refused with a message naming the cause, reads
//! keep working, nothing acknowledged is lost, and once there is space
//! again the node takes writes by itself, without a restart; with no
//! reserve, the write that meets the full disk stops the node with the
//! cause, and nothing acknowledged is lost across its restart. It mounts a
//! small tmpfs, which needs root: CI runs as root; elsewhere it says it was
//! skipped.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use common::cluster::{Cluster, Hosts, Timings};
use common::{free_port, hostnames, serving, Client, Tmpfs};

fn host(i: usize) -> String {
    format!("h{i}")
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path, data: &Path, port: u16, peer: u16) -> Node {
    Node(
        Command::new(env!("CARGO_BIN_EXE_discovery"))
            .arg("--config")
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--advertise", &format!("127.0.0.1:{port}")])
            .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
            .arg("--insecure-peers")
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            // Beside the config, for tests that read what it said.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(config.with_extension("log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("discovery starts"),
    )
}

/// Registers `hostname` with about 4 KB of metadata.
async fn register_big(c: &Client, hostname: &str) -> common::Answer {
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(4000));
    c.post(
        "/discovery/register",
        &[
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "full.app"),
            ("hostname", hostname),
            ("status", "1"),
            ("addrs", "http://10.0.0.1:80"),
            ("metadata", &big),
        ],
    )
    .await
}

/// A node whose data directory is on a tmpfs of `mb` MiB, keeping
/// `min_free_mb` free.
struct OnSmallDisk {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
    disk: Tmpfs,
    ports: (u16, u16),
    c: Client,
}

impl OnSmallDisk {
    async fn start(mb: u32, min_free_mb: u32) -> (OnSmallDisk, Node) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("node.toml");
        std::fs::write(&config, format!("[storage]\nmin_free_mb = {min_free_mb}\n")).unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let disk = Tmpfs::mount(&mount, mb);
        let data = mount.join("data");
        let ports = (free_port(), free_port());
        let c = Client {
            base: format!("http://127.0.0.1:{}", ports.0),
            http: reqwest::Client::new(),
        };
        let node = start(&config, &data, ports.0, ports.1);
        serving(&c).await;
        let small = OnSmallDisk {
            _dir: dir,
            config,
            data,
            disk,
            ports,
            c,
        };
        (small, node)
    }

    /// The same node started again on its data directory.
    async fn restart(&self) -> Node {
        let node = start(&self.config, &self.data, self.ports.0, self.ports.1);
        serving(&self.c).await;
        node
    }

    /// Registers until a write is refused: how many were acknowledged, and
    /// the refusal.
    async fn fill(&self) -> (usize, common::Answer) {
        let mut acknowledged = 0;
        loop {
            let a = register_big(&self.c, &host(acknowledged)).await;
            if a.code() != 0 {
                assert!(acknowledged > 10, "only {acknowledged} fitted");
                return (acknowledged, a);
            }
            acknowledged += 1;
            assert!(acknowledged < 5000, "the disk never filled");
        }
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_takes_writes_again_when_space_returns() {
    if !root() {
        return;
    }
    let (small, node) = OnSmallDisk::start(4, 1).await;
    let c = &small.c;
    let (acknowledged, refusal) = small.fill().await;
    assert_eq!(refusal.code(), -503, "{}", refusal.text);
    let message = refusal.json()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("disk full: "), "{message}");
    assert!(message.contains("MiB free in"), "{message}");

    // Reads go on, with everything acknowledged and nothing else.
    let acked: BTreeSet<String> = (0..acknowledged).map(host).collect();
    assert_eq!(hostnames(c, "full.app").await, acked);
    let again = c.register("full.app", "sh001", "more", "1").await;
    assert_eq!(again.code(), -503, "a write went through on a full disk");

    // Space again: the same node takes writes by itself.
    small.disk.grow(32);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = register_big(c, "after").await;
        if a.code() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes never resumed: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut expected = acked.clone();
    expected.insert("after".into());
    assert_eq!(hostnames(c, "full.app").await, expected);

    // And a restart finds every acknowledged write on disk.
    drop(node);
    let _node = small.restart().await;
    assert_eq!(hostnames(c, "full.app").await, expected);
}

/// Whether this process may mount file systems.
fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
    }
    root
}

#[tokio::test]
async fn a_follower_short_of_space_lags_without_failing_and_catches_up_when_space_returns() {
    if !root() {
        return;
    }
    let mut disk = None;
    // Catching up means appends of 64 entries of 4 KB, each of which
    // openraft must see answered within a heartbeat: a debug build on a
    // busy machine takes longer than the usual 50 ms.
    let timings = Timings {
        // A thousand new instances from this one address, back to back.
        lifecycle:
            "[storage]\nmin_free_mb = 1\n\
                    [connections]\nnew_instances_burst = 5000\nnew_instances_per_app_burst = 5000\n"
                .into(),
        heartbeat_ms: 250,
        election_timeout_min_ms: 1_000,
        election_timeout_max_ms: 2_000,
        write_timeout_ms: 5_000,
        ..Timings::default()
    };
    let mut cluster = Cluster::start_prepared(3, timings, Hosts::default(), |c| {
        let data = c.data_dir_of(3);
        std::fs::create_dir_all(&data).unwrap();
        disk = Some(Tmpfs::mount(&data, 4));
    })
    .await;
    let disk = disk.unwrap();
    // The node on the small disk must follow: if it leads, it restarts
    // (its log kept) and another takes over.
    while cluster.leader().await == 2 {
        cluster.kill(2);
        cluster.spawn(2);
        cluster.wait_serving(2).await;
    }
    let leader = cluster.leader().await;
    let writes = cluster.client(leader);
    // About 4 MiB of registers: all acknowledged by the other two.
    for i in 0..1000 {
        let a = register_big(&writes, &host(i)).await;
        assert_eq!(a.code(), 0, "register {i}: {}", a.text);
    }
    let short = cluster.client(2);
    let refused = short.register("full.app", "sh001", "via-full", "1").await;
    assert_eq!(refused.code(), -503, "{}", refused.text);
    assert!(refused.text.contains("disk full"), "{}", refused.text);
    // It lags, and still answers reads.
    let status = cluster.status(2).await.expect("the full node answers");
    let lead = cluster.status(leader).await.unwrap();
    assert!(
        status["applied_index"].as_u64() < lead["applied_index"].as_u64(),
        "{status} {lead}"
    );
    assert!(!hostnames(&short, "full.app").await.contains(&host(999)));

    disk.grow(64);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut digests = Vec::new();
        for i in 0..3 {
            digests.push(cluster.client(i).get("/admin/digest").await.json());
        }
        let same = |d: &&serde_json::Value| {
            d["digest"] == digests[0]["digest"] && d["applied_index"] == digests[0]["applied_index"]
        };
        if digests.iter().all(|d| same(&d)) {
            assert_eq!(digests[0]["instances"].as_u64(), Some(1000));
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {digests:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        short
            .register("full.app", "sh001", "via-full", "1")
            .await
            .code(),
        0
    );
    cluster.kill(2);
}

#[tokio::test]
async fn with_no_reserve_the_write_whose_flush_fails_is_never_acknowledged() {
    if !root() {
        return;
    }
    // min_free_mb = 0: nothing stops short of the full disk, so the log's
    // own write or flush meets ENOSPC.
    let (small, node) = OnSmallDisk::start(3, 0).await;
    let c = &small.c;
    let (acknowledged, refusal) = small.fill().await;
    assert!(
        refusal.code() == -500 || refusal.code() == -503,
        "{}",
        refusal.text
    );
    let message = refusal.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("No space left on device"), "{message}");
    // The log's storage failed under Raft: the node cannot tell what
    // reached the disk, so its Raft core stops, and the process ends with
    // the cause and a non-zero exit, for its supervisor to restart it.
    let mut node = node;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node runs on with its storage failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(small.config.with_extension("log")).unwrap();
    assert!(
        log.contains("the Raft core stopped") && log.contains("No space left on device"),
        "{log}"
    );
    let acked: BTreeSet<String> = (0..acknowledged).map(host).collect();

    // Space again and a restart: every acknowledged write is there. The
    // write that met the full disk was refused, never acknowledged; its
    // entry may still have reached the disk and apply now, as a write
    // that timed out may.
    drop(node);
    small.disk.grow(32);
    let _node = small.restart().await;
    let after = hostnames(c, "full.app").await;
    let at_most: BTreeSet<String> = (0..=acknowledged).map(host).collect();
    assert!(
        acked.is_subset(&after) && after.is_subset(&at_most),
        "acknowledged {acknowledged}, after the restart {after:?}"
    );
}
