//! Appending to the event store: optimistic concurrency between concurrent deciders, one
//! message per decision (all or nothing), dedupe of a repeated append, and load.

mod common;

use async_nats::jetstream;
use common::{bus, event, reasons, release};
use railyard_bus::{AppendError, Expected, names::EVENTS_STREAM};
use railyard_testkit::NatsServer;

#[tokio::test]
async fn two_concurrent_appends_at_the_same_sequence_one_wins_and_the_other_retries()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let (alice, bob) = (bus(&server.url()).await?, bus(&server.url()).await?);
    let rel = release("rel-1");
    let first = alice
        .append(&rel, Expected::NoEvents, &[event(&rel, "created")])
        .await?;
    assert!(!first.duplicate);

    // Both read the same state and decide at the same time.
    let expected = alice.load(&rel).await?.expected();
    assert_eq!(expected, Expected::Sequence(first.sequence));
    let (alice_decides, bob_decides) = ([event(&rel, "alice")], [event(&rel, "bob")]);
    let (a, b) = tokio::join!(
        alice.append(&rel, expected, &alice_decides),
        bob.append(&rel, expected, &bob_decides),
    );
    let (winner, loser, loser_bus, loser_says) = match (a, b) {
        (Ok(won), Err(lost)) => (won, lost, &alice, "alice"),
        (Err(lost), Ok(won)) => (won, lost, &bob, "bob"),
        other => panic!("exactly one append must win: {other:?}"),
    };
    match &loser {
        AppendError::Conflict {
            aggregate,
            expected: conflict_expected,
            actual,
        } => {
            assert_eq!(aggregate, "release.rel-1");
            assert_eq!(*conflict_expected, expected);
            assert_eq!(actual.0, Some(winner.sequence));
        }
        other => panic!("the loser must get a conflict, got {other:?}"),
    }
    assert!(
        loser
            .to_string()
            .contains("re-read the aggregate and decide again"),
        "{loser}"
    );

    // The loser re-reads, decides again and retries.
    let reread = loser_bus.load(&rel).await?;
    assert_eq!(reread.last_sequence, winner.sequence);
    let retried = loser_bus
        .append(&rel, reread.expected(), &[event(&rel, loser_says)])
        .await?;
    assert!(retried.sequence > winner.sequence);

    let loaded = alice.load(&rel).await?;
    let stored = reasons(&loaded.events);
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[0], "created");
    assert_eq!(
        stored[2], loser_says,
        "the retried decision comes after the winner's"
    );
    assert_eq!(loaded.last_sequence, retried.sequence);
    Ok(())
}

#[tokio::test]
async fn a_multi_event_append_is_one_message_and_all_or_nothing() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("rel-2");
    let other = release("other");
    bus.append(&other, Expected::NoEvents, &[event(&other, "noise")])
        .await?;

    let decision = [event(&rel, "one"), event(&rel, "two"), event(&rel, "three")];
    let before = bus.stream_last_sequence().await?;
    let appended = bus.append(&rel, Expected::NoEvents, &decision).await?;
    assert_eq!(appended.sequence, before + 1, "three events, one message");
    assert_eq!(bus.stream_last_sequence().await?, before + 1);

    let loaded = bus.load(&rel).await?;
    assert_eq!(loaded.events, decision.to_vec());
    assert_eq!(loaded.last_sequence, appended.sequence);

    // A conflicting multi-event append stores none of its events.
    let stale = [event(&rel, "four"), event(&rel, "five")];
    let error = bus
        .append(&rel, Expected::NoEvents, &stale)
        .await
        .unwrap_err();
    assert!(matches!(error, AppendError::Conflict { .. }), "{error:?}");
    assert_eq!(bus.stream_last_sequence().await?, before + 1);
    assert_eq!(bus.load(&rel).await?.events, decision.to_vec());

    // The message carries the headers the rest of the system relies on.
    let stored = common::raw_jetstream(&server.url())
        .await?
        .get_stream(EVENTS_STREAM)
        .await?
        .get_raw_message(appended.sequence)
        .await?;
    let header = |name: &str| {
        stored
            .headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    assert_eq!(
        header("Nats-Msg-Id"),
        Some(decision[0].event_id.to_string())
    );
    assert_eq!(
        header("Railyard-Event-Types").as_deref(),
        Some("release.cancelled,release.cancelled,release.cancelled")
    );
    assert_eq!(
        header("Nats-Expected-Last-Subject-Sequence").as_deref(),
        Some("0")
    );
    let payload: serde_json::Value = serde_json::from_slice(&stored.payload)?;
    assert_eq!(payload["events"].as_array().map(Vec::len), Some(3));
    Ok(())
}

#[tokio::test]
async fn the_same_append_twice_is_stored_once() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;

    // With an expected sequence: the retry looks like a conflict to JetStream, and is
    // recognised as the same append.
    let rel = release("rel-3");
    let decision = [event(&rel, "once"), event(&rel, "only")];
    let first = bus.append(&rel, Expected::NoEvents, &decision).await?;
    let again = bus.append(&rel, Expected::NoEvents, &decision).await?;
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    let next = [event(&rel, "next")];
    let later = bus
        .append(&rel, Expected::Sequence(first.sequence), &next)
        .await?;
    let late_retry = bus
        .append(&rel, Expected::Sequence(first.sequence), &next)
        .await?;
    assert_eq!(late_retry.sequence, later.sequence);
    assert!(late_retry.duplicate);
    assert_eq!(
        reasons(&bus.load(&rel).await?.events),
        ["once", "only", "next"]
    );

    // Without one: JetStream's dedupe window.
    let signal = release("rel-4");
    let decision = [event(&signal, "any")];
    let first = bus.append(&signal, Expected::Any, &decision).await?;
    let again = bus.append(&signal, Expected::Any, &decision).await?;
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(bus.load(&signal).await?.events.len(), 1);
    Ok(())
}

