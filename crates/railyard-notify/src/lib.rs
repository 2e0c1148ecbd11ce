//! The Slack notifier: follows the event stream and tells Slack how each release moves —
//! one thread per release in each channel it reaches (the default channel and its services'
//! `slack_channel`), with the environment, the commit range, the health, and, when something
//! stops, why and who should act: every failure, rollback, hold, denial, refusal and old
//! colour left running names the catalog's `owner` of the services concerned ("team-orders
//! (owner of orders-api) should look at it") in its message and in the root message's
//! summary.
//!
//! # Shape
//!
//! [`run`] reads `RAILYARD_EVENTS` in stream order with an ordered consumer that starts at its
//! ledger's checkpoint (like every read model, see ARCHITECTURE.md): it is its own reader, so
//! a slow or absent Slack never slows a release. Per stream message it folds the release into
//! a [`ReleaseView`] (changes, channels, plan and progress, the commits each environment ran
//! when it was planned), renders one [`Note`] per event worth telling ([`render`]: planned,
//! step started/succeeded, gate failed, held, approval requested, completed, rolled back,
//! refused, …), and sends it to every channel whose verbosity (`all`, `changes`,
//! `exceptions`) hears it. With the Web API transport the first message in a channel posts the
//! release's root message and every message is a reply in its thread; after each stream
//! message (or batch, below) the root's summary — status line, and the exception with who
//! should act — is brought up to date with `chat.update`. With incoming webhooks every
//! message stands alone. Messages always fit Slack's limits ([`blocks`]).
//!
//! # Delivery
//!
//! Calls go one at a time, at most one per destination per `pacing` (1 s by default;
//! `railyard notify --slack-pacing`, `RAILYARD_SLACK_PACING`). When calls are paced and the
//! notifier is behind — the stream already holds more of the release than it has told — it
//! tells that run of the release's messages as one batch: step updates (started, succeeded,
//! undone, colour retired) waiting in a row for one thread become one digest reply, and each
//! root message is updated once for the batch. Exceptions, approvals and milestones always
//! stand alone, and a notifier that keeps up tells every event as it comes. A 429
//! waits `Retry-After` on the [`Clock`](railyard_core::Clock) and sends the same payload again;
//! 5xx answers, timeouts and Slack's transient errors are retried with backoff; any other
//! refusal (a 4xx, or `ok: false` such as `invalid_blocks`, `channel_not_found`) is logged
//! with Slack's error and the stream message is copied to the dead-letter stream with it,
//! and the notifier goes on.
//!
//! # Why a restart loses and repeats nothing, and a crash repeats at most one message
//!
//! The "sent" mark and the stream position are the same thing: one checkpoint in the
//! notifier's ledger ([`ledger`]), committed atomically with what the call changed. Its upper
//! bits are the stream sequence, its lower bits count the calls made for that message. After
//! every Slack call that Slack accepted (or refused for good) the notifier commits, in one
//! sled batch, the call's effect — the root message's `ts` and channel id, how many of the
//! message's calls are done — with the next checkpoint, and flushes it to disk before making
//! the next call. The calls a stream message needs are a pure function of the release's
//! view *before* that message (committed only when the message is done) and its events, so
//! after a restart the same list is rebuilt and resumed at the first call not recorded. A
//! batch records its last stream sequence with its first call, so the same batch is rebuilt
//! whatever the stream holds by then.
//!
//! - A graceful stop (the `shutdown` token) is only acted on between calls: the call in
//!   flight completes and is committed; a pacing, `Retry-After` or backoff wait is abandoned
//!   *before* sending. Nothing is lost, nothing repeats.
//! - A crash (or power loss) can only fall between Slack accepting a call and that call's
//!   commit reaching disk: that one call is made again. A root message is its own call, so a
//!   repeated root never re-posts a reply, and the reply then goes to the recorded thread.
//! - The dead letter of a refused message is written before the message is marked done; a
//!   repeat after a crash is a duplicate the dead-letter stream drops (its message id).
//!
//! The ledger is not a read model to rebuild: replaying it would post every message again.
//! A lost ledger starts over with [`History::Skip`]: it reads the stream to rebuild the
//! views and sends nothing for what was already there.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blocks;
mod config;
mod error;
pub mod ledger;
pub mod render;
mod service;
pub mod slack;
pub mod view;

pub use blocks::Message;
pub use config::{Backoff, BotToken, History, NotifyConfig, SLACK_API, Transport};
pub use error::NotifyError;
pub use render::Note;
pub use service::{CONSUMER, run, run_replica};
pub use view::ReleaseView;
