//! A probe's timing and its threshold state machine, as the kubelet's prober worker runs them
//! (pkg/kubelet/prober/worker.go): a result is published only after `successThreshold`
//! successes or `failureThreshold` failures in a row; liveness and startup failures put the
//! probe on hold until the container restarts. Pure: no clock, no I/O.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

/// Which probe: it decides the initial result, the gating and the event's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// As the kubelet's events say it: "Liveness probe failed: …".
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// The probe's timing fields with the API's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    /// Defaults as the API server fills them (0 s, 10 s, 1 s, 1, 3); zero or negative values
    /// fall back to them. Liveness and startup probes always use a success threshold of 1.
    pub fn of(kind: ProbeKind, probe: &Probe) -> Timing {
        let positive =
            |v: Option<i32>, default: u32| v.filter(|&v| v > 0).map_or(default, |v| v as u32);
        let success = match kind {
            ProbeKind::Readiness => positive(probe.success_threshold, 1),
            _ => 1,
        };
        Timing {
            initial_delay: Duration::from_secs(
                probe.initial_delay_seconds.unwrap_or(0).max(0) as u64
            ),
            period: Duration::from_secs(positive(probe.period_seconds, 10).into()),
            timeout: Duration::from_secs(positive(probe.timeout_seconds, 1).into()),
            success_threshold: success,
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

/// One probe's memory between runs.
#[derive(Debug, Clone)]
pub struct Tracker {
    kind: ProbeKind,
    timing: Timing,
    /// What is published; `None` is the startup probe's "unknown" before its first verdict.
    published: Option<Verdict>,
    last: Option<Verdict>,
    run: u32,
    on_hold: bool,
}

impl Tracker {
    /// Initial results as the kubelet's: readiness fails, liveness succeeds, startup unknown.
    pub fn new(kind: ProbeKind, timing: Timing) -> Tracker {
        let published = match kind {
            ProbeKind::Readiness => Some(Verdict::Failure),
            ProbeKind::Liveness => Some(Verdict::Success),
            ProbeKind::Startup => None,
        };
        Tracker {
            kind,
            timing,
            published,
            last: None,
            run: 0,
            on_hold: false,
        }
    }

    pub fn published(&self) -> Option<Verdict> {
        self.published
    }

    /// No more probing for this container: a liveness or startup failure (the container is being
    /// restarted) or a startup success (it has started).
    pub fn done(&self) -> bool {
        self.on_hold
            || (self.kind == ProbeKind::Startup && self.published == Some(Verdict::Success))
    }

    /// One probe's outcome; returns the new published result when it changed.
    pub fn observe(&mut self, verdict: Verdict) -> Option<Verdict> {
        if self.done() {
            return None;
        }
        if self.last == Some(verdict) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(verdict);
            self.run = 1;
        }
        let threshold = match verdict {
            Verdict::Success => self.timing.success_threshold,
            Verdict::Failure => self.timing.failure_threshold,
        };
        if self.run < threshold {
            return None;
        }
        if verdict == Verdict::Failure && self.kind != ProbeKind::Readiness {
            self.on_hold = true;
            self.run = 0;
        }
        if self.published == Some(verdict) {
            return None;
        }
        self.published = Some(verdict);
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    use Verdict::{Failure as F, Success as S};

    #[test]
    fn defaults_and_liveness_success_threshold() {
        let t = Timing::of(ProbeKind::Liveness, &Probe::default());
        assert_eq!(t, {
            let mut d = timing(1, 3);
            d.period = Duration::from_secs(10);
            d
        });
        let p = Probe {
            success_threshold: Some(4),
            period_seconds: Some(0),
            initial_delay_seconds: Some(5),
            timeout_seconds: Some(2),
            failure_threshold: Some(1),
            ..Default::default()
        };
        assert_eq!(Timing::of(ProbeKind::Liveness, &p).success_threshold, 1);
        let r = Timing::of(ProbeKind::Readiness, &p);
        assert_eq!(r.success_threshold, 4);
        assert_eq!(r.period, Duration::from_secs(10));
        assert_eq!(r.initial_delay, Duration::from_secs(5));
        assert_eq!(r.timeout, Duration::from_secs(2));
        assert_eq!(r.failure_threshold, 1);
    }

    #[test]
    fn readiness_needs_consecutive_results() {
        let mut t = Tracker::new(ProbeKind::Readiness, timing(2, 3));
        assert_eq!(t.published(), Some(F));
        assert_eq!(t.observe(S), None);
        assert_eq!(t.observe(F), None);
        assert_eq!(t.observe(S), None);
        assert_eq!(t.observe(S), Some(S));
        assert_eq!(t.observe(S), None);
        assert_eq!(t.observe(F), None);
        assert_eq!(t.observe(F), None);
        assert_eq!(t.observe(S), None, "a success breaks the failure run");
        assert_eq!(
            [t.observe(F), t.observe(F), t.observe(F)],
            [None, None, Some(F)]
        );
        assert!(!t.done(), "readiness keeps probing after a failure");
        assert_eq!([t.observe(S), t.observe(S)], [None, Some(S)]);
    }

    #[test]
    fn liveness_failure_holds_until_restart() {
        let mut t = Tracker::new(ProbeKind::Liveness, timing(1, 2));
        assert_eq!(t.published(), Some(S));
        assert_eq!(t.observe(S), None);
        assert_eq!(t.observe(F), None);
        assert_eq!(t.observe(F), Some(F));
        assert!(t.done());
        assert_eq!(t.observe(S), None);
        assert_eq!(t.published(), Some(F));
    }

    #[test]
    fn startup_unknown_then_done_either_way() {
        let mut t = Tracker::new(ProbeKind::Startup, timing(1, 3));
        assert_eq!(t.published(), None);
        assert_eq!(t.observe(F), None);
        assert_eq!(t.observe(S), Some(S));
        assert!(t.done());

        let mut t = Tracker::new(ProbeKind::Startup, timing(1, 2));
        assert_eq!([t.observe(F), t.observe(F)], [None, Some(F)]);
        assert!(t.done());
    }
}
