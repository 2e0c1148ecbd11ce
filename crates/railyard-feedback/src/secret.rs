//! A secret value (a GitHub token, an App's private key, a sink's bearer token): registered
//! with [`railyard_core::redact`] when it is made, so it reaches no log, span or event, and
//! never shown by `Debug`.

use std::fmt;
use std::path::Path;

use crate::error::FeedbackError;

/// A secret; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A secret given as a value (`what` names it in errors); registered for redaction.
    pub fn new(what: &str, value: impl Into<String>) -> Result<Secret, FeedbackError> {
        let value = value.into().trim().to_owned();
        if value.is_empty() {
            return Err(FeedbackError::Config(format!(
                "{what} is empty: give its value"
            )));
        }
        railyard_core::redact::register([value.as_str()]);
        // Every line of a multi-line secret (a PEM key) on its own, as logs may split it.
        railyard_core::redact::register(value.lines().map(str::trim).filter(|l| l.len() >= 16));
        Ok(Secret(value))
    }

    /// The secret in the file `path` (its whole content, trimmed).
    pub fn from_file(what: &str, path: &Path) -> Result<Secret, FeedbackError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            FeedbackError::Config(format!(
                "cannot read {what} from {}: {error} (fix the path or its permissions)",
                path.display()
            ))
        })?;
        Secret::new(what, text)
    }

    /// The value, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}
