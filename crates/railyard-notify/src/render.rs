//! The words: one Block Kit message per event worth telling (with the verbosity class that
//! decides which channels hear it), the root message of a release's thread and its status
//! line. Pure functions of the [`ReleaseView`] and the event; every message names the release,
//! the environment and the commit range (linked when the repository is known).

use railyard_core::catalog::Verbosity;
use railyard_core::event::{Envelope, Event};
use railyard_core::plan::{Action, Plan};

use crate::blocks::{Blocks, Message, esc, truncate};
use crate::view::{ChangeView, Phase, ReleaseView, StepView};

/// Most list lines shown in a message before "and N more".
const LIST_ITEMS: usize = 25;

/// A message about one event and who hears it.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// The least verbosity that hears it: `All` for progress, `Changes` for the release's
    /// milestones, `Exceptions` for what needs a human.
    pub class: Verbosity,
    /// The message.
    pub message: Message,
}

/// What the renderer needs besides the view.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// The Railyard UI, for links.
    pub ui_url: Option<String>,
}

fn short(commit: &str) -> &str {
    match commit.char_indices().nth(7) {
        Some((i, _)) => &commit[..i],
        None => commit,
    }
}

fn repo_base(repository: &str) -> (String, bool) {
    let base = repository
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_owned();
    let gitlab = base.contains("gitlab");
    (base, gitlab)
}

/// The commit range of `change` from `from` (the commit running before), linked when its
/// repository is known.
pub fn commit_range(change: &ChangeView, from: Option<&str>) -> String {
    let Some(to) = change.commit.as_deref() else {
        return "commit unknown".to_owned();
    };
    let repo = change.repository.as_deref().map(repo_base);
    let link = |path: String, label: String| match &repo {
        Some((base, _)) => format!("<{}/{path}|{}>", esc(base), esc(&label)),
        None => format!("`{}`", esc(&label)),
    };
    let dash = match &repo {
        Some((_, true)) => "-/",
        _ => "",
    };
    match from {
        Some(from) if from == to => format!(
            "{} (no new commits)",
            link(format!("{dash}commit/{to}"), short(to).to_owned())
        ),
        Some(from) => link(
            format!("{dash}compare/{from}...{to}"),
            format!("{}…{}", short(from), short(to)),
        ),
        None => format!(
            "new at {}",
            link(format!("{dash}commit/{to}"), short(to).to_owned())
        ),
    }
}

/// One line per change for `envs`: version and commit range, environments with the same
/// range grouped.
fn change_lines<'a>(
    view: &ReleaseView,
    changes: impl IntoIterator<Item = &'a ChangeView>,
    envs: &[String],
) -> Vec<String> {
    changes
        .into_iter()
        .map(|change| {
            let mut groups: Vec<(Vec<&str>, String)> = Vec::new();
            for env in envs {
                let from = view
                    .from
                    .get(env)
                    .and_then(|s| s.get(&change.service))
                    .map(String::as_str);
                let range = commit_range(change, from);
                match groups.iter_mut().find(|(_, r)| *r == range) {
                    Some((names, _)) => names.push(env),
                    None => groups.push((vec![env], range)),
                }
            }
            let ranges = match groups.as_slice() {
                [] => commit_range(change, None),
                [(_, range)] if envs.len() <= 1 => range.clone(),
                groups => groups
                    .iter()
                    .map(|(names, range)| format!("{}: {range}", names.join(", ")))
                    .collect::<Vec<_>>()
                    .join(" · "),
            };
            format!(
                "• *{}* {} · {ranges}",
                esc(&change.service),
                esc(&change.version)
            )
        })
        .collect()
}

fn env_list(envs: &[String]) -> String {
    if envs.is_empty() {
        "no environment".to_owned()
    } else {
        envs.join(" → ")
    }
}

/// The context line every message ends with: release, environment(s), and the commit range
/// of the step's changes.
fn context(view: &ReleaseView, envs: &[String], changes: &[&ChangeView]) -> Vec<String> {
    let mut out = vec![
        format!("Release *{}*", esc(view.id.as_str())),
        format!("Environment *{}*", esc(&env_list(envs))),
    ];
    let lines = change_lines(view, changes.iter().copied(), envs);
    match lines.len() {
        0 => {}
        1..=3 => out.extend(
            lines
                .into_iter()
                .map(|l| l.trim_start_matches("• ").to_owned()),
        ),
        n => out.push(format!(
            "{n} changes: commit ranges in the thread's root message"
        )),
    }
    out
}

