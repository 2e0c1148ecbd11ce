//! Approvals from Slack against a real nats-server and real local HTTP servers: Slack's signed
//! interactivity requests reach `/v1/slack/interactions`, and a local server stands in for
//! Slack's `response_url`. A bad signature, a stale timestamp, a replay, an unmapped Slack
//! user, the requester and an author are each refused with nothing appended; a mapped approver
//! approves (the message is replaced to say who), and a denial cancels the release.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use hmac::{Hmac, Mac};
use railyard_core::release_state::ApprovalState;
use railyard_core::{Clock, Event, ReleaseId, Status};
use railyard_http::{Role, Tokens, generate_token};
use railyard_promoter::slack::{APPROVE_ACTION, DENY_ACTION, SlackApprovals};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// The promoter's Slack route and a stand-in for Slack catching what is posted to the
/// `response_url`s.
struct Slack {
    url: String,
    stand_in: String,
    answers: Arc<Mutex<Vec<Value>>>,
    /// The `views.open` calls: the Authorization header and the body.
    views: Arc<Mutex<Vec<(String, Value)>>>,
    clock: railyard_core::ManualClock,
}

impl Slack {
    async fn start(h: &Harness) -> anyhow::Result<Slack> {
        let people: [(&str, &[Role], &[&str]); 5] = [
            ("alice", &[Role::Approver], &["slack:UALICE"]),
            ("bob", &[Role::Approver], &["slack:UBOB"]),
            ("carol", &[Role::Approver], &["slack:UCAROL"]),
            ("dave", &[Role::Approver], &["github:dave", "slack:UDAVE"]),
            ("ops", &[Role::Operator], &["slack:UOPS"]),
        ];
        let entries = people
            .iter()
            .map(|(name, roles, aliases)| {
                generate_token(
                    name,
                    roles.iter().copied().collect(),
                    aliases.iter().map(|a| a.to_string()).collect(),
                )
                .1
            })
            .collect();
        let answers: Arc<Mutex<Vec<Value>>> = Arc::default();
        let caught = answers.clone();
        let views: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let opened = views.clone();
        let stand_in = axum::Router::new()
            .route(
                "/actions/{id}",
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                    let caught = caught.clone();
                    async move {
                        caught.lock().unwrap().push(body);
                        "ok"
                    }
                }),
            )
            .route(
                "/api/views.open",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                        let opened = opened.clone();
                        async move {
                            let auth = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let ok = auth == "Bearer xoxb-test"
                                && body["trigger_id"].is_string()
                                && body["view"]["type"] == "modal";
                            opened.lock().unwrap().push((auth, body));
                            axum::Json(if ok {
                                json!({"ok": true})
                            } else {
                                json!({"ok": false, "error": "invalid_arguments"})
                            })
                        }
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let stand_in_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, stand_in).await });

        let state = railyard_promoter::RouteState {
            bus: h.bus.clone(),
            catalog: Arc::new(h.catalog.clone()),
            tokens: Tokens::from_entries(entries)?,
            clock: h.clock.shared(),
        };
        let slack = SlackApprovals::new(SECRET)
            .with_response_url_prefix(format!("{stand_in_url}/actions/"))
            .with_api(format!("{stand_in_url}/api"), "xoxb-test");
        let app = railyard_promoter::slack::router_with(state, slack);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Slack {
            url,
            stand_in: stand_in_url,
            answers,
            views,
            clock: h.clock.clone(),
        })
    }

    /// What a press of `action` on the approval request of `id` by Slack user `user` sends.
    fn press(&self, user: &str, action: &str, id: &ReleaseId) -> Vec<u8> {
        let value = json!({
            "release": id.to_string(),
            "step": "production:approve:rel-1",
            "env": "production",
        });
        self.press_with(user, action, value)
    }

    /// A press of `action` whose button carries `value`.
    fn press_with(&self, user: &str, action: &str, value: Value) -> Vec<u8> {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase(), "team_id": "T1"},
            "api_app_id": "A1",
            "trigger_id": "1.2.3",
            "response_url": format!("{}/actions/{user}-{action}", self.stand_in),
            "container": {"type": "message", "message_ts": "1700000000.000100"},
            "actions": [{
                "type": "button",
                "action_id": action,
                "block_id": "railyard.approval",
                "value": value.to_string(),
                "action_ts": "1700000001.000200",
            }],
        });
        format!("payload={}", encode(&payload.to_string())).into_bytes()
    }

    /// Sends `body` signed with `secret` at `timestamp`.
    async fn send(
        &self,
        body: &[u8],
        secret: &str,
        timestamp: i64,
    ) -> anyhow::Result<(u16, Value)> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
        mac.update(format!("v0:{timestamp}:").as_bytes());
        mac.update(body);
        let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
        let response = reqwest::Client::new()
            .post(format!("{}/v1/slack/interactions", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body.to_vec())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// What Slack was told since the last call.
    fn told(&self) -> Vec<Value> {
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// What submitting the override's modal (opened with `metadata`) with `reason` sends.
fn submission(user: &str, metadata: &str, reason: &str) -> Vec<u8> {
    let payload = json!({
        "type": "view_submission",
        "user": {"id": user},
        "view": {
            "id": "V1",
            "callback_id": "railyard.override_freeze",
            "private_metadata": metadata,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    });
    format!("payload={}", encode(&payload.to_string())).into_bytes()
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn approval_catalog() -> String {
    estate(
        r#"{ kind = "simulated" }"#,
        r#"approval = { required = true, approvers = ["carol", "github:dave", "group:release-managers"] }"#,
    )
}

async fn awaiting_approval(h: &Harness) -> anyhow::Result<ReleaseId> {
    let id = h.submit(RELEASE, &inventory()).await?;
    h.drive_until(
        &id,
        std::time::Duration::from_millis(500),
        "approval requested",
        |s| !s.approvals.is_empty(),
    )
    .await?;
    Ok(id)
}

#[tokio::test]
async fn only_a_signed_fresh_press_by_a_mapped_approver_who_neither_requested_nor_authored_counts()
-> anyhow::Result<()> {
    let h = Harness::start(&approval_catalog()).await?;
    h.seed(&inventory()).await?;
    let slack = Slack::start(&h).await?;
    let worker = h.worker("w1");
    let id = awaiting_approval(&h).await?;
    let before = h.events(&id).await?.len();

    // Not from Slack: refused before anything is read, and Slack is told nothing.
    let alice = slack.press("UALICE", APPROVE_ACTION, &id);
    let (status, body) = slack
        .send(&alice, "not-the-signing-secret", slack.now())
        .await?;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("does not match"),
        "{body}"
    );
    let (status, body) = slack.send(&alice, SECRET, slack.now() - 301).await?;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("301s away"),
        "{body}"
    );
    assert!(slack.told().is_empty());

    // Signed by Slack, but refused by a rule: 200 (Slack needs it) and an ephemeral answer
    // to the presser saying why.
    let refused = [
        (
            "UNOBODY",
            "Slack user UNOBODY is not mapped to a Railyard identity",
        ),
        ("UOPS", "ops does not have the approver role"),
        (
            "UCAROL",
            "requester cannot approve: carol requested release rel-1 and may not approve it",
        ),
        (
            "UDAVE",
            "author cannot approve: dave authored orders-api 2.0.0 in release rel-1",
        ),
    ];
    let now = slack.now();
    for (user, why) in refused {
        let press = slack.press(user, APPROVE_ACTION, &id);
        let (status, body) = slack.send(&press, SECRET, now).await?;
        assert_eq!(status, 200, "{user}: {body}");
        assert_eq!(body["outcome"], "refused", "{user}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(why),
            "{user}: {body}"
        );
        let told = slack.told();
        assert_eq!(told.len(), 1, "{user}: {told:?}");
        assert_eq!(told[0]["response_type"], "ephemeral");
        assert_eq!(told[0]["replace_original"], false);
        assert!(
            told[0]["text"].as_str().unwrap().contains(why),
            "{user}: {told:?}"
        );
        // The same signed request again is a replay.
        let (status, body) = slack.send(&press, SECRET, now).await?;
        assert_eq!(status, 401, "{user}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("replay"),
            "{body}"
        );
    }
    assert!(slack.told().is_empty(), "a replay is not answered in Slack");
    assert_eq!(
        h.events(&id).await?.len(),
        before,
        "nothing was appended by the refusals"
    );
    assert!(matches!(
        h.state(&id).await?.approvals["production:approve:rel-1"],
        ApprovalState::Requested { .. }
    ));

    // alice (through the release-managers group) approves: the approval is hers, sealed by the
    // promoter like the HTTP route's, and the message now says who decided.
    let (status, body) = slack.send(&alice, SECRET, slack.now()).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "accepted", "{body}");
    assert_eq!(body["detail"], "alice approved rel-1 for production");
    let told = slack.told();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["replace_original"], true);
    assert_eq!(
        told[0]["blocks"][0]["text"]["text"],
        ":white_check_mark: *Approved* for *production* by *alice* (<@UALICE>) in Slack — release *rel-1*"
    );
    let events = h.events(&id).await?;
    let granted = events
        .iter()
        .find(|e| matches!(e.event, Event::ApprovalGranted(_)))
        .expect("the approval is recorded");
    assert_eq!(granted.actor, "alice");
    // Replaying alice's press (within the five minutes) is refused as a replay, not decided
    // again.
    let (status, body) = slack.send(&alice, SECRET, slack.now()).await?;
    assert_eq!(status, 401, "{body}");
    let state = h.wait_status(&id, Status::Completed).await?;
    assert_eq!(
        state.approvals["production:approve:rel-1"],
        ApprovalState::Granted {
            by: "alice".into(),
            comment: "via Slack".into()
        }
    );
    worker.shutdown().await
}

