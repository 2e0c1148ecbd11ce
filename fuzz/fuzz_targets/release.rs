//! The release file parsers: `ReleaseFile::from_toml` and `from_json` on any text (what
//! `POST /v1/releases` and `railyard plan` read). A release that parses has one change per
//! service, valid versions and artifacts, and reads back unchanged through both forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_core::{ReleaseFile, check_artifact, check_version};
use railyard_fuzz::check_parse_error;

fn check(release: &ReleaseFile) {
    release.check().expect("a parsed release checks again");
    let mut services = std::collections::BTreeSet::new();
    for change in &release.changes {
        assert!(services.insert(&change.service), "one change per service");
        check_version(&change.version).expect("a parsed version is valid");
        if let Some(artifact) = &change.artifact {
            check_artifact(artifact).expect("a parsed artifact is valid");
        }
    }
    let json = serde_json::to_string(release).expect("a release serializes");
    let back = ReleaseFile::from_json(&json)
        .unwrap_or_else(|error| panic!("a release's json does not parse: {error}\n{json}"));
    assert_eq!(&back, release, "the release changes through json");
    if let Ok(toml) = toml::to_string(release) {
        let back = ReleaseFile::from_toml(&toml)
            .unwrap_or_else(|error| panic!("a release's toml does not parse: {error}\n{toml}"));
        assert_eq!(&back, release, "the release changes through toml");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [ReleaseFile::from_toml(text), ReleaseFile::from_json(text)] {
        match parsed {
            Ok(release) => check(&release),
            Err(error) => check_parse_error(&error, "release", text),
        }
    }
});
