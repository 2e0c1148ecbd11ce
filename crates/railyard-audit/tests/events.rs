//! `GET /v1/releases/{id}/events` over real HTTP and real NATS: the release's history, then
//! new events live and in order, only the release's own; the stream carries on across a
//! restart of the projection task, and a client that reconnects with `Last-Event-ID` (after
//! a reconnect, or a restart of the whole service) gets exactly what it missed. The SSE id is
//! the stream sequence the client holds every event of the release through, so an append of
//! several events resumes whole and never skips (`?after=` and the status's `last_event` speak
//! stream sequences too).

mod common;

use common::{
    Script, Service, WAIT, callers, change, connect, requested, started, succeeded, temp_store,
};
use futures::StreamExt;
use railyard_core::Event;
use railyard_core::event::{ApprovalDecision, ApprovalRequested, CatalogApplied};
use railyard_testkit::NatsServer;

/// A Server-Sent Events client reading one response.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Sse {
    async fn connect(url: &str, token: &str, last_event_id: Option<u64>) -> Sse {
        let mut request = reqwest::Client::new().get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Sse {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event's id and type (comments skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<(u64, String)> {
        self.next_record().await.map(|(id, kind, _)| (id, kind))
    }

    /// The next event's id, type and record number (its data's `n`).
    async fn next_record(&mut self) -> Option<(u64, String, u64)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut kind = None;
                let mut n = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = value.parse().ok();
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        kind = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        n = serde_json::from_str::<serde_json::Value>(value)
                            .ok()
                            .and_then(|data| data["n"].as_u64());
                    }
                }
                if let (Some(id), Some(kind)) = (id, kind) {
                    return Some((id, kind, n.unwrap_or_default()));
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event arrives in time");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<(u64, String)> {
        let mut events = Vec::new();
        for _ in 0..n {
            events.push(self.next().await.expect("the stream goes on"));
        }
        events
    }

    async fn take_records(&mut self, n: usize) -> Vec<(u64, String, u64)> {
        let mut events = Vec::new();
        for _ in 0..n {
            events.push(self.next_record().await.expect("the stream goes on"));
        }
        events
    }
}

/// `(SSE id, type, record number)` of the expected events.
fn ids(events: &[(u64, &str, u64)]) -> Vec<(u64, String, u64)> {
    events
        .iter()
        .map(|(id, kind, n)| (*id, (*kind).to_owned(), *n))
        .collect()
}

