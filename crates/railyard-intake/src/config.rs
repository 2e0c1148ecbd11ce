//! [`IntakeConfig`]: the catalog, the tokens, the webhook secrets (from the environment or a
//! file, never from the catalog), the body limit and the clock.

use std::path::{Path, PathBuf};

use railyard_core::{Catalog, SharedClock, SystemClock};
use railyard_http::{Metrics, Tokens};

use crate::error::ConfigError;

/// The default limit on a request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// A shared secret; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes, registered with the process's redaction layer
    /// ([`railyard_core::redact`]) so no log line or span of the process shows it.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        let bytes = bytes.into();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            railyard_core::redact::register([text]);
        }
        Secret(bytes)
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Everything intake needs besides the bus.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// The catalog: services, their `match` rules and required suites, the policies.
    pub catalog: Catalog,
    /// Bearer tokens of publishers (CDEvents over HTTP, release submissions).
    pub tokens: Tokens,
    /// The GitHub webhook secret; GitHub webhooks are refused (401) without one.
    pub github_secret: Option<Secret>,
    /// The GitLab webhook token; GitLab webhooks are refused (401) without one.
    pub gitlab_token: Option<Secret>,
    /// Largest accepted body in bytes; larger ones are answered 413.
    pub body_limit: usize,
    /// Where time is read from.
    pub clock: SharedClock,
    /// The process's metrics registry (intake registers its counters there).
    pub metrics: Metrics,
    /// NATS requests handled at once by one responder.
    pub nats_concurrency: usize,
}

impl IntakeConfig {
    /// A configuration with defaults: no webhook secrets, 1 MiB bodies, the system clock.
    pub fn new(catalog: Catalog, tokens: Tokens) -> IntakeConfig {
        IntakeConfig {
            catalog,
            tokens,
            github_secret: None,
            gitlab_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            clock: SystemClock::shared(),
            metrics: Metrics::default(),
            nats_concurrency: 256,
        }
    }

    /// Reads the catalog at `catalog_path` and the rest from the environment:
    /// `RAILYARD_TOKENS_FILE` (tokens file, TOML), `RAILYARD_GITHUB_WEBHOOK_SECRET` or
    /// `RAILYARD_GITHUB_WEBHOOK_SECRET_FILE`, `RAILYARD_GITLAB_WEBHOOK_TOKEN` or
    /// `RAILYARD_GITLAB_WEBHOOK_TOKEN_FILE`, and `RAILYARD_INTAKE_BODY_LIMIT` (bytes).
    pub fn from_env(catalog_path: &Path) -> Result<IntakeConfig, ConfigError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let catalog =
            Catalog::from_toml(&read(catalog_path)?).map_err(|source| ConfigError::Catalog {
                path: catalog_path.to_owned(),
                source,
            })?;
        let tokens = match std::env::var_os("RAILYARD_TOKENS_FILE") {
            Some(path) => {
                let path = PathBuf::from(path);
                Tokens::from_toml(&read(&path)?)
                    .map_err(|source| ConfigError::Tokens { path, source })?
            }
            None => Tokens::default(),
        };
        let mut config = IntakeConfig::new(catalog, tokens);
        config.github_secret = secret_from_env("RAILYARD_GITHUB_WEBHOOK_SECRET")?;
        config.gitlab_token = secret_from_env("RAILYARD_GITLAB_WEBHOOK_TOKEN")?;
        if let Ok(limit) = std::env::var("RAILYARD_INTAKE_BODY_LIMIT") {
            config.body_limit = limit
                .trim()
                .parse()
                .map_err(|_| ConfigError::BodyLimit { value: limit })?;
        }
        Ok(config)
    }
}

/// `NAME` holds the secret itself, `NAME_FILE` a path to a file holding it (trailing newline
/// trimmed); neither means none.
fn secret_from_env(name: &str) -> Result<Option<Secret>, ConfigError> {
    if let Ok(value) = std::env::var(name) {
        return Ok(non_empty(value.into_bytes()));
    }
    let file_var = format!("{name}_FILE");
    let Some(path) = std::env::var_os(&file_var) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let mut bytes = std::fs::read(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(non_empty(bytes))
}

fn non_empty(bytes: Vec<u8>) -> Option<Secret> {
    (!bytes.is_empty()).then(|| Secret::new(bytes))
}
