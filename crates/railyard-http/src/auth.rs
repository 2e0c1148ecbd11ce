//! Tokens and roles (INTERFACES §7). A token is `ry_` + 43 base64url characters (256 random
//! bits); the tokens file holds only SHA-256 hashes, identities, roles and aliases. Every
//! route authenticates with `Authorization: Bearer <token>` and checks its role here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What an identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends CI events and submits releases.
    Publisher,
    /// Holds, resumes, rolls back, cancels and retries.
    Operator,
    /// Approves and denies.
    Approver,
    /// Reads the audit record and verifies it.
    Auditor,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }

    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Publisher,
        Role::Operator,
        Role::Approver,
        Role::Auditor,
    ];
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?} (expected one of: publisher, operator, approver, auditor)"
                )
            })
    }
}

/// One line of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who the token belongs to; becomes the actor of every event it causes.
    pub identity: String,
    /// What it may do.
    pub roles: BTreeSet<Role>,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// Other names of the same person (`github:alice`), for approval rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity.
    pub name: String,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Its aliases.
    pub aliases: Vec<String>,
}

impl Identity {
    /// `Ok` when the identity has `role`, else a 403 naming the role.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.roles.contains(&role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} does not have the {} role: ask an administrator for a token with it",
                self.name,
                role.as_str()
            )))
        }
    }

    /// Whether `name` is this identity or one of its aliases.
    pub fn is(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file is not valid TOML of the expected shape.
    #[error("tokens file: {0}")]
    Parse(String),
    /// A hash is not 64 hex characters.
    #[error(
        "tokens file: tokens[{index}] ({identity}): sha256 must be 64 hex characters (use `railyard token create`)"
    )]
    BadHash {
        /// Position in the file.
        index: usize,
        /// Its identity.
        identity: String,
    },
}

/// The known tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<BTreeMap<[u8; 32], TokenEntry>>,
}

impl Tokens {
    /// Parses the tokens file.
    pub fn from_toml(text: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile =
            toml::from_str(text).map_err(|error| TokensError::Parse(error.to_string()))?;
        Tokens::from_entries(file.tokens)
    }

    /// Builds the table from entries.
    pub fn from_entries(entries: Vec<TokenEntry>) -> Result<Tokens, TokensError> {
        let mut by_hash = BTreeMap::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let hash = hex::decode(&entry.sha256)
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| TokensError::BadHash {
                    index,
                    identity: entry.identity.clone(),
                })?;
            by_hash.insert(hash, entry);
        }
        Ok(Tokens {
            by_hash: Arc::new(by_hash),
        })
    }

    /// This table with every token of `other` added (an entry of `other` wins when both hold
    /// the same hash).
    pub fn merged(&self, other: &Tokens) -> Tokens {
        let mut by_hash = (*self.by_hash).clone();
        by_hash.extend(
            other
                .by_hash
                .iter()
                .map(|(hash, entry)| (*hash, entry.clone())),
        );
        Tokens {
            by_hash: Arc::new(by_hash),
        }
    }

    /// How many tokens it admits.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether it admits no token.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The identity a bearer token belongs to.
    pub fn verify(&self, token: &str) -> Option<Identity> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare every stored hash in constant time, so the answer's timing says nothing
        // about how close a guess was.
        let mut found = None;
        for (hash, entry) in self.by_hash.iter() {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found.map(|entry| Identity {
            name: entry.identity.clone(),
            roles: entry.roles.clone(),
            aliases: entry.aliases.clone(),
        })
    }

    /// The identity whose tokens carry `alias` (`slack:U123ABC`), for callers that prove who
    /// they are some other way than a bearer token (a signed Slack interaction): its roles are
    /// those of the entries carrying the alias. `Ok(None)` when no entry carries it; an error
    /// naming them when entries of different identities do, since the mapping would be a guess.
    pub fn by_alias(&self, alias: &str) -> Result<Option<Identity>, String> {
        let mut found: Option<Identity> = None;
        for entry in self
            .by_hash
            .values()
            .filter(|entry| entry.aliases.iter().any(|a| a == alias))
        {
            match &mut found {
                None => {
                    found = Some(Identity {
                        name: entry.identity.clone(),
                        roles: entry.roles.clone(),
                        aliases: entry.aliases.clone(),
                    });
                }
                Some(identity) if identity.name == entry.identity => {
                    identity.roles.extend(entry.roles.iter().copied());
                    for a in &entry.aliases {
                        if !identity.aliases.contains(a) {
                            identity.aliases.push(a.clone());
                        }
                    }
                }
                Some(identity) => {
                    return Err(format!(
                        "the alias {alias} is given to both {} and {} in the tokens file: give it to one identity only",
                        identity.name, entry.identity
                    ));
                }
            }
        }
        Ok(found)
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::unauthenticated(
                "no Authorization header: send `Authorization: Bearer <token>`",
                "Authorization",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "the Authorization header is not `Bearer <token>`",
                    "Authorization",
                )
            })?;
        self.verify(token).ok_or_else(|| {
            ApiError::unauthenticated(
                "the token is not known: check RAILYARD_TOKEN, or create one with `railyard token create`",
                "Authorization",
            )
        })
    }
}

