//! CPU time of a process, from `/proc/<pid>/stat`: the delta over a window
//! divided by the window is the share of one core it used.

use std::time::Duration;

use anyhow::{Context, Result};

/// User plus system CPU time process `pid` has used so far.
pub fn process_time(pid: u32) -> Result<Duration> {
    let (user, system) = process_times(pid)?;
    Ok(user + system)
}

/// User and system CPU time process `pid` has used so far, apart.
pub fn process_times(pid: u32) -> Result<(Duration, Duration)> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces: count fields after it.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("no command name in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {} in {path}", i + 3))
    };
    let (user, system) = (ticks(11)?, ticks(12)?);
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .context("sysconf(_SC_CLK_TCK)")?;
    let time = |t: u64| Duration::from_nanos(t * 1_000_000_000 / per_second);
    Ok((time(user), time(system)))
}

/// This bench's own CPU time so far.
pub fn own_time() -> Result<Duration> {
    process_time(std::process::id())
}

/// CPU used over a wall-clock span, as a percentage of one core.
pub fn percent(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = own_time().unwrap();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(own_time().unwrap() > before);
        assert_eq!(
            percent(Duration::from_millis(250), Duration::from_secs(1)),
            25.0
        );
    }
}
