//! Runs a set of services in one process: each is a named task that stops when the shared
//! cancellation token fires; the HTTP routes of all of them share one listener. `railyard
//! dev` and the single-service commands (`railyard planner`, ...) are built from this.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Named service tasks sharing one shutdown.
pub struct Services {
    shutdown: CancellationToken,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl Default for Services {
    fn default() -> Services {
        Services::new()
    }
}

impl Services {
    /// An empty set.
    pub fn new() -> Services {
        Services {
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    /// The token every service stops on.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts `service` as the task `name`.
    pub fn spawn<F>(&mut self, name: &str, service: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.to_owned();
        self.tasks.spawn(async move {
            let result = service.await;
            (name, result)
        });
    }

    /// Follows the event stream into `metrics` (events by type, releases by outcome, step
    /// durations, gate failures: `railyard_http::follow_release_metrics`) as the task
    /// `release-metrics`.
    pub fn spawn_release_metrics(
        &mut self,
        bus: railyard_bus::Bus,
        metrics: railyard_http::Metrics,
    ) {
        let stop = self.shutdown();
        self.spawn("release-metrics", async move {
            railyard_http::follow_release_metrics(bus, metrics, stop)
                .await
                .context("release metrics")
        });
    }

    /// Binds `listen` and serves `router` until shutdown, with each request's socket address
    /// (`railyard_http::serve`); returns the bound address.
    pub async fn serve_http(
        &mut self,
        listen: SocketAddr,
        router: axum::Router,
    ) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| {
                format!("cannot listen on {listen}: is another railyard running? pass --listen")
            })?;
        let addr = listener.local_addr()?;
        let stop = self.shutdown.clone();
        // With the peer address, from which every route takes a request's origin.
        self.spawn("http", async move {
            railyard_http::serve(listener, router, stop.cancelled_owned())
                .await
                .context("http listener")
        });
        Ok(addr)
    }

    /// Fails, naming it, when a service has ended (every service runs until shutdown).
    pub fn check(&mut self) -> anyhow::Result<()> {
        match self.tasks.try_join_next() {
            None => Ok(()),
            Some(done) => Err(ended(done)),
        }
    }

    /// Waits for Ctrl-C, SIGTERM or a service ending, then stops every service and waits for
    /// them. A service that ends on its own (or fails) is an error.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            signal = wait_for_signal() => signal,
            Some(done) = self.tasks.join_next() => Err(ended(done)),
        };
        tracing::info!("shutting down");
        for failure in self.stop_all(None).await {
            tracing::warn!(error = %failure, "service stopped with an error");
        }
        outcome
    }

    /// Stops every service and waits for them, at most `timeout`; what failed while stopping
    /// is the error.
    pub async fn stop(mut self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let failures = self.stop_all(Some(timeout)).await;
        anyhow::ensure!(
            failures.is_empty(),
            "services stopped with errors: {failures:?}"
        );
        Ok(())
    }

    async fn stop_all(&mut self, timeout: Option<std::time::Duration>) -> Vec<String> {
        self.shutdown.cancel();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut failures = Vec::new();
        loop {
            let next = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            failures.push(format!("services did not stop within {timeout:?}"));
                            return failures;
                        }
                    }
                }
                None => self.tasks.join_next().await,
            };
            match next {
                None => return failures,
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((name, Err(error)))) => failures.push(format!("{name}: {error:#}")),
                Some(Err(error)) => failures.push(format!("a service panicked: {error}")),
            }
        }
    }
}

/// The error of a service that ended before shutdown.
fn ended(done: Result<(String, anyhow::Result<()>), tokio::task::JoinError>) -> anyhow::Error {
    match done {
        Ok((name, Ok(()))) => anyhow::anyhow!("service {name} stopped on its own"),
        Ok((name, Err(error))) => error.context(format!("service {name} failed")),
        Err(error) => anyhow::anyhow!("a service panicked: {error}"),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot listen for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

/// A projection's progress hook that counts into `metrics` as the reader `reader`
/// (`railyard_reader_events_total`, `railyard_reader_pending`...).
pub fn reader_progress(metrics: &railyard_http::Metrics, reader: &str) -> railyard_store::Progress {
    let reader = metrics.reader(reader);
    railyard_store::Progress::new(move |applied| {
        reader.handled(applied.deliveries, applied.events, applied.pending)
    })
}
