//! A refused release: every reason, each naming who and what breaks, with its remedy in words
//! and, where the remedy is mechanical, as a [`Fix`].

use railyard_core::names::{EnvName, ReleaseId};
use railyard_core::plan::Refusal;

use crate::fix::Fix;

/// One reason a release cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The reason and remedy, as recorded in `release.rejected`.
    pub refusal: Refusal,
    /// The remedy as data, when it is mechanical.
    pub fix: Option<Fix>,
}

impl Refused {
    pub(crate) fn new(
        rule: &str,
        env: Option<&EnvName>,
        reason: String,
        remedy: String,
        fix: Option<Fix>,
    ) -> Refused {
        Refused {
            refusal: Refusal {
                rule: rule.to_owned(),
                env: env.cloned(),
                reason,
                remedy,
                release: None,
            },
            fix,
        }
    }
}

/// Why a release was refused: every reason, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", summary(.release, .reasons))]
pub struct Refusals {
    /// The release refused.
    pub release: ReleaseId,
    /// Hash of the catalog the decision was made from.
    pub catalog_hash: String,
    /// Every reason.
    pub reasons: Vec<Refused>,
}

fn summary(release: &ReleaseId, reasons: &[Refused]) -> String {
    match reasons {
        [] => format!("release {release} is refused"),
        [one] => format!(
            "release {release} is refused: {}: {}",
            one.refusal.reason, one.refusal.remedy
        ),
        [first, rest @ ..] => format!(
            "release {release} is refused for {} reasons, first: {}: {}",
            rest.len() + 1,
            first.refusal.reason,
            first.refusal.remedy
        ),
    }
}

impl Refusals {
    /// The reasons as recorded in `release.rejected`.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.reasons.iter().map(|r| r.refusal.clone()).collect()
    }

    /// The mechanical fixes, when every reason has one; `None` otherwise.
    pub fn fixes(&self) -> Option<Vec<&Fix>> {
        self.reasons.iter().map(|r| r.fix.as_ref()).collect()
    }
}

/// Collects refusals, dropping exact duplicates and keeping first-seen order.
#[derive(Default)]
pub(crate) struct RefusalLog {
    pub items: Vec<Refused>,
    seen: std::collections::BTreeSet<Refusal>,
}

impl RefusalLog {
    pub fn push(&mut self, r: Refused) {
        if self.seen.insert(r.refusal.clone()) {
            self.items.push(r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
