//! GitHub webhooks: the `X-Hub-Signature-256` HMAC-SHA256 checked in constant time over the
//! raw body before anything parses it, `X-GitHub-Delivery` as the dedupe key, and the
//! mappings of INTERFACES §8 (completed `workflow_run`/`check_suite` → suite results,
//! `deployment_status` → inventory or incident, `push` to a protected branch and a merged
//! `pull_request` into one → commits and their verified authors).

use hmac::{Hmac, Mac};
use railyard_core::event::{CommitsPushed, IncidentOpened, Origin, PushedCommit, SuiteFinished};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::answer::Refused;
use crate::cdevents::json_body;
use crate::intake::Headers;
use crate::mapped::{Mapped, Parsed, Resolver, Running, Signal};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Checks `X-Hub-Signature-256: sha256=<hex>` against HMAC-SHA256(`secret`, `body`) in
/// constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), Refused> {
    let header = header.ok_or_else(|| {
        Refused::unauthenticated(
            "X-Hub-Signature-256 is missing: give the webhook a secret in GitHub (the same as RAILYARD_GITHUB_WEBHOOK_SECRET)",
            "X-Hub-Signature-256",
        )
    })?;
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .filter(|bytes| bytes.len() == 32)
        .ok_or_else(|| {
            Refused::unauthenticated(
                "X-Hub-Signature-256 is not sha256=<64 hex characters>: send GitHub's header unchanged",
                "X-Hub-Signature-256",
            )
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac accepts keys of any length");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(Refused::unauthenticated(
            "the signature does not match the body: check that the webhook secret in GitHub equals RAILYARD_GITHUB_WEBHOOK_SECRET, and that nothing rewrites the body on the way",
            "X-Hub-Signature-256",
        ))
    }
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub sends it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct Repository {
    html_url: String,
}

#[derive(Deserialize)]
struct WorkflowRunEvent {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repository,
}

