//! The pure part of a worker's decisions: given a release's folded state, what happens next —
//! complete it, offer its ready steps, retry steps an operator asked to retry, or roll an
//! environment back — in which order an environment is undone, and who owns a step. No IO.

use std::collections::BTreeSet;

use railyard_core::catalog::OnFailure;
use railyard_core::release_state::StepStatus;
use railyard_core::step::{InvalidStepId, Target};
use railyard_core::{
    Action, Catalog, EnvName, Envelope, Event, ExternalEdge, ReleaseState, Status,
};
use railyard_core::{DatabaseName, ReleaseId, Step, StepId, Version};

/// What a release needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do now (finished, held, or waiting for running steps or approvals).
    Wait,
    /// Every step succeeded: record `release.completed`.
    Complete,
    /// Offer these steps to the workers.
    Offer(Vec<StepId>),
    /// A step failed in an environment whose policy is `rollback`: undo that environment.
    RollBack {
        /// The environment to undo.
        env: EnvName,
        /// Why, in words.
        reason: String,
    },
}

/// The owner the catalog names for a deploy or verify step's service, if any.
pub fn owner(catalog: &Catalog, step: &Step) -> Option<String> {
    match step.action {
        Action::Deploy | Action::Verify => catalog
            .services
            .iter()
            .find(|(name, _)| name.as_str() == step.target)
            .and_then(|(_, s)| s.owner.clone()),
        Action::Migrate | Action::Approve => None,
    }
}

/// The database a migrate step moves (or the approval guarding one is for) and the schema
/// version it moves it to, read from the step's target by core's one step-target parser.
pub fn migration(step: &Step) -> Result<(DatabaseName, Version), InvalidStepId> {
    match Target::parse(Action::Migrate, &step.target)? {
        Target::Migration { database, to } => Ok((database, to)),
        other => Err(InvalidStepId {
            what: "step target",
            value: step.target.clone(),
            problem: format!("{other} is not a migration"),
        }),
    }
}

/// The failure policy of `env` (rollback when the environment is not in the catalog).
pub fn on_failure(catalog: &Catalog, env: &EnvName) -> OnFailure {
    catalog
        .environment(env)
        .map_or(OnFailure::Rollback, |e| e.on_failure)
}

/// Decides what `state` needs next. `external_done` says whether a cross-release edge is
/// satisfied (its step of the other release succeeded, or that release ended).
pub fn next(
    state: &ReleaseState,
    catalog: &Catalog,
    external_done: &dyn Fn(&ExternalEdge) -> bool,
) -> Next {
    if state.status != Status::Planned {
        return Next::Wait;
    }
    let Some(plan) = &state.plan else {
        return Next::Wait;
    };
    if state.steps.values().all(|s| *s == StepStatus::Succeeded) {
        return Next::Complete;
    }
    // A failure (or a rollback under way) in a rollback environment stops everything else.
    for step in &plan.steps {
        let policy = on_failure(catalog, &step.env);
        match state.steps.get(&step.id) {
            Some(StepStatus::Failed { detail }) if policy == OnFailure::Rollback => {
                return Next::RollBack {
                    env: step.env.clone(),
                    reason: format!("{} failed: {detail}", step.id),
                };
            }
            Some(StepStatus::RolledBack) => {
                return Next::RollBack {
                    env: step.env.clone(),
                    reason: format!("the rollback of {} is under way", step.env),
                };
            }
            _ => {}
        }
    }
    let mut offers = Vec::new();
    for step in &plan.steps {
        let status = state.steps.get(&step.id);
        let startable = match status {
            Some(StepStatus::Pending) => true,
            // A failed step of a hold environment in a release under way: an operator resumed
            // it to retry the step.
            Some(StepStatus::Failed { .. }) => on_failure(catalog, &step.env) == OnFailure::Hold,
            _ => false,
        };
        if startable && ready(state, &step.id, external_done) {
            offers.push(step.id.clone());
        }
    }
    if offers.is_empty() {
        Next::Wait
    } else {
        Next::Offer(offers)
    }
}

