//! Running the host's tools: the docker CLI, and nsenter for commands inside
//! a container's network namespace (a scratch image has no tools of its
//! own).

use anyhow::Context;
use tokio::process::Command;

/// Runs `program args…` and returns its trimmed stdout; fails with its
/// stderr when it exits non-zero.
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("starting {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    run("docker", args).await
}

/// One field of `docker inspect`, as a Go template gives it.
pub async fn inspect(container: &str, template: &str) -> anyhow::Result<String> {
    docker(&["inspect", "--format", template, container]).await
}

/// The host pid of the container's main process (0 when it is stopped).
pub async fn pid(container: &str) -> anyhow::Result<u32> {
    Ok(inspect(container, "{{.State.Pid}}").await?.parse()?)
}

/// Runs a host program inside the container's network namespace.
pub async fn in_netns(container: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let pid = pid(container).await?;
    anyhow::ensure!(pid > 0, "container {container} is not running");
    let target = pid.to_string();
    let mut full = vec!["-t", target.as_str(), "-n", program];
    full.extend_from_slice(args);
    run("nsenter", &full).await
}

/// Whether this process may enter namespaces and change cgroups.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
