//! The event envelope decoder (hand-written in `railyard_core::event`): what every consumer
//! runs on a message of the event stream, as one envelope or as the `{"events": [...]}`
//! batch the bus appends. A decoded envelope re-encodes to bytes that decode to it again, and
//! decoding from a JSON value agrees with decoding from bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_core::{AggregateId, Envelope};

#[derive(serde::Deserialize)]
struct Batch {
    events: Vec<Envelope>,
}

fn check(envelope: &Envelope) {
    let bytes = serde_json::to_vec(envelope).expect("an envelope serializes");
    let back: Envelope = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("a re-encoded envelope does not decode: {error}"));
    assert_eq!(&back, envelope, "the envelope changes through its bytes");
    let subject = envelope.aggregate.to_string();
    assert_eq!(
        subject.parse::<AggregateId>().as_ref(),
        Ok(&envelope.aggregate)
    );
    assert!(!envelope.event.type_name().is_empty());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(data) {
        check(&envelope);
        let value: serde_json::Value = serde_json::from_slice(data).expect("it was json");
        let from_value = serde_json::from_value::<Envelope>(value)
            .unwrap_or_else(|error| panic!("decodes from bytes but not from a value: {error}"));
        assert_eq!(from_value, envelope, "bytes and value decode differently");
    }
    if let Ok(batch) = serde_json::from_slice::<Batch>(data) {
        batch.events.iter().for_each(check);
    }
});