/// Whether every predecessor of `step` succeeded and every cross-release edge into it is
/// satisfied.
pub fn ready(
    state: &ReleaseState,
    step: &str,
    external_done: &dyn Fn(&ExternalEdge) -> bool,
) -> bool {
    let Some(plan) = &state.plan else {
        return false;
    };
    plan.predecessors(step)
        .all(|p| state.steps.get(p) == Some(&StepStatus::Succeeded))
        && plan
            .external_edges
            .iter()
            .filter(|e| e.to == step)
            .all(external_done)
}

/// The other releases `state`'s plan waits for.
pub fn waits_on(state: &ReleaseState) -> BTreeSet<ReleaseId> {
    state
        .plan
        .iter()
        .flat_map(|p| p.external_edges.iter().map(|e| e.release.clone()))
        .collect()
}

/// The other releases `state`'s plan still waits for: those with an edge into a step that may
/// still start (pending, or failed and so perhaps retried). Only they can change what
/// [`next`], [`ready`] and a step's start decide; an edge into a step that started is spent.
pub fn still_waits_on(state: &ReleaseState) -> BTreeSet<ReleaseId> {
    state
        .plan
        .iter()
        .flat_map(|p| p.external_edges.iter())
        .filter(|e| {
            matches!(
                state.steps.get(&e.to),
                Some(StepStatus::Pending | StepStatus::Failed { .. }) | None
            )
        })
        .map(|e| e.release.clone())
        .collect()
}

/// How many times `step` was started.
pub fn attempts<'a>(events: impl IntoIterator<Item = &'a Envelope>, step: &str) -> u32 {
    let started = events
        .into_iter()
        .filter(|e| matches!(&e.event, Event::StepStarted(s) if s.step == step))
        .count();
    u32::try_from(started).unwrap_or(u32::MAX)
}

/// Whether no step of `env` has started yet (the moment to re-validate before entering it).
pub fn env_untouched(state: &ReleaseState, env: &EnvName) -> bool {
    state
        .plan
        .iter()
        .flat_map(|p| &p.steps)
        .all(|s| &s.env != env || state.steps.get(&s.id) == Some(&StepStatus::Pending))
}

/// The steps of `env` to undo, in the order to undo them: failed steps first, then every
/// step applied (succeeded, running or failed) in reverse plan order. Steps already rolled
/// back or never started are left out.
pub fn rollback_order(state: &ReleaseState, env: &EnvName) -> Vec<StepId> {
    let Some(plan) = &state.plan else {
        return Vec::new();
    };
    let order: Vec<&StepId> = plan
        .waves
        .iter()
        .flatten()
        .chain(plan.steps.iter().map(|s| &s.id))
        .fold(Vec::new(), |mut seen, id| {
            if !seen.contains(&id) {
                seen.push(id);
            }
            seen
        });
    let in_env = |id: &&StepId| plan.step(id).is_some_and(|s| &s.env == env);
    let failed = order
        .iter()
        .copied()
        .filter(in_env)
        .filter(|id| matches!(state.steps.get(*id), Some(StepStatus::Failed { .. })));
    let applied = order.iter().rev().copied().filter(in_env).filter(|id| {
        matches!(
            state.steps.get(*id),
            Some(StepStatus::Succeeded | StepStatus::Running { .. })
        )
    });
    failed.chain(applied).cloned().collect()
}

/// The environment an operator's rollback undoes when none is named: the last one on the
/// promotion path where a step of the release was applied.
pub fn latest_applied_env(state: &ReleaseState, catalog: &Catalog) -> Option<EnvName> {
    let plan = state.plan.as_ref()?;
    catalog
        .promotion_path()
        .into_iter()
        .rev()
        .map(|e| &e.name)
        .find(|env| {
            plan.steps.iter().any(|s| {
                &s.env == *env
                    && s.action != Action::Approve
                    && matches!(
                        state.steps.get(&s.id),
                        Some(
                            StepStatus::Succeeded
                                | StepStatus::Running { .. }
                                | StepStatus::Failed { .. }
                        )
                    )
            })
        })
        .cloned()
}

