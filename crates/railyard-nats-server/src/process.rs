//! One `nats-server` child: [`ServerCommand`] spawns it and waits until it logs "Server is
//! ready" (for a cluster node, also that it listens for routes) and accepts a TCP connection;
//! a thread drains its log (kept as a short tail for error messages, and traced at `debug`
//! under the target `nats_server`); [`NatsProcess::shutdown`] stops it with SIGTERM and a
//! grace period, and dropping it kills (SIGKILL) and reaps it.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

/// How many log lines are kept for error messages.
const LOG_TAIL_LINES: usize = 60;

/// What nats-server logs once it serves clients, followed by the address.
const CLIENT_LISTENING: &str = "Listening for client connections on ";

/// How to start `nats-server`: its binary, arguments and environment.
#[derive(Debug)]
pub struct ServerCommand {
    bin: PathBuf,
    command: Command,
    routes: bool,
}

/// A running `nats-server`, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct NatsProcess {
    /// `None` once [`NatsProcess::shutdown`] took it.
    child: Option<Child>,
    pid: u32,
    address: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerCommand {
    /// `bin` with no arguments yet.
    pub fn new(bin: impl AsRef<Path>) -> ServerCommand {
        let bin = bin.as_ref().to_path_buf();
        ServerCommand {
            command: Command::new(&bin),
            bin,
            routes: false,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> ServerCommand {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> ServerCommand {
        self.command.args(args);
        self
    }

    /// Adds environment variables (e.g. the passwords a configuration file reads).
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        envs: impl IntoIterator<Item = (K, V)>,
    ) -> ServerCommand {
        self.command.envs(envs);
        self
    }

    /// Runs the server in its own process group, so a terminal's Ctrl-C reaches only its
    /// parent, which then stops it when it is done with it.
    pub fn own_process_group(mut self) -> ServerCommand {
        self.command.process_group(0);
        self
    }

    /// Counts the server as ready only once it also listens for routes (a cluster node):
    /// nats-server says "Server is ready" before it binds its route port, and exits if that
    /// port is taken.
    pub fn wait_for_routes(mut self, routes: bool) -> ServerCommand {
        self.routes = routes;
        self
    }

    /// Spawns the server and waits, at most `timeout`, until it is ready and accepts a
    /// connection. If it exits first or takes too long, the error carries what it logged.
    pub async fn start(mut self, timeout: Duration) -> anyhow::Result<NatsProcess> {
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run {}: check that it is executable",
                    self.bin.display()
                )
            })?;
        let stderr = child.stderr.take().context("nats-server stderr is piped")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let mut process = NatsProcess {
            pid: child.id(),
            child: Some(child),
            address: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            log: Arc::clone(&log),
        };
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("nats-server-log".to_owned())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    tracing::debug!(target: "nats_server", "{line}");
                    {
                        let mut log = log.lock().unwrap_or_else(|poison| poison.into_inner());
                        if log.len() == LOG_TAIL_LINES {
                            log.pop_front();
                        }
                        log.push_back(line.clone());
                    }
                    // Nobody listens once the server is up; the tail is still kept.
                    let _ = lines_tx.send(line);
                }
            })
            .context("cannot start the thread that reads nats-server's log")?;

        let deadline = Instant::now() + timeout;
        let mut address = None;
        let (mut ready, mut routing) = (false, !self.routes);
        while !(ready && routing) {
            let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
                Err(_) => anyhow::bail!(
                    "nats-server did not report ready within {timeout:?}; its log:\n{}",
                    process.log_tail()
                ),
                // Its log ended: it exited.
                Ok(None) => {
                    let status = match process.child.as_mut().map(Child::wait) {
                        Some(Ok(status)) => status.to_string(),
                        Some(Err(error)) => error.to_string(),
                        None => "reaped".to_owned(),
                    };
                    anyhow::bail!(
                        "nats-server exited before it was ready ({status}); its log:\n{}",
                        process.log_tail()
                    )
                }
                Ok(Some(line)) => line,
            };
            if let Some(said) = line.split(CLIENT_LISTENING).nth(1) {
                address = said.trim().parse::<SocketAddr>().ok();
            }
            ready |= line.contains("Server is ready");
            routing |= line.contains("Listening for route connections on ");
        }
        let mut address = address.with_context(|| {
            format!(
                "nats-server did not log its client address; its log:\n{}",
                process.log_tail()
            )
        })?;
        if address.ip().is_unspecified() {
            address.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        process.address = address;
        tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "nats-server at {address} did not accept a connection within {timeout:?}"
                )
            })?
            .with_context(|| format!("nats-server at {address} refuses connections"))?;
        Ok(process)
    }
}

impl NatsProcess {
    /// The address it serves clients on (loopback when it listens on every address).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `nats://<address>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// The client port it listens on.
    pub fn client_port(&self) -> u16 {
        self.address.port()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines it logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Asks the server to stop (SIGTERM: JetStream flushes and closes its store), waits up to
    /// `grace`, then kills it (SIGKILL); it is reaped either way.
    pub async fn shutdown(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            anyhow::bail!("nats-server {} was already reaped", self.pid);
        };
        let pid = Pid::from_raw(i32::try_from(self.pid).context("pid out of range")?);
        // The child is not reaped before the wait below returns, so `pid` stays its own.
        let _ = kill(pid, Signal::SIGTERM);
        let mut reaped = tokio::task::spawn_blocking(move || child.wait());
        let status = match tokio::time::timeout(grace, &mut reaped).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    ?grace,
                    "nats-server did not stop in time; killing it"
                );
                let _ = kill(pid, Signal::SIGKILL);
                reaped.await
            }
        };
        status
            .context("the task reaping nats-server failed")?
            .with_context(|| format!("cannot reap nats-server {}", self.pid))
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        // SIGKILL: JetStream has already written every acknowledged message to its files, so
        // this is the harshest restart a test can ask for. The wait reaps the process; after
        // SIGKILL it returns at once.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether process `pid` runs: a reaped process has no `/proc` entry, and a zombie waiting to
/// be reaped (state `Z`) does not run either.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split_whitespace()
                .nth(2)
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}
