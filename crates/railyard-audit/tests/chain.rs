//! The audit record as a chain, over a real nats-server: stopped mid-stream and restarted
//! (task and process) it holds every event exactly once, in stream order; `rebuild` gives
//! byte-identical records and query answers; and records edited, forged, deleted or swapped
//! directly in the sled store make `verify` name the first bad record each time.

mod common;

use common::{
    Script, Service, WAIT, callers, connect, head_key, open, record_key, record_value,
    script_releases, tamper, temp_store,
};
use railyard::audit_cli::{AuditCommand, ClientArgs, VerifyArgs, run_audit};
use railyard_audit::queries::{QueryKind, run_query};
use railyard_audit::record::{canonical_bytes, record_hash};
use railyard_audit::{Filter, Head, ProblemKind, Reader, verify};
use railyard_bus::Bus;
use railyard_store::RunOptions;
use railyard_testkit::NatsServer;
use serde_json::Value;
use std::path::Path;

/// Every query answer the test compares across a rebuild.
async fn answers(service: &Service) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, filter) in [
        (QueryKind::Report, Filter::default()),
        (QueryKind::Events, Filter::default()),
        (
            QueryKind::Changes,
            Filter {
                service: Some("orders-api".into()),
                ..Filter::default()
            },
        ),
        (QueryKind::Approvals, Filter::default()),
        (QueryKind::Gates, Filter::default()),
    ] {
        let answer = run_query(&service.audit, kind, filter, None, 1000)
            .await
            .unwrap();
        out.push(serde_json::to_string(&answer).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_mid_stream_and_restarted_it_records_every_event_once_and_rebuilds_identically()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, store) = temp_store();
    let mut service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let mut committed = service.audit.reader().store().watch_checkpoint();

    // Stop the projection while the stream is being written, part-way through.
    let mut script = Script::new(&bus);
    let writer = {
        let mut script = Script::new(&bus);
        tokio::spawn(async move {
            script_releases(&mut script).await;
            script
        })
    };
    tokio::time::timeout(WAIT, committed.wait_for(|c| *c >= 12)).await??;
    service.stop_projection().await;
    let stopped_at = service.audit.reader().head().await?;
    let written = tokio::time::timeout(WAIT, writer).await??;
    script.appended = written.appended;
    script.last_sequence = written.last_sequence;
    assert!(
        stopped_at.n < script.appended.len() as u64,
        "stopped part-way: {stopped_at:?}"
    );

    // Restart the task, then the whole process, on the same store.
    service.start_projection();
    service.caught_up(script.last_sequence).await;
    service.stop().await;
    let service = Service::start(&bus, &store, callers.tokens.clone()).await?;
    let sequence = script
        .append(
            "catalog",
            "planner",
            railyard_core::Event::CatalogApplied(railyard_core::event::CatalogApplied {
                hash: "sha256:11".into(),
            }),
        )
        .await;
    service.caught_up(sequence).await;

    // Exactly the appended events, in order, none doubled.
    let reader = service.audit.reader();
    let head = reader.head().await?;
    assert_eq!(head.n, script.appended.len() as u64);
    for (n, appended) in (1..).zip(&script.appended) {
        let record = reader.record(n).await?.expect("every record exists");
        assert_eq!(
            record.event_id(),
            Some(appended.event_id.to_string().as_str()),
            "record {n}"
        );
    }
    assert!(service.audit.verify().await?.ok);

    // A rebuild ends with the same bytes and the same answers.
    let before_entries = reader.store().raw_entries().await?;
    let before_answers = answers(&service).await;
    let mut service = service;
    service.stop_projection().await;
    let report = service.audit.rebuild().await?;
    assert_eq!(report.events, script.appended.len() as u64);
    assert_eq!(
        service.audit.reader().store().raw_entries().await?,
        before_entries
    );
    assert_eq!(answers(&service).await, before_answers);
    service.stop().await;
    Ok(())
}

/// Verifies the closed store at `path` against the stream (or not).
async fn verify_offline(
    path: &Path,
    bus: Option<&Bus>,
) -> anyhow::Result<railyard_audit::VerifyReport> {
    let store = open(path).await?;
    Ok(verify(&Reader::new(store), bus, common::start()).await?)
}

/// Restores the store from the stream and checks it verifies again.
async fn restore(path: &Path, bus: &Bus) -> anyhow::Result<()> {
    let store = open(path).await?;
    railyard_store::rebuild(bus, &store, &RunOptions::default()).await?;
    drop(store);
    assert!(verify_offline(path, Some(bus)).await?.ok);
    Ok(())
}

