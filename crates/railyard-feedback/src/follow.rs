//! The loop both services share: read `RAILYARD_EVENTS` in order from the ledger's checkpoint,
//! let the service turn each stream message into a list of outside calls (a pure function of
//! its views before the message and the message's events), make the calls one at a time from
//! the first one not recorded, committing each, then mark the message done.

use railyard_bus::{Bus, Delivery};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info};

use crate::error::FeedbackError;
use crate::ledger::Ledger;

/// Where a service with an empty ledger starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// Reads the stream from the start (to build its views) but calls nothing for what was
    /// already in it when the service started: a lost ledger never repeats old work (the
    /// default).
    #[default]
    Skip,
    /// Calls out for everything in the stream (tests, a first run on a fresh stream).
    Send,
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Made (or refused for good, and logged): record it and go on.
    Done,
    /// Shutdown came first; nothing was sent.
    Stopped,
}

/// A service that follows the stream.
pub(crate) trait Handler {
    /// One outside call.
    type Call: std::fmt::Debug;

    /// The calls stream message `delivery` needs; view changes go through
    /// [`Ledger::defer`].
    async fn plan(
        &mut self,
        ledger: &mut Ledger,
        delivery: &Delivery,
    ) -> Result<Vec<Self::Call>, FeedbackError>;

    /// Makes `call`; its effects go through [`Ledger::write`].
    async fn call(
        &mut self,
        ledger: &mut Ledger,
        call: &Self::Call,
        shutdown: &CancellationToken,
    ) -> Result<Flow, FeedbackError>;
}

/// Runs `handler` over the stream until `shutdown` or the end of the bus.
pub(crate) async fn follow<H: Handler>(
    bus: &Bus,
    mut ledger: Ledger,
    handler: &mut H,
    name: &'static str,
    history: History,
    handled: Option<watch::Sender<u64>>,
    shutdown: CancellationToken,
) -> Result<(), FeedbackError> {
    let quiet_through = if ledger.is_empty() && history == History::Skip {
        bus.stream_last_sequence().await?
    } else {
        0
    };
    let from = ledger.next_sequence();
    let mut consumer = bus.replay_as(name, from).await?;
    info!(
        service = name,
        from, quiet_through, "following the event stream"
    );
    'messages: loop {
        let delivery = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = consumer.next() => match next? {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let sequence = delivery.stream_sequence;
        if sequence < ledger.next_sequence() {
            continue;
        }
        let span = tracing::info_span!(
            "feedback.handle",
            service = name,
            sequence,
            subject = %delivery.subject,
        );
        railyard_bus::follow_trace(&span, &delivery.trace);
        let calls = handler
            .plan(&mut ledger, &delivery)
            .instrument(span.clone())
            .await?;
        if sequence > quiet_through {
            let done = ledger.calls_done(sequence);
            for call in calls.iter().skip(done) {
                match handler
                    .call(&mut ledger, call, &shutdown)
                    .instrument(span.clone())
                    .await?
                {
                    Flow::Done => ledger.commit_call(sequence).await?,
                    Flow::Stopped => {
                        ledger.forget_deferred();
                        break 'messages;
                    }
                }
            }
        }
        ledger.commit_done(sequence).await?;
        if let Some(handled) = &handled {
            handled.send_replace(sequence);
        }
    }
    ledger.flush().await?;
    info!(service = name, next = ledger.next_sequence(), "stopped");
    Ok(())
}
