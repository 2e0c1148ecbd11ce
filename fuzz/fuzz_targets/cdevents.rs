//! CDEvents intake (`POST /v1/cdevents`, `railyard.intake.cdevents`): a delivery's headers and
//! body — a bare CDEvent, a structured CloudEvent or a binary one with `ce-*` headers —
//! parsed, validated against the CDEvents schemas and mapped. Input: header lines, an empty
//! line, the body; or the body alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_fuzz::{catalog, check_intake, split_delivery};

fuzz_target!(|data: &[u8]| {
    let (headers, body) = split_delivery(data);
    let result = railyard_intake::fuzz::cdevent(catalog(), &headers, body);
    check_intake("cdevents", &result);
});