fn kinds(events: &[(u64, String)]) -> Vec<&str> {
    events.iter().map(|(_, kind)| kind.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_replay_history_then_follow_live_across_restarts() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, store) = temp_store();
    let mut service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    let plan = common::plan(
        "rel-1",
        &[
            ("production", railyard_core::Action::Approve, "rel-1", None),
            (
                "production",
                railyard_core::Action::Deploy,
                "orders-api",
                Some("2.4.0"),
            ),
        ],
    );
    script
        .release(
            "rel-1",
            "carol",
            requested("rel-1", vec![change("orders-api", "2.4.0", "d4e5f6a")]),
        )
        .await;
    script
        .append(
            "catalog",
            "planner",
            Event::CatalogApplied(CatalogApplied {
                hash: "sha256:aa".into(),
            }),
        )
        .await;
    script
        .release(
            "rel-1",
            "planner",
            Event::ReleasePlanned(railyard_core::event::ReleasePlanned { plan }),
        )
        .await;
    script
        .release("rel-1", "promoter", started("production:approve:rel-1"))
        .await;
    service.caught_up(script.last_sequence).await;

    // History first, only the release's own events.
    let url = service.url("/v1/releases/rel-1/events");
    let mut sse = Sse::connect(&url, &callers.operator, None).await;
    let history = sse.take(3).await;
    assert_eq!(
        kinds(&history),
        ["release.requested", "release.planned", "step.started"]
    );
    assert_eq!(
        history.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 3, 4]
    );

    // Then live, in order, skipping other aggregates.
    script
        .release(
            "rel-1",
            "promoter",
            Event::ApprovalRequested(ApprovalRequested {
                step: "production:approve:rel-1".into(),
                env: "production".parse().unwrap(),
                approvers: vec!["alice".into()],
                reason: None,
            }),
        )
        .await;
    script
        .append(
            "catalog",
            "planner",
            Event::CatalogApplied(CatalogApplied {
                hash: "sha256:bb".into(),
            }),
        )
        .await;
    script
        .release(
            "rel-1",
            "alice",
            Event::ApprovalGranted(ApprovalDecision {
                step: "production:approve:rel-1".into(),
                comment: "ok".into(),
            }),
        )
        .await;
    let live = sse.take(2).await;
    assert_eq!(kinds(&live), ["approval.requested", "approval.granted"]);
    assert_eq!(live.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 7]);

    // The projection task stops and restarts: the open stream carries on.
    service.stop_projection().await;
    script
        .release(
            "rel-1",
            "promoter",
            succeeded("production:approve:rel-1", ""),
        )
        .await;
    script
        .release("rel-1", "promoter", started("production:deploy:orders-api"))
        .await;
    service.start_projection();
    let after_restart = sse.take(2).await;
    assert_eq!(kinds(&after_restart), ["step.succeeded", "step.started"]);
    assert_eq!(
        after_restart.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [8, 9]
    );

    // A client that reconnects with Last-Event-ID gets only what came after.
    drop(sse);
    let mut sse = Sse::connect(&url, &callers.operator, Some(7)).await;
    assert_eq!(
        sse.take(2)
            .await
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        [8, 9]
    );
    script
        .release(
            "rel-1",
            "promoter",
            succeeded("production:deploy:orders-api", ""),
        )
        .await;
    assert_eq!(sse.take(1).await, [(10, "step.succeeded".to_owned())]);

    // The whole service restarts: open streams end, events keep being appended meanwhile,
    // and a reconnect with Last-Event-ID resumes exactly after the last one seen.
    service.stop().await;
    assert_eq!(
        sse.next().await,
        None,
        "the stream ends when the service stops"
    );
    script
        .release(
            "rel-1",
            "promoter",
            Event::ReleaseCompleted(Default::default()),
        )
        .await;
    let service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let mut sse = Sse::connect(
        &service.url("/v1/releases/rel-1/events"),
        &callers.operator,
        Some(10),
    )
    .await;
    assert_eq!(sse.take(1).await, [(11, "release.completed".to_owned())]);

    // `railyard release watch` follows the same stream and stops at the end of the release.
    let mut out = Vec::new();
    let code = railyard::audit_cli::run_release(
        railyard::audit_cli::ReleaseCommand::Watch(railyard::audit_cli::WatchArgs {
            id: "rel-1".into(),
            after: Some(8),
            retries: 0,
            client: railyard::audit_cli::ClientArgs {
                url: service.url(""),
                token: Some(callers.operator.clone()),
            },
        }),
        &mut out,
    )
    .await?;
    assert_eq!(code, 0);
    insta::assert_snapshot!("watch_after_8", String::from_utf8(out)?);
    drop(sse);
    service.stop().await;
    Ok(())
}

