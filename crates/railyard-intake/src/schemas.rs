//! The official CDEvents JSON schemas of v0.4.1 and v0.5.1, vendored in
//! `schemas/cdevents/<version>/` with their licence (Apache-2.0, the CDEvents authors), compiled
//! once into one validator per event type.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The CDEvents releases intake validates against.
pub const VERSIONS: [&str; 2] = ["0.4.1", "0.5.1"];

/// Every vendored schema file: path relative to `schemas/cdevents/`, contents.
const FILES: &[(&str, &str)] = &[
    (
        "0.4.1/artifactdeleted.json",
        include_str!("../../../schemas/cdevents/0.4.1/artifactdeleted.json"),
    ),
    (
        "0.4.1/artifactdownloaded.json",
        include_str!("../../../schemas/cdevents/0.4.1/artifactdownloaded.json"),
    ),
    (
        "0.4.1/artifactpackaged.json",
        include_str!("../../../schemas/cdevents/0.4.1/artifactpackaged.json"),
    ),
    (
        "0.4.1/artifactpublished.json",
        include_str!("../../../schemas/cdevents/0.4.1/artifactpublished.json"),
    ),
    (
        "0.4.1/artifactsigned.json",
        include_str!("../../../schemas/cdevents/0.4.1/artifactsigned.json"),
    ),
    (
        "0.4.1/branchcreated.json",
        include_str!("../../../schemas/cdevents/0.4.1/branchcreated.json"),
    ),
    (
        "0.4.1/branchdeleted.json",
        include_str!("../../../schemas/cdevents/0.4.1/branchdeleted.json"),
    ),
    (
        "0.4.1/buildfinished.json",
        include_str!("../../../schemas/cdevents/0.4.1/buildfinished.json"),
    ),
    (
        "0.4.1/buildqueued.json",
        include_str!("../../../schemas/cdevents/0.4.1/buildqueued.json"),
    ),
    (
        "0.4.1/buildstarted.json",
        include_str!("../../../schemas/cdevents/0.4.1/buildstarted.json"),
    ),
    (
        "0.4.1/changeabandoned.json",
        include_str!("../../../schemas/cdevents/0.4.1/changeabandoned.json"),
    ),
    (
        "0.4.1/changecreated.json",
        include_str!("../../../schemas/cdevents/0.4.1/changecreated.json"),
    ),
    (
        "0.4.1/changemerged.json",
        include_str!("../../../schemas/cdevents/0.4.1/changemerged.json"),
    ),
    (
        "0.4.1/changereviewed.json",
        include_str!("../../../schemas/cdevents/0.4.1/changereviewed.json"),
    ),
    (
        "0.4.1/changeupdated.json",
        include_str!("../../../schemas/cdevents/0.4.1/changeupdated.json"),
    ),
    (
        "0.4.1/environmentcreated.json",
        include_str!("../../../schemas/cdevents/0.4.1/environmentcreated.json"),
    ),
    (
        "0.4.1/environmentdeleted.json",
        include_str!("../../../schemas/cdevents/0.4.1/environmentdeleted.json"),
    ),
    (
        "0.4.1/environmentmodified.json",
        include_str!("../../../schemas/cdevents/0.4.1/environmentmodified.json"),
    ),
    (
        "0.4.1/incidentdetected.json",
        include_str!("../../../schemas/cdevents/0.4.1/incidentdetected.json"),
    ),
    (
        "0.4.1/incidentreported.json",
        include_str!("../../../schemas/cdevents/0.4.1/incidentreported.json"),
    ),
    (
        "0.4.1/incidentresolved.json",
        include_str!("../../../schemas/cdevents/0.4.1/incidentresolved.json"),
    ),
    (
        "0.4.1/pipelinerunfinished.json",
        include_str!("../../../schemas/cdevents/0.4.1/pipelinerunfinished.json"),
    ),
    (
        "0.4.1/pipelinerunqueued.json",
        include_str!("../../../schemas/cdevents/0.4.1/pipelinerunqueued.json"),
    ),
    (
        "0.4.1/pipelinerunstarted.json",
        include_str!("../../../schemas/cdevents/0.4.1/pipelinerunstarted.json"),
    ),
    (
        "0.4.1/repositorycreated.json",
        include_str!("../../../schemas/cdevents/0.4.1/repositorycreated.json"),
    ),
    (
        "0.4.1/repositorydeleted.json",
        include_str!("../../../schemas/cdevents/0.4.1/repositorydeleted.json"),
    ),
    (
        "0.4.1/repositorymodified.json",
        include_str!("../../../schemas/cdevents/0.4.1/repositorymodified.json"),
    ),
    (
        "0.4.1/servicedeployed.json",
        include_str!("../../../schemas/cdevents/0.4.1/servicedeployed.json"),
    ),
    (
        "0.4.1/servicepublished.json",
        include_str!("../../../schemas/cdevents/0.4.1/servicepublished.json"),
    ),
    (
        "0.4.1/serviceremoved.json",
        include_str!("../../../schemas/cdevents/0.4.1/serviceremoved.json"),
    ),
    (
        "0.4.1/servicerolledback.json",
        include_str!("../../../schemas/cdevents/0.4.1/servicerolledback.json"),
    ),
    (
        "0.4.1/serviceupgraded.json",
        include_str!("../../../schemas/cdevents/0.4.1/serviceupgraded.json"),
    ),
    (
        "0.4.1/taskrunfinished.json",
        include_str!("../../../schemas/cdevents/0.4.1/taskrunfinished.json"),
    ),
    (
        "0.4.1/taskrunstarted.json",
        include_str!("../../../schemas/cdevents/0.4.1/taskrunstarted.json"),
    ),
    (
        "0.4.1/testcaserunfinished.json",
        include_str!("../../../schemas/cdevents/0.4.1/testcaserunfinished.json"),
    ),
    (
        "0.4.1/testcaserunqueued.json",
        include_str!("../../../schemas/cdevents/0.4.1/testcaserunqueued.json"),
    ),
    (
        "0.4.1/testcaserunskipped.json",
        include_str!("../../../schemas/cdevents/0.4.1/testcaserunskipped.json"),
    ),
    (
        "0.4.1/testcaserunstarted.json",
        include_str!("../../../schemas/cdevents/0.4.1/testcaserunstarted.json"),
    ),
    (
        "0.4.1/testoutputpublished.json",
        include_str!("../../../schemas/cdevents/0.4.1/testoutputpublished.json"),
    ),
    (
        "0.4.1/testsuiterunfinished.json",
        include_str!("../../../schemas/cdevents/0.4.1/testsuiterunfinished.json"),
    ),
    (
        "0.4.1/testsuiterunqueued.json",
        include_str!("../../../schemas/cdevents/0.4.1/testsuiterunqueued.json"),
    ),
    (
        "0.4.1/testsuiterunstarted.json",
        include_str!("../../../schemas/cdevents/0.4.1/testsuiterunstarted.json"),
    ),
    (
        "0.4.1/ticketclosed.json",
        include_str!("../../../schemas/cdevents/0.4.1/ticketclosed.json"),
    ),
    (
        "0.4.1/ticketcreated.json",
        include_str!("../../../schemas/cdevents/0.4.1/ticketcreated.json"),
    ),
    (
        "0.4.1/ticketupdated.json",
        include_str!("../../../schemas/cdevents/0.4.1/ticketupdated.json"),
    ),
    (
        "0.4.1/links/embeddedlinkend.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/embeddedlinkend.json"),
    ),
    (
        "0.4.1/links/embeddedlinkpath.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/embeddedlinkpath.json"),
    ),
    (
        "0.4.1/links/embeddedlinkrelation.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/embeddedlinkrelation.json"),
    ),
    (
        "0.4.1/links/embeddedlinksarray.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/embeddedlinksarray.json"),
    ),
    (
        "0.4.1/links/linkend.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/linkend.json"),
    ),
    (
        "0.4.1/links/linkpath.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/linkpath.json"),
    ),
    (
        "0.4.1/links/linkrelation.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/linkrelation.json"),
    ),
    (
        "0.4.1/links/linkstart.json",
        include_str!("../../../schemas/cdevents/0.4.1/links/linkstart.json"),
    ),
    (
        "0.5.1/artifactdeleted.json",
        include_str!("../../../schemas/cdevents/0.5.1/artifactdeleted.json"),
    ),
    (
        "0.5.1/artifactdownloaded.json",
        include_str!("../../../schemas/cdevents/0.5.1/artifactdownloaded.json"),
    ),
    (
        "0.5.1/artifactpackaged.json",
        include_str!("../../../schemas/cdevents/0.5.1/artifactpackaged.json"),
    ),
    (
        "0.5.1/artifactpublished.json",
        include_str!("../../../schemas/cdevents/0.5.1/artifactpublished.json"),
    ),
    (
        "0.5.1/artifactsigned.json",
        include_str!("../../../schemas/cdevents/0.5.1/artifactsigned.json"),
    ),
    (
        "0.5.1/branchcreated.json",
        include_str!("../../../schemas/cdevents/0.5.1/branchcreated.json"),
    ),
    (
        "0.5.1/branchdeleted.json",
        include_str!("../../../schemas/cdevents/0.5.1/branchdeleted.json"),
    ),
    (
        "0.5.1/buildfinished.json",
        include_str!("../../../schemas/cdevents/0.5.1/buildfinished.json"),
    ),
    (
        "0.5.1/buildqueued.json",
        include_str!("../../../schemas/cdevents/0.5.1/buildqueued.json"),
    ),
    (
        "0.5.1/buildstarted.json",
        include_str!("../../../schemas/cdevents/0.5.1/buildstarted.json"),
    ),
    (
        "0.5.1/changeabandoned.json",
        include_str!("../../../schemas/cdevents/0.5.1/changeabandoned.json"),
    ),
    (
        "0.5.1/changecreated.json",
        include_str!("../../../schemas/cdevents/0.5.1/changecreated.json"),
    ),
    (
        "0.5.1/changemerged.json",
        include_str!("../../../schemas/cdevents/0.5.1/changemerged.json"),
    ),
    (
        "0.5.1/changereviewed.json",
        include_str!("../../../schemas/cdevents/0.5.1/changereviewed.json"),
    ),
    (
        "0.5.1/changeupdated.json",
        include_str!("../../../schemas/cdevents/0.5.1/changeupdated.json"),
    ),
    (
        "0.5.1/environmentcreated.json",
        include_str!("../../../schemas/cdevents/0.5.1/environmentcreated.json"),
    ),
    (
        "0.5.1/environmentdeleted.json",
        include_str!("../../../schemas/cdevents/0.5.1/environmentdeleted.json"),
    ),
    (
        "0.5.1/environmentmodified.json",
        include_str!("../../../schemas/cdevents/0.5.1/environmentmodified.json"),
    ),
    (
        "0.5.1/incidentdetected.json",
        include_str!("../../../schemas/cdevents/0.5.1/incidentdetected.json"),
    ),
    (
        "0.5.1/incidentreported.json",
        include_str!("../../../schemas/cdevents/0.5.1/incidentreported.json"),
    ),
    (
        "0.5.1/incidentresolved.json",
        include_str!("../../../schemas/cdevents/0.5.1/incidentresolved.json"),
    ),
    (
        "0.5.1/pipelinerunfinished.json",
        include_str!("../../../schemas/cdevents/0.5.1/pipelinerunfinished.json"),
    ),
    (
        "0.5.1/pipelinerunqueued.json",
        include_str!("../../../schemas/cdevents/0.5.1/pipelinerunqueued.json"),
    ),
    (
        "0.5.1/pipelinerunstarted.json",
        include_str!("../../../schemas/cdevents/0.5.1/pipelinerunstarted.json"),
    ),
    (
        "0.5.1/repositorycreated.json",
        include_str!("../../../schemas/cdevents/0.5.1/repositorycreated.json"),
    ),
    (
        "0.5.1/repositorydeleted.json",
        include_str!("../../../schemas/cdevents/0.5.1/repositorydeleted.json"),
    ),
    (
        "0.5.1/repositorymodified.json",
        include_str!("../../../schemas/cdevents/0.5.1/repositorymodified.json"),
    ),
    (
        "0.5.1/servicedeployed.json",
        include_str!("../../../schemas/cdevents/0.5.1/servicedeployed.json"),
    ),
    (
        "0.5.1/servicepublished.json",
        include_str!("../../../schemas/cdevents/0.5.1/servicepublished.json"),
    ),
    (
        "0.5.1/serviceremoved.json",
        include_str!("../../../schemas/cdevents/0.5.1/serviceremoved.json"),
    ),
    (
        "0.5.1/servicerolledback.json",
        include_str!("../../../schemas/cdevents/0.5.1/servicerolledback.json"),
    ),
    (
        "0.5.1/serviceupgraded.json",
        include_str!("../../../schemas/cdevents/0.5.1/serviceupgraded.json"),
    ),
    (
        "0.5.1/taskrunfinished.json",
        include_str!("../../../schemas/cdevents/0.5.1/taskrunfinished.json"),
    ),
    (
        "0.5.1/taskrunstarted.json",
        include_str!("../../../schemas/cdevents/0.5.1/taskrunstarted.json"),
    ),
    (
        "0.5.1/testcaserunfinished.json",
        include_str!("../../../schemas/cdevents/0.5.1/testcaserunfinished.json"),
    ),
    (
        "0.5.1/testcaserunqueued.json",
        include_str!("../../../schemas/cdevents/0.5.1/testcaserunqueued.json"),
    ),
    (
        "0.5.1/testcaserunskipped.json",
        include_str!("../../../schemas/cdevents/0.5.1/testcaserunskipped.json"),
    ),
    (
        "0.5.1/testcaserunstarted.json",
        include_str!("../../../schemas/cdevents/0.5.1/testcaserunstarted.json"),
    ),
    (
        "0.5.1/testoutputpublished.json",
        include_str!("../../../schemas/cdevents/0.5.1/testoutputpublished.json"),
    ),
    (
        "0.5.1/testsuiterunfinished.json",
        include_str!("../../../schemas/cdevents/0.5.1/testsuiterunfinished.json"),
    ),
    (
        "0.5.1/testsuiterunqueued.json",
        include_str!("../../../schemas/cdevents/0.5.1/testsuiterunqueued.json"),
    ),
    (
        "0.5.1/testsuiterunstarted.json",
        include_str!("../../../schemas/cdevents/0.5.1/testsuiterunstarted.json"),
    ),
    (
        "0.5.1/ticketclosed.json",
        include_str!("../../../schemas/cdevents/0.5.1/ticketclosed.json"),
    ),
    (
        "0.5.1/ticketcreated.json",
        include_str!("../../../schemas/cdevents/0.5.1/ticketcreated.json"),
    ),
    (
        "0.5.1/ticketupdated.json",
        include_str!("../../../schemas/cdevents/0.5.1/ticketupdated.json"),
    ),
    (
        "0.5.1/links/embeddedlinkend.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/embeddedlinkend.json"),
    ),
    (
        "0.5.1/links/embeddedlinkpath.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/embeddedlinkpath.json"),
    ),
    (
        "0.5.1/links/embeddedlinkrelation.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/embeddedlinkrelation.json"),
    ),
    (
        "0.5.1/links/embeddedlinksarray.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/embeddedlinksarray.json"),
    ),
    (
        "0.5.1/links/linkend.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/linkend.json"),
    ),
    (
        "0.5.1/links/linkpath.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/linkpath.json"),
    ),
    (
        "0.5.1/links/linkrelation.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/linkrelation.json"),
    ),
    (
        "0.5.1/links/linkstart.json",
        include_str!("../../../schemas/cdevents/0.5.1/links/linkstart.json"),
    ),
];

