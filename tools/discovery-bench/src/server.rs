//! Starting and stopping the `discovery` server under test, in a data
//! directory of its own (from flags, or from a configuration file as a
//! cluster member), and reading its memory and CPU use.

use std::ffi::OsString;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::discovery;
use crate::peers::{self, PeerMode, Pki, Ports};

/// How long a fresh server may take to become a serving leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a signalled server may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary directory holding the server's data and log; removed on
/// drop unless `DISCOVERY_BENCH_KEEP` is set (to read the servers' logs
/// after a run).
pub struct Workdir {
    root: PathBuf,
}

impl Workdir {
    pub fn new() -> Result<Workdir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "discovery-bench-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Workdir { root })
    }

    /// The directory itself, for callers that lay out several servers in it.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::env::var_os("DISCOVERY_BENCH_KEEP").is_some() {
            eprintln!("# kept {}", self.root.display());
            return;
        }
        // A server killed a moment ago may still be closing files: retry.
        for _ in 0..20 {
            match std::fs::remove_dir_all(&self.root) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return,
            }
        }
    }
}

/// A free loopback port, found by binding port 0 and letting it go.
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The per-address shares, as large as the global caps (a limit of 0
/// would mean "a quarter"): what a bench's one-address load runs with.
pub const PER_ADDRESS_OFF: [(&str, &str); 4] = [
    ("DISCOVERY_MAX_HELD_POLLS_PER_CLIENT", "1000000"),
    ("DISCOVERY_MAX_CONNECTIONS_PER_CLIENT", "1000000"),
    ("DISCOVERY_NEW_INSTANCES_PER_SEC", "100000000"),
    ("DISCOVERY_NEW_INSTANCES_PER_APP_PER_SEC", "100000000"),
];

/// How to start the server: which binary, and the peer setup its
/// configuration gets.
#[derive(Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub poll_hold_ms: u64,
    pub peers: PeerMode,
    /// Which per-address shares the servers keep.
    pub shares: Shares,
}

/// The per-address shares a bench's servers keep: every load of the bench
/// comes from this one machine, one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shares {
    /// All as large as the global caps ([`PER_ADDRESS_OFF`]): what every
    /// bench but `hostile` runs with.
    Off,
    /// The product's, but for the pace of new instances (so that the bench
    /// can fill a registry from one address).
    PaceOff,
    /// The product's.
    On,
}

impl Launch {
    /// The server and its peer setup, for result lines.
    pub fn describe(&self) -> String {
        format!("{}, {}", self.binary.display(), self.peers.describe())
    }
}

/// A running server; killed when dropped, so every exit path of a
/// subcommand (errors included) stops it.
pub struct Server {
    child: Child,
    pid: u32,
    /// The client port.
    pub addr: SocketAddr,
    /// The peer port (the client port under the one-port config).
    pub peer: SocketAddr,
    log: PathBuf,
}

/// How a server is stopped.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }
}

impl Server {
    /// Starts a server on `ports` with its data (and, with peer TLS, its
    /// certificates) in `dir`, and returns without waiting for it to serve.
    pub fn spawn(launch: &Launch, dir: &Workdir, ports: Ports) -> Result<Server> {
        Server::spawn_env(launch, dir, ports, &[])
    }

    /// [`Server::spawn`], with `env` set on top of the bench's environment
    /// (a `DISCOVERY_*` setting, say).
    pub fn spawn_env(
        launch: &Launch,
        dir: &Workdir,
        ports: Ports,
        env: &[(String, String)],
    ) -> Result<Server> {
        let addr = ports.client;
        let tls = match launch.peers {
            PeerMode::Tls => Some(Pki::open_or_new(&dir.root.join("certs"))?.issue(
                "node1",
                crate::discovery::ZONE,
                1,
                &[],
            )?),
            _ => None,
        };
        let mut args: Vec<OsString> = vec![
            "--node-id".into(),
            "1".into(),
            "--data-dir".into(),
            dir.data().into(),
            "--listen".into(),
            addr.to_string().into(),
            "--advertise".into(),
            addr.to_string().into(),
            "--poll-hold-ms".into(),
            launch.poll_hold_ms.to_string().into(),
        ];
        args.extend(
            peers::single_flags(launch.peers, ports, tls.as_ref())?
                .into_iter()
                .map(OsString::from),
        );
        Server::spawn_args_env(launch, &args, &dir.log(), ports, env)
    }

