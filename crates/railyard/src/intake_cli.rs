//! The operator commands intake owns, for the binary's subcommand enum:
//! `railyard token create --identity alice --roles approver [--alias github:alice]` (prints the
//! token once and the tokens-file line that admits it) and `railyard release submit
//! release.toml` (POSTs the file to `$RAILYARD_URL/v1/releases` with `$RAILYARD_TOKEN`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use railyard_http::{Role, generate_token};

/// `railyard token ...`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token: prints it once, and the line to add to the tokens file.
    Create(TokenCreateArgs),
}

/// `railyard token create`.
#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// Who the token belongs to; the actor of every event it causes.
    #[arg(long)]
    pub identity: String,
    /// Roles, comma-separated: publisher, operator, approver, auditor.
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<Role>,
    /// Other names of the same person (`github:alice`), repeatable.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
}

/// `railyard release ...`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

/// Release subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReleaseCommand {
    /// Submit a release file (TOML, or JSON by its .json extension) as your token's identity.
    Submit(ReleaseSubmitArgs),
}

/// `railyard release submit`.
#[derive(Debug, clap::Args)]
pub struct ReleaseSubmitArgs {
    /// The release file.
    pub file: PathBuf,
    /// Railyard's HTTP address.
    #[arg(long, env = "RAILYARD_URL", default_value = "http://127.0.0.1:7800")]
    pub url: String,
    /// A token with the publisher role.
    #[arg(long, env = "RAILYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No token was given.
    #[error("no token: pass --token or set RAILYARD_TOKEN to a token with the publisher role")]
    NoToken,
    /// The identity is empty.
    #[error("--identity is empty: name who the token belongs to")]
    EmptyIdentity,
    /// The release file cannot be read.
    #[error("cannot read {path}: check the path")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Railyard did not answer.
    #[error("cannot reach railyard at {url}: is it running? set RAILYARD_URL")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Railyard refused the release.
    #[error("railyard refused the release ({status}): {body}")]
    Refused {
        /// The status.
        status: u16,
        /// The answer's body.
        body: String,
    },
}

impl TokenCreateArgs {
    /// The new token and the tokens-file entry, as printed.
    pub fn run(&self) -> Result<String, CliError> {
        if self.identity.trim().is_empty() {
            return Err(CliError::EmptyIdentity);
        }
        let roles: BTreeSet<Role> = self.roles.iter().copied().collect();
        let (token, entry) = generate_token(&self.identity, roles, self.aliases.clone());
        let roles = entry
            .roles
            .iter()
            .map(|r| format!("{:?}", r.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut line = format!(
            "[[tokens]]\nidentity = {:?}\nroles = [{roles}]\nsha256 = {:?}\n",
            entry.identity, entry.sha256
        );
        if !entry.aliases.is_empty() {
            let aliases = entry
                .aliases
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            line.push_str(&format!("aliases = [{aliases}]\n"));
        }
        Ok(format!(
            "token (shown once, keep it secret): {token}\n\n# add to the tokens file (RAILYARD_TOKENS_FILE):\n{line}"
        ))
    }
}

impl ReleaseSubmitArgs {
    /// Submits the file; returns the answer's body (`{"outcome": "accepted", ...}`).
    pub async fn run(&self) -> Result<String, CliError> {
        let token = self.token.as_deref().ok_or(CliError::NoToken)?;
        let body = std::fs::read(&self.file).map_err(|source| CliError::Read {
            path: self.file.clone(),
            source,
        })?;
        let json = self.file.extension().is_some_and(|e| e == "json");
        let url = format!("{}/v1/releases", self.url.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .header(
                reqwest::header::CONTENT_TYPE,
                if json {
                    "application/json"
                } else {
                    "application/toml"
                },
            )
            .body(body)
            .send()
            .await
            .map_err(|source| CliError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| CliError::Unreachable { url, source })?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(CliError::Refused {
                status: status.as_u16(),
                body: text,
            })
        }
    }
}
