//! The bus's errors: [`BusError`] for everything that talks to NATS, [`AppendError`] for the
//! outcomes of an append a caller must tell apart (above all [`AppendError::Conflict`]).

use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::append::Expected;

/// An error from a library the bus wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Something went wrong talking to NATS or with what it returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A [`crate::BusConfig`] value JetStream would refuse.
    #[error("bus configuration: {field} {problem}")]
    Config {
        /// The field to fix.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The URL given to [`crate::Bus::connect`] does not parse.
    #[error("{url:?} is not a nats url: use nats://host:port, comma-separated for a cluster")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: BoxError,
    },
    /// No server answered at connect.
    #[error(
        "cannot connect to nats at {url}: start nats-server with jetstream (-js) there, or run \
         `railyard dev`, which starts one"
    )]
    Connect {
        /// Where it tried.
        url: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// No server answered over TLS at connect (TLS was required, or a CA given).
    #[error(
        "cannot connect to nats at {url} over tls: check that the server has a `tls {{}}` block \
         (deploy/nats), that its certificate names the host in the url, and that the CA that \
         signed it is the one given (RAILYARD_NATS_CA)"
    )]
    ConnectTls {
        /// Where it tried.
        url: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The server did not answer in time.
    #[error(
        "nats did not answer {operation} within {timeout:?}: check that nats-server is up and has \
         jetstream enabled, then retry"
    )]
    Timeout {
        /// What was asked.
        operation: String,
        /// How long the bus waited.
        timeout: Duration,
    },
    /// A stream or bucket the bus needs is missing.
    #[error(
        "{what} does not exist on this nats server: run ensure_topology (`railyard admin init` as \
         a nats user allowed to create streams; `railyard dev` does it itself) before using the bus"
    )]
    MissingTopology {
        /// The stream or bucket.
        what: String,
    },
    /// The server refused or failed a request.
    #[error("{operation} failed: see the cause below and the nats-server log, then retry")]
    Nats {
        /// What was asked.
        operation: String,
        /// The client's or server's error.
        #[source]
        source: BoxError,
    },
    /// A stored message is not what the bus writes.
    #[error(
        "message {sequence} on {subject} is not a railyard event batch ({{\"events\": [...]}}): \
         something other than railyard-bus wrote it; dead-letter it and find the writer"
    )]
    Decode {
        /// Its subject.
        subject: String,
        /// Its stream sequence.
        sequence: u64,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A consumer or name the bus needs contains characters NATS does not allow.
    #[error("{what} {value:?} is not allowed: {rule}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name as given.
        value: String,
        /// The allowed form.
        rule: &'static str,
    },
    /// `replay_dead_letter` was given a sequence RAILYARD_DLQ does not hold.
    #[error(
        "dead letter {sequence} does not exist in RAILYARD_DLQ: list them with `railyard dlq list`"
    )]
    DeadLetterNotFound {
        /// The sequence asked for.
        sequence: u64,
    },
    /// A dead event is never appended a second time.
    #[error(
        "dead letter {sequence} is event message {source_sequence} of RAILYARD_EVENTS, which is \
         never appended twice (its aggregate would fold it twice): fix consumer {consumer} and \
         rebuild its projection by replay, or act on the release with the operator commands"
    )]
    ReplayRefused {
        /// The dead letter's sequence in RAILYARD_DLQ.
        sequence: u64,
        /// The event message's sequence in RAILYARD_EVENTS.
        source_sequence: u64,
        /// The consumer that failed on it.
        consumer: String,
    },
    /// The lease was taken over or expired.
    #[error(
        "lease {key} is no longer held by {holder}: stop the work it guarded, another worker owns it now"
    )]
    LeaseLost {
        /// The lease key.
        key: String,
        /// Who held it.
        holder: String,
    },
    /// A delivery claim expired and another caller took it over before this one settled it.
    #[error(
        "the claim of {holder} on delivery {id:?} expired and was taken over before it was \
         settled: raise the intake's delivery claim ttl above its slowest append"
    )]
    DeliveryClaimLost {
        /// The delivery id.
        id: String,
        /// Who held the claim.
        holder: String,
    },
}

