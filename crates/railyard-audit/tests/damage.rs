//! A damaged audit store (issue 12, bug 2), over a real nats-server: bytes of one record
//! altered in a copy of the store's sled log, sled's checksums left alone, make sled end the
//! store just before that record without a word. Opening the copy says it was cut short, and
//! `verify` fails naming the first missing stream sequence — chain only, against the stream,
//! and through `railyard audit verify --store`; the running service applies the lost events
//! again from the stream and only then verifies. An undamaged copy verifies; a store merely
//! behind the stream fails saying how far, at rest and live.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Script, WAIT, callers, connect, script_releases, temp_store};
use railyard::audit_cli::{AuditCommand, ClientArgs, VerifyArgs, run_audit};
use railyard_audit::{
    Audit, AuditConfig, AuditProjection, ProblemKind, Reader, StoreCutShort, VerifyReport,
    open_store, verify, verify_live,
};
use railyard_bus::Bus;
use railyard_core::Event;
use railyard_core::event::CatalogApplied;
use railyard_store::{CutShort, ProjectionStore, RunOptions, rebuild};
use railyard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

/// The record whose bytes are damaged.
const DAMAGED: u64 = 50;

fn copy_dir(from: &Path, to: &Path) {
    railyard_testkit::disk::copy_dir(from, to).expect("the store directory copies");
}

fn damage(store: &Path, needle: &[u8]) -> usize {
    railyard_testkit::disk::flip_log_bytes(store, needle).expect("the log is rewritten")
}

async fn open(path: &Path) -> anyhow::Result<ProjectionStore<AuditProjection>> {
    common::reopen("the audit store to open", || async {
        Ok(open_store(path, None).await?)
    })
    .await
}

/// The scripted estate, then `extra` more events: one event per append, so on a fresh stream
/// record `n` is stream sequence `n`.
async fn estate(bus: &Bus, extra: u64) -> Script {
    let mut script = Script::new(bus);
    script_releases(&mut script).await;
    for i in 0..extra {
        script
            .append(
                "catalog",
                "planner",
                Event::CatalogApplied(CatalogApplied {
                    hash: format!("sha256:{i:02}"),
                }),
            )
            .await;
    }
    assert_eq!(script.last_sequence, script.appended.len() as u64);
    script
}

/// A store at `path` holding the whole stream, one append per sled batch (as a projection
/// that keeps up writes it), flushed: its durable mark is the stream's end.
async fn build(bus: &Bus, path: &Path) -> anyhow::Result<ProjectionStore<AuditProjection>> {
    let store = open(path).await?;
    let options = RunOptions {
        max_batch: 1,
        ..RunOptions::default()
    };
    rebuild(bus, &store, &options).await?;
    Ok(store)
}

/// `railyard audit verify --store PATH`: its exit code and output.
async fn verify_cli(path: &Path, nats_url: &str) -> anyhow::Result<(u8, String)> {
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
                client: ClientArgs {
                    url: "http://127.0.0.1:9".into(),
                    token: None,
                },
            }),
            &mut out,
        )
        .await?;
        Ok((code, String::from_utf8(out)?))
    })
    .await
}

fn lost_gauge(audit: &Audit) -> Option<String> {
    audit
        .config()
        .metrics
        .render()
        .lines()
        .find(|line| line.starts_with("railyard_audit_store_lost_sequences "))
        .map(str::to_owned)
}

