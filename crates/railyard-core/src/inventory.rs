//! The inventory (INTERFACES §5): what runs where now, per environment. A projection of
//! the event log, also accepted as a JSON file by `railyard plan`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::{Range, Version};
use crate::names::{ApiName, DatabaseName, EnvName, QueueName, ServiceName};
use crate::parse::{self, ParseError};
use crate::release::Change;

/// Every environment's running services and database versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(transparent)]
pub struct Inventory(pub BTreeMap<EnvName, EnvInventory>);

/// One environment's running services and database versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EnvInventory {
    /// Running services.
    #[serde(default)]
    pub services: BTreeMap<ServiceName, RunningService>,
    /// Current schema version per database.
    #[serde(default)]
    pub databases: BTreeMap<DatabaseName, Version>,
}

/// A service as it runs in one environment, with its live contracts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunningService {
    /// Running version.
    pub version: String,
    /// Running artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Running commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Queue message versions read.
    #[serde(default)]
    pub consumes: BTreeMap<QueueName, Range>,
    /// Queue message version emitted.
    #[serde(default)]
    pub produces: BTreeMap<QueueName, Version>,
    /// API versions served.
    #[serde(default)]
    pub provides: BTreeMap<ApiName, Range>,
    /// API versions required.
    #[serde(default)]
    pub requires: BTreeMap<ApiName, Range>,
    /// Database schema versions it works with.
    #[serde(default)]
    pub schema: BTreeMap<DatabaseName, Range>,
    /// The colour serving traffic, for a service deployed blue-green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<String>,
}

impl From<&Change> for RunningService {
    fn from(c: &Change) -> RunningService {
        RunningService {
            version: c.version.clone(),
            artifact: c.artifact.clone(),
            commit: c.commit.clone(),
            consumes: c.consumes.clone(),
            produces: c.produces.clone(),
            provides: c.provides.clone(),
            requires: c.requires.clone(),
            schema: c.schema.clone(),
            colour: None,
        }
    }
}

impl Inventory {
    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Inventory, ParseError> {
        let inventory: Inventory = parse::from_json("inventory", text)?;
        // Running versions reach rollback commands (`{version}`): the same grammar as a
        // release's.
        for (env, running) in &inventory.0 {
            for (service, service_running) in &running.services {
                let at = format!("inventory.{env}.services.{service}");
                crate::release::check_version(&service_running.version)
                    .map_err(|problem| ParseError::at(format!("{at}.version"), problem))?;
                if let Some(artifact) = &service_running.artifact {
                    crate::release::check_artifact(artifact)
                        .map_err(|problem| ParseError::at(format!("{at}.artifact"), problem))?;
                }
            }
        }
        Ok(inventory)
    }

    /// The inventory of `env`, empty when nothing runs there.
    pub fn env(&self, env: &EnvName) -> Option<&EnvInventory> {
        self.0.get(env)
    }
}
