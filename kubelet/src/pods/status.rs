//! A pod's status from what the kubelet knows of it: phase, conditions and container statuses,
//! computed as the kubelet does (pkg/kubelet/kubelet_pods.go getPhase, generateAPIPodStatus,
//! status/generate.go). Pure: the worker gathers a [`PodRuntime`], this turns it into the
//! `PodStatus` it patches.

use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::shim::Exit;

/// One run of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: String,
    /// Its first process, in the host's pid namespace.
    pub pid: i32,
    pub started_at: String,
    pub exit: Option<Exit>,
}

/// What the kubelet knows of one container of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRecord {
    pub name: String,
    /// The image as the pod spec names it.
    pub image: String,
    /// `repo@sha256:…` of the image it runs, once pulled.
    pub image_id: Option<String>,
    pub restart_count: u32,
    /// The latest attempt, running or exited.
    pub current: Option<Attempt>,
    /// The attempt before it (lastState when `current` runs).
    pub previous: Option<Attempt>,
    /// Why it is not running now and will be (ContainerCreating, ErrImagePull, CrashLoopBackOff…),
    /// with a message.
    pub waiting: Option<(String, String)>,
    /// Readiness (the readiness probe's verdict; running without a probe).
    pub ready: bool,
    /// The startup probe has succeeded (or there is none) and the container runs.
    pub started: bool,
}

impl ContainerRecord {
    pub fn running(&self) -> bool {
        self.current.as_ref().is_some_and(|a| a.exit.is_none())
    }

    /// Exited and staying so (no restart is coming).
    pub fn terminated(&self) -> Option<&Exit> {
        match (&self.waiting, &self.current) {
            (None, Some(a)) => a.exit.as_ref(),
            _ => None,
        }
    }
}

/// Everything the status is made from.
#[derive(Debug, Clone, Default)]
pub struct PodRuntime {
    /// The shim runs and the network is set up.
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<String>,
    pub qos_class: &'static str,
    pub init: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    /// Set when the kubelet failed the pod itself (activeDeadlineSeconds, eviction).
    pub failed: Option<(String, String)>,
}

pub fn pod_status(pod: &Pod, rt: &PodRuntime, now: &str) -> PodStatus {
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let old = pod.status.as_ref();
    let sidecars = sidecar_names(pod);
    let is_sidecar = |c: &ContainerRecord| sidecars.contains(&c.name.as_str());
    // Done: a regular init container succeeded, a sidecar has started.
    let init_done = |c: &ContainerRecord| {
        if is_sidecar(c) {
            c.running() && c.started
        } else {
            c.terminated().is_some_and(|e| e.code == 0)
        }
    };
    // Once a regular container has run, the pod stays initialized while sidecars restart.
    let initialized =
        rt.init.iter().all(init_done) || rt.containers.iter().any(|c| c.current.is_some());
    let mut phase = phase(restart_policy, initialized, &rt.init, &rt.containers);
    if rt.failed.is_some() {
        phase = "Failed";
    }
    let terminal = phase == "Succeeded" || phase == "Failed";

    // Sidecars count for ContainersReady too (kubelet: GenerateContainersReadyCondition).
    let not_ready: Vec<&str> = rt
        .init
        .iter()
        .filter(|c| is_sidecar(c))
        .chain(rt.containers.iter())
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let incomplete: Vec<&str> = rt
        .init
        .iter()
        .filter(|c| !init_done(c))
        .map(|c| c.name.as_str())
        .collect();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let mut conditions = Vec::new();
    let mut cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        conditions.push(condition(old, type_, ok, reason, message, now));
    };
    cond("PodReadyToStartContainers", rt.sandbox_ready, None, None);
    if initialized {
        let reason = if terminal && !rt.init.is_empty() {
            Some("PodCompleted")
        } else {
            None
        };
        cond("Initialized", true, reason, None);
    } else {
        let msg = format!("containers with incomplete status: {}", list(&incomplete));
        cond(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(msg),
        );
    }
    for type_ in ["ContainersReady", "Ready"] {
        if terminal {
            cond(type_, false, Some("PodCompleted"), None);
        } else if not_ready.is_empty() && initialized {
            cond(type_, true, None, None);
        } else {
            let msg = format!("containers with unready status: {}", list(&not_ready));
            cond(type_, false, Some("ContainersNotReady"), Some(msg));
        }
    }
    if let Some(scheduled) = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned())
    {
        conditions.push(scheduled);
    }

    let ips = rt.pod_ip.as_ref().map(|ip| vec![PodIP { ip: ip.clone() }]);
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(rt.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: rt.host_ip.clone(),
        }]),
        pod_ip: rt.pod_ip.clone(),
        pod_ips: ips,
        start_time: rt.start_time.as_deref().and_then(time),
        qos_class: Some(rt.qos_class.to_owned()),
        reason: rt.failed.as_ref().map(|f| f.0.clone()),
        message: rt.failed.as_ref().map(|f| f.1.clone()),
        init_container_statuses: (!rt.init.is_empty()).then(|| {
            rt.init
                .iter()
                .map(|c| {
                    let mut status = container_status(c);
                    if !is_sidecar(c) {
                        // A regular init container is ready once it has succeeded.
                        status.ready = c.terminated().is_some_and(|e| e.code == 0);
                    }
                    status
                })
                .collect()
        }),
        container_statuses: Some(rt.containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

/// Init containers with `restartPolicy: Always`.
fn sidecar_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect()
}

