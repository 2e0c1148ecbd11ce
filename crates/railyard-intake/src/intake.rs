//! [`Intake`]: the door-independent core shared by HTTP and NATS. It authenticates and parses
//! an input, records a refusal in the rejection log (unauthenticated ones counted, and only
//! sampled into the log per origin), de-duplicates by delivery id, appends the mapped event,
//! and — when a signal completes a change or a group — appends `release.requested` exactly
//! once (`Expected::NoEvents` on the release aggregate).
//!
//! Everything after parsing runs in a task of its own, so a caller that goes away (a closed
//! connection) never leaves it half done.
//!
//! De-duplication costs no write of its own for signals (the CDEvents and webhook inputs that
//! go to `signal.<service>`, nearly all of intake's traffic): the signal *is* the record of its
//! delivery. Its `causation_id` is [`input_id`] of the delivery id, the service's memo knows the
//! inputs of every signal in the aggregate, and the append expects the memo's last sequence, so
//! of two intakes storing one delivery exactly one append lands; the other conflicts, catches
//! up, finds the input and answers `duplicate`. A delivery is therefore a duplicate exactly when
//! its signal is in the stream, for as long as the stream keeps it, across restarts. Other
//! inputs with a delivery id (inventory, incidents, release submissions with an
//! `Idempotency-Key`) go to aggregates intake does not fold: their id is claimed in
//! `railyard-deliveries` before the append and settled as stored (7 days) after it, or released
//! when the append failed, so the retry is accepted.
//!
//! Each service's signal state is a memo of the fold of `signal.<service>`: it is loaded from
//! the stream on first use, and every signal append expects the memo's last sequence, so a
//! conflict (another intake appended) catches it up from the stream. Nothing lives only in
//! memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use railyard_bus::{
    AppendError, Bus, BusError, ClaimedDelivery, DeliveryClaim, Expected, Rejection,
};
use railyard_core::event::{ReleaseRequested, ServiceDeployed};
use railyard_core::inventory::RunningService;
use railyard_core::{AggregateId, Envelope, Event, ReleaseFile, ReleaseId, ServiceName};
use railyard_http::{Origin, Role};
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::answer::{Answer, Refused};
use crate::config::IntakeConfig;
use crate::mapped::{Mapped, Parsed, Resolver, Running, Signal};
use crate::policy::{SignalState, release_for};
use crate::sample::Sampler;
use crate::{cdevents, github, gitlab};

/// How often a signal append is retried after conflicts with other intakes.
const APPEND_ATTEMPTS: usize = 8;
/// Most signals appended in one message.
const MAX_BATCH: usize = 32;

/// Request headers with lowercase names, from HTTP or NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// Headers from `(name, value)` pairs (names are lowercased).
    pub fn new<N: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Headers {
        Headers(
            pairs
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
        )
    }

    /// From an HTTP header map (values that are not visible ASCII are dropped).
    pub fn from_http(map: &axum::http::HeaderMap) -> Headers {
        Headers::new(
            map.iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?.to_owned()))),
        )
    }

    /// From NATS message headers.
    pub fn from_nats(map: &railyard_bus::HeaderMap) -> Headers {
        Headers::new(map.iter().flat_map(|(n, values)| {
            let name: &str = n.as_ref();
            values
                .iter()
                .map(move |v| (name.to_owned(), v.as_str().to_owned()))
        }))
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type of `content-type`, lowercase, without parameters.
    pub fn content_type(&self) -> String {
        self.get("content-type")
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    }
}

/// The door an input came through; names its rejection-log subject and its metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `POST /v1/cdevents`.
    CdEvents,
    /// `railyard.intake.cdevents`.
    Nats,
    /// `POST /v1/webhooks/github`.
    GitHub,
    /// `POST /v1/webhooks/gitlab`.
    GitLab,
    /// `POST /v1/releases`.
    Releases,
}

impl Door {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::CdEvents => "cdevents",
            Door::Nats => "nats",
            Door::GitHub => "github",
            Door::GitLab => "gitlab",
            Door::Releases => "releases",
        }
    }
}

/// The id of the input with delivery id `key` (`cdevents:<source>:<id>`, `github:<delivery>`,
/// ...): a name-based UUID (version 8, from SHA-256), the `causation_id` of the signal that
/// input became. The same delivery always has the same input id, so a signal in the stream
/// says which delivery it stored.
pub fn input_id(key: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"railyard-intake-input\0")
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// What a `release.requested` is caused by: the signal that completed the change.
#[derive(Debug, Clone)]
struct Cause {
    event_id: Uuid,
    correlation_id: Uuid,
    actor: String,
}

impl Cause {
    fn of(envelope: &Envelope) -> Cause {
        Cause {
            event_id: envelope.event_id,
            correlation_id: envelope.correlation_id,
            actor: envelope.actor.clone(),
        }
    }
}

