//! The operator and auditor commands: `railyard audit rebuild|verify|export|key|<query>` and
//! `railyard release status|watch`. Queries, status, watch, `export` and `verify` talk HTTP to
//! `$RAILYARD_URL` with `$RAILYARD_TOKEN`; `rebuild`, `verify --store` and `export --store`
//! open the store directly (the audit service must be stopped) and read the stream from NATS;
//! `verify --offline` checks an export file with nothing but the public key that `key`
//! prints.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use futures::StreamExt;
use railyard_bus::{Bus, BusConfig};
use railyard_core::{Clock, SystemClock};
use serde::de::DeserializeOwned;
use serde_json::Value;

use railyard_audit::AuditError;
use railyard_audit::export::{OfflineReport, TrailerState, verify_export};
use railyard_audit::format::{OutputFormat, Tabular, render};
use railyard_audit::items::{ApprovalItem, EventItem, GateItem, RejectionItem};
use railyard_audit::open_store;
use railyard_audit::report::ReportRow;
use railyard_audit::seal::{AuditKey, Keys, PublicKey, SealSummary};
use railyard_audit::verify::{Problem, ProblemKind, VerifyReport, verify_signed};
use railyard_audit::{MAX_LIMIT, Page, Reader};

/// Where `railyard audit serve` and `railyard audit key` keep the signing key by default.
pub const DEFAULT_KEY_FILE: &str = ".railyard/audit-signing.key";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The HTTP request failed.
    #[error(
        "cannot reach {url}: check RAILYARD_URL and that `railyard audit serve` (or `railyard dev`) runs"
    )]
    Http {
        /// The URL.
        url: String,
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("{status} {error}: {detail}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error.
        error: String,
        /// What to do.
        detail: String,
    },
    /// The audit library failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: pass --nats-url or set RAILYARD_NATS_URL")]
    Nats {
        /// The URL.
        url: String,
        /// What the bus said.
        #[source]
        source: railyard_bus::BusError,
    },
}

/// Where the HTTP API is.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of Railyard's HTTP API.
    #[arg(long, env = "RAILYARD_URL", default_value = "http://127.0.0.1:7800")]
    pub url: String,
    /// Bearer token (`ry_...`).
    #[arg(long, env = "RAILYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The filters every audit query takes (the same as HTTP's query parameters).
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only this release.
    #[arg(long)]
    pub release: Option<String>,
    /// Only what concerns this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only what concerns this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// Only what this identity did.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events of this type (`gate.evaluated`).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// At or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    fn params(&self) -> Vec<(&'static str, String)> {
        [
            ("release", &self.release),
            ("service", &self.service),
            ("env", &self.env),
            ("actor", &self.actor),
            ("type", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
        .collect()
    }
}

/// How query results are printed (`railyard_audit::format::OutputFormat`, as a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    #[default]
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header row.
    Csv,
}

impl From<Format> for OutputFormat {
    fn from(format: Format) -> OutputFormat {
        match format {
            Format::Table => OutputFormat::Table,
            Format::Json => OutputFormat::Json,
            Format::Csv => OutputFormat::Csv,
        }
    }
}

/// Flags of every audit query.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// What to select.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// At most this many items (default: all, page by page).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Where the API is.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Where the audit store and NATS are, for commands that open the store directly.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The audit store directory (stop the audit service first).
    #[arg(long, default_value = ".railyard/audit")]
    pub store: PathBuf,
    /// NATS, to read the event stream.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
}

/// Flags of `railyard audit verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Verify the store in this directory directly (the audit service must be stopped)
    /// instead of asking the running service.
    #[arg(long, conflicts_with = "offline")]
    pub store: Option<PathBuf>,
    /// Verify an export file (`railyard audit export`) with nothing but --public-key: exit 1
    /// names the first bad record, exit 2 says which records no signature covers.
    #[arg(long, value_name = "FILE", requires = "public_key")]
    pub offline: Option<PathBuf>,
    /// A public key that signed checkpoints (`ed25519:<hex>` as `railyard audit key` prints
    /// it, or a file holding one); repeat for keys used before a rotation. With --offline or
    /// --store.
    #[arg(long = "public-key", value_name = "KEY")]
    pub public_key: Vec<String>,
    /// NATS, to cross-check the records with the stream (with --store).
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// With --store: check the chain only, without the stream.
    #[arg(long)]
    pub no_stream: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the API is (without --store).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `railyard audit key`.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// The audit service's signing key file.
    #[arg(long, env = "RAILYARD_AUDIT_SIGNING_KEY", default_value = DEFAULT_KEY_FILE)]
    pub signing_key: PathBuf,
    /// Create the key file first (refused when it exists: an existing key is never
    /// replaced).
    #[arg(long)]
    pub generate: bool,
}

