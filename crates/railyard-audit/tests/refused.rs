//! `verify` and authority seals (issue 14), over a real nats-server, in a process that trusts a
//! promoter key: the record keeps forged authority events as `refused:<type>`, and such a
//! record verifies; relabelled so that a forged approval counts (hashes recomputed), verify
//! names it even though the event itself matches the stream. (A process of its own: trust is
//! process-wide.)

mod common;

use common::{
    Script, Service, callers, connect, head_key, record_key, record_value, script_releases, tamper,
    temp_store,
};
use railyard_audit::record::{canonical_bytes, record_hash};
use railyard_audit::{Head, ProblemKind, Reader, verify};
use railyard_core::authority::{self, AuthorityKey, Writer};
use railyard_testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_approval_relabelled_to_count_fails_verify() -> anyhow::Result<()> {
    authority::trust([AuthorityKey::generate(Writer::Promoter).public()]);
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let (_dir, path) = temp_store();
    let service = Service::start(&bus, &path, callers().tokens).await?;
    // The script appends approvals and steps without the promoter's seal: forgeries here.
    let mut script = Script::new(&bus);
    script_releases(&mut script).await;
    service.caught_up(script.last_sequence).await;
    service.stop().await;

    let reader = Reader::new(common::open(&path).await?);
    let report = verify(&reader, Some(&bus), common::start()).await?;
    assert!(report.ok, "{report:#?}");
    let head = reader.head().await?;
    let mut forged = None;
    for n in 1..=head.n {
        let record = reader.record(n).await?.unwrap();
        if record.facets.kind == "refused:approval.granted" {
            forged = Some(n);
            break;
        }
    }
    let forged = forged.expect("the unsealed approval is recorded as refused");
    drop(reader);

    // Relabelled as a counted approval, every hash from there recomputed.
    let mut prev = record_value(&path, forged - 1).await?["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut writes = Vec::new();
    for n in forged..=head.n {
        let mut value = record_value(&path, n).await?;
        if n == forged {
            value["facets"]["type"] = "approval.granted".into();
            value["facets"]["family"] = "approval".into();
        }
        value["prev"] = prev.clone().into();
        prev = record_hash(&value);
        value["hash"] = prev.clone().into();
        writes.push((record_key(n), Some(canonical_bytes(&value))));
    }
    writes.push((
        head_key(),
        Some(serde_json::to_vec(&Head { hash: prev, ..head })?),
    ));
    tamper(&path, writes).await?;
    let reader = Reader::new(common::open(&path).await?);
    let problem = verify(&reader, Some(&bus), common::start())
        .await?
        .first_bad
        .expect("the relabelled forgery is found");
    assert_eq!(
        (problem.n, problem.kind),
        (forged, ProblemKind::Altered),
        "{problem:#?}"
    );
    assert!(
        problem.detail.contains("no key trusted here vouches"),
        "{problem:#?}"
    );
    Ok(())
}
