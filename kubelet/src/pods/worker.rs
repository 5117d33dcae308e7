//! One task per pod: it owns everything the kubelet does for that pod and is the only writer of
//! its status. It wakes on a new version of the pod from the watch, on an exit reported by the
//! pod's shim, on a probe result that changed, or when a back-off expires, and then syncs:
//! sandbox, init containers in order (sidecars kept running), containers as the restart policy
//! says, status. A pod marked for deletion is stopped within its grace period (see `probing`),
//! torn down, and deleted for good.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::ResourceExt;
use tokio::sync::{mpsc, watch};

use super::backoff::{go_duration, Backoff};
use super::context::Context;
use super::registry::Published;
use super::sandbox::Sandbox;
use super::status::{pod_status, Attempt, ContainerRecord, PodRuntime};
use crate::probes::{ProbeKind, ProbeSet, Verdict};
use crate::qos::QosClass;
use crate::shim::{Event, Exit};

/// How often a running pod is synced even when nothing happened (kubelet: syncFrequency).
const RESYNC: Duration = Duration::from_secs(60);
/// After SIGKILL, how long to wait for the exit before giving up on a container.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);

pub(crate) enum Wake {
    Exited {
        id: String,
        exit: Exit,
    },
    ShimGone {
        pid: i32,
    },
    /// A probe's published result changed for the container attempt `id`.
    Probe {
        id: String,
        kind: ProbeKind,
        verdict: Verdict,
    },
    /// The eviction manager chose this pod: fail it with reason `Evicted`.
    Evict {
        message: String,
    },
}

pub(crate) struct Worker {
    pub(super) ctx: Arc<Context>,
    pub(super) uid: String,
    pub(super) pod: Pod,
    pub(super) qos: QosClass,
    pub(super) sandbox: Option<Sandbox>,
    pub(super) init: Vec<ContainerRecord>,
    pub(super) containers: Vec<ContainerRecord>,
    pub(super) restart_backoff: HashMap<String, Backoff>,
    pub(super) pull_backoff: HashMap<String, Backoff>,
    pub(super) wake_tx: mpsc::UnboundedSender<Wake>,
    /// The probes of running containers, by attempt id; dropping one stops them.
    pub(super) probes: HashMap<String, ProbeSet>,
    wake_rx: mpsc::UnboundedReceiver<Wake>,
    start_time: String,
    failed: Option<(String, String)>,
    last_status: Option<serde_json::Value>,
    /// The pod reached Succeeded or Failed and its sandbox is gone.
    finished: bool,
}