/// Flags of `railyard audit export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write the export to this file (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Export the store in this directory directly (the audit service must be stopped)
    /// instead of asking the running service, which seals the export with a checkpoint.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// With --store: sign the export's trailer with this key file (without it the export has
    /// no trailer, and what follows the last checkpoint is not covered by a signature).
    #[arg(long, requires = "store")]
    pub signing_key: Option<PathBuf>,
    /// Where the API is (without --store).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `railyard audit ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Drop the audit store and replay the whole event stream into it (stop the service first).
    Rebuild(StoreArgs),
    /// Recompute the hash chain, cross-check it with the stream up to the stream's end and
    /// its signed checkpoints, and name the first bad record or the first event without one
    /// (exit 1); or check an export file offline (--offline FILE --public-key KEY).
    Verify(VerifyArgs),
    /// Write the whole record and its signed checkpoints as JSON lines, sealed for the export.
    Export(ExportArgs),
    /// Print the public key that checks the audit service's checkpoints (--generate creates
    /// the signing key first).
    Key(KeyArgs),
    /// Any records, filtered.
    Events(QueryArgs),
    /// A release's timeline (--release).
    Timeline(QueryArgs),
    /// Everything that touched a service or environment (--service and/or --env) in a time range.
    Changes(QueryArgs),
    /// Everything an identity did (--actor).
    Actor(QueryArgs),
    /// Approvals: who, when, why.
    Approvals(QueryArgs),
    /// Gate results and verdicts.
    Gates(QueryArgs),
    /// Refused inputs from the rejection log.
    Rejections(QueryArgs),
    /// The production change report (--env to report another environment).
    Report(QueryArgs),
    /// The four DORA metrics (deployment frequency, lead time for changes, change failure
    /// rate, time to restore) per service, team and environment, over --since (default 30d)
    /// to --until (default now); times may be RFC 3339, a date, or a time ago (30d, 12h).
    Dora(QueryArgs),
}

/// Flags of `railyard release status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The release id.
    pub id: String,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the API is.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `railyard release watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The release id.
    pub id: String,
    /// Start after this stream sequence (an event's SSE id, or the status's `last_event`)
    /// instead of from the beginning.
    #[arg(long)]
    pub after: Option<u64>,
    /// Give up after this many failed reconnects in a row.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Where the API is.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Flags of `railyard release list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only releases changing this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only releases whose plan reaches this environment.
    #[arg(long)]
    pub env: Option<String>,
    /// Only releases in this status (requested, planned, held, completed, rolled_back,
    /// rejected, cancelled, denied).
    #[arg(long)]
    pub status: Option<String>,
    /// Only releases requested by this identity.
    #[arg(long)]
    pub requester: Option<String>,
    /// Requested at or after this time (RFC 3339 or a date).
    #[arg(long)]
    pub since: Option<String>,
    /// Requested before this time (RFC 3339 or a date).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many releases (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print the releases as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the API is.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `railyard release ...` (the read side; approve/hold/... belong to intake).
#[derive(Debug, Clone, Subcommand)]
pub enum ReleaseCommand {
    /// Releases, newest first: status, where each is, what it waits for, who asked.
    List(ListArgs),
    /// Where a release is: steps, gates, approvals, hold, who must act.
    Status(StatusArgs),
    /// Follow a release live until it ends (exit 0 completed, 1 otherwise).
    Watch(WatchArgs),
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(args: &ClientArgs) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    fn http_error(&self, path: &str, source: reqwest::Error) -> CliError {
        CliError::Http {
            url: format!("{}{path}", self.base),
            source,
        }
    }

