//! Bounded waiting: [`wait_until`] polls a condition until a deadline, and
//! [`wait_for_jetstream`] waits until a server answers JetStream API requests (in a cluster:
//! until it knows a meta leader).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

/// How long a server or cluster may take to start before the testkit gives up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Ok(Some(value))`, at most for `timeout`; the error names
/// `what` and the last error `check` returned.
///
/// Polling starts at 10ms and backs off to 200ms. Use it for conditions nothing notifies you
/// about (a server being reachable again); never to wait for your own code to "settle".
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => {}
        }
        if Instant::now() + interval > deadline {
            return Err(match last_error {
                Some(error) => {
                    error.context(format!("timed out after {timeout:?} waiting for {what}"))
                }
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// Waits until the server at `url` answers JetStream API requests: for a single server, until
/// JetStream is up; for a cluster node, until it knows a meta leader.
pub async fn wait_for_jetstream(url: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_for_jetstream_as(url, None, None, timeout).await
}

/// [`wait_for_jetstream`] as a NATS user (`(user, password)`), for servers that require one,
/// trusting the CA certificate `ca` for servers that require TLS.
pub async fn wait_for_jetstream_as(
    url: &str,
    credentials: Option<(&str, &str)>,
    ca: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = connect_options(credentials, ca)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .retry_on_initial_connect()
        .connect(url)
        .await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let result = wait_until(
        &format!("JetStream at {url} to answer"),
        timeout,
        || async {
            match jetstream.query_account().await {
                Ok(_) => Ok(Some(())),
                Err(error) => Err(anyhow::Error::new(error)),
            }
        },
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
    result
}

/// Client options connecting as `credentials` (or anonymously), trusting `ca` (a PEM file)
/// besides the system's roots and then requiring TLS.
pub fn connect_options(
    credentials: Option<(&str, &str)>,
    ca: Option<&Path>,
) -> async_nats::ConnectOptions {
    let options = match credentials {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password.to_owned())
        }
        None => async_nats::ConnectOptions::new(),
    };
    match ca {
        Some(ca) => options
            .add_root_certificates(ca.to_path_buf())
            .require_tls(true),
        None => options,
    }
}
