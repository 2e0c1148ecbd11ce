//! The web console (INTERFACES §6, issue 16): plain HTML, CSS and ES modules embedded in the
//! binary with `include_str!`, served at `/` with a content-hash `ETag` (a matching
//! `If-None-Match` answers 304) and a strict Content-Security-Policy (no inline script or
//! style, no third-party origin). It reads and acts only through the public routes, with the
//! token the user signs in with (kept in the tab's `sessionStorage`, sent as
//! `Authorization: Bearer`, never in a URL).
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// The Content-Security-Policy every console response carries: scripts, styles and requests
/// only from this origin, nothing inline, no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/console/` (`index.html` is served at `/`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

/// Every file of the console, as built into this binary.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../assets/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/api.js"),
    },
    Asset {
        name: "graph.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/graph.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../assets/favicon.svg"),
    },
];

/// The strong `ETag` of `body`: the first 16 bytes of its SHA-256, quoted.
pub fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..16]))
}

fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.iter().map(|asset| etag(asset.body)).collect())
}

/// The console's routes: `GET /` (the page), `GET /releases/{id}` (the same page, opening that
/// release: the links Slack messages and GitHub deployments carry) and `GET /console/{file}`
/// (its scripts and style). Merge it into a router that serves the read routes
/// (`railyard_audit::router` does).
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/releases/{id}", get(index))
        .route("/console/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == file) {
        Some(at) => serve(at, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("the console has no file {file:?}: open / instead"),
        )
            .into_response(),
    }
}

fn serve(at: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[at];
    let tag = &etags()[at];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|v| v.trim() == tag || v.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let out = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(tag) {
        out.insert(header::ETAG, tag);
    }
    // Revalidate every time: a new binary serves new files under the same names.
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(name: &str) -> bool {
        ASSETS.iter().any(|asset| asset.name == name)
    }

    /// Every file the page and its modules load is embedded, and nothing is inline (the policy
    /// would block it) or from another origin.
    #[test]
    fn every_referenced_file_is_embedded_and_nothing_is_inline() {
        for asset in ASSETS {
            for (at, _) in asset.body.match_indices("/console/") {
                let name: String = asset.body[at + "/console/".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(served(&name), "{} loads /console/{name}", asset.name);
            }
            for (at, _) in asset.body.match_indices("from \"./") {
                let name: String = asset.body[at + "from \"./".len()..]
                    .chars()
                    .take_while(|c| *c != '"')
                    .collect();
                assert!(served(&name), "{} imports ./{name}", asset.name);
            }
            // The SVG namespace is a name, not a place anything is loaded from.
            let body = asset.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{} names no other origin",
                asset.name
            );
            assert!(
                !asset.body.contains("innerHTML"),
                "{} builds no markup from text",
                asset.name
            );
        }
        let html = ASSETS[0].body;
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(r#"<script type="module" src="/console/app.js"></script>"#));
        assert!(!html.contains("<style") && !html.contains(" style="));
    }

    #[test]
    fn etags_are_the_content_hash() {
        assert_eq!(etag("a"), etag("a"));
        assert_ne!(etag("a"), etag("b"));
        assert_eq!(etag("").len(), 34);
    }
}
