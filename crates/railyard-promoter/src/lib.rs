//! Promotion workers (issue 6, not built yet): carry out `release.planned` step by step
//! behind gates, with leases, deploy adapters, rollback, holds, approvals and freezes.
//! This crate holds no code until that issue lands.
#![forbid(unsafe_code)]