    async fn send(
        &self,
        path: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = builder
            .send()
            .await
            .map_err(|source| self.http_error(path, source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let field = |name: &str| {
            body.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Err(CliError::Api {
            status,
            error: field("error"),
            detail: field("detail"),
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        path: &str,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        self.send(path, builder)
            .await?
            .json()
            .await
            .map_err(|source| self.http_error(path, source))
    }
}

/// Runs `railyard audit ...`, printing to `out`; returns the exit code (1: verify found a
/// bad record).
pub async fn run_audit(
    command: AuditCommand,
    out: &mut (dyn Write + Send),
) -> Result<u8, CliError> {
    match command {
        AuditCommand::Rebuild(args) => rebuild(args, out).await,
        AuditCommand::Verify(args) => verify_command(args, out).await,
        AuditCommand::Export(args) => export_command(args, out).await,
        AuditCommand::Key(args) => key_command(args, out),
        AuditCommand::Events(args) => query::<EventItem>("events", args, out).await,
        AuditCommand::Timeline(args) => query::<EventItem>("timeline", args, out).await,
        AuditCommand::Changes(args) => query::<EventItem>("changes", args, out).await,
        AuditCommand::Actor(args) => query::<EventItem>("actor", args, out).await,
        AuditCommand::Approvals(args) => query::<ApprovalItem>("approvals", args, out).await,
        AuditCommand::Gates(args) => query::<GateItem>("gates", args, out).await,
        AuditCommand::Rejections(args) => query::<RejectionItem>("rejections", args, out).await,
        AuditCommand::Report(args) => query::<ReportRow>("report", args, out).await,
        AuditCommand::Dora(args) => query::<railyard_audit::dora::DoraRow>("dora", args, out).await,
    }
}

async fn connect(url: &str) -> Result<Bus, CliError> {
    Bus::connect(url, BusConfig::default())
        .await
        .map_err(|source| CliError::Nats {
            url: url.to_owned(),
            source,
        })
}

async fn rebuild(args: StoreArgs, out: &mut (dyn Write + Send)) -> Result<u8, CliError> {
    let bus = connect(&args.nats_url).await?;
    let store = open_store(&args.store, None)
        .await
        .map_err(AuditError::from)?;
    let report = railyard_store::rebuild(&bus, &store, &railyard_store::RunOptions::default())
        .await
        .map_err(AuditError::from)?;
    let head = Reader::new(store).head().await?;
    writeln!(
        out,
        "audit store rebuilt: {} records from {} appends, up to stream sequence {}",
        head.n, report.committed, report.checkpoint
    )?;
    let _ = bus.close().await;
    Ok(0)
}

fn public_keys(args: &[String]) -> Result<Keys, CliError> {
    let keys = args
        .iter()
        .map(|arg| PublicKey::from_arg(arg))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AuditError::from)?;
    Ok(Keys::new(keys))
}

fn key_command(args: KeyArgs, out: &mut (dyn Write + Send)) -> Result<u8, CliError> {
    let path = &args.signing_key;
    let key = if args.generate {
        AuditKey::create(path)
    } else {
        AuditKey::load(path)
    }
    .map_err(AuditError::from)?;
    let public = key.public();
    writeln!(out, "{public}")?;
    writeln!(
        out,
        "# key id {}, signing key {}{}",
        public.id(),
        path.display(),
        if args.generate { " (created)" } else { "" }
    )?;
    Ok(0)
}

async fn export_command(args: ExportArgs, out: &mut (dyn Write + Send)) -> Result<u8, CliError> {
    let mut file = match &args.output {
        Some(path) => Some(
            std::fs::File::create(path).map_err(|source| AuditError::Export {
                path: path.display().to_string(),
                action: "write",
                source,
            })?,
        ),
        None => None,
    };
    let sink: &mut dyn Write = match &mut file {
        Some(file) => file,
        None => &mut *out,
    };
    let mut written = 0u64;
    match &args.store {
        Some(path) => {
            let key = args
                .signing_key
                .as_deref()
                .map(AuditKey::load)
                .transpose()
                .map_err(AuditError::from)?;
            let reader = Reader::new(open_store(path, None).await.map_err(AuditError::from)?);
            let now = SystemClock.now();
            let trailer = match &key {
                Some(key) => railyard_audit::sealer::seal_locally(&reader, key, now).await?,
                None => None,
            };
            let upto = match &trailer {
                Some(trailer) => trailer.records,
                None => reader.head().await?.n,
            };
            let mut lines =
                std::pin::pin!(railyard_audit::export::lines(reader, now, upto, trailer));
            while let Some(chunk) = lines.next().await {
                let chunk = chunk?;
                written += chunk.len() as u64;
                sink.write_all(&chunk)?;
            }
        }
        None => {
            let client = Client::new(&args.client);
            let path = "/v1/audit/export";
            let response = client
                .send(path, client.request(reqwest::Method::GET, path))
                .await?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|source| client.http_error(path, source))?;
                written += chunk.len() as u64;
                sink.write_all(&chunk)?;
            }
        }
    }
    sink.flush()?;
    if let (Some(path), Some(file)) = (&args.output, &file) {
        file.sync_all()?;
        writeln!(
            out,
            "audit record exported to {} ({written} bytes): check it with `railyard audit verify --offline {} --public-key <key from railyard audit key>`",
            path.display(),
            path.display()
        )?;
    }
    Ok(0)
}

async fn verify_offline(
    path: &std::path::Path,
    keys: Keys,
    args: &VerifyArgs,
    out: &mut (dyn Write + Send),
) -> Result<u8, CliError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| AuditError::Export {
            path: path.display().to_string(),
            action: "read",
            source,
        })?;
    let report = verify_export(
        tokio::io::BufReader::new(file),
        &path.display().to_string(),
        keys,
    )
    .await?;
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serializes")
        )?;
    } else {
        writeln!(out, "{}", describe_offline(&report))?;
    }
    Ok(match (report.ok, report.complete) {
        (false, _) => 1,
        (true, false) => 2,
        (true, true) => 0,
    })
}

