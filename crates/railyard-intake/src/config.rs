//! [`IntakeConfig`]: the catalog, the tokens, the webhook secrets (from the environment or a
//! file, never from the catalog), the body limit, the trusted proxies, how many unauthenticated
//! refusals are logged, how long a delivery may stay claimed, and the clock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use railyard_core::{Catalog, SharedClock, SystemClock};
use railyard_http::{Metrics, Tokens, TrustedProxies};

use crate::error::ConfigError;
use crate::sample::{Rate, RejectionSampling};

/// The default limit on a request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// How long a delivery stays claimed by the request storing it, by default: far longer than
/// any append takes (each is bounded by the bus's `append_timeout`), so a claim only expires
/// when its intake died.
pub const DEFAULT_DELIVERY_CLAIM_TTL: Duration = Duration::from_secs(5 * 60);
/// Unauthenticated refusals logged per origin (`10/1m`).
pub const REJECTION_SAMPLE_ENV: &str = "RAILYARD_INTAKE_REJECTION_SAMPLE";
/// Unauthenticated refusals logged from all origins together (`100/1m`).
pub const REJECTION_SAMPLE_TOTAL_ENV: &str = "RAILYARD_INTAKE_REJECTION_SAMPLE_TOTAL";

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
    /// Proxies whose `X-Forwarded-For` names the origin; nobody by default (the origin is the
    /// socket's peer).
    pub trusted_proxies: TrustedProxies,
    /// How many unauthenticated refusals (401, 403, bad webhook signatures and webhook bodies
    /// refused before their signature was checked) are written to the rejection log; all of
    /// them are counted in `railyard_intake_unauthenticated_total`.
    pub rejection_sampling: RejectionSampling,
    /// How long a delivery stays claimed while its events are appended; a claim left by an
    /// intake that died is taken over after this (its redeliveries are answered 503 until then).
    pub delivery_claim_ttl: Duration,
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
            trusted_proxies: TrustedProxies::none(),
            rejection_sampling: RejectionSampling::default(),
            delivery_claim_ttl: DEFAULT_DELIVERY_CLAIM_TTL,
        }
    }

    /// Reads the catalog at `catalog_path` and the rest from the environment:
    /// `RAILYARD_TOKENS_FILE` (tokens file, TOML), `RAILYARD_GITHUB_WEBHOOK_SECRET` or
    /// `RAILYARD_GITHUB_WEBHOOK_SECRET_FILE`, `RAILYARD_GITLAB_WEBHOOK_TOKEN` or
    /// `RAILYARD_GITLAB_WEBHOOK_TOKEN_FILE`, `RAILYARD_INTAKE_BODY_LIMIT` (bytes),
    /// `RAILYARD_TRUSTED_PROXIES` (addresses and CIDR blocks), and
    /// `RAILYARD_INTAKE_REJECTION_SAMPLE` / `RAILYARD_INTAKE_REJECTION_SAMPLE_TOTAL` (`10/1m`).
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
        config.trusted_proxies = TrustedProxies::from_env().map_err(ConfigError::TrustedProxies)?;
        if let Some(rate) = rate_from_env(REJECTION_SAMPLE_ENV)? {
            config.rejection_sampling.per_origin = rate;
        }
        if let Some(rate) = rate_from_env(REJECTION_SAMPLE_TOTAL_ENV)? {
            config.rejection_sampling.total = rate;
        }
        Ok(config)
    }
}

fn rate_from_env(variable: &'static str) -> Result<Option<Rate>, ConfigError> {
    match std::env::var(variable) {
        Ok(text) if !text.trim().is_empty() => text
            .parse()
            .map(Some)
            .map_err(|problem| ConfigError::Rate { variable, problem }),
        _ => Ok(None),
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
