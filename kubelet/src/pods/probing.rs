//! A pod worker's side of probes and hooks: starting a container's probes and feeding their
//! results into its record (started, ready) or a restart; postStart after a start; preStop and
//! the stop order on termination (regular containers first, then sidecars in reverse order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use super::worker::{Wake, Worker};
use crate::probes::{self, ExecTarget, ProbeKind, ProbeSet, Report, Sink, Target, Verdict};
use crate::runtime::ContainerSpec;
use crate::shim::Request;

/// The kubelet's floor on the time a container gets after its preStop hook
/// (minimumGracePeriodInSeconds).
const MINIMUM_GRACE: Duration = Duration::from_secs(2);
/// postStart has no timeout in the kubelet; this keeps a hung hook from holding the pod's
/// worker (and so its deletion) for ever.
const POST_START_LIMIT: Duration = Duration::from_secs(300);

/// `started` and `ready` of a container that has just started: a startup probe holds both, a
/// readiness probe holds `ready`.
pub(super) fn initial_gates(container: &Container) -> (bool, bool) {
    let started = container.startup_probe.is_none();
    (started, started && container.readiness_probe.is_none())
}

/// An init container with `restartPolicy: Always`.
pub(super) fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

impl Worker {
    pub(super) fn container_named(&self, init: bool, name: &str) -> Option<&Container> {
        let spec = self.pod.spec.as_ref()?;
        let mut list = if init {
            spec.init_containers.as_deref().unwrap_or_default().iter()
        } else {
            spec.containers.iter()
        };
        list.find(|c| c.name == name)
    }

    /// Init container `i` is a sidecar.
    pub(super) fn sidecar(&self, i: usize) -> bool {
        self.init
            .get(i)
            .and_then(|r| self.container_named(true, &r.name))
            .is_some_and(is_sidecar)
    }

    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    /// Where the container's probes and hooks go. `spec`: as it was started (read back from its
    /// spec.json when not given, like `kubectl exec`).
    pub(super) fn target(
        &self,
        container: &Container,
        id: &str,
        pid: i32,
        spec: Option<ContainerSpec>,
    ) -> Target {
        let host = self
            .sandbox
            .as_ref()
            .and_then(|s| s.ip)
            .map_or_else(|| self.ctx.config.node_ip.to_string(), |ip| ip.to_string());
        let spec = spec.or_else(|| {
            let path = self
                .ctx
                .config
                .pod_dir(&self.uid)
                .join("containers")
                .join(id)
                .join("spec.json");
            std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        });
        Target {
            host,
            ports: container.ports.clone().unwrap_or_default(),
            exec: spec.map(|spec| ExecTarget {
                pid,
                spec: Arc::new(spec),
            }),
        }
    }

    /// Starts the probes of a container that runs (attempt `id`), if it has any.
    pub(super) fn start_probes(
        &mut self,
        container: &Container,
        id: &str,
        target: Target,
        running_for: Duration,
    ) {
        let has_probes = container.liveness_probe.is_some()
            || container.readiness_probe.is_some()
            || container.startup_probe.is_some();
        if !has_probes {
            return;
        }
        let recorder = self.ctx.recorder.clone();
        let pod = self.pod.clone();
        let name = container.name.clone();
        let tx = self.wake_tx.clone();
        let attempt = id.to_owned();
        let sink: Sink = Arc::new(move |report| match report {
            Report::Failed { kind, output } => recorder.event(
                &pod,
                Some(&name),
                true,
                "Unhealthy",
                format!("{} probe failed: {output}", kind.label()),
            ),
            Report::Errored { kind, message } => recorder.event(
                &pod,
                Some(&name),
                true,
                "Unhealthy",
                format!("{} probe errored: {message}", kind.label()),
            ),
            Report::Changed { kind, verdict } => {
                let _ = tx.send(Wake::Probe {
                    id: attempt.clone(),
                    kind,
                    verdict,
                });
            }
        });
        let set = ProbeSet::start(container, target, running_for, sink);
        self.probes.insert(id.to_owned(), set);
    }

