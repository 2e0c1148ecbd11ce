//! Block Kit messages that always fit Slack's limits: at most 50 blocks, a header of at most
//! 150 characters, section text of at most 3,000, at most 10 fields of at most 2,000 each.
//! Text is cut with "…", lists end in "and N more", and a message with too many blocks keeps
//! its first 49 and says how many more there were: Slack never refuses what this builds.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Most blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Most characters in a header block's text.
pub const MAX_HEADER: usize = 150;
/// Most characters in a section's text.
pub const MAX_SECTION: usize = 3000;
/// Most fields in one section.
pub const MAX_FIELDS: usize = 10;
/// Most characters in one field.
pub const MAX_FIELD: usize = 2000;
/// Most elements in a context block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Most characters in one context element (Slack allows 3,000; kept short on purpose).
pub const MAX_CONTEXT_TEXT: usize = 2000;
/// Most characters of the notification text (Slack refuses 40,000 with `msg_too_long`).
pub const MAX_TEXT: usize = 3000;
/// Elements of an actions block.
pub const MAX_ACTIONS: usize = 25;
/// A button's value.
pub const MAX_BUTTON_VALUE: usize = 2000;

/// A button with a confirm dialog (Block Kit): `style` is `primary` or `danger`; `confirm` is
/// (title, mrkdwn text, confirm label). Texts are cut to Slack's limits (button 75, title 100,
/// dialog text 300, labels 30 characters); `None` when `value` is over
/// [`MAX_BUTTON_VALUE`], since a cut value would name something else.
pub fn button(
    action_id: &str,
    label: &str,
    style: &str,
    value: &str,
    confirm: (&str, &str, &str),
) -> Option<Value> {
    if value.chars().count() > MAX_BUTTON_VALUE {
        return None;
    }
    let (title, text, yes) = confirm;
    Some(json!({
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": truncate(label, 75), "emoji": true},
        "style": style,
        "value": value,
        "confirm": {
            "title": {"type": "plain_text", "text": truncate(title, 100)},
            "text": {"type": "mrkdwn", "text": truncate(text, 300)},
            "confirm": {"type": "plain_text", "text": truncate(yes, 30)},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": style,
        },
    }))
}

/// One message: the notification text (shown in notifications and by clients without
/// blocks) and its blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Plain notification text.
    pub text: String,
    /// Block Kit blocks.
    pub blocks: Vec<Value>,
}

/// Escapes the three characters Slack's mrkdwn reserves.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to at most `max` characters, ending in "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// "and N more" in the house's words.
pub fn and_more(n: usize) -> String {
    format!("_… and {n} more_")
}

/// `title` then one line per item, as many as fit in `max` characters and at most
/// `max_items`, ending in "and N more" when some were left out.
pub fn fit_lines(title: &str, items: &[String], max_items: usize, max: usize) -> String {
    let mut out = title.to_owned();
    let reserve = and_more(items.len()).chars().count() + 1;
    let mut used = out.chars().count();
    let mut shown = 0;
    for (i, item) in items.iter().enumerate() {
        if shown == max_items {
            break;
        }
        let last = i + 1 == items.len();
        let room = if last { max } else { max - reserve };
        let line = truncate(item, (max - reserve).saturating_sub(1).max(1));
        let len = line.chars().count() + usize::from(!out.is_empty());
        if used + len > room {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&line);
        used += len;
        shown += 1;
    }
    if shown < items.len() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&and_more(items.len() - shown));
    }
    truncate(&out, max)
}

/// Builds the blocks of one message within Slack's limits.
#[derive(Debug, Default)]
pub struct Blocks {
    blocks: Vec<Value>,
}

impl Blocks {
    /// No blocks yet.
    pub fn new() -> Blocks {
        Blocks::default()
    }

