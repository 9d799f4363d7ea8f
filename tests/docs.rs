//! The documented steps an operator runs on one machine, run as written:
//! every ```sh block of README.md and docs/operations.md preceded by
//! `<!-- docs-test N -->` is put into one bash script, in the order of N,
//! and run in a scratch directory holding the repository's `configs/`, with
//! `target/release/discovery` and `discoveryctl` (and the same on `PATH`)
//! being this build's binaries. A command that fails, or a `curl` whose
//! answer carries a `code` other than 0, fails the test: a step that stops
//! doing what the docs say fails CI. `cargo build --release` is the one
//! step not run (the binaries are this build's).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The marked blocks of `markdown`, with their order keys.
fn marked_blocks(markdown: &str, from: &str) -> Vec<(u32, String)> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix("<!-- docs-test ") else {
            continue;
        };
        let key: u32 = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{from}: a docs-test marker without a number: {line}"));
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "{from}: marker {key} is not before a sh block"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        blocks.push((key, body.join("\n")));
    }
    blocks
}

/// Runs before the blocks: stop at the first failure, check every curl's
/// answer, stop every node started in the background at the end.
const PRELUDE: &str = r#"set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
cargo() {
  [ "$1" = build ] && return 0
  echo "docs test: cargo $* is not run here" >&2; return 1
}
curl() {
  local out
  out=$(command curl --max-time 40 "$@")
  printf '%s\n' "$out"
  case "$out" in
    *'"code":'*)
      case "$out" in
        *'"code":0,'*|*'"code":0}'*) ;;
        *) echo "docs test: curl $* answered $out" >&2; return 1 ;;
      esac ;;
  esac
}
"#;

fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap();
}

#[test]
fn the_documented_one_machine_steps_do_what_the_docs_say() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut blocks = Vec::new();
    for doc in ["README.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(repo.join(doc)).unwrap();
        blocks.extend(marked_blocks(&text, doc));
    }
    blocks.sort_by_key(|(key, _)| *key);
    let keys: Vec<u32> = blocks.iter().map(|(k, _)| *k).collect();
    // The cluster, the walk-through, a fourth node, a backup: a marker
    // lost in an edit is noticed.
    for wanted in [10, 21, 22, 23, 24, 25, 40, 50] {
        assert!(
            keys.contains(&wanted),
            "docs-test {wanted} is gone: {keys:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    common::copy_dir(&repo.join("configs"), &work.join("configs"));
    let bin = work.join("target/release");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["discovery", "discoveryctl"] {
        let built = match name {
            "discovery" => env!("CARGO_BIN_EXE_discovery"),
            _ => env!("CARGO_BIN_EXE_discoveryctl"),
        };
        link(Path::new(built), &bin.join(name));
    }
    let mut script = PRELUDE.to_string();
    for (key, body) in &blocks {
        script.push_str(&format!("echo '### docs-test {key}' >&2\n{body}\n"));
    }
    // What the steps leave behind, for the checks below.
    script.push_str("ls registry.json\n");
    std::fs::write(work.join("steps.sh"), &script).unwrap();

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut run = Command::new("bash");
    run.arg("steps.sh")
        .current_dir(work)
        .env("PATH", path)
        .env_remove("DISCOVERY_ADMIN_TOKEN")
        .env_remove("DISCOVERY_NODE")
        .env("RUST_LOG", "warn");
    let out = run.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a documented step failed\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // The fourth node took part: listed as a node, and the backup holds
    // the walk-through's instance.
    assert!(stdout.contains("127.0.0.1:7174"), "{stdout}");
    let backup = std::fs::read_to_string(work.join("registry.json")).unwrap();
    assert!(backup.contains("demo.app"), "{backup}");
}