    /// Starts a server from the configuration file `config`, which makes it
    /// listen on `ports`, logging to `log`; returns without waiting for it.
    pub fn spawn_config(
        launch: &Launch,
        config: &Path,
        log: &Path,
        ports: Ports,
        env: &[(String, String)],
    ) -> Result<Server> {
        let args: Vec<OsString> = vec!["--config".into(), config.into()];
        Server::spawn_args_env(launch, &args, log, ports, env)
    }

    /// Starts the bare reference server ([`crate::bare`]): `launch.binary`
    /// is the bench itself.
    pub fn spawn_bare(launch: &Launch, dir: &Workdir, ports: Ports) -> Result<Server> {
        let args: Vec<OsString> = vec![
            "bare-server".into(),
            "--listen".into(),
            ports.client.to_string().into(),
        ];
        Server::spawn_args(launch, &args, &dir.log(), ports)
    }

    fn spawn_args(launch: &Launch, args: &[OsString], log: &Path, ports: Ports) -> Result<Server> {
        Server::spawn_args_env(launch, args, log, ports, &[])
    }

    /// Starts `launch.binary` with `args`, and `env` set on top of the
    /// bench's environment (`FAILPOINTS`, say).
    fn spawn_args_env(
        launch: &Launch,
        args: &[OsString],
        log: &Path,
        ports: Ports,
        env: &[(String, String)],
    ) -> Result<Server> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(&launch.binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        // Settings in the environment would change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DISCOVERY_") {
                cmd.env_remove(key);
            }
        }
        // Every load comes from this one machine, one address: the
        // per-address shares (which a build before them ignores) would
        // measure the limit, not the server.
        let off = match launch.shares {
            Shares::Off => &PER_ADDRESS_OFF[..],
            Shares::PaceOff => &PER_ADDRESS_OFF[2..],
            Shares::On => &[],
        };
        for (key, value) in off {
            cmd.env(key, value);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        // It makes the server die with the bench even if the bench itself is
        // killed, so no server outlives a run.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        Ok(Server {
            child,
            pid,
            addr: ports.client,
            peer: ports.peer,
            log: log.to_path_buf(),
        })
    }

    /// Where it listens, to restart it on the same ports.
    pub fn ports(&self) -> Ports {
        Ports {
            client: self.addr,
            peer: self.peer,
        }
    }

    /// Starts a server on fresh ports and waits until it leads and serves.
    pub async fn start(launch: &Launch, dir: &Workdir) -> Result<Server> {
        let mut server = Server::spawn(launch, dir, Ports::free(launch.peers)?)?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits until `/admin/status` reports a leader out of protection.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(s) = discovery::status(self.addr).await {
                if s.state == "Leader" && !s.protected {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server did not serve within {READY_TIMEOUT:?}{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fails if the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited with {status}{}", self.log_tail());
        }
        Ok(())
    }

    /// The server's resident memory (VmRSS), in bytes.
    pub fn rss(&self) -> Result<u64> {
        self.status_kb("VmRSS:")
    }

    /// The most the server has been resident since it started (VmHWM, the
    /// kernel's high-water mark), in bytes: what a memory limit must allow.
    pub fn peak(&self) -> Result<u64> {
        self.status_kb("VmHWM:")
    }

    fn status_kb(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kb: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))?;
        Ok(kb * 1024)
    }

    /// CPU time (user and system) the server has used so far.
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn cpu_time(&self) -> Result<Duration> {
        crate::cpu::process_time(self.pid)
    }

    /// User and system CPU time used so far, apart.
    pub fn cpu_times(&self) -> Result<(Duration, Duration)> {
        crate::cpu::process_times(self.pid)
    }

    /// Sends `signal` and waits for the process to exit; returns how long
    /// that took.
    pub async fn stop(mut self, signal: Signal) -> Result<Duration> {
        let start = Instant::now();
        let pid = i32::try_from(self.pid)?;
        // SAFETY: kill has no memory effects; the pid is our own child, not
        // yet reaped (we hold its handle), so it cannot have been reused.
        if unsafe { libc::kill(pid, signal.number()) } == -1 {
            return Err(io::Error::last_os_error()).context("signalling the server");
        }
        match tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(start.elapsed())
            }
            Err(_) => bail!(
                "the server did not exit within {EXIT_TIMEOUT:?} of {}",
                signal.name()
            ),
        }
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 20)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    if from == all.len() {
        return String::new();
    }
    format!(
        "; last lines of {}:\n{}",
        path.display(),
        all[from..].join("\n")
    )
}
