//! One `nats-server` child process: its stderr is drained on a thread (kept as a short log
//! tail for error messages), it counts as started once it logs "Server is ready" (and, for a
//! cluster node, that it listens for routes) and accepts a TCP connection, and it is killed
//! (SIGKILL) and reaped on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

/// How many stderr lines are kept for error messages.
const LOG_TAIL_LINES: usize = 60;

/// A running `nats-server`.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
    client_port: u16,
}

impl ServerProcess {
    /// Spawns `bin args...` and waits (at most `timeout`) until it is ready and accepts
    /// connections. With `routes`, it must also have bound its route port: nats-server logs
    /// "Server is ready" before it binds that port, and exits if the port is taken.
    pub(crate) async fn spawn(
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        timeout: Duration,
        routes: bool,
    ) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!("cannot run {}: check that it is executable", bin.display())
            })?;
        let stderr = child.stderr.take().context("nats-server stderr is piped")?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL_LINES)));
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let drain = {
            let log = Arc::clone(&log);
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
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
            }
        };
        let mut process = ServerProcess {
            child,
            log,
            client_port: 0,
        };
        std::thread::Builder::new()
            .name("nats-server-stderr".to_owned())
            .spawn(drain)
            .context("cannot start the thread that reads nats-server's log")?;

        let deadline = Instant::now() + timeout;
        let mut port = None;
        let (mut ready, mut routing) = (false, !routes);
        while !(ready && routing) {
            let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
                Err(_) => anyhow::bail!(
                    "nats-server did not report ready within {timeout:?}; its log:\n{}",
                    process.log_tail()
                ),
                Ok(None) => {
                    let status = process
                        .child
                        .wait()
                        .map(|status| status.to_string())
                        .unwrap_or_else(|error| error.to_string());
                    anyhow::bail!(
                        "nats-server exited before it was ready ({status}); its log:\n{}",
                        process.log_tail()
                    )
                }
                Ok(Some(line)) => line,
            };
            if let Some(address) = line.split("Listening for client connections on ").nth(1) {
                port = address
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|port| port.parse::<u16>().ok());
            }
            ready |= line.contains("Server is ready");
            routing |= line.contains("Listening for route connections on ");
        }
        let port = port.with_context(|| {
            format!(
                "nats-server did not log its client port; its log:\n{}",
                process.log_tail()
            )
        })?;
        process.client_port = port;
        tokio::time::timeout_at(
            deadline,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "nats-server on port {port} did not accept a connection within {timeout:?}"
            )
        })?
        .with_context(|| format!("nats-server on port {port} refuses connections"))?;
        Ok(process)
    }

    /// The client port it listens on.
    pub(crate) fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines it logged.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL: JetStream has already written every acknowledged message to its files, so
        // this is the harshest restart a test can ask for. The wait reaps the process; after
        // SIGKILL it returns at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
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
