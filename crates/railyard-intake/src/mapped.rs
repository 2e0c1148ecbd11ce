//! What a parsed input means to Railyard, whatever door it came through: a signal about a
//! service's change, an inventory update, an incident, or nothing ([`Mapped`]); plus the
//! catalog lookups that find the service an input is about ([`Resolver`]) and the
//! `customData.railyard` block ([`RailyardData`]).

use std::collections::BTreeMap;

use railyard_core::event::{
    ArtifactPublished, CommitsPushed, IncidentOpened, IncidentResolved, SuiteFinished,
};
use railyard_core::{
    ApiName, Catalog, DatabaseName, EnvName, Migration, QueueName, Range, ReleaseId, ServiceName,
    Version,
};
use serde::Deserialize;

use crate::answer::Refused;

/// The meaning of one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// A signal about a change of `service`, appended to `signal.<service>`.
    Signal {
        /// The service.
        service: ServiceName,
        /// The event.
        signal: Signal,
    },
    /// A suite result that names neither service nor version, only a CDEvents chain id: it
    /// attaches to the service whose artifact event carried the same chain id.
    ChainSuite(SuiteFinished),
    /// A deployment Railyard did not make (`service.deployed` on `inventory.<env>`).
    Deployed {
        /// The environment.
        env: EnvName,
        /// The service.
        service: ServiceName,
        /// What runs now; `None` when it was removed.
        running: Option<Running>,
    },
    /// An incident opened.
    IncidentOpened(IncidentOpened),
    /// An incident resolved.
    IncidentResolved(IncidentResolved),
    /// Nothing Railyard acts on, and why.
    Ignored(String),
}

/// A signal event.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// `change.artifact_published`.
    Artifact(Box<ArtifactPublished>),
    /// `change.suite_finished`.
    Suite(SuiteFinished),
    /// `change.commits_pushed`.
    Commits(CommitsPushed),
}

/// What an outside deployer says runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The version, when known.
    pub version: Option<String>,
    /// The artifact, when known.
    pub artifact: Option<String>,
    /// The commit, when known.
    pub commit: Option<String>,
}

/// A parsed input: what it means and the key that de-duplicates its redeliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What it means.
    pub mapped: Mapped,
    /// `cdevents:<source>:<id>`, `github:<delivery>`, `gitlab:<uuid>`; `None` when the sender
    /// gave none.
    pub delivery: Option<String>,
}

/// `customData.railyard`: the release-file fields of one change (INTERFACES §4), plus the
/// release grouping.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RailyardData {
    /// The service (else resolved through the catalog's `match`).
    pub service: Option<String>,
    /// The version (else the artifact purl's version).
    pub version: Option<String>,
    /// The release this change belongs to.
    pub release: Option<ReleaseId>,
    /// The services the release waits for.
    #[serde(default)]
    pub expected_changes: Vec<ServiceName>,
    /// The commit.
    pub commit: Option<String>,
    /// The branch.
    pub branch: Option<String>,
    /// The repository URL.
    pub repository: Option<String>,
    /// Commit authors.
    #[serde(default)]
    pub authors: Vec<String>,
    /// Queue versions produced.
    #[serde(default)]
    pub produces: BTreeMap<QueueName, Version>,
    /// Queue versions consumed.
    #[serde(default)]
    pub consumes: BTreeMap<QueueName, Range>,
    /// API versions provided.
    #[serde(default)]
    pub provides: BTreeMap<ApiName, Range>,
    /// API versions required.
    #[serde(default)]
    pub requires: BTreeMap<ApiName, Range>,
    /// Database schema ranges.
    #[serde(default)]
    pub schema: BTreeMap<DatabaseName, Range>,
    /// Migrations.
    #[serde(default)]
    pub migrations: Vec<Migration>,
    /// Services to go first.
    #[serde(default)]
    pub after: Vec<ServiceName>,
}

impl RailyardData {
    /// Reads `value` (the `customData.railyard` object) with errors naming `path.<field>`.
    pub fn parse(value: &serde_json::Value, path: &str) -> Result<RailyardData, Refused> {
        serde_path_to_error::deserialize(value).map_err(|error| {
            let field = error_path(path, error.path(), &error.inner().to_string());
            Refused::invalid(
                format!(
                    "{}: fix it to match the release-file fields (INTERFACES §4: service, version, release, \
                     expected_changes, commit, branch, authors, produces, consumes, provides, requires, schema, \
                     migrations, after)",
                    error.inner()
                ),
                field,
            )
        })
    }
}

/// Finds the catalog service an input is about.
#[derive(Debug, Clone)]
pub struct Resolver<'a> {
    catalog: &'a Catalog,
}

impl<'a> Resolver<'a> {
    /// Lookups in `catalog`.
    pub fn new(catalog: &'a Catalog) -> Resolver<'a> {
        Resolver { catalog }
    }

    /// The catalog.
    pub fn catalog(&self) -> &'a Catalog {
        self.catalog
    }