#[derive(Deserialize)]
struct WorkflowRun {
    name: Option<String>,
    head_sha: String,
    head_branch: Option<String>,
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct CheckSuiteEvent {
    action: String,
    check_suite: CheckSuite,
    repository: Repository,
}

#[derive(Deserialize)]
struct CheckSuite {
    head_sha: String,
    head_branch: Option<String>,
    conclusion: Option<String>,
    app: App,
}

#[derive(Deserialize)]
struct App {
    slug: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentStatusEvent {
    deployment_status: DeploymentStatus,
    deployment: Deployment,
    repository: Repository,
}

#[derive(Deserialize)]
struct DeploymentStatus {
    state: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct Deployment {
    id: u64,
    sha: String,
    environment: String,
}

#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    reference: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    commits: Vec<Commit>,
    repository: Repository,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    #[serde(default)]
    message: String,
    author: Option<Author>,
    /// RFC 3339; a value that does not parse is left out rather than refusing the push.
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct Author {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    merged: bool,
    merge_commit_sha: Option<String>,
    user: Login,
    head: Head,
    base: Base,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct Base {
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
}

#[derive(Deserialize)]
struct ActionOnly {
    action: Option<String>,
}

fn typed<T: DeserializeOwned>(event: &str, value: &serde_json::Value) -> Result<T, Refused> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = crate::mapped::error_path("", error.path(), &error.inner().to_string());
        Refused::invalid(
            format!(
                "not a github {event} payload: {}: send the payload GitHub sent, unchanged",
                error.inner()
            ),
            path,
        )
    })
}

/// Maps a verified GitHub delivery.
pub fn parse(resolver: &Resolver<'_>, headers: &Headers, body: &[u8]) -> Result<Parsed, Refused> {
    let event = headers
        .get("x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            Refused::malformed(
                "X-GitHub-Event is missing: send GitHub's headers unchanged",
                "X-GitHub-Event",
            )
        })?;
    let delivery_id = headers
        .get("x-github-delivery")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            Refused::malformed(
                "X-GitHub-Delivery is missing: send GitHub's headers unchanged",
                "X-GitHub-Delivery",
            )
        })?;
    let value = json_body(body)?;
    if !value.is_object() {
        return Err(Refused::invalid(
            "a github payload is a json object: send the payload GitHub sent",
            "",
        ));
    }
    let delivery = Some(format!("github:{delivery_id}"));
    let origin = |source: &str| Origin {
        door: "github".to_owned(),
        id: delivery_id.to_owned(),
        source: source.to_owned(),
    };
    let no_service = |url: &str| {
        Mapped::Ignored(format!(
            "no service matches repository {url:?}: set match.repository = {url:?} on its service in the catalog"
        ))
    };
    let mapped = match event {
        "ping" => Mapped::Ignored("ping: the webhook reaches railyard".to_owned()),
        "workflow_run" => {
            let payload: WorkflowRunEvent = typed(event, &value)?;
            let run = payload.workflow_run;
            let url = payload.repository.html_url;
            if payload.action != "completed" {
                Mapped::Ignored(format!("workflow_run {}: only completed runs are suite results", payload.action))
            } else if let Some(service) = resolver.by_repository(&url) {
                let conclusion = run.conclusion.unwrap_or_else(|| "none".to_owned());
                Mapped::Signal {
                    service,
                    signal: Signal::Suite(SuiteFinished {
                        suite: run.name.filter(|n| !n.is_empty()).unwrap_or_else(|| "workflow".to_owned()),
                        passed: conclusion == "success",
                        outcome: conclusion,
                        version: None,
                        chain_id: None,
                        commit: Some(run.head_sha),
                        branch: run.head_branch,
                        origin: origin(&url),
                    }),
                }
            } else {
                no_service(&url)
            }
        }
        "check_suite" => {
            let payload: CheckSuiteEvent = typed(event, &value)?;
            let suite = payload.check_suite;
            let url = payload.repository.html_url;
            if payload.action != "completed" {
                Mapped::Ignored(format!("check_suite {}: only completed check suites are suite results", payload.action))
            } else if let Some(service) = resolver.by_repository(&url) {
                let conclusion = suite.conclusion.unwrap_or_else(|| "none".to_owned());
                Mapped::Signal {
                    service,
                    signal: Signal::Suite(SuiteFinished {
                        suite: suite.app.slug.or(suite.app.name).unwrap_or_else(|| "check-suite".to_owned()),
                        passed: conclusion == "success",
                        outcome: conclusion,
                        version: None,
                        chain_id: None,
                        commit: Some(suite.head_sha),
                        branch: suite.head_branch,
                        origin: origin(&url),
                    }),
                }
            } else {
                no_service(&url)
            }
        }
        "deployment_status" => {
            let payload: DeploymentStatusEvent = typed(event, &value)?;
            let url = payload.repository.html_url;
            let state = payload.deployment_status.state;
            let deployment = payload.deployment;
            match (state.as_str(), resolver.by_repository(&url), resolver.environment(&deployment.environment)) {
                ("success" | "failure" | "error", None, _) => no_service(&url),
                ("success" | "failure" | "error", _, Err(reason)) => Mapped::Ignored(reason),
                ("success", Some(service), Ok(env)) => Mapped::Deployed {
                    env,
                    service,
                    running: Some(Running { version: None, artifact: None, commit: Some(deployment.sha) }),
                },
                ("failure" | "error", Some(service), Ok(env)) => Mapped::IncidentOpened(IncidentOpened {
                    incident: format!("github-deployment-{}", deployment.id),
                    description: payload.deployment_status.description.filter(|d| !d.is_empty()).unwrap_or_else(|| {
                        format!("deployment {} of {} to {} ended {state}", deployment.id, deployment.sha, deployment.environment)
                    }),
                    env,
                    service: Some(service),
                    origin: origin(&url),
                }),
                (other, _, _) => Mapped::Ignored(format!(
                    "deployment_status {other}: only success (inventory) and failure or error (incident) are recorded"
                )),
            }
        }
        "push" => {
            let payload: PushEvent = typed(event, &value)?;
            let url = payload.repository.html_url;
            match payload.reference.strip_prefix("refs/heads/") {
                None => Mapped::Ignored(format!("push to {}: only branch pushes give commit ranges", payload.reference)),
                Some(_) if payload.deleted => Mapped::Ignored(format!("push deleting {}: nothing to record", payload.reference)),
                Some(branch) if !resolver.protected(branch) => Mapped::Ignored(format!(
                    "push to {branch:?}, which is not protected (policy.protected_branches: {}): only protected branches are released",
                    resolver.catalog().policy.protected_branches.join(", ")
                )),
                Some(branch) => match resolver.by_repository(&url) {
                    None => no_service(&url),
                    Some(service) => Mapped::Signal {
                        service,
                        signal: Signal::Commits(CommitsPushed {
                            branch: branch.to_owned(),
                            before: payload.before,
                            after: payload.after,
                            commits: payload
                                .commits
                                .into_iter()
                                .map(|c| PushedCommit {
                                    id: c.id,
                                    author: c.author.and_then(|a| a.username.or(a.name)),
                                    message: c.message.lines().next().unwrap_or_default().to_owned(),
                                    timestamp: c
                                        .timestamp
                                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                                        .map(|t| t.with_timezone(&chrono::Utc)),
                                })
                                .collect(),
                            origin: origin(&url),
                        }),
                    },
                },
            }
        }
        // A merged pull request brings its head commit (and, unless it was rebased, a merge or
        // squash commit) to the base branch; its author is who GitHub says opened it. Who
        // merged it is not an author.
        "pull_request" => {
            let payload: PullRequestEvent = typed(event, &value)?;
            let url = payload.repository.html_url;
            let pr = payload.pull_request;
            let branch = pr.base.reference;
            if payload.action != "closed" || !pr.merged {
                Mapped::Ignored(format!(
                    "pull_request {} (merged: {}): only a merged pull request brings commits to a branch",
                    payload.action, pr.merged
                ))
            } else if !resolver.protected(&branch) {
                Mapped::Ignored(format!(
                    "pull request #{} merged into {branch:?}, which is not protected (policy.protected_branches: {}): only protected branches are released",
                    pr.number,
                    resolver.catalog().policy.protected_branches.join(", ")
                ))
            } else {
                match resolver.by_repository(&url) {
                    None => no_service(&url),
                    Some(service) => {
                        let message = format!("#{} {}", pr.number, pr.title.lines().next().unwrap_or_default());
                        let mut commits = vec![PushedCommit { id: pr.head.sha.clone(), author: Some(pr.user.login.clone()), message: message.clone(), timestamp: None }];
                        let after = pr.merge_commit_sha.filter(|sha| !sha.is_empty()).unwrap_or(pr.head.sha);
                        if after != commits[0].id {
                            commits.push(PushedCommit { id: after.clone(), author: Some(pr.user.login), message, timestamp: None });
                        }
                        Mapped::Signal {
                            service,
                            signal: Signal::Commits(CommitsPushed {
                                branch,
                                before: pr.base.sha,
                                after,
                                commits,
                                origin: origin(&url),
                            }),
                        }
                    }
                }
            }
        }
        "workflow_job" => {
            let action = typed::<ActionOnly>(event, &value)?.action.unwrap_or_default();
            Mapped::Ignored(format!(
                "workflow_job {action}: single jobs are not suite results; railyard takes them from completed workflow_run and check_suite events"
            ))
        }
        "deployment" => Mapped::Ignored(
            "deployment: railyard records the outcome from deployment_status events, not the request".to_owned(),
        ),
        other => Mapped::Ignored(format!(
            "railyard does not act on github {other} events (it acts on workflow_run, check_suite, deployment_status, push and merged pull_request)"
        )),
    };
    Ok(Parsed { mapped, delivery })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_published_test_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), signature);
        assert!(verify_signature(secret, body, Some(signature)).is_ok());
        assert_eq!(
            verify_signature(b"wrong", body, Some(signature))
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            verify_signature(secret, b"Hello, World?", Some(signature))
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            verify_signature(secret, body, None).unwrap_err().0.path,
            "X-Hub-Signature-256"
        );
        assert_eq!(
            verify_signature(secret, body, Some("sha1=abc"))
                .unwrap_err()
                .status(),
            401
        );
    }
}