#[tokio::test]
async fn a_denial_from_slack_cancels_the_release_and_bad_requests_get_a_clear_4xx()
-> anyhow::Result<()> {
    let h = Harness::start(&approval_catalog()).await?;
    h.seed(&inventory()).await?;
    let slack = Slack::start(&h).await?;
    let worker = h.worker("w1");
    let id = awaiting_approval(&h).await?;

    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/slack/interactions", slack.url);
    let json_body = client
        .post(&endpoint)
        .json(&json!({"payload": {}}))
        .send()
        .await?;
    assert_eq!(json_body.status().as_u16(), 415);
    let huge = client
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 70 * 1024])
        .send()
        .await?;
    assert_eq!(huge.status().as_u16(), 413);
    let (status, body) = slack
        .send(b"payload=%7Bnot+json", SECRET, slack.now())
        .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["path"], "payload");

    let deny = slack.press("UBOB", DENY_ACTION, &id);
    let (status, body) = slack.send(&deny, SECRET, slack.now()).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "accepted", "{body}");
    let told = slack.told();
    assert!(
        told[0]["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with(":no_entry_sign: *Denied* for *production* by *bob*"),
        "{told:?}"
    );
    let state = h.state(&id).await?;
    assert_eq!(state.status, Status::Denied);
    assert_eq!(
        state.ended_because.as_deref(),
        Some("denied for production by bob: via Slack")
    );
    worker.shutdown().await
}

