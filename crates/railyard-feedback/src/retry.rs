//! Waits between attempts, all read through the [`Clock`](railyard_core::Clock): backoff
//! after 5xx answers and timeouts, and what a rate-limited answer asks for (`Retry-After`,
//! `x-ratelimit-reset`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_core::SharedClock;
use tokio_util::sync::CancellationToken;

/// Waits between retries of a failed call (5xx, timeouts, connection errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait; doubling stops here.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How long a rate-limited answer asks to wait: `Retry-After` (seconds), else until
/// `x-ratelimit-reset` (epoch seconds) when `x-ratelimit-remaining` is 0, else `fallback`
/// (GitHub: "wait at least one minute" for a secondary limit without headers).
pub fn rate_limit_wait(
    headers: &reqwest::header::HeaderMap,
    now: DateTime<Utc>,
    fallback: Duration,
) -> Duration {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(seconds) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Duration::from_secs(seconds.min(3600));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()) {
            let wait = reset - now.timestamp();
            // One more second: the reset instant is rounded down.
            return Duration::from_secs(wait.clamp(0, 3600) as u64 + 1);
        }
    }
    fallback
}

/// Sleeps `wait` on `clock`; `false` when `shutdown` came first.
pub async fn pause(clock: &SharedClock, wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = clock.sleep(wait) => !shutdown.is_cancelled(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn retry_after_then_reset_then_fallback() {
        let now: DateTime<Utc> = "2026-03-02T10:00:00Z".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(&headers, now, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (now.timestamp() + 30).to_string();
        headers.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        assert_eq!(
            rate_limit_wait(&headers, now, Duration::from_secs(60)),
            Duration::from_secs(31)
        );
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            rate_limit_wait(&headers, now, Duration::from_secs(60)),
            Duration::from_secs(7)
        );
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1), Duration::from_secs(1));
        assert_eq!(backoff.delay(3), Duration::from_secs(4));
        assert_eq!(backoff.delay(30), Duration::from_secs(60));
    }
}