    /// A probe's published result changed for attempt `id`.
    pub(super) fn on_probe(&mut self, id: &str, kind: ProbeKind, verdict: Verdict) {
        let found = self
            .init
            .iter()
            .position(|c| running_attempt(c, id))
            .map(|i| (true, i))
            .or_else(|| {
                self.containers
                    .iter()
                    .position(|c| running_attempt(c, id))
                    .map(|i| (false, i))
            });
        let Some((init, i)) = found else { return };
        let record = if init {
            &self.init[i]
        } else {
            &self.containers[i]
        };
        let Some(container) = self.container_named(init, &record.name).cloned() else {
            return;
        };
        let record = if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        };
        match (kind, verdict) {
            (ProbeKind::Startup, Verdict::Success) => {
                record.started = true;
                record.ready = container.readiness_probe.is_none();
            }
            (ProbeKind::Readiness, v) => record.ready = record.started && v == Verdict::Success,
            (ProbeKind::Liveness, Verdict::Success) => {}
            (ProbeKind::Liveness | ProbeKind::Startup, Verdict::Failure) => {
                record.ready = false;
                let probe = match kind {
                    ProbeKind::Liveness => container.liveness_probe.as_ref(),
                    _ => container.startup_probe.as_ref(),
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .map_or_else(
                        || self.grace_period(),
                        |s| Duration::from_secs(s.max(0) as u64),
                    );
                let restart = (init && is_sidecar(&container)) || self.restart_policy() != "Never";
                let mut message = format!(
                    "Container {} failed {} probe",
                    container.name,
                    kind.label().to_lowercase()
                );
                if restart {
                    message.push_str(", will be restarted");
                }
                self.probes.remove(id);
                self.kill_in_background(&container, id, message, grace);
            }
        }
    }

    /// Stops one container without holding the worker: Killing event, preStop, SIGTERM, and
    /// SIGKILL once `grace` has passed. Its exit arrives from the shim as usual.
    pub(super) fn kill_in_background(
        &self,
        container: &Container,
        id: &str,
        message: String,
        grace: Duration,
    ) {
        let Some(sandbox) = &self.sandbox else { return };
        let shim = sandbox.shim.clone();
        let pid = self
            .init
            .iter()
            .chain(self.containers.iter())
            .filter_map(|c| c.current.as_ref())
            .find(|a| a.id == id)
            .map_or(0, |a| a.pid);
        let target = self.target(container, id, pid, None);
        let pod = self.pod.clone();
        let recorder = self.ctx.recorder.clone();
        let name = container.name.clone();
        let pod_name = self.name();
        let pre_stop = pre_stop(container);
        let id = id.to_owned();
        recorder.event(&pod, Some(&name), false, "Killing", message);
        tokio::spawn(async move {
            let started = Instant::now();
            if let Some(hook) = pre_stop.filter(|_| !grace.is_zero()) {
                let hooked = probes::run_hook(&hook, &target, &name, &pod_name, Some(grace)).await;
                if let Err(message) = hooked {
                    recorder.event(&pod, Some(&name), true, "FailedPreStopHook", message);
                }
            }
            let left = grace.saturating_sub(started.elapsed()).max(MINIMUM_GRACE);
            let signal = |signal| Request::Kill {
                id: id.clone(),
                signal,
            };
            let _ = shim.request(&signal(libc::SIGTERM)).await;
            tokio::time::sleep(left).await;
            // Ignored by the shim when the container has exited meanwhile.
            let _ = shim.request(&signal(libc::SIGKILL)).await;
        });
    }