/// The status line of the root message.
pub fn status_line(view: &ReleaseView) -> String {
    let progress: Vec<String> = view
        .envs
        .iter()
        .filter_map(|env| {
            let (done, all) = view.progress(env);
            (all > 0).then(|| format!("{env} {done}/{all}"))
        })
        .collect();
    let progress = if progress.is_empty() {
        String::new()
    } else {
        format!(" · steps done: {}", progress.join(", "))
    };
    match view.phase {
        Phase::Requested => ":hourglass_flowing_sand: *Waiting for the planner*".to_owned(),
        Phase::Running => format!(":large_blue_circle: *In progress*{progress}"),
        Phase::AwaitingApproval => format!(
            ":raised_hand: *Waiting for approval* in {}{progress}",
            esc(view.awaiting.as_deref().unwrap_or("an environment"))
        ),
        Phase::Held => {
            let hold = view.hold.as_ref();
            let at = hold
                .and_then(|h| h.step.as_deref())
                .map(|s| format!(" at `{}`", esc(s)))
                .unwrap_or_default();
            let owner = hold
                .and_then(|h| h.owner.as_deref())
                .map(|o| format!(" · owner *{}*", esc(o)))
                .unwrap_or_default();
            format!(":double_vertical_bar: *Held*{at}{owner}{progress}")
        }
        Phase::Completed => format!(":white_check_mark: *Completed*{progress}"),
        Phase::RolledBack => ":rewind: *Rolled back*".to_owned(),
        Phase::Refused => ":no_entry: *Refused by the planner*".to_owned(),
        Phase::Cancelled => ":heavy_multiplication_x: *Cancelled*".to_owned(),
    }
}

/// The root message of a release's thread: what it moves, where, and its status line.
pub fn root(view: &ReleaseView) -> Message {
    let mut blocks = Blocks::new();
    blocks.header(&format!("Release {}", view.id));
    blocks.section(&status_line(view));
    let lines = change_lines(view, &view.changes, &view.envs);
    blocks.list(
        &format!("*Changes* ({})", view.changes.len()),
        &lines,
        LIST_ITEMS,
    );
    blocks.context(&[
        format!("Environments *{}*", esc(&env_list(&view.envs))),
        format!("Requested by *{}*", esc(&view.requested_by)),
        "Updates follow in this thread".to_owned(),
    ]);
    blocks.finish(&format!(
        "Release {}: {}",
        view.id,
        plain(&status_line(view))
    ))
}

