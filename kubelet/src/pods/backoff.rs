//! The kubelet's restart back-off: 10 s doubling to 5 min, forgotten after a container has run
//! well for 10 min (pkg/kubelet/kubelet.go: backOffPeriod, MaxContainerBackOff).

use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off (kubelet: 2 × MaxContainerBackOff).
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    delay: Option<Duration>,
    until: Option<Instant>,
}

impl Backoff {
    /// Records a failure at `now` (an exit to restart, a failed pull) and returns the delay before
    /// the next try. `ran_for` resets the back-off when the run was long enough.
    pub fn fail(&mut self, now: Instant, ran_for: Option<Duration>) -> Duration {
        if ran_for.is_some_and(|d| d >= RESET_AFTER) {
            self.delay = None;
        }
        let delay = match self.delay {
            None => INITIAL,
            Some(d) => (d * 2).min(MAX),
        };
        self.delay = Some(delay);
        self.until = Some(now + delay);
        delay
    }

    /// Still waiting at `now`: until when.
    pub fn waiting(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|&u| u > now)
    }

    /// The current delay (for messages like "back-off 20s restarting failed container").
    pub fn delay(&self) -> Duration {
        self.delay.unwrap_or(INITIAL)
    }
}

/// `5m0s`, `20s`: Go's duration format for whole seconds, as in kubelet's messages.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..7)
            .map(|_| b.fail(now, Some(Duration::from_secs(1))).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert!(b.waiting(now).is_some());
        assert!(b.waiting(now + MAX).is_none());
        assert_eq!(b.fail(now, Some(RESET_AFTER)).as_secs(), 10);
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(20)), "20s");
    }
}
