//! The kubelet's four node conditions with Kubernetes' reasons and messages
//! (pkg/kubelet/nodestatus/setters.go): the heartbeat time moves on every report, the
//! transition time only when the status changes. Conditions owned by others
//! (NetworkUnavailable, custom ones from node-problem-detector) are left as they are.

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pressure::Pressures;

pub const READY: &str = "Ready";
pub const MEMORY_PRESSURE: &str = "MemoryPressure";
pub const DISK_PRESSURE: &str = "DiskPressure";
pub const PID_PRESSURE: &str = "PIDPressure";

pub const MESSAGE_READY: &str = "kubelet is posting ready status";

/// What the conditions are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub pressures: Pressures,
    /// `Err(why)` when the node cannot run pods (runtime down, capacity missing, …).
    pub ready: Result<(), String>,
}

struct Wanted {
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
    message: String,
}

fn pressure(
    type_: &'static str,
    on: bool,
    yes: (&'static str, &'static str),
    no: (&'static str, &'static str),
) -> Wanted {
    let ((reason, message), status) = if on { (yes, "True") } else { (no, "False") };
    Wanted {
        type_,
        status,
        reason,
        message: message.to_string(),
    }
}

/// In the kubelet's setter order, which is the order of a fresh node's conditions.
fn wanted(obs: &Observation) -> [Wanted; 4] {
    let p = obs.pressures;
    let ready = match &obs.ready {
        Ok(()) => Wanted {
            type_: READY,
            status: "True",
            reason: "KubeletReady",
            message: MESSAGE_READY.to_string(),
        },
        Err(why) => Wanted {
            type_: READY,
            status: "False",
            reason: "KubeletNotReady",
            message: why.clone(),
        },
    };
    [
        pressure(
            MEMORY_PRESSURE,
            p.memory,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        pressure(
            DISK_PRESSURE,
            p.disk,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        pressure(
            PID_PRESSURE,
            p.pid,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
        ready,
    ]
}

/// `existing` with the kubelet's conditions set from `obs` at `now`.
pub fn update_conditions(
    existing: &[NodeCondition],
    obs: &Observation,
    now: &Time,
) -> Vec<NodeCondition> {
    let mut out = existing.to_vec();
    for w in wanted(obs) {
        let fresh = |transition: Time| NodeCondition {
            type_: w.type_.to_string(),
            status: w.status.to_string(),
            reason: Some(w.reason.to_string()),
            message: Some(w.message.clone()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(transition),
        };
        match out.iter_mut().find(|c| c.type_ == w.type_) {
            Some(c) => {
                let transition = match &c.last_transition_time {
                    Some(t) if c.status == w.status => t.clone(),
                    _ => now.clone(),
                };
                *c = fresh(transition);
            }
            None => out.push(fresh(now.clone())),
        }
    }
    out
}

/// The conditions with heartbeat times cleared, for telling a real change from a heartbeat
/// (the kubelet's `nodeStatusHasChanged`).
pub fn without_heartbeats(conditions: &[NodeCondition]) -> Vec<NodeCondition> {
    conditions
        .iter()
        .cloned()
        .map(|mut c| {
            c.last_heartbeat_time = None;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + s).unwrap())
    }

    fn find<'a>(cs: &'a [NodeCondition], t: &str) -> &'a NodeCondition {
        cs.iter().find(|c| c.type_ == t).expect("condition")
    }

    fn healthy() -> Observation {
        Observation {
            pressures: Pressures::default(),
            ready: Ok(()),
        }
    }

    #[test]
    fn a_fresh_node_gets_four_conditions_in_kubelet_order() {
        let cs = update_conditions(&[], &healthy(), &at(0));
        let types: Vec<_> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let ready = find(&cs, READY);
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_deref(),
                ready.message.as_deref()
            ),
            (
                "True",
                Some("KubeletReady"),
                Some("kubelet is posting ready status")
            )
        );
        let mem = find(&cs, MEMORY_PRESSURE);
        assert_eq!(
            (
                mem.status.as_str(),
                mem.reason.as_deref(),
                mem.message.as_deref()
            ),
            (
                "False",
                Some("KubeletHasSufficientMemory"),
                Some("kubelet has sufficient memory available")
            )
        );
        assert_eq!(
            find(&cs, DISK_PRESSURE).reason.as_deref(),
            Some("KubeletHasNoDiskPressure")
        );
        assert_eq!(
            find(&cs, PID_PRESSURE).reason.as_deref(),
            Some("KubeletHasSufficientPID")
        );
        assert!(
            cs.iter()
                .all(|c| c.last_transition_time == Some(at(0))
                    && c.last_heartbeat_time == Some(at(0)))
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let cs = update_conditions(&[], &healthy(), &at(0));
        let cs = update_conditions(&cs, &healthy(), &at(10));
        let ready = find(&cs, READY);
        assert_eq!(ready.last_heartbeat_time, Some(at(10)));
        assert_eq!(ready.last_transition_time, Some(at(0)));

        let sick = Observation {
            pressures: Pressures {
                memory: true,
                ..Default::default()
            },
            ready: Err("container runtime is down".into()),
        };
        let cs = update_conditions(&cs, &sick, &at(20));
        let ready = find(&cs, READY);
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_deref(),
                ready.message.as_deref()
            ),
            (
                "False",
                Some("KubeletNotReady"),
                Some("container runtime is down")
            )
        );
        assert_eq!(ready.last_transition_time, Some(at(20)));
        let mem = find(&cs, MEMORY_PRESSURE);
        assert_eq!(
            (
                mem.status.as_str(),
                mem.reason.as_deref(),
                mem.message.as_deref()
            ),
            (
                "True",
                Some("KubeletHasInsufficientMemory"),
                Some("kubelet has insufficient memory available")
            )
        );
        assert_eq!(mem.last_transition_time, Some(at(20)));
        assert_eq!(find(&cs, DISK_PRESSURE).last_transition_time, Some(at(0)));

        // A different reason for the same status keeps the transition time.
        let sicker = Observation {
            ready: Err("network plugin is not ready".into()),
            ..sick
        };
        let cs = update_conditions(&cs, &sicker, &at(30));
        let ready = find(&cs, READY);
        assert_eq!(
            ready.message.as_deref(),
            Some("network plugin is not ready")
        );
        assert_eq!(ready.last_transition_time, Some(at(20)));
    }

    #[test]
    fn unknown_from_the_controller_turns_back_with_a_transition_and_others_stay() {
        let mut cs = update_conditions(&[], &healthy(), &at(0));
        for c in &mut cs {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
        }
        cs.push(NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            reason: Some("RouteCreated".into()),
            ..Default::default()
        });
        let cs = update_conditions(&cs, &healthy(), &at(50));
        assert_eq!(cs.len(), 5);
        assert!(cs[..4]
            .iter()
            .all(|c| c.status != "Unknown" && c.last_transition_time == Some(at(50))));
        assert_eq!(
            find(&cs, "NetworkUnavailable").reason.as_deref(),
            Some("RouteCreated")
        );
    }

    #[test]
    fn heartbeats_are_not_changes() {
        let a = update_conditions(&[], &healthy(), &at(0));
        let b = update_conditions(&a, &healthy(), &at(10));
        assert_ne!(a, b);
        assert_eq!(without_heartbeats(&a), without_heartbeats(&b));
    }
}
