//! Asking a NATS server whether a user may publish to or subscribe to a subject: the server
//! answers a forbidden one with a `-ERR 'Permissions Violation ...'`, which [`refusal`]
//! returns; an allowed one gets no answer, which [`refusal`] reports as `None` once a later,
//! forbidden probe's refusal arrives (errors arrive in order), so no probe waits on a timer.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

/// What to try as the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Publish one message to the subject.
    Publish(String),
    /// Subscribe to the subject.
    Subscribe(String),
}

/// A subject no user of `deploy/nats/accounts.conf` may publish to; its refusal marks the
/// end of a probe.
const SENTINEL: &str = "railyard-testkit.permission-sentinel";

/// How long a refusal may take to arrive before the probe gives up (an error, not an answer).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url` as `user`/`password` (trusting the CA certificate `ca` when the server
/// requires TLS), tries `probe`, and returns the server's permissions violation for it, or
/// `None` when the server allowed it.
///
/// After the probe it publishes to a subject nobody may use; the server answers in order, so
/// the first violation received is the probe's own or the sentinel's.
pub async fn refusal(
    url: &str,
    user: &str,
    password: &str,
    ca: Option<&Path>,
    probe: &Probe,
) -> anyhow::Result<Option<String>> {
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let client = crate::wait::connect_options(Some((user, password)), ca)
        .connection_timeout(ANSWER_TIMEOUT)
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url} as {user}"))?;
    let _subscription = match probe {
        Probe::Publish(subject) => {
            client
                .publish(subject.clone(), "probe".into())
                .await
                .with_context(|| format!("publishing to {subject} as {user}"))?;
            None
        }
        Probe::Subscribe(subject) => Some(
            client
                .subscribe(subject.clone())
                .await
                .with_context(|| format!("subscribing to {subject} as {user}"))?,
        ),
    };
    client.flush().await.context("flushing the probe")?;
    client
        .publish(SENTINEL, "sentinel".into())
        .await
        .context("publishing the sentinel")?;
    client.flush().await.context("flushing the sentinel")?;
    let first = tokio::time::timeout(ANSWER_TIMEOUT, errors.recv())
        .await
        .with_context(|| {
            format!(
                "the server did not refuse {SENTINEL} to {user} within {ANSWER_TIMEOUT:?}: does \
                 this user have permissions at all?"
            )
        })?
        .context("the connection closed before the server answered")?;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
    if first.contains(SENTINEL) {
        Ok(None)
    } else {
        Ok(Some(first))
    }
}
