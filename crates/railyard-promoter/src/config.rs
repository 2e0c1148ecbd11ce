//! [`PromoterConfig`]: what a promotion worker needs — the catalog, its id, where its read model
//! lives, the clock every wait goes through, lease renewal, sweep and polling intervals — and
//! [`Secrets`], the values `{secret:NAME}` placeholders expand to, which are never logged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use railyard_core::{Catalog, SharedClock, SystemClock};

/// How one promotion worker runs. Any number of workers may run against one NATS; give each a
/// distinct `worker_id` and its own `store` directory.
#[derive(Debug, Clone)]
pub struct PromoterConfig {
    /// The catalog in force.
    pub catalog: Catalog,
    /// This worker's id; it names the holder of step leases and appears on `step.started`.
    pub worker_id: String,
    /// Where the worker's read model (the releases in flight) lives: a sled directory.
    pub store: PathBuf,
    /// The store at `store` when this process already has it open: a service started again
    /// after NATS failed reuses it instead of opening the directory again
    /// ([`railyard_store::Store::kept_or_open`]). `None`: opened at each start.
    pub kept_store: Option<railyard_store::Store>,
    /// The clock every wait reads: simulated durations, timeouts, soaks, lease renewal, sweeps.
    /// Connect the bus with the same clock (`BusConfig::clock`), which decides lease expiry.
    pub clock: SharedClock,
    /// How often a held lease is renewed; must be well below the bus's `lease_ttl`.
    pub lease_renew_interval: Duration,
    /// How often every release in flight is looked at again, to resume steps whose worker died
    /// and to re-offer work that was lost.
    pub sweep_interval: Duration,
    /// How often an http deploy's `status_url` is polled.
    pub poll_interval: Duration,
    /// Steps one worker runs at the same time.
    pub max_concurrent_steps: usize,
    /// Seed of the `fail_rate` draws of simulated deploys (the draw also depends on the
    /// release, step and attempt, so it is reproducible).
    pub simulation_seed: u64,
    /// How many bytes of a command's output are kept in its step event.
    pub output_tail_bytes: usize,
    /// Values of `{secret:NAME}` placeholders.
    pub secrets: Secrets,
    /// The promoter's own environment, which commands never inherit whole: they receive
    /// `PATH`, `HOME`, `LANG`, `LC_ALL` and `TMPDIR` from it, and the variables their service or
    /// database grants (`env = [...]` in the catalog). `new` takes the process's.
    pub environment: Environment,
    /// Told what the worker's read model applied and how far behind it is (the binary feeds
    /// it to `/metrics` as the `promoter` reader).
    pub progress: Option<railyard_store::Progress>,
}

impl PromoterConfig {
    /// A worker with default intervals (renew every 10 s, sweep every 15 s, poll every 2 s).
    pub fn new(catalog: Catalog, worker_id: impl Into<String>, store: impl Into<PathBuf>) -> Self {
        PromoterConfig {
            catalog,
            worker_id: worker_id.into(),
            store: store.into(),
            kept_store: None,
            clock: SystemClock::shared(),
            lease_renew_interval: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(15),
            poll_interval: Duration::from_secs(2),
            max_concurrent_steps: 16,
            simulation_seed: 0,
            output_tail_bytes: 2048,
            secrets: Secrets::default(),
            environment: Environment::from_vars(std::env::vars()),
            progress: None,
        }
    }
}

/// Environment variables by name. `Debug` shows only the names (values may be credentials).
#[derive(Clone, Default)]
pub struct Environment(BTreeMap<String, String>);

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Environment {
    /// These variables.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Environment {
        Environment(vars.into_iter().collect())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Secret values by name. `Debug` shows only the names.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Every `RAILYARD_SECRET_<NAME>` variable of the process, as `NAME`.
    pub fn from_env() -> Secrets {
        Secrets::from_vars(std::env::vars())
    }

    /// The `RAILYARD_SECRET_<NAME>` entries of `vars`, as `NAME`.
    /// Each value is registered with the process's redaction layer
    /// ([`railyard_core::redact`]), so it is masked in every event, log line and span.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Secrets {
        let secrets = Secrets(
            vars.into_iter()
                .filter_map(|(key, value)| {
                    key.strip_prefix("RAILYARD_SECRET_")
                        .map(|name| (name.to_owned(), value))
                })
                .collect(),
        );
        railyard_core::redact::register(secrets.0.values().map(String::as_str));
        secrets
    }

    /// Adds or replaces one secret (registered with the redaction layer too).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        railyard_core::redact::register([value.as_str()]);
        self.0.insert(name.into(), value);
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The length of the longest secret value.
    pub fn longest(&self) -> usize {
        self.0.values().map(String::len).max().unwrap_or(0)
    }

    /// `text` through the process's redaction layer: every secret it holds (these and the
    /// others the process registered), in every encoded form, and URL passwords become `***`.
    pub fn redact(&self, text: &str) -> String {
        railyard_core::redact::redact(text).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_prefixed_variables_and_are_redacted() {
        let secrets = Secrets::from_vars([
            (
                "RAILYARD_SECRET_DEPLOY_TOKEN".to_owned(),
                "s3cr3t".to_owned(),
            ),
            ("PATH".to_owned(), "/bin".to_owned()),
        ]);
        assert_eq!(secrets.get("DEPLOY_TOKEN"), Some("s3cr3t"));
        assert_eq!(secrets.get("PATH"), None);
        assert_eq!(format!("{secrets:?}"), "{\"DEPLOY_TOKEN\"}");
        assert_eq!(secrets.redact("token=s3cr3t ok"), "token=*** ok");
    }
}
