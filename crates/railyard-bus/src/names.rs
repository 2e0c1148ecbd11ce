//! The names the bus creates and the headers it writes: streams, subjects, KV buckets, the
//! dead-letter forwarder's consumer, and the rules for names that become subject tokens or keys.

use railyard_core::AggregateId;

use crate::error::BusError;

/// The event store: one subject per aggregate, limits retention, file storage.
pub const EVENTS_STREAM: &str = "RAILYARD_EVENTS";
/// Work items for promotion workers (work-queue retention).
pub const WORK_STREAM: &str = "RAILYARD_WORK";
/// Dead letters copied by the forwarder.
pub const DLQ_STREAM: &str = "RAILYARD_DLQ";
/// Refused inputs, size-limited (INTERFACES §8).
pub const REJECTED_STREAM: &str = "RAILYARD_REJECTED";
/// Max-deliveries advisories of the events and work streams, kept until forwarded.
pub const ADVISORIES_STREAM: &str = "RAILYARD_ADVISORIES";

/// Prefix of every event subject; the aggregate id follows.
pub const EVENTS_PREFIX: &str = "railyard.events.";
/// Prefix of every work subject.
pub const WORK_PREFIX: &str = "railyard.work.";
/// Prefix of every dead-letter subject: `railyard.dlq.<stream>.<consumer>`.
pub const DLQ_PREFIX: &str = "railyard.dlq.";
/// Prefix of every rejection subject: `railyard.rejected.<source>`.
pub const REJECTED_PREFIX: &str = "railyard.rejected.";
/// Subject prefix of the max-deliveries advisories: `<prefix>.<stream>.<consumer>`.
pub const MAX_DELIVERIES_ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";

/// External delivery ids (GitHub, GitLab, CDEvents), kept 7 days.
pub const DELIVERIES_BUCKET: &str = "railyard-deliveries";
/// Step leases held by promotion workers.
pub const LEASES_BUCKET: &str = "railyard-leases";
/// Leader leases of replicated services (planner, notifier, audit sealer) and what a leader
/// hands to its standbys (the notifier's progress).
pub const LEADERS_BUCKET: &str = "railyard-leaders";
/// The last nak reason of each delivery, read by the dead-letter forwarder.
pub const DLQ_REASONS_BUCKET: &str = "railyard-dlq-reasons";
/// The durable consumer every dead-letter forwarder shares.
pub const DLQ_FORWARDER: &str = "railyard-dlq-forwarder";

/// Header listing the event type names of an append, comma-separated.
pub const EVENT_TYPES_HEADER: &str = "Railyard-Event-Types";
/// Dead-letter header: the stream the message came from.
pub const DLQ_SOURCE_STREAM: &str = "Railyard-Dlq-Stream";
/// Dead-letter header: its sequence in that stream.
pub const DLQ_SOURCE_SEQUENCE: &str = "Railyard-Dlq-Sequence";
/// Dead-letter header: its subject in that stream.
pub const DLQ_SOURCE_SUBJECT: &str = "Railyard-Dlq-Subject";
/// Dead-letter header: the consumer that gave up on it.
pub const DLQ_CONSUMER: &str = "Railyard-Dlq-Consumer";
/// Dead-letter header: how often it was delivered.
pub const DLQ_DELIVERIES: &str = "Railyard-Dlq-Deliveries";
/// Dead-letter header: why it failed.
pub const DLQ_REASON: &str = "Railyard-Dlq-Reason";
/// Dead-letter header: when it was dead-lettered (RFC 3339).
pub const DLQ_AT: &str = "Railyard-Dlq-At";
/// Header on a replayed dead letter: the dead letter's sequence in RAILYARD_DLQ.
pub const REPLAY_OF_HEADER: &str = "Railyard-Replay-Of";

/// The subject of an aggregate's events: `railyard.events.<aggregate>`.
pub fn event_subject(aggregate: &AggregateId) -> String {
    format!("{EVENTS_PREFIX}{aggregate}")
}

/// Checks a name that becomes one subject token or consumer name: `[A-Za-z0-9_-]{1,64}`.
pub(crate) fn check_token(what: &'static str, value: &str) -> Result<(), BusError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidName {
            what,
            value: value.to_owned(),
            rule: "use 1 to 64 of A-Z a-z 0-9 - _",
        })
    }
}

/// Checks a subject a caller passes (a filter or a work subject below a prefix): dot-separated
/// non-empty tokens without spaces; `*` and `>` only when `wildcards`.
pub(crate) fn check_subject(
    what: &'static str,
    value: &str,
    prefix: &str,
    wildcards: bool,
) -> Result<(), BusError> {
    let rest = value.strip_prefix(prefix).unwrap_or("");
    let tokens_ok = !rest.is_empty()
        && rest.split('.').enumerate().all(|(index, token)| {
            let last = index == rest.split('.').count() - 1;
            match token {
                "" => false,
                "*" => wildcards,
                ">" => wildcards && last,
                token => !token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>'),
            }
        });
    if tokens_ok {
        Ok(())
    } else {
        Err(BusError::InvalidName {
            what,
            value: value.to_owned(),
            rule: if wildcards {
                "start with the stream's prefix, then dot-separated tokens (* and a final > allowed)"
            } else {
                "start with the stream's prefix, then dot-separated tokens without wildcards"
            },
        })
    }
}

/// Encodes any string as a KV key: `A-Z a-z 0-9 - _` stay, every other byte becomes `=XX`.
pub(crate) fn kv_key(raw: &str) -> String {
    let mut key = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            key.push(char::from(byte));
        } else {
            key.push_str(&format!("={byte:02X}"));
        }
    }
    if key.is_empty() {
        key.push_str("=00");
    }
    key
}

/// Makes a header value safe: no CR or LF.
pub(crate) fn header_value(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_follow_the_aggregate_id() {
        let release: AggregateId = "release.rel-42".parse().unwrap();
        assert_eq!(event_subject(&release), "railyard.events.release.rel-42");
        assert_eq!(
            event_subject(&AggregateId::Catalog),
            "railyard.events.catalog"
        );
    }

    #[test]
    fn kv_keys_escape_everything_but_safe_characters() {
        assert_eq!(kv_key("abc-DEF_09"), "abc-DEF_09");
        assert_eq!(
            kv_key("production:deploy:orders-api"),
            "production=3Adeploy=3Aorders-api"
        );
        assert_eq!(kv_key("a.b/c"), "a=2Eb=2Fc");
        assert_eq!(kv_key(""), "=00");
    }

    #[test]
    fn tokens_and_subjects_are_checked() {
        assert!(check_token("consumer", "audit-projection_1").is_ok());
        assert!(check_token("consumer", "audit.projection").is_err());
        assert!(check_token("consumer", "").is_err());
        assert!(check_subject("filter", "railyard.events.release.>", EVENTS_PREFIX, true).is_ok());
        assert!(check_subject("filter", "railyard.events.*.x", EVENTS_PREFIX, true).is_ok());
        assert!(check_subject("filter", "railyard.events.>.x", EVENTS_PREFIX, true).is_err());
        assert!(check_subject("filter", "railyard.events.", EVENTS_PREFIX, true).is_err());
        assert!(check_subject("filter", "other.>", EVENTS_PREFIX, true).is_err());
        assert!(check_subject("work", "railyard.work.step", WORK_PREFIX, false).is_ok());
        assert!(check_subject("work", "railyard.work.step.>", WORK_PREFIX, false).is_err());
        assert!(check_subject("work", "railyard.work.a..b", WORK_PREFIX, false).is_err());
    }
}
