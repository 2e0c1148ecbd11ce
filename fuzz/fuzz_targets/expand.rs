//! Placeholder expansion of deploy, rollback and gate commands and URLs
//! (`railyard_promoter::adapter::expand` and `expand_url`). Input: the template on the first
//! line, then `key=value` lines for the step's values (`service`, `version`, `from_version`,
//! `artifact`, `colour`, `env`, `release`, `to`, `weight`, `step`, `attempt`).
//!
//! Expansion must be one pass: a value is inserted as it is (URL-encoded in a URL), never
//! scanned for placeholders again, so a version such as `{secret:TOKEN}` stays text, and a
//! placeholder that is a whole argv element becomes exactly its value. The output is compared
//! with a model of that rule. Secrets are a fixed hostile set (`Secrets::insert` registers
//! each value with the process-wide redaction layer, so fuzzed values would pile up there).
#![no_main]

use libfuzzer_sys::fuzz_target;
use railyard_core::{EnvName, ReleaseId};
use railyard_promoter::Secrets;
use railyard_promoter::adapter::{Target, expand, expand_url};

/// Secret names and values: reserved URL characters, a placeholder, a newline, an empty one.
const SECRETS: &[(&str, &str)] = &[
    ("TOKEN", "s3cr3t/?#&=@:+ %{}"),
    ("LOOP", "{secret:TOKEN}{version}"),
    ("LINES", "line one\nline two; rm -rf /"),
    ("EMPTY", ""),
];

fn secrets() -> &'static Secrets {
    static SECRETS_ONCE: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    SECRETS_ONCE.get_or_init(|| {
        let mut secrets = Secrets::default();
        for (name, value) in SECRETS {
            secrets.insert(*name, *value);
        }
        secrets
    })
}

fn secret(name: &str) -> Option<&'static str> {
    SECRETS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// RFC 3986 unreserved characters stay, every other byte becomes `%XX` (upper-case hex).
fn url_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The placeholders and what they expand to, as the catalog documents them (INTERFACES §3).
fn values(target: &Target) -> Vec<(&'static str, String)> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("service", text(&target.service)),
        ("version", text(&target.version)),
        ("from_version", text(&target.from_version)),
        ("artifact", text(&target.artifact)),
        (
            "env",
            target
                .env
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        ("weight", target.weight.to_string()),
        ("colour", text(&target.colour)),
        ("to", target.to.map(|t| t.to_string()).unwrap_or_default()),
        ("attempt", target.attempt.to_string()),
        (
            "release",
            target
                .release
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
    ]
}

/// One left-to-right pass: `{name}` of a known value or `{secret:NAME}` is replaced,
/// anything else (an unknown name, an unclosed brace) stays as written.
fn model(template: &str, target: &Target, encode: fn(&str) -> String) -> Result<String, ()> {
    let values = values(target);
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &after[..close];
        if let Some(name) = name.strip_prefix("secret:") {
            out.push_str(&encode(secret(name).ok_or(())?));
        } else if let Some((_, value)) = values.iter().find(|(key, _)| *key == name) {
            out.push_str(&encode(value));
        } else {
            out.push_str(&rest[open..open + close + 2]);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn target_from(lines: std::str::Split<'_, char>) -> Target {
    let mut target = Target {
        weight: 100,
        ..Target::default()
    };
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let owned = Some(value.to_owned());
        match key {
            "service" => target.service = owned,
            "version" => target.version = owned,
            "from_version" => target.from_version = owned,
            "artifact" => target.artifact = owned,
            "colour" => target.colour = owned,
            "env" => target.env = EnvName::new(value).ok(),
            "release" => target.release = ReleaseId::new(value).ok(),
            "to" => target.to = value.parse().ok(),
            "weight" => target.weight = value.parse().unwrap_or(100),
            "step" => target.step = value.to_owned(),
            "attempt" => target.attempt = value.parse().unwrap_or(1),
            _ => {}
        }
    }
    target
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default();
    let target = target_from(lines);
    let secrets = secrets();

    let plain = expand(template, &target, secrets);
    assert_eq!(
        plain.as_ref().ok(),
        model(template, &target, str::to_owned).as_ref().ok()
    );
    if let Err(error) = &plain {
        assert!(
            error.contains("RAILYARD_SECRET_"),
            "a missing secret names its variable: {error}"
        );
    }
    let url = expand_url(template, &target, secrets);
    assert_eq!(
        url.as_ref().ok(),
        model(template, &target, url_encoded).as_ref().ok()
    );
    assert_eq!(plain.is_ok(), url.is_ok());

    // A placeholder that is a whole argv element becomes exactly its value, whatever the value
    // holds; in a URL, nothing but unreserved characters and escapes.
    let named = values(&target)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .chain(
            SECRETS
                .iter()
                .map(|(n, v)| (format!("secret:{n}"), (*v).to_owned())),
        );
    for (name, value) in named {
        let element = format!("{{{name}}}");
        assert_eq!(
            expand(&element, &target, secrets).as_deref(),
            Ok(value.as_str())
        );
        let encoded = expand_url(&element, &target, secrets).expect("every value is set");
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%')),
            "{name} is not fully encoded in a url: {encoded:?}"
        );
    }
});
