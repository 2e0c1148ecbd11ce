//! Deploy adapters (INTERFACES §3): `simulated` (a duration on the clock, failure by version or
//! by a seeded draw), `command` (argv with placeholders and `RAILYARD_*` variables, a timeout,
//! the exit code decides, the output's tail is kept) and `http` (POST JSON, 2xx accepts, an
//! optional status URL polled until done). Every form is desired-state: running it twice is
//! harmless. Secrets expand from [`Secrets`] and never reach a log or an event.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use railyard_core::catalog::Deploy;
use railyard_core::redact::percent_encode;
use railyard_core::{Catalog, EnvName, ReleaseId, SharedClock, StepId};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tracing::{debug, info};

use crate::config::{Environment, Secrets};

/// Default time limit of a command or http deploy without a `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What a step acts on: the values its placeholders expand to.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `{release}`.
    pub release: Option<ReleaseId>,
    /// The step id (not a placeholder; sent to http adapters).
    pub step: StepId,
    /// `{env}`.
    pub env: Option<EnvName>,
    /// `{attempt}`: the step's attempt number (1, then 2 when another worker took it over).
    pub attempt: u32,
    /// `{service}`.
    pub service: Option<String>,
    /// `{version}`: the version a deploy brings; in a rollback, the version rolled back *to*
    /// (empty when the service did not run in the environment before the release).
    pub version: Option<String>,
    /// `{from_version}`: in a rollback, the version being undone (the release's); empty in
    /// a deploy.
    pub from_version: Option<String>,
    /// `{artifact}`.
    pub artifact: Option<String>,
    /// `{to}` (migrations).
    pub to: Option<u32>,
    /// `{weight}` (canary; 100 otherwise).
    pub weight: u8,
    /// `{colour}` (blue-green).
    pub colour: Option<String>,
}

impl Target {
    /// The service or database the step acts on (a migration's target is `database@version`).
    fn subject(&self) -> Option<String> {
        self.service.clone().or_else(|| {
            let step = railyard_core::step::StepId::parse(&self.step).ok()?;
            Some(step.target().subject().to_owned())
        })
    }

    fn values(&self) -> Vec<(&'static str, String)> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            ("service", text(&self.service)),
            ("version", text(&self.version)),
            ("from_version", text(&self.from_version)),
            ("artifact", text(&self.artifact)),
            (
                "env",
                self.env
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
            ("weight", self.weight.to_string()),
            ("colour", text(&self.colour)),
            ("to", self.to.map(|t| t.to_string()).unwrap_or_default()),
            ("attempt", self.attempt.to_string()),
            (
                "release",
                self.release
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
        ]
    }
}

/// Which form of an adapter to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Deploy (or migrate).
    Run,
    /// The rollback form.
    Rollback,
    /// The remove form (a service new to the environment).
    Remove,
}

impl Form {
    fn as_str(self) -> &'static str {
        match self {
            Form::Run => "deploy",
            Form::Rollback => "rollback",
            Form::Remove => "remove",
        }
    }
}

/// How an adapter run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, in words, with the output's tail for commands.
    pub detail: String,
}

impl Outcome {
    fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            detail: detail.into(),
        }
    }
    /// A failure saying `detail`.
    pub(crate) fn failed(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Runs adapters and gates' commands and requests: the clock, secrets and HTTP client they share.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The clock every wait reads.
    pub clock: SharedClock,
    /// `{secret:NAME}` values.
    pub secrets: Secrets,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// How often a status URL is polled.
    pub poll_interval: Duration,
    /// Bytes of output kept.
    pub tail_bytes: usize,
    /// Seed of simulated failure draws.
    pub seed: u64,
    /// What commands' environments are built from.
    pub env: ChildEnv,
}

/// The HTTP client of gates and http deploys: it reports a redirect instead of following it
/// (a redirect could lead a request that carries a secret to another host).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client without redirects builds")
}

/// The variables every command receives from the promoter's environment, when set there.
pub const BASE_VARIABLES: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"];

/// What a command's environment is built from: the promoter's own variables and what the
/// catalog grants each service and database. A command starts with an empty environment and
/// receives [`BASE_VARIABLES`], the release's `RAILYARD_*` variables, its service's (or
/// database's) granted `env` variables and its granted secrets as `RAILYARD_SECRET_<NAME>`:
/// never the NATS credentials, never another service's secrets.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    outer: Environment,
    grants: BTreeMap<String, Grant>,
}

#[derive(Debug, Clone, Default)]
struct Grant {
    env: Vec<String>,
    secrets: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
}