/// kubelet's getPhase.
fn phase(
    restart_policy: &str,
    initialized: bool,
    init: &[ContainerRecord],
    containers: &[ContainerRecord],
) -> &'static str {
    if !initialized {
        let failed = init
            .iter()
            .any(|c| c.terminated().is_some_and(|e| e.code != 0));
        return if failed && restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        if c.running() {
            running += 1;
        } else if let Some(exit) = c.terminated() {
            stopped += 1;
            if exit.code == 0 {
                succeeded += 1;
            }
        } else if c.current.is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

fn container_status(c: &ContainerRecord) -> ContainerStatus {
    let state = if c.running() {
        let a = c.current.as_ref().expect("running has an attempt");
        K8sState {
            running: Some(ContainerStateRunning {
                started_at: time(&a.started_at),
            }),
            ..Default::default()
        }
    } else if let Some((reason, message)) = &c.waiting {
        K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        }
    } else if let Some(a) = &c.current {
        K8sState {
            terminated: a.exit.as_ref().map(|e| terminated(a, e)),
            ..Default::default()
        }
    } else {
        K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        }
    };
    // lastState: the run before the current one, or the exited current one while it waits to
    // restart.
    let last = if c.running() || c.terminated().is_some() {
        c.previous.as_ref()
    } else {
        c.current.as_ref()
    };
    let last_state = last
        .and_then(|a| a.exit.as_ref().map(|e| (a, e)))
        .map(|(a, e)| K8sState {
            terminated: Some(terminated(a, e)),
            ..Default::default()
        });
    let container_id = c.current.as_ref().map(|a| format!("berth://{}", a.id));
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone().unwrap_or_default(),
        container_id,
        ready: c.ready,
        started: Some(c.started && c.running()),
        restart_count: c.restart_count as i32,
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

fn terminated(a: &Attempt, e: &Exit) -> ContainerStateTerminated {
    let reason = if e.oom_killed {
        "OOMKilled"
    } else if e.code == 0 {
        "Completed"
    } else {
        "Error"
    };
    ContainerStateTerminated {
        exit_code: e.code,
        signal: e.signal,
        reason: Some(reason.to_owned()),
        started_at: time(&a.started_at),
        finished_at: time(&e.finished_at),
        container_id: Some(format!("berth://{}", a.id)),
        message: None,
    }
}

/// A condition, keeping its lastTransitionTime while its status stays the same.
fn condition(
    old: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &str,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: previous.or_else(|| time(now)),
        last_probe_time: None,
        ..Default::default()
    }
}