fn describe_problem(problem: &Problem) -> String {
    format!(
        "first bad record is {} ({}{}): {}",
        problem.n,
        serde_json::to_value(problem.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        problem
            .sequence
            .map(|s| format!(", stream sequence {s}"))
            .unwrap_or_default(),
        problem.detail
    )
}

fn describe_seals(seals: &SealSummary) -> Option<String> {
    if seals.checkpoints == 0 {
        return None;
    }
    let mut out = format!(
        "signed checkpoints: {} of {} verified",
        seals.verified, seals.checkpoints
    );
    if seals.covered > 0 {
        out.push_str(&format!(", records 1 to {} sealed", seals.covered));
        if let Some(at) = seals.covered_at {
            out.push_str(&format!(
                " (at {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
    }
    if !seals.unknown_keys.is_empty() {
        out.push_str(&format!(
            "; {} signed by keys not given (key ids {}): pass --public-key for each to count them",
            seals.checkpoints - seals.verified,
            seals
                .unknown_keys
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Some(out)
}

/// The offline report in a few lines.
pub fn describe_offline(report: &OfflineReport) -> String {
    let mut out = match (&report.first_bad, &report.not_covered) {
        (Some(problem), _) => format!(
            "audit export TAMPERED: {}
{} records before it verify",
            describe_problem(problem),
            report.records
        ),
        (None, None) if report.complete => format!(
            "audit export intact: records 1 to {} verify and are sealed by the export's signed trailer",
            report.records
        ),
        (None, None) => format!(
            "audit export intact: records 1 to {} verify and are sealed by signed checkpoints",
            report.records
        ),
        (None, Some(tail)) => format!(
            "audit export intact but not all signed: records 1 to {} verify; records {} to {} are not covered by a signature",
            report.records, tail.from, tail.to
        ),
    };
    if let Some(seals) = describe_seals(&report.seals) {
        out.push('\n');
        out.push_str(&seals);
    }
    if report.first_bad.is_none() {
        match report.trailer {
            TrailerState::Missing => out.push_str(
                "\nthe export has no signed trailer: it may have been cut short (an export by the running service, `railyard audit export`, ends with one)",
            ),
            TrailerState::UnknownKey => out.push_str(
                "\nthe export's trailer is signed by a key not given: pass its public key with --public-key",
            ),
            TrailerState::Verified | TrailerState::Bad => {}
        }
    }
    out
}

async fn verify_command(args: VerifyArgs, out: &mut (dyn Write + Send)) -> Result<u8, CliError> {
    let keys = public_keys(&args.public_key)?;
    if let Some(path) = &args.offline {
        return verify_offline(path, keys, &args, out).await;
    }
    let report: VerifyReport = match &args.store {
        Some(path) => {
            let bus = if args.no_stream {
                None
            } else {
                Some(connect(&args.nats_url).await?)
            };
            let store = open_store(path, None).await.map_err(AuditError::from)?;
            let report =
                verify_signed(&Reader::new(store), bus.as_ref(), &keys, SystemClock.now()).await?;
            if let Some(bus) = bus {
                let _ = bus.close().await;
            }
            report
        }
        None => {
            let client = Client::new(&args.client);
            let path = "/v1/audit/verify";
            client
                .json(path, client.request(reqwest::Method::POST, path))
                .await?
        }
    };
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).expect("a verify report serializes")
        )?;
    } else {
        writeln!(out, "{}", describe_verify(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// The verify report in one or two lines (three when the store was found cut short).
pub fn describe_verify(report: &VerifyReport) -> String {
    let against = if report.stream_checked {
        "and matches the event stream"
    } else {
        "(not compared with the stream)"
    };
    let mut out = match &report.first_bad {
        None => format!(
            "audit record intact: {} records, chain head {} {against}",
            report.records, report.head.hash
        ),
        Some(problem) if problem.kind == ProblemKind::Missing => format!(
            "audit record INCOMPLETE: no record from stream sequence {} on (record {} onwards): {}\n{} records before it verify",
            problem
                .sequence
                .map_or_else(|| "?".to_owned(), |s| s.to_string()),
            problem.n,
            problem.detail,
            report.records
        ),
        Some(problem) => format!(
            "audit record TAMPERED: first bad record is {} ({}{}): {}\n{} records before it verify",
            problem.n,
            serde_json::to_value(problem.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            problem
                .sequence
                .map(|s| format!(", stream sequence {s}"))
                .unwrap_or_default(),
            problem.detail,
            report.records
        ),
    };
    if let Some(seals) = describe_seals(&report.seals) {
        out.push('\n');
        out.push_str(&seals);
    }
    if let Some(cut) = report.cut_short.as_ref().filter(|cut| cut.reapplied) {
        out.push_str(&format!(
            "\nthe store was cut short when it was opened (its log ended at stream sequence {} of {} it had made durable) and has applied the lost events again from the stream since",
            cut.recovered_sequence, cut.durable_sequence
        ));
    }
    out
}

async fn query<T: Tabular + DeserializeOwned>(
    name: &str,
    args: QueryArgs,
    out: &mut (dyn Write + Send),
) -> Result<u8, CliError> {
    let client = Client::new(&args.client);
    let path = format!("/v1/audit/{name}");
    let mut items: Vec<T> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = args
            .limit
            .map_or(MAX_LIMIT, |limit| (limit - items.len()).min(MAX_LIMIT));
        let mut params = args.filter.params();
        params.push(("limit", want.to_string()));
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor.clone()));
        }
        let page: Page<T> = client
            .json(
                &path,
                client.request(reqwest::Method::GET, &path).query(&params),
            )
            .await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) if args.limit.is_none_or(|limit| items.len() < limit) => cursor = Some(next),
            _ => break,
        }
    }
    out.write_all(render(&items, args.format.into()).as_bytes())?;
    Ok(0)
}

/// Runs `railyard release ...`, printing to `out`; returns the exit code.
pub async fn run_release(
    command: ReleaseCommand,
    out: &mut (dyn Write + Send),
) -> Result<u8, CliError> {
    match command {
        ReleaseCommand::Status(args) => {
            let client = Client::new(&args.client);
            let path = format!("/v1/releases/{}", args.id);
            let status: Value = client
                .json(&path, client.request(reqwest::Method::GET, &path))
                .await?;
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&status).expect("JSON serializes")
                )?;
            } else {
                out.write_all(render_status(&status).as_bytes())?;
            }
            Ok(0)
        }
        ReleaseCommand::Watch(args) => watch(args, out).await,
        ReleaseCommand::List(args) => list(args, out).await,
    }
}

