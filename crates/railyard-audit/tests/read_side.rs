//! The read side over real NATS and real HTTP: a scripted set of releases (completed with
//! approvals and gates, rolled back, refused, held) gives the expected production change
//! report, timelines, approvals, gates, refused inputs and release status; the CLI renders
//! the same answers; access needs a valid token, and the auditor role for audit queries.

mod common;

use common::{Script, Service, callers, connect, reject_input, script_releases, temp_store};
use railyard::audit_cli::Format as OutputFormat;
use railyard::audit_cli::{AuditCommand, ClientArgs, FilterArgs, QueryArgs, run_audit};
use railyard_testkit::NatsServer;
use serde_json::Value;

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn query_args(
    service: &Service,
    token: &str,
    filter: FilterArgs,
    format: OutputFormat,
) -> QueryArgs {
    QueryArgs {
        filter,
        format,
        limit: None,
        client: ClientArgs {
            url: service.url(""),
            token: Some(token.to_owned()),
        },
    }
}

async fn cli(command: AuditCommand) -> String {
    let mut out = Vec::new();
    let code = run_audit(command, &mut out)
        .await
        .expect("the command succeeds");
    assert_eq!(code, 0);
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_releases_give_the_expected_report_timelines_and_status() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, store) = temp_store();
    let service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    script_releases(&mut script).await;
    reject_input(&bus).await;
    service.caught_up(script.last_sequence).await;
    let auditor = Some(callers.auditor.as_str());

    // The production change report: one row per production deployment.
    let (status, report) = get(&service.url("/v1/audit/report"), auditor).await;
    assert_eq!(status, 200, "{report}");
    insta::assert_json_snapshot!("production_report", report);

    // The same report as the CLI prints it, as a table and as CSV.
    let table = cli(AuditCommand::Report(query_args(
        &service,
        &callers.auditor,
        FilterArgs::default(),
        OutputFormat::Table,
    )))
    .await;
    insta::assert_snapshot!("production_report_table", table);
    let csv = cli(AuditCommand::Report(query_args(
        &service,
        &callers.auditor,
        FilterArgs::default(),
        OutputFormat::Csv,
    )))
    .await;
    insta::assert_snapshot!("production_report_csv", csv);

    // Timelines.
    let rel_2 = FilterArgs {
        release: Some("rel-2".into()),
        ..FilterArgs::default()
    };
    let timeline = cli(AuditCommand::Timeline(query_args(
        &service,
        &callers.auditor,
        rel_2,
        OutputFormat::Table,
    )))
    .await;
    insta::assert_snapshot!("timeline_rel_2", timeline);
    let (status, timeline) = get(&service.url("/v1/audit/timeline?release=rel-3"), auditor).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("timeline_rel_3", timeline, {".items[].event_id" => "[event id]"});

    // Changes to a service in production in a time range; everything an actor did.
    let changes = cli(AuditCommand::Changes(query_args(
        &service,
        &callers.auditor,
        FilterArgs {
            service: Some("billing-worker".into()),
            env: Some("production".into()),
            since: Some("2026-03-02T09:30:00Z".into()),
            until: Some("2026-03-02T09:45:00Z".into()),
            ..FilterArgs::default()
        },
        OutputFormat::Table,
    )))
    .await;
    insta::assert_snapshot!("changes_billing_worker_production", changes);
    let alice = cli(AuditCommand::Actor(query_args(
        &service,
        &callers.auditor,
        FilterArgs {
            actor: Some("alice".into()),
            ..FilterArgs::default()
        },
        OutputFormat::Table,
    )))
    .await;
    insta::assert_snapshot!("actor_alice", alice);

    // Approvals and gates.
    let approvals = cli(AuditCommand::Approvals(query_args(
        &service,
        &callers.auditor,
        FilterArgs::default(),
        OutputFormat::Table,
    )))
    .await;
    insta::assert_snapshot!("approvals", approvals);
    // One meaning in every format: `by` is who decided (nobody, for a request), `approvers`
    // who was asked, `recorded_by` who wrote the event.
    let (status, json) = get(&service.url("/v1/audit/approvals"), auditor).await;
    assert_eq!(status, 200, "{json}");
    let csv = cli(AuditCommand::Approvals(query_args(
        &service,
        &callers.auditor,
        FilterArgs::default(),
        OutputFormat::Csv,
    )))
    .await;
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("at,release,step,decision,by,approvers,recorded_by,comment")
    );
    for (item, row) in json["items"].as_array().unwrap().iter().zip(rows) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[3], item["decision"], "{row}");
        assert_eq!(cells[4], item["by"], "{row}");
        assert_eq!(cells[6], item["recorded_by"], "{row}");
        if item["decision"] == "requested" {
            assert_eq!(item["by"], "", "nobody decided a request: {item}");
            assert!(!item["approvers"].as_array().unwrap().is_empty(), "{item}");
        }
    }
    let gates = cli(AuditCommand::Gates(query_args(
        &service,
        &callers.auditor,
        FilterArgs {
            env: Some("production".into()),
            ..FilterArgs::default()
        },
        OutputFormat::Csv,
    )))
    .await;
    insta::assert_snapshot!("gates_production", gates);

    // Refused inputs come from the rejection log.
    let (status, rejections) = get(&service.url("/v1/audit/rejections"), auditor).await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("rejections", rejections);

    // Pagination: two at a time gives the same items as all at once.
    let (_, all) = get(&service.url("/v1/audit/events?service=orders-api"), auditor).await;
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => service.url(&format!(
                "/v1/audit/events?service=orders-api&limit=2&cursor={cursor}"
            )),
            None => service.url("/v1/audit/events?service=orders-api&limit=2"),
        };
        let (status, page) = get(&url, auditor).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(Value::Array(paged), all["items"]);
    assert!(all["items"].as_array().unwrap().len() > 10);

    // Release status: completed, rolled back, refused, held with the owner to act.
    for release in ["rel-1", "rel-2", "rel-3", "rel-4"] {
        let (status, body) = get(
            &service.url(&format!("/v1/releases/{release}")),
            Some(&callers.operator),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        // rel-1 and rel-2 have `service.deployed` records on `inventory.production` in their
        // index: their timeline, not anomalies of their fold.
        assert_eq!(
            body["anomalies"],
            serde_json::json!([]),
            "{release}: {body}"
        );
        insta::assert_json_snapshot!(format!("status_{release}"), body);
    }

    // The release list: newest first, filtered, paged with a cursor; any valid token.
    let (status, list) = get(&service.url("/v1/releases"), Some(&callers.operator)).await;
    assert_eq!(status, 200, "{list}");
    insta::assert_json_snapshot!("release_list", list);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["release"].as_str().unwrap().to_owned())
            .collect()
    };
    let all_ids = ids(&list);
    assert_eq!(all_ids.len(), 4, "{list}");
    // The list's status is the status the release's own fold gives.
    for item in list["items"].as_array().unwrap() {
        let id = item["release"].as_str().unwrap();
        let (_, status) = get(
            &service.url(&format!("/v1/releases/{id}")),
            Some(&callers.operator),
        )
        .await;
        assert_eq!(item["status"], status["status"], "{id}");
    }
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => service.url(&format!("/v1/releases?limit=1&cursor={cursor}")),
            None => service.url("/v1/releases?limit=1"),
        };
        let (status, page) = get(&url, Some(&callers.operator)).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all_ids);
    for (query, expected) in [
        ("status=held", vec!["rel-4"]),
        ("status=rolled_back", vec!["rel-2"]),
        ("service=email-worker", vec!["rel-3"]),
        ("requester=nobody", vec![]),
    ] {
        let (status, page) = get(
            &service.url(&format!("/v1/releases?{query}")),
            Some(&callers.operator),
        )
        .await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(ids(&page), expected, "{query}: {page}");
    }
    let (status, body) = get(
        &service.url("/v1/releases?status=paused"),
        Some(&callers.operator),
    )
    .await;
    assert_eq!(
        (status, body["path"].as_str()),
        (422, Some("status")),
        "{body}"
    );
    let (status, _) = get(&service.url("/v1/releases"), None).await;
    assert_eq!(status, 401);
    let mut out = Vec::new();
    railyard::audit_cli::run_release(
        railyard::audit_cli::ReleaseCommand::List(railyard::audit_cli::ListArgs {
            service: None,
            env: Some("production".into()),
            status: None,
            requester: None,
            since: None,
            until: None,
            limit: 20,
            json: false,
            client: ClientArgs {
                url: service.url(""),
                token: Some(callers.operator.clone()),
            },
        }),
        &mut out,
    )
    .await?;
    insta::assert_snapshot!("release_list_text", String::from_utf8(out)?);
    let mut out = Vec::new();
    railyard::audit_cli::run_release(
        railyard::audit_cli::ReleaseCommand::Status(railyard::audit_cli::StatusArgs {
            id: "rel-4".into(),
            json: false,
            client: ClientArgs {
                url: service.url(""),
                token: Some(callers.operator.clone()),
            },
        }),
        &mut out,
    )
    .await?;
    insta::assert_snapshot!("status_rel_4_text", String::from_utf8(out)?);

    // Errors: unknown release, bad id, missing filter.
    let (status, body) = get(&service.url("/v1/releases/rel-404"), auditor).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not found")));
    let (status, body) = get(&service.url("/v1/releases/bad.id"), auditor).await;
    assert_eq!((status, body["path"].as_str()), (422, Some("id")));
    let (status, body) = get(&service.url("/v1/audit/timeline"), auditor).await;
    assert_eq!((status, body["path"].as_str()), (422, Some("release")));
    let (status, body) = get(&service.url("/v1/audit/events?since=yesterday"), auditor).await;
    assert_eq!((status, body["path"].as_str()), (422, Some("since")));

    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reads_need_the_auditor_role_and_status_any_valid_token() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, store) = temp_store();
    let service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    script
        .release(
            "rel-9",
            "carol",
            common::requested("rel-9", vec![common::change("auth", "1.0.0", "abc1234")]),
        )
        .await;
    service.caught_up(script.last_sequence).await;

    let post = |token: Option<String>| {
        let mut request = reqwest::Client::new().post(service.url("/v1/audit/verify"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let cases: [(&str, Option<&str>, u16); 9] = [
        ("/v1/audit/report", None, 401),
        ("/v1/audit/report", Some("ry_not-a-known-token"), 401),
        ("/v1/audit/report", Some(&callers.operator), 403),
        ("/v1/audit/report", Some(&callers.auditor), 200),
        ("/v1/audit/events", Some(&callers.operator), 403),
        ("/v1/releases/rel-9", None, 401),
        ("/v1/releases/rel-9", Some(&callers.operator), 200),
        ("/v1/releases/rel-9", Some(&callers.auditor), 200),
        ("/v1/audit/nonsense", Some(&callers.auditor), 404),
    ];
    for (path, token, expected) in cases {
        let (status, body) = get(&service.url(path), token).await;
        assert_eq!(status, expected, "{path} with {token:?}: {body}");
        if status >= 400 {
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{body}"
            );
        }
    }
    assert_eq!(post(None).await, 401);
    assert_eq!(post(Some(callers.operator.clone())).await, 403);
    assert_eq!(post(Some(callers.auditor.clone())).await, 200);
    service.stop().await;
    Ok(())
}