/// `railyard audit verify --store PATH`: its exit code and output.
async fn verify_cli(
    path: &Path,
    nats_url: &str,
    client: &ClientArgs,
) -> anyhow::Result<(u8, String)> {
    common::reopen("verify --store to open the store", || async {
        let mut out = Vec::new();
        let code = run_audit(
            AuditCommand::Verify(VerifyArgs {
                store: Some(path.to_owned()),
                nats_url: nats_url.to_owned(),
                no_stream: false,
                offline: None,
                public_key: Vec::new(),
                json: false,
                client: client.clone(),
            }),
            &mut out,
        )
        .await?;
        Ok((code, String::from_utf8(out)?))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_altered_removed_or_reordered_record() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, path) = temp_store();
    let service = Service::start(&bus, &path, callers.tokens.clone()).await?;
    let mut script = Script::new(&bus);
    script_releases(&mut script).await;
    service.caught_up(script.last_sequence).await;
    service.stop().await;
    let last = script.appended.len() as u64;

    // Untouched, it verifies, with and without the stream.
    let report = verify_offline(&path, Some(&bus)).await?;
    assert!(
        report.ok && report.stream_checked && report.records == last,
        "{report:?}"
    );
    assert!(verify_offline(&path, None).await?.ok);

    // Edited: record 5's actor changed, hash left alone.
    let mut edited = record_value(&path, 5).await?;
    edited["envelope"]["actor"] = "mallory".into();
    tamper(&path, vec![(record_key(5), Some(canonical_bytes(&edited)))]).await?;
    let problem = verify_offline(&path, Some(&bus))
        .await?
        .first_bad
        .expect("tampering is found");
    assert_eq!(
        (problem.n, problem.kind),
        (5, ProblemKind::Altered),
        "{problem:?}"
    );
    restore(&path, &bus).await?;

    // Forged: record 5 edited and the chain re-sealed from it to the head. The chain alone
    // holds; the stream gives it away.
    let mut prev = record_value(&path, 4).await?["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut writes = Vec::new();
    for n in 5..=last {
        let mut value = record_value(&path, n).await?;
        if n == 5 {
            value["envelope"]["actor"] = "mallory".into();
            value["facets"]["actor"] = "mallory".into();
        }
        value["prev"] = prev.clone().into();
        let hash = record_hash(&value);
        value["hash"] = hash.clone().into();
        prev = hash;
        writes.push((record_key(n), Some(canonical_bytes(&value))));
    }
    let head = Head {
        n: last,
        hash: prev,
        sequence: script.last_sequence,
    };
    writes.push((head_key(), Some(serde_json::to_vec(&head)?)));
    tamper(&path, writes).await?;
    assert!(
        verify_offline(&path, None).await?.ok,
        "a consistent forgery passes the chain alone"
    );
    let problem = verify_offline(&path, Some(&bus))
        .await?
        .first_bad
        .expect("the stream shows the forgery");
    assert_eq!(
        (problem.n, problem.kind),
        (5, ProblemKind::Altered),
        "{problem:?}"
    );
    assert!(
        problem
            .detail
            .contains("differs from event 0 of stream sequence"),
        "{problem:?}"
    );
    restore(&path, &bus).await?;

    // Deleted: record 7, then (separately) the last record.
    tamper(&path, vec![(record_key(7), None)]).await?;
    let problem = verify_offline(&path, Some(&bus))
        .await?
        .first_bad
        .expect("the gap is found");
    assert_eq!(
        (problem.n, problem.kind),
        (7, ProblemKind::Removed),
        "{problem:?}"
    );
    restore(&path, &bus).await?;
    tamper(&path, vec![(record_key(last), None)]).await?;
    let problem = verify_offline(&path, Some(&bus))
        .await?
        .first_bad
        .expect("the missing tail is found");
    assert_eq!(
        (problem.n, problem.kind),
        (last, ProblemKind::Removed),
        "{problem:?}"
    );
    restore(&path, &bus).await?;

    // Swapped: records 3 and 4 exchanged. Checked through the CLI, offline.
    let (three, four) = (record_value(&path, 3).await?, record_value(&path, 4).await?);
    tamper(
        &path,
        vec![
            (record_key(3), Some(canonical_bytes(&four))),
            (record_key(4), Some(canonical_bytes(&three))),
        ],
    )
    .await?;
    let client = ClientArgs {
        url: "http://127.0.0.1:9".into(),
        token: None,
    };
    let (code, printed) = verify_cli(&path, &server.url(), &client).await?;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.starts_with("audit record TAMPERED: first bad record is 3 (reordered"),
        "{printed}"
    );

    // The running service reports the same through POST /v1/audit/verify.
    let service = Service::start(&bus, &path, callers.tokens.clone()).await?;
    let report: Value = reqwest::Client::new()
        .post(service.url("/v1/audit/verify"))
        .bearer_auth(&callers.auditor)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad"]["n"], 3);
    assert_eq!(report["first_bad"]["kind"], "reordered");
    service.stop().await;
    restore(&path, &bus).await?;
    let (code, printed) = verify_cli(&path, &server.url(), &client).await?;
    assert_eq!(code, 0, "{printed}");
    Ok(())
}
