//! The probes of one running container: one task per probe, each probing every `periodSeconds`
//! once `initialDelaySeconds` have passed since the container started. Liveness and readiness
//! wait for the startup probe's success; readiness runs at once when it comes. Every failed
//! probe is reported (for the `Unhealthy` event), and every change of a published result.
//! Dropping the [`ProbeSet`] stops them (the container exited or is being stopped).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::action::probe_action;
use super::threshold::{ProbeKind, Timing, Tracker, Verdict};
use super::{run_action, Outcome, Target};

/// What a probe tells its container's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// One probe failed, with its output (below the threshold too).
    Failed { kind: ProbeKind, output: String },
    /// A probe could not run at all; the result is thrown away, as the kubelet does.
    Errored { kind: ProbeKind, message: String },
    /// The published result changed (after its threshold).
    Changed { kind: ProbeKind, verdict: Verdict },
}

pub type Sink = Arc<dyn Fn(Report) + Send + Sync>;

pub struct ProbeSet {
    tasks: Vec<JoinHandle<()>>,
    /// Kept so the gated probes' `changed()` never fails while they run.
    _started: Arc<watch::Sender<bool>>,
}

impl ProbeSet {
    /// Starts the container's probes. `running_for`: how long the container has run already
    /// (zero for a new one; more for one re-adopted after a kubelet restart).
    pub fn start(
        container: &Container,
        target: Target,
        running_for: Duration,
        sink: Sink,
    ) -> ProbeSet {
        let started_at = Instant::now()
            .checked_sub(running_for)
            .unwrap_or_else(Instant::now);
        let (tx, _) = watch::channel(container.startup_probe.is_none());
        let tx = Arc::new(tx);
        let probes = [
            (ProbeKind::Startup, &container.startup_probe),
            (ProbeKind::Liveness, &container.liveness_probe),
            (ProbeKind::Readiness, &container.readiness_probe),
        ];
        let tasks = probes
            .into_iter()
            .filter_map(|(kind, probe)| Some((kind, probe.clone()?)))
            .map(|(kind, probe)| {
                let run = ProbeRun {
                    kind,
                    timing: Timing::of(kind, &probe),
                    probe,
                    target: target.clone(),
                    started_at,
                    started: tx.clone(),
                    sink: sink.clone(),
                };
                tokio::spawn(run.run())
            })
            .collect();
        ProbeSet {
            tasks,
            _started: tx,
        }
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct ProbeRun {
    kind: ProbeKind,
    timing: Timing,
    probe: Probe,
    target: Target,
    started_at: Instant,
    started: Arc<watch::Sender<bool>>,
    sink: Sink,
}

impl ProbeRun {
    async fn run(self) {
        let mut tracker = Tracker::new(self.kind, self.timing);
        let mut started = self.started.subscribe();
        loop {
            let gated = self.kind != ProbeKind::Startup && !*started.borrow_and_update();
            let delay_left = self
                .timing
                .initial_delay
                .saturating_sub(self.started_at.elapsed());
            if !gated && delay_left.is_zero() {
                if let Some(verdict) = self.once().await {
                    if let Some(changed) = tracker.observe(verdict) {
                        if self.kind == ProbeKind::Startup && changed == Verdict::Success {
                            self.started.send_replace(true);
                        }
                        (self.sink)(Report::Changed {
                            kind: self.kind,
                            verdict: changed,
                        });
                    }
                }
                if tracker.done() {
                    return;
                }
            }
            let pause = if delay_left.is_zero() {
                self.timing.period
            } else {
                delay_left.min(self.timing.period)
            };
            if gated {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = started.changed() => {}
                }
            } else {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// One probe; `None` when it errored.
    async fn once(&self) -> Option<Verdict> {
        let outcome = match probe_action(&self.probe, &self.target.host, &self.target.ports) {
            Ok(action) => run_action(&action, &self.target, self.timing.timeout).await,
            Err(e) => Outcome::Error(e.to_string()),
        };
        match outcome {
            Outcome::Success(_) => Some(Verdict::Success),
            Outcome::Failure(output) => {
                (self.sink)(Report::Failed {
                    kind: self.kind,
                    output,
                });
                Some(Verdict::Failure)
            }
            Outcome::Error(message) => {
                (self.sink)(Report::Errored {
                    kind: self.kind,
                    message,
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).unwrap()
    }

    fn collect() -> (Sink, tokio::sync::mpsc::UnboundedReceiver<Report>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let tx = Mutex::new(tx);
        let sink: Sink = Arc::new(move |r| {
            let _ = tx.lock().unwrap().send(r);
        });
        (sink, rx)
    }

    async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Report>) -> Report {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a report in time")
            .expect("the sink is alive")
    }

    #[tokio::test]
    async fn startup_gates_readiness_then_liveness_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = container(serde_json::json!({
            "name": "c",
            "ports": [{"name": "web", "containerPort": open}],
            "startupProbe": {"tcpSocket": {"port": "web"}, "periodSeconds": 1},
            "readinessProbe": {"tcpSocket": {"port": open}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": closed}, "periodSeconds": 1,
                              "failureThreshold": 2},
        }));
        let target = Target {
            host: "127.0.0.1".into(),
            ports: c.ports.clone().unwrap(),
            exec: None,
        };
        let (sink, mut rx) = collect();
        let _set = ProbeSet::start(&c, target, Duration::ZERO, sink);
        assert_eq!(
            next(&mut rx).await,
            Report::Changed {
                kind: ProbeKind::Startup,
                verdict: Verdict::Success
            }
        );
        let mut seen = Vec::new();
        while !seen.contains(&Report::Changed {
            kind: ProbeKind::Liveness,
            verdict: Verdict::Failure,
        }) {
            seen.push(next(&mut rx).await);
        }
        assert!(seen.contains(&Report::Changed {
            kind: ProbeKind::Readiness,
            verdict: Verdict::Success
        }));
        let failures = seen
            .iter()
            .filter(|r| {
                matches!(r, Report::Failed { kind: ProbeKind::Liveness, output }
                if output.ends_with("connect: connection refused"))
            })
            .count();
        assert_eq!(failures, 2, "{seen:?}");
    }

    #[tokio::test]
    async fn initial_delay_holds_the_first_probe() {
        let c = container(serde_json::json!({
            "name": "c",
            "readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 1,
                               "periodSeconds": 1},
        }));
        let target = Target {
            host: "127.0.0.1".into(),
            ports: Vec::new(),
            exec: None,
        };
        let (sink, mut rx) = collect();
        let begun = Instant::now();
        let _set = ProbeSet::start(&c, target, Duration::ZERO, sink);
        // No container to exec in: the probe errors, but only after the delay.
        let report = next(&mut rx).await;
        assert!(matches!(
            report,
            Report::Errored {
                kind: ProbeKind::Readiness,
                ..
            }
        ));
        assert!(begun.elapsed() >= Duration::from_secs(1));
    }
}