impl ChildEnv {
    /// From the promoter's environment and the catalog's grants.
    pub fn new(outer: Environment, catalog: &Catalog) -> ChildEnv {
        let services = catalog.services.iter().map(|(name, service)| {
            (
                name.to_string(),
                Grant {
                    env: service.env.clone(),
                    secrets: service.secrets.clone(),
                    workdir: service.workdir.clone(),
                    user: service.user.clone(),
                },
            )
        });
        let databases = catalog.databases.iter().map(|(name, database)| {
            (
                name.to_string(),
                Grant {
                    env: database.env.clone(),
                    secrets: database.secrets.clone(),
                    workdir: database.workdir.clone(),
                    user: database.user.clone(),
                },
            )
        });
        ChildEnv {
            outer,
            grants: services.chain(databases).collect(),
        }
    }

    /// The variables (besides the release's) a command for `subject` (a service or database)
    /// receives.
    fn vars(&self, subject: Option<&str>, secrets: &Secrets) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = BASE_VARIABLES
            .iter()
            .filter_map(|name| {
                self.outer
                    .get(name)
                    .map(|v| ((*name).to_owned(), v.to_owned()))
            })
            .collect();
        if let Some(grant) = subject.and_then(|s| self.grants.get(s)) {
            for name in &grant.env {
                if let Some(value) = self.outer.get(name) {
                    vars.push((name.clone(), value.to_owned()));
                }
            }
            for name in &grant.secrets {
                if let Some(value) = secrets.get(name) {
                    vars.push((format!("RAILYARD_SECRET_{name}"), value.to_owned()));
                }
            }
        }
        vars
    }

    /// Puts `command` in `subject`'s working directory and under its user, as the catalog
    /// says; an error names the user that cannot be found.
    fn place(
        &self,
        subject: Option<&str>,
        command: &mut tokio::process::Command,
    ) -> Result<(), String> {
        let Some((subject, grant)) = subject.and_then(|s| self.grants.get_key_value(s)) else {
            return Ok(());
        };
        if let Some(dir) = &grant.workdir {
            command.current_dir(dir);
        }
        if let Some(name) = &grant.user {
            let user = nix::unistd::User::from_name(name)
                .map_err(|error| format!("cannot look up the user {name:?} of {subject}: {error}"))?
                .ok_or_else(|| {
                    format!(
                        "the user {name:?} that {subject}'s commands run as does not exist on this machine: create it, or change `user` in the catalog"
                    )
                })?;
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .env("USER", name);
        }
        Ok(())
    }

    /// Why a command of `subject` may have failed to start, beyond the program itself.
    fn start_hint(&self, subject: Option<&str>) -> String {
        let Some(grant) = subject.and_then(|s| self.grants.get(s)) else {
            return String::new();
        };
        let mut hint = String::new();
        if let Some(dir) = &grant.workdir {
            hint.push_str(&format!(", that its working directory {dir} exists"));
        }
        if let Some(user) = &grant.user {
            hint.push_str(&format!(
                ", and that the promoter may run commands as {user} (it must run as root for that)"
            ));
        }
        hint
    }
}

/// A command's process group, killed (SIGKILL to the group) when dropped: a deploy script's
/// children and grandchildren do not outlive its timeout or a cancelled step.
struct ProcessGroup {
    leader: u32,
    armed: bool,
}

impl ProcessGroup {
    fn armed(leader: u32) -> ProcessGroup {
        ProcessGroup {
            leader,
            armed: true,
        }
    }

