//! The console's own routes (`railyard_audit::console_routes`) over real NATS and real HTTP:
//! `POST /v1/plan/preview` plans a pasted release file against the recorded inventory and the
//! releases in flight (a good file: the plan with each edge's rule and reason; an unsafe one:
//! each reason with its remedy; a bad one: 400 naming the key path and line) and appends
//! nothing to the stream; `GET /v1/owners` names each service's team; `GET /v1/live/releases`
//! pushes each changed release with the stream sequence as its id, and a client that
//! reconnects with `Last-Event-ID` gets every release that changed meanwhile. A token that
//! runs too many previews in a row is answered 429 with `Retry-After` until its next is back.

mod common;

use std::path::Path;

use common::{Script, Service, WAIT, callers, change, connect, plan, requested, temp_store};
use futures::StreamExt;
use railyard_core::event::ReleasePlanned;
use railyard_core::{Action, Catalog, Event, Inventory};
use railyard_testkit::NatsServer;
use serde_json::Value;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

fn example(file: &str) -> String {
    std::fs::read_to_string(examples().join(file)).unwrap()
}

/// The console's routes over the service's audit, on their own listener.
async fn serve_console(service: &Service, catalog: Option<Catalog>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = railyard_audit::console_routes(service.audit.clone(), catalog);
    let stop = service.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .expect("the console routes serve");
    });
    format!("http://{addr}")
}

