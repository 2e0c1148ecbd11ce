//! Freeze windows (INTERFACES §3 `freeze`), pure: a small 5-field cron matcher ([`Cron`]) and
//! [`active_freeze`], which says whether an environment's windows cover an instant and when
//! the freeze ends, and what a freeze does to a release's next step ([`hold_reason`],
//! [`elsewhere_moving`]). No IO; the worker reads the instant from its clock.
//!
//! A recurring window is active at `now` when some cron match `t` (in the window's IANA time
//! zone, default UTC) lies in `(now - duration, now]`; it ends at `t + duration`, measured in
//! elapsed time (so a 66 h window that spans a DST change ends one wall-clock hour earlier or
//! later). Windows that overlap or follow each other without a gap are reported as one freeze
//! ending at the last end. A fixed window is active in `[start, end)`.
//!
//! Cron: `minute hour day-of-month month day-of-week` with `*`, lists `a,b`, ranges `a-b`,
//! steps `*/n`, `a-b/n` and `a/n`, month names `JAN`..`DEC` and day names `SUN`..`SAT`
//! (`0` and `7` are Sunday), case-insensitive. As in Vixie cron, when both day fields are
//! restricted (neither starts with `*`) a day matches if *either* matches; otherwise both must.
//! A local time that does not exist (the hour skipped when DST starts) is taken one hour later;
//! a local time that occurs twice counts at both instants.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use railyard_core::catalog::Freeze;
use railyard_core::release_state::StepStatus;
use railyard_core::{Catalog, EnvName, ExternalEdge, ReleaseId, ReleaseState};

use crate::decide;

/// Why a fresh step of `env` may not start at `now`: the hold reason when a freeze window of
/// `env` covers `now`.
///
/// A freeze *holds* the release (`release.held`, recorded once: the append is optimistic, so
/// of several steps offered together only one holds it) rather than silently not offering the
/// step, because a hold is what people watching the release already see, notify and audit
/// (who is waiting, on what, until when), and it needs no new event type. It fits the
/// hold/resume flow: running steps finish under a hold; the dispatcher resumes a freeze hold by
/// itself once no window covers the clock any more ([`crate::dispatch`], `release.resumed` with
/// the reason); an operator's `resume` during the freeze is harmless (the next step holds again);
/// `cancel` and `rollback` work as on any hold. The hold names the frozen environment
/// (`release.held` `frozen`), which is how it is told from other holds. The hold waits until
/// nothing outside frozen environments can move ([`elsewhere_moving`]): until then the frozen step is skipped with a
/// log line and offered again by sweeps, so staging finishes while production waits.
pub(crate) fn hold_reason(
    catalog: &Catalog,
    now: DateTime<Utc>,
    env: &EnvName,
    release: &ReleaseId,
) -> Option<String> {
    let windows = &catalog.environment(env)?.freeze;
    let active = active_freeze(windows, now)?;
    Some(format!(
        "{env} is frozen for {}; no step of {env} starts until then, and release {release} continues by itself when the freeze ends (running steps finish; `railyard cancel {release}` or `railyard rollback {release}` act meanwhile)",
        active
            .description
            .strip_prefix("frozen for ")
            .unwrap_or(&active.description),
    ))
}

/// Whether a step outside the environments frozen at `now` is running or ready to start.
pub(crate) fn elsewhere_moving(
    catalog: &Catalog,
    now: DateTime<Utc>,
    state: &ReleaseState,
    external_done: &dyn Fn(&ExternalEdge) -> bool,
) -> bool {
    let Some(plan) = &state.plan else {
        return false;
    };
    let frozen = |env: &EnvName| {
        catalog
            .environment(env)
            .is_some_and(|e| active_freeze(&e.freeze, now).is_some())
    };
    plan.steps.iter().any(|s| match state.steps.get(&s.id) {
        Some(StepStatus::Running { .. }) => !frozen(&s.env),
        Some(StepStatus::Pending) => !frozen(&s.env) && decide::ready(state, &s.id, external_done),
        _ => false,
    })
}

/// Days a search for a cron match looks back at most (bounds the work for absurd durations).
const MAX_SEARCH_DAYS: i64 = 400;
/// How many overlapping windows are merged at most when computing a freeze's end.
const MAX_MERGES: usize = 64;