/// One compiled schema: the event types it accepts and its validator.
pub struct EventSchema {
    /// `context.type` values it allows (`dev.cdevents.artifact.published.0.3.0`).
    pub types: Vec<String>,
    /// The validator.
    pub validator: jsonschema::Validator,
}

/// Validators by (CDEvents version, `<subject>.<predicate>`).
pub struct Schemas {
    by_kind: BTreeMap<(String, String), EventSchema>,
}

impl Schemas {
    /// The compiled schemas (compiled on first use; the vendored files are known good, so a
    /// failure here is a build defect and panics with the file's name).
    pub fn get() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        SCHEMAS.get_or_init(Schemas::compile)
    }

    fn compile() -> Schemas {
        let mut by_kind = BTreeMap::new();
        for version in VERSIONS {
            let parsed: Vec<(&str, Value)> = FILES
                .iter()
                .filter(|(path, _)| path.starts_with(&format!("{version}/")))
                .map(|(path, text)| {
                    let value = serde_json::from_str(text).unwrap_or_else(|error| {
                        panic!("vendored schema {path} is not json: {error}")
                    });
                    (*path, value)
                })
                .collect();
            let mut registry = jsonschema::Registry::new();
            for (path, value) in &parsed {
                if let Some(id) = value.get("$id").and_then(Value::as_str) {
                    registry = registry
                        .add(id, value.clone())
                        .unwrap_or_else(|error| panic!("vendored schema {path}: {error}"));
                }
            }
            let registry = registry
                .prepare()
                .unwrap_or_else(|error| panic!("vendored cdevents {version} schemas: {error}"));
            for (path, value) in &parsed {
                if path.contains("/links/") {
                    continue;
                }
                let types: Vec<String> = value
                    .pointer("/properties/context/properties/type/enum")
                    .and_then(Value::as_array)
                    .map(|types| {
                        types
                            .iter()
                            .filter_map(|t| t.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let Some(kind) = types.first().and_then(|t| kind_of(t)) else {
                    continue;
                };
                let validator = jsonschema::options()
                    .with_registry(&registry)
                    .should_validate_formats(true)
                    .build(value)
                    .unwrap_or_else(|error| {
                        panic!("vendored schema {path} does not compile: {error}")
                    });
                by_kind.insert((version.to_owned(), kind), EventSchema { types, validator });
            }
        }
        Schemas { by_kind }
    }

    /// The schema of `kind` (`artifact.published`) in CDEvents `version`.
    pub fn schema(&self, version: &str, kind: &str) -> Option<&EventSchema> {
        self.by_kind.get(&(version.to_owned(), kind.to_owned()))
    }
}

/// `artifact.published` of `dev.cdevents.artifact.published.0.3.0`.
pub fn kind_of(event_type: &str) -> Option<String> {
    let rest = event_type.strip_prefix("dev.cdevents.")?;
    let mut parts = rest.splitn(3, '.');
    let (subject, predicate) = (parts.next()?, parts.next()?);
    parts.next()?;
    Some(format!("{subject}.{predicate}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vendored_event_schema_compiles() {
        let schemas = Schemas::get();
        for version in VERSIONS {
            let schema = schemas
                .schema(version, "artifact.published")
                .expect("artifact.published");
            assert_eq!(schema.types.len(), 1);
        }
        assert_eq!(schemas.by_kind.len(), 2 * 45);
        assert_eq!(
            kind_of("dev.cdevents.testsuiterun.finished.0.3.0").as_deref(),
            Some("testsuiterun.finished")
        );
        assert_eq!(kind_of("com.example.x"), None);
    }
}
