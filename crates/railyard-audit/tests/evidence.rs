//! Evidence that proves completeness (issue 14), over a real nats-server:
//!
//! - a store whose last records were deleted and whose head was rewound fails `verify`
//!   (at rest, through the CLI and live) naming the first missing stream sequence;
//! - the service seals its chain every N records and every interval of its clock as signed
//!   checkpoints appended to the stream, which verify holds against the records;
//! - a store edited and re-sealed is caught by the signed checkpoints even without the stream;
//! - an export checked offline with only the public key names the first record that was
//!   edited, edited and re-sealed, deleted (with or without renumbering), reordered or cut off,
//!   a forged trailer, and says what no signature covers.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Script, Service, WAIT, callers, connect, head_key, record_key, record_value, script_releases,
    tamper, temp_store,
};
use railyard::audit_cli::{
    AuditCommand, ClientArgs, ExportArgs, KeyArgs, VerifyArgs, describe_verify, run_audit,
};
use railyard_audit::record::{GENESIS, canonical_bytes, record_hash};
use railyard_audit::{
    AuditConfig, AuditKey, Filter, Head, Keys, ProblemKind, PublicKey, Reader, SealConfig, verify,
    verify_signed,
};
use railyard_bus::Bus;
use railyard_core::audit::AuditCheckpoint;
use railyard_core::event::CatalogApplied;
use railyard_core::{AggregateId, Event, ManualClock};
use railyard_testkit::NatsServer;
use serde_json::Value;

/// The scripted estate and `extra` catalog events, one event per append: on a fresh stream,
/// record `n` is stream sequence `n` until a checkpoint is appended.
async fn estate(bus: &Bus, extra: u64) -> Script {
    let mut script = Script::new(bus);
    script_releases(&mut script).await;
    for i in 0..extra {
        catalog(&mut script, i).await;
    }
    script
}

async fn catalog(script: &mut Script, i: u64) -> u64 {
    script
        .append(
            "catalog",
            "planner",
            Event::CatalogApplied(CatalogApplied {
                hash: format!("sha256:{i:04}"),
            }),
        )
        .await
}

/// `railyard audit verify` with `args` (the store, the file, the keys): exit code and output.
async fn verify_cli(args: VerifyArgs) -> anyhow::Result<(u8, String)> {
    common::reopen("verify to run", || {
        let args = args.clone();
        async move {
            let mut out = Vec::new();
            let code = run_audit(AuditCommand::Verify(args), &mut out).await?;
            Ok((code, String::from_utf8(out)?))
        }
    })
    .await
}

fn no_client() -> ClientArgs {
    ClientArgs {
        url: "http://127.0.0.1:9".into(),
        token: None,
    }
}

fn verify_args(nats_url: &str) -> VerifyArgs {
    VerifyArgs {
        store: None,
        offline: None,
        public_key: Vec::new(),
        nats_url: nats_url.to_owned(),
        no_stream: false,
        json: false,
        client: no_client(),
    }
}

