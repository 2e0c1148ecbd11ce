//! Serving a stand-in (Slack, health endpoints, an HTTP API a test plays) on `127.0.0.1:0`
//! for as long as the test holds the handle.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::oneshot;

/// A stand-in being served; dropping it stops the server.
#[derive(Debug)]
pub struct Served {
    /// `http://127.0.0.1:<port>`, plus whatever path the stand-in appends.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Serves `router` on a free loopback port (with each request's peer address, as Railyard's
/// own listeners do) until the returned [`Served`] is dropped.
pub async fn serve(router: axum::Router) -> anyhow::Result<Served> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a stand-in on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await;
        if let Err(error) = served {
            eprintln!("stand-in on {addr} failed: {error}");
        }
    });
    Ok(Served {
        url: format!("http://{addr}"),
        addr,
        _stop: stop,
    })
}
