//! Slack notifier (issue 7, not built yet): one thread per release in each channel it
//! reaches. This crate holds no code until that issue lands.
#![forbid(unsafe_code)]
