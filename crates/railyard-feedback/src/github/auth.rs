//! How the service authenticates to GitHub, per repository owner: a token (personal access
//! token, fine-grained token, or an installation token managed elsewhere) or a GitHub App —
//! a JWT signed RS256 with the App's private key (`iss` = App id, valid 10 minutes, issued 60
//! seconds in the past against clock drift) exchanged for an installation token, which is
//! cached and refreshed five minutes before it expires. Every secret, and every installation
//! token received, is registered with [`railyard_core::redact`].

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::FeedbackError;
use crate::secret::Secret;

/// A GitHub App.
#[derive(Clone)]
pub struct App {
    /// The App's id (the JWT's `iss`).
    pub app_id: String,
    /// Its installation for the owner, when known; else looked up per repository
    /// (`GET /repos/{owner}/{repo}/installation`).
    pub installation_id: Option<u64>,
    key: std::sync::Arc<RsaKeyPair>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

impl App {
    /// An App with its private key in PEM (`BEGIN RSA PRIVATE KEY`, as GitHub hands it out,
    /// or PKCS#8 `BEGIN PRIVATE KEY`).
    pub fn new(
        app_id: impl Into<String>,
        private_key: &Secret,
        installation_id: Option<u64>,
    ) -> Result<App, FeedbackError> {
        let app_id = app_id.into();
        if app_id.trim().is_empty() || !app_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(FeedbackError::Config(format!(
                "github app id {app_id:?} is not an app id: copy the App ID (a number) or Client ID from the app's settings page"
            )));
        }
        let key = parse_key(private_key.expose()).map_err(|why| {
            FeedbackError::Config(format!(
                "the private key of github app {app_id} cannot be used: {why} (download a new private key from the app's settings page and give its .pem file)"
            ))
        })?;
        Ok(App {
            app_id,
            installation_id,
            key: std::sync::Arc::new(key),
        })
    }

    /// An App with its private key read from the PEM file `path`.
    pub fn from_key_file(
        app_id: impl Into<String>,
        path: &Path,
        installation_id: Option<u64>,
    ) -> Result<App, FeedbackError> {
        let key = Secret::from_file("the github app private key", path)?;
        App::new(app_id, &key, installation_id)
    }

    /// A JWT for the App, issued at `now`.
    pub fn jwt(&self, now: DateTime<Utc>) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iat": now.timestamp() - 60,
            "exp": now.timestamp() + 540,
            "iss": self.app_id,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .expect("signing with a parsed RSA key succeeds");
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn parse_key(pem: &str) -> Result<RsaKeyPair, String> {
    let pem = pem.trim();
    let (label, body) = ["RSA PRIVATE KEY", "PRIVATE KEY"]
        .iter()
        .find_map(|label| {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            let rest = pem.strip_prefix(&begin)?;
            let body = rest.strip_suffix(&end)?;
            Some((*label, body))
        })
        .ok_or_else(|| {
            "it is not a PEM private key (expected -----BEGIN RSA PRIVATE KEY-----)".to_owned()
        })?;
    let der: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(der)
        .map_err(|error| format!("its base64 is broken: {error}"))?;
    let parsed = if label == "RSA PRIVATE KEY" {
        RsaKeyPair::from_der(&der)
    } else {
        RsaKeyPair::from_pkcs8(&der)
    };
    parsed.map_err(|error| format!("it is not an RSA key of 2048 bits or more: {error}"))
}

/// How one owner's repositories are reached.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A token sent as `Authorization: Bearer <token>` (needs `repo_deployment` and
    /// `repo:status`, or fine-grained "Deployments" and "Commit statuses" write).
    Token(Secret),
    /// A GitHub App (permissions "Deployments" and "Commit statuses": read and write).
    App(App),
}

/// Authentication per repository owner, with a default for the others.
#[derive(Debug, Clone, Default)]
pub struct Auths {
    /// By owner (`acme`), compared case-insensitively.
    pub owners: BTreeMap<String, Auth>,
    /// For owners not listed.
    pub default: Option<Auth>,
}

