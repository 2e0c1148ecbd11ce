//! The parsers of each door without a bus, for the fuzz targets in `fuzz/`: what [`Intake`]
//! runs on a delivery before anything is appended. Not a stable API.
//!
//! [`Intake`]: crate::Intake

use railyard_core::Catalog;

pub use crate::mapped::{Mapped, Parsed, Running, Signal};
use crate::{Headers, Refused, cdevents, github, gitlab};

/// A CDEvent (bare, or CloudEvents structured or binary) parsed, validated and mapped.
pub fn cdevent(catalog: &Catalog, headers: &Headers, body: &[u8]) -> Result<Parsed, Refused> {
    cdevents::parse(&crate::mapped::Resolver::new(catalog), headers, body)
}

/// A GitHub delivery mapped (after its signature was checked).
pub fn github(catalog: &Catalog, headers: &Headers, body: &[u8]) -> Result<Parsed, Refused> {
    github::parse(&crate::mapped::Resolver::new(catalog), headers, body)
}

/// A GitLab delivery mapped (after its token was checked).
pub fn gitlab(catalog: &Catalog, headers: &Headers, body: &[u8]) -> Result<Parsed, Refused> {
    gitlab::parse(&crate::mapped::Resolver::new(catalog), headers, body)
}
