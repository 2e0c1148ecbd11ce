//! Trigger intake (issue 3, not built yet): the front door for CI systems — CDEvents over
//! CloudEvents HTTP and NATS, GitHub and GitLab webhooks — validated, de-duplicated and
//! turned into `release.requested` events. This crate holds no code until that issue lands.
#![forbid(unsafe_code)]
