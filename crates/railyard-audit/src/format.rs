//! Output of query results as an aligned text table, JSON or CSV (RFC 4180 quoting), the same
//! for the CLI and for HTTP's `format=csv` export.

use serde::Serialize;

use crate::items::{ApprovalItem, EventItem, GateItem, RejectionItem};
use crate::report::ReportRow;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// An aligned text table.
    #[default]
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Something that can be a row.
pub trait Tabular: Serialize {
    /// Column names.
    fn headers() -> &'static [&'static str];
    /// This item's cells, one per column.
    fn cells(&self) -> Vec<String>;
}

fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Tabular for EventItem {
    fn headers() -> &'static [&'static str] {
        &["n", "at", "type", "aggregate", "actor", "summary"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.n.to_string(),
            time(&self.at),
            self.kind.clone(),
            self.aggregate.clone(),
            self.actor.clone(),
            self.summary.clone(),
        ]
    }
}

impl Tabular for ApprovalItem {
    fn headers() -> &'static [&'static str] {
        &[
            "at",
            "release",
            "step",
            "decision",
            "by",
            "approvers",
            "recorded_by",
            "comment",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            time(&self.at),
            self.release.clone(),
            self.step.clone(),
            self.decision.clone(),
            self.by.clone(),
            self.approvers.join(" "),
            self.recorded_by.clone(),
            self.comment.clone(),
        ]
    }
}

impl Tabular for GateItem {
    fn headers() -> &'static [&'static str] {
        &[
            "at", "release", "env", "service", "gate", "verdict", "observed", "expected",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            time(&self.at),
            self.release.clone(),
            self.env.clone(),
            self.service.clone(),
            self.gate.clone(),
            if self.passed { "pass" } else { "fail" }.into(),
            self.observed.clone(),
            self.expected.clone(),
        ]
    }
}

impl Tabular for RejectionItem {
    fn headers() -> &'static [&'static str] {
        &["sequence", "received_at", "source", "origin", "reason"]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.sequence.to_string(),
            time(&self.received_at),
            self.source.clone(),
            self.origin.clone(),
            self.reason.clone(),
        ]
    }
}

impl Tabular for ReportRow {
    fn headers() -> &'static [&'static str] {
        &[
            "service",
            "version",
            "artifact",
            "commits",
            "release",
            "requested_by",
            "approvers",
            "gates",
            "outcome",
            "started_at",
            "ended_at",
        ]
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.service.clone(),
            self.version.clone(),
            self.artifact.clone().unwrap_or_default(),
            self.commit_range.clone(),
            self.release.clone(),
            self.requested_by.clone(),
            self.approvers
                .iter()
                .map(|a| {
                    if a.comment.is_empty() {
                        a.by.clone()
                    } else {
                        format!("{} ({})", a.by, a.comment)
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            self.gates
                .iter()
                .map(|g| format!("{}={}", g.gate, if g.passed { "pass" } else { "fail" }))
                .collect::<Vec<_>>()
                .join(" "),
            self.outcome.clone(),
            time(&self.started_at),
            self.ended_at.as_ref().map(time).unwrap_or_default(),
        ]
    }
}

fn csv_cell(cell: &str, out: &mut String) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

fn csv_row<'a>(cells: impl IntoIterator<Item = &'a str>, out: &mut String) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(cell, out);
    }
    out.push_str("\r\n");
}

impl Tabular for crate::dora::DoraRow {
    fn headers() -> &'static [&'static str] {
        &[
            "group",
            "name",
            "env",
            "deployments",
            "deployments_per_day",
            "lead_time_p50",
            "lead_time_p90",
            "lead_time_unknown",
            "failed",
            "change_failure_rate",
            "time_to_restore_p50",
            "unrestored",
        ]
    }

    fn cells(&self) -> Vec<String> {
        let seconds = |s: Option<i64>| s.map(duration).unwrap_or_default();
        vec![
            serde_json::to_value(self.group)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            self.name.clone(),
            self.env.clone(),
            self.deployments.to_string(),
            format!("{:.2}", self.deployments_per_day),
            seconds(self.lead_time_p50_seconds),
            seconds(self.lead_time_p90_seconds),
            self.lead_time_unknown.to_string(),
            self.failed.to_string(),
            self.change_failure_rate
                .map(|rate| format!("{:.1}%", rate * 100.0))
                .unwrap_or_default(),
            seconds(self.time_to_restore_p50_seconds),
            self.unrestored.to_string(),
        ]
    }
}

/// `1d 2h`, `3h 5m`, `4m 10s`, `12s`: the two largest units.
fn duration(seconds: i64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = seconds.max(0);
    for (size, unit) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// CSV with a header row.
pub fn csv<T: Tabular>(items: &[T]) -> String {
    let mut out = String::new();
    csv_row(T::headers().iter().copied(), &mut out);
    for item in items {
        let cells = item.cells();
        csv_row(cells.iter().map(String::as_str), &mut out);
    }
    out
}

/// An aligned table; cells are kept on one line and cut at 80 characters.
pub fn table<T: Tabular>(items: &[T]) -> String {
    let clean = |cell: String| {
        let cell = cell.replace(['\n', '\r'], " ");
        if cell.chars().count() > 80 {
            let cut: String = cell.chars().take(79).collect();
            format!("{cut}…")
        } else {
            cell
        }
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| item.cells().into_iter().map(clean).collect())
        .collect();
    let headers: Vec<String> = T::headers().iter().map(|h| h.to_uppercase()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&headers).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `items` in `format`.
pub fn render<T: Tabular>(items: &[T], format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => table(items),
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(items).expect("query items serialize");
            text.push('\n');
            text
        }
        OutputFormat::Csv => csv(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut out = String::new();
        csv_row(["plain", "a,b", "say \"hi\"", "two\nlines"], &mut out);
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n");
    }
}
