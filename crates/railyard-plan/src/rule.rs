//! The named rules that add edges to a plan, and the names they carry in edges and refusals.

use std::fmt;

/// A rule that orders steps. Its name is the `rule` of every edge it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A deploy before its verify; an environment's approval before its first steps.
    StepOrder,
    /// A service's (or migration's) steps wait for the same one done in the environment
    /// before; an approval waits for the environment before to finish.
    EnvironmentOrder,
    /// Queue message versions: every running consumer reads what every running producer emits.
    Queue,
    /// API versions: every running consumer's required range meets what its provider serves.
    Api,
    /// Database schema versions: every running user works with the database's version.
    Schema,
    /// Releases touching the same service or database go in request order; a release that
    /// needs what an earlier one ships waits for it.
    CrossRelease,
    /// `after` in the catalog or the release.
    Explicit,
    /// A point of no return waits for its approval (or is refused), per the environment's
    /// `point_of_no_return` policy.
    PointOfNoReturn,
}

impl Rule {
    /// The lowercase name used in edges and refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::StepOrder => "step-order",
            Rule::EnvironmentOrder => "environment-order",
            Rule::Queue => "queue",
            Rule::Api => "api",
            Rule::Schema => "schema",
            Rule::CrossRelease => "cross-release",
            Rule::Explicit => "explicit",
            Rule::PointOfNoReturn => "point-of-no-return",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