pub fn time(rfc3339: &str) -> Option<Time> {
    rfc3339.parse().ok().map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-24T01:00:00Z";

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "i"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap()
    }

    fn exited(code: i32) -> Attempt {
        Attempt {
            id: "c1".into(),
            pid: 10,
            started_at: NOW.into(),
            exit: Some(Exit {
                code,
                signal: None,
                finished_at: NOW.into(),
                oom_killed: false,
            }),
        }
    }

    fn rt(c: ContainerRecord) -> PodRuntime {
        PodRuntime {
            sandbox_ready: true,
            pod_ip: Some("10.244.0.2".into()),
            host_ip: "10.0.0.1".into(),
            start_time: Some(NOW.into()),
            qos_class: "BestEffort",
            containers: vec![c],
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn running_and_ready() {
        let c = ContainerRecord {
            name: "a".into(),
            current: Some(Attempt {
                id: "c1".into(),
                pid: 10,
                started_at: NOW.into(),
                exit: None,
            }),
            ready: true,
            started: true,
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &rt(c), NOW);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        let cs = &s.container_statuses.unwrap()[0];
        assert!(cs.state.as_ref().unwrap().running.is_some());
        assert_eq!(cs.container_id.as_deref(), Some("berth://c1"));
    }

    #[test]
    fn crash_loop_is_running_with_last_state() {
        let c = ContainerRecord {
            name: "a".into(),
            restart_count: 2,
            current: Some(exited(1)),
            waiting: Some(("CrashLoopBackOff".into(), "back-off 20s".into())),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &rt(c), NOW);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("containers with unready status: [a]")
        );
        let cs = &s.container_statuses.unwrap()[0];
        let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert_eq!(cs.restart_count, 2);
    }

    #[test]
    fn terminal_phases() {
        let done = |code| ContainerRecord {
            name: "a".into(),
            current: Some(exited(code)),
            ..Default::default()
        };
        let s = pod_status(&pod("Never"), &rt(done(0)), NOW);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(
            pod_status(&pod("Never"), &rt(done(2)), NOW)
                .phase
                .as_deref(),
            Some("Failed")
        );
        assert_eq!(
            pod_status(&pod("OnFailure"), &rt(done(0)), NOW)
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        let waiting = ContainerRecord {
            name: "a".into(),
            waiting: Some(("ErrImagePull".into(), "not found".into())),
            ..Default::default()
        };
        assert_eq!(
            pod_status(&pod("Always"), &rt(waiting), NOW)
                .phase
                .as_deref(),
            Some("Pending")
        );
    }

    #[test]
    fn oom_killed_reason_and_init_pending() {
        let mut a = exited(137);
        a.exit.as_mut().unwrap().oom_killed = true;
        let c = ContainerRecord {
            name: "a".into(),
            current: Some(a),
            ..Default::default()
        };
        let s = pod_status(&pod("Never"), &rt(c), NOW);
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("OOMKilled")
        );

        let mut r = rt(ContainerRecord {
            name: "a".into(),
            ..Default::default()
        });
        r.init = vec![ContainerRecord {
            name: "init".into(),
            ..Default::default()
        }];
        let s = pod_status(&pod("Always"), &r, NOW);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            cond(&s, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [init]")
        );
    }

    #[test]
    fn sidecars_initialize_once_started_and_gate_readiness() {
        let mut p = pod("Always");
        p.spec.as_mut().unwrap().init_containers = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "init", "image": "i"})).unwrap(),
            serde_json::from_value(
                serde_json::json!({"name": "side", "image": "i", "restartPolicy": "Always"}),
            )
            .unwrap(),
        ]);
        let running = Attempt {
            id: "s1".into(),
            pid: 11,
            started_at: NOW.into(),
            exit: None,
        };
        let init = ContainerRecord {
            name: "init".into(),
            current: Some(exited(0)),
            ..Default::default()
        };
        let mut side = ContainerRecord {
            name: "side".into(),
            current: Some(running),
            ..Default::default()
        };
        let main = ContainerRecord {
            name: "a".into(),
            ..Default::default()
        };
        let mut r = rt(main);
        r.init = vec![init.clone(), side.clone()];
        let s = pod_status(&p, &r, NOW);
        assert_eq!(
            cond(&s, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [side]"),
            "a sidecar that has not started holds initialization"
        );
        let statuses = s.init_container_statuses.unwrap();
        assert!(statuses[0].ready, "a succeeded init container is ready");

        side.started = true;
        let mut main = r.containers[0].clone();
        main.current = Some(Attempt {
            id: "m1".into(),
            pid: 12,
            started_at: NOW.into(),
            exit: None,
        });
        main.ready = true;
        main.started = true;
        r.init = vec![init, side.clone()];
        r.containers = vec![main];
        let s = pod_status(&p, &r, NOW);
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(
            cond(&s, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [side]")
        );
        side.ready = true;
        r.init[1] = side;
        assert_eq!(cond(&pod_status(&p, &r, NOW), "Ready").status, "True");
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let mut p = pod("Always");
        p.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(PodCondition {
                type_: "PodReadyToStartContainers".into(),
                status: "True".into(),
                last_transition_time: time("2026-01-01T00:00:00Z"),
                ..Default::default()
            });
        let s = pod_status(
            &p,
            &rt(ContainerRecord {
                name: "a".into(),
                ..Default::default()
            }),
            NOW,
        );
        let c = cond(&s, "PodReadyToStartContainers");
        assert_eq!(c.last_transition_time, time("2026-01-01T00:00:00Z"));
        assert_eq!(cond(&s, "Ready").last_transition_time, time(NOW));
    }
}
