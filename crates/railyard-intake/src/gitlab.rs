//! GitLab webhooks: `X-Gitlab-Token` compared in constant time, `Idempotency-Key` or
//! `X-Gitlab-Event-UUID` as the dedupe key, and pipeline hooks as suite results (the pipeline's
//! name, else `gitlab-pipeline`) for the service of the project at its commit.

use railyard_core::event::{Origin, SuiteFinished};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::answer::Refused;
use crate::cdevents::json_body;
use crate::intake::Headers;
use crate::mapped::{Mapped, Parsed, Resolver, Signal};

/// Checks `X-Gitlab-Token` against the configured token in constant time.
pub fn verify_token(expected: &[u8], header: Option<&str>) -> Result<(), Refused> {
    let given = header.ok_or_else(|| {
        Refused::unauthenticated(
            "X-Gitlab-Token is missing: set the webhook's secret token in GitLab to RAILYARD_GITLAB_WEBHOOK_TOKEN",
            "X-Gitlab-Token",
        )
    })?;
    // Lengths are compared in the open; the contents in constant time.
    if bool::from(given.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(Refused::unauthenticated(
            "X-Gitlab-Token does not match: set the webhook's secret token in GitLab to RAILYARD_GITLAB_WEBHOOK_TOKEN",
            "X-Gitlab-Token",
        ))
    }
}

#[derive(Deserialize)]
struct PipelineHook {
    object_attributes: PipelineAttributes,
    project: Project,
}

#[derive(Deserialize)]
struct PipelineAttributes {
    id: u64,
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
    status: String,
    #[serde(default)]
    tag: bool,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    web_url: String,
}

/// Maps a verified GitLab delivery.
pub fn parse(resolver: &Resolver<'_>, headers: &Headers, body: &[u8]) -> Result<Parsed, Refused> {
    let key = headers
        .get("idempotency-key")
        .or_else(|| headers.get("x-gitlab-event-uuid"))
        .filter(|k| !k.is_empty())
        .map(str::to_owned);
    let value = json_body(body)?;
    let event = headers.get("x-gitlab-event").unwrap_or_default();
    let kind = value
        .get("object_kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default();
    if event != "Pipeline Hook" && kind != "pipeline" {
        return Ok(Parsed {
            mapped: Mapped::Ignored(format!(
                "gitlab {:?}: railyard acts on pipeline hooks only",
                if event.is_empty() { kind } else { event }
            )),
            delivery: None,
        });
    }
    let hook: PipelineHook = serde_path_to_error::deserialize(&value).map_err(|error| {
        let path = crate::mapped::error_path("", error.path(), &error.inner().to_string());
        Refused::invalid(
            format!(
                "not a gitlab pipeline hook: {}: send the payload GitLab sent, unchanged",
                error.inner()
            ),
            path,
        )
    })?;
    let attributes = hook.object_attributes;
    let url = hook.project.web_url;
    let passed = match attributes.status.as_str() {
        "success" => true,
        "failed" | "canceled" => false,
        other => {
            return Ok(Parsed {
                mapped: Mapped::Ignored(format!(
                    "pipeline {} is {other}: only finished pipelines are suite results",
                    attributes.id
                )),
                delivery: None,
            });
        }
    };
    let Some(service) = resolver.by_repository(&url) else {
        return Ok(Parsed {
            mapped: Mapped::Ignored(format!(
                "no service matches project {url:?}: set match.repository = {url:?} on its service in the catalog"
            )),
            delivery: None,
        });
    };
    let origin = Origin {
        door: "gitlab".to_owned(),
        id: key
            .clone()
            .unwrap_or_else(|| format!("pipeline-{}", attributes.id)),
        source: url,
    };
    let suite = SuiteFinished {
        suite: attributes
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "gitlab-pipeline".to_owned()),
        passed,
        outcome: attributes.status,
        version: None,
        chain_id: None,
        commit: Some(attributes.sha),
        branch: (!attributes.tag).then_some(attributes.reference),
        origin,
    };
    Ok(Parsed {
        mapped: Mapped::Signal {
            service,
            signal: Signal::Suite(suite),
        },
        delivery: key.map(|k| format!("gitlab:{k}")),
    })
}