async fn list(args: ListArgs, out: &mut (dyn Write + Send)) -> Result<u8, CliError> {
    let client = Client::new(&args.client);
    let path = "/v1/releases";
    let mut params: Vec<(&str, String)> = [
        ("service", &args.service),
        ("env", &args.env),
        ("status", &args.status),
        ("requester", &args.requester),
        ("since", &args.since),
        ("until", &args.until),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
    .collect();
    params.push(("limit", args.limit.clamp(1, MAX_LIMIT).to_string()));
    let mut items: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = params.clone();
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let page: Page<Value> = client
            .json(
                path,
                client.request(reqwest::Method::GET, path).query(&query),
            )
            .await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) if items.len() < args.limit => cursor = Some(next),
            _ => break,
        }
    }
    items.truncate(args.limit);
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&items).expect("JSON serializes")
        )?;
    } else {
        out.write_all(render_list(&items).as_bytes())?;
    }
    Ok(0)
}

/// Releases (items of `GET /v1/releases`) as a table.
pub fn render_list(items: &[Value]) -> String {
    if items.is_empty() {
        return "no releases match: widen the filters, or submit one with `railyard release submit`\n".into();
    }
    let rows: Vec<[String; 6]> = items
        .iter()
        .map(|item| {
            let envs: Vec<&str> = array(item, "envs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let at = match item.get("current_env").and_then(Value::as_str) {
                Some(current) if envs.len() > 1 => format!("{current} ({})", envs.join(" > ")),
                Some(current) => current.to_owned(),
                None => envs.join(" > "),
            };
            [
                s(item, "release").to_owned(),
                s(item, "status").replace('_', " "),
                if at.is_empty() { "-".into() } else { at },
                s(item, "requested_by").to_owned(),
                s(item, "requested_at").to_owned(),
                item.get("waiting_for")
                    .and_then(Value::as_str)
                    .map(|w| format!("waits for {w}"))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "RELEASE",
        "STATUS",
        "WHERE",
        "REQUESTED BY",
        "REQUESTED AT",
        "",
    ];
    let mut width = [0usize; 5];
    for row in rows
        .iter()
        .map(|r| r.each_ref().map(String::as_str))
        .chain([header])
    {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(width) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line.push_str(&row[5]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn s<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A release status (the JSON of `GET /v1/releases/{id}`) as text.
pub fn render_status(status: &Value) -> String {
    let mut out = format!(
        "release {}: {} (requested by {})\n",
        s(status, "release"),
        s(status, "status").replace('_', " "),
        s(status, "requested_by")
    );
    if let Some(owner) = status.get("owner_to_act").filter(|o| !o.is_null()) {
        out.push_str(&format!(
            "owner to act: {} — {}\n",
            s(owner, "who"),
            s(owner, "why")
        ));
    }
    if let Some(ended) = status.get("ended_because").and_then(Value::as_str) {
        out.push_str(&format!("ended because: {ended}\n"));
    }
    out.push_str("changes:\n");
    for change in array(status, "changes") {
        out.push_str(&format!(
            "  {} {}{}\n",
            s(change, "service"),
            s(change, "version"),
            change
                .get("commit")
                .and_then(Value::as_str)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ));
    }
    let steps = array(status, "steps");
    if !steps.is_empty() {
        out.push_str("steps:\n");
        for step in steps {
            let state = step.get("status").unwrap_or(&Value::Null);
            let extra = match s(state, "state") {
                "running" => format!(
                    " (worker {}, attempt {})",
                    s(state, "worker"),
                    state.get("attempt").and_then(Value::as_u64).unwrap_or(1)
                ),
                "failed" => format!(": {}", s(state, "detail")),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<11} {}{extra}\n",
                s(state, "state").replace('_', " "),
                s(step, "id")
            ));
        }
    }
    let gates = array(status, "gates");
    if !gates.is_empty() {
        out.push_str("gates:\n");
        for gate in gates {
            let verdict = if gate.get("passed").and_then(Value::as_bool) == Some(true) {
                "pass"
            } else {
                "FAIL"
            };
            out.push_str(&format!(
                "  {verdict} {} {}: observed {}, expected {}\n",
                s(gate, "step"),
                s(gate, "gate"),
                s(gate, "observed"),
                s(gate, "expected")
            ));
        }
    }
    let approvals = array(status, "approvals");
    if !approvals.is_empty() {
        out.push_str("approvals:\n");
        for approval in approvals {
            let who = match approval.get("by").and_then(Value::as_str) {
                Some(by) => format!(" by {by}"),
                None => format!(
                    " from {}",
                    array(approval, "approvers")
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let comment = approval
                .get("comment")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} {}{who}{comment}\n",
                s(approval, "step"),
                s(approval, "state")
            ));
        }
    }
    if let Some(hold) = status.get("hold").filter(|h| !h.is_null()) {
        out.push_str(&format!("held: {}\n", s(hold, "reason")));
    }
    if let Some(waiting) = status.get("waiting").and_then(Value::as_object) {
        for (step, wait) in waiting {
            let releases: Vec<&str> = array(wait, "waiting_for")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!(
                "waiting: {step} waits for {} (requested earlier, same services): {}\n",
                releases.join(", "),
                s(wait, "reason")
            ));
        }
    }
    for refusal in array(status, "refusals") {
        out.push_str(&format!(
            "refused ({}): {} — {}\n",
            s(refusal, "rule"),
            s(refusal, "reason"),
            s(refusal, "remedy")
        ));
    }
    out
}

/// Event types after which nothing more happens to a release, with the exit code they mean.
fn final_exit(kind: &str) -> Option<u8> {
    match kind {
        "release.completed" => Some(0),
        "release.rolled_back" | "release.rejected" | "release.cancelled" => Some(1),
        _ => None,
    }
}

/// One parsed Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Takes the complete events off the front of `buffer`.
fn parse_sse(buffer: &mut String) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut event = SseEvent::default();
        let mut has_data = false;
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        if has_data || event.id.is_some() {
            events.push(event);
        }
    }
    events
}