/// Mrkdwn without its markers and emoji codes, for notification text.
fn plain(text: &str) -> String {
    text.split(' ')
        .filter(|word| {
            let code = word.len() > 2 && word.starts_with(':') && word.ends_with(':');
            !(code
                && word[1..word.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'))
        })
        .collect::<Vec<_>>()
        .join(" ")
        .replace(['*', '`'], "")
}

fn note(class: Verbosity, blocks: Blocks, text: &str) -> Option<Note> {
    Some(Note {
        class,
        message: blocks.finish(&plain(text)),
    })
}

/// The message about `envelope` (already applied to `view`), or `None` for events nobody
/// needs to read about.
pub fn event_note(view: &ReleaseView, envelope: &Envelope, ctx: &RenderContext) -> Option<Note> {
    let id = esc(view.id.as_str());
    let actor = esc(&envelope.actor);
    let all_changes: Vec<&ChangeView> = view.changes.iter().collect();
    let step_note = |step_id: &str, class: Verbosity, headline: String, extra: Option<String>| {
        let step = view.step(step_id).cloned().unwrap_or_else(|| StepView {
            id: step_id.to_owned(),
            env: step_id.split(':').next().unwrap_or_default().to_owned(),
            action: Action::Deploy,
            target: step_id.rsplit(':').next().unwrap_or_default().to_owned(),
            state: crate::view::StepState::Pending,
        });
        let changes = view.changes_of_step(&step);
        let mut blocks = Blocks::new();
        blocks.section(&headline);
        if let Some(extra) = &extra {
            blocks.section(extra);
        }
        blocks.context(&context(view, std::slice::from_ref(&step.env), &changes));
        note(class, blocks, &format!("{}: {headline}", view.id))
    };
    match &envelope.event {
        Event::ReleasePlanned(p) => Some(planned(view, &p.plan)),
        Event::ReleaseRejected(r) => {
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":no_entry: *Refused* — the planner found {} problem{} with release *{id}*",
                r.reasons.len(),
                if r.reasons.len() == 1 { "" } else { "s" }
            ));
            // Header, context and the "and N more" line take three of the 50 blocks.
            let room = crate::blocks::MAX_BLOCKS - 3;
            for (i, refusal) in r.reasons.iter().enumerate().take(room) {
                let env = refusal
                    .env
                    .as_ref()
                    .map(|e| format!(" in {e}"))
                    .unwrap_or_default();
                blocks.section(&format!(
                    "*{}. [{}]{}*\n{}\n_remedy:_ {}",
                    i + 1,
                    esc(&refusal.rule),
                    esc(&env),
                    esc(&refusal.reason),
                    esc(&refusal.remedy)
                ));
            }
            if r.reasons.len() > room {
                blocks.section(&crate::blocks::and_more(r.reasons.len() - room));
            }
            blocks.context(&context(view, &view.envs, &all_changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: refused by the planner", view.id),
            )
        }
        Event::StepStarted(s) => {
            let attempt = if s.attempt > 1 {
                format!(" (attempt {})", s.attempt)
            } else {
                String::new()
            };
            step_note(
                &s.step,
                Verbosity::All,
                format!(":arrow_forward: *Started* `{}`{attempt}", esc(&s.step)),
                None,
            )
        }
        Event::StepSucceeded(o) => step_note(
            &o.step,
            Verbosity::All,
            format!(":white_check_mark: *Succeeded* `{}`", esc(&o.step)),
            (!o.detail.is_empty()).then(|| esc(&o.detail)),
        ),
        Event::StepFailed(o) => step_note(
            &o.step,
            Verbosity::Exceptions,
            format!(":x: *Failed* `{}`", esc(&o.step)),
            Some(format!("*Why:* {}", esc(&o.detail))),
        ),
        Event::StepRolledBack(o) => step_note(
            &o.step,
            Verbosity::All,
            format!(":leftwards_arrow_with_hook: *Undone* `{}`", esc(&o.step)),
            (!o.detail.is_empty()).then(|| esc(&o.detail)),
        ),
        Event::ColourRetired(r) if r.ok => step_note(
            &r.step,
            Verbosity::All,
            format!(
                ":broom: *Old colour retired* `{}` of `{}`",
                esc(&r.colour),
                esc(&r.step)
            ),
            (!r.detail.is_empty()).then(|| esc(&r.detail)),
        ),
        Event::ColourRetired(r) => step_note(
            &r.step,
            Verbosity::Exceptions,
            format!(
                ":warning: *Old colour NOT retired* `{}` of `{}`: it still runs, take it down by hand",
                esc(&r.colour),
                esc(&r.step)
            ),
            Some(format!("*Why:* {}", esc(&r.detail))),
        ),
        Event::FreezeOverridden(f) => {
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":rotating_light: *Emergency: the freeze of {} overridden* by *{actor}* — {}",
                esc(f.env.as_str()),
                esc(&f.reason)
            ));
            blocks.context(&context(view, &[f.env.to_string()], &all_changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!(
                    "{}: the freeze of {} overridden by {}: {}",
                    view.id, f.env, envelope.actor, f.reason
                ),
            )
        }
        Event::GateEvaluated(g) if !g.passed => {
            let step = view.step(&g.step).cloned();
            let env = step
                .as_ref()
                .map(|s| s.env.clone())
                .unwrap_or_else(|| g.step.split(':').next().unwrap_or_default().to_owned());
            let changes = step
                .as_ref()
                .map(|s| view.changes_of_step(s))
                .unwrap_or_default();
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":x: *Gate failed* `{}` on `{}`",
                esc(&g.gate),
                esc(&g.step)
            ));
            blocks.fields(&[
                format!("*Observed*\n{}", esc(&g.observed)),
                format!("*Expected*\n{}", esc(&g.expected)),
            ]);
            blocks.context(&context(view, std::slice::from_ref(&env), &changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: gate {} failed on {}", view.id, g.gate, g.step),
            )
        }
        Event::ReleaseHeld(h) => {
            let step = h.step.as_deref().and_then(|s| view.step(s));
            let envs: Vec<String> = match step {
                Some(step) => vec![step.env.clone()],
                None => view.envs.clone(),
            };
            let changes = step
                .map(|s| view.changes_of_step(s))
                .unwrap_or_else(|| all_changes.clone());
            let at = h
                .step
                .as_deref()
                .map(|s| format!(" at `{}`", esc(s)))
                .unwrap_or_default();
            let mut commands = vec![format!("railyard resume {}", view.id)];
            if let Some(step) = &h.step {
                commands.push(format!("railyard retry {} --step {step}", view.id));
            }
            commands.push(format!("railyard rollback {}", view.id));
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":double_vertical_bar: *Held* in {}{at}",
                esc(&envs.join(", "))
            ));
            blocks.section(&format!(
                "*Why:* {}\n*Owner to act:* {}",
                esc(&h.reason),
                esc(h.owner.as_deref().unwrap_or("not named in the catalog"))
            ));
            blocks.section(&format!(
                "*To resume, retry or roll back:*\n```{}```",
                esc(&commands.join("\n"))
            ));
            blocks.context(&context(view, &envs, &changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: held{}: {}", view.id, at, h.reason),
            )
        }
        Event::ReleaseResumed(r) => {
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":arrow_forward: *Resumed* by *{actor}* — {}",
                esc(&r.reason)
            ));
            blocks.context(&context(view, &view.envs, &all_changes));
            note(
                Verbosity::Changes,
                blocks,
                &format!("{}: resumed by {}", view.id, envelope.actor),
            )
        }
        Event::ApprovalRequested(a) => {
            let env = a.env.to_string();
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":raised_hand: *Approval needed* before release *{id}* enters *{}*",
                esc(&env)
            ));
            let approvers = if a.approvers.is_empty() {
                "nobody is listed: check the catalog's approval policy".to_owned()
            } else {
                esc(&a.approvers.join(", "))
            };
            let mut how = format!(
                "*Who may approve:* {approvers}\n*To approve:*\n```railyard approve {}```",
                view.id
            );
            if let Some(ui) = &ctx.ui_url {
                how.push_str(&format!(
                    "\n<{}/releases/{}|Open release {id} in Railyard>",
                    esc(ui.trim_end_matches('/')),
                    view.id
                ));
            }
            blocks.section(&how);
            blocks.context(&context(view, std::slice::from_ref(&env), &all_changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: approval needed for {env}", view.id),
            )
        }
        Event::ApprovalGranted(d) | Event::ApprovalDenied(d) => {
            let granted = matches!(envelope.event, Event::ApprovalGranted(_));
            let env = view
                .step(&d.step)
                .map(|s| s.env.clone())
                .unwrap_or_else(|| d.step.split(':').next().unwrap_or_default().to_owned());
            let comment = if d.comment.is_empty() {
                String::new()
            } else {
                format!(" — {}", esc(&d.comment))
            };
            let mut blocks = Blocks::new();
            blocks.section(&if granted {
                format!(
                    ":white_check_mark: *Approved* by *{actor}* for *{}*{comment}",
                    esc(&env)
                )
            } else {
                format!(
                    ":no_entry_sign: *Denied* by *{actor}* for *{}*{comment}",
                    esc(&env)
                )
            });
            blocks.context(&context(view, std::slice::from_ref(&env), &all_changes));
            let word = if granted { "approved" } else { "denied" };
            note(
                if granted {
                    Verbosity::Changes
                } else {
                    Verbosity::Exceptions
                },
                blocks,
                &format!("{}: {word} by {} for {env}", view.id, envelope.actor),
            )
        }
        Event::ReleaseCompleted(_) => {
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":white_check_mark: *Completed* — release *{id}* reached {}",
                esc(&view.envs.join(", "))
            ));
            let lines = change_lines(view, &view.changes, &view.envs);
            blocks.list("*Shipped*", &lines, LIST_ITEMS);
            blocks.context(&context(view, &view.envs, &[]));
            note(
                Verbosity::Changes,
                blocks,
                &format!("{}: completed", view.id),
            )
        }
        Event::ReleaseRolledBack(r) => {
            let undone: Vec<String> = r
                .undone
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{}. `{}`", i + 1, esc(s)))
                .collect();
            let mut envs: Vec<String> = Vec::new();
            for step in &r.undone {
                let env = step.split(':').next().unwrap_or_default().to_owned();
                if !envs.contains(&env) {
                    envs.push(env);
                }
            }
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":rewind: *Rolled back* — release *{id}*\n*Why:* {}",
                esc(&r.reason)
            ));
            if undone.is_empty() {
                blocks.section("*Undone:* nothing had been applied");
            } else {
                blocks.list("*Undone, in this order:*", &undone, LIST_ITEMS);
            }
            let undone_services: Vec<&ChangeView> = view
                .changes
                .iter()
                .filter(|c| {
                    r.undone.iter().any(|s| {
                        view.step(s)
                            .is_some_and(|st| view.changes_of_step(st).contains(c))
                    })
                })
                .collect();
            blocks.context(&context(view, &envs, &undone_services));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: rolled back: {}", view.id, r.reason),
            )
        }
        Event::ReleaseCancelled(r) => {
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":heavy_multiplication_x: *Cancelled* by *{actor}* — {}",
                esc(&r.reason)
            ));
            blocks.context(&context(view, &view.envs, &all_changes));
            note(
                Verbosity::Changes,
                blocks,
                &format!("{}: cancelled by {}", view.id, envelope.actor),
            )
        }
        _ => None,
    }
}