impl BusError {
    /// Whether trying again later may succeed: NATS did not answer in time, or a request
    /// failed on the way (a node lost, a leader being elected, a reconnect). A missing
    /// stream, a refused name, a lost lease or a bad setting does not mend by waiting.
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Timeout { .. } | BusError::Nats { .. })
    }

    /// A client or server error during `operation`; timeouts become [`BusError::Timeout`].
    pub(crate) fn nats(
        operation: impl Into<String>,
        timeout: Duration,
        source: impl Into<BoxError>,
    ) -> BusError {
        let source = source.into();
        let operation = operation.into();
        if is_timeout(source.as_ref()) {
            BusError::Timeout { operation, timeout }
        } else {
            BusError::Nats { operation, source }
        }
    }
}

/// An error with every cause after it (`what: cause: cause`), for log lines (whose `%error`
/// shows only the first) and dead-letter reasons.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

/// Whether an error (or any of its causes) is a timeout.
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        let text = error.to_string();
        if text.contains("timed out") || text.starts_with("timeout") {
            return true;
        }
        current = error.source();
    }
    false
}

/// The JetStream error code (`10071` wrong last sequence, `10059` stream not found, ...) of an
/// error or any of its causes.
pub(crate) fn jetstream_code(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(jetstream) = error.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(jetstream.error_code().0);
        }
        current = error.source();
    }
    None
}

/// JetStream's "stream not found".
pub(crate) const STREAM_NOT_FOUND: u64 = 10059;

/// Whether an async-nats error says the stream is missing, wherever the client put the code
/// (a source, or inside its error kind).
pub(crate) fn is_stream_not_found<E>(error: &E) -> bool
where
    E: std::error::Error + fmt::Debug + 'static,
{
    jetstream_code(error) == Some(STREAM_NOT_FOUND) || {
        let debug = format!("{error:?}");
        debug.contains("ErrorCode(10059)") || debug.contains("kind: NotFound")
    }
}

/// An append that did not store its events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Another append moved the aggregate since it was read.
    #[error(
        "{aggregate} moved on (expected {expected}, {actual}): re-read the aggregate and decide again"
    )]
    Conflict {
        /// The aggregate.
        aggregate: String,
        /// What the append expected.
        expected: Expected,
        /// The aggregate's last sequence when the server refused, if it said.
        actual: Actual,
    },
    /// Nothing to append.
    #[error("nothing to append to {aggregate}: pass at least one event")]
    Empty {
        /// The aggregate.
        aggregate: String,
    },
    /// An event of another aggregate was passed.
    #[error(
        "event {event_id} belongs to {event_aggregate}, not {aggregate}: append each aggregate's \
         events separately"
    )]
    WrongAggregate {
        /// The aggregate appended to.
        aggregate: String,
        /// The aggregate the event names.
        event_aggregate: String,
        /// The event.
        event_id: Uuid,
    },
    /// The message is larger than the server accepts.
    #[error(
        "the append to {aggregate} is {size} bytes, over the server's max_payload: split the \
         decision into smaller appends or raise max_payload"
    )]
    TooLarge {
        /// The aggregate.
        aggregate: String,
        /// The encoded size.
        size: usize,
    },
    /// The events could not be encoded.
    #[error(
        "cannot encode the events for {aggregate} as json: an event holds a value json cannot represent"
    )]
    Encode {
        /// The aggregate.
        aggregate: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl AppendError {
    /// Whether the same append may succeed later ([`BusError::is_transient`]); a conflict is
    /// not: the caller re-reads and decides again.
    pub fn is_transient(&self) -> bool {
        matches!(self, AppendError::Bus(error) if error.is_transient())
    }
}

/// The last sequence of an aggregate that refused an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actual(pub Option<u64>);

impl fmt::Display for Actual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(0) => f.write_str("but it has no events"),
            Some(sequence) => write!(f, "but its last sequence is {sequence}"),
            None => f.write_str("but it has moved"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_says_what_to_do() {
        let error = AppendError::Conflict {
            aggregate: "release.rel-42".to_owned(),
            expected: Expected::Sequence(3),
            actual: Actual(Some(5)),
        };
        assert_eq!(
            error.to_string(),
            "release.rel-42 moved on (expected last sequence 3, but its last sequence is 5): \
             re-read the aggregate and decide again"
        );
    }

    #[test]
    fn timeouts_are_recognised_through_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "double ack response");
        let error = BusError::nats("ack", Duration::from_secs(1), io);
        assert!(matches!(error, BusError::Timeout { .. }), "{error:?}");
        let error = BusError::nats("ack", Duration::from_secs(1), "permission denied");
        assert!(matches!(error, BusError::Nats { .. }), "{error:?}");
    }
}
