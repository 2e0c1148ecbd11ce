//! The words: one Block Kit message per event worth telling (with the verbosity class that
//! decides which channels hear it), a digest of several step updates told at once, the root
//! message of a release's thread and its status line. Pure functions of the [`ReleaseView`]
//! and the event; every message names the release, the environment and the commit range
//! (linked when the repository is known), and every exception — a failure, a rollback, a
//! hold, a denial, a refusal, a colour not retired — says who should act: "team-orders
//! (owner of orders-api) should look at it", from the catalog's `owner`.

use railyard_core::Catalog;
use railyard_core::catalog::Verbosity;
use railyard_core::event::{Envelope, Event};
use railyard_core::plan::Plan;

use crate::blocks::{Blocks, Message, esc, truncate};
use crate::view::{
    ChangeView, Owner, Phase, ReleaseView, StepState, StepView, owners, refusal_services,
};

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
    /// Set for step progress (started, succeeded, undone, colour retired): such notes, when
    /// several wait for one thread at once, may be told together in one [`digest`].
    pub update: Option<StepUpdate>,
}

/// One step's progress as a line of a [`digest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpdate {
    /// The step.
    pub step: String,
    /// The line (mrkdwn): what happened to the step, and its detail.
    pub line: String,
    /// The same as plain text, for the notification text.
    pub text: String,
}

/// What the renderer needs besides the view.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// The Railyard UI, for links.
    pub ui_url: Option<String>,
    /// The catalog in force, for the owners of the services a refusal names.
    pub catalog: Catalog,
    /// Whether approval requests carry Approve and Deny buttons (answered by the promoter's
    /// `/v1/slack/interactions`).
    pub approval_buttons: bool,
}

/// The `action_id` of the Approve button (the promoter's `slack::APPROVE_ACTION`).
pub const APPROVE_ACTION: &str = "railyard.approve";
/// The `action_id` of the Deny button (the promoter's `slack::DENY_ACTION`).
pub const DENY_ACTION: &str = "railyard.deny";

/// The `action_id` of the Override freeze button (the promoter's `slack::OVERRIDE_ACTION`).
pub const OVERRIDE_ACTION: &str = "railyard.override_freeze";

/// The Override freeze button of a release held by a freeze: the promoter asks for the reason
/// in a modal; its value is `{"release", "env"}`.
fn override_button(release: &str, env: &str) -> Option<serde_json::Value> {
    let value = serde_json::json!({"release": release, "env": env}).to_string();
    crate::blocks::button(
        OVERRIDE_ACTION,
        "Override freeze",
        "danger",
        &value,
        (
            "Emergency override?",
            &format!(
                "Let release *{}* through the freeze of *{}*? You will be asked for the reason; it is recorded with your name, and another approver must approve.",
                esc(release),
                esc(env)
            ),
            "Continue",
        ),
    )
}