async fn watch(args: WatchArgs, out: &mut (dyn Write + Send)) -> Result<u8, CliError> {
    let client = Client::new(&args.client);
    let path = format!("/v1/releases/{}/events", args.id);
    let mut last = args.after;
    let mut failures = 0u32;
    let mut pause = Duration::from_millis(500);
    loop {
        let mut request = client
            .request(reqwest::Method::GET, &path)
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let outcome: Result<Option<u8>, CliError> = async {
            let response = client.send(&path, request).await?;
            failures = 0;
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|source| client.http_error(&path, source))?;
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for event in parse_sse(&mut buffer) {
                    if let Some(id) = event.id.as_deref().and_then(|id| id.parse().ok()) {
                        last = Some(id);
                    }
                    if event.event.as_deref() == Some("error") {
                        writeln!(out, "server: {}", event.data)?;
                        continue;
                    }
                    let Ok(item) = serde_json::from_str::<EventItem>(&event.data) else {
                        continue;
                    };
                    writeln!(
                        out,
                        "{}  {:<20} {}",
                        item.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        item.kind,
                        item.summary
                    )?;
                    out.flush()?;
                    if let Some(code) = final_exit(&item.kind) {
                        return Ok(Some(code));
                    }
                }
            }
            Ok(None)
        }
        .await;
        match outcome {
            Ok(Some(code)) => return Ok(code),
            Err(error @ CliError::Api { .. }) => return Err(error),
            Err(CliError::Output(error)) => return Err(CliError::Output(error)),
            Ok(None) | Err(_) => {
                failures += 1;
                if failures > args.retries {
                    return Err(CliError::Api {
                        status: 0,
                        error: "event stream lost".into(),
                        detail: format!(
                            "reconnecting to {}{path} failed {} times: check that the audit service runs, then watch again with --after {}",
                            client.base,
                            failures - 1,
                            last.unwrap_or(0)
                        ),
                    });
                }
                SystemClock.sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_parse_across_chunk_boundaries() {
        let mut buffer = String::from(
            "id: 3\nevent: step.started\ndata: {\"a\":1}\n\n: keep-alive\n\nid: 4\ndata: x",
        );
        let events = parse_sse(&mut buffer);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("3"));
        assert_eq!(events[0].event.as_deref(), Some("step.started"));
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(buffer, "id: 4\ndata: x");
        buffer.push_str("\n\n");
        assert_eq!(parse_sse(&mut buffer)[0].data, "x");
    }
}