async fn preview(base: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/plan/preview"))
        .header("content-type", "application/toml")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_preview_plans_against_the_live_estate_and_appends_nothing() -> anyhow::Result<()>
{
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, store) = temp_store();
    let who = callers();
    let service = Service::start(&bus, &store, who.tokens.clone()).await?;
    let catalog = Catalog::from_toml(&example("railyard.toml"))?;
    let inventory = Inventory::from_json(&example("inventory.json"))?;
    railyard::inventory_cmd::import(&bus, &inventory, "inventory-import").await?;
    // orders-v3 is in flight: requested and planned, nothing run yet.
    let mut script = Script::new(&bus);
    script
        .release(
            "orders-v3",
            "carol",
            requested("orders-v3", vec![change("orders-api", "2.4.0", "d4e5f6a")]),
        )
        .await;
    script
        .release(
            "orders-v3",
            "railyard-planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: plan(
                    "orders-v3",
                    &[("staging", Action::Deploy, "orders-api", Some("2.4.0"))],
                ),
            }),
        )
        .await;
    let before = bus.stream_last_sequence().await?;
    service.caught_up(before).await;
    let base = serve_console(&service, Some(catalog.clone())).await;

    // Any valid token previews; none, or a wrong one, does not.
    let good = example("release-pricing-6.toml");
    let (status, _) = preview(&base, None, &good).await;
    assert_eq!(status, 401);
    let (status, _) = preview(&base, Some("ry_not-a-token"), &good).await;
    assert_eq!(status, 401);

    // A safe release: its plan, each edge with its rule and reason, against what runs now.
    let (status, body) = preview(&base, Some(&who.auditor), &good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "planned", "{body}");
    assert_eq!(body["release"], "pricing-6");
    let steps = body["plan"]["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["id"] == "production:deploy:pricing"),
        "{body}"
    );
    let edges = body["plan"]["edges"].as_array().unwrap();
    assert!(!edges.is_empty(), "{body}");
    for edge in edges {
        assert!(
            !edge["rule"].as_str().unwrap().is_empty()
                && !edge["reason"].as_str().unwrap().is_empty(),
            "every edge says why: {edge}"
        );
    }
    assert!(!body["plan"]["waves"].as_array().unwrap().is_empty());
    assert_eq!(
        body["against"]["in_flight"],
        serde_json::json!(["orders-v3"])
    );
    assert!(body["against"]["inventory_record"].as_u64().unwrap() > 0);
    assert_eq!(body["warnings"], serde_json::json!([]));

    // The JSON form plans the same.
    let json_body = serde_json::to_string(&railyard_core::ReleaseFile::from_toml(&good)?)?;
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/plan/preview"))
        .bearer_auth(&who.operator)
        .header("content-type", "application/json")
        .body(json_body)
        .send()
        .await?;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await?;
    assert_eq!(answer["plan"]["steps"], body["plan"]["steps"]);

    // An unsafe release: refused, each reason with its remedy.
    let (status, body) = preview(
        &base,
        Some(&who.operator),
        &example("release-orders-v4-unsafe.toml"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "refused", "{body}");
    let refusals = body["refusals"].as_array().unwrap();
    assert!(!refusals.is_empty());
    assert!(
        refusals
            .iter()
            .any(|r| r["reason"].as_str().unwrap().contains("email-worker")),
        "{body}"
    );
    for refusal in refusals {
        assert!(!refusal["remedy"].as_str().unwrap().is_empty(), "{refusal}");
    }

    // The id of a release that exists: planned as if new, with a warning that intake would
    // refuse it.
    let (status, body) = preview(
        &base,
        Some(&who.operator),
        &example("release-orders-v3.toml"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["against"]["in_flight"],
        serde_json::json!([]),
        "not against itself"
    );
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("release orders-v3 exists already (planned)"),
        "{body}"
    );

    // Bad files: 400 with what is wrong, where, and what to do.
    let (status, body) = preview(
        &base,
        Some(&who.operator),
        "id = \"bad-1\"\n[[changes]]\nservice = \"pricing\"\nversion = 6\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["path"], "release.changes[0].version", "{body}");
    assert_eq!(body["line"], 4, "{body}");
    let (status, body) = preview(
        &base,
        Some(&who.operator),
        "id = \"bad-2\"\n[[changes]]\nservice = \"no-such-service\"\nversion = \"1.0.0\"\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["path"], "release.changes[0].service", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not in the catalog: use one of ["),
        "{body}"
    );
    let (status, body) = preview(&base, Some(&who.operator), "id = \"bad-3\"\n").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["path"], "release.changes", "{body}");
    let (status, body) = preview(&base, Some(&who.operator), "id = [\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["line"].as_u64().is_some(), "{body}");

    // Nothing of all this reached the stream.
    assert_eq!(bus.stream_last_sequence().await?, before);

    // A deployment recorded after a preview counts in the next one: email-worker now reads
    // orders-events up to 4, so orders-v4 no longer waits for it.
    let mut widened: Value = serde_json::from_str(&example("inventory.json"))?;
    for env in ["staging", "production"] {
        widened[env]["services"]["email-worker"]["consumes"]["orders-events"] = "1..=4".into();
    }
    let widened = Inventory::from_json(&widened.to_string())?;
    railyard::inventory_cmd::import(&bus, &widened, "inventory-widen").await?;
    service.caught_up(bus.stream_last_sequence().await?).await;
    let (status, body) = preview(
        &base,
        Some(&who.auditor),
        &example("release-orders-v4-unsafe.toml"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reasons = body["refusals"].to_string();
    assert!(!reasons.contains("email-worker"), "{body}");
    let estate: Value = reqwest::Client::new()
        .get(service.url("/v1/estate"))
        .bearer_auth(&who.auditor)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        body["against"]["inventory_record"], estate["last_record"],
        "the preview planned against the whole recorded estate"
    );
    assert_eq!(
        estate["inventory"]["production"]["services"]["email-worker"]["consumes"]["orders-events"],
        "1..=4"
    );

    // The owners, from the catalog.
    let owners: Value = reqwest::Client::new()
        .get(format!("{base}/v1/owners"))
        .bearer_auth(&who.auditor)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(owners["owners"]["pricing"], "team-pricing", "{owners}");
    assert_eq!(owners["owners"]["orders-api"], "team-orders", "{owners}");

    // Without a catalog, the preview says where to preview instead.
    let bare = serve_console(&service, None).await;
    let (status, body) = preview(&bare, Some(&who.operator), &good).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("railyard plan"),
        "{body}"
    );

    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_out_of_previews_is_answered_429_until_its_next_one_is_back() -> anyhow::Result<()>
{
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, store) = temp_store();
    let who = callers();
    let clock = railyard_core::ManualClock::new(common::start());
    let mut config = railyard_audit::AuditConfig::new(&store, who.tokens.clone());
    config.clock = clock.shared();
    let service = Service::start_config(&bus, config).await?;
    let inventory = Inventory::from_json(&example("inventory.json"))?;
    railyard::inventory_cmd::import(&bus, &inventory, "inventory-import").await?;
    service.caught_up(bus.stream_last_sequence().await?).await;
    let base = serve_console(
        &service,
        Some(Catalog::from_toml(&example("railyard.toml"))?),
    )
    .await;
    let good = example("release-pricing-6.toml");

    // A burst of previews is served.
    for i in 0..railyard_audit::PREVIEW_BURST {
        let (status, body) = preview(&base, Some(&who.operator), &good).await;
        assert_eq!(status, 200, "preview {i}: {body}");
    }
    // The next is refused in words, with when to come back.
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/plan/preview"))
        .bearer_auth(&who.operator)
        .body(good.clone())
        .send()
        .await?;
    assert_eq!(answer.status(), 429);
    let refill = railyard_audit::PREVIEW_REFILL.as_secs();
    assert_eq!(answer.headers()["retry-after"], refill.to_string().as_str());
    let body: Value = answer.json().await?;
    assert_eq!(body["error"], "too many previews", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("preview again in {refill} s")),
        "{body}"
    );
    // Other tokens are not held back, and a file refused before planning is still explained.
    let (status, _) = preview(&base, Some(&who.auditor), &good).await;
    assert_eq!(status, 200);
    let (status, body) = preview(&base, Some(&who.operator), "id = \"bad-3\"\n").await;
    assert_eq!(status, 400, "{body}");

    // Halfway to the next one, still refused, and told the rest of the wait.
    clock.advance(railyard_audit::PREVIEW_REFILL / 2);
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/plan/preview"))
        .bearer_auth(&who.operator)
        .body(good.clone())
        .send()
        .await?;
    assert_eq!(answer.status(), 429);
    assert_eq!(
        answer.headers()["retry-after"],
        (refill / 2).max(1).to_string().as_str()
    );
    // Once it is due: one more, then refused again.
    clock.advance(railyard_audit::PREVIEW_REFILL / 2);
    let (status, body) = preview(&base, Some(&who.operator), &good).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = preview(&base, Some(&who.operator), &good).await;
    assert_eq!(status, 429);
    service.stop().await;
    Ok(())
}

