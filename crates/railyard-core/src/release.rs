//! The release file (`release.toml`, INTERFACES §4) and the changes it carries; the same
//! fields arrive from CI in `customData.railyard`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::{Range, Version};
use crate::names::{ApiName, DatabaseName, QueueName, ReleaseId, ServiceName};
use crate::parse::{self, ParseError};

/// A release as submitted: a set of changes that move together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFile {
    /// The release id.
    pub id: ReleaseId,
    /// CI grouping: the release is requested once all of these are ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_changes: Vec<ServiceName>,
    /// The changes.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One service moving to one artifact, with the contracts its build declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The service.
    pub service: ServiceName,
    /// Free-text version, usually semver.
    pub version: String,
    /// OCI digest or purl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Source commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Source branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit authors (they may not approve the release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Queue message version emitted, per queue.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub produces: BTreeMap<QueueName, Version>,
    /// Queue message versions read, per queue.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumes: BTreeMap<QueueName, Range>,
    /// API versions served, per API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provides: BTreeMap<ApiName, Range>,
    /// API versions required, per API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<ApiName, Range>,
    /// Database schema versions it works with, per database.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schema: BTreeMap<DatabaseName, Range>,
    /// Migrations it brings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
    /// Services whose changes in this release go first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<ServiceName>,
}

/// A database migration brought by a change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// The database.
    pub database: DatabaseName,
    /// The schema version it moves to.
    pub to: Version,
}

impl ReleaseFile {
    /// Parses a release file. `requested_by` is refused: the server sets it from the token.
    pub fn from_toml(text: &str) -> Result<ReleaseFile, ParseError> {
        if let Ok(t) = text.parse::<toml::Table>() {
            if t.contains_key("requested_by") {
                return Err(ParseError::at(
                    "release.requested_by",
                    "requested_by is set by the server from your token: remove it from the file",
                ));
            }
        }
        let release: ReleaseFile = parse::from_toml("release", text)?;
        release.check()?;
        Ok(release)
    }

    /// Parses the JSON form (as carried in `customData.railyard` or HTTP bodies).
    pub fn from_json(text: &str) -> Result<ReleaseFile, ParseError> {
        let release: ReleaseFile = parse::from_json("release", text)?;
        release.check()?;
        Ok(release)
    }

    /// Checks what the types cannot: one change per service.
    pub fn check(&self) -> Result<(), ParseError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, change) in self.changes.iter().enumerate() {
            if !seen.insert(&change.service) {
                return Err(ParseError::at(
                    format!("release.changes[{i}].service"),
                    format!(
                        "service {:?} appears in two changes: a release moves each service to one version",
                        change.service.as_str()
                    ),
                ));
            }
            if change.version.trim().is_empty() {
                return Err(ParseError::at(
                    format!("release.changes[{i}].version"),
                    "the version is empty: give the version being released",
                ));
            }
            check_version(&change.version).map_err(|problem| {
                ParseError::at(format!("release.changes[{i}].version"), problem)
            })?;
            if let Some(artifact) = &change.artifact {
                check_artifact(artifact).map_err(|problem| {
                    ParseError::at(format!("release.changes[{i}].artifact"), problem)
                })?;
            }
        }
        Ok(())
    }
}

/// The longest version accepted.
pub const MAX_VERSION_LEN: usize = 128;
/// The longest artifact reference accepted.
pub const MAX_ARTIFACT_LEN: usize = 512;

/// Checks a version against the grammar every version from outside must follow, since it
/// reaches deploy commands and URLs: semver, calver and digest characters
/// (`[A-Za-z0-9][A-Za-z0-9._+:~-]*`), at most [`MAX_VERSION_LEN`] bytes. The error says what is
/// wrong and what is allowed.
pub fn check_version(version: &str) -> Result<(), String> {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | ':' | '~' | '-');
    check_grammar(
        "version",
        version,
        MAX_VERSION_LEN,
        |first| first.is_ascii_alphanumeric(),
        allowed,
        "letters, digits and . _ + : ~ - (semver, calver or a digest), starting with a letter or digit",
    )
}

/// Checks an artifact reference (a purl such as `pkg:oci/orders-api@sha256%3A0b31`, or an OCI
/// reference such as `registry.example.com/orders-api:2.4.0@sha256:0b31`): the characters
/// those grammars use, percent-encoding for anything else, at most [`MAX_ARTIFACT_LEN`] bytes.
pub fn check_artifact(artifact: &str) -> Result<(), String> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '.' | '_' | '+' | ':' | '~' | '-' | '/' | '@' | '%' | '=' | '?' | '&' | '#'
            )
    };
    check_grammar(
        "artifact",
        artifact,
        MAX_ARTIFACT_LEN,
        |first| first.is_ascii_alphanumeric(),
        allowed,
        "a purl (pkg:type/name@version) or an OCI reference: letters, digits and . _ + : ~ - / @ % = ? & #, anything else percent-encoded",
    )
}

fn check_grammar(
    what: &str,
    text: &str,
    max: usize,
    first_ok: impl Fn(char) -> bool,
    allowed: impl Fn(char) -> bool,
    rule: &str,
) -> Result<(), String> {
    if text.len() > max {
        return Err(format!(
            "the {what} is {} bytes long, over the limit of {max}: use a shorter {what}",
            text.len()
        ));
    }
    let Some(first) = text.chars().next() else {
        return Err(format!("the {what} is empty: give one ({rule})"));
    };
    if !first_ok(first) {
        return Err(format!(
            "the {what} starts with {first:?}: allowed are {rule}"
        ));
    }
    if let Some((at, bad)) = text.char_indices().find(|(_, c)| !allowed(*c)) {
        return Err(format!(
            "the {what} holds {bad:?} at byte {at}, which is not allowed (it would reach deploy commands and URLs): allowed are {rule}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod grammar_tests {
    use super::*;

    #[test]
    fn versions_from_outside_are_data_not_code() {
        for good in [
            "1.2.3",
            "2.4.0-rc.1+build.5",
            "2026.12.06",
            "sha256:0b31b1c0",
            "1:2.3~beta",
            "v7",
        ] {
            assert_eq!(check_version(good), Ok(()), "{good}");
        }
        let long = "1".repeat(MAX_VERSION_LEN + 1);
        for bad in [
            "1.0.0;curl x|sh",
            "$(id)",
            "`id`",
            "1.0 && rm",
            "1.0\nrm",
            "../../etc",
            "1.0\u{0}",
            "'1.0'",
            "-rf",
            "",
            long.as_str(),
        ] {
            assert!(check_version(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            check_version("1.0.0;curl x|sh").unwrap_err(),
            "the version holds ';' at byte 5, which is not allowed (it would reach deploy commands and URLs): allowed are letters, digits and . _ + : ~ - (semver, calver or a digest), starting with a letter or digit"
        );
    }

    #[test]
    fn artifacts_are_purls_or_oci_references() {
        for good in [
            "pkg:oci/orders-api@sha256%3A0b31b1c0",
            "pkg:npm/%40acme/web@1.2.0?arch=x86#src",
            "registry.example.com/orders-api:2.4.0@sha256:0b31",
        ] {
            assert_eq!(check_artifact(good), Ok(()), "{good}");
        }
        for bad in [
            "pkg:oci/x@1;id",
            "pkg:oci/x@$(id)",
            "pkg:oci/x y",
            "pkg:oci/`x`",
            "/etc/passwd",
        ] {
            assert!(check_artifact(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
