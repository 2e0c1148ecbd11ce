//! GitLab webhooks (`POST /v1/webhooks/gitlab`) after the token check: pipeline hooks mapped
//! to suite results, everything else ignored with the reason. Input: header lines, an empty
//! line, the body; or the body alone (then sent as a `Pipeline Hook`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_fuzz::{catalog, check_intake, split_delivery};
use railyard_intake::Headers;

fuzz_target!(|data: &[u8]| {
    let (mut headers, body) = split_delivery(data);
    if headers == Headers::default() {
        headers = Headers::new([
            ("x-gitlab-event", "Pipeline Hook"),
            ("x-gitlab-event-uuid", "fuzz-uuid"),
        ]);
    }
    let result = railyard_intake::fuzz::gitlab(catalog(), &headers, body);
    check_intake("gitlab", &result);
});