/// A freeze covering an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFreeze {
    /// The window's `reason` from the catalog.
    pub reason: String,
    /// When it ends (the first instant outside it).
    pub ends_at: DateTime<Utc>,
    /// For people: `frozen for "weekend freeze" until 2026-11-30T08:00:00Z (cron 0 15 * * FRI,
    /// 66h, Europe/Berlin)`; prefix it with the environment.
    pub description: String,
}

/// The freeze of `freezes` covering `now`, if any; when several do, the one ending last.
/// Windows with an invalid cron or time zone are ignored here: [`validate`] rejects them before
/// a worker starts.
pub fn active_freeze(freezes: &[Freeze], now: DateTime<Utc>) -> Option<ActiveFreeze> {
    freezes
        .iter()
        .filter_map(|freeze| active_one(freeze, now))
        .max_by_key(|active| active.ends_at)
}

/// Checks a window's cron expression and time zone; the error says what is wrong.
pub fn validate(freeze: &Freeze) -> Result<(), String> {
    match freeze {
        Freeze::Recurring { cron, timezone, .. } => {
            Cron::parse(cron)?;
            zone(timezone.as_deref())?;
            Ok(())
        }
        Freeze::Fixed { start, end, .. } if end <= start => {
            Err("the freeze ends before it starts: end must be after start".to_owned())
        }
        Freeze::Fixed { .. } => Ok(()),
    }
}

fn zone(timezone: Option<&str>) -> Result<Tz, String> {
    match timezone {
        None => Ok(Tz::UTC),
        Some(name) => name.parse::<Tz>().map_err(|_| {
            format!("{name:?} is not an IANA time zone: write it like Europe/Berlin or UTC")
        }),
    }
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `66h`, `90m`, `45s`: the largest whole unit, as catalogs write durations.
fn span(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s > 0 && s % 3600 == 0 && duration.subsec_nanos() == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 && duration.subsec_nanos() == 0 => format!("{}m", s / 60),
        _ => railyard_core::duration::HumanDuration(duration).to_string(),
    }
}

fn active_one(freeze: &Freeze, now: DateTime<Utc>) -> Option<ActiveFreeze> {
    match freeze {
        Freeze::Fixed { start, end, reason } => {
            (*start <= now && now < *end).then(|| ActiveFreeze {
                reason: reason.clone(),
                ends_at: *end,
                description: format!(
                    "frozen for {reason:?} until {} (fixed window from {})",
                    stamp(*end),
                    stamp(*start)
                ),
            })
        }
        Freeze::Recurring {
            cron,
            duration,
            timezone,
            reason,
        } => {
            let parsed = Cron::parse(cron).ok()?;
            let tz = zone(timezone.as_deref()).ok()?;
            let length = Duration::from_std(duration.0).ok()?;
            if length <= Duration::zero() {
                return None;
            }
            let start = parsed.latest_in(tz, now - length, now)?;
            let mut ends_at = start + length;
            // A later match before this window ends extends the freeze.
            for _ in 0..MAX_MERGES {
                match parsed.latest_in(tz, now, ends_at - Duration::nanoseconds(1)) {
                    Some(later) if later + length > ends_at => ends_at = later + length,
                    _ => break,
                }
            }
            Some(ActiveFreeze {
                reason: reason.clone(),
                ends_at,
                description: format!(
                    "frozen for {reason:?} until {} (cron {}, {}, {})",
                    stamp(ends_at),
                    cron.split_whitespace().collect::<Vec<_>>().join(" "),
                    span(duration.0),
                    timezone.as_deref().unwrap_or("UTC")
                ),
            })
        }
    }
}