/// The Approve and Deny buttons of an approval request, each with a confirm dialog; their
/// value names the pending approval (`{"release", "step", "env"}`), which the promoter looks
/// up and checks like a body of its HTTP route. Empty when the value would not fit a button.
fn approval_buttons(release: &str, step: &str, env: &str) -> Vec<serde_json::Value> {
    let value = serde_json::json!({"release": release, "step": step, "env": env}).to_string();
    let approve = crate::blocks::button(
        APPROVE_ACTION,
        "Approve",
        "primary",
        &value,
        (
            "Approve this release?",
            &format!(
                "Approve release *{}* for *{}*? You are recorded as its approver.",
                esc(release),
                esc(env)
            ),
            "Approve",
        ),
    );
    let deny = crate::blocks::button(
        DENY_ACTION,
        "Deny",
        "danger",
        &value,
        (
            "Deny this release?",
            &format!(
                "Deny release *{}* for *{}*? The release is cancelled.",
                esc(release),
                esc(env)
            ),
            "Deny",
        ),
    );
    approve.into_iter().chain(deny).collect()
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Who should act, in words (plain text): "team-orders (owner of orders-api) should look at
/// it"; services the catalog names no owner for are said so, and when nobody is named the
/// release's requester is.
pub fn who_acts(owners: &[Owner], requested_by: &str) -> String {
    let named: Vec<String> = owners
        .iter()
        .filter_map(|o| {
            let team = o.team.as_ref()?;
            Some(if o.services.is_empty() {
                team.clone()
            } else {
                format!("{team} (owner of {})", join_and(&o.services))
            })
        })
        .collect();
    let unowned: Vec<String> = owners
        .iter()
        .filter(|o| o.team.is_none())
        .flat_map(|o| o.services.iter().cloned())
        .collect();
    let no_owner = match unowned.len() {
        0 => None,
        1 => Some(format!("{} has no owner in the catalog", unowned[0])),
        _ => Some(format!(
            "{} have no owner in the catalog",
            join_and(&unowned)
        )),
    };
    let requester = if requested_by.is_empty() {
        "an operator".to_owned()
    } else {
        format!("{requested_by} (who requested the release)")
    };
    match (named.is_empty(), no_owner) {
        (false, None) => format!("{} should look at it", join_and(&named)),
        (false, Some(no_owner)) => format!("{} should look at it; {no_owner}", join_and(&named)),
        (true, Some(no_owner)) => format!("{no_owner}: {requester} should look at it"),
        (true, None) => format!("{requester} should look at it"),
    }
}

/// Who should act on the release's exception (plain text), or `None` when it has none.
fn exception_who(view: &ReleaseView) -> Option<String> {
    view.exception
        .as_ref()
        .map(|e| who_acts(&e.owners, &view.requested_by))
}

/// The line an exception note adds (mrkdwn), and the suffix of its notification text.
fn who_line(view: &ReleaseView) -> (String, String) {
    let who = exception_who(view).unwrap_or_else(|| who_acts(&[], &view.requested_by));
    (format!(":point_right: {}", esc(&who)), format!(" — {who}"))
}

/// The root message's exception line (mrkdwn): what stopped the release or still needs a
/// human, and who should act; `None` when nothing does.
pub fn exception_line(view: &ReleaseView) -> Option<String> {
    let exception = view.exception.as_ref()?;
    let who = who_acts(&exception.owners, &view.requested_by);
    Some(format!(
        ":warning: {} — {}",
        esc(&exception.what),
        esc(&who)
    ))
}

/// What the root message summarises — its status line and exception line — as one string:
/// the root is updated when this changes.
pub fn summary(view: &ReleaseView) -> String {
    match exception_line(view) {
        Some(exception) => format!("{}\n{exception}", status_line(view)),
        None => status_line(view),
    }
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
            format!(":double_vertical_bar: *Held*{at}{progress}")
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
    let exception = exception_line(view);
    if let Some(exception) = &exception {
        blocks.section(exception);
    }
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
    let mut text = format!("Release {}: {}", view.id, plain(&status_line(view)));
    if let Some(exception) = &exception {
        text.push_str(&format!(" · {}", plain(exception)));
    }
    blocks.finish(&text)
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
        update: None,
    })
}

/// Several step updates told at once, in one message: one line each, in the order they
/// happened, with the context of all the steps they concern.
pub fn digest(view: &ReleaseView, updates: &[&StepUpdate]) -> Message {
    let mut envs: Vec<String> = Vec::new();
    let mut changes: Vec<&ChangeView> = Vec::new();
    for update in updates {
        let env = view.env_of(&update.step);
        if !envs.contains(&env) {
            envs.push(env);
        }
        if let Some(step) = view.step(&update.step) {
            for change in view.changes_of_step(step) {
                if !changes.contains(&change) {
                    changes.push(change);
                }
            }
        }
    }
    let lines: Vec<String> = updates.iter().map(|u| format!("• {}", u.line)).collect();
    let mut blocks = Blocks::new();
    blocks.list(
        &format!(":fast_forward: *{} step updates*", updates.len()),
        &lines,
        LIST_ITEMS,
    );
    blocks.context(&context(view, &envs, &changes));
    let texts: Vec<&str> = updates.iter().map(|u| u.text.as_str()).collect();
    blocks.finish(&format!("{}: {}", view.id, texts.join("; ")))
}

