//! Release submission: `railyard release submit` (the CLI type, over real HTTP) records
//! `release.requested` with `requested_by` set from the token; a second submission of the same
//! id is a 409; a file that sets `requested_by` or names an unknown service is a 422; and
//! `railyard token create` prints a token that the tokens-file line it prints admits.

mod common;

use common::Harness;
use railyard::intake_cli::{CliError, ReleaseSubmitArgs, TokenCreateArgs};
use railyard_core::{AggregateId, Event, ReleaseId};
use railyard_http::{Role, Tokens};

const RELEASE: &str = r#"
id = "rel-7"
[[changes]]
service = "orders-api"
version = "2.4.0"
artifact = "pkg:oci/orders-api@sha256%3A0b31b1c0"
produces = { orders-events = 3 }
"#;

#[tokio::test]
async fn a_submitted_release_is_requested_by_the_tokens_identity() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("release.toml");
    std::fs::write(&file, RELEASE)?;
    let submit = ReleaseSubmitArgs {
        file: file.clone(),
        url: harness.url.clone(),
        token: Some(harness.publisher.clone()),
    };
    let answer: serde_json::Value = serde_json::from_str(&submit.run().await?)?;
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    let loaded = harness
        .bus
        .load(&AggregateId::Release(ReleaseId::new("rel-7")?))
        .await?;
    let [event] = loaded.events.as_slice() else {
        panic!("one event: {loaded:?}")
    };
    assert_eq!(event.actor, "ci-bot");
    let Event::ReleaseRequested(requested) = &event.event else {
        panic!("{event:?}")
    };
    assert_eq!(requested.requested_by, "ci-bot");
    assert_eq!(requested.changes[0].service.as_str(), "orders-api");

    // The same id again is a conflict, recorded nowhere but the rejection log.
    match submit.run().await {
        Err(CliError::Refused { status: 409, body }) => {
            assert!(body.contains("already exists"), "{body}")
        }
        other => panic!("expected 409, got {other:?}"),
    }

    // requested_by comes from the token, never from the file.
    std::fs::write(
        &file,
        format!("requested_by = \"mallory\"\n{RELEASE}").replace("rel-7", "rel-8"),
    )?;
    match submit.run().await {
        Err(CliError::Refused { status: 422, body }) => {
            assert!(body.contains("release.requested_by"), "{body}")
        }
        other => panic!("expected 422, got {other:?}"),
    }
    // An unknown service names the change.
    std::fs::write(
        &file,
        RELEASE
            .replace("rel-7", "rel-9")
            .replace("orders-api\"", "nope\""),
    )?;
    match submit.run().await {
        Err(CliError::Refused { status: 422, body }) => {
            assert!(body.contains("release.changes[0].service"), "{body}")
        }
        other => panic!("expected 422, got {other:?}"),
    }
    // JSON works too.
    let json_file = dir.path().join("release.json");
    std::fs::write(
        &json_file,
        r#"{"id": "rel-10", "changes": [{"service": "billing-worker", "version": "1.0.0"}]}"#,
    )?;
    let answer = ReleaseSubmitArgs {
        file: json_file,
        url: harness.url.clone(),
        token: Some(harness.publisher.clone()),
    }
    .run()
    .await?;
    assert!(answer.contains("accepted"), "{answer}");
    // Without the publisher role: 403.
    match (ReleaseSubmitArgs {
        file: file.clone(),
        url: harness.url.clone(),
        token: Some(harness.auditor.clone()),
    })
    .run()
    .await
    {
        Err(CliError::Refused { status: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    // Without a token (neither --token nor RAILYARD_TOKEN): says how to give one.
    match (ReleaseSubmitArgs {
        file,
        url: harness.url.clone(),
        token: None,
    })
    .run()
    .await
    {
        Err(error @ CliError::NoToken) => assert_eq!(
            error.to_string(),
            "no token: pass --token or set RAILYARD_TOKEN to a token with the publisher role"
        ),
        other => panic!("expected no token, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_created_token_is_admitted_by_the_line_printed_with_it() -> anyhow::Result<()> {
    let args = TokenCreateArgs {
        identity: "alice".into(),
        roles: vec![Role::Approver],
        aliases: vec!["github:alice".into()],
    };
    let printed = args.run()?;
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token (shown once, keep it secret): "))
        .expect("the token line");
    let file: String = printed
        .lines()
        .skip_while(|l| !l.starts_with("[[tokens]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let identity = Tokens::from_toml(&file)?
        .verify(token)
        .expect("the token verifies");
    assert_eq!(identity.name, "alice");
    assert!(identity.is("github:alice"));
    assert!(identity.roles.contains(&Role::Approver));
    Ok(())
}
