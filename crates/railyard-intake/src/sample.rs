//! Which unauthenticated refusals reach the rejection log: a token bucket per origin and one
//! for all origins together, read on the intake's clock. Every refusal is counted in the
//! metrics; only a sample is written, so a flood cannot evict real rejections from the
//! size-limited log (it discards its oldest entries). A pure decider: no IO, time is passed in.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_core::duration::HumanDuration;

/// Origins tracked one by one; past this, idle ones are forgotten, and new ones are held only
/// to the limit for all origins together.
const MAX_ORIGINS: usize = 10_000;

/// `count` per `every`, with bursts of up to `count`: `10/1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: u32,
    /// Per how long.
    pub every: Duration,
}

impl Rate {
    /// `count` per `every`.
    pub const fn new(count: u32, every: Duration) -> Rate {
        Rate { count, every }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let wrong = || {
            format!(
                "{text:?} is not a rate: write a count and a duration, e.g. 10/1m (ten per minute)"
            )
        };
        let (count, every) = text.trim().split_once('/').ok_or_else(wrong)?;
        let count = count.trim().parse().map_err(|_| wrong())?;
        let every = every
            .trim()
            .parse::<HumanDuration>()
            .map_err(|_| wrong())?
            .0;
        if every.is_zero() {
            return Err(wrong());
        }
        Ok(Rate { count, every })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, HumanDuration(self.every))
    }
}

/// How many unauthenticated refusals are written to the rejection log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectionSampling {
    /// Per origin (an IPv4 address, an IPv6 /64).
    pub per_origin: Rate,
    /// All origins together.
    pub total: Rate,
}

impl Default for RejectionSampling {
    /// 10 a minute per origin, 100 a minute in all: a flood of 100,000 requests a minute
    /// leaves a 100,000-entry log's older entries in place for over 16 hours.
    fn default() -> RejectionSampling {
        RejectionSampling {
            per_origin: Rate::new(10, Duration::from_secs(60)),
            total: Rate::new(100, Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    fn full(rate: Rate, now: DateTime<Utc>) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: DateTime<Utc>) {
        let elapsed = (now - self.at).to_std().unwrap_or_default();
        let gained = elapsed.as_secs_f64() / rate.every.as_secs_f64() * f64::from(rate.count);
        self.tokens = (self.tokens + gained).min(f64::from(rate.count));
        self.at = self.at.max(now);
    }

    fn take(&mut self, rate: Rate, now: DateTime<Utc>) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.count)
    }
}

/// Decides, refusal by refusal, whether it is written to the log.
#[derive(Debug)]
pub struct Sampler {
    rates: RejectionSampling,
    origins: HashMap<String, Bucket>,
    all: Option<Bucket>,
}

impl Sampler {
    /// A sampler at `rates`, every bucket full.
    pub fn new(rates: RejectionSampling) -> Sampler {
        Sampler {
            rates,
            origins: HashMap::new(),
            all: None,
        }
    }

    /// Whether a refusal from `origin` (its limit key) at `now` is written to the log.
    pub fn admit(&mut self, origin: &str, now: DateTime<Utc>) -> bool {
        let rates = self.rates;
        if !self.origins.contains_key(origin) && self.origins.len() >= MAX_ORIGINS {
            self.origins.retain(|_, bucket| {
                bucket.refill(rates.per_origin, now);
                !bucket.is_full(rates.per_origin)
            });
        }
        let own = if self.origins.len() < MAX_ORIGINS || self.origins.contains_key(origin) {
            self.origins
                .entry(origin.to_owned())
                .or_insert_with(|| Bucket::full(rates.per_origin, now))
                .take(rates.per_origin, now)
        } else {
            true
        };
        own && self
            .all
            .get_or_insert_with(|| Bucket::full(rates.total, now))
            .take(rates.total, now)
    }

    /// How many origins are tracked one by one.
    #[cfg(test)]
    fn origins(&self) -> usize {
        self.origins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000 + seconds, 0).expect("a time")
    }

    fn sampler(per_origin: &str, total: &str) -> Sampler {
        Sampler::new(RejectionSampling {
            per_origin: per_origin.parse().unwrap(),
            total: total.parse().unwrap(),
        })
    }

    #[test]
    fn each_origin_gets_a_burst_then_its_rate() {
        let mut sampler = sampler("3/1m", "1000/1m");
        let admitted = (0..100).filter(|_| sampler.admit("a", at(0))).count();
        assert_eq!(admitted, 3);
        // Another origin has its own budget.
        assert!(sampler.admit("b", at(0)));
        // 20 s later one more from "a" (3 a minute), not two.
        assert!(sampler.admit("a", at(20)));
        assert!(!sampler.admit("a", at(20)));
        // After a quiet minute, a full burst again.
        let admitted = (0..100).filter(|_| sampler.admit("a", at(200))).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn all_origins_together_are_limited_too() {
        let mut sampler = sampler("3/1m", "5/1m");
        let admitted = (0..100)
            .filter(|n| sampler.admit(&format!("origin-{n}"), at(0)))
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn idle_origins_are_forgotten_when_there_are_too_many() {
        let mut sampler = sampler("1/1m", "1000000/1s");
        for n in 0..MAX_ORIGINS {
            sampler.admit(&format!("origin-{n}"), at(0));
        }
        assert_eq!(sampler.origins(), MAX_ORIGINS);
        // Still full of busy origins: a new one is held to the total only, and not tracked.
        assert!(sampler.admit("new", at(1)));
        assert_eq!(sampler.origins(), MAX_ORIGINS);
        // A minute later they are idle again and make room.
        assert!(sampler.admit("newer", at(61)));
        assert_eq!(sampler.origins(), 1);
    }

    #[test]
    fn rates_parse_or_say_how_to_write_them() {
        let rate: Rate = "10/1m".parse().unwrap();
        assert_eq!(rate, Rate::new(10, Duration::from_secs(60)));
        assert_eq!(rate.to_string(), "10/1m");
        assert_eq!(
            "0/30s".parse::<Rate>().unwrap(),
            Rate::new(0, Duration::from_secs(30))
        );
        for bad in ["10", "ten/1m", "10/forever", "10/0s", "-1/1m"] {
            let error = bad.parse::<Rate>().unwrap_err();
            assert!(error.contains("e.g. 10/1m"), "{error}");
        }
    }
}