/// A new token and the tokens-file line that admits it. The token is shown once; only its
/// hash is stored.
pub fn generate_token(
    identity: &str,
    roles: BTreeSet<Role>,
    aliases: Vec<String>,
) -> (String, TokenEntry) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    let token = format!(
        "ry_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let entry = TokenEntry {
        identity: identity.to_owned(),
        roles,
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        aliases,
    };
    (token, entry)
}

/// Extracts the authenticated caller; any route state that can give out [`Tokens`] works.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

impl<S> FromRequestParts<S> for Authenticated
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = Tokens::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        tokens.authenticate(header).map(Authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_verifies_and_others_do_not() {
        let (token, entry) = generate_token(
            "alice",
            [Role::Approver].into(),
            vec!["github:alice".into()],
        );
        assert!(token.starts_with("ry_") && token.len() == 46, "{token}");
        let file = format!(
            "[[tokens]]\nidentity = \"alice\"\nroles = [\"approver\"]\nsha256 = \"{}\"\naliases = [\"github:alice\"]\n",
            entry.sha256
        );
        let tokens = Tokens::from_toml(&file).unwrap();
        let who = tokens.verify(&token).unwrap();
        assert_eq!(who.name, "alice");
        assert!(who.is("github:alice"));
        assert!(who.require(Role::Approver).is_ok());
        assert_eq!(who.require(Role::Operator).unwrap_err().status, 403);
        assert!(tokens.verify("ry_wrong").is_none());
        assert_eq!(tokens.authenticate(None).unwrap_err().status, 401);
        assert_eq!(
            tokens.authenticate(Some("Basic x")).unwrap_err().status,
            401
        );
        assert_eq!(
            tokens
                .authenticate(Some(&format!("Bearer {token}")))
                .unwrap()
                .name,
            "alice"
        );
    }

    #[test]
    fn an_alias_names_one_identity_with_the_roles_of_its_entries() {
        let (_, alice) = generate_token(
            "alice",
            [Role::Approver].into(),
            vec!["slack:U1".into(), "github:alice".into()],
        );
        let (_, alice_ops) =
            generate_token("alice", [Role::Operator].into(), vec!["slack:U1".into()]);
        let (_, bob) = generate_token("bob", [Role::Approver].into(), vec!["slack:U2".into()]);
        let (_, mallory) =
            generate_token("mallory", [Role::Approver].into(), vec!["slack:U2".into()]);
        let tokens = Tokens::from_entries(vec![alice, alice_ops, bob, mallory]).unwrap();
        let found = tokens.by_alias("slack:U1").unwrap().unwrap();
        assert_eq!(found.name, "alice");
        assert_eq!(found.roles, [Role::Approver, Role::Operator].into());
        assert!(found.is("github:alice"));
        assert_eq!(tokens.by_alias("slack:U9").unwrap(), None);
        let error = tokens.by_alias("slack:U2").unwrap_err();
        assert!(
            error.contains("bob") && error.contains("mallory"),
            "{error}"
        );
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        let err = Tokens::from_toml(
            "[[tokens]]\nidentity = \"x\"\nroles = [\"root\"]\nsha256 = \"00\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant `root`"), "{err}");
        let err = Tokens::from_toml("[[tokens]]\nidentity = \"x\"\nroles = []\nsha256 = \"00\"\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tokens file: tokens[0] (x): sha256 must be 64 hex characters (use `railyard token create`)"
        );
    }
}