impl Auths {
    /// The authentication for `owner`.
    pub fn for_owner(&self, owner: &str) -> Option<&Auth> {
        self.owners
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(owner))
            .map(|(_, auth)| auth)
            .or(self.default.as_ref())
    }

    /// Whether no owner can be reached.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty() && self.default.is_none()
    }

    /// Reads the per-owner file (`RAILYARD_GITHUB_AUTH_FILE`), TOML:
    ///
    /// ```toml
    /// [owners.acme]              # a GitHub App
    /// app_id = "123456"
    /// private_key_file = "/etc/railyard/acme-app.pem"
    /// installation_id = 7890     # optional: else looked up per repository
    ///
    /// [owners.widgets]           # a token
    /// token_file = "/etc/railyard/widgets.token"
    /// ```
    ///
    /// Relative paths are relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Auths, FeedbackError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            FeedbackError::Config(format!(
                "cannot read the github auth file {}: {error} (fix RAILYARD_GITHUB_AUTH_FILE)",
                path.display()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Auths::from_toml(&text, base, &path.display().to_string())
    }

    /// [`Auths::from_file`] on `text`; `base` resolves relative paths, `name` names the file
    /// in errors.
    pub fn from_toml(text: &str, base: &Path, name: &str) -> Result<Auths, FeedbackError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            owners: BTreeMap<String, Owner>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Owner {
            app_id: Option<String>,
            private_key_file: Option<std::path::PathBuf>,
            installation_id: Option<u64>,
            token_file: Option<std::path::PathBuf>,
        }
        let file: File = railyard_core::parse::from_toml("github-auth", text).map_err(|error| {
            FeedbackError::Config(format!("{name}: {error} (see the README's github section)"))
        })?;
        let mut auths = Auths::default();
        for (owner, entry) in file.owners {
            let at = |p: &std::path::PathBuf| {
                if p.is_absolute() {
                    p.clone()
                } else {
                    base.join(p)
                }
            };
            let auth = match entry {
                Owner {
                    app_id: Some(app_id),
                    private_key_file: Some(key),
                    installation_id,
                    token_file: None,
                } => Auth::App(App::from_key_file(app_id, &at(&key), installation_id)?),
                Owner {
                    app_id: None,
                    private_key_file: None,
                    installation_id: None,
                    token_file: Some(token),
                } => Auth::Token(Secret::from_file("a github token", &at(&token))?),
                _ => {
                    return Err(FeedbackError::Config(format!(
                        "{name}: owners.{owner}: give either app_id and private_key_file (and optionally installation_id), or token_file"
                    )));
                }
            };
            auths.owners.insert(owner, auth);
        }
        Ok(auths)
    }
}

/// An installation token and when it expires.
#[derive(Clone)]
pub(crate) struct InstallationToken {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl InstallationToken {
    /// Whether it is still good for five minutes at `now`.
    pub fn fresh(&self, now: DateTime<Utc>) -> bool {
        self.expires_at - now > chrono::Duration::minutes(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const KEY: &str = include_str!("../../tests/fixtures/test-app-key.pem");

    #[test]
    fn a_jwt_is_rs256_for_ten_minutes_from_a_minute_ago_and_verifies() {
        let key = Secret::new("key", KEY).unwrap();
        let app = App::new("4242", &key, None).unwrap();
        let now: DateTime<Utc> = "2026-03-02T10:00:00Z".parse().unwrap();
        let jwt = app.jwt(now);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "4242");
        assert_eq!(claims["iat"], now.timestamp() - 60);
        assert_eq!(claims["exp"], now.timestamp() + 540);
        let public = app.key.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .expect("the signature verifies with the App's public key");
        assert!(
            !format!("{app:?}").contains("PRIVATE"),
            "Debug never shows the key"
        );
    }

    #[test]
    fn a_bad_key_or_app_id_says_what_to_do() {
        let garbage = Secret::new("key", "not a key at all").unwrap();
        let error = App::new("4242", &garbage, None).unwrap_err().to_string();
        assert!(error.contains("not a PEM private key"), "{error}");
        assert!(error.contains("download a new private key"), "{error}");
        let broken = Secret::new(
            "key",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
        )
        .unwrap();
        let error = App::new("4242", &broken, None).unwrap_err().to_string();
        assert!(error.contains("not an RSA key"), "{error}");
        let key = Secret::new("key", KEY).unwrap();
        let error = App::new("my app", &key, None).unwrap_err().to_string();
        assert!(error.contains("is not an app id"), "{error}");
    }

    #[test]
    fn the_auth_file_takes_an_app_or_a_token_per_owner() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_owned();
        std::fs::write(dir.join("key.pem"), KEY).unwrap();
        std::fs::write(dir.join("w.token"), "ghp_exampletoken123456\n").unwrap();
        let auths = Auths::from_toml(
            "[owners.Acme]\napp_id = \"4242\"\nprivate_key_file = \"key.pem\"\ninstallation_id = 7\n\n[owners.widgets]\ntoken_file = \"w.token\"\n",
            &dir,
            "auth.toml",
        )
        .unwrap();
        assert!(
            matches!(auths.for_owner("acme"), Some(Auth::App(app)) if app.installation_id == Some(7))
        );
        assert!(matches!(auths.for_owner("widgets"), Some(Auth::Token(_))));
        assert!(auths.for_owner("other").is_none());
        let error = Auths::from_toml(
            "[owners.acme]\napp_id = \"4242\"\ntoken_file = \"w.token\"\n",
            &dir,
            "auth.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("owners.acme: give either app_id and private_key_file"),
            "{error}"
        );
        let error = Auths::from_toml("[owners.acme]\ncolour = 1\n", &dir, "auth.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("colour"), "{error}");
    }
}