    /// How many blocks so far.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// A header (plain text, at most 150 characters).
    pub fn header(&mut self, text: &str) -> &mut Blocks {
        self.blocks.push(json!({
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER), "emoji": true},
        }));
        self
    }

    /// A section of mrkdwn text (at most 3,000 characters).
    pub fn section(&mut self, text: &str) -> &mut Blocks {
        self.blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION)},
        }));
        self
    }

    /// A section of two-column fields (at most 10, each at most 2,000 characters; the tenth
    /// says how many more there were).
    pub fn fields(&mut self, fields: &[String]) -> &mut Blocks {
        let mut shown: Vec<String> = fields
            .iter()
            .take(MAX_FIELDS)
            .map(|f| truncate(f, MAX_FIELD))
            .collect();
        if fields.len() > MAX_FIELDS {
            shown.truncate(MAX_FIELDS - 1);
            shown.push(and_more(fields.len() - (MAX_FIELDS - 1)));
        }
        let fields: Vec<Value> = shown
            .into_iter()
            .map(|text| json!({"type": "mrkdwn", "text": text}))
            .collect();
        self.blocks
            .push(json!({"type": "section", "fields": fields}));
        self
    }

    /// A titled list in one section, "and N more" when it does not fit.
    pub fn list(&mut self, title: &str, items: &[String], max_items: usize) -> &mut Blocks {
        self.section(&fit_lines(title, items, max_items, MAX_SECTION))
    }

    /// A context block of small mrkdwn elements (at most 10).
    pub fn context(&mut self, elements: &[String]) -> &mut Blocks {
        let elements: Vec<Value> = elements
            .iter()
            .filter(|e| !e.is_empty())
            .take(MAX_CONTEXT_ELEMENTS)
            .map(|text| json!({"type": "mrkdwn", "text": truncate(text, MAX_CONTEXT_TEXT)}))
            .collect();
        if !elements.is_empty() {
            self.blocks
                .push(json!({"type": "context", "elements": elements}));
        }
        self
    }

    /// An actions block (at most 25 elements, such as [`button`]s).
    pub fn actions(&mut self, block_id: &str, elements: Vec<Value>) -> &mut Blocks {
        self.blocks.push(json!({
            "type": "actions",
            "block_id": block_id,
            "elements": elements.into_iter().take(MAX_ACTIONS).collect::<Vec<_>>(),
        }));
        self
    }

    /// A divider.
    pub fn divider(&mut self) -> &mut Blocks {
        self.blocks.push(json!({"type": "divider"}));
        self
    }

    /// The message: at most 50 blocks (the 50th says how many more there were) and a
    /// notification text of at most 3,000 characters.
    pub fn finish(self, text: &str) -> Message {
        let mut blocks = self.blocks;
        if blocks.len() > MAX_BLOCKS {
            let more = blocks.len() - (MAX_BLOCKS - 1);
            blocks.truncate(MAX_BLOCKS - 1);
            blocks.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": and_more(more)}],
            }));
        }
        Message {
            text: truncate(text, MAX_TEXT),
            blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_end_in_and_n_more_within_the_limit() {
        let items: Vec<String> = (0..300)
            .map(|i| format!("• service-{i:03} 1.0.{i}"))
            .collect();
        let text = fit_lines("*Changes*", &items, usize::MAX, MAX_SECTION);
        assert!(text.chars().count() <= MAX_SECTION);
        let shown = text.lines().filter(|l| l.starts_with('•')).count();
        assert!(text.ends_with(&and_more(300 - shown)), "{text}");
        let short = fit_lines("*Changes*", &items[..3], 20, MAX_SECTION);
        assert!(!short.contains("more"));
        let capped = fit_lines("*Changes*", &items, 5, MAX_SECTION);
        assert!(capped.ends_with(&and_more(295)));
    }

    #[test]
    fn a_single_huge_item_is_cut_not_dropped() {
        let items = vec!["x".repeat(10_000)];
        let text = fit_lines("", &items, 10, MAX_SECTION);
        assert!(text.chars().count() <= MAX_SECTION);
        assert!(text.starts_with("xxx"));
    }

    #[test]
    fn messages_keep_slacks_limits() {
        let mut blocks = Blocks::new();
        blocks.header(&"h".repeat(400));
        for i in 0..80 {
            blocks.section(&format!("{i}{}", "s".repeat(5000)));
        }
        blocks.fields(&(0..15).map(|i| "f".repeat(3000 + i)).collect::<Vec<_>>());
        let message = blocks.finish(&"t".repeat(50_000));
        assert_eq!(message.blocks.len(), MAX_BLOCKS);
        assert_eq!(
            message.blocks[0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            MAX_HEADER
        );
        assert!(message.text.chars().count() <= MAX_TEXT);
        let last = &message.blocks[MAX_BLOCKS - 1]["elements"][0]["text"];
        assert_eq!(last, &json!(and_more(81 + 1 - (MAX_BLOCKS - 1))));
    }
}
