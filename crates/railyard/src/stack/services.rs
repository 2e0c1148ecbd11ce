//! Runs a set of services in one process: each is a named task that stops when the shared
//! cancellation token fires; the HTTP routes of all of them share one listener. `railyard
//! dev` and the single-service commands (`railyard planner`, ...) are built from this.

use std::future::Future;
use std::net::SocketAddr;

use std::time::Duration;

use anyhow::Context;
use railyard_bus::{AppendError, BusError};
use railyard_core::{SharedClock, SystemClock};
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

    /// Starts the service `make` builds as the task `name`, and builds and starts it again
    /// after a pause on `clock` (100 ms, doubling to 5 s) when it fails because NATS failed or
    /// did not answer ([`transient`]: a node lost, a leader being elected). Every service
    /// picks up from the stream and its own store, as after a crash, so starting it again is
    /// what a supervisor would do, without losing the process. Any other failure, or a stop
    /// on its own, ends the task as with [`Services::spawn`].
    pub fn spawn_restarting<M, F>(&mut self, name: &str, clock: SharedClock, mut make: M)
    where
        M: FnMut() -> F + Send + 'static,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = self.shutdown.clone();
        let service = name.to_owned();
        self.spawn(name, async move {
            let mut pause = Duration::from_millis(100);
            loop {
                match make().await {
                    Err(error) if transient(&error) && !stop.is_cancelled() => {
                        tracing::warn!(
                            service,
                            error = %format!("{error:#}"),
                            ?pause,
                            "service failed on nats; starting it again after a pause"
                        );
                        tokio::select! {
                            () = stop.cancelled() => return Ok(()),
                            () = clock.sleep(pause) => {}
                        }
                        pause = (pause * 2).min(MAX_RESTART_PAUSE);
                    }
                    ended => return ended,
                }
            }
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
        self.spawn_restarting("release-metrics", SystemClock::shared(), move || {
            let (bus, metrics, stop) = (bus.clone(), metrics.clone(), stop.clone());
            async move {
                railyard_http::follow_release_metrics(bus, metrics, stop)
                    .await
                    .context("release metrics")
            }
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
/// The longest pause before a service that failed on NATS starts again.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(5);

/// Whether `error` is NATS failing or not answering somewhere in its chain, which waiting can
/// mend ([`BusError::is_transient`]). Service errors that wrap the bus's error transparently
/// hide it from the chain, so each says itself (`is_transient`) and is found here by type.
pub fn transient(error: &anyhow::Error) -> bool {
    use railyard_feedback::FeedbackError;
    use railyard_notify::NotifyError;
    use railyard_promoter::PromoterError;
    use railyard_store::RunError;
    let run = |error: &RunError| matches!(error, RunError::Bus(bus) if bus.is_transient());
    error.chain().any(|cause| {
        if let Some(error) = cause.downcast_ref::<BusError>() {
            error.is_transient()
        } else if let Some(error) = cause.downcast_ref::<AppendError>() {
            error.is_transient()
        } else if let Some(error) = cause.downcast_ref::<RunError>() {
            run(error)
        } else if let Some(error) = cause.downcast_ref::<NotifyError>() {
            error.is_transient()
        } else if let Some(error) = cause.downcast_ref::<FeedbackError>() {
            error.is_transient()
        } else if let Some(error) = cause.downcast_ref::<PromoterError>() {
            error.is_transient()
        } else {
            false
        }
    })
}

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use railyard_core::ManualClock;

    use super::*;

    fn nats_timeout() -> anyhow::Error {
        anyhow::Error::new(BusError::Timeout {
            operation: "reading handoff notify".to_owned(),
            timeout: Duration::from_secs(10),
        })
        .context("notify")
    }

    #[tokio::test]
    async fn a_service_that_fails_on_nats_starts_again_after_a_pause_and_others_end_it() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let mut services = Services::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        // Fails on NATS the first time, then with an error waiting cannot mend.
        services.spawn_restarting("notify", clock.shared(), move || {
            let start = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if start == 0 {
                    Err(nats_timeout())
                } else {
                    Err(anyhow::anyhow!("the ledger is corrupt"))
                }
            }
        });
        clock.wait_for_sleepers(1).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            1,
            "paused before the restart"
        );
        services.check().expect("still running while it pauses");
        clock.advance(Duration::from_millis(100));
        let done = services.tasks.join_next().await.expect("the task ends");
        let error = ended(done);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(
            format!("{error:#}").contains("the ledger is corrupt"),
            "{error:#}"
        );
    }

    #[test]
    fn only_nats_failures_count_as_transient() {
        assert!(transient(&nats_timeout()));
        let lost = anyhow::Error::new(BusError::LeaseLost {
            key: "planner".to_owned(),
            holder: "planner-1".to_owned(),
        });
        assert!(!transient(&lost));
        assert!(!transient(&anyhow::anyhow!("permission denied")));
        let promoter =
            anyhow::Error::new(railyard_promoter::PromoterError::Bus(nats_timeout_bus()))
                .context("promoter");
        assert!(transient(&promoter), "hidden behind a transparent variant");
    }

    fn nats_timeout_bus() -> BusError {
        BusError::Timeout {
            operation: "loading release r1".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}
