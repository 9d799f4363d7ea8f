//! A full disk: writes are refused with a message naming the cause, reads
//! keep working, nothing acknowledged is lost, and once there is space
//! again a restarted node takes writes. It mounts a small tmpfs, which
//! needs root: CI runs as root; elsewhere it says it was skipped.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use common::{free_port, hostnames, Client};

fn host(i: usize) -> String {
    format!("h{i}")
}

/// A tmpfs of `mb` MiB on `dir`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, mb: u32) -> Self {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }

    fn grow(&self, mb: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path, port: u16, peer: u16) -> Node {
    Node(
        Command::new(env!("CARGO_BIN_EXE_discovery"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--advertise", &format!("127.0.0.1:{port}")])
            .args(["--peer-listen", &format!("127.0.0.1:{peer}")])
            .arg("--insecure-peers")
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("discovery starts"),
    )
}

async fn serving(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = c.http.get(format!("{}/admin/status", c.base)).send().await {
            if r.json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["protected"] == false)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never served");
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing_acknowledged() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(dir.path(), 3);
    let data = dir.path().join("data");
    let (port, peer) = (free_port(), free_port());
    let c = Client {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let node = start(&data, port, peer);
    serving(&c).await;

    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(4000));
    let mut acknowledged = 0;
    let refusal = loop {
        let a = c
            .post(
                "/discovery/register",
                &[
                    ("zone", "sh001"),
                    ("env", "dev"),
                    ("appid", "full.app"),
                    ("hostname", &host(acknowledged)),
                    ("status", "1"),
                    ("addrs", "http://10.0.0.1:80"),
                    ("metadata", &big),
                ],
            )
            .await;
        if a.code() != 0 {
            break a;
        }
        acknowledged += 1;
        assert!(acknowledged < 5000, "3 MiB never filled");
    };
    assert!(acknowledged > 10, "only {acknowledged} fitted");
    let message = refusal.json()["message"].as_str().unwrap().to_string();
    assert!(
        refusal.code() == -500 || refusal.code() == -503,
        "{}",
        refusal.text
    );
    assert!(message.contains("No space left on device"), "{message}");

    // Reads go on, with everything acknowledged.
    assert_eq!(
        hostnames(&c, "full.app").await,
        (0..acknowledged).map(host).collect()
    );
    let again = c.register("full.app", "sh001", "more", "1").await;
    assert_ne!(again.code(), 0, "a write went through on a full disk");

    // Space again; a restarted node has every acknowledged write and takes
    // new ones.
    drop(node);
    disk.grow(32);
    let _node = start(&data, port, peer);
    serving(&c).await;
    // Every acknowledged write is there. The write that met the full disk
    // was refused, not acknowledged: its entry may have reached the disk
    // all the same and apply now, as a write that timed out may.
    let after = hostnames(&c, "full.app").await;
    let acked: BTreeSet<String> = (0..acknowledged).map(host).collect();
    let at_most: BTreeSet<String> = (0..=acknowledged).map(host).collect();
    assert!(
        acked.is_subset(&after) && after.is_subset(&at_most),
        "acknowledged {acknowledged}, after the restart {after:?}"
    );
    assert_eq!(c.register("full.app", "sh001", "more", "1").await.code(), 0);
}
