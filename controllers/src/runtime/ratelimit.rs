//! How long a key waits before it is retried: client-go's default controller rate limiter, the
//! larger of a per-key exponential back-off and an overall token bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The per-key back-off and overall bucket of client-go's `DefaultControllerRateLimiter`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Delay after the first failure; doubled on each further failure.
    pub base: Duration,
    /// Longest delay one key waits.
    pub max: Duration,
    /// Sustained retries per second over all keys.
    pub qps: f64,
    /// Retries allowed at once before `qps` applies.
    pub burst: u32,
}

impl Default for RateLimit {
    /// 5 ms doubling to 1000 s per key; 10 retries a second, bursts of 100, as client-go.
    fn default() -> Self {
        RateLimit {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100,
        }
    }
}

/// Failure counts per key plus the token bucket. Pure: the caller passes the time.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    failures: HashMap<K, u32>,
    tokens: f64,
    refilled: Option<Instant>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            failures: HashMap::new(),
            tokens: f64::from(limit.burst),
            refilled: None,
        }
    }

    /// Records one more failure of `key` and returns how long it waits before its retry.
    pub fn when(&mut self, key: &K, now: Instant) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let exp = *n;
        *n = n.saturating_add(1);
        let backoff = exponential(self.limit.base, self.limit.max, exp);
        backoff.max(self.reserve(now))
    }

    /// Forgets `key`'s failures: its next failure starts from the base delay again.
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// How many times `key` failed since it was last forgotten.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// Takes one token; a bucket in debt says how long until that token exists (as Go's
    /// `rate.Limiter.Reserve`).
    fn reserve(&mut self, now: Instant) -> Duration {
        if self.limit.qps <= 0.0 {
            return Duration::ZERO;
        }
        if let Some(last) = self.refilled {
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.limit.qps;
            self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        }
        self.refilled = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.qps)
        }
    }
}

/// `base * 2^exp`, capped at `max` (and never overflowing).
fn exponential(base: Duration, max: Duration, exp: u32) -> Duration {
    if exp >= 63 {
        return max;
    }
    base.checked_mul(1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX))
        .map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bucket() -> RateLimit {
        RateLimit {
            qps: 0.0,
            ..RateLimit::default()
        }
    }

    #[test]
    fn backoff_doubles_per_key_up_to_the_cap() {
        let mut rl = RateLimiter::new(no_bucket());
        let now = Instant::now();
        let delays: Vec<u128> = (0..5).map(|_| rl.when(&"a", now).as_millis()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 80]);
        // Another key has its own count.
        assert_eq!(rl.when(&"b", now), Duration::from_millis(5));
        assert_eq!(rl.failures(&"a"), 5);
        for _ in 0..40 {
            rl.when(&"a", now);
        }
        assert_eq!(rl.when(&"a", now), Duration::from_secs(1000));
        rl.forget(&"a");
        assert_eq!(rl.failures(&"a"), 0);
        assert_eq!(rl.when(&"a", now), Duration::from_millis(5));
    }

    #[test]
    fn the_bucket_delays_retries_past_the_burst() {
        let mut rl = RateLimiter::new(RateLimit {
            base: Duration::ZERO,
            max: Duration::ZERO,
            qps: 10.0,
            burst: 2,
        });
        let now = Instant::now();
        assert_eq!(rl.when(&1, now), Duration::ZERO);
        assert_eq!(rl.when(&2, now), Duration::ZERO);
        assert_eq!(rl.when(&3, now), Duration::from_millis(100));
        assert_eq!(rl.when(&4, now), Duration::from_millis(200));
        // Half a second later the debt (2 tokens) is repaid and 3 more earned, capped at 2.
        let later = now + Duration::from_millis(500);
        assert_eq!(rl.when(&5, later), Duration::ZERO);
    }

    #[test]
    fn exponential_never_overflows() {
        let max = Duration::from_secs(1000);
        assert_eq!(
            exponential(Duration::from_millis(5), max, 0),
            Duration::from_millis(5)
        );
        assert_eq!(exponential(Duration::from_millis(5), max, 31), max);
        assert_eq!(exponential(Duration::from_millis(5), max, u32::MAX), max);
    }
}