/// The message about `envelope` (already applied to `view`), or `None` for events nobody
/// needs to read about.
pub fn event_note(view: &ReleaseView, envelope: &Envelope, ctx: &RenderContext) -> Option<Note> {
    let id = esc(view.id.as_str());
    let actor = esc(&envelope.actor);
    let all_changes: Vec<&ChangeView> = view.changes.iter().collect();
    let step_note = |step_id: &str,
                     class: Verbosity,
                     headline: String,
                     extra: Option<String>,
                     progress: bool| {
        let step = view
            .step(step_id)
            .cloned()
            .unwrap_or_else(|| StepView::unplanned(step_id));
        let changes = view.changes_of_step(&step);
        let mut blocks = Blocks::new();
        blocks.section(&headline);
        if let Some(extra) = &extra {
            blocks.section(extra);
        }
        blocks.context(&context(view, std::slice::from_ref(&step.env), &changes));
        let text = plain(&headline);
        let update = progress.then(|| StepUpdate {
            step: step.id.clone(),
            line: match &extra {
                Some(extra) => format!("{headline} — {}", extra.replace('\n', " ")),
                None => headline.clone(),
            },
            text: text.clone(),
        });
        let mut full = format!("{}: {text}", view.id);
        if class == Verbosity::Exceptions {
            full.push_str(&who_line(view).1);
        }
        let mut out = note(class, blocks, &full)?;
        out.update = update;
        Some(out)
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
            // Header, who acts, context and the "and N more" line take four of the 50 blocks.
            let room = crate::blocks::MAX_BLOCKS - 4;
            for (i, refusal) in r.reasons.iter().enumerate().take(room) {
                let env = refusal
                    .env
                    .as_ref()
                    .map(|e| format!(" in {e}"))
                    .unwrap_or_default();
                let services =
                    refusal_services(&ctx.catalog, view, &refusal.reason, &refusal.remedy);
                let who = format!(
                    "\n_who:_ {}",
                    esc(&who_acts(
                        &owners(&ctx.catalog, &services),
                        &view.requested_by
                    ))
                );
                blocks.section(&format!(
                    "*{}. [{}]{}*\n{}\n_remedy:_ {}{who}",
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
            let (who, who_text) = who_line(view);
            blocks.section(&who);
            blocks.context(&context(view, &view.envs, &all_changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: refused by the planner{who_text}", view.id),
            )
        }
        Event::StepWaiting(w) => {
            let releases: Vec<String> = w
                .waiting_for
                .iter()
                .map(|r| format!("`{}`", esc(r.as_str())))
                .collect();
            step_note(
                &w.step,
                Verbosity::All,
                format!(
                    ":hourglass_flowing_sand: *Waiting* `{}` for {} to finish first (requested earlier, same services)",
                    esc(&w.step),
                    releases.join(", ")
                ),
                Some(format!("*Why:* {}", esc(&w.reason))),
                true,
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
                true,
            )
        }
        Event::StepSucceeded(o) => step_note(
            &o.step,
            Verbosity::All,
            format!(":white_check_mark: *Succeeded* `{}`", esc(&o.step)),
            (!o.detail.is_empty()).then(|| esc(&o.detail)),
            true,
        ),
        Event::StepFailed(o) => step_note(
            &o.step,
            Verbosity::Exceptions,
            format!(":x: *Failed* `{}`", esc(&o.step)),
            Some(format!("*Why:* {}\n{}", esc(&o.detail), who_line(view).0)),
            false,
        ),
        Event::StepRolledBack(o) => step_note(
            &o.step,
            Verbosity::All,
            format!(":leftwards_arrow_with_hook: *Undone* `{}`", esc(&o.step)),
            (!o.detail.is_empty()).then(|| esc(&o.detail)),
            true,
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
            true,
        ),
        Event::ColourRetired(r) => step_note(
            &r.step,
            Verbosity::Exceptions,
            format!(
                ":warning: *Old colour NOT retired* `{}` of `{}`: it still runs, take it down by hand",
                esc(&r.colour),
                esc(&r.step)
            ),
            Some(format!("*Why:* {}\n{}", esc(&r.detail), who_line(view).0)),
            false,
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
            let env = view.env_of(&g.step);
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
            let (who, who_text) = who_line(view);
            blocks.section(&who);
            blocks.context(&context(view, std::slice::from_ref(&env), &changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!(
                    "{}: gate {} failed on {}{who_text}",
                    view.id, g.gate, g.step
                ),
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
            // Retry runs a failed step again: only offered when the hold's step failed (a
            // manual hold or a freeze has nothing to retry).
            if let Some(failed) = step.filter(|s| s.state == StepState::Failed) {
                commands.push(format!("railyard retry {} --step {}", view.id, failed.id));
            }
            commands.push(format!("railyard rollback {}", view.id));
            let mut blocks = Blocks::new();
            blocks.section(&format!(
                ":double_vertical_bar: *Held* in {}{at}",
                esc(&envs.join(", "))
            ));
            let (who, mut who_text) = who_line(view);
            // A policy hold's reason already names who should look (the promoter writes it
            // from the catalog): the notification text does not say it twice.
            if h.reason.contains("should look at it") {
                who_text.clear();
            }
            blocks.section(&format!("*Why:* {}\n{who}", esc(&h.reason)));
            let heading = if commands.len() == 3 {
                "*To resume, retry or roll back:*"
            } else {
                "*To resume or roll back:*"
            };
            blocks.section(&format!("{heading}\n```{}```", esc(&commands.join("\n"))));
            // Held by a freeze: a listed approver may override it, with a reason (a modal).
            if let (true, Some(frozen)) = (ctx.approval_buttons, &h.frozen) {
                if let Some(button) = override_button(view.id.as_str(), frozen.as_str()) {
                    blocks.actions("railyard.freeze", vec![button]);
                }
            }
            blocks.context(&context(view, &envs, &changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: held{}: {}{who_text}", view.id, at, h.reason),
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
            if let Some(reason) = &a.reason {
                blocks.section(&format!(":warning: {}", esc(reason)));
            }
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
            if ctx.approval_buttons {
                let buttons = approval_buttons(view.id.as_str(), &a.step, &env);
                if !buttons.is_empty() {
                    blocks.actions("railyard.approval", buttons);
                }
            }
            blocks.context(&context(view, std::slice::from_ref(&env), &all_changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!("{}: approval needed for {env}", view.id),
            )
        }
        Event::ApprovalGranted(d) | Event::ApprovalDenied(d) => {
            let granted = matches!(envelope.event, Event::ApprovalGranted(_));
            let env = view.env_of(&d.step);
            let comment = if d.comment.is_empty() {
                String::new()
            } else {
                format!(" — {}", esc(&d.comment))
            };
            let mut blocks = Blocks::new();
            if granted {
                blocks.section(&format!(
                    ":white_check_mark: *Approved* by *{actor}* for *{}*{comment}",
                    esc(&env)
                ));
                blocks.context(&context(view, std::slice::from_ref(&env), &all_changes));
                return note(
                    Verbosity::Changes,
                    blocks,
                    &format!("{}: approved by {} for {env}", view.id, envelope.actor),
                );
            }
            let (who, who_text) = who_line(view);
            blocks.section(&format!(
                ":no_entry_sign: *Denied* by *{actor}* for *{}*{comment}\n{who}",
                esc(&env)
            ));
            blocks.context(&context(view, std::slice::from_ref(&env), &all_changes));
            note(
                Verbosity::Exceptions,
                blocks,
                &format!(
                    "{}: denied by {} for {env}{who_text}",
                    view.id, envelope.actor
                ),
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
                let env = view.env_of(step);
                if !envs.contains(&env) {
                    envs.push(env);
                }
            }
            let mut blocks = Blocks::new();
            let (who, who_text) = who_line(view);
            blocks.section(&format!(
                ":rewind: *Rolled back* — release *{id}*\n*Why:* {}\n{who}",
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
                &format!("{}: rolled back: {}{who_text}", view.id, r.reason),
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
        update: None,
        message: blocks.finish(&format!(
            "{}: planned, {} steps through {}",
            view.id,
            plan.steps.len(),
            env_list(&view.envs)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(team: Option<&str>, services: &[&str]) -> Owner {
        Owner {
            team: team.map(str::to_owned),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn who_acts_names_each_team_once_with_its_services() {
        let cases: &[(&[Owner], &str)] = &[
            (
                &[owner(Some("team-orders"), &["orders-api"])],
                "team-orders (owner of orders-api) should look at it",
            ),
            (
                &[
                    owner(Some("team-orders"), &["orders-api", "orders-worker"]),
                    owner(Some("team-billing"), &["billing-worker"]),
                    owner(Some("ops"), &[]),
                ],
                "team-orders (owner of orders-api and orders-worker), team-billing (owner of billing-worker) and ops should look at it",
            ),
            (
                &[
                    owner(Some("team-edge"), &["gateway"]),
                    owner(None, &["legacy-cron", "batch"]),
                ],
                "team-edge (owner of gateway) should look at it; legacy-cron and batch have no owner in the catalog",
            ),
            (
                &[owner(None, &["legacy-cron"])],
                "legacy-cron has no owner in the catalog: carol (who requested the release) should look at it",
            ),
            (&[], "carol (who requested the release) should look at it"),
        ];
        for (owners, expected) in cases {
            assert_eq!(who_acts(owners, "carol"), *expected);
        }
        assert_eq!(who_acts(&[], ""), "an operator should look at it");
    }
}
