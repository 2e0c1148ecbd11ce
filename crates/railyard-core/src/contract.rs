//! The contract model (INTERFACES §2): integer contract versions and the ranges services
//! accept, produce, provide or require.

use std::fmt;

/// A contract version: a queue message version, an API version or a database schema version.
pub type Version = u32;

/// A range of contract versions: `N`, `N..=M` or `>=N`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// Lowest accepted version.
    pub lo: Version,
    /// Highest accepted version, `None` for `>=N`.
    pub hi: Option<Version>,
}

/// A range that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a version range: expected N, N..=M (N <= M) or >=N")]
pub struct InvalidRange {
    /// The text as given.
    pub input: String,
}

impl Range {
    /// Exactly one version.
    pub const fn exactly(v: Version) -> Range {
        Range { lo: v, hi: Some(v) }
    }

    /// `lo..=hi`; `None` when `lo > hi`.
    pub fn between(lo: Version, hi: Version) -> Option<Range> {
        (lo <= hi).then_some(Range { lo, hi: Some(hi) })
    }

    /// `>=lo`.
    pub const fn at_least(lo: Version) -> Range {
        Range { lo, hi: None }
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: Version) -> bool {
        v >= self.lo && self.hi.is_none_or(|hi| v <= hi)
    }

    /// Whether the two ranges share at least one version.
    pub fn intersects(&self, other: &Range) -> bool {
        let lo = self.lo.max(other.lo);
        match (self.hi, other.hi) {
            (Some(a), Some(b)) => lo <= a.min(b),
            (Some(a), None) | (None, Some(a)) => lo <= a,
            (None, None) => true,
        }
    }

    /// Whether every version of `other` lies in `self`.
    pub fn covers(&self, other: &Range) -> bool {
        other.lo >= self.lo
            && match (self.hi, other.hi) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => b <= a,
            }
    }
}

impl std::str::FromStr for Range {
    type Err = InvalidRange;

    fn from_str(input: &str) -> Result<Range, InvalidRange> {
        let err = || InvalidRange {
            input: input.to_owned(),
        };
        let s = input.trim();
        let num = |t: &str| t.trim().parse::<Version>().map_err(|_| err());
        if let Some(rest) = s.strip_prefix(">=") {
            Ok(Range::at_least(num(rest)?))
        } else if let Some((lo, hi)) = s.split_once("..=") {
            Range::between(num(lo)?, num(hi)?).ok_or_else(err)
        } else {
            Ok(Range::exactly(num(s)?))
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hi {
            None => write!(f, ">={}", self.lo),
            Some(hi) if hi == self.lo => write!(f, "{hi}"),
            Some(hi) => write!(f, "{}..={hi}", self.lo),
        }
    }
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Range {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Range {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Range, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Range;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version range: N, \"N..=M\" or \">=N\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Range, E> {
                Version::try_from(v)
                    .map(Range::exactly)
                    .map_err(|_| E::custom(format!("version {v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Range, E> {
                u64::try_from(v)
                    .map_err(|_| {
                        E::custom(format!("version {v} is negative: versions are 0 or more"))
                    })
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Range, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Range {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Range".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A contract version range: N, \"N..=M\" or \">=N\".",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*(>=\\s*\\d+|\\d+\\s*\\.\\.=\\s*\\d+|\\d+)\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_every_form() {
        for s in ["3", "2..=3", ">=5"] {
            assert_eq!(r(s).to_string(), s);
        }
        assert_eq!(r("4..=4").to_string(), "4");
        for bad in ["", "3..=2", "x", ">=", "-1", "1..2"] {
            assert!(bad.parse::<Range>().is_err(), "{bad}");
        }
    }

    #[test]
    fn membership_and_intersection() {
        assert!(r("2..=3").contains(3));
        assert!(!r("2..=3").contains(4));
        assert!(r(">=5").contains(500));
        assert!(r("4..=5").intersects(&r(">=5")));
        assert!(!r("1..=4").intersects(&r(">=5")));
        assert!(r(">=1").intersects(&r(">=9")));
        assert!(r("1..=5").covers(&r("2..=3")));
        assert!(!r("1..=5").covers(&r(">=2")));
    }
}