/// A parsed 5-field cron expression: one bit per allowed value of each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// The day-of-month field starts with `*`.
    dom_star: bool,
    /// The day-of-week field starts with `*`.
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    /// Parses `minute hour day-of-month month day-of-week`.
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "{expression:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week)"
            ));
        };
        let named = |names: &'static [&'static str], first: u32| {
            move |token: &str| {
                names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(token))
                    .map(|i| i as u32 + first)
            }
        };
        let none = |_: &str| None;
        let minutes = field("minute", minute, 0, 59, &none)?;
        let hours = field("hour", hour, 0, 23, &none)?;
        let days_of_month = field("day-of-month", dom, 1, 31, &none)?;
        let months = field("month", month, 1, 12, &named(&MONTHS, 1))?;
        let mut days_of_week = field("day-of-week", dow, 0, 7, &named(&DAYS, 0))?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & 0x7f; // 7 is Sunday too
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week: days_of_week as u8,
            dom_star: dom.starts_with('*'),
            dow_star: dow.starts_with('*'),
        })
    }

    /// Whether the cron fires at the local wall-clock minute `at` (seconds ignored).
    pub fn matches(&self, at: NaiveDateTime) -> bool {
        self.day_matches(at.date())
            && self.hours & (1 << at.hour()) != 0
            && self.minutes & (1 << at.minute()) != 0
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The instants `local` (a wall-clock minute in `tz`) stands for: none is impossible, a
    /// skipped time counts one hour later, a repeated time counts twice.
    fn instants(tz: Tz, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
        use chrono::LocalResult;
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
            LocalResult::None => tz
                .from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .into_iter()
                .collect(),
        }
    }

    /// The latest match `t` with `after < t <= until`, looking at whole local days backwards
    /// (only days whose day fields match, then only matching hours and minutes).
    pub fn latest_in(
        &self,
        tz: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if until <= after {
            return None;
        }
        // One day of margin on each side covers every UTC offset.
        let last = until.with_timezone(&tz).date_naive().succ_opt()?;
        let first = after.with_timezone(&tz).date_naive().pred_opt()?;
        let mut day = last;
        for _ in 0..MAX_SEARCH_DAYS {
            if day < first {
                break;
            }
            if self.day_matches(day) {
                let best = (0..24u32)
                    .rev()
                    .filter(|h| self.hours & (1 << h) != 0)
                    .flat_map(|h| {
                        (0..60u32)
                            .rev()
                            .filter(|m| self.minutes & (1 << m) != 0)
                            .map(move |m| (h, m))
                    })
                    .filter_map(|(h, m)| day.and_hms_opt(h, m, 0))
                    .flat_map(|local| Cron::instants(tz, local))
                    .filter(|t| after < *t && *t <= until)
                    .max();
                if best.is_some() {
                    return best;
                }
            }
            day = day.pred_opt()?;
        }
        None
    }
}

