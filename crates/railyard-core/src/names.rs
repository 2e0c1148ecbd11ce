//! Validated names and ids (INTERFACES §1): they become NATS subject tokens and sled keys,
//! so anything outside the allowed pattern is refused at the edge with the field and pattern.

use std::fmt;

/// A name or id that does not match its allowed pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid: expected {pattern}")]
pub struct InvalidName {
    /// What was being named (`service name`, `release id`, ...).
    pub kind: &'static str,
    /// The refused value, as given.
    pub value: String,
    /// The allowed pattern, spelled for a human.
    pub pattern: &'static str,
}

/// Pattern of environment, service, database, queue and API names.
pub const NAME_PATTERN: &str = "1 to 63 characters of [a-z0-9-], starting with [a-z0-9]";
/// Pattern of release ids.
pub const RELEASE_ID_PATTERN: &str =
    "1 to 64 characters of [A-Za-z0-9_-], starting with [A-Za-z0-9]";

fn is_lower_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_release_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $check:ident, $pattern:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates `value` against the allowed pattern.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                if $check(&value) {
                    Ok(Self(value))
                } else {
                    Err(InvalidName { kind: $kind, value, pattern: $pattern })
                }
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidName;
            fn try_from(value: String) -> Result<Self, InvalidName> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidName;
            fn from_str(value: &str) -> Result<Self, InvalidName> {
                Self::new(value)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let regex = if $kind == "release id" {
                    "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
                } else {
                    "^[a-z0-9][a-z0-9-]{0,62}$"
                };
                schemars::json_schema!({
                    "type": "string",
                    "pattern": regex,
                    "description": concat!("A ", $kind, ".")
                })
            }
        }
    };
}

name_type!(
    /// An environment name (`staging`, `production`).
    EnvName, "environment name", is_lower_name, NAME_PATTERN
);
name_type!(
    /// A service name from the catalog.
    ServiceName, "service name", is_lower_name, NAME_PATTERN
);
name_type!(
    /// A database name from the catalog.
    DatabaseName, "database name", is_lower_name, NAME_PATTERN
);
name_type!(
    /// A queue or topic name from the catalog.
    QueueName, "queue name", is_lower_name, NAME_PATTERN
);
name_type!(
    /// An API schema name from the catalog.
    ApiName, "api name", is_lower_name, NAME_PATTERN
);
name_type!(
    /// A release id (`rel-42`, `orders-api-2_4_0`).
    ReleaseId, "release id", is_release_id, RELEASE_ID_PATTERN
);

impl ReleaseId {
    /// The id of a release made for one change, `<service>-<version>` with every character
    /// outside the allowed set replaced by `_` (INTERFACES §8), truncated to 64.
    pub fn for_change(service: &ServiceName, version: &str) -> ReleaseId {
        let raw = format!("{service}-{version}");
        let mut id: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        id.truncate(64);
        ReleaseId::new(id).expect("a sanitized id built from a valid service name is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_published_patterns() {
        for ok in ["a", "orders-api", "0", &"a".repeat(63)] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "Orders", "a.b", "a b", "a>", &"a".repeat(64)] {
            let err = ServiceName::new(bad).unwrap_err();
            assert_eq!(err.kind, "service name");
        }
        assert!(ReleaseId::new("Rel_42-x").is_ok());
        assert!(ReleaseId::new("_x").is_err());
        assert!(ReleaseId::new("a.b").is_err());
        assert_eq!(
            ServiceName::new("Bad").unwrap_err().to_string(),
            "service name \"Bad\" is not valid: expected 1 to 63 characters of [a-z0-9-], starting with [a-z0-9]"
        );
    }

    #[test]
    fn release_id_for_a_change_is_sanitized() {
        let svc = ServiceName::new("orders-api").unwrap();
        assert_eq!(
            ReleaseId::for_change(&svc, "2.4.0+build.7").as_str(),
            "orders-api-2_4_0_build_7"
        );
    }
}
