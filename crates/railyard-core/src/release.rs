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
        }
        Ok(())
    }
}