/// The commands an operator can run on a held release, spelled out for the hold reason:
/// `retry` only when a step failed (`failed`), since it runs that step again; otherwise resume
/// or roll back.
pub fn operator_commands(release: &ReleaseId, failed: Option<&str>) -> String {
    match failed {
        Some(step) => format!(
            "to continue, run `railyard resume {release}` (after fixing the cause), `railyard retry {release} --step {step}` (run the failed step again) or `railyard rollback {release}` (undo this environment)"
        ),
        None => format!(
            "to continue, run `railyard resume {release}` (when the cause is gone) or `railyard rollback {release}` (undo this environment)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use railyard_core::event::{ReleasePlanned, ReleaseRequested, StepOutcome, StepStarted};
    use railyard_core::{AggregateId, Edge, Plan, Step};

    #[test]
    fn a_migrations_database_and_version_come_from_its_target() {
        let step = |id: &str| Step::new(railyard_core::step::StepId::parse(id).unwrap(), None);
        let (database, to) = migration(&step("staging:migrate:orders-db@43")).unwrap();
        assert_eq!((database.as_str(), to), ("orders-db", 43));
        let guarded = migration(&step("production:approve:orders-db@44")).unwrap();
        assert_eq!((guarded.0.as_str(), guarded.1), ("orders-db", 44));
        let error = migration(&step("staging:deploy:orders-api")).unwrap_err();
        assert_eq!(error.value, "orders-api");
    }

    const STEPS: [&str; 4] = [
        "staging:deploy:a",
        "staging:verify:a",
        "production:deploy:a",
        "production:verify:a",
    ];

    fn catalog(production: &str) -> Catalog {
        Catalog::from_toml(&format!(
            "[[environments]]\nname = \"staging\"\n[[environments]]\nname = \"production\"\nafter = \"staging\"\non_failure = \"{production}\"\n[services.a]\ndeploy = {{ kind = \"simulated\" }}\n"
        ))
        .unwrap()
    }

    fn plan(external: Vec<ExternalEdge>) -> Plan {
        let step = |id: &str| {
            Step::new(
                railyard_core::step::StepId::parse(id).unwrap(),
                Some("2".into()),
            )
        };
        Plan {
            release: ReleaseId::new("r").unwrap(),
            catalog_hash: "sha256:00".into(),
            steps: STEPS.iter().map(|s| step(s)).collect(),
            edges: STEPS
                .windows(2)
                .map(|w| Edge {
                    from: w[0].into(),
                    to: w[1].into(),
                    rule: "step-order".into(),
                    reason: "test".into(),
                })
                .collect(),
            waves: STEPS.iter().map(|s| vec![s.to_string()]).collect(),
            critical_path: Vec::new(),
            external_edges: external,
            points_of_no_return: Vec::new(),
        }
    }

    /// Folds `release.requested`, `release.planned` and then `(event, step)` pairs.
    fn state(external: Vec<ExternalEdge>, steps: &[(&str, &str)]) -> ReleaseState {
        let id = ReleaseId::new("r").unwrap();
        let aggregate = AggregateId::Release(id.clone());
        let now = chrono::Utc::now();
        let mut events = vec![
            Envelope::new(
                aggregate.clone(),
                "carol",
                now,
                Event::ReleaseRequested(ReleaseRequested {
                    release: id,
                    requested_by: "carol".into(),
                    changes: Vec::new(),
                }),
            ),
            Envelope::new(
                aggregate.clone(),
                "planner",
                now,
                Event::ReleasePlanned(ReleasePlanned {
                    plan: plan(external),
                }),
            ),
        ];
        for (kind, step) in steps {
            let outcome = StepOutcome {
                step: step.to_string(),
                detail: "x".into(),
            };
            let event = match *kind {
                "started" => Event::StepStarted(StepStarted {
                    step: step.to_string(),
                    worker: "w".into(),
                    attempt: 1,
                }),
                "succeeded" => Event::StepSucceeded(outcome),
                "failed" => Event::StepFailed(outcome),
                "resumed" => Event::ReleaseResumed(railyard_core::event::Reasoned {
                    reason: "retry".into(),
                }),
                "held" => Event::ReleaseHeld(railyard_core::event::ReleaseHeld {
                    reason: "x".into(),
                    step: None,
                    owner: None,
                    frozen: None,
                }),
                other => panic!("{other}"),
            };
            events.push(Envelope::new(aggregate.clone(), "w", now, event));
        }
        ReleaseState::fold(&events).unwrap().unwrap()
    }

    fn done(steps: &[&'static str]) -> Vec<(&'static str, &'static str)> {
        steps
            .iter()
            .flat_map(|s| [("started", *s), ("succeeded", *s)])
            .collect()
    }

    fn next_of(state: &ReleaseState, policy: &str) -> Next {
        next(state, &catalog(policy), &|_| true)
    }

    #[test]
    fn offers_ready_steps_waits_for_running_ones_and_completes() {
        let planned = state(vec![], &[]);
        assert_eq!(
            next_of(&planned, "rollback"),
            Next::Offer(vec![STEPS[0].into()])
        );
        let running = state(vec![], &[("started", STEPS[0])]);
        assert_eq!(next_of(&running, "rollback"), Next::Wait);
        let staged = state(vec![], &done(&STEPS[..2]));
        assert_eq!(
            next_of(&staged, "rollback"),
            Next::Offer(vec![STEPS[2].into()])
        );
        assert!(env_untouched(&staged, &"production".parse().unwrap()));
        let all = state(vec![], &done(&STEPS));
        assert_eq!(next_of(&all, "rollback"), Next::Complete);
    }

    #[test]
    fn a_failure_rolls_back_or_waits_for_an_operator_by_policy() {
        let mut steps = done(&STEPS[..3]);
        steps.extend([("started", STEPS[3]), ("failed", STEPS[3])]);
        let failed = state(vec![], &steps);
        assert_eq!(
            next_of(&failed, "rollback"),
            Next::RollBack {
                env: "production".parse().unwrap(),
                reason: "production:verify:a failed: x".into()
            }
        );
        // Failed first, then what was applied, newest first; staging untouched.
        assert_eq!(
            rollback_order(&failed, &"production".parse().unwrap()),
            ["production:verify:a", "production:deploy:a"]
        );
        // Under hold, a failed step is offered again only after an operator resumed.
        steps.push(("held", ""));
        let held = state(vec![], &steps);
        assert_eq!(next_of(&held, "hold"), Next::Wait);
        steps.push(("resumed", ""));
        let resumed = state(vec![], &steps);
        assert_eq!(
            next_of(&resumed, "hold"),
            Next::Offer(vec![STEPS[3].into()])
        );
        assert_eq!(
            latest_applied_env(&resumed, &catalog("hold")),
            Some("production".parse().unwrap())
        );
    }

    #[test]
    fn a_cross_release_edge_holds_its_step_until_the_other_release_moves() {
        let edge = ExternalEdge {
            release: ReleaseId::new("other").unwrap(),
            from: "staging:verify:a".into(),
            to: STEPS[0].into(),
            rule: "cross-release".into(),
            reason: "test".into(),
        };
        let planned = state(vec![edge.clone()], &[]);
        assert_eq!(next(&planned, &catalog("rollback"), &|_| false), Next::Wait);
        assert_eq!(
            next(&planned, &catalog("rollback"), &|e| e == &edge),
            Next::Offer(vec![STEPS[0].into()])
        );
        assert_eq!(waits_on(&planned), BTreeSet::from([edge.release.clone()]));
        assert_eq!(
            still_waits_on(&planned),
            BTreeSet::from([edge.release.clone()])
        );
        // Once the step it leads into started, the edge is spent.
        let started = state(vec![edge.clone()], &[("started", STEPS[0])]);
        assert_eq!(still_waits_on(&started), BTreeSet::new());
        assert_eq!(waits_on(&started), BTreeSet::from([edge.release]));
    }

    #[test]
    fn hold_reasons_spell_out_the_commands() {
        assert_eq!(
            operator_commands(
                &ReleaseId::new("rel-1").unwrap(),
                Some("production:verify:a")
            ),
            "to continue, run `railyard resume rel-1` (after fixing the cause), `railyard retry rel-1 --step production:verify:a` (run the failed step again) or `railyard rollback rel-1` (undo this environment)"
        );
        // Nothing failed (a manual hold, a re-validation hold): there is nothing to retry.
        assert_eq!(
            operator_commands(&ReleaseId::new("rel-1").unwrap(), None),
            "to continue, run `railyard resume rel-1` (when the cause is gone) or `railyard rollback rel-1` (undo this environment)"
        );
    }
}
