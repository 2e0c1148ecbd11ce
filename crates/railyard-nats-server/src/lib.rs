//! The one launcher of `nats-server`, shared by `railyard dev`'s embedded server and
//! `railyard-testkit`: [`locate`] finds the binary, [`ServerCommand`] starts it and waits until
//! it is ready, and [`NatsProcess`] drains its log, stops it (SIGTERM, then SIGKILL) and kills
//! it on drop.
#![forbid(unsafe_code)]

mod locate;
mod process;

pub use locate::{NATS_SERVER_BIN, locate};
pub use process::{NatsProcess, ServerCommand, process_alive};
