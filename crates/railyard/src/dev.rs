//! `railyard dev`: every service in one process over one NATS — the embedded one unless
//! `--nats-url` is given — on one HTTP listener. Ctrl-C (or SIGTERM) stops the services
//! first, then drains NATS, then stops the embedded server and reaps it.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::DevArgs;
use crate::stack::Stack;

/// Runs the development stack until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let stack = Stack::start(args.nats_url.as_deref(), &args.data_dir, args.nats_port).await?;
    let served = serve(&args, &stack).await;
    let stopped = stack.stop().await;
    served.and(stopped)
}

async fn serve(args: &DevArgs, stack: &Stack) -> anyhow::Result<()> {
    let bus = &stack.bus;
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another railyard running? pass --listen",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let app = crate::ops::router(bus.clone());

    let mut tasks = tokio::task::JoinSet::new();
    {
        let bus = bus.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            railyard_bus::run_dlq_forwarder(bus, stop.cancelled_owned())
                .await
                .context("dead-letter forwarder stopped")
        });
    }
    {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("http listener stopped")
        });
    }
    // One line a script can wait for.
    println!(
        "railyard dev ready: http://{addr} nats={}{}",
        stack.url,
        stack
            .nats_pid()
            .map(|p| format!(" nats_pid={p}"))
            .unwrap_or_default()
    );

    let outcome = tokio::select! {
        signal = wait_for_signal() => signal,
        Some(done) = tasks.join_next() => {
            done.context("a service panicked")?.and_then(|()| anyhow::bail!("a service stopped unexpectedly"))
        }
    };
    tracing::info!("shutting down");
    shutdown.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done.context("a service panicked").and_then(|r| r) {
            tracing::warn!(error = %format!("{error:#}"), "service stopped with an error");
        }
    }
    outcome
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot listen for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}