/// Appends `events` to release `id` in one append (one stream sequence), one minute apart.
async fn append_together(script: &mut Script, id: &str, events: Vec<Event>) -> u64 {
    let aggregate: railyard_core::AggregateId = format!("release.{id}").parse().unwrap();
    let envelopes: Vec<railyard_core::Envelope> = events
        .into_iter()
        .map(|event| {
            script.at += chrono::Duration::minutes(1);
            railyard_core::Envelope::new(aggregate.clone(), "promoter", script.at, event)
        })
        .collect();
    let appended = script
        .bus
        .append(&aggregate, railyard_bus::Expected::Any, &envelopes)
        .await
        .expect("the append is stored");
    script.last_sequence = appended.sequence;
    appended.sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_are_stream_sequences_and_resume_never_skips_part_of_an_append()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, store) = temp_store();
    let service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    // Record numbers and stream sequences part ways: one append carries three events.
    let s1 = script
        .release(
            "rel-m",
            "carol",
            requested("rel-m", vec![change("orders-api", "2.4.0", "d4e5f6a")]),
        )
        .await;
    let s2 = append_together(
        &mut script,
        "rel-m",
        vec![
            started("staging:deploy:orders-api"),
            succeeded("staging:deploy:orders-api", ""),
            started("production:deploy:orders-api"),
        ],
    )
    .await;
    let s3 = script
        .append(
            "catalog",
            "planner",
            Event::CatalogApplied(CatalogApplied {
                hash: "sha256:aa".into(),
            }),
        )
        .await;
    let s4 = script
        .release(
            "rel-m",
            "promoter",
            succeeded("production:deploy:orders-api", ""),
        )
        .await;
    service.caught_up(s4).await;
    assert_eq!((s1, s2, s3, s4), (1, 2, 3, 4));

    // From the start: the id of an event that is not the last of its append is the sequence
    // before it (the client holds everything through that one), the last one's is its own.
    let url = service.url("/v1/releases/rel-m/events");
    let mut sse = Sse::connect(&url, &callers.operator, None).await;
    assert_eq!(
        sse.take_records(5).await,
        ids(&[
            (1, "release.requested", 1),
            (1, "step.started", 2),
            (1, "step.succeeded", 3),
            (2, "step.started", 4),
            (4, "step.succeeded", 6),
        ])
    );
    // Live, the same: a new append of two events.
    let s5 = append_together(
        &mut script,
        "rel-m",
        vec![
            started("production:verify:orders-api"),
            succeeded("production:verify:orders-api", ""),
        ],
    )
    .await;
    assert_eq!(
        sse.take_records(2).await,
        ids(&[(s5 - 1, "step.started", 7), (s5, "step.succeeded", 8)])
    );
    drop(sse);

    // A reconnect in the middle of an append (Last-Event-ID 1) gets all of it again: a
    // repeat, never a gap.
    let mut sse = Sse::connect(&url, &callers.operator, Some(1)).await;
    assert_eq!(
        sse.take_records(4)
            .await
            .iter()
            .map(|(_, _, n)| *n)
            .collect::<Vec<_>>(),
        [2, 3, 4, 6]
    );
    drop(sse);
    // After a sequence of another aggregate (the catalog's 3), the release's next event.
    let mut sse = Sse::connect(&url, &callers.operator, Some(3)).await;
    assert_eq!(sse.take_records(1).await, ids(&[(4, "step.succeeded", 6)]));
    drop(sse);
    // `?after=` is the same stream sequence; Last-Event-ID wins when both are given.
    let mut sse = Sse::connect(
        &service.url("/v1/releases/rel-m/events?after=2"),
        &callers.operator,
        None,
    )
    .await;
    assert_eq!(sse.take_records(1).await, ids(&[(4, "step.succeeded", 6)]));
    drop(sse);
    let mut sse = Sse::connect(
        &service.url("/v1/releases/rel-m/events?after=0"),
        &callers.operator,
        Some(s4),
    )
    .await;
    assert_eq!(sse.take_records(1).await[0].2, 7);
    drop(sse);

    // The status's last_event is where a watcher resumes: nothing is left after it.
    let status: serde_json::Value = reqwest::Client::new()
        .get(service.url("/v1/releases/rel-m"))
        .bearer_auth(&callers.operator)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(status["last_event"], s5);

    // An id that is not a number is refused in words.
    let refused = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&callers.operator)
        .header("last-event-id", "n7")
        .send()
        .await?;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await?.contains("stream sequence"));
    service.stop().await;
    Ok(())
}
