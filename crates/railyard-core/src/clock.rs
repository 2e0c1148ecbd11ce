//! Time as a dependency (INTERFACES §10): every wait in Railyard — soak, gate interval,
//! lease TTL, redelivery backoff, Slack pacing, freeze windows — goes through a [`Clock`],
//! so tests drive time with a [`ManualClock`] instead of sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A boxed sleep future.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The source of "now" and of waits.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// Wall-clock time and tokio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// A shared system clock.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when a test calls [`ManualClock::advance`].
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: watch::Sender<DateTime<Utc>>,
    sleepers: Mutex<usize>,
    sleepers_changed: watch::Sender<usize>,
}

impl ManualClock {
    /// A clock standing still at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(ManualInner {
                now: watch::channel(start).0,
                sleepers: Mutex::new(0),
                sleepers_changed: watch::channel(0).0,
            }),
        }
    }

    /// Moves time forward by `by`, waking every sleep that is due.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("advance by a representable duration");
        self.inner.now.send_modify(|now| *now += by);
    }

    /// How many sleeps are waiting right now.
    pub fn sleepers(&self) -> usize {
        *self.inner.sleepers.lock().expect("sleepers lock")
    }

    /// Waits (in real time, driven by the tasks under test) until at least `n` sleeps wait.
    pub async fn wait_for_sleepers(&self, n: usize) {
        let mut rx = self.inner.sleepers_changed.subscribe();
        // The sender lives as long as `self`, so `wait_for` only returns Err if it is dropped.
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    /// This clock as a shared handle.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    fn change_sleepers(&self, delta: isize) {
        let mut count = self.inner.sleepers.lock().expect("sleepers lock");
        *count = count
            .checked_add_signed(delta)
            .expect("sleeper count stays positive");
        self.inner.sleepers_changed.send_replace(*count);
    }
}

struct SleeperGuard(ManualClock);

impl Drop for SleeperGuard {
    fn drop(&mut self) {
        self.0.change_sleepers(-1);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.inner.now.borrow()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let deadline =
            self.now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        let mut rx = self.inner.now.subscribe();
        let clock = self.clone();
        Box::pin(async move {
            if *rx.borrow() >= deadline {
                return;
            }
            clock.change_sleepers(1);
            let _guard = SleeperGuard(clock);
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let c = clock.clone();
        let task = tokio::spawn(async move { c.sleep(Duration::from_secs(600)).await });
        clock.wait_for_sleepers(1).await;
        clock.advance(Duration::from_secs(599));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        clock.advance(Duration::from_secs(1));
        task.await.unwrap();
        assert_eq!(clock.sleepers(), 0);
        assert_eq!(clock.now().to_rfc3339(), "2026-01-01T00:10:00+00:00");
    }
}