/// A stored signal of a delivery: enough to decide again when the delivery comes back.
#[derive(Debug, Clone)]
struct StoredInput {
    cause: Cause,
    /// The versions whose readiness it changed when it was folded.
    touched: BTreeSet<String>,
}

#[derive(Debug)]
struct SignalMemo {
    loaded: bool,
    last_sequence: u64,
    state: SignalState,
    /// The inputs (by [`input_id`]) whose signal is in the aggregate.
    inputs: HashMap<Uuid, StoredInput>,
}

impl SignalMemo {
    fn new(service: ServiceName) -> SignalMemo {
        SignalMemo {
            loaded: false,
            last_sequence: 0,
            state: SignalState::new(service),
            inputs: HashMap::new(),
        }
    }

    /// Folds one stored event; returns the versions whose readiness it may change.
    fn apply(&mut self, envelope: &Envelope) -> BTreeSet<String> {
        let touched = self.state.apply(envelope);
        if let Some(input) = envelope.causation_id {
            self.inputs.insert(
                input,
                StoredInput {
                    cause: Cause::of(envelope),
                    touched: touched.clone(),
                },
            );
        }
        touched
    }
}

/// What became of a signal handed to the service's append queue.
#[derive(Debug)]
struct SignalStored {
    /// The versions whose readiness it may change.
    touched: BTreeSet<String>,
    /// Its input's signal was in the stream already (nothing was appended): the stored
    /// signal, to decide again from.
    duplicate_of: Option<Cause>,
}

/// A signal waiting to be appended, and where its outcome goes.
struct Pending {
    envelope: Envelope,
    done: oneshot::Sender<Result<SignalStored, String>>,
}

/// One service's memo and its queue of signals to append. Concurrent signals of a service are
/// appended together, as one message (group commit): whoever holds the memo appends every
/// queued signal, so a busy service costs one round trip per batch, not per signal.
struct ServiceSlot {
    memo: AsyncMutex<SignalMemo>,
    pending: Mutex<Vec<Pending>>,
}

type Labels = Vec<(String, String)>;

type FlightMap = Arc<Mutex<HashMap<String, watch::Receiver<()>>>>;

/// The deliveries this process is storing right now: a second request for one waits for the
/// first to finish (then finds it stored, or claims it itself when the first failed).
#[derive(Default)]
struct Flights(FlightMap);

/// This process's turn at one delivery; ends (waking the next) when dropped.
struct Flight {
    key: String,
    flights: FlightMap,
    _done: watch::Sender<()>,
}

impl Flights {
    async fn enter(&self, key: &str) -> Flight {
        loop {
            let mut running = {
                let mut flights = self.0.lock().expect("flights lock");
                match flights.get(key) {
                    Some(running) => running.clone(),
                    None => {
                        let (done, running) = watch::channel(());
                        flights.insert(key.to_owned(), running);
                        return Flight {
                            key: key.to_owned(),
                            flights: self.0.clone(),
                            _done: done,
                        };
                    }
                }
            };
            // Ends (with an error) when the running flight drops its sender.
            let _ = running.changed().await;
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights.lock().expect("flights lock").remove(&self.key);
    }
}

struct Inner {
    bus: Bus,
    config: IntakeConfig,
    /// Who this intake is in delivery claims.
    holder: String,
    signals: Mutex<HashMap<ServiceName, Arc<ServiceSlot>>>,
    requested: Mutex<HashSet<ReleaseId>>,
    flights: Flights,
    sampler: Mutex<Sampler>,
    answers: Family<Labels, Counter>,
    unauthenticated: Family<Labels, Counter>,
    unlogged: Family<Labels, Counter>,
    claims: Family<Labels, Counter>,
}

/// Trigger intake over one bus; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("bus", &self.inner.bus)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> Refused {
    Refused::unavailable(format!(
        "nats did not store the event ({error}): retry the delivery"
    ))
}

fn door_label(door: Door) -> Labels {
    vec![("door".to_owned(), door.as_str().to_owned())]
}

tokio::task_local! {
    /// Set inside [`owned_task`]: the caller's future is a task nobody drops.
    static OWNED_TASK: ();
}

/// Runs `request` as a task that is never dropped before it ends (the NATS door spawns one per
/// request and nothing cancels it), so the work inside need not be detached again: one task
/// and one wake-up fewer per input.
pub(crate) async fn owned_task<F: Future>(request: F) -> F::Output {
    OWNED_TASK.scope((), request).await
}

/// Runs `work` in a task of its own (in the current span), so that a caller that goes away
/// — a closed connection drops the request's future — never leaves it half done. Inside an
/// [`owned_task`] it runs in place.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, Refused>> + Send + 'static,
) -> Result<T, Refused> {
    if OWNED_TASK.try_with(|()| ()).is_ok() {
        return work.await;
    }
    tokio::spawn(work.instrument(tracing::Span::current()))
        .await
        .map_err(|error| unavailable(format!("the task storing the input failed: {error}")))?
}