#[tokio::test]
async fn a_freeze_is_overridden_from_slack_only_by_a_listed_approver_with_a_reason_given_in_a_modal()
-> anyhow::Result<()> {
    let freeze = r#"freeze = [{ cron = "0 9 * * MON", duration = "3h", timezone = "Europe/Berlin", reason = "monday change board" }]"#;
    let catalog = estate(
        r#"{ kind = "simulated" }"#,
        &format!(
            "{freeze}\napproval = {{ required = true, approvers = [\"carol\", \"github:dave\", \"group:release-managers\"] }}"
        ),
    );
    let h = Harness::start(&catalog).await?;
    h.seed(&inventory()).await?;
    let slack = Slack::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    let held = h.wait_status(&id, Status::Held).await?;
    assert!(held.hold.as_ref().is_some_and(|h| h.frozen.is_some()));
    let before = h.events(&id).await?.len();
    let value = json!({"release": id.to_string(), "env": "production"});

    // An unmapped user is refused before any modal opens.
    let press = slack.press_with("UNOBODY", "railyard.override_freeze", value.clone());
    let (status, body) = slack.send(&press, SECRET, slack.now()).await?;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("refused")),
        "{body}"
    );
    assert!(slack.views.lock().unwrap().is_empty());
    slack.told();

    // alice presses Override freeze: the promoter asks for the reason in a modal.
    let press = slack.press_with("UALICE", "railyard.override_freeze", value);
    let (status, body) = slack.send(&press, SECRET, slack.now()).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "asked", "{body}");
    let (auth, opened) = slack
        .views
        .lock()
        .unwrap()
        .pop()
        .expect("views.open was called");
    assert_eq!(auth, "Bearer xoxb-test");
    assert_eq!(opened["trigger_id"], "1.2.3");
    assert_eq!(opened["view"]["callback_id"], "railyard.override_freeze");
    let metadata = opened["view"]["private_metadata"]
        .as_str()
        .unwrap()
        .to_owned();

    // Submitted without a reason, or by the requester: the modal shows why; nothing appended.
    for (user, reason, why) in [
        ("UALICE", "  ", "needs a reason"),
        ("UCAROL", "hotfix", "requester cannot approve"),
    ] {
        let (status, body) = slack
            .send(&submission(user, &metadata, reason), SECRET, slack.now())
            .await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response_action"], "errors", "{body}");
        assert!(
            body["errors"]["reason"].as_str().unwrap().contains(why),
            "{user}: {body}"
        );
    }
    assert_eq!(h.events(&id).await?.len(), before, "nothing was appended");

    // With a reason: the override is alice's, the release resumes, the thread is told.
    let reason = "checkout is down; the fix is in this release";
    let response = reqwest::Client::new();
    let body = submission("UALICE", &metadata, reason);
    let (status, answer) = {
        let timestamp = slack.now();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
        mac.update(format!("v0:{timestamp}:").as_bytes());
        mac.update(&body);
        let got = response
            .post(format!("{}/v1/slack/interactions", slack.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header(
                "x-slack-signature",
                format!("v0={}", hex::encode(mac.finalize().into_bytes())),
            )
            .body(body)
            .send()
            .await?;
        (got.status().as_u16(), got.text().await?)
    };
    assert_eq!(
        (status, answer.as_str()),
        (200, ""),
        "an empty 200 closes the modal"
    );
    let events = h.events(&id).await?;
    let overridden = events
        .iter()
        .find_map(|e| match &e.event {
            Event::FreezeOverridden(f) => Some((e.actor.clone(), f.reason.clone())),
            _ => None,
        })
        .expect("the override is recorded");
    assert_eq!(overridden, ("alice".to_owned(), reason.to_owned()));
    assert_eq!(h.state(&id).await?.status, Status::Planned);
    let told = slack.told();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0]["text"].as_str().unwrap().starts_with(
            ":rotating_light: alice (<@UALICE>) overrode the freeze of production for release rel-1 from Slack"
        ),
        "{told:?}"
    );
    worker.shutdown().await
}