/// A Server-Sent Events client reading one response.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

/// One event: its id, type and data.
#[derive(Debug)]
struct Pushed {
    id: u64,
    kind: String,
    data: Value,
}

impl Pushed {
    fn releases(&self) -> Vec<(String, String)> {
        self.data["releases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["release"].as_str().unwrap().to_owned(),
                    s["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
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

    async fn next(&mut self) -> Pushed {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = value.parse().ok();
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        kind = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if let (Some(id), Some(kind)) = (id, kind) {
                    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                    return Pushed { id, kind, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event arrives in time");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("the stream ended: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_release_list_pushes_changes_and_resumes_from_the_last_sequence()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, store) = temp_store();
    let who = callers();
    let service = Service::start(&bus, &store, who.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    let first = script
        .release(
            "rel-1",
            "carol",
            requested("rel-1", vec![change("orders-api", "2.4.0", "d4e5f6a")]),
        )
        .await;
    service.caught_up(first).await;
    let base = serve_console(&service, None).await;
    let url = format!("{base}/v1/live/releases");

    let status = reqwest::Client::new().get(&url).send().await?.status();
    assert_eq!(status, 401);
    let status = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&who.operator)
        .header("last-event-id", "not-a-number")
        .send()
        .await?
        .status();
    assert_eq!(status, 400);

    // A fresh client hears where the record is (load the list after this), then each change.
    let mut live = Sse::connect(&url, &who.operator, None).await;
    let ready = live.next().await;
    assert_eq!((ready.kind.as_str(), ready.id), ("ready", first));
    let second = script
        .release(
            "rel-2",
            "carol",
            requested("rel-2", vec![change("pricing", "6.0.0", "abc1234")]),
        )
        .await;
    let pushed = live.next().await;
    assert_eq!(pushed.kind, "release");
    assert_eq!(pushed.id, second, "the id is the stream sequence");
    assert_eq!(
        pushed.releases(),
        vec![("rel-2".to_owned(), "requested".to_owned())]
    );
    drop(live);

    // Missed while away: rel-1 planned, rel-3 requested; a catalog event is no release's.
    let planned = script
        .release(
            "rel-1",
            "railyard-planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: plan(
                    "rel-1",
                    &[("staging", Action::Deploy, "orders-api", Some("2.4.0"))],
                ),
            }),
        )
        .await;
    script
        .append(
            "catalog",
            "railyard-planner",
            Event::CatalogApplied(railyard_core::event::CatalogApplied {
                hash: "sha256:00".into(),
            }),
        )
        .await;
    let third = script
        .release(
            "rel-3",
            "carol",
            requested("rel-3", vec![change("pricing", "6.0.1", "abc1235")]),
        )
        .await;
    service.caught_up(third).await;
    let mut live = Sse::connect(&url, &who.operator, Some(second)).await;
    let a = live.next().await;
    let b = live.next().await;
    assert_eq!(
        (a.id, a.releases()),
        (planned, vec![("rel-1".to_owned(), "planned".to_owned())])
    );
    assert_eq!(
        (b.id, b.releases()),
        (third, vec![("rel-3".to_owned(), "requested".to_owned())])
    );
    // And live again after the replay.
    let fourth = script
        .release(
            "rel-2",
            "railyard-planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: plan(
                    "rel-2",
                    &[("staging", Action::Deploy, "pricing", Some("6.0.0"))],
                ),
            }),
        )
        .await;
    let c = live.next().await;
    assert_eq!(
        (c.id, c.releases()),
        (fourth, vec![("rel-2".to_owned(), "planned".to_owned())])
    );
    // A reconnect from the very first sequence replays each release once, at its newest.
    let mut replay = Sse::connect(&url, &who.operator, Some(0)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = replay.next().await;
        seen.push((event.id, event.releases()[0].0.clone()));
    }
    assert_eq!(
        seen,
        vec![
            (planned, "rel-1".to_owned()),
            (third, "rel-3".to_owned()),
            (fourth, "rel-2".to_owned())
        ]
    );

    service.stop().await;
    Ok(())
}