    /// Runs the postStart hook of a container that has just started; a failure kills it
    /// (FailedPostStartHook), and its exit then takes the usual restart path.
    pub(super) async fn post_start(
        &mut self,
        container: &Container,
        target: &Target,
        id: &str,
    ) -> bool {
        let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.clone())
        else {
            return true;
        };
        let pod_name = self.name();
        let result = probes::run_hook(
            &hook,
            target,
            &container.name,
            &pod_name,
            Some(POST_START_LIMIT),
        )
        .await;
        let Err(message) = result else { return true };
        let pod = self.pod.clone();
        self.ctx.recorder.event(
            &pod,
            Some(&container.name),
            true,
            "FailedPostStartHook",
            message,
        );
        let grace = self.grace_period();
        self.kill_in_background(container, id, "FailedPostStartHook".into(), grace);
        false
    }

    /// Stops every running container within `grace`: regular containers (and a running init
    /// container) together, then sidecars one by one in reverse order, each with its preStop
    /// hook first; SIGKILL for what still runs at the end.
    pub(super) async fn stop_in_order(&mut self, grace: Duration) {
        self.probes.clear();
        let deadline = Instant::now() + grace;
        let mut groups: Vec<Vec<(bool, usize)>> = Vec::new();
        let regular: Vec<(bool, usize)> = (0..self.init.len())
            .filter(|&i| !self.sidecar(i))
            .map(|i| (true, i))
            .chain((0..self.containers.len()).map(|i| (false, i)))
            .collect();
        groups.push(regular);
        for i in (0..self.init.len()).rev().filter(|&i| self.sidecar(i)) {
            groups.push(vec![(true, i)]);
        }
        for group in groups {
            let running: Vec<(bool, usize)> = group
                .into_iter()
                .filter(|&(init, i)| {
                    if init {
                        self.init[i].running()
                    } else {
                        self.containers[i].running()
                    }
                })
                .collect();
            if !running.is_empty() {
                self.stop_group(&running, deadline).await;
            }
        }
        let left: Vec<String> = self.running_ids();
        if !left.is_empty() {
            for id in &left {
                self.signal(id, libc::SIGKILL).await;
            }
            self.wait_for(&left, Instant::now() + super::worker::KILL_WAIT)
                .await;
        }
    }

    /// Stops the sidecars once the regular containers are done for good.
    pub(super) async fn stop_sidecars(&mut self) {
        let any = (0..self.init.len()).any(|i| self.sidecar(i) && self.init[i].running());
        if any {
            let grace = self.grace_period();
            self.stop_in_order(grace).await;
        }
    }

    fn running_ids(&self) -> Vec<String> {
        self.init
            .iter()
            .chain(self.containers.iter())
            .filter(|c| c.running())
            .filter_map(|c| c.current.as_ref().map(|a| a.id.clone()))
            .collect()
    }

    async fn stop_group(&mut self, members: &[(bool, usize)], deadline: Instant) {
        let pod = self.pod.clone();
        let pod_name = self.name();
        let mut hooks = Vec::new();
        let mut ids = Vec::new();
        for &(init, i) in members {
            let record = if init {
                &self.init[i]
            } else {
                &self.containers[i]
            };
            let Some(attempt) = record.current.clone() else {
                continue;
            };
            let name = record.name.clone();
            self.ctx.recorder.event(
                &pod,
                Some(&name),
                false,
                "Killing",
                format!("Stopping container {name}"),
            );
            ids.push(attempt.id.clone());
            let Some(container) = self.container_named(init, &name).cloned() else {
                continue;
            };
            if let Some(hook) = pre_stop(&container) {
                let target = self.target(&container, &attempt.id, attempt.pid, None);
                hooks.push((name, hook, target));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !left.is_zero() && !hooks.is_empty() {
            let recorder = self.ctx.recorder.clone();
            let runs = hooks.iter().map(|(name, hook, target)| {
                let pod_name = pod_name.clone();
                async move {
                    let result = probes::run_hook(hook, target, name, &pod_name, Some(left)).await;
                    (name.clone(), result)
                }
            });
            for (name, result) in futures::future::join_all(runs).await {
                if let Err(message) = result {
                    recorder.event(&pod, Some(&name), true, "FailedPreStopHook", message);
                }
            }
        }
        for id in &ids {
            self.signal(id, libc::SIGTERM).await;
        }
        let until = deadline.max(Instant::now() + MINIMUM_GRACE);
        self.wait_for(&ids, until).await;
    }

    pub(super) async fn signal(&self, id: &str, signal: i32) {
        let Some(sandbox) = &self.sandbox else { return };
        let request = Request::Kill {
            id: id.to_owned(),
            signal,
        };
        if let Err(e) = sandbox.shim.request(&request).await {
            tracing::warn!(pod = %self.name(), error = %e, "kubelet: signalling a container");
        }
    }

    /// Waits until none of `ids` runs (true) or the deadline passes (false).
    pub(super) async fn wait_for(&mut self, ids: &[String], deadline: Instant) -> bool {
        loop {
            let running = self
                .init
                .iter()
                .chain(self.containers.iter())
                .filter(|c| c.running())
                .filter_map(|c| c.current.as_ref())
                .any(|a| ids.contains(&a.id));
            if !running || self.sandbox.is_none() {
                return true;
            }
            match tokio::time::timeout_at(deadline.into(), self.next_wake()).await {
                Ok(Some(wake)) => self.apply(wake),
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Starts the probes of containers found running after a kubelet restart.
    pub(super) fn probe_adopted(&mut self) {
        let now: k8s_openapi::jiff::Timestamp = k8s_openapi::jiff::Timestamp::now();
        let all: Vec<(bool, usize)> = (0..self.init.len())
            .map(|i| (true, i))
            .chain((0..self.containers.len()).map(|i| (false, i)))
            .collect();
        for (init, i) in all {
            if init && !self.sidecar(i) {
                continue;
            }
            let record = if init {
                &self.init[i]
            } else {
                &self.containers[i]
            };
            let Some(attempt) = record.current.clone().filter(|a| a.exit.is_none()) else {
                continue;
            };
            let Some(container) = self.container_named(init, &record.name).cloned() else {
                continue;
            };
            let ran = attempt
                .started_at
                .parse::<k8s_openapi::jiff::Timestamp>()
                .map(|t| now.duration_since(t).as_secs().max(0) as u64)
                .unwrap_or(0);
            let (started, ready) = initial_gates(&container);
            let record = if init {
                &mut self.init[i]
            } else {
                &mut self.containers[i]
            };
            record.started = started;
            record.ready = ready;
            let target = self.target(&container, &attempt.id, attempt.pid, None);
            self.start_probes(&container, &attempt.id, target, Duration::from_secs(ran));
        }
    }
}

fn running_attempt(record: &super::status::ContainerRecord, id: &str) -> bool {
    record
        .current
        .as_ref()
        .is_some_and(|a| a.id == id && a.exit.is_none())
}

fn pre_stop(container: &Container) -> Option<LifecycleHandler> {
    container.lifecycle.as_ref()?.pre_stop.clone()
}
