//! What the web console needs from the read side, over real NATS and real HTTP: the page and
//! its files (strict CSP, content-hash ETag, 304 on revalidation, nothing inline), `GET
//! /v1/whoami` (401 without a valid token, the roles with one), `GET /v1/releases/{id}/plan`
//! (the plan with edges, waves and critical path; 404 in words before a plan), `GET
//! /v1/estate` (the inventory folded from `service.deployed`), and the release
//! list with 1,000 releases: every release once across cursor pages, filters by service and
//! requester, each page answered fast.

mod common;

use std::time::{Duration, Instant};

use common::{Script, Service, callers, change, connect, deployed, plan, requested, temp_store};
use railyard_core::event::{ReleasePlanned, ReleaseRequested};
use railyard_core::{Action, Event};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_revalidates_by_hash() -> anyhow::Result<()>
{
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, store) = temp_store();
    let who = callers();
    let service = Service::start(&bus, &store, who.tokens.clone()).await?;
    let http = reqwest::Client::new();

    // The page needs no token: signing in happens in it.
    let page = http.get(service.url("/")).send().await?;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str()?;
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
    let etag = headers["etag"].to_str()?.to_owned();
    let html = page.text().await?;
    assert!(html.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    // No inline script or style anywhere: the policy would block it.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("style=") && !html.contains("<style") && !html.contains(" on"));

    // Revalidation by ETag answers 304 with no body.
    let again = http
        .get(service.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str()?, etag);

    for asset in railyard_console::ASSETS {
        let url = if asset.name == "index.html" {
            service.url("/")
        } else {
            service.url(&format!("/console/{}", asset.name))
        };
        let answer = http.get(&url).send().await?;
        assert_eq!(answer.status(), 200, "{url}");
        assert_eq!(answer.headers()["content-type"], asset.content_type);
        assert_eq!(
            answer.headers()["etag"].to_str()?,
            railyard_console::etag(asset.body)
        );
        // Nothing from another origin: every asset is embedded.
        let body = answer.text().await?;
        assert!(
            !body.contains("https://"),
            "{} names no remote origin",
            asset.name
        );
    }
    // The links Slack and GitHub carry (`<console>/releases/<id>`) open the same page.
    let linked = http.get(service.url("/releases/orders-v3")).send().await?;
    assert_eq!(linked.status(), 200);
    assert_eq!(linked.headers()["etag"].to_str()?, etag);
    let missing = http.get(service.url("/console/nope.js")).send().await?;
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await?.contains("no file \"nope.js\""));

    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_plan_and_estate_need_a_token_and_answer_what_the_page_draws() -> anyhow::Result<()>
{
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, store) = temp_store();
    let who = callers();
    let service = Service::start(&bus, &store, who.tokens.clone()).await?;
    let mut script = Script::new(&bus);

    let (status, body) = get(&service.url("/v1/whoami"), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = get(&service.url("/v1/whoami"), Some("ry_not-a-token")).await;
    assert_eq!(status, 401);
    let (status, body) = get(&service.url("/v1/whoami"), Some(&who.operator)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"identity": "olga", "roles": ["operator"]})
    );
    let (_, body) = get(&service.url("/v1/whoami"), Some(&who.auditor)).await;
    assert_eq!(body["roles"], serde_json::json!(["auditor"]));

    script
        .release(
            "rel-1",
            "carol",
            requested("rel-1", vec![change("orders-api", "2.4.0", "d4e5f6a")]),
        )
        .await;
    service.caught_up(script.last_sequence).await;
    let (status, body) = get(&service.url("/v1/releases/rel-1/plan"), Some(&who.operator)).await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("has no plan (requested)"),
        "{body}"
    );
    let (status, _) = get(&service.url("/v1/releases/rel-1/plan"), None).await;
    assert_eq!(status, 401);

    let planned = plan(
        "rel-1",
        &[
            ("staging", Action::Deploy, "orders-api", Some("2.4.0")),
            ("staging", Action::Verify, "orders-api", Some("2.4.0")),
            ("production", Action::Approve, "rel-1", None),
        ],
    );
    script
        .release(
            "rel-1",
            "planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: planned.clone(),
            }),
        )
        .await;
    service.caught_up(script.last_sequence).await;
    let (status, body) = get(&service.url("/v1/releases/rel-1/plan"), Some(&who.operator)).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::to_value(&planned)?);
    assert_eq!(
        body["critical_path"],
        serde_json::json!([
            "staging:deploy:orders-api",
            "staging:verify:orders-api",
            "production:approve:rel-1"
        ])
    );
    assert_eq!(body["edges"][0]["rule"], "step-order");
    // The estate: the last deployment of each service per environment.
    let (status, _) = get(&service.url("/v1/estate"), None).await;
    assert_eq!(status, 401);
    script
        .append(
            "inventory.production",
            "promoter",
            deployed("production", "orders-api", "2.3.0", "a1b2c3d", None),
        )
        .await;
    script
        .append(
            "inventory.production",
            "promoter",
            deployed(
                "production",
                "orders-api",
                "2.4.0",
                "d4e5f6a",
                Some("rel-1"),
            ),
        )
        .await;
    script
        .append(
            "inventory.staging",
            "promoter",
            deployed("staging", "billing-worker", "1.9.0", "0f0f0f0", None),
        )
        .await;
    service.caught_up(script.last_sequence).await;
    let (status, body) = get(&service.url("/v1/estate"), Some(&who.auditor)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["inventory"]["production"]["services"]["orders-api"]["version"],
        "2.4.0"
    );
    assert_eq!(
        body["inventory"]["staging"]["services"]["billing-worker"]["commit"],
        "0f0f0f0"
    );
    assert!(body["last_record"].as_u64().unwrap() > 0);

    let (status, body) = get(&service.url("/v1/releases/nope/plan"), Some(&who.operator)).await;
    assert_eq!(status, 404);
    assert!(body["detail"].as_str().unwrap().contains("release nope"));

    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_releases_page_and_filter_fast() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, store) = temp_store();
    let who = callers();
    let service = Service::start(&bus, &store, who.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    for i in 0..1000 {
        let id = format!("rel-{i:04}");
        let service_name = if i % 2 == 0 {
            "orders-api"
        } else {
            "billing-worker"
        };
        let requester = if i % 10 == 0 { "dave" } else { "carol" };
        script
            .release(
                &id,
                requester,
                Event::ReleaseRequested(ReleaseRequested {
                    release: id.parse().unwrap(),
                    requested_by: requester.into(),
                    changes: vec![change(service_name, "1.0.0", "a1b2c3d")],
                }),
            )
            .await;
    }
    service.caught_up(script.last_sequence).await;

    // The console's first page: 25 newest, timed as the page asks for it.
    let mut slowest = Duration::ZERO;
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(cursor) => service.url(&format!("/v1/releases?limit=25&cursor={cursor}")),
            None => service.url("/v1/releases?limit=25"),
        };
        let started = Instant::now();
        let (status, page) = get(&url, Some(&who.operator)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        if pages == 0 {
            assert_eq!(items[0]["release"], "rel-0999", "newest first");
        }
        for item in items {
            assert!(seen.insert(item["release"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000, "every release once");
    // 40 full pages; a full last page may still carry a cursor to an empty one.
    assert!((40..=41).contains(&pages), "{pages} pages");
    println!("{pages} pages of 25 of 1,000 releases: slowest page {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "a page of the list answers within 500 ms (slowest {slowest:?})"
    );

    // Filters narrow on the server: 100 by dave, half of them orders-api.
    let started = Instant::now();
    let (_, page) = get(
        &service.url("/v1/releases?requester=dave&service=orders-api&limit=100"),
        Some(&who.operator),
    )
    .await;
    let filtered = started.elapsed();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert!(items.iter().all(|item| item["requested_by"] == "dave"
        && item["services"] == serde_json::json!(["orders-api"])));
    println!("a filtered page (requester and service) of 1,000 releases: {filtered:?}");
    let (_, page) = get(
        &service.url("/v1/releases?status=requested&env=production"),
        Some(&who.operator),
    )
    .await;
    assert_eq!(page["items"], serde_json::json!([]), "none is planned");
    let (status, page) = get(
        &service.url("/v1/releases?status=stuck"),
        Some(&who.operator),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        page["detail"]
            .as_str()
            .unwrap()
            .contains("not a release status")
    );
    let (status, _) = get(&service.url("/v1/releases"), None).await;
    assert_eq!(status, 401);

    service.stop().await;
    Ok(())
}
