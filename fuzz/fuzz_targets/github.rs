//! GitHub webhooks (`POST /v1/webhooks/github`) after the signature check: `X-GitHub-Event`,
//! `X-GitHub-Delivery` and the payload mapped. Input: header lines, an empty line, the body; a
//! body alone (a payload example) is tried as every event type Railyard reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_fuzz::{catalog, check_intake, split_delivery};
use railyard_intake::Headers;

const EVENTS: &[&str] = &[
    "workflow_run",
    "check_suite",
    "deployment_status",
    "push",
    "workflow_job",
];

fuzz_target!(|data: &[u8]| {
    let (headers, body) = split_delivery(data);
    if headers.get("x-github-event").is_some() || headers.get("x-github-delivery").is_some() {
        let result = railyard_intake::fuzz::github(catalog(), &headers, body);
        check_intake("github", &result);
        return;
    }
    for event in EVENTS {
        let headers = Headers::new([
            ("x-github-event", event.to_string()),
            ("x-github-delivery", "fuzz-delivery".to_owned()),
        ]);
        let result = railyard_intake::fuzz::github(catalog(), &headers, body);
        check_intake("github", &result);
    }
    // The signature is computed over the raw body, whatever it holds.
    let signature = railyard_intake::github_signature(b"fuzz-secret", body);
    assert!(signature.len() == 71 && signature.starts_with("sha256="));
});
