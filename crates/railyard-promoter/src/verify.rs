//! A step's gates. [`pass`] checks a service's gates (its soaks left out) in catalog order and
//! records each result (`gate.evaluated`) before checking the next, stopping at the first that
//! fails: a canary deploy between its weights and a blue-green deploy before its switch call
//! it. [`verify`] runs a verify step: those gates, then each soak, which checks every other
//! gate again on the clock for the soak's duration. How one gate is evaluated is `gate.rs`'s;
//! what a failed step does to the release is the caller's.

use std::time::Duration;

use railyard_bus::Bus;
use railyard_core::catalog::Gate;

use crate::adapter::{Outcome, Runner, Target, humanize};
use crate::gate::{GateCheck, kind};
use crate::recorder::{Lost, Recorder};

/// Checks `gates` other than soaks, each named `{label}{kind}[{index}]` and recorded before
/// the next; the first check that failed, or `None` when all passed.
pub(crate) async fn pass(
    runner: &Runner,
    bus: &Bus,
    recorder: &mut Recorder<'_>,
    gates: &[Gate],
    target: &Target,
    label: &str,
) -> Result<Option<GateCheck>, Lost> {
    for (i, gate) in checked(gates) {
        let name = format!("{label}{}[{i}]", kind(gate));
        let check = runner.gate(gate, &name, target, bus).await;
        recorder.gate(&check).await?;
        if !check.passed {
            return Ok(Some(check));
        }
    }
    Ok(None)
}

/// The outcome of a step a gate failed.
pub(crate) fn failure(check: &GateCheck) -> Outcome {
    Outcome {
        ok: false,
        detail: format!(
            "gate {} failed: observed {}, expected {}",
            check.name, check.observed, check.expected
        ),
    }
}

/// Runs a verify step with `gates`: every gate but the soaks once ([`pass`]), then each soak.
pub(crate) async fn verify(
    runner: &Runner,
    bus: &Bus,
    recorder: &mut Recorder<'_>,
    gates: &[Gate],
    target: &Target,
) -> Result<Outcome, Lost> {
    if let Some(failed) = pass(runner, bus, recorder, gates, target, "").await? {
        return Ok(failure(&failed));
    }
    let checks: Vec<(usize, &Gate)> = checked(gates).collect();
    for (i, gate) in gates.iter().enumerate() {
        let Gate::Soak { duration, interval } = gate else {
            continue;
        };
        let duration = duration.0;
        let interval = interval
            .map(|i| i.0)
            .unwrap_or(duration / 10)
            .max(Duration::from_millis(1));
        let mut elapsed = Duration::ZERO;
        let mut rounds = 0u32;
        while elapsed < duration {
            let pause = interval.min(duration - elapsed);
            runner.clock.sleep(pause).await;
            elapsed += pause;
            rounds += 1;
            for (j, other) in &checks {
                let name = format!(
                    "soak[{i}] after {}: {}[{j}]",
                    humanize(elapsed),
                    kind(other)
                );
                let check = runner.gate(other, &name, target, bus).await;
                if !check.passed {
                    recorder.gate(&check).await?;
                    return Ok(failure(&check));
                }
            }
        }
        let check = GateCheck {
            name: format!("soak[{i}]"),
            passed: true,
            observed: format!(
                "{rounds} re-checks of {} gate(s) over {} all passed",
                checks.len(),
                humanize(duration)
            ),
            expected: format!("every gate passes for {}", humanize(duration)),
        };
        recorder.gate(&check).await?;
    }
    Ok(Outcome {
        ok: true,
        detail: if gates.is_empty() {
            "no gates configured".to_owned()
        } else {
            format!("{} gate(s) passed", gates.len())
        },
    })
}

/// The gates checked once each (every gate but the soaks), with their index among all.
fn checked(gates: &[Gate]) -> impl Iterator<Item = (usize, &Gate)> {
    gates
        .iter()
        .enumerate()
        .filter(|(_, g)| !matches!(g, Gate::Soak { .. }))
}