impl Intake {
    /// Intake over `bus` (whose topology must exist: `Bus::ensure_topology`).
    pub fn new(config: IntakeConfig, bus: Bus) -> Intake {
        let answers = config.metrics.register(
            "intake_answers",
            "Inputs answered by intake, by door and outcome or status",
            Family::<Labels, Counter>::default(),
        );
        let unauthenticated = config.metrics.register(
            "intake_unauthenticated",
            "Requests intake refused before their sender was authenticated (401, 403, a bad webhook signature or token, a webhook body refused before its signature was checked), by door",
            Family::<Labels, Counter>::default(),
        );
        let unlogged = config.metrics.register(
            "intake_rejections_unlogged",
            "Unauthenticated refusals counted but not written to the rejection log, because their origin (or all origins together) was over the sampling rate, by door",
            Family::<Labels, Counter>::default(),
        );
        let claims = config.metrics.register(
            "intake_delivery_claims",
            "Delivery ids claimed while their events were appended, by how the claim ended: stored (a redelivery is a duplicate), released (the append failed; a retry is accepted) or unsettled (nats did not answer; a redelivery is answered 503 until the claim expires)",
            Family::<Labels, Counter>::default(),
        );
        let sampler = Mutex::new(Sampler::new(config.rejection_sampling));
        Intake {
            inner: Arc::new(Inner {
                bus,
                config,
                holder: format!("intake-{}", uuid::Uuid::new_v4()),
                signals: Mutex::new(HashMap::new()),
                requested: Mutex::new(HashSet::new()),
                flights: Flights::default(),
                sampler,
                answers,
                unauthenticated,
                unlogged,
                claims,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IntakeConfig {
        &self.inner.config
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    fn resolver(&self) -> Resolver<'_> {
        Resolver::new(&self.inner.config.catalog)
    }

    /// A CDEvent from a publisher (HTTP, `actor` is the token's identity) or from NATS.
    pub async fn cdevent(
        &self,
        door: Door,
        actor: &str,
        origin: &Origin,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Answer, Refused> {
        let parsed = cdevents::parse(&self.resolver(), headers, body);
        self.finish(door, actor, origin, body, parsed).await
    }

    /// A GitHub delivery: signature first, then parsing.
    pub async fn github(
        &self,
        origin: &Origin,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Answer, Refused> {
        let parsed = match &self.inner.config.github_secret {
            None => Err(Refused::unauthenticated(
                "github webhooks are not enabled here: set RAILYARD_GITHUB_WEBHOOK_SECRET (or _FILE) on intake",
                "X-Hub-Signature-256",
            )),
            Some(secret) => github::verify_signature(
                secret.expose(),
                body,
                headers.get(github::SIGNATURE_HEADER),
            )
            .and_then(|()| github::parse(&self.resolver(), headers, body)),
        };
        self.finish(Door::GitHub, "github", origin, body, parsed)
            .await
    }

    /// A GitLab delivery: token first, then parsing.
    pub async fn gitlab(
        &self,
        origin: &Origin,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Answer, Refused> {
        let parsed = match &self.inner.config.gitlab_token {
            None => Err(Refused::unauthenticated(
                "gitlab webhooks are not enabled here: set RAILYARD_GITLAB_WEBHOOK_TOKEN (or _FILE) on intake",
                "X-Gitlab-Token",
            )),
            Some(token) => gitlab::verify_token(token.expose(), headers.get("x-gitlab-token"))
                .and_then(|()| gitlab::parse(&self.resolver(), headers, body)),
        };
        self.finish(Door::GitLab, "gitlab", origin, body, parsed)
            .await
    }

    /// Checks a bearer token for `role`; a refusal is recorded in the rejection log.
    pub async fn authenticate(
        &self,
        door: Door,
        origin: &Origin,
        authorization: Option<&str>,
        role: Role,
    ) -> Result<String, Refused> {
        let checked = self
            .inner
            .config
            .tokens
            .authenticate(authorization)
            .and_then(|identity| identity.require(role).map(|()| identity.name));
        match checked {
            Ok(name) => Ok(name),
            Err(error) => Err(self.refuse(door, origin, b"", Refused(error)).await),
        }
    }

    /// Records a refusal (4xx) in the rejection log and counts it; returns it for answering.
    /// A 401 or 403 is an unauthenticated sender's: counted, and logged only as a sample
    /// ([`IntakeConfig::rejection_sampling`]).
    pub async fn refuse(
        &self,
        door: Door,
        origin: &Origin,
        body: &[u8],
        refused: Refused,
    ) -> Refused {
        let unauthenticated = matches!(refused.status(), 401 | 403);
        self.refuse_as(door, origin, body, refused, unauthenticated)
            .await
    }

    /// Records a refusal of an input whose sender was not authenticated yet (a webhook body
    /// that is too large or breaks off before its signature could be checked): counted, and
    /// logged only as a sample, like a 401.
    pub async fn refuse_unauthenticated(
        &self,
        door: Door,
        origin: &Origin,
        body: &[u8],
        refused: Refused,
    ) -> Refused {
        self.refuse_as(door, origin, body, refused, true).await
    }

    async fn refuse_as(
        &self,
        door: Door,
        origin: &Origin,
        body: &[u8],
        refused: Refused,
        unauthenticated: bool,
    ) -> Refused {
        self.count(door, &refused.status().to_string());
        if !refused.is_client_error() {
            tracing::warn!(door = door.as_str(), %origin, error = %refused, "input not stored");
            return refused;
        }
        if unauthenticated {
            self.inner
                .unauthenticated
                .get_or_create(&door_label(door))
                .inc();
            let now = self.inner.config.clock.now();
            let logged = self
                .inner
                .sampler
                .lock()
                .expect("sampler lock")
                .admit(&origin.limit_key(), now);
            if !logged {
                self.inner.unlogged.get_or_create(&door_label(door)).inc();
                tracing::debug!(door = door.as_str(), %origin, status = refused.status(), "unauthenticated input refused (over the sampling rate: counted, not logged)");
                return refused;
            }
        }
        tracing::info!(door = door.as_str(), %origin, status = refused.status(), error = %refused, "input refused");
        let rejection = Rejection::new(door.as_str(), origin.as_str(), refused.to_string(), body);
        if let Err(error) = self.inner.bus.record_rejection(&rejection).await {
            tracing::warn!(door = door.as_str(), %error, "cannot record a rejection");
        }
        refused
    }

    fn count(&self, door: Door, outcome: &str) {
        let mut labels = door_label(door);
        labels.push(("outcome".to_owned(), outcome.to_owned()));
        self.inner.answers.get_or_create(&labels).inc();
    }

    /// Runs `work` (which appends) detached from the caller. With a delivery id, only after
    /// claiming it (one request per id in this process at a time; another intake's claim is
    /// answered 503, a stored one `duplicate`), and the claim is settled before answering:
    /// stored when `work` succeeded, released when it failed so that the retry is accepted.
    async fn stored_once<W>(&self, delivery: Option<String>, work: W) -> Result<Answer, Refused>
    where
        W: Future<Output = Result<Answer, Refused>> + Send + 'static,
    {
        let Some(key) = delivery else {
            return detached(work).await;
        };
        let this = self.clone();
        detached(async move {
            let _flight = this.inner.flights.enter(&key).await;
            let config = &this.inner.config;
            let claimed = this
                .inner
                .bus
                .claim_delivery(
                    &key,
                    &this.inner.holder,
                    config.clock.now(),
                    config.delivery_claim_ttl,
                )
                .await
                .map_err(unavailable)?;
            let claim = match claimed {
                DeliveryClaim::Claimed(claim) => claim,
                DeliveryClaim::Stored => return Ok(Answer::duplicate(&key)),
                DeliveryClaim::Pending { holder, expires_at } => {
                    return Err(Refused::unavailable(format!(
                        "delivery {key} is being stored by {holder} right now (its claim ends at {expires_at} at the latest): send it again later; it is stored once"
                    )));
                }
            };
            let result = work.await;
            this.settle(claim, result.is_ok()).await;
            result
        })
        .await
    }

    async fn settle(&self, claim: ClaimedDelivery, stored: bool) {
        let delivery = claim.id().to_owned();
        let settled = if stored {
            let now = self.inner.config.clock.now();
            self.inner.bus.delivery_stored(claim, now).await
        } else {
            self.inner.bus.release_delivery(claim).await
        };
        let outcome = match (&settled, stored) {
            (Err(_), _) => "unsettled",
            (Ok(()), true) => "stored",
            (Ok(()), false) => "released",
        };
        self.inner
            .claims
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
        if let Err(error) = settled {
            tracing::warn!(%delivery, stored, %error, "cannot settle a delivery claim: another intake answers its redeliveries 503 until the claim expires; this one retries it at once");
        }
    }

    async fn finish(
        &self,
        door: Door,
        actor: &str,
        origin: &Origin,
        body: &[u8],
        parsed: Result<Parsed, Refused>,
    ) -> Result<Answer, Refused> {
        let result = match parsed {
            Ok(parsed) => self.apply(parsed, actor).await,
            Err(refused) => Err(refused),
        };
        match result {
            Ok(answer) => {
                self.count(door, answer.outcome.as_str());
                tracing::debug!(door = door.as_str(), %origin, outcome = answer.outcome.as_str(), reason = %answer.reason, "input answered");
                Ok(answer)
            }
            Err(refused) => Err(self.refuse(door, origin, body, refused).await),
        }
    }

    /// Submits a release file (TOML, or JSON when `content_type` says so) as `identity`.
    pub async fn submit_release(
        &self,
        identity: &str,
        origin: &Origin,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Answer, Refused> {
        let result = self.release_from(identity, headers, body).await;
        match result {
            Ok(answer) => {
                self.count(Door::Releases, answer.outcome.as_str());
                Ok(answer)
            }
            Err(refused) => Err(self.refuse(Door::Releases, origin, body, refused).await),
        }
    }

    async fn release_from(
        &self,
        identity: &str,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Answer, Refused> {
        let text = std::str::from_utf8(body).map_err(|error| {
            Refused::malformed(
                format!(
                    "the body is not valid utf-8 (at byte {}): send the release file as utf-8",
                    error.valid_up_to()
                ),
                "",
            )
        })?;
        let json =
            headers.content_type() == "application/json" || text.trim_start().starts_with('{');
        let parsed = if json {
            ReleaseFile::from_json(text)
        } else {
            ReleaseFile::from_toml(text)
        };
        let release = parsed.map_err(|error| {
            let detail = error.to_string();
            if error.path == "release" && error.position.is_some() {
                Refused::malformed(
                    format!("{detail}: send a release file (INTERFACES §4)"),
                    error.path,
                )
            } else {
                Refused::invalid(detail, error.path)
            }
        })?;
        if release.changes.is_empty() {
            return Err(Refused::invalid(
                "a release needs at least one change: add a [[changes]] entry",
                "release.changes",
            ));
        }
        let resolver = self.resolver();
        for (i, change) in release.changes.iter().enumerate() {
            resolver.named(
                change.service.as_str(),
                &format!("release.changes[{i}].service"),
            )?;
        }
        let delivery = headers
            .get("idempotency-key")
            .filter(|k| !k.is_empty())
            .map(|k| format!("release:{identity}:{k}"));
        let this = self.clone();
        let identity = identity.to_owned();
        self.stored_once(delivery, async move {
            this.request_release(&identity, release).await
        })
        .await
    }

    /// Appends `release.requested` for a submitted release.
    async fn request_release(
        &self,
        identity: &str,
        release: ReleaseFile,
    ) -> Result<Answer, Refused> {
        let aggregate = AggregateId::Release(release.id.clone());
        let requested = ReleaseRequested {
            release: release.id.clone(),
            requested_by: identity.to_owned(),
            changes: release.changes,
        };
        let envelope = Envelope::new(
            aggregate.clone(),
            identity,
            self.inner.config.clock.now(),
            Event::ReleaseRequested(requested),
        );
        tracing::Span::current().record("release", release.id.as_str());
        match self
            .inner
            .bus
            .append(
                &aggregate,
                Expected::NoEvents,
                std::slice::from_ref(&envelope),
            )
            .await
        {
            Ok(_) => {
                self.inner
                    .requested
                    .lock()
                    .expect("requested lock")
                    .insert(release.id.clone());
                tracing::info!(release = %release.id, requested_by = identity, "release submitted");
                Ok(Answer::accepted(
                    envelope.event_id,
                    format!("release {} requested by {identity}", release.id),
                ))
            }
            Err(AppendError::Conflict { .. }) => Err(Refused::conflict(
                format!(
                    "release {} already exists: submit it under a new id",
                    release.id
                ),
                "release.id",
            )),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Records what a parsed input means: dedupe, append, trigger policy.
    async fn apply(&self, parsed: Parsed, actor: &str) -> Result<Answer, Refused> {
        let mapped = match parsed.mapped {
            Mapped::Ignored(reason) => return Ok(Answer::ignored(reason)),
            Mapped::ChainSuite(suite) => {
                let chain = suite.chain_id.clone().unwrap_or_default();
                match self.service_of_chain(&chain).await.map_err(unavailable)? {
                    Some(service) => Mapped::Signal {
                        service,
                        signal: Signal::Suite(suite),
                    },
                    None => {
                        return Ok(Answer::ignored(format!(
                            "no artifact event with chainId {chain:?} has arrived, so the service of suite {:?} is unknown: send the artifact event first, or customData.railyard.{{service, version}} with the result",
                            suite.suite
                        )));
                    }
                }
            }
            other => other,
        };
        let this = self.clone();
        let actor = actor.to_owned();
        if let (Mapped::Signal { .. }, Some(key)) = (&mapped, &parsed.delivery) {
            // The signal is the record of its delivery: no claim, one write.
            let key = key.clone();
            return detached(async move {
                let _flight = this.inner.flights.enter(&key).await;
                this.record(mapped, &actor, Some(&key)).await
            })
            .await;
        }
        self.stored_once(parsed.delivery, async move {
            this.record(mapped, &actor, None).await
        })
        .await
    }

    async fn record(
        &self,
        mapped: Mapped,
        actor: &str,
        delivery: Option<&str>,
    ) -> Result<Answer, Refused> {
        match mapped {
            Mapped::Signal { service, signal } => {
                self.record_signal(service, signal, actor, delivery).await
            }
            Mapped::Deployed {
                env,
                service,
                running,
            } => {
                let running = match running {
                    Some(running) => Some(
                        self.running_service(&service, running)
                            .await
                            .map_err(unavailable)?,
                    ),
                    None => None,
                };
                let reason = match &running {
                    Some(r) => format!("inventory of {env}: {service} runs {}", r.version),
                    None => format!("inventory of {env}: {service} removed"),
                };
                let aggregate = AggregateId::Inventory(env.clone());
                let event = Event::ServiceDeployed(ServiceDeployed {
                    env,
                    service,
                    running,
                    databases: Default::default(),
                    release: None,
                });
                self.append_any(aggregate, actor, event, reason).await
            }
            Mapped::IncidentOpened(opened) => {
                let reason = format!("incident {} opened in {}", opened.incident, opened.env);
                let aggregate = AggregateId::Incident(opened.env.clone());
                self.append_any(aggregate, actor, Event::IncidentOpened(opened), reason)
                    .await
            }
            Mapped::IncidentResolved(resolved) => {
                let reason = format!(
                    "incident {} resolved in {}",
                    resolved.incident, resolved.env
                );
                let aggregate = AggregateId::Incident(resolved.env.clone());
                self.append_any(aggregate, actor, Event::IncidentResolved(resolved), reason)
                    .await
            }
            Mapped::Ignored(reason) => Ok(Answer::ignored(reason)),
            Mapped::ChainSuite(suite) => Ok(Answer::ignored(format!(
                "the result of suite {:?} names no service: send customData.railyard.{{service, version}}",
                suite.suite
            ))),
        }
    }

    async fn append_any(
        &self,
        aggregate: AggregateId,
        actor: &str,
        event: Event,
        reason: String,
    ) -> Result<Answer, Refused> {
        let envelope = Envelope::new(
            aggregate.clone(),
            actor,
            self.inner.config.clock.now(),
            event,
        );
        self.inner
            .bus
            .append(&aggregate, Expected::Any, std::slice::from_ref(&envelope))
            .await
            .map_err(unavailable)?;
        tracing::info!(aggregate = %aggregate, event = envelope.event.type_name(), "input recorded");
        Ok(Answer::accepted(envelope.event_id, reason))
    }

    /// What runs, with the contracts of the change it matches when intake knows it.
    async fn running_service(
        &self,
        service: &ServiceName,
        running: Running,
    ) -> Result<RunningService, BusError> {
        let slot = self.slot(service);
        let mut memo = slot.memo.lock().await;
        self.ensure_loaded(service, &mut memo).await?;
        let known = running
            .version
            .as_deref()
            .and_then(|v| memo.state.artifact(v))
            .or_else(|| {
                running
                    .commit
                    .as_deref()
                    .and_then(|c| memo.state.artifact_for_commit(c))
            });
        Ok(match known {
            Some(signal) => {
                let mut service = RunningService::from(&signal.artifact.change);
                if running.artifact.is_some() {
                    service.artifact = running.artifact;
                }
                service
            }
            None => RunningService {
                version: running
                    .version
                    .clone()
                    .or_else(|| running.commit.clone())
                    .or_else(|| running.artifact.clone())
                    .unwrap_or_else(|| "unknown".to_owned()),
                artifact: running.artifact,
                commit: running.commit,
                consumes: Default::default(),
                produces: Default::default(),
                provides: Default::default(),
                requires: Default::default(),
                schema: Default::default(),
                colour: None,
            },
        })
    }

    fn slot(&self, service: &ServiceName) -> Arc<ServiceSlot> {
        self.inner
            .signals
            .lock()
            .expect("signals lock")
            .entry(service.clone())
            .or_insert_with(|| {
                Arc::new(ServiceSlot {
                    memo: AsyncMutex::new(SignalMemo::new(service.clone())),
                    pending: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    async fn ensure_loaded(
        &self,
        service: &ServiceName,
        memo: &mut SignalMemo,
    ) -> Result<(), BusError> {
        if !memo.loaded {
            self.reload(service, memo).await?;
        }
        Ok(())
    }

    /// Brings the memo up to the stream: the whole aggregate when it was never loaded, else
    /// only what was appended after its last sequence.
    async fn reload(&self, service: &ServiceName, memo: &mut SignalMemo) -> Result<(), BusError> {
        if !memo.loaded {
            *memo = SignalMemo::new(service.clone());
        }
        let loaded = self
            .inner
            .bus
            .load_after(&AggregateId::Signal(service.clone()), memo.last_sequence)
            .await?;
        for event in &loaded.events {
            memo.apply(event);
        }
        memo.last_sequence = loaded.last_sequence;
        memo.loaded = true;
        Ok(())
    }

    /// The service whose artifact carried `chain`: from the memos, else after reloading every
    /// catalog service's signals.
    async fn service_of_chain(&self, chain: &str) -> Result<Option<ServiceName>, BusError> {
        let services: Vec<ServiceName> =
            self.inner.config.catalog.services.keys().cloned().collect();
        for refresh in [false, true] {
            for service in &services {
                let slot = self.slot(service);
                let mut memo = slot.memo.lock().await;
                if refresh {
                    self.reload(service, &mut memo).await?;
                } else if !memo.loaded {
                    continue;
                }
                if memo.state.version_for_chain(chain).is_some() {
                    return Ok(Some(service.clone()));
                }
            }
        }
        Ok(None)
    }

    async fn record_signal(
        &self,
        service: ServiceName,
        signal: Signal,
        actor: &str,
        delivery: Option<&str>,
    ) -> Result<Answer, Refused> {
        let event = match signal {
            Signal::Artifact(artifact) => Event::ArtifactPublished(*artifact),
            Signal::Suite(suite) => Event::SuiteFinished(suite),
            Signal::Commits(commits) => Event::CommitsPushed(commits),
        };
        let aggregate = AggregateId::Signal(service.clone());
        let mut envelope = Envelope::new(aggregate, actor, self.inner.config.clock.now(), event);
        envelope.causation_id = delivery.map(input_id);
        let type_name = envelope.event.type_name();
        let event_id = envelope.event_id;
        let cause = Cause::of(&envelope);
        let stored = self.append_signal(&service, envelope).await?;
        if let Some(stored_cause) = stored.duplicate_of {
            // Its signal is stored (by this intake or another); deciding again is harmless
            // (`release.requested` happens once) and finishes what a failed first attempt left.
            for version in &stored.touched {
                self.decide(&service, version, &stored_cause)
                    .await
                    .map_err(unavailable)?;
            }
            let key = delivery.unwrap_or_default();
            tracing::debug!(%service, delivery = key, "signal already stored: a redelivery");
            return Ok(Answer::duplicate(key));
        }
        tracing::info!(%service, event = type_name, %event_id, "signal recorded");
        let mut reasons = vec![format!("{type_name} recorded for {service}")];
        for version in stored.touched {
            reasons.push(
                self.decide(&service, &version, &cause)
                    .await
                    .map_err(unavailable)?,
            );
        }
        Ok(Answer::accepted(event_id, reasons.join("; ")))
    }

    /// Appends `envelope` to `signal.<service>`, in one message with whatever other signals of
    /// the service are queued, expecting the memo's last sequence (a conflict catches the memo
    /// up from the stream and retries). A signal whose input (its `causation_id`) is already in
    /// the aggregate is not appended again: it comes back as a duplicate of the stored one.
    /// Returns the versions whose readiness it may change. Runs inside [`detached`] work, so a
    /// batch it leads is never left half done.
    async fn append_signal(
        &self,
        service: &ServiceName,
        envelope: Envelope,
    ) -> Result<SignalStored, Refused> {
        let slot = self.slot(service);
        let (done, mut outcome) = oneshot::channel();
        slot.pending
            .lock()
            .expect("pending lock")
            .push(Pending { envelope, done });
        loop {
            let mut memo = tokio::select! {
                biased;
                result = &mut outcome => return result.map_err(|_| unavailable("the batch was dropped"))?.map_err(unavailable),
                memo = slot.memo.lock() => memo,
            };
            let batch: Vec<Pending> = {
                let mut pending = slot.pending.lock().expect("pending lock");
                let take = pending.len().min(MAX_BATCH);
                pending.drain(..take).collect()
            };
            if batch.is_empty() {
                // Another holder took ours into its batch; its outcome is on the way.
                drop(memo);
                return outcome
                    .await
                    .map_err(|_| unavailable("the batch was dropped"))?
                    .map_err(unavailable);
            }
            self.append_batch(service, &mut memo, batch).await;
            drop(memo);
        }
    }

    /// Stores one batch of a service's signals (see [`Intake::append_signal`]) and answers
    /// each of them.
    async fn append_batch(
        &self,
        service: &ServiceName,
        memo: &mut SignalMemo,
        batch: Vec<Pending>,
    ) {
        let aggregate = AggregateId::Signal(service.clone());
        let mut batch = batch;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(error) = self.ensure_loaded(service, memo).await {
                return fail(batch, &error.to_string());
            }
            // Inputs already stored are answered as duplicates; a second copy of an input
            // inside the batch rides on the first.
            let mut fresh: Vec<Pending> = Vec::with_capacity(batch.len());
            let mut riders: Vec<(Uuid, Pending)> = Vec::new();
            for pending in batch {
                match pending.envelope.causation_id {
                    Some(input) if memo.inputs.contains_key(&input) => {
                        let stored = &memo.inputs[&input];
                        let _ = pending.done.send(Ok(SignalStored {
                            touched: stored.touched.clone(),
                            duplicate_of: Some(stored.cause.clone()),
                        }));
                    }
                    Some(input) if fresh.iter().any(|p| p.envelope.causation_id == Some(input)) => {
                        riders.push((input, pending));
                    }
                    _ => fresh.push(pending),
                }
            }
            if fresh.is_empty() {
                return;
            }
            let envelopes: Vec<Envelope> = fresh.iter().map(|p| p.envelope.clone()).collect();
            match self
                .inner
                .bus
                .append(&aggregate, Expected::after(memo.last_sequence), &envelopes)
                .await
            {
                Ok(appended) => {
                    memo.last_sequence = appended.sequence;
                    for pending in fresh {
                        let touched = memo.apply(&pending.envelope);
                        let _ = pending.done.send(Ok(SignalStored {
                            touched,
                            duplicate_of: None,
                        }));
                    }
                    for (input, pending) in riders {
                        let stored = &memo.inputs[&input];
                        let _ = pending.done.send(Ok(SignalStored {
                            touched: stored.touched.clone(),
                            duplicate_of: Some(stored.cause.clone()),
                        }));
                    }
                    return;
                }
                Err(AppendError::Conflict { .. }) if attempt < APPEND_ATTEMPTS => {
                    tracing::debug!(%service, attempt, "signal append conflicted; catching up");
                    if let Err(error) = self.reload(service, memo).await {
                        memo.loaded = false;
                        let mut all = fresh;
                        all.extend(riders.into_iter().map(|(_, p)| p));
                        return fail(all, &error.to_string());
                    }
                    batch = fresh;
                    batch.extend(riders.into_iter().map(|(_, p)| p));
                }
                Err(error) => {
                    let mut all = fresh;
                    all.extend(riders.into_iter().map(|(_, p)| p));
                    return fail(all, &error.to_string());
                }
            }
        }
    }

    /// Requests the release of `service`'s change `version` when it (and its group) is ready;
    /// says what it waits for otherwise.
    async fn decide(
        &self,
        service: &ServiceName,
        version: &str,
        cause: &Cause,
    ) -> Result<String, AppendError> {
        let catalog = &self.inner.config.catalog;
        let (readiness, artifact) = {
            let slot = self.slot(service);
            let memo = slot.memo.lock().await;
            (
                memo.state.readiness(catalog, version),
                memo.state.artifact(version).cloned(),
            )
        };
        let Some(artifact) = artifact.filter(|_| readiness.is_ready()) else {
            return Ok(format!("{service} {version}: {}", readiness.describe()));
        };
        let (release, members) = release_for(service, &artifact.artifact);
        if self
            .inner
            .requested
            .lock()
            .expect("requested lock")
            .contains(&release)
        {
            return Ok(format!("release {release} was already requested"));
        }
        let mut changes = vec![artifact.artifact.change.clone()];
        let mut waiting = Vec::new();
        for member in members.iter().filter(|m| *m != service) {
            let slot = self.slot(member);
            let mut memo = slot.memo.lock().await;
            // A fresh read: another intake may have recorded the member's last signal.
            self.reload(member, &mut memo).await?;
            match memo.state.member_of(&release) {
                None => waiting.push(format!("{member} (no artifact for release {release} yet)")),
                Some(signal) => {
                    let ready = memo
                        .state
                        .readiness(catalog, &signal.artifact.change.version);
                    if ready.is_ready() {
                        changes.push(signal.artifact.change.clone());
                    } else {
                        waiting.push(format!(
                            "{member} {} ({})",
                            signal.artifact.change.version,
                            ready.describe()
                        ));
                    }
                }
            }
        }
        if !waiting.is_empty() {
            return Ok(format!(
                "{service} {version} is ready; release {release} waits for {}",
                waiting.join(", ")
            ));
        }
        changes.sort_by(|a, b| a.service.cmp(&b.service));
        let aggregate = AggregateId::Release(release.clone());
        let requested = ReleaseRequested {
            release: release.clone(),
            requested_by: artifact.actor.clone(),
            changes,
        };
        let mut envelope = Envelope::new(
            aggregate.clone(),
            cause.actor.clone(),
            self.inner.config.clock.now(),
            Event::ReleaseRequested(requested),
        );
        envelope.causation_id = Some(cause.event_id);
        envelope.correlation_id = cause.correlation_id;
        tracing::Span::current().record("release", release.as_str());
        let reason = match self
            .inner
            .bus
            .append(
                &aggregate,
                Expected::NoEvents,
                std::slice::from_ref(&envelope),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(%release, services = ?members, "release requested");
                format!("release {release} requested")
            }
            Err(AppendError::Conflict { .. }) => format!("release {release} was already requested"),
            Err(error) => return Err(error),
        };
        self.inner
            .requested
            .lock()
            .expect("requested lock")
            .insert(release);
        Ok(reason)
    }
}

/// Answers every signal of `batch` with `error`.
fn fail(batch: Vec<Pending>, error: &str) {
    for pending in batch {
        let _ = pending.done.send(Err(error.to_owned()));
    }
}

/// Reads a request body of at most `limit` bytes: 413 when over, 400 when it breaks off.
pub async fn read_body(
    body: axum::body::Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes, Refused> {
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Refused::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        // http-body-util's LengthLimitError says "length limit exceeded" somewhere in the chain.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut over = false;
        while let Some(current) = source {
            over |= current.to_string().contains("length limit exceeded");
            source = current.source();
        }
        if over {
            Refused::too_large(limit)
        } else {
            Refused::malformed(
                format!("the body could not be read ({error}): send it again"),
                "",
            )
        }
    })
}
