//! [`NatsCluster`]: a JetStream cluster of `nats-server` nodes on loopback, with routes between
//! all of them, distinct server names and stores; nodes can be killed and restarted.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::server::{NatsServer, locate_nats_server};
use crate::wait::{STARTUP_TIMEOUT, wait_for_jetstream_as};

/// How often cluster start is retried when a reserved route port was taken in the meantime.
const START_ATTEMPTS: usize = 3;

/// A JetStream cluster whose nodes are killed and reaped on drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    /// The user the readiness checks connect as, when the nodes require one.
    credentials: Option<(String, String)>,
    /// The CA certificate clients trust, when the nodes require TLS.
    ca: Option<PathBuf>,
}

impl NatsCluster {
    /// Starts `size` nodes (3 for R3 streams) and waits until every node knows a JetStream meta
    /// leader, so JetStream is usable through any of them.
    pub async fn start(size: usize) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(size >= 1, "a cluster needs at least one node");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match NatsCluster::try_start(size).await {
                Ok(cluster) => return Ok(cluster),
                // Route ports are reserved by binding and releasing them; another process may
                // take one before nats-server binds it, and then the cluster never forms (the
                // logs attached to the error say so). Start over with new ports and stores.
                Err(error) => {
                    eprintln!("a {size}-node cluster did not start, trying again: {error:#}");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt was made"))
            .context(format!("cannot start a {size}-node cluster")))
    }

    async fn try_start(size: usize) -> anyhow::Result<NatsCluster> {
        let bin = locate_nats_server()?;
        let route_ports = reserve_ports(size)?;
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(size);
        for (index, route_port) in route_ports.iter().enumerate() {
            let args = vec![
                "--server_name".to_owned(),
                format!("n{index}"),
                "--cluster_name".to_owned(),
                "railyard-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{route_port}"),
                "--routes".to_owned(),
                routes.clone(),
            ];
            let node = NatsServer::start_with(bin.clone(), args, None)
                .await
                .with_context(|| format!("cannot start cluster node n{index}"))?;
            nodes.push(node);
        }
        let cluster = NatsCluster {
            nodes,
            credentials: None,
            ca: None,
        };
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    /// Starts one node per configuration file (`nats-server -c <file>` with `env`, e.g. the
    /// files [`crate::deploy::local_cluster`] writes) and waits, connecting as `credentials`
    /// (a user allowed to use JetStream's API) and trusting the CA certificate `ca` when the
    /// files require TLS, until every node knows a JetStream meta leader.
    pub async fn start_from_configs(
        files: Vec<PathBuf>,
        env: Vec<(String, String)>,
        credentials: Option<(String, String)>,
        ca: Option<PathBuf>,
    ) -> anyhow::Result<NatsCluster> {
        anyhow::ensure!(!files.is_empty(), "a cluster needs at least one node");
        let mut nodes = Vec::with_capacity(files.len());
        for file in files {
            let node = NatsServer::start_from_config(file.clone(), env.clone())
                .await
                .with_context(|| format!("cannot start the node of {}", file.display()))?;
            nodes.push(node);
        }
        let cluster = NatsCluster {
            nodes,
            credentials,
            ca,
        };
        cluster.wait_formed().await?;
        Ok(cluster)
    }

    /// Waits until every node knows a JetStream meta leader; the error carries every node's log.
    async fn wait_formed(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            if let Err(error) = self.wait_ready(node).await {
                let logs = self
                    .nodes
                    .iter()
                    .map(|node| format!("--- {}\n{}", node.url(), node.log_tail()))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(error.context(format!("the cluster did not form; its logs:\n{logs}")));
            }
        }
        Ok(())
    }

    async fn wait_ready(&self, node: &NatsServer) -> anyhow::Result<()> {
        let credentials = self
            .credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()));
        wait_for_jetstream_as(
            &node.url(),
            credentials,
            self.ca.as_deref(),
            STARTUP_TIMEOUT,
        )
        .await
    }

    /// How many nodes it has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's client URL, in node order: `tls://` when the nodes require TLS.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| match self.ca {
                Some(_) => format!("tls://127.0.0.1:{}", node.port()),
                None => node.url(),
            })
            .collect()
    }

    /// The CA certificate the nodes' certificates are signed by, when they require TLS.
    pub fn ca(&self) -> Option<&std::path::Path> {
        self.ca.as_deref()
    }

    /// Every node's client URL joined with commas, as `Bus::connect` accepts it.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// Kills node `index` (SIGKILL); its port and store are kept for [`NatsCluster::restart`].
    pub async fn kill(&mut self, index: usize) {
        self.nodes[index].stop().await;
    }

    /// Brings node `index` back (killing it first if it runs) on the same ports and store, and
    /// waits until it knows the meta leader again.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].restart().await?;
        self.wait_ready(&self.nodes[index]).await
    }
}

/// Picks `count` free loopback ports by binding port 0 and releasing it.
pub(crate) fn reserve_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot reserve loopback ports for cluster routes")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}
