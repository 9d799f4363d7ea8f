//! Settings as an operator gives them to the `discovery` binary: every key
//! of the file by `DISCOVERY_<SECTION>_<KEY>` or `--set section.key=value`,
//! `--print-config` listing each with its source, a value that does not
//! read refused naming the variable, an unknown `DISCOVERY_*` variable
//! warned of at start.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, serving, Client};

#[test]
fn print_config_shows_each_setting_with_its_source_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "[raft]\nheartbeat_ms = 40\n").unwrap();
    let out = common::single_node(dir.path(), free_port())
        .arg("--config")
        .arg(&file)
        .args(["--set", "limits.entry_bytes=70000", "--print-config"])
        .env("DISCOVERY_CONNECTIONS_MAX_CONNECTIONS", "900")
        .env("DISCOVERY_ADMIN_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        format!("heartbeat_ms = 40  # file {}", file.display()),
        "max_connections = 900  # env DISCOVERY_CONNECTIONS_MAX_CONNECTIONS".to_string(),
        "entry_bytes = 70000  # --set limits.entry_bytes".to_string(),
        "insecure_peers = true  # flag".to_string(),
        "hold_ms = 30000  # default".to_string(),
        "admin_token = \"(set, not shown)\"  # flag".to_string(),
    ] {
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains("s3cret-token"), "{text}");
}

#[test]
fn a_value_that_does_not_read_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::single_node(dir.path(), free_port())
        .env("DISCOVERY_RAFT_HEARTBEAT_MS", "fast")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("DISCOVERY_RAFT_HEARTBEAT_MS")
            && said.contains("\"fast\" is not a whole number"),
        "{said}"
    );
    let out = common::single_node(dir.path(), free_port())
        .args(["--set", "raft.heartbeat=5"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("no setting raft.heartbeat"), "{said}");
}

/// A setting no flag had before, given by its variable, takes effect (a
/// write from outside `allow_write_from` is refused), and a mistyped
/// variable is warned of at start, with the name it was likely meant as.
#[tokio::test]
async fn a_variable_takes_effect_and_an_unknown_one_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("log");
    let mut child = common::single_node(&dir.path().join("data"), port)
        .env("DISCOVERY_SECURITY_ALLOW_WRITE_FROM", "10.9.0.0/16")
        .env("DISCOVERY_RAFT_HEARTBEET_MS", "100")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let c = Client {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    serving(&c).await;
    let refused = c.register("env.app", "sh001", "h1", "1").await;
    assert_eq!(refused.code(), -403, "{}", refused.text);
    let deadline = Instant::now() + Duration::from_secs(5);
    let warned = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("DISCOVERY_RAFT_HEARTBEET_MS is not a setting")
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warned.contains("WARN")
            && warned.contains("DISCOVERY_RAFT_HEARTBEET_MS is not a setting")
            && warned.contains("did you mean DISCOVERY_RAFT_HEARTBEAT_MS"),
        "{warned}"
    );
}