/// Runs a pod's worker until the pod is gone from the API and from the node.
pub(crate) async fn run(ctx: Arc<Context>, uid: String, mut pods: watch::Receiver<Option<Pod>>) {
    let Some(pod) = pods.borrow_and_update().clone() else {
        // Known only from the node (found after a restart): tear down what is left.
        super::sandbox::teardown_orphan(&ctx, &uid).await;
        return;
    };
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let spec = pod.spec.clone().unwrap_or_default();
    let record = |c: &k8s_openapi::api::core::v1::Container| ContainerRecord {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        ..Default::default()
    };
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(super::now);
    let mut w = Worker {
        qos: QosClass::of(&pod),
        init: spec.init_containers.iter().flatten().map(record).collect(),
        containers: spec.containers.iter().map(record).collect(),
        ctx,
        uid,
        pod,
        sandbox: None,
        restart_backoff: HashMap::new(),
        pull_backoff: HashMap::new(),
        wake_tx,
        probes: HashMap::new(),
        wake_rx,
        start_time,
        failed: None,
        last_status: None,
        finished: false,
    };
    w.adopt().await;
    loop {
        let deleted = pods.borrow().is_none();
        if let Some(pod) = pods.borrow_and_update().clone() {
            w.pod = pod;
        }
        if deleted || w.pod.metadata.deletion_timestamp.is_some() {
            w.terminate(deleted).await;
            return;
        }
        let next = w.sync().await;
        let deadline = next.unwrap_or_else(|| Instant::now() + RESYNC);
        tokio::select! {
            changed = pods.changed() => {
                if changed.is_err() {
                    // The kubelet is shutting down: leave the pod running for the next one.
                    return;
                }
                // A static pod is sent again when its mirror pod is new: post the status anew.
                if w.is_static() {
                    w.last_status = None;
                }
            }
            Some(wake) = w.wake_rx.recv() => w.apply(wake),
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        while let Ok(wake) = w.wake_rx.try_recv() {
            w.apply(wake);
        }
    }
}

impl Worker {
    pub(super) fn name(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.name_any(),
            self.pod.namespace().unwrap_or_default(),
            self.uid
        )
    }

    pub(super) fn apply(&mut self, wake: Wake) {
        match wake {
            Wake::Exited { id, exit } => {
                self.probes.remove(&id);
                let all = self.init.iter_mut().chain(self.containers.iter_mut());
                for c in all {
                    if let Some(a) = c
                        .current
                        .as_mut()
                        .filter(|a| a.id == id && a.exit.is_none())
                    {
                        a.exit = Some(exit.clone());
                        c.ready = false;
                        c.started = false;
                    }
                }
            }
            Wake::ShimGone { pid } => {
                if self.sandbox.as_ref().is_none_or(|s| s.pid != pid) {
                    return;
                }
                tracing::warn!(pod = %self.name(), "kubelet: the pod's shim went away");
                self.sandbox = None;
                self.probes.clear();
                let now = super::now();
                for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
                    if let Some(a) = c.current.as_mut().filter(|a| a.exit.is_none()) {
                        a.exit = Some(Exit {
                            code: 137,
                            signal: Some(9),
                            finished_at: now.clone(),
                            oom_killed: false,
                        });
                        c.ready = false;
                    }
                }
            }
            Wake::Probe { id, kind, verdict } => self.on_probe(&id, kind, verdict),
            Wake::Evict { message } => {
                if self.failed.is_none() {
                    self.failed = Some(("Evicted".into(), message));
                }
            }
        }
    }

    pub(super) async fn next_wake(&mut self) -> Option<Wake> {
        self.wake_rx.recv().await
    }

    pub(super) fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// One pass; returns when it next wants to run (a back-off expiring).
    async fn sync(&mut self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        if let Some(left) = self.active_deadline_left() {
            if left.is_zero() && self.failed.is_none() {
                let message = "Pod was active on the node longer than the specified deadline";
                let pod = self.pod.clone();
                self.ctx
                    .recorder
                    .event(&pod, None, false, "DeadlineExceeded", message.to_owned());
                self.failed = Some(("DeadlineExceeded".into(), message.to_owned()));
            }
        }
        if let Some((reason, message)) = self.failed.clone() {
            return self.fail(&reason, message).await;
        }
        if self.sandbox.is_none() {
            if let Err(message) = self.create_sandbox().await {
                let pod = self.pod.clone();
                self.ctx.recorder.event(
                    &pod,
                    None,
                    true,
                    "FailedCreatePodSandBox",
                    message.clone(),
                );
                for c in self.init.iter_mut().chain(self.containers.iter_mut()) {
                    c.waiting = Some(("ContainerCreating".into(), String::new()));
                }
                self.report().await;
                let b = self.restart_backoff.entry(String::new()).or_default();
                return Some(Instant::now() + b.fail(Instant::now(), None));
            }
        }
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        earliest(
            self.active_deadline_left()
                .map(|left| Instant::now() + left),
        );
        let initialized = self.sync_init(&mut earliest).await;
        if initialized {
            for i in 0..self.containers.len() {
                let wake = self.sync_container(false, i).await;
                earliest(wake);
            }
        }
        if self.main_finished() {
            // The pod is done: its sidecars go too, so that it can complete.
            self.stop_sidecars().await;
        }
        self.report().await;
        let status_phase = self
            .last_status
            .as_ref()
            .and_then(|s| s["phase"].as_str().map(str::to_owned));
        if matches!(status_phase.as_deref(), Some("Succeeded" | "Failed")) {
            // Terminal: nothing will run again; give back the IP, cgroups and the shim, keep logs.
            self.release_sandbox().await;
            self.finished = true;
            return None;
        }
        next
    }

    /// Init containers one at a time, in order. True once all have succeeded. A sidecar
    /// (`restartPolicy: Always`) holds the next one only until it has started (its startup
    /// probe passed), keeps running, and is restarted whenever it exits until the pod is done.
    async fn sync_init(&mut self, earliest: &mut impl FnMut(Option<Instant>)) -> bool {
        let initialized_before = self.containers.iter().any(|c| c.current.is_some());
        let finishing = self.main_finished();
        for i in 0..self.init.len() {
            if self.sidecar(i) {
                if finishing {
                    continue;
                }
                let wake = self.sync_container(true, i).await;
                earliest(wake);
                let c = &self.init[i];
                if initialized_before || (c.running() && c.started) {
                    continue;
                }
                return false;
            }
            let c = &self.init[i];
            if c.terminated().is_some_and(|e| e.code == 0)
                || c.current
                    .as_ref()
                    .and_then(|a| a.exit.as_ref())
                    .is_some_and(|e| e.code == 0)
            {
                self.init[i].waiting = None;
                continue;
            }
            let wake = self.sync_container(true, i).await;
            earliest(wake);
            return false;
        }
        true
    }

    /// Starts or restarts one container if it should run and isn't; returns a back-off deadline.
    async fn sync_container(&mut self, init: bool, i: usize) -> Option<Instant> {
        let record = if init {
            &self.init[i]
        } else {
            &self.containers[i]
        };
        if record.running() {
            return None;
        }
        let now = Instant::now();
        let name = record.name.clone();
        let pod_name = self.name();
        if let Some(exit) = record.current.as_ref().and_then(|a| a.exit.clone()) {
            let restart = self.should_restart(init, i, &exit);
            let record = if init {
                &mut self.init[i]
            } else {
                &mut self.containers[i]
            };
            if !restart {
                record.waiting = None;
                return None;
            }
            let backoff = self.restart_backoff.entry(name.clone()).or_default();
            if record
                .waiting
                .as_ref()
                .is_none_or(|w| w.0 != "CrashLoopBackOff")
            {
                // Just exited: start the back-off.
                let ran_for = ran_for(record.current.as_ref());
                backoff.fail(now, ran_for);
            }
            if let Some(until) = backoff.waiting(now) {
                let message = format!(
                    "back-off {} restarting failed container={} pod={}",
                    go_duration(backoff.delay()),
                    name,
                    pod_name
                );
                if record
                    .waiting
                    .as_ref()
                    .is_none_or(|w| w.0 != "CrashLoopBackOff")
                {
                    record.waiting = Some(("CrashLoopBackOff".into(), message.clone()));
                    let pod = self.pod.clone();
                    let event =
                        format!("Back-off restarting failed container {name} in pod {pod_name}");
                    self.ctx
                        .recorder
                        .event(&pod, Some(&name), true, "BackOff", event);
                }
                return Some(until);
            }
        }
        if let Some(until) = self.pull_backoff.get(&name).and_then(|b| b.waiting(now)) {
            let record = if init {
                &mut self.init[i]
            } else {
                &mut self.containers[i]
            };
            let image = record.image.clone();
            record.waiting = Some((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image \"{image}\""),
            ));
            return Some(until);
        }
        match self.start_container(init, i).await {
            Ok(()) => None,
            Err(wait) => wait,
        }
    }

    /// Whether an exited container runs again: sidecars always; init containers restart on
    /// failure unless the policy is Never (the kubelet does too); others by the restart policy.
    fn should_restart(&self, init: bool, i: usize, exit: &Exit) -> bool {
        if init && self.sidecar(i) {
            return true;
        }
        match self.restart_policy() {
            "Always" => !init || exit.code != 0,
            "OnFailure" => exit.code != 0,
            _ => false,
        }
    }

    /// Every regular container has exited and none will run again.
    fn main_finished(&self) -> bool {
        !self.containers.is_empty()
            && self.containers.iter().enumerate().all(|(i, c)| {
                c.current
                    .as_ref()
                    .and_then(|a| a.exit.as_ref())
                    .is_some_and(|e| !self.should_restart(false, i, e))
            })
    }

    /// Patches pods/status when it changed.
    pub(super) async fn report(&mut self) {
        let rt = PodRuntime {
            sandbox_ready: self.sandbox.is_some(),
            pod_ip: self
                .sandbox
                .as_ref()
                .and_then(|s| s.ip.map(|ip| ip.to_string())),
            host_ip: self.ctx.config.node_ip.to_string(),
            start_time: Some(self.start_time.clone()),
            qos_class: self.qos.as_str(),
            init: self.init.clone(),
            containers: self.containers.clone(),
            failed: self.failed.clone(),
        };
        self.publish();
        let status = pod_status(&self.pod, &rt, &super::now());
        let value = serde_json::to_value(&status).unwrap_or_default();
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        // A static pod's status goes to its mirror pod, which has a UID of its own; and the
        // mirror (which a user may delete) never replaces the pod from the file.
        let from_file = self.is_static();
        let patch = if from_file {
            serde_json::json!({"status": value})
        } else {
            serde_json::json!({"metadata": {"uid": self.uid}, "status": value})
        };
        match api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(pod) => {
                if !from_file {
                    self.pod = pod;
                }
                self.last_status = Some(value);
            }
            Err(e) => {
                tracing::warn!(pod = %self.name(), error = %e, "kubelet: patching pod status")
            }
        }
    }

    /// A static pod (from a manifest file, shown in the API as a mirror pod).
    fn is_static(&self) -> bool {
        self.pod
            .annotations()
            .get(crate::static_pods::CONFIG_SOURCE)
            .is_some_and(|s| s == "file")
    }

    /// Tells the kubelet's server (logs, exec) about the pod's containers.
    fn publish(&self) {
        let containers = self
            .init
            .iter()
            .chain(self.containers.iter())
            .filter_map(|c| {
                let a = c.current.as_ref()?;
                let published = Published {
                    id: a.id.clone(),
                    pid: a.pid,
                    running: a.exit.is_none(),
                };
                Some((c.name.clone(), published))
            })
            .collect();
        let wake = self.wake_tx.clone();
        let evict: super::registry::Evict = std::sync::Arc::new(move |message| {
            let _ = wake.send(Wake::Evict { message });
        });
        self.ctx
            .registry
            .publish(&self.pod, &self.uid, containers, evict);
    }

    /// The pod is being deleted (or is gone from the API): stop every container within the grace
    /// period, tear the sandbox down, and delete the pod object for good.
    async fn terminate(&mut self, gone: bool) {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        self.stop_all(Duration::from_secs(grace)).await;
        self.release_sandbox().await;
        super::sandbox::remove_pod_dir(&self.ctx, &self.uid);
        self.ctx.registry.forget(&self.pod, &self.uid);
        if gone {
            return;
        }
        self.report().await;
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.pod.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.name(), error = %e, "kubelet: deleting pod"),
        }
    }

    /// Stops every running container within `grace` (preStop hooks, SIGTERM, SIGKILL), regular
    /// containers before sidecars.
    pub(super) async fn stop_all(&mut self, grace: Duration) {
        self.stop_in_order(grace).await;
    }

    /// Applies the shim's view after a kubelet restart: containers keep running, exits that
    /// happened meanwhile are not lost.
    async fn adopt(&mut self) {
        match Sandbox::adopt(&self.ctx, &self.pod, &self.uid, self.wake_tx.clone()).await {
            Ok(Some((sandbox, states))) => {
                self.sandbox = Some(sandbox);
                for state in states {
                    let attempt = Attempt {
                        id: state.id.clone(),
                        pid: state.pid,
                        started_at: state.started_at.clone(),
                        exit: state.exit.clone(),
                    };
                    let image_id = |image: &str| self.ctx.images.get(image).map(|i| i.repo_digest);
                    let all = self.init.iter_mut().chain(self.containers.iter_mut());
                    for c in all.filter(|c| c.name == state.name) {
                        let newer = c
                            .current
                            .as_ref()
                            .is_none_or(|_| state.attempt >= c.restart_count);
                        if newer {
                            c.previous = c.current.take();
                            c.restart_count = state.attempt;
                            c.ready = attempt.exit.is_none();
                            c.started = attempt.exit.is_none();
                            c.current = Some(attempt.clone());
                            c.image_id = image_id(&c.image);
                        } else {
                            c.previous = Some(attempt.clone());
                        }
                    }
                }
                tracing::info!(pod = %self.name(), "kubelet: re-adopted a running pod");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(pod = %self.name(), error = %e, "kubelet: re-adopting a pod"),
        }
        self.probe_adopted();
    }

    /// Time left of `activeDeadlineSeconds`, counted from the pod's start.
    fn active_deadline_left(&self) -> Option<Duration> {
        let deadline = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let start: k8s_openapi::jiff::Timestamp = self.start_time.parse().ok()?;
        let elapsed = k8s_openapi::jiff::Timestamp::now()
            .duration_since(start)
            .as_secs()
            .max(0) as u64;
        Some(Duration::from_secs(
            (deadline.max(0) as u64).saturating_sub(elapsed),
        ))
    }

    /// The kubelet fails the pod itself (activeDeadlineSeconds, eviction): its containers are
    /// stopped, its status says why, and nothing of it runs again.
    async fn fail(&mut self, reason: &str, message: String) -> Option<Instant> {
        if reason == "Evicted" {
            let pod = self.pod.clone();
            self.ctx
                .recorder
                .event(&pod, None, true, "Evicted", message);
        }
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        self.stop_all(Duration::from_secs(grace.max(0) as u64))
            .await;
        self.report().await;
        self.release_sandbox().await;
        self.finished = true;
        None
    }
}

fn ran_for(attempt: Option<&Attempt>) -> Option<Duration> {
    let a = attempt?;
    let start: k8s_openapi::jiff::Timestamp = a.started_at.parse().ok()?;
    let end: k8s_openapi::jiff::Timestamp = a.exit.as_ref()?.finished_at.parse().ok()?;
    let d = end.duration_since(start);
    Some(Duration::from_secs(d.as_secs().max(0) as u64))
}

impl From<Event> for Wake {
    fn from(event: Event) -> Wake {
        match event {
            Event::Exited { id, exit } => Wake::Exited { id, exit },
        }
    }
}