fn assert_missing(report: &VerifyReport, n: u64, sequence: u64, says: &[&str]) {
    assert!(!report.ok, "{report:#?}");
    let problem = report.first_bad.as_ref().expect("a problem");
    assert_eq!(
        (problem.n, problem.sequence, problem.kind),
        (n, Some(sequence), ProblemKind::Missing),
        "{problem:#?}"
    );
    for words in says {
        assert!(problem.detail.contains(words), "{words:?} in {problem:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_on_disk_cuts_the_store_short_and_verify_names_the_first_missing_sequence()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let script = estate(&bus, 15).await;
    let last = script.last_sequence;
    let (dir, path) = temp_store();
    let store = build(&bus, &path).await?;
    // Copied while open and idle, as a backup would be; the original is left alone.
    let (honest, damaged, served) = (
        dir.path().join("honest"),
        dir.path().join("damaged"),
        dir.path().join("served"),
    );
    for copy in [&honest, &damaged, &served] {
        copy_dir(&path, copy);
    }
    drop(store);

    // Undamaged, it opens whole and verifies, to the stream's end.
    let reader = Reader::new(open(&honest).await?);
    assert_eq!(reader.store().cut_short(), None);
    let report = verify(&reader, Some(&bus), common::start()).await?;
    assert!(report.ok && report.stream_checked, "{report:#?}");
    assert_eq!(
        (
            report.records,
            report.stream_last_sequence,
            report.behind,
            &report.cut_short
        ),
        (last, Some(last), Some(0), &None)
    );
    drop(reader);

    // Record 50's bytes altered (its event id, wherever the log holds it): sled stops
    // recovering there and serves records 1..=49 as the whole store. Opening says so.
    let needle = script.appended[DAMAGED as usize - 1].event_id.to_string();
    for copy in [&damaged, &served] {
        assert!(
            damage(copy, needle.as_bytes()) >= 1,
            "the record is in the log"
        );
    }
    let reader = Reader::new(open(&damaged).await?);
    assert_eq!(
        reader.store().cut_short(),
        Some(CutShort {
            durable: last,
            recovered: DAMAGED - 1
        })
    );
    assert_eq!(reader.head().await?.n, DAMAGED - 1);

    // The chain alone is consistent, but verify fails: the store is shorter than it was.
    let report = verify(&reader, None, common::start()).await?;
    assert_missing(
        &report,
        DAMAGED,
        DAMAGED,
        &[
            &format!("had made stream sequence {last} durable but its log ended at 49"),
            "railyard audit rebuild",
        ],
    );
    assert_eq!(
        report.cut_short,
        Some(StoreCutShort {
            durable_sequence: last,
            recovered_sequence: DAMAGED - 1,
            reapplied: false,
        })
    );

    // Against the stream: the first stream event without a record, and how far behind.
    let report = verify(&reader, Some(&bus), common::start()).await?;
    assert_missing(
        &report,
        DAMAGED,
        DAMAGED,
        &["cut short", "railyard audit rebuild"],
    );
    assert_eq!(
        (report.records, report.behind, report.stream_checked),
        (DAMAGED - 1, Some(last - (DAMAGED - 1)), true)
    );
    drop(reader);

    // The same through the CLI, offline.
    let (code, printed) = verify_cli(&damaged, &server.url()).await?;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.starts_with(
            "audit record INCOMPLETE: no record from stream sequence 50 on (record 50 onwards): the audit store was cut short"
        ),
        "{printed}"
    );

    // The service on such a store: the gauge shows what it lost, it applies it again from the
    // stream, and verify then passes (every record compared with the stream) and says what
    // happened.
    let config = AuditConfig::new(&served, callers().tokens);
    let shutdown = CancellationToken::new();
    let audit = common::reopen("the audit service to open", || {
        let (config, bus, shutdown) = (config.clone(), bus.clone(), shutdown.clone());
        async move { Ok(Audit::open(config, bus, shutdown).await?) }
    })
    .await?;
    assert_eq!(
        lost_gauge(&audit).as_deref(),
        Some(
            format!(
                "railyard_audit_store_lost_sequences {}",
                last - (DAMAGED - 1)
            )
            .as_str()
        )
    );
    let follow = tokio::spawn({
        let audit = audit.clone();
        async move { audit.run().await }
    });
    let mut committed = audit.reader().store().watch_checkpoint();
    tokio::time::timeout(WAIT, committed.wait_for(|c| *c >= last)).await??;
    let report = audit.verify().await?;
    assert!(report.ok && report.records == last, "{report:#?}");
    assert_eq!(
        report.cut_short,
        Some(StoreCutShort {
            durable_sequence: last,
            recovered_sequence: DAMAGED - 1,
            reapplied: true,
        })
    );
    let described = railyard::audit_cli::describe_verify(&report);
    assert!(
        described.contains("applied the lost events again"),
        "{described}"
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, follow).await???;
    assert_eq!(
        lost_gauge(&audit).as_deref(),
        Some("railyard_audit_store_lost_sequences 0")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_the_stream_fails_verify_saying_how_far() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let mut script = estate(&bus, 0).await;
    let covered = script.last_sequence;
    let (_dir, path) = temp_store();
    let store = build(&bus, &path).await?;
    // Five more events while the store is stopped.
    for i in 0..5 {
        script
            .append(
                "catalog",
                "planner",
                Event::CatalogApplied(CatalogApplied {
                    hash: format!("sha256:late-{i}"),
                }),
            )
            .await;
    }

    // At rest: the record ends before the stream does; that is a failure, with how far.
    let reader = Reader::new(store);
    assert!(verify(&reader, None, common::start()).await?.ok);
    let report = verify(&reader, Some(&bus), common::start()).await?;
    assert_missing(
        &report,
        covered + 1,
        covered + 1,
        &["ends before the stream does", "5 messages more"],
    );
    assert_eq!(
        (
            report.behind,
            report.stream_last_sequence,
            &report.cut_short
        ),
        (Some(5), Some(covered + 5), &None)
    );
    assert!(!report.first_bad.unwrap().detail.contains("cut short"));

    // Live, with a projection that does not catch up in time: behind, after the wait.
    // The wait is on a clock the test moves: verify waits, the clock passes the 100 ms.
    let clock = railyard_core::ManualClock::new(common::start());
    let live = {
        let (reader, bus, clock) = (reader.clone(), bus.clone(), clock.clone());
        tokio::spawn(
            async move { verify_live(&reader, &bus, Duration::from_millis(100), &clock).await },
        )
    };
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_millis(100));
    let report = live.await??;
    assert_missing(
        &report,
        covered + 1,
        covered + 1,
        &["behind the stream", "did not catch up within 100ms"],
    );
    drop(reader);

    // The service following the stream: verify waits for it to catch up, then passes.
    let config = AuditConfig::new(&path, callers().tokens);
    let shutdown = CancellationToken::new();
    let audit = common::reopen("the audit service to open", || {
        let (config, bus, shutdown) = (config.clone(), bus.clone(), shutdown.clone());
        async move { Ok(Audit::open(config, bus, shutdown).await?) }
    })
    .await?;
    let follow = tokio::spawn({
        let audit = audit.clone();
        async move { audit.run().await }
    });
    let report = audit.verify().await?;
    assert!(report.ok, "{report:#?}");
    assert_eq!((report.records, report.behind), (covered + 5, Some(0)));
    shutdown.cancel();
    tokio::time::timeout(WAIT, follow).await???;
    Ok(())
}