fn planned(view: &ReleaseView, plan: &Plan) -> Note {
    let id = esc(view.id.as_str());
    let mut blocks = Blocks::new();
    blocks.section(&format!(
        ":clipboard: *Planned* — release *{id}*: {} change{}, {} step{} in {} wave{} through {}",
        view.changes.len(),
        if view.changes.len() == 1 { "" } else { "s" },
        plan.steps.len(),
        if plan.steps.len() == 1 { "" } else { "s" },
        plan.waves.len(),
        if plan.waves.len() == 1 { "" } else { "s" },
        esc(&env_list(&view.envs)),
    ));
    let lines = change_lines(view, &view.changes, &view.envs);
    blocks.list("*Changes*", &lines, LIST_ITEMS);
    let waves: Vec<String> = plan
        .waves
        .iter()
        .enumerate()
        .map(|(i, wave)| {
            let mut steps: Vec<String> = wave
                .iter()
                .take(8)
                .map(|s| format!("`{}`", esc(s)))
                .collect();
            if wave.len() > 8 {
                steps.push(crate::blocks::and_more(wave.len() - 8));
            }
            truncate(&format!("{}. {}", i + 1, steps.join(" · ")), 600)
        })
        .collect();
    blocks.list("*Waves*", &waves, LIST_ITEMS);
    let reasons: Vec<String> = plan
        .edges
        .iter()
        .filter(|e| e.rule != "step-order")
        .map(|e| {
            format!(
                "• `{}` after `{}` [{}]: {}",
                esc(&e.to),
                esc(&e.from),
                esc(&e.rule),
                esc(&e.reason)
            )
        })
        .chain(plan.external_edges.iter().map(|e| {
            format!(
                "• `{}` after `{}` of {} [{}]: {}",
                esc(&e.to),
                esc(&e.from),
                esc(e.release.as_str()),
                esc(&e.rule),
                esc(&e.reason)
            )
        }))
        .collect();
    if !reasons.is_empty() {
        blocks.list("*Why this order*", &reasons, LIST_ITEMS);
    }
    blocks.context(&[
        format!("Release *{id}*"),
        format!("Environment *{}*", esc(&env_list(&view.envs))),
        format!("Requested by *{}*", esc(&view.requested_by)),
    ]);
    Note {
        class: Verbosity::Changes,
        message: blocks.finish(&format!(
            "{}: planned, {} steps through {}",
            view.id,
            plan.steps.len(),
            env_list(&view.envs)
        )),
    }
}
