//! Writing as one worker. [`Writer`] stamps envelopes with this worker and the clock and
//! appends them against the release's last sequence, a conflict being an answer (`None`), not
//! an error (and appends inventory changes keyed by the event that caused them); [`Recorder`] records what a running step produces only while the fold still names
//! this worker and attempt, reading the release again after a conflict. What to record is the
//! caller's to decide.

use std::sync::Arc;

use railyard_bus::{AppendError, Bus, Expected};
use railyard_core::event::{GateEvaluated, ServiceDeployed};
use railyard_core::release_state::StepStatus;
use railyard_core::{AggregateId, Envelope, Event, ReleaseId, ReleaseState, SharedClock, StepId};
use tracing::warn;

use crate::cache::{Current, Releases};
use crate::error::PromoterError;
use crate::gate::GateCheck;
use crate::inventory;

/// Appends to release streams as one worker.
#[derive(Debug)]
pub(crate) struct Writer {
    bus: Bus,
    worker: String,
    clock: SharedClock,
}

impl Writer {
    /// A writer signing envelopes as `worker`, stamped on `clock`.
    pub(crate) fn new(bus: Bus, worker: impl Into<String>, clock: SharedClock) -> Writer {
        Writer {
            bus,
            worker: worker.into(),
            clock,
        }
    }

    /// `event` of release `id`, by this worker, now.
    pub(crate) fn envelope(&self, id: &ReleaseId, event: Event) -> Envelope {
        Envelope::new(
            AggregateId::Release(id.clone()),
            &self.worker,
            self.clock.now(),
            event,
        )
    }

    /// Appends `change` to `inventory.<env>` with an event id derived from `cause` and `salt`,
    /// so the same cause records it once ([`inventory::record`]).
    pub(crate) async fn record_inventory(
        &self,
        cause: &Envelope,
        salt: u8,
        change: ServiceDeployed,
    ) -> Result<(), PromoterError> {
        let now = self.clock.now();
        inventory::record(&self.bus, &self.worker, now, cause, salt, change).await?;
        Ok(())
    }

    /// Appends `events` expecting `sequence`; `false` on a conflict.
    pub(crate) async fn append(
        &self,
        release: &ReleaseId,
        sequence: u64,
        events: &[Envelope],
    ) -> Result<bool, PromoterError> {
        Ok(self.append_at(release, sequence, events).await?.is_some())
    }

    /// Appends `events` expecting `sequence`; the new sequence, or `None` on a conflict.
    pub(crate) async fn append_at(
        &self,
        release: &ReleaseId,
        sequence: u64,
        events: &[Envelope],
    ) -> Result<Option<u64>, PromoterError> {
        match self
            .bus
            .append(
                &AggregateId::Release(release.clone()),
                Expected::after(sequence),
                events,
            )
            .await
        {
            Ok(appended) => Ok(Some(appended.sequence)),
            Err(AppendError::Conflict { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

/// Records events about a running step, only while the fold says the step is this worker's.
pub(crate) struct Recorder<'a> {
    writer: &'a Writer,
    releases: &'a Releases,
    step: StepId,
    attempt: u32,
    cause: Envelope,
    release: ReleaseId,
    known: Option<Current>,
}

impl<'a> Recorder<'a> {
    /// Records about attempt `attempt` of `step`, which `cause` started, of the release
    /// `known` is the latest copy of.
    pub(crate) fn new(
        writer: &'a Writer,
        releases: &'a Releases,
        known: Current,
        step: StepId,
        attempt: u32,
        cause: Envelope,
    ) -> Recorder<'a> {
        Recorder {
            writer,
            releases,
            release: known.state.id.clone(),
            step,
            attempt,
            cause,
            known: Some(known),
        }
    }

    fn ours(&self, state: &ReleaseState) -> bool {
        matches!(
            state.steps.get(&self.step),
            Some(StepStatus::Running { worker, attempt })
                if *worker == self.writer.worker && *attempt == self.attempt
        )
    }

    /// Appends the events `build` makes from the current state; `false` when the step is no
    /// longer this worker's (taken over, release ended) or `build` declines.
    pub(crate) async fn record(
        &mut self,
        build: impl Fn(&ReleaseState) -> Option<Vec<Event>>,
    ) -> Result<bool, PromoterError> {
        loop {
            // One task of this worker at a time decides on and appends to the release.
            let _writing = self.releases.writing(&self.release).await;
            let current = match self.known.take() {
                // Another task of this worker may have appended since: its copy spares a
                // conflict.
                Some(known) => self.releases.freshest(known),
                None => match self.releases.load(&self.release).await? {
                    Some(current) => current,
                    None => return Ok(false),
                },
            };
            if !self.ours(&current.state) {
                return Ok(false);
            }
            let Some(events) = build(&current.state) else {
                return Ok(false);
            };
            let envelopes: Vec<Envelope> = events
                .into_iter()
                .map(|e| {
                    self.writer
                        .envelope(&self.release, e)
                        .caused_by(&self.cause)
                })
                .collect();
            let mut after = current.state.clone();
            for envelope in &envelopes {
                match ReleaseState::apply(Some(after), envelope) {
                    Ok(next) => after = next,
                    Err(error) => {
                        warn!(release = %self.release, step = %self.step, %error, "not recording: the release no longer allows it");
                        return Ok(false);
                    }
                }
            }
            match self
                .writer
                .append_at(&self.release, current.sequence, &envelopes)
                .await?
            {
                Some(sequence) => {
                    let mut events = current.events;
                    events.extend(envelopes.into_iter().map(Arc::new));
                    let known = Current {
                        state: after,
                        events,
                        sequence,
                        trace: current.trace,
                    };
                    self.releases.remember(&known);
                    self.known = Some(known);
                    return Ok(true);
                }
                None => continue,
            }
        }
    }

    /// The release as this recorder last appended or read it.
    pub(crate) fn into_known(self) -> Option<Current> {
        self.known
    }

    /// Records `check` as `gate.evaluated`. `Lost` when the step is no longer this worker's,
    /// and when the record cannot be written: either way the step stops here unrecorded, and
    /// a step left running with a free lease is offered again by a sweep.
    pub(crate) async fn gate(&mut self, check: &GateCheck) -> Result<(), Lost> {
        let event = Event::GateEvaluated(GateEvaluated {
            step: self.step.clone(),
            gate: check.name.clone(),
            passed: check.passed,
            observed: check.observed.clone(),
            expected: check.expected.clone(),
        });
        match self.record(|_| Some(vec![event.clone()])).await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(Lost),
        }
    }
}

/// The step is no longer this worker's: it stops where it is.
#[derive(Debug)]
pub(crate) struct Lost;
