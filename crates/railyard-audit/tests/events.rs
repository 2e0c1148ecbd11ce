//! `GET /v1/releases/{id}/events` over real HTTP and real NATS: the release's history, then
//! new events live and in order, only the release's own; the stream carries on across a
//! restart of the projection task, and a client that reconnects with `Last-Event-ID` (after
//! a reconnect, or a restart of the whole service) gets exactly what it missed.

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
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut kind = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = value.parse().ok();
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        kind = Some(value.to_owned());
                    }
                }
                if let (Some(id), Some(kind)) = (id, kind) {
                    return Some((id, kind));
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
