//! The operator CLI (`railyard approve|deny|hold|resume|rollback|cancel|retry <release>`): a
//! client of the routes in `railyard_promoter::router`, over HTTP at `RAILYARD_URL` with the bearer token
//! in `RAILYARD_TOKEN`. It prints what the server answered; errors carry the server's reason.

use railyard_promoter::{CommandAnswer, CommandBody};

/// The flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The release id.
    pub release: String,
    /// The step it concerns (the approval to decide, the failed step to retry).
    #[arg(long)]
    pub step: Option<String>,
    /// The environment it concerns (the approval to decide, the environment to roll back).
    #[arg(long)]
    pub env: Option<String>,
    /// Why, recorded with the event.
    #[arg(long, visible_alias = "reason")]
    pub comment: Option<String>,
    /// With `approve --env E --reason "..."`: an emergency override of E's freeze windows
    /// (approver listed for E; recorded as `freeze.overridden`).
    #[arg(long)]
    pub override_freeze: bool,
    /// With `rollback`, once a point of no return has run: undo only the steps still safely
    /// reversible (each re-checked against what runs) and leave the rest applied.
    #[arg(long)]
    pub partial: bool,
    /// The Railyard server.
    #[arg(long, env = "RAILYARD_URL", default_value = "http://127.0.0.1:7800")]
    pub url: String,
    /// The bearer token (`railyard token create` makes one).
    #[arg(long, env = "RAILYARD_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// The operator commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCommand {
    /// Approve the awaited approval of a release (approver role).
    Approve(Target),
    /// Deny it; the release ends as denied (approver role).
    Deny(Target),
    /// Stop starting new steps (operator role).
    Hold(Target),
    /// Go on with a held release (operator role).
    Resume(Target),
    /// Undo what the release applied in an environment (operator role).
    Rollback(Target),
    /// End the release; what it deployed stays (operator role).
    Cancel(Target),
    /// Run a failed step of a held release again (operator role).
    Retry(Target),
}

impl OperatorCommand {
    fn parts(&self) -> (&'static str, &Target) {
        match self {
            OperatorCommand::Approve(t) => ("approve", t),
            OperatorCommand::Deny(t) => ("deny", t),
            OperatorCommand::Hold(t) => ("hold", t),
            OperatorCommand::Resume(t) => ("resume", t),
            OperatorCommand::Rollback(t) => ("rollback", t),
            OperatorCommand::Cancel(t) => ("cancel", t),
            OperatorCommand::Retry(t) => ("retry", t),
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached.
    #[error("cannot reach railyard at {url}: {detail} (is it running? set RAILYARD_URL)")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// The server refused the command.
    #[error("{status}: {error}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error.
        error: String,
        /// Details and what to do.
        detail: String,
    },
}

/// Sends the command and returns the server's answer.
pub async fn run(command: &OperatorCommand) -> Result<CommandAnswer, CliError> {
    let (name, target) = command.parts();
    let url = format!(
        "{}/v1/releases/{}/{name}",
        target.url.trim_end_matches('/'),
        target.release
    );
    let body = CommandBody {
        step: target.step.clone(),
        env: target.env.clone(),
        comment: target.comment.clone(),
        override_freeze: target.override_freeze,
        partial: target.partial,
    };
    let unreachable = |error: reqwest::Error| CliError::Unreachable {
        url: target.url.clone(),
        detail: railyard_promoter::adapter::error_chain(&error),
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(unreachable)?;
    let response = client
        .post(&url)
        .bearer_auth(&target.token)
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|error| CliError::Refused {
            status: status.as_u16(),
            error: "unexpected answer".to_owned(),
            detail: format!("{error}: {text}"),
        });
    }
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let field = |name: &str| {
        body.get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Err(CliError::Refused {
        status: status.as_u16(),
        error: field("error"),
        detail: if body.is_null() {
            text
        } else {
            field("detail")
        },
    })
}
