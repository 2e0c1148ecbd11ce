//! Parsing TOML and JSON files into the typed models with errors that name the key path,
//! the position and what was expected.

use serde::de::DeserializeOwned;

/// A file that could not be read as the model it should hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{path}: {message}", position.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
pub struct ParseError {
    /// The key path of the offending value, rooted at the file kind
    /// (`catalog.services.billing-worker.deploy`).
    pub path: String,
    /// 1-based line and column when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ParseError {
    /// An error at `path` found by a check after deserialization.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> ParseError {
        ParseError {
            path: path.into(),
            position: None,
            message: message.into(),
        }
    }
}

fn join(root: &str, path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." || p.is_empty() {
        root.to_owned()
    } else {
        format!("{root}.{p}")
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses TOML `text` as `T`; `root` names the file kind in error paths.
pub fn from_toml<T: DeserializeOwned>(root: &str, text: &str) -> Result<T, ParseError> {
    let de = toml::de::Deserializer::parse(text).map_err(|error| ParseError {
        path: root.to_owned(),
        position: error.span().map(|s| line_col(text, s.start)),
        message: error.message().trim().to_owned(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|error| {
        let path = join(root, error.path());
        let inner = error.into_inner();
        ParseError {
            path,
            position: inner.span().map(|s| line_col(text, s.start)),
            message: inner.message().trim().to_owned(),
        }
    })
}

/// Parses JSON `text` as `T`; `root` names the file kind in error paths.
pub fn from_json<T: DeserializeOwned>(root: &str, text: &str) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|error| {
        let path = join(root, error.path());
        let inner = error.into_inner();
        ParseError {
            path,
            position: (inner.line() > 0).then(|| json_position(inner.line(), inner.column())),
            message: strip_json_position(&inner.to_string()),
        }
    })?;
    de.end().map_err(|error| ParseError {
        path: root.to_owned(),
        position: Some(json_position(error.line(), error.column())),
        message: strip_json_position(&error.to_string()),
    })?;
    Ok(value)
}

/// serde_json's position as 1-based: it reports column 0 for an error before the first
/// character of a line (an empty file, a line break where a value should be).
fn json_position(line: usize, column: usize) -> (usize, usize) {
    (line.max(1), column.max(1))
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
