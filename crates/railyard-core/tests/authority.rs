//! The fold with authority enforced (its own process: trust is process-wide): an operator's
//! decision read without the promoter's seal leaves the release as it was and is counted; the
//! same decision sealed by the promoter counts.

use railyard_core::authority::{self, AuthorityKey, Writer};
use railyard_core::event::{Reasoned, ReleaseRequested};
use railyard_core::{AggregateId, Envelope, Event, ReleaseId, ReleaseState, Status};

/// `envelope` as another process reads it from the stream.
fn read(envelope: &Envelope) -> Envelope {
    serde_json::from_str(&serde_json::to_string(envelope).unwrap()).unwrap()
}

#[test]
fn an_unsealed_cancel_does_not_count_and_a_sealed_one_does() {
    let promoter = AuthorityKey::generate(Writer::Promoter);
    authority::trust([
        promoter.public(),
        AuthorityKey::generate(Writer::Planner).public(),
    ]);
    let id = ReleaseId::new("rel-1").unwrap();
    let aggregate = AggregateId::Release(id.clone());
    let at = "2026-12-06T10:00:00Z".parse().unwrap();
    let request = Envelope::new(
        aggregate.clone(),
        "ci",
        at,
        Event::ReleaseRequested(ReleaseRequested {
            release: id,
            requested_by: "ci".into(),
            changes: Vec::new(),
        }),
    );
    let cancel = Envelope::new(
        aggregate,
        "alice",
        at,
        Event::ReleaseCancelled(Reasoned {
            reason: "not today".into(),
        }),
    );

    let before = authority::refused();
    let forged = read(&cancel);
    assert!(
        forged
            .untrusted
            .as_deref()
            .is_some_and(|why| why.contains("carries no seal")),
        "{forged:?}"
    );
    let state = ReleaseState::fold([&read(&request), &forged])
        .unwrap()
        .unwrap();
    assert_eq!(state.status, Status::Requested, "the forged cancel counted");
    assert_eq!(authority::refused(), before + 1);

    let mut sealed = cancel.clone();
    promoter.seal(&mut sealed);
    let sealed = read(&sealed);
    assert_eq!(sealed.untrusted, None);
    let state = ReleaseState::fold([&read(&request), &sealed])
        .unwrap()
        .unwrap();
    assert_eq!(state.status, Status::Cancelled);
    // What a process builds itself is its own: it is not checked.
    let state = ReleaseState::fold([&request, &cancel]).unwrap().unwrap();
    assert_eq!(state.status, Status::Cancelled);
}
