//! Redaction: the one layer every string bound for an event, a log line, a span or a Slack
//! message goes through before it leaves the process.
//!
//! A process registers each secret it holds once, when it loads it ([`register`]): the
//! promoter's `RAILYARD_SECRET_*` values, the NATS password, the Slack token, webhook
//! secrets. [`redact`] then replaces, in any text, every registered value and the forms a
//! value takes on its way out:
//!
//! - as written, and as a JSON string body (quotes and backslashes escaped);
//! - percent-encoded (upper- and lower-case hex, and `+` for spaces), as URL placeholders and
//!   HTTP clients write them;
//! - base64 (standard and URL-safe alphabets) at each of the three byte alignments, so a
//!   secret is found inside a longer base64 text such as an HTTP Basic `user:secret`
//!   credential (only the characters that depend on the secret alone are matched);
//!
//! and it masks the password of every URL userinfo (`scheme://user:password@host`), whoever
//! wrote the URL. Matches become [`MASK`].
//!
//! Values shorter than [`MIN_SECRET_LEN`] bytes are not registered: masking every `abc` in
//! every log would destroy the logs and reveal the secret by its holes.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// What a redacted value is replaced with.
pub const MASK: &str = "***";

/// The shortest value [`register`] accepts.
pub const MIN_SECRET_LEN: usize = 4;

/// The shortest derived form (a base64 fragment) that is still matched; shorter fragments
/// would match ordinary text.
const MIN_FORM_LEN: usize = 6;

/// A matcher for a fixed set of secret values and their encoded forms.
#[derive(Clone, Default)]
pub struct Redactor {
    values: BTreeSet<String>,
    matcher: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values themselves.
        write!(f, "Redactor({} secrets)", self.values.len())
    }
}

impl Redactor {
    /// A redactor for `values` (those shorter than [`MIN_SECRET_LEN`] are left out).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut redactor = Redactor::default();
        redactor.extend(values);
        redactor
    }

    /// Adds `values`; true when one was new.
    pub fn extend<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) -> bool {
        let mut added = false;
        for value in values {
            if value.len() >= MIN_SECRET_LEN && !self.values.contains(value) {
                self.values.insert(value.to_owned());
                added = true;
            }
        }
        if added {
            let forms: BTreeSet<String> = self.values.iter().flat_map(|v| forms(v)).collect();
            self.matcher = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(forms)
                .ok();
        }
        added
    }

    /// How many secrets it knows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when it knows no secret.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret form and URL password replaced by [`MASK`].
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let masked = mask_userinfo(text);
        let Some(matcher) = &self.matcher else {
            return masked;
        };
        if !matcher.is_match(masked.as_ref()) {
            return masked;
        }
        Cow::Owned(matcher.replace_all(masked.as_ref(), &vec![MASK; matcher.patterns_len()]))
    }

    /// [`Redactor::redact`] on every string (and object key) of a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact(text) {
                    *text = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.redact_json(item)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    self.redact_json(&mut item);
                    map.insert(self.redact(&key).into_owned(), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Every form of `secret` that [`Redactor::redact`] matches.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    let json = serde_json::to_string(secret).unwrap_or_default();
    forms.push(json[1..json.len() - 1].to_owned());
    let encoded = percent_encode(secret);
    forms.push(encoded.to_ascii_lowercase());
    forms.push(encoded.replace("%20", "+"));
    forms.push(encoded);
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(secret.as_bytes());
            let text = engine.encode(&bytes);
            // Characters that also carry bits of the unknown bytes before or after the
            // secret are left out: 2 after a 1-byte offset, 3 after a 2-byte one, and the
            // last one when the secret ends inside a 3-byte group.
            let skip = [0, 2, 3][offset];
            let end = text.len() - usize::from(bytes.len() % 3 != 0);
            if end > skip && end - skip >= MIN_FORM_LEN {
                forms.push(text[skip..end].to_owned());
            }
        }
    }
    forms.retain(|form| form.len() >= MIN_SECRET_LEN.min(secret.len()));
    forms
}

/// `value` with every byte outside RFC 3986's unreserved characters percent-encoded
/// (upper-case hex), as URL placeholders are filled.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` with the password of every `scheme://user:password@` replaced by [`MASK`].
pub fn mask_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut done = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let start = search + found + 3;
        search = start;
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let authority_len = text[start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(text.len() - start);
        let authority = &text[start..start + authority_len];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let Some(colon) = authority[..at].find(':') else {
            continue;
        };
        let password = start + colon + 1..start + at;
        if text[password.clone()] == *MASK {
            continue;
        }
        out.push_str(&text[done..password.start]);
        out.push_str(MASK);
        done = password.end;
        search = password.end;
    }
    if done == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[done..]);
    Cow::Owned(out)
}

