//! Audit projection and read side (issue 5, not built yet): a hash-chained record of every
//! event, release status, live events and compliance queries. This crate holds no code
//! until that issue lands.
#![forbid(unsafe_code)]