/// Parses one field into a bit set over `min..=max`; `name` maps a name to its number.
fn field(
    what: &str,
    text: &str,
    min: u32,
    max: u32,
    name: &dyn Fn(&str) -> Option<u32>,
) -> Result<u64, String> {
    let bad = |detail: String| Err(format!("cron {what} field {text:?}: {detail}"));
    let value = |token: &str| -> Result<u32, String> {
        let n = match token.parse::<u32>() {
            Ok(n) => n,
            Err(_) => name(token).ok_or_else(|| {
                format!("cron {what} field {text:?}: {token:?} is neither a number nor a name")
            })?,
        };
        if n < min || n > max {
            return Err(format!(
                "cron {what} field {text:?}: {n} is outside {min}-{max}"
            ));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(step) if step > 0 => (range, step),
                _ => return bad(format!("step {step:?} must be a number above zero")),
            },
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { max } else { a })
        };
        if low > high {
            return bad(format!("range {range:?} goes backwards"));
        }
        for n in (low..=high).step_by(step as usize) {
            bits |= 1 << n;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use railyard_core::duration::HumanDuration;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn cron_fields_match_as_in_vixie_cron() {
        // (expression, local minute, matches)
        let cases = [
            ("* * * * *", "2026-03-02 09:17", true),
            ("0 15 * * FRI", "2026-11-27 15:00", true), // a Friday
            ("0 15 * * fri", "2026-11-27 15:01", false),
            ("0 15 * * FRI", "2026-11-26 15:00", false), // a Thursday
            ("0 15 * * 5", "2026-11-27 15:00", true),
            ("*/15 * * * *", "2026-03-02 09:45", true),
            ("*/15 * * * *", "2026-03-02 09:50", false),
            ("0,30 9-17 * * MON-FRI", "2026-03-02 17:30", true),
            ("0,30 9-17 * * MON-FRI", "2026-03-02 18:00", false),
            ("0,30 9-17 * * MON-FRI", "2026-03-01 10:00", false), // a Sunday
            ("0 0 * * 7", "2026-03-01 00:00", true),              // 7 is Sunday
            ("0 0 * * SUN", "2026-03-01 00:00", true),
            ("0 0 1 JAN-MAR *", "2026-02-01 00:00", true),
            ("0 0 1 JAN-MAR *", "2026-04-01 00:00", false),
            ("0 0 10-20/5 * *", "2026-04-15 00:00", true),
            ("0 0 10-20/5 * *", "2026-04-16 00:00", false),
            ("5/20 * * * *", "2026-04-16 00:45", true),
            // Both day fields restricted: either matches.
            ("0 0 13 * FRI", "2026-03-13 00:00", true), // Friday the 13th
            ("0 0 13 * FRI", "2026-03-06 00:00", true), // a Friday
            ("0 0 13 * FRI", "2026-04-13 00:00", true), // a Monday the 13th
            ("0 0 13 * FRI", "2026-04-14 00:00", false),
            // A day field starting with `*` makes both necessary.
            ("0 0 */2 * FRI", "2026-03-06 00:00", false), // Friday the 6th: even day
            ("0 0 */2 * FRI", "2026-03-13 00:00", true),
        ];
        for (expression, minute, expected) in cases {
            let cron = Cron::parse(expression).unwrap();
            assert_eq!(
                cron.matches(local(minute)),
                expected,
                "{expression} at {minute}"
            );
        }
    }

    #[test]
    fn bad_cron_fields_are_refused_with_the_field() {
        let cases = [
            ("0 15 * *", "5-field"),
            ("60 * * * *", "minute field \"60\": 60 is outside 0-59"),
            ("0 24 * * *", "hour field"),
            ("0 0 0 * *", "day-of-month field"),
            ("0 0 * 13 *", "month field"),
            ("0 0 * * FRY", "\"FRY\" is neither a number nor a name"),
            ("*/0 * * * *", "above zero"),
            ("0 5-1 * * *", "goes backwards"),
        ];
        for (expression, expected) in cases {
            let error = Cron::parse(expression).unwrap_err();
            assert!(error.contains(expected), "{expression}: {error}");
        }
    }

    fn weekend() -> Vec<Freeze> {
        vec![Freeze::Recurring {
            cron: "0 15 * * FRI".into(),
            duration: HumanDuration::from_secs(66 * 3600),
            timezone: Some("Europe/Berlin".into()),
            reason: "weekend freeze".into(),
        }]
    }

    #[test]
    fn the_weekend_freeze_covers_friday_afternoon_to_monday_morning_in_berlin() {
        // (now UTC, Berlin wall clock in the comment, ends_at if frozen)
        let cases = [
            // November 2026, CET (UTC+1): Fri 27 15:00 = 14:00Z, ends Mon 30 09:00 = 08:00Z.
            ("2026-11-27T13:59:00Z", None), // Fri 14:59
            ("2026-11-27T14:00:00Z", Some("2026-11-30T08:00:00Z")), // Fri 15:00
            ("2026-11-27T15:00:00Z", Some("2026-11-30T08:00:00Z")), // Fri 16:00
            ("2026-11-29T12:00:00Z", Some("2026-11-30T08:00:00Z")), // Sun 13:00
            ("2026-11-30T07:00:00Z", Some("2026-11-30T08:00:00Z")), // Mon 08:00
            ("2026-11-30T07:59:59Z", Some("2026-11-30T08:00:00Z")), // Mon 08:59:59
            ("2026-11-30T08:00:00Z", None), // Mon 09:00
            ("2026-11-30T08:30:00Z", None), // Mon 09:30
            ("2026-12-02T12:00:00Z", None), // Wed
            // DST ends Sun 25 Oct 2026: Fri 23 15:00 CEST = 13:00Z, + 66h = Mon 26 07:00Z,
            // which is 08:00 CET: the wall clock says the window is an hour shorter.
            ("2026-10-23T13:00:00Z", Some("2026-10-26T07:00:00Z")), // Fri 15:00 CEST
            ("2026-10-26T06:30:00Z", Some("2026-10-26T07:00:00Z")), // Mon 07:30 CET
            ("2026-10-26T07:30:00Z", None),                         // Mon 08:30 CET
            // DST starts Sun 29 Mar 2026: Fri 27 15:00 CET = 14:00Z, + 66h = Mon 30 08:00Z,
            // which is 10:00 CEST: an hour longer on the wall clock.
            ("2026-03-30T07:30:00Z", Some("2026-03-30T08:00:00Z")), // Mon 09:30 CEST
            ("2026-03-30T08:00:00Z", None),                         // Mon 10:00 CEST
        ];
        for (now, ends) in cases {
            let active = active_freeze(&weekend(), at(now));
            assert_eq!(active.as_ref().map(|a| a.ends_at), ends.map(at), "at {now}");
        }
        let active = active_freeze(&weekend(), at("2026-11-27T15:00:00Z")).unwrap();
        assert_eq!(active.reason, "weekend freeze");
        assert_eq!(
            active.description,
            "frozen for \"weekend freeze\" until 2026-11-30T08:00:00Z (cron 0 15 * * FRI, 66h, Europe/Berlin)"
        );
    }

    #[test]
    fn fixed_windows_and_overlaps() {
        let holidays = Freeze::Fixed {
            start: at("2026-12-23T00:00:00Z"),
            end: at("2027-01-02T00:00:00Z"),
            reason: "holidays".into(),
        };
        let cases = [
            ("2026-12-22T23:59:59Z", None),
            ("2026-12-23T00:00:00Z", Some("2027-01-02T00:00:00Z")),
            ("2027-01-01T23:59:59Z", Some("2027-01-02T00:00:00Z")),
            ("2027-01-02T00:00:00Z", None),
        ];
        for (now, ends) in cases {
            let active = active_freeze(std::slice::from_ref(&holidays), at(now));
            assert_eq!(active.map(|a| a.ends_at), ends.map(at), "at {now}");
        }
        assert_eq!(
            active_freeze(std::slice::from_ref(&holidays), at("2026-12-24T00:00:00Z"))
                .unwrap()
                .description,
            "frozen for \"holidays\" until 2027-01-02T00:00:00Z (fixed window from 2026-12-23T00:00:00Z)"
        );
        // Both windows: the one ending last wins (Fri 25 Dec 2026 15:00 CET opens a weekend
        // freeze ending Mon 28 Dec 08:00Z, inside the holidays).
        let mut both = weekend();
        both.push(holidays);
        let active = active_freeze(&both, at("2026-12-26T00:00:00Z")).unwrap();
        assert_eq!(active.reason, "holidays");
        // Windows that chain merge: every 30 minutes for 1h is one long freeze until the
        // last match's end; here the cron stops at 17:30 UTC.
        let chained = [Freeze::Recurring {
            cron: "0,30 9-17 * * *".into(),
            duration: HumanDuration::from_secs(3600),
            timezone: None,
            reason: "office hours".into(),
        }];
        let active = active_freeze(&chained, at("2026-03-02T10:10:00Z")).unwrap();
        assert_eq!(active.ends_at, at("2026-03-02T18:30:00Z"));
        assert!(
            active
                .description
                .ends_with("(cron 0,30 9-17 * * *, 1h, UTC)")
        );
        assert_eq!(active_freeze(&chained, at("2026-03-02T18:30:00Z")), None);
    }

    #[test]
    fn validation_names_bad_crons_and_zones() {
        let freeze = |cron: &str, tz: &str| Freeze::Recurring {
            cron: cron.into(),
            duration: HumanDuration::from_secs(60),
            timezone: Some(tz.into()),
            reason: "x".into(),
        };
        assert_eq!(validate(&freeze("0 15 * * FRI", "Europe/Berlin")), Ok(()));
        assert!(
            validate(&freeze("0 15 * * FRI", "Europe/Atlantis"))
                .unwrap_err()
                .contains("not an IANA time zone")
        );
        assert!(validate(&freeze("0 15 * * FRI-", "UTC")).is_err());
    }

    #[test]
    fn a_long_rare_window_is_found_quickly() {
        // Yearly, 300 days long: the search walks ~300 days but only one matches.
        let yearly = [Freeze::Recurring {
            cron: "0 0 1 JAN *".into(),
            duration: HumanDuration::from_secs(300 * 86_400),
            timezone: Some("America/New_York".into()),
            reason: "yearly".into(),
        }];
        let begun = std::time::Instant::now();
        let active = active_freeze(&yearly, at("2026-10-01T00:00:00Z")).unwrap();
        assert_eq!(
            active.ends_at,
            at("2026-01-01T05:00:00Z") + Duration::days(300)
        );
        assert!(begun.elapsed() < std::time::Duration::from_secs(1));
    }
}