/// The process's secrets.
static GLOBAL: LazyLock<RwLock<Arc<Redactor>>> = LazyLock::new(Default::default);

/// Registers secret values held by this process: from now on [`redact`] masks them in every
/// event, log line, span and Slack message the process writes.
pub fn register<'a>(values: impl IntoIterator<Item = &'a str>) {
    let values: Vec<&str> = values.into_iter().collect();
    let current = global();
    if values
        .iter()
        .all(|value| value.len() < MIN_SECRET_LEN || current.values.contains(*value))
    {
        return;
    }
    let mut guard = GLOBAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut next = Redactor::clone(&guard);
    if next.extend(values) {
        *guard = Arc::new(next);
    }
}

/// The process's redactor (every value [`register`]ed so far).
pub fn global() -> Arc<Redactor> {
    Arc::clone(
        &GLOBAL
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// `text` with every registered secret (in every form) and every URL password masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let redactor = global();
    match redactor.redact(text) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(owned) => Cow::Owned(owned),
    }
}

/// [`redact`] on every string of a JSON value, in place.
pub fn redact_json(value: &mut serde_json::Value) {
    global().redact_json(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Tk9#p/q+r=z%s3cr3t";

    #[test]
    fn every_form_of_a_secret_is_masked() {
        let redactor = Redactor::new([SECRET]);
        let b64 = STANDARD_NO_PAD.encode(SECRET);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("deploy:{SECRET}"));
        let basic2 = base64::engine::general_purpose::STANDARD.encode(format!("ab:{SECRET}"));
        let url_safe = URL_SAFE_NO_PAD.encode(format!("x{SECRET}"));
        let encoded = percent_encode(SECRET);
        let json = serde_json::to_string(&format!("say \"{SECRET}\"")).unwrap();
        for text in [
            format!("token={SECRET} end"),
            format!("GET /health?token={encoded}"),
            format!("GET /health?token={}", encoded.to_ascii_lowercase()),
            format!("b64 {b64}"),
            format!("Authorization: Basic {basic}"),
            format!("Authorization: Basic {basic2}"),
            format!("u {url_safe}"),
            json,
        ] {
            let redacted = redactor.redact(&text);
            assert!(redacted.contains(MASK), "{text} -> {redacted}");
            assert!(!redacted.contains(SECRET), "{redacted}");
            assert!(!redacted.contains(&encoded), "{redacted}");
            assert!(!redacted.contains("s3cr3t"), "{redacted}");
            // What base64 fragment is left cannot be decoded back to the secret.
            assert!(!redacted.contains(&b64[2..b64.len() - 2]), "{redacted}");
        }
        assert_eq!(redactor.redact("nothing here"), "nothing here");
        assert!(matches!(redactor.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn url_passwords_are_masked_whoever_wrote_them() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor.redact("nats://planner:s3cret@nats-1:4222, nats://nats-2:4222"),
            "nats://planner:***@nats-1:4222, nats://nats-2:4222"
        );
        assert_eq!(
            redactor
                .redact("error sending request for url (https://bot:xoxb-1@slack.test/api?a=b)"),
            "error sending request for url (https://bot:***@slack.test/api?a=b)"
        );
        assert_eq!(
            redactor.redact("https://user@host/x"),
            "https://user@host/x"
        );
        assert_eq!(
            redactor.redact("see http://host:8080/a@b"),
            "see http://host:8080/a@b"
        );
        assert_eq!(redactor.redact("a://b:***@c"), "a://b:***@c");
    }

    #[test]
    fn short_values_are_not_registered_and_json_is_redacted_in_place() {
        let redactor = Redactor::new(["abc", SECRET]);
        assert_eq!(redactor.len(), 1);
        let mut value = serde_json::json!({
            "output": [format!("echo {SECRET}"), 3],
            SECRET: "key",
            "abc": "abc",
        });
        redactor.redact_json(&mut value);
        let text = value.to_string();
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("\"abc\":\"abc\""), "{text}");
        assert_eq!(format!("{redactor:?}"), "Redactor(1 secrets)");
    }

    #[test]
    fn the_process_redactor_grows_with_registration() {
        let secret = "registered-once-4f1c";
        assert!(redact(secret).contains(secret));
        register([secret]);
        register([secret]);
        assert_eq!(redact(&format!("x {secret} y")), "x *** y");
    }
}
