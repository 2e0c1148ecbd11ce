//! The embedded development NATS: `railyard dev` without `--nats-url` starts `nats-server`
//! with JetStream as a child process in its own process group (so a terminal's Ctrl-C
//! reaches only Railyard, which then shuts the server down last, after every service has
//! flushed), and reaps it on shutdown. Finding, starting and stopping the process is
//! `railyard-nats-server`'s, the launcher the testkit uses too.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use railyard_nats_server::{NatsProcess, ServerCommand};

/// A running `nats-server` child, killed and reaped if dropped without [`EmbeddedNats::shutdown`].
pub struct EmbeddedNats {
    process: NatsProcess,
}

impl EmbeddedNats {
    /// Starts `nats-server` with JetStream storing under `data_dir/nats`, on `port`
    /// (0 = any free port), and waits until it listens.
    pub async fn start(
        data_dir: &Path,
        port: u16,
        startup_timeout: Duration,
    ) -> anyhow::Result<EmbeddedNats> {
        let here = std::env::current_dir().unwrap_or_else(|_| ".".into());
        let binary = railyard_nats_server::locate(&here)
            .context("no nats-server to embed (pass --nats-url to use a running one)")?;
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        let port_arg = if port == 0 {
            "-1".to_owned()
        } else {
            port.to_string()
        };
        let process = ServerCommand::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg])
            .args(["-n", "railyard-dev"])
            .arg("-sd")
            .arg(&store)
            .own_process_group()
            .start(startup_timeout)
            .await?;
        tracing::info!(url = %process.url(), pid = process.pid(), store = %store.display(), "embedded nats-server started");
        Ok(EmbeddedNats { process })
    }

    /// The client URL.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Asks the server to stop (SIGTERM: JetStream flushes and closes its store), waits up
    /// to `grace`, then kills it; the child is reaped either way.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        let status = self.process.shutdown(grace).await?;
        tracing::info!(%status, "embedded nats-server stopped");
        Ok(())
    }
}
