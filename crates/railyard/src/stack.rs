//! The NATS side every in-process command shares: the embedded `nats-server` (unless a URL
//! is given), a connected [`Bus`] with the topology in place, and an orderly teardown.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use railyard_bus::{Bus, BusConfig};

use crate::embedded_nats::EmbeddedNats;

/// How long the embedded NATS may take to start and to stop.
const NATS_STARTUP: Duration = Duration::from_secs(20);
const NATS_GRACE: Duration = Duration::from_secs(10);

/// Connects to NATS at `url` and makes sure Railyard's streams and buckets exist.
pub async fn connect(url: &str) -> anyhow::Result<Bus> {
    let bus = Bus::connect(url, BusConfig::default())
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    bus.ensure_topology()
        .await
        .context("cannot create Railyard's streams and buckets")?;
    Ok(bus)
}

/// A connected bus, with the embedded server it runs on when there is one.
pub struct Stack {
    /// The bus, topology ensured.
    pub bus: Bus,
    /// The NATS URL in use.
    pub url: String,
    embedded: Option<EmbeddedNats>,
}

impl Stack {
    /// Connects to `nats_url`, or starts an embedded server storing under `data_dir`.
    pub async fn start(
        nats_url: Option<&str>,
        data_dir: &Path,
        nats_port: u16,
    ) -> anyhow::Result<Stack> {
        let embedded = match nats_url {
            Some(_) => None,
            None => Some(EmbeddedNats::start(data_dir, nats_port, NATS_STARTUP).await?),
        };
        let url = match (nats_url, &embedded) {
            (Some(url), _) => url.to_owned(),
            (None, Some(nats)) => nats.url().to_owned(),
            (None, None) => unreachable!("an embedded server is started when no url is given"),
        };
        let connected = connect(&url).await;
        match connected {
            Ok(bus) => Ok(Stack { bus, url, embedded }),
            Err(error) => {
                if let Some(nats) = embedded {
                    nats.shutdown(NATS_GRACE).await?;
                }
                Err(error)
            }
        }
    }

    /// The embedded server's process id, when there is one.
    pub fn nats_pid(&self) -> Option<u32> {
        self.embedded.as_ref().map(EmbeddedNats::pid)
    }

    /// Drains the connection (everything published is flushed), then stops and reaps the
    /// embedded server.
    pub async fn stop(self) -> anyhow::Result<()> {
        let closed = self
            .bus
            .close()
            .await
            .context("cannot flush and close the NATS connection");
        if let Some(nats) = self.embedded {
            nats.shutdown(NATS_GRACE).await?;
        }
        closed
    }
}