    /// A service the sender named: 422 at `path` when the catalog does not have it.
    pub fn named(&self, name: &str, path: &str) -> Result<ServiceName, Refused> {
        match ServiceName::new(name) {
            Ok(service) if self.catalog.services.contains_key(&service) => Ok(service),
            _ => Err(Refused::invalid(
                format!(
                    "service {name:?} is not in the catalog: use one of [{}] or add it to railyard.toml",
                    self.catalog
                        .services
                        .keys()
                        .map(ServiceName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                path,
            )),
        }
    }

    /// The service whose `match.artifact` is the name of `purl` (version, qualifiers and
    /// subpath removed).
    pub fn by_artifact(&self, purl: &str) -> Option<ServiceName> {
        let name = purl_name(purl);
        self.catalog
            .services
            .iter()
            .find(|(_, service)| {
                service
                    .match_
                    .artifact
                    .as_deref()
                    .is_some_and(|a| purl_name(a) == name)
            })
            .map(|(name, _)| name.clone())
    }

    /// Whether `branch` may be released: it is one of `policy.protected_branches`, or that list
    /// is empty.
    pub fn protected(&self, branch: &str) -> bool {
        let protected = &self.catalog.policy.protected_branches;
        protected.is_empty() || protected.iter().any(|p| p == branch)
    }

    /// The service whose `match.repository` is `url` (case, trailing `/` and `.git` ignored).
    pub fn by_repository(&self, url: &str) -> Option<ServiceName> {
        let url = normalize_repository(url);
        self.catalog
            .services
            .iter()
            .find(|(_, service)| {
                service
                    .match_
                    .repository
                    .as_deref()
                    .is_some_and(|r| normalize_repository(r) == url)
            })
            .map(|(name, _)| name.clone())
    }

    /// `name` as a catalog service, when it is one (CDEvents `service` subjects).
    pub fn by_name(&self, name: &str) -> Option<ServiceName> {
        ServiceName::new(name)
            .ok()
            .filter(|service| self.catalog.services.contains_key(service))
    }

    /// A catalog environment, or the reason to ignore the input.
    pub fn environment(&self, id: &str) -> Result<EnvName, String> {
        match EnvName::new(id) {
            Ok(env) if self.catalog.environment(&env).is_some() => Ok(env),
            _ => Err(format!(
                "environment {id:?} is not in the catalog (known: {}): railyard tracks only its environments",
                self.catalog
                    .environments
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The key path of a deserialization error under `prefix`, ending in the missing field's name
/// when the error is a missing field (serde reports those at the parent).
pub fn error_path(prefix: &str, path: &serde_path_to_error::Path, message: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !prefix.is_empty() {
        parts.push(prefix.to_owned());
    }
    let at = path.to_string();
    if at != "." && !at.is_empty() {
        parts.push(at);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some(field) = rest.split('`').next() {
            parts.push(field.to_owned());
        }
    }
    parts.join(".")
}

/// The part of a purl before `@`, `?` and `#`.
pub fn purl_name(purl: &str) -> &str {
    let end = purl.find(['?', '#']).unwrap_or(purl.len());
    let purl = &purl[..end];
    // The version separator is the last `@` after the type (`pkg:npm/%40scope/x@1.0`).
    match purl.rfind('@') {
        Some(at) if purl[..at].contains('/') => &purl[..at],
        _ => purl,
    }
}

/// The version of a purl, percent-decoded (`pkg:oci/x@sha256%3Aab` → `sha256:ab`).
pub fn purl_version(purl: &str) -> Option<String> {
    let end = purl.find(['?', '#']).unwrap_or(purl.len());
    let name = purl_name(purl);
    let version = purl[..end].strip_prefix(name)?.strip_prefix('@')?;
    (!version.is_empty()).then(|| percent_decode(version))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A repository URL for comparison.
pub fn normalize_repository(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix(".git").unwrap_or(url).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_split_into_name_and_version() {
        assert_eq!(
            purl_name("pkg:oci/orders-api@sha256%3A0b31?repository_url=x"),
            "pkg:oci/orders-api"
        );
        assert_eq!(
            purl_version("pkg:oci/orders-api@sha256%3A0b31").as_deref(),
            Some("sha256:0b31")
        );
        assert_eq!(
            purl_version("pkg:npm/%40acme/web@1.2.0").as_deref(),
            Some("1.2.0")
        );
        assert_eq!(purl_name("pkg:oci/orders-api"), "pkg:oci/orders-api");
        assert_eq!(purl_version("pkg:oci/orders-api"), None);
        assert_eq!(purl_version("pkg:oci/x@1%2"), Some("1%2".to_owned()));
        assert_eq!(
            normalize_repository("https://GitHub.com/acme/orders-api.git/"),
            "https://github.com/acme/orders-api"
        );
    }
}