/// `railyard audit verify --offline FILE --public-key KEY`.
async fn verify_offline(file: &Path, key: &PublicKey) -> anyhow::Result<(u8, String)> {
    verify_cli(VerifyArgs {
        offline: Some(file.to_owned()),
        public_key: vec![key.to_string()],
        ..verify_args("nats://127.0.0.1:9")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_from_the_store_with_its_head_rewound_fails_verify_naming_the_first_missing_sequence()
-> anyhow::Result<()> {
    const CUT: u64 = 4;
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let script = estate(&bus, 10).await;
    let last = script.last_sequence;
    let callers = callers();
    let (dir, path) = temp_store();
    let service = Service::start(&bus, &path, callers.tokens.clone()).await?;
    service.caught_up(last).await;
    service.stop().await;

    // In a copy: the last CUT records deleted and the head moved back to the one before.
    let copy = dir.path().join("cut");
    railyard_testkit::disk::copy_dir(&path, &copy)?;
    let keep = last - CUT;
    let kept = record_value(&copy, keep).await?;
    let head = Head {
        n: keep,
        hash: kept["hash"].as_str().unwrap().to_owned(),
        sequence: kept["sequence"].as_u64().unwrap(),
    };
    let mut writes: Vec<_> = (keep + 1..=last).map(|n| (record_key(n), None)).collect();
    writes.push((head_key(), Some(serde_json::to_vec(&head)?)));
    tamper(&copy, writes).await?;

    // The chain alone still holds: that is what the attack relies on.
    let reader = Reader::new(common::open(&copy).await?);
    let report = verify(&reader, None, common::start()).await?;
    assert!(report.ok && report.records == keep, "{report:#?}");

    // Against the stream, at rest: the first event the store says it applied but holds no
    // record of, named by its stream sequence.
    let report = verify(&reader, Some(&bus), common::start()).await?;
    let problem = report.first_bad.clone().expect("the cut is found");
    assert_eq!(
        (problem.n, problem.sequence, problem.kind),
        (keep + 1, Some(keep + 1), ProblemKind::Removed),
        "{problem:#?}"
    );
    assert!(
        problem.detail.contains("head rewound")
            && problem.detail.contains("railyard audit rebuild"),
        "{problem:#?}"
    );
    drop(reader);

    // The same through `railyard audit verify --store`.
    let (code, printed) = verify_cli(VerifyArgs {
        store: Some(copy.clone()),
        ..verify_args(&server.url())
    })
    .await?;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.starts_with(&format!(
            "audit record TAMPERED: first bad record is {} (removed, stream sequence {})",
            keep + 1,
            keep + 1
        )),
        "{printed}"
    );

    // Live: the service on the copy has nothing to catch up (its checkpoint is past the
    // stream's end), and its verify names the same sequence.
    let service = Service::start(&bus, &copy, callers.tokens.clone()).await?;
    let report = service.audit.verify().await?;
    let problem = report.first_bad.expect("the cut is found live");
    assert_eq!(
        (problem.n, problem.sequence, problem.kind),
        (keep + 1, Some(keep + 1), ProblemKind::Removed),
        "{problem:#?}"
    );
    service.stop().await;

    // The untouched store verifies.
    let reader = Reader::new(common::open(&path).await?);
    assert!(verify(&reader, Some(&bus), common::start()).await?.ok);
    Ok(())
}

/// The checkpoints in the record, in record order, with the record holding each.
async fn checkpoints(reader: &Reader) -> anyhow::Result<Vec<(u64, AuditCheckpoint)>> {
    let filter = Filter {
        kind: Some("audit.checkpoint".into()),
        ..Filter::default()
    };
    let page = reader.records(&filter, None, 1000).await?;
    Ok(page
        .items
        .into_iter()
        .map(|record| {
            let checkpoint = serde_json::from_value(record.data().clone()).unwrap();
            (record.n, checkpoint)
        })
        .collect())
}

/// Waits until the store holds `events` events and every checkpoint the count trigger calls
/// for with `every` records: `events + c` records, fewer than `(c + 1) * every`.
async fn sealed_by_count(
    service: &Service,
    events: u64,
    every: u64,
) -> anyhow::Result<Vec<(u64, AuditCheckpoint)>> {
    let reader = service.audit.reader().clone();
    railyard_testkit::wait_until(
        "the record to hold every event and count seal",
        WAIT,
        || {
            let reader = reader.clone();
            async move {
                let head = reader.head().await?;
                let found = checkpoints(&reader).await?;
                let c = found.len() as u64;
                Ok((head.n == events + c && head.n < (c + 1) * every).then_some(found))
            }
        },
    )
    .await
}

fn sealing(key: &AuditKey, every_records: u64) -> SealConfig {
    SealConfig {
        key: key.clone(),
        every_records,
        every: Duration::from_secs(60),
    }
}

/// Checks that `checkpoint` seals exactly the records of `reader` it names.
async fn assert_seals(reader: &Reader, checkpoint: &AuditCheckpoint, key: &PublicKey) {
    assert_eq!(
        Keys::new([*key]).check(checkpoint),
        railyard_audit::seal::Signed::Valid
    );
    assert_eq!(
        checkpoint.digests.len() as u64,
        checkpoint.records - checkpoint.from + 1
    );
    for (n, digest) in (checkpoint.from..).zip(&checkpoint.digests) {
        let record = reader.record(n).await.unwrap().unwrap();
        assert_eq!(&record.hash[..16], digest, "record {n}");
        if n == checkpoint.records {
            assert_eq!(
                (record.hash.as_str(), record.sequence),
                (checkpoint.head.as_str(), checkpoint.sequence)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_seals_every_n_records_and_every_interval_of_its_clock() -> anyhow::Result<()> {
    const EVERY: u64 = 10;
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (dir, path) = temp_store();
    let key_file = dir.path().join("audit-signing.key");
    let key = AuditKey::create(&key_file)?;
    let public = key.public();
    let clock = ManualClock::new(common::start());
    let mut config = AuditConfig::new(&path, callers().tokens);
    config.clock = clock.shared();
    config.seal = Some(sealing(&key, EVERY));
    // The signing key never shows in the configuration's debug form (what a log would print).
    let secret = std::fs::read_to_string(&key_file)?;
    let secret = secret.split_whitespace().last().unwrap();
    assert!(!format!("{config:?}").contains(secret));
    let service = Service::start_config(&bus, config).await?;

    // 25 events: sealed at records 10 and 20, each checkpoint a record itself.
    let mut script = Script::new(&bus);
    for i in 0..25 {
        catalog(&mut script, i).await;
    }
    let found = sealed_by_count(&service, 25, EVERY).await?;
    let sealed: Vec<(u64, u64)> = found.iter().map(|(_, c)| (c.from, c.records)).collect();
    assert_eq!(sealed, [(1, 10), (11, 20)]);
    let reader = service.audit.reader();
    for (_, checkpoint) in &found {
        assert_seals(reader, checkpoint, &public).await;
    }
    // They are on the stream, as events of the audit service.
    let loaded = bus.load(&AggregateId::Audit).await?;
    assert_eq!(loaded.events.len(), 2);
    assert!(loaded.events.iter().all(|e| e.actor == "audit"));

    // The interval passes on the service's clock: the rest is sealed.
    let head = reader.head().await?;
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_secs(60));
    let third = railyard_testkit::wait_until("the interval's checkpoint", WAIT, || async {
        let found = checkpoints(reader).await?;
        Ok(found.get(2).cloned())
    })
    .await?;
    assert_eq!(
        (third.1.from, third.1.records, third.1.sealed_at),
        (21, head.n, common::start() + chrono::Duration::seconds(60))
    );
    assert_seals(reader, &third.1, &public).await;
    service.caught_up(bus.stream_last_sequence().await?).await;

    // Since then only that checkpoint arrived: an export seals nothing new and ends with it.
    let trailer = service.audit.seal_for_export().await?.expect("sealed");
    assert_eq!(trailer, third.1);
    assert_eq!(bus.load(&AggregateId::Audit).await?.events.len(), 3);

    // verify holds every checkpoint against the records, with the service's key.
    let report = service.audit.verify().await?;
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        (
            report.seals.checkpoints,
            report.seals.verified,
            report.seals.covered
        ),
        (3, 3, head.n)
    );
    assert!(
        describe_verify(&report).contains(&format!(
            "signed checkpoints: 3 of 3 verified, records 1 to {} sealed",
            head.n
        )),
        "{}",
        describe_verify(&report)
    );
    let metrics = service.audit.config().metrics.render();
    assert!(
        metrics.contains(&format!("railyard_audit_sealed_records {}", head.n)),
        "{metrics}"
    );
    service.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_edited_and_resealed_is_caught_by_its_signed_checkpoints_without_the_stream()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (dir, path) = temp_store();
    let key = AuditKey::create(&dir.path().join("key"))?;
    let mut config = AuditConfig::new(&path, callers().tokens);
    config.clock = ManualClock::new(common::start()).shared();
    config.seal = Some(sealing(&key, 8));
    let service = Service::start_config(&bus, config).await?;
    let script = estate(&bus, 6).await;
    let events = script.appended.len() as u64;
    sealed_by_count(&service, events, 8).await?;
    service.caught_up(bus.stream_last_sequence().await?).await;
    service.stop().await;
    let last = Reader::new(common::open(&path).await?).head().await?;

    // Record 5 edited (actor and its facet) and every hash from it to the head recomputed.
    let mut prev = record_value(&path, 4).await?["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut writes = Vec::new();
    for n in 5..=last.n {
        let mut value = record_value(&path, n).await?;
        if n == 5 {
            value["envelope"]["actor"] = "mallory".into();
            value["facets"]["actor"] = "mallory".into();
        }
        value["prev"] = prev.clone().into();
        prev = record_hash(&value);
        value["hash"] = prev.clone().into();
        writes.push((record_key(n), Some(canonical_bytes(&value))));
    }
    let head = Head { hash: prev, ..last };
    writes.push((head_key(), Some(serde_json::to_vec(&head)?)));
    tamper(&path, writes).await?;

    // Without a key the chain holds; with the public key the first checkpoint after record 5
    // names it, with no stream at hand.
    let reader = Reader::new(common::open(&path).await?);
    let report = verify(&reader, None, common::start()).await?;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.seals.unknown_keys.len(), 1, "{report:#?}");
    let report = verify_signed(&reader, None, &Keys::new([key.public()]), common::start()).await?;
    let problem = report.first_bad.expect("the checkpoints show the forgery");
    assert_eq!(
        (problem.n, problem.kind),
        (5, ProblemKind::Altered),
        "{problem:#?}"
    );
    assert!(problem.detail.contains("hashes recomputed"), "{problem:#?}");
    assert_eq!(report.records, 4);
    drop(reader);

    // The same through `railyard audit verify --store --no-stream --public-key`.
    let (code, printed) = verify_cli(VerifyArgs {
        store: Some(path.clone()),
        no_stream: true,
        public_key: vec![key.public().to_string()],
        ..verify_args(&server.url())
    })
    .await?;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.starts_with("audit record TAMPERED: first bad record is 5 (altered"),
        "{printed}"
    );
    Ok(())
}

/// An export, line by line.
fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(line).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Index of the line holding record `n`.
fn line_of(lines: &[Value], n: u64) -> usize {
    lines
        .iter()
        .position(|line| line.pointer("/record/n").and_then(Value::as_u64) == Some(n))
        .unwrap_or_else(|| panic!("record {n} is in the export"))
}

/// Recomputes every record's link and hash, as someone editing an export would.
fn reseal(lines: &mut [Value]) {
    let mut prev = GENESIS.to_owned();
    for line in lines.iter_mut() {
        if let Some(record) = line.get_mut("record") {
            record["prev"] = prev.clone().into();
            prev = record_hash(record);
            record["hash"] = prev.clone().into();
        }
    }
}

/// Writes a variant of the export `lines` to a new file and verifies it offline.
async fn attack(
    dir: &Path,
    name: &str,
    lines: &[Value],
    key: &PublicKey,
) -> anyhow::Result<(u8, String)> {
    let file = dir.join(format!("{name}.jsonl"));
    write_lines(&file, lines);
    verify_offline(&file, key).await
}

fn assert_first_bad(result: &(u8, String), n: u64, kind: &str, says: &str) {
    let (code, printed) = result;
    assert_eq!(*code, 1, "{printed}");
    assert!(
        printed.starts_with(&format!(
            "audit export TAMPERED: first bad record is {n} ({kind}"
        )),
        "{printed}"
    );
    assert!(printed.contains(says), "{says:?} in {printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_checked_offline_names_the_first_edited_resealed_deleted_reordered_or_cut_record()
-> anyhow::Result<()> {
    const EVERY: u64 = 8;
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (dir, path) = temp_store();
    let key_file = dir.path().join("audit-signing.key");

    // `railyard audit key --generate` makes the key; `railyard audit key` prints its public
    // half, which is all a verifier gets.
    let key_cli = |generate| {
        let key_file = key_file.clone();
        async move {
            let mut out = Vec::new();
            let result = run_audit(
                AuditCommand::Key(KeyArgs {
                    signing_key: key_file,
                    generate,
                }),
                &mut out,
            )
            .await;
            result.map(|_| String::from_utf8(out).unwrap())
        }
    };
    let generated = key_cli(true).await?;
    assert!(generated.contains("(created)"), "{generated}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let refused = key_cli(true).await.expect_err("an existing key is kept");
    assert!(refused.to_string().contains("never replaced"), "{refused}");
    let printed = key_cli(false).await?;
    assert_eq!(printed.lines().next(), generated.lines().next());
    let public_file = dir.path().join("audit.pub");
    std::fs::write(&public_file, &printed)?;
    let public = PublicKey::from_arg(public_file.to_str().unwrap())?;
    let key = AuditKey::load(&key_file)?;
    assert_eq!(key.public(), public);

    let mut config = AuditConfig::new(&path, callers.tokens.clone());
    config.clock = ManualClock::new(common::start()).shared();
    config.seal = Some(sealing(&key, EVERY));
    let service = Service::start_config(&bus, config).await?;
    let script = estate(&bus, 12).await;
    let events = script.appended.len() as u64;
    let periodic = sealed_by_count(&service, events, EVERY).await?;
    assert!(periodic.len() >= 4, "{periodic:?}");

    // `railyard audit export` through the running service: it seals the head for the export
    // (one more checkpoint on the stream) and ends the file with that checkpoint.
    let export = dir.path().join("export.jsonl");
    let mut out = Vec::new();
    let code = run_audit(
        AuditCommand::Export(ExportArgs {
            output: Some(export.clone()),
            store: None,
            signing_key: None,
            client: ClientArgs {
                url: service.url(""),
                token: Some(callers.auditor.clone()),
            },
        }),
        &mut out,
    )
    .await?;
    assert_eq!(code, 0);
    assert!(String::from_utf8(out)?.starts_with("audit record exported to"));
    let lines = read_lines(&export);
    let exported = lines.iter().filter(|l| l.get("record").is_some()).count() as u64;
    let exported_events = lines
        .iter()
        .filter_map(|l| l.get("record"))
        .filter(|r| r["facets"]["type"] != "audit.checkpoint")
        .count() as u64;
    assert_eq!(exported_events, events);
    // The trailer is the stream's latest checkpoint (a new one unless nothing but the last
    // checkpoint came after it), and seals the export's last record.
    let trailer = lines.last().unwrap()["trailer"].clone();
    let on_stream = bus.load(&AggregateId::Audit).await?.events;
    assert_eq!(
        serde_json::to_value(&on_stream.last().unwrap().event)?["data"],
        trailer
    );
    assert_eq!(trailer["records"], exported);
    assert_eq!(lines[0]["export"]["records"], exported);
    service.stop().await;

    // Untouched, it verifies and every record is sealed.
    let (code, printed) = verify_offline(&export, &public).await?;
    assert_eq!(code, 0, "{printed}");
    assert!(
        printed.starts_with(&format!(
            "audit export intact: records 1 to {exported} verify and are sealed by the export's signed trailer"
        )),
        "{printed}"
    );
    let records_dir = dir.path().join("attacks");
    std::fs::create_dir_all(&records_dir)?;
    let dir = records_dir.as_path();

    // Edited: record 5's actor, hash left alone.
    let mut edited = lines.clone();
    let at = line_of(&edited, 5);
    edited[at]["record"]["envelope"]["actor"] = "mallory".into();
    let result = attack(dir, "edited", &edited, &public).await?;
    assert_first_bad(&result, 5, "altered", "does not match its hash");

    // Edited and re-sealed: record 5's actor and facet, then every hash recomputed. The
    // chain holds; the checkpoint sealing record 8 names record 5.
    let mut resealed = lines.clone();
    resealed[at]["record"]["envelope"]["actor"] = "mallory".into();
    resealed[at]["record"]["facets"]["actor"] = "mallory".into();
    reseal(&mut resealed);
    let result = attack(dir, "resealed", &resealed, &public).await?;
    assert_first_bad(&result, 5, "altered", "hashes recomputed");

    // Deleted: record 7's line removed.
    let mut deleted = lines.clone();
    deleted.remove(line_of(&deleted, 7));
    let result = attack(dir, "deleted", &deleted, &public).await?;
    assert_first_bad(
        &result,
        7,
        "removed",
        "record 7 is missing: record 8 follows record 6",
    );

    // Deleted, the rest renumbered and re-sealed: an inventory event (it widens no release's
    // scope, so every later record stays self-consistent).
    let victim = lines
        .iter()
        .filter_map(|l| l.get("record"))
        .find(|r| {
            r["n"].as_u64().unwrap() > 3
                && r["facets"]["aggregate"]
                    .as_str()
                    .unwrap()
                    .starts_with("inventory.")
        })
        .map(|r| r["n"].as_u64().unwrap())
        .unwrap();
    let mut renumbered = lines.clone();
    renumbered.remove(line_of(&renumbered, victim));
    for line in renumbered.iter_mut() {
        if let Some(record) = line.get_mut("record") {
            let n = record["n"].as_u64().unwrap();
            if n > victim {
                record["n"] = (n - 1).into();
            }
        }
    }
    reseal(&mut renumbered);
    let result = attack(dir, "renumbered", &renumbered, &public).await?;
    assert_first_bad(&result, victim, "altered", "hashes recomputed");

    // Reordered: records 3 and 4 swapped.
    let mut reordered = lines.clone();
    reordered.swap(line_of(&lines, 3), line_of(&lines, 4));
    let result = attack(dir, "reordered", &reordered, &public).await?;
    assert_first_bad(&result, 3, "reordered", "record 3 comes later");

    // Cut: the last 3 records removed, trailer kept: the trailer seals up to the end.
    let mut cut = lines.clone();
    for n in exported - 2..=exported {
        cut.remove(line_of(&cut, n));
    }
    let result = attack(dir, "cut", &cut, &public).await?;
    assert_first_bad(
        &result,
        exported - 2,
        "removed",
        &format!(
            "seals records up to {exported}, but the records end at {}",
            exported - 3
        ),
    );

    // Cut with the trailer: the (unsigned) header still says how many there were.
    cut.pop();
    let result = attack(dir, "cut-trailer", &cut, &public).await?;
    assert_first_bad(&result, exported - 2, "removed", "the header is not signed");

    // ... and with the header fixed too: nothing names a bad record, but what follows the
    // last checkpoint left is not covered by a signature (exit 2).
    cut[0]["export"]["records"] = (exported - 3).into();
    let sealed_left = cut
        .iter()
        .filter_map(|l| l.get("record"))
        .filter(|r| r["facets"]["type"] == "audit.checkpoint")
        .map(|r| r["envelope"]["data"]["records"].as_u64().unwrap())
        .max()
        .unwrap();
    let (code, printed) = attack(dir, "cut-all", &cut, &public).await?;
    assert_eq!(code, 2, "{printed}");
    assert!(
        printed.starts_with(&format!(
            "audit export intact but not all signed: records 1 to {} verify; records {} to {} are not covered by a signature",
            exported - 3,
            sealed_left + 1,
            exported - 3
        )),
        "{printed}"
    );
    assert!(printed.contains("no signed trailer"), "{printed}");

    // A forged trailer: it claims fewer records than it was signed for.
    let mut forged = lines.clone();
    let last = forged.len() - 1;
    forged[last]["trailer"]["records"] = (exported - 1).into();
    let result = attack(dir, "forged-trailer", &forged, &public).await?;
    assert_eq!(result.0, 1, "{}", result.1);
    assert!(
        result.1.contains("signature does not verify"),
        "{}",
        result.1
    );

    // Re-signed with the forger's own key: nothing is sealed by the key that counts.
    let mallory = AuditKey::generate();
    let mut resigned = resealed.clone();
    let mut last_seal = 0;
    for line in resigned.iter_mut() {
        if let Some(record) = line.get_mut("record") {
            if record["facets"]["type"] == "audit.checkpoint" {
                let old: AuditCheckpoint =
                    serde_json::from_value(record["envelope"]["data"].clone())?;
                let new = mallory.sign(
                    old.records,
                    old.head.clone(),
                    old.sequence,
                    old.from,
                    old.digests.clone(),
                    old.sealed_at,
                );
                record["envelope"]["data"] = serde_json::to_value(new)?;
                last_seal = old.records;
            }
        }
    }
    reseal(&mut resigned);
    let old: AuditCheckpoint = serde_json::from_value(resigned[last]["trailer"].clone())?;
    let sealed: Vec<&Value> = resigned
        .iter()
        .filter_map(|l| l.get("record"))
        .filter(|r| r["n"].as_u64().unwrap() >= old.from)
        .collect();
    let end = sealed.last().unwrap();
    let trailer = mallory.sign(
        old.records,
        end["hash"].as_str().unwrap().to_owned(),
        end["sequence"].as_u64().unwrap(),
        old.from,
        sealed
            .iter()
            .map(|r| r["hash"].as_str().unwrap()[..16].to_owned())
            .collect(),
        old.sealed_at,
    );
    resigned[last]["trailer"] = serde_json::to_value(trailer)?;
    let (code, printed) = attack(dir, "resigned", &resigned, &public).await?;
    assert_eq!(code, 2, "{printed}");
    assert!(
        printed.contains(&format!(
            "records 1 to {exported} are not covered by a signature"
        )) && printed.contains(&mallory.public().id()),
        "{printed}"
    );
    assert!(last_seal > 0);
    Ok(())
}

/// `railyard audit export --store` of a stopped store: signed locally when given the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_store_exports_with_a_trailer_signed_by_its_key() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (dir, path) = temp_store();
    let key_file: PathBuf = dir.path().join("key");
    let key = AuditKey::create(&key_file)?;
    let mut config = AuditConfig::new(&path, callers().tokens);
    config.clock = ManualClock::new(common::start()).shared();
    config.seal = Some(sealing(&key, 8));
    let service = Service::start_config(&bus, config).await?;
    let script = estate(&bus, 3).await;
    sealed_by_count(&service, script.appended.len() as u64, 8).await?;
    service.caught_up(bus.stream_last_sequence().await?).await;
    service.stop().await;

    let export = |signing_key: Option<PathBuf>, name: &str| {
        let (path, file) = (path.clone(), dir.path().join(name));
        async move {
            common::reopen("export --store to open the store", || {
                let (path, file, signing_key) = (path.clone(), file.clone(), signing_key.clone());
                async move {
                    let mut out = Vec::new();
                    run_audit(
                        AuditCommand::Export(ExportArgs {
                            output: Some(file.clone()),
                            store: Some(path),
                            signing_key,
                            client: no_client(),
                        }),
                        &mut out,
                    )
                    .await?;
                    Ok(file)
                }
            })
            .await
        }
    };
    let signed = export(Some(key_file.clone()), "signed.jsonl").await?;
    let (code, printed) = verify_offline(&signed, &key.public()).await?;
    assert_eq!(code, 0, "{printed}");
    let unsigned = export(None, "unsigned.jsonl").await?;
    let (code, printed) = verify_offline(&unsigned, &key.public()).await?;
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("not covered by a signature"), "{printed}");
    Ok(())
}