    /// The command exited on its own: leave the group alone.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(pid) = i32::try_from(self.leader) {
            // The group may be gone already; there is nothing to do about an error here.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Expands `{service}`-style placeholders and `{secret:NAME}`; unknown placeholders stay as they
/// are. A missing secret is an error naming the variable to set.
pub fn expand(template: &str, target: &Target, secrets: &Secrets) -> Result<String, String> {
    expand_with(template, target, secrets, |value| value.to_owned())
}

/// [`expand`] for a URL: every value (secrets too) is percent-encoded, so a value can never
/// add a path segment, a query parameter, a host or a fragment to the URL it fills.
pub fn expand_url(template: &str, target: &Target, secrets: &Secrets) -> Result<String, String> {
    expand_with(template, target, secrets, percent_encode)
}

fn expand_with(
    template: &str,
    target: &Target,
    secrets: &Secrets,
    encode: impl Fn(&str) -> String,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let values = target.values();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &after[..close];
        if let Some(secret) = name.strip_prefix("secret:") {
            let value = secrets.get(secret).ok_or_else(|| {
                format!(
                    "secret {secret} is not set: export RAILYARD_SECRET_{secret} for the promoter"
                )
            })?;
            out.push_str(&encode(value));
        } else if let Some((_, value)) = values.iter().find(|(key, _)| *key == name) {
            out.push_str(&encode(value));
        } else {
            out.push('{');
            out.push_str(name);
            out.push('}');
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs `future` until it ends or `limit` passes on `clock`.
pub async fn within<T>(
    clock: &SharedClock,
    limit: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        value = future => Some(value),
        () = clock.sleep(limit) => None,
    }
}

/// SplitMix64: a tiny, seedable generator for reproducible failure draws.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn draw(seed: u64, target: &Target) -> f64 {
    let mut x = seed ^ u64::from(target.attempt);
    for byte in target.step.bytes().chain(
        target
            .release
            .as_ref()
            .map(|r| r.as_str().bytes().collect::<Vec<_>>())
            .unwrap_or_default(),
    ) {
        x = splitmix(x ^ u64::from(byte));
    }
    (splitmix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads `reader` to its end keeping only its last `keep` bytes: memory stays bounded however
/// much a command prints.
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(reader: &mut R, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let slack = keep.max(buf.len());
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > keep + slack {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    kept
}

fn tail(bytes: &[u8], limit: usize, secrets: &Secrets) -> String {
    let text = secrets.redact(&String::from_utf8_lossy(bytes));
    let text = text.trim_end();
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

impl Runner {
    /// Runs `form` of `deploy` for `target`.
    pub async fn deploy(&self, deploy: &Deploy, form: Form, target: &Target) -> Outcome {
        match deploy {
            Deploy::Simulated {
                duration,
                fail_versions,
                fail_rate,
            } => {
                if let Some(duration) = duration {
                    self.clock.sleep(duration.0).await;
                }
                if form != Form::Run {
                    return Outcome::ok(format!("simulated {} done", form.as_str()));
                }
                let version = target.version.clone().unwrap_or_default();
                if fail_versions.contains(&version) {
                    return Outcome::failed(format!(
                        "simulated deploy of version {version} fails (it is listed in fail_versions)"
                    ));
                }
                if let Some(rate) = fail_rate {
                    if draw(self.seed, target) < *rate {
                        return Outcome::failed(format!(
                            "simulated deploy failed (fail_rate {rate})"
                        ));
                    }
                }
                let step = railyard_core::step::StepId::parse(&target.step).ok();
                let migrated = step.as_ref().and_then(|s| s.target().migration());
                Outcome::ok(match (&target.to, migrated) {
                    // A migration has a schema version, not a service version.
                    (Some(to), Some((database, _))) => {
                        format!("simulated migration of {database} to {to} done")
                    }
                    _ => format!("simulated deploy of {version} done"),
                })
            }
            Deploy::Command {
                run,
                rollback,
                remove,
                timeout,
            } => {
                let argv = match form {
                    Form::Run => run,
                    Form::Rollback => match rollback {
                        Some(argv) => argv,
                        None => return Outcome::failed("the adapter has no rollback command"),
                    },
                    Form::Remove => match remove {
                        Some(argv) => argv,
                        None => return Outcome::failed("the adapter has no remove command"),
                    },
                };
                let limit = timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
                self.command(argv, target, limit).await
            }
            Deploy::Http {
                url,
                status_url,
                rollback_url,
                timeout,
            } => {
                let url = match form {
                    Form::Run => url,
                    Form::Rollback => match rollback_url {
                        Some(url) => url,
                        None => return Outcome::failed("the adapter has no rollback_url"),
                    },
                    Form::Remove => return Outcome::failed("http adapters have no remove form"),
                };
                let limit = timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
                let status_url = if form == Form::Run {
                    status_url.as_deref()
                } else {
                    None
                };
                match within(
                    &self.clock,
                    limit,
                    self.http_deploy(url, status_url, form, target),
                )
                .await
                {
                    Some(outcome) => outcome,
                    None => Outcome::failed(format!(
                        "the deploy API at {url} did not finish within {}",
                        humanize(limit)
                    )),
                }
            }
        }
    }

    /// Runs `argv` (placeholders expanded) with the `RAILYARD_*` variables; the exit code
    /// decides. The output's tail (secrets redacted) is in the detail.
    pub async fn command(&self, argv: &[String], target: &Target, limit: Duration) -> Outcome {
        let Some((program, args)) = argv.split_first() else {
            return Outcome::failed("the command is empty: give run = [\"program\", \"args\"...]");
        };
        let expand_all = || -> Result<Vec<String>, String> {
            std::iter::once(program)
                .chain(args)
                .map(|a| expand(a, target, &self.secrets))
                .collect()
        };
        let expanded = match expand_all() {
            Ok(expanded) => expanded,
            Err(error) => return Outcome::failed(error),
        };
        // Log the template, never the expanded argv: it may hold secrets.
        info!(step = %target.step, command = ?argv, "running command");
        let mut command = tokio::process::Command::new(&expanded[0]);
        command
            .args(&expanded[1..])
            .env_clear()
            .envs(self.env.vars(target.subject().as_deref(), &self.secrets))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout or a cancel stops what it started too.
            .process_group(0)
            .kill_on_drop(true);
        for (key, value) in target.values() {
            command.env(format!("RAILYARD_{}", key.to_uppercase()), value);
        }
        command.env("RAILYARD_STEP", &target.step);
        let subject = target.subject();
        if let Err(error) = self.env.place(subject.as_deref(), &mut command) {
            return Outcome::failed(error);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                return Outcome::failed(format!(
                    "cannot run {program:?}: {error} (check the path and that it is executable{})",
                    self.env.start_hint(subject.as_deref())
                ));
            }
        };
        // Dropped with the run: on a timeout or a cancel the whole group is killed; after the
        // command exited on its own, what it left running in the background stays.
        let mut group = child.id().map(ProcessGroup::armed);
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        // Only the tail is kept while the output streams (plus the longest secret form, so that a
        // secret cut at the window's start is cut off again before the tail is shown).
        // An encoded secret (percent-encoding, base64) is at most three times as long.
        let keep = self.tail_bytes + 3 * self.secrets.longest() + 8;
        let run = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    out = read_tail(s, keep).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    err = read_tail(s, keep).await;
                }
            };
            let ((), (), status) = tokio::join!(read_out, read_err, child.wait());
            (status, out, err)
        };
        let finished = within(&self.clock, limit, run).await;
        if finished.is_some() {
            group.iter_mut().for_each(ProcessGroup::disarm);
        }
        drop(group);
        match finished {
            None => Outcome::failed(format!(
                "{program} did not finish within {} and was killed",
                humanize(limit)
            )),
            Some((Err(error), _, _)) => Outcome::failed(format!("waiting for {program}: {error}")),
            Some((Ok(status), out, err)) => {
                let mut detail = match status.code() {
                    Some(code) => format!("{program} exited with {code}"),
                    None => format!("{program} was killed by a signal"),
                };
                let out = tail(&out, self.tail_bytes, &self.secrets);
                let err = tail(&err, self.tail_bytes, &self.secrets);
                if !out.is_empty() {
                    detail.push_str(&format!("\nstdout: {out}"));
                }
                if !err.is_empty() {
                    detail.push_str(&format!("\nstderr: {err}"));
                }
                Outcome {
                    ok: status.success(),
                    detail,
                }
            }
        }
    }

    async fn http_deploy(
        &self,
        url: &str,
        status_url: Option<&str>,
        form: Form,
        target: &Target,
    ) -> Outcome {
        let url = match expand_url(url, target, &self.secrets) {
            Ok(url) => url,
            Err(error) => return Outcome::failed(error),
        };
        let body = json!({
            "action": form.as_str(),
            "release": target.release,
            "step": target.step,
            "env": target.env,
            "service": target.service,
            "version": target.version,
            "artifact": target.artifact,
            "to": target.to,
            "weight": target.weight,
            "colour": target.colour,
        });
        let shown = self.secrets.redact(&url);
        let response = match self.http.post(&url).json(&body).send().await {
            Ok(response) => response,
            Err(error) => {
                return Outcome::failed(format!(
                    "the deploy API at {shown} cannot be reached: {}",
                    self.secrets.redact(&error_chain(&error))
                ));
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Outcome::failed(format!(
                "the deploy API at {shown} answered {status}: {}",
                tail(text.as_bytes(), self.tail_bytes, &self.secrets)
            ));
        }
        let Some(status_url) = status_url else {
            return Outcome::ok(format!("the deploy API at {shown} accepted it ({status})"));
        };
        let status_url = match expand_url(status_url, target, &self.secrets) {
            Ok(url) => url,
            Err(error) => return Outcome::failed(error),
        };
        let shown = self.secrets.redact(&status_url);
        loop {
            match self.http.get(&status_url).send().await {
                Ok(response) => {
                    let code = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let state = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| {
                            v.get("state")
                                .or_else(|| v.get("status"))
                                .and_then(|s| s.as_str().map(str::to_lowercase))
                        });
                    match (code.as_u16(), state.as_deref()) {
                        (_, Some("failed" | "failure" | "error")) => {
                            return Outcome::failed(format!(
                                "the deploy status at {shown} says it failed: {}",
                                tail(text.as_bytes(), self.tail_bytes, &self.secrets)
                            ));
                        }
                        (200, None | Some("done" | "succeeded" | "success" | "complete")) => {
                            return Outcome::ok(format!("the deploy status at {shown} says done"));
                        }
                        (200..=299, _) => debug!(step = %target.step, "deploy still in progress"),
                        (code, _) => {
                            return Outcome::failed(format!(
                                "the deploy status at {shown} answered {code}: {}",
                                tail(text.as_bytes(), self.tail_bytes, &self.secrets)
                            ));
                        }
                    }
                }
                Err(error) => {
                    return Outcome::failed(format!(
                        "the deploy status at {shown} cannot be reached: {}",
                        self.secrets.redact(&error_chain(&error))
                    ));
                }
            }
            self.clock.sleep(self.poll_interval).await;
        }
    }
}

/// An error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A duration as `30s`, `10m`.
pub fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 || secs == 0 {
        format!("{}ms", duration.as_millis())
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            release: Some(ReleaseId::new("rel-1").unwrap()),
            step: "production:deploy:orders-api".into(),
            env: Some("production".parse().unwrap()),
            attempt: 1,
            service: Some("orders-api".into()),
            version: Some("2.4.0".into()),
            from_version: None,
            artifact: Some("pkg:oci/orders-api@sha256%3A0b".into()),
            to: None,
            weight: 10,
            colour: Some("green".into()),
        }
    }

    #[test]
    fn placeholders_expand_and_unknown_ones_stay() {
        let mut secrets = Secrets::default();
        secrets.insert("TOKEN", "t0k");
        assert_eq!(
            expand(
                "deploy {service}@{version} to {env} at {weight}% {colour} {release} {to} {other} {secret:TOKEN}",
                &target(),
                &secrets
            )
            .unwrap(),
            "deploy orders-api@2.4.0 to production at 10% green rel-1  {other} t0k"
        );
        assert_eq!(
            expand("{secret:MISSING}", &target(), &secrets).unwrap_err(),
            "secret MISSING is not set: export RAILYARD_SECRET_MISSING for the promoter"
        );
        assert_eq!(expand("a {b", &target(), &secrets).unwrap(), "a {b");
        // In a URL every value is percent-encoded: it cannot add a segment, a parameter or a
        // host. (The artifact `pkg:oci/orders-api@sha256%3A0b` is one value.)
        assert_eq!(
            expand_url(
                "http://deploy.internal/{service}/{artifact}?v={version}&t={secret:TOKEN}",
                &Target {
                    version: Some("2.4.0+b.1".into()),
                    ..target()
                },
                &secrets
            )
            .unwrap(),
            "http://deploy.internal/orders-api/pkg%3Aoci%2Forders-api%40sha256%253A0b?v=2.4.0%2Bb.1&t=t0k"
        );
    }

    #[tokio::test]
    async fn a_simulated_migration_says_what_it_migrated() {
        let runner = Runner {
            clock: railyard_core::SystemClock::shared(),
            secrets: Secrets::default(),
            http: reqwest::Client::new(),
            poll_interval: Duration::from_secs(1),
            tail_bytes: 1024,
            seed: 0,
            env: ChildEnv::default(),
        };
        let simulated = Deploy::Simulated {
            duration: None,
            fail_versions: Vec::new(),
            fail_rate: None,
        };
        let migration = Target {
            step: "staging:migrate:orders-db@43".into(),
            to: Some(43),
            ..Target::default()
        };
        let outcome = runner.deploy(&simulated, Form::Run, &migration).await;
        assert_eq!(
            outcome.detail,
            "simulated migration of orders-db to 43 done"
        );
        let outcome = runner.deploy(&simulated, Form::Run, &target()).await;
        assert_eq!(outcome.detail, "simulated deploy of 2.4.0 done");
    }

    #[test]
    fn failure_draws_are_reproducible_and_spread() {
        let t = target();
        assert_eq!(draw(7, &t), draw(7, &t));
        let mut below = 0;
        for attempt in 0..1000 {
            let t = Target {
                attempt,
                ..target()
            };
            if draw(7, &t) < 0.3 {
                below += 1;
            }
        }
        assert!((200..400).contains(&below), "{below}");
    }

    #[test]
    fn output_tails_are_cut_and_redacted() {
        let mut secrets = Secrets::default();
        secrets.insert("T", "hunter2");
        assert_eq!(tail(b"password hunter2\n", 100, &secrets), "password ***");
        assert_eq!(tail(b"0123456789", 4, &secrets), "…6789");
    }
}
