//! Every mapping, as data: each file of `tests/fixtures/mappings/` is one input (its door —
//! CDEvents bare, CloudEvents structured or binary over HTTP or NATS, GitHub, GitLab — and its
//! body), fed in file order through one intake over a real nats-server. The snapshot holds the
//! answer and the events it appended (ids and timestamps redacted), so the fixtures also
//! show the trigger policy: suites attach by version, commit and chain id, releases are
//! requested when the last signal arrives, and groups wait for every member.

mod common;

use std::path::Path;

use anyhow::Context as _;
use common::{GITLAB_TOKEN, Harness, normalised};
use serde_json::{Value, json};

async fn feed(harness: &Harness, fixture: &Value) -> anyhow::Result<(u16, Value)> {
    let door = fixture["door"].as_str().context("fixture door")?;
    let body = &fixture["body"];
    let bytes = serde_json::to_vec(body)?;
    let auth = ("authorization", format!("Bearer {}", harness.publisher));
    let context = &body["context"];
    let field = |name: &str| context[name].as_str().unwrap_or_default().to_owned();
    let structured = || {
        json!({
            "specversion": "1.0",
            "id": field("id"),
            "source": field("source"),
            "type": field("type"),
            "datacontenttype": "application/json",
            "data": body,
        })
    };
    let binary_headers = || {
        vec![
            ("ce-specversion", "1.0".to_owned()),
            ("ce-id", field("id")),
            ("ce-source", field("source")),
            ("ce-type", field("type")),
            ("content-type", "application/json".to_owned()),
        ]
    };
    let from_reply = |reply: Value| -> anyhow::Result<(u16, Value)> {
        let status = reply["status"].as_u64().context("reply status")? as u16;
        Ok((status, reply))
    };
    match door {
        "cdevents" => harness.cdevent(body).await,
        "cloudevents-structured" => {
            harness
                .post(
                    "/v1/cdevents",
                    &[
                        auth,
                        ("content-type", "application/cloudevents+json".to_owned()),
                    ],
                    serde_json::to_vec(&structured())?,
                )
                .await
        }
        "cloudevents-binary" => {
            let mut headers = binary_headers();
            headers.push(auth);
            harness.post("/v1/cdevents", &headers, bytes).await
        }
        "nats-binary" => {
            let headers = binary_headers();
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            from_reply(harness.nats(&pairs, bytes).await?)
        }
        "nats-structured" => {
            let payload = serde_json::to_vec(&structured())?;
            from_reply(
                harness
                    .nats(&[("content-type", "application/cloudevents+json")], payload)
                    .await?,
            )
        }
        "github" => {
            let event = fixture["event"].as_str().context("github event")?;
            let delivery = fixture["delivery"].as_str().context("github delivery")?;
            harness.github(event, delivery, &bytes).await
        }
        "gitlab" => {
            let headers = [
                ("x-gitlab-token", GITLAB_TOKEN.to_owned()),
                (
                    "x-gitlab-event",
                    fixture["event"].as_str().unwrap_or_default().to_owned(),
                ),
                (
                    "x-gitlab-event-uuid",
                    fixture["delivery"].as_str().unwrap_or_default().to_owned(),
                ),
                ("content-type", "application/json".to_owned()),
            ];
            harness.post("/v1/webhooks/gitlab", &headers, bytes).await
        }
        other => anyhow::bail!("unknown door {other:?} in fixture"),
    }
}

#[test]
fn every_mapping_through_http_and_nats() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let harness = runtime.block_on(Harness::start())?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mappings");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert!(files.len() >= 20, "fixtures missing in {}", dir.display());
    for path in files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("fixture name")?
            .to_owned();
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let (status, mut answer, events) = runtime.block_on(async {
            let before = harness.last_sequence().await?;
            let (status, answer) = feed(&harness, &fixture).await?;
            let events = harness.events_since(before).await?;
            anyhow::Ok((status, answer, events))
        })?;
        if let Some(id) = answer.get_mut("event_id") {
            *id = "[event_id]".into();
        }
        insta::with_settings!({ snapshot_suffix => name.clone(), prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_json_snapshot!("mapping", json!({ "status": status, "answer": answer, "events": normalised(&events) }));
        });
    }
    Ok(())
}
