//! The environment variables each service command reads besides its flags' own, shown after
//! its flags in `--help` (a test checks that every variable the code reads is listed).

/// Variables every service reads: NATS credentials, logs and traces.
macro_rules! common {
    () => {
        "  RAILYARD_NATS_USER, RAILYARD_NATS_PASSWORD or RAILYARD_NATS_PASSWORD_FILE
                                         NATS credentials (a least-privilege user, deploy/nats)
  RAILYARD_NATS_CA                       PEM certificate of the CA that signed the NATS servers'
                                         certificates; with it TLS is required (tls:// URLs too)
  RAILYARD_AUTHORITY_TRUST               public keys of the planner and promoter (planner:<hex>,promoter:<hex>);
                                         unset: any NATS user's approval or step counts
  RAILYARD_AUTHORITY_KEY_FILE            the planner's or promoter's signing key (railyard authority key)
  RUST_LOG                               log filter (default info)
  RAILYARD_TRACE_FILTER                  which spans are exported
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME
                                         OpenTelemetry export of traces (off when unset)"
    };
}

macro_rules! header {
    () => {
        "Environment (besides the flags' own variables above):\n"
    };
}

macro_rules! intake {
    () => {
        "  RAILYARD_GITHUB_WEBHOOK_SECRET[_FILE]  GitHub webhook secret (HMAC-SHA256); unset: GitHub webhooks are refused
  RAILYARD_GITLAB_WEBHOOK_TOKEN[_FILE]   GitLab webhook token; unset: GitLab hooks are refused
  RAILYARD_INTAKE_BODY_LIMIT             largest request body intake reads, in bytes
  RAILYARD_TRUSTED_PROXIES               proxies whose X-Forwarded-For names a request's origin
                                         (addresses or CIDR blocks, comma-separated; default none:
                                         the origin is the socket's peer)
  RAILYARD_INTAKE_REJECTION_SAMPLE       unauthenticated refusals logged per origin (default 10/1m;
                                         all are counted in railyard_intake_unauthenticated_total)
  RAILYARD_INTAKE_REJECTION_SAMPLE_TOTAL unauthenticated refusals logged from all origins (default 100/1m)
"
    };
}

macro_rules! promoter {
    () => {
        "  RAILYARD_SECRET_<NAME>                 the value of {secret:NAME} in deploy, gate and rollback commands
  RAILYARD_SLACK_SIGNING_SECRET          the Slack app's signing secret; with it approvals from Slack are served at /v1/slack/interactions
  RAILYARD_SLACK_SIGNING_SECRET_FILE     a file holding it (wins over the variable)
  RAILYARD_SLACK_RESPONSE_URL_PREFIX     where Slack's response_url may point (default https://hooks.slack.com/)
"
    };
}

macro_rules! notify {
    () => {
        "  RAILYARD_SLACK_TOKEN                   Slack bot token (xoxb-…); with it the notifier runs
"
    };
}

macro_rules! feedback {
    () => {
        "  RAILYARD_UI_URL                        the console's URL that GitHub deployments and CDEvents link to (default: the dev listener)
  RAILYARD_GITHUB_TOKEN                  GitHub token for deployments and commit statuses; with it (or an App) the write-back runs
  RAILYARD_GITHUB_APP_ID                 a GitHub App's id, with RAILYARD_GITHUB_APP_KEY_FILE (its private key, PEM)
  RAILYARD_GITHUB_APP_KEY_FILE           the App's private key file
  RAILYARD_GITHUB_APP_INSTALLATION_ID    the App's installation (else looked up per repository owner)
  RAILYARD_GITHUB_AUTH_FILE              a TOML file of tokens or Apps per repository owner
  RAILYARD_GITHUB_API_URL                GitHub's API (default https://api.github.com; GitHub Enterprise: https://HOST/api/v3)
  RAILYARD_GITHUB_WEB_URL                GitHub's web address (default https://github.com)
  RAILYARD_CDEVENTS_SINK_URL             where CDEvents out are POSTed (CloudEvents over HTTP); with it (or a subject) they run
  RAILYARD_CDEVENTS_SINK_TOKEN           a bearer token for the sink
  RAILYARD_CDEVENTS_MODE                 binary (default) or structured
  RAILYARD_CDEVENTS_VERSION              0.4.1 or 0.5.1 (default)
  RAILYARD_CDEVENTS_SUBJECT              the NATS subject they are also published on (default railyard.out.cdevents; off for none)
  RAILYARD_CDEVENTS_SOURCE               the events' source (default RAILYARD_UI_URL)
"
    };
}

/// `railyard dev`: every service, plus the embedded nats-server.
pub const DEV: &str = concat!(
    header!(),
    intake!(),
    promoter!(),
    notify!(),
    feedback!(),
    "  NATS_SERVER_BIN                        the nats-server binary to embed (else nats-server on PATH)\n",
    "  RAILYARD_AUDIT_SIGNING_KEY             the audit checkpoints' signing key file (default <data-dir>/audit-signing.key, created when absent)\n",
    "  RAILYARD_AUDIT_CACHE_MB                the audit store's page cache in MiB (default 512; audit serve: --cache-mb)\n",
    "  RAILYARD_REPLICA_ID, RAILYARD_LEADER_TTL
                                         read by railyard planner, notify and audit serve (--replica-id,
                                         --leader-ttl, default hostname-pid and 10s): one replica leads by a
                                         lease, the others stand by; dev runs one of each and takes no lease\n",
    common!()
);

/// `railyard intake`.
pub const INTAKE: &str = concat!(header!(), intake!(), common!());

/// `railyard promoter`.
pub const PROMOTER: &str = concat!(header!(), promoter!(), common!());

/// `railyard notify`.
pub const NOTIFY: &str = concat!(header!(), notify!(), common!());

/// `railyard github` and `railyard cdevents`.
pub const FEEDBACK: &str = concat!(header!(), feedback!(), common!());

/// `railyard planner`, `railyard audit serve` and the other commands that only reach NATS.
pub const SERVICE: &str = concat!(header!(), common!());
