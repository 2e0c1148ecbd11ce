//! The worker's read model: the releases in flight (planned and not ended), with the stream
//! sequence of their plan and the releases they wait for, plus who waits on whom.
//! The dispatcher reads it for its sweeps and to find who waits for a release.

use std::collections::BTreeSet;

use railyard_core::{AggregateId, Envelope, Event, ReleaseId};
use railyard_store::{Projection, ProjectionError, ProjectionStore, StoreError, Update};
use serde::{Deserialize, Serialize};

const ACTIVE: &str = "active/";
const WAITERS: &str = "waiters/";

/// A release in flight as the worker tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// Stream sequence of its `release.planned`.
    pub sequence: u64,
    /// Releases its plan waits for.
    pub waits_on: BTreeSet<ReleaseId>,
}

/// The projection.
#[derive(Debug, Default)]
pub struct PromoterView;

impl Projection for PromoterView {
    fn name(&self) -> &str {
        "promoter"
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        sequence: u64,
        envelopes: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for envelope in envelopes {
            let AggregateId::Release(id) = &envelope.aggregate else {
                continue;
            };
            let key = format!("{ACTIVE}{id}");
            match &envelope.event {
                Event::ReleasePlanned(p) => {
                    let waits_on: BTreeSet<ReleaseId> = p
                        .plan
                        .external_edges
                        .iter()
                        .map(|e| e.release.clone())
                        .collect();
                    for other in &waits_on {
                        update.put(format!("{WAITERS}{other}/{id}"), id.as_str());
                    }
                    update.put_json(key, &Active { sequence, waits_on })?;
                }
                Event::ReleaseCompleted(_)
                | Event::ReleaseRolledBack(_)
                | Event::ReleaseCancelled(_)
                | Event::ReleaseRejected(_) => {
                    if let Some(active) = update.get_json::<Active>(&key)? {
                        for other in &active.waits_on {
                            update.remove(format!("{WAITERS}{other}/{id}"));
                        }
                        update.remove(key);
                    }
                }
                // Steps come and go without changing what is in flight: nothing to write (a
                // read and a write per event for every worker were a tenth of its time).
                _ => {}
            }
        }
        Ok(())
    }
}

/// Every release in flight.
pub async fn active(
    view: &ProjectionStore<PromoterView>,
) -> Result<Vec<(ReleaseId, Active)>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in view.scan_prefix(ACTIVE).await? {
        let name = String::from_utf8_lossy(&key[ACTIVE.len()..]).into_owned();
        if let (Ok(id), Ok(active)) = (ReleaseId::new(name), serde_json::from_slice(&value)) {
            out.push((id, active));
        }
    }
    Ok(out)
}

/// The releases whose plans wait for `release`.
pub async fn waiters(
    view: &ProjectionStore<PromoterView>,
    release: &ReleaseId,
) -> Result<Vec<ReleaseId>, StoreError> {
    let prefix = format!("{WAITERS}{release}/");
    Ok(view
        .scan_prefix(&prefix)
        .await?
        .into_iter()
        .filter_map(|(_, waiter)| {
            ReleaseId::new(String::from_utf8_lossy(&waiter).into_owned()).ok()
        })
        .collect())
}