#[tokio::test]
async fn load_of_an_aggregate_without_events_is_empty() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("nothing-yet");
    let loaded = bus.load(&rel).await?;
    assert!(loaded.events.is_empty());
    assert_eq!(loaded.last_sequence, 0);
    assert_eq!(loaded.expected(), Expected::NoEvents);
    // And one with more messages than a direct-get batch holds comes back whole, in order.
    let many = release("many");
    let mut expected = Expected::NoEvents;
    for index in 0..300 {
        let appended = bus
            .append(&many, expected, &[event(&many, &index.to_string())])
            .await?;
        expected = Expected::Sequence(appended.sequence);
    }
    let loaded = bus.load(&many).await?;
    let want: Vec<String> = (0..300).map(|index| index.to_string()).collect();
    assert_eq!(reasons(&loaded.events), want);
    assert_eq!(Expected::Sequence(loaded.last_sequence), expected);
    Ok(())
}

#[tokio::test]
async fn appends_that_cannot_be_stored_are_refused_before_publishing() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("rel-5");
    let error = bus.append(&rel, Expected::NoEvents, &[]).await.unwrap_err();
    assert!(matches!(error, AppendError::Empty { .. }), "{error:?}");
    assert!(
        error.to_string().contains("pass at least one event"),
        "{error}"
    );

    let stranger = release("someone-else");
    let error = bus
        .append(
            &rel,
            Expected::NoEvents,
            &[event(&rel, "mine"), event(&stranger, "theirs")],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, AppendError::WrongAggregate { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("append each aggregate's events separately"),
        "{error}"
    );
    assert_eq!(bus.stream_last_sequence().await?, 0);
    Ok(())
}

#[tokio::test]
async fn secrets_the_process_holds_never_reach_the_stream() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let secret = "bus-secret-9f2c7\"x";
    railyard_core::redact::register([secret]);
    let rel = release("rel-secret");
    let said = format!("token {secret} and https://ci:pw@git.example/x and kept");
    bus.append(&rel, Expected::NoEvents, &[event(&rel, &said)])
        .await?;
    let stored = reasons(&bus.load(&rel).await?.events);
    assert_eq!(
        stored,
        ["token *** and https://ci:***@git.example/x and kept"]
    );
    // The stored message itself, not just its decoding.
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let raw = js
        .get_stream(EVENTS_STREAM)
        .await?
        .get_last_raw_message_by_subject("railyard.events.release.rel-secret")
        .await?;
    let text = String::from_utf8_lossy(&raw.payload);
    assert!(!text.contains("bus-secret-9f2c7"), "{text}");
    Ok(())
}

/// A reader catching up after one append since its copy asks once (the subject's last
/// message, appended expecting the reader's sequence, is all that is new); after two, or
/// after an append that expected nothing, it scans as well. Either way it gets every new
/// event in order. The requests are counted on the server's direct-get subject.
#[tokio::test]
async fn catching_up_after_one_append_is_one_request() -> anyhow::Result<()> {
    use futures::StreamExt;
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let spy = async_nats::connect(server.url()).await?;
    let mut gets = spy
        .subscribe(format!("$JS.API.DIRECT.GET.{EVENTS_STREAM}"))
        .await?;
    spy.flush().await?;
    let mut requests = async || {
        let mut n = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), gets.next()).await
        {
            n += 1;
        }
        n
    };
    let rel = release("rel-1");
    let first = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "created")])
        .await?;
    let second = bus
        .append(
            &rel,
            Expected::Sequence(first.sequence),
            &[event(&rel, "one"), event(&rel, "batch")],
        )
        .await?;

    let one = bus.load_after(&rel, first.sequence).await?;
    assert_eq!(reasons(&one.events), ["one", "batch"]);
    assert_eq!(one.last_sequence, second.sequence);
    assert_eq!(requests().await, 1);

    let third = bus
        .append(
            &rel,
            Expected::Sequence(second.sequence),
            &[event(&rel, "two")],
        )
        .await?;
    let two = bus.load_after(&rel, first.sequence).await?;
    assert_eq!(reasons(&two.events), ["one", "batch", "two"]);
    assert_eq!(two.last_sequence, third.sequence);
    assert_eq!(requests().await, 2, "the last message, then a scan");

    let fourth = bus
        .append(&rel, Expected::Any, &[event(&rel, "any")])
        .await?;
    let any = bus.load_after(&rel, third.sequence).await?;
    assert_eq!(reasons(&any.events), ["any"]);
    assert_eq!(any.last_sequence, fourth.sequence);
    assert_eq!(requests().await, 2, "no expectation to trust: a scan");

    let none = bus.load_after(&rel, fourth.sequence).await?;
    assert!(none.events.is_empty());
    assert_eq!(none.last_sequence, fourth.sequence);
    assert_eq!(requests().await, 1);
    Ok(())
}
