//! Pure node-health rules: which conditions turn Unknown when a node stops heartbeating, and
//! which taints a node's conditions call for (Kubernetes' taint-based eviction for NoExecute
//! and TaintNodesByCondition for NoSchedule).

use berth_api::well_known::taints::{
    DISK_PRESSURE, EFFECT_NO_EXECUTE, EFFECT_NO_SCHEDULE, MEMORY_PRESSURE, NETWORK_UNAVAILABLE,
    NOT_READY, PID_PRESSURE, UNREACHABLE, UNSCHEDULABLE,
};
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The conditions the kubelet owns and the controller marks Unknown when it goes silent
/// (NetworkUnavailable is the control plane's, so it is left alone, as in Kubernetes).
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Reason and message of a condition the controller turned Unknown.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
pub const MESSAGE_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// Reason and message of a condition the kubelet never posted.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// The condition of `type_`, if the node reports it.
pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The Ready condition's status ("True", "False", "Unknown"), if there is one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The conditions after the grace period passed without a heartbeat: each kubelet condition
/// that is not Unknown yet becomes Unknown (heartbeat time kept), a missing one is added.
/// Returns None when nothing changes.
pub fn unknown_conditions(node: &Node, now: &Time) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some(MESSAGE_UNKNOWN.into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// Every (key, effect) this controller manages, so it removes them when their cause is gone.
const MANAGED: [(&str, &str); 9] = [
    (NOT_READY, EFFECT_NO_EXECUTE),
    (UNREACHABLE, EFFECT_NO_EXECUTE),
    (NOT_READY, EFFECT_NO_SCHEDULE),
    (UNREACHABLE, EFFECT_NO_SCHEDULE),
    (MEMORY_PRESSURE, EFFECT_NO_SCHEDULE),
    (DISK_PRESSURE, EFFECT_NO_SCHEDULE),
    (PID_PRESSURE, EFFECT_NO_SCHEDULE),
    (NETWORK_UNAVAILABLE, EFFECT_NO_SCHEDULE),
    (UNSCHEDULABLE, EFFECT_NO_SCHEDULE),
];

/// The (key, effect) pairs the node's conditions and spec call for.
fn wanted(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let status = |t: &str| condition(node, t).map(|c| c.status.as_str());
    match status("Ready") {
        Some("False") => out.extend([
            (NOT_READY, EFFECT_NO_EXECUTE),
            (NOT_READY, EFFECT_NO_SCHEDULE),
        ]),
        Some("Unknown") => out.extend([
            (UNREACHABLE, EFFECT_NO_EXECUTE),
            (UNREACHABLE, EFFECT_NO_SCHEDULE),
        ]),
        _ => {}
    }
    for (type_, key) in [
        ("MemoryPressure", MEMORY_PRESSURE),
        ("DiskPressure", DISK_PRESSURE),
        ("PIDPressure", PID_PRESSURE),
        ("NetworkUnavailable", NETWORK_UNAVAILABLE),
    ] {
        if status(type_) == Some("True") {
            out.push((key, EFFECT_NO_SCHEDULE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((UNSCHEDULABLE, EFFECT_NO_SCHEDULE));
    }
    out
}

/// The node's taints with the managed ones brought in line with its conditions: others are
/// kept as they are, existing managed taints keep their `timeAdded`, new NoExecute taints get
/// `now`. While the node has no Ready condition yet (just registered) its NoExecute taints are
/// left alone. Returns None when nothing changes.
pub fn desired_taints(node: &Node, now: &Time) -> Option<Vec<Taint>> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted(node);
    let ready_known = condition(node, "Ready").is_some();
    let managed = |t: &Taint| {
        MANAGED.contains(&(t.key.as_str(), t.effect.as_str()))
            && (ready_known || t.effect != EFFECT_NO_EXECUTE)
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key: key.into(),
                effect: effect.into(),
                time_added: (effect == EFFECT_NO_EXECUTE).then(|| now.clone()),
                value: None,
            });
        }
    }
    (out != current).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn cond(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some("KubeletReady".into()),
            last_heartbeat_time: Some(at(10)),
            last_transition_time: Some(at(5)),
            ..NodeCondition::default()
        }
    }

    fn node(conditions: Vec<NodeCondition>, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(conditions),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn keys(taints: &[Taint]) -> Vec<(String, String)> {
        taints
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn silent_node_conditions_turn_unknown() {
        let n = node(
            vec![cond("Ready", "True"), cond("MemoryPressure", "False")],
            vec![],
        );
        let conds = unknown_conditions(&n, &at(100)).expect("changed");
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(at(100)));
        assert_eq!(ready.last_heartbeat_time, Some(at(10)), "heartbeat kept");
        let disk = conds.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(disk.reason.as_deref(), Some(REASON_NEVER_UPDATED));
        assert_eq!(conds.len(), 4);
        let done = node(conds, vec![]);
        assert_eq!(unknown_conditions(&done, &at(200)), None, "idempotent");
    }

    #[test]
    fn taints_follow_readiness() {
        let now = at(100);
        let unknown = node(
            vec![cond("Ready", "Unknown")],
            vec![taint("user", "NoExecute")],
        );
        let t = desired_taints(&unknown, &now).expect("changed");
        assert_eq!(
            keys(&t),
            [
                ("user".into(), "NoExecute".into()),
                (UNREACHABLE.into(), "NoExecute".into()),
                (UNREACHABLE.into(), "NoSchedule".into()),
            ]
        );
        assert_eq!(t[1].time_added, Some(now.clone()));
        assert_eq!(t[2].time_added, None);

        // Unknown → False swaps unreachable for not-ready.
        let not_ready = node(vec![cond("Ready", "False")], t.clone());
        let t2 = desired_taints(&not_ready, &at(150)).expect("changed");
        assert_eq!(
            keys(&t2),
            [
                ("user".into(), "NoExecute".into()),
                (NOT_READY.into(), "NoExecute".into()),
                (NOT_READY.into(), "NoSchedule".into()),
            ]
        );

        // Ready again: only the user's taint is left; unchanged after that.
        let ready = node(vec![cond("Ready", "True")], t2);
        let t3 = desired_taints(&ready, &now).expect("changed");
        assert_eq!(keys(&t3), [("user".into(), "NoExecute".into())]);
        assert_eq!(
            desired_taints(&node(vec![cond("Ready", "True")], t3), &now),
            None
        );
    }

    #[test]
    fn existing_taints_keep_their_time_and_pressure_taints_follow_conditions() {
        let mut old = taint(UNREACHABLE, "NoExecute");
        old.time_added = Some(at(1));
        let mut n = node(
            vec![cond("Ready", "Unknown"), cond("DiskPressure", "True")],
            vec![old.clone(), taint(UNREACHABLE, "NoSchedule")],
        );
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let t = desired_taints(&n, &at(100)).expect("changed");
        assert_eq!(t[0], old);
        assert!(t.iter().any(|t| t.key == DISK_PRESSURE));
        assert!(t.iter().any(|t| t.key == UNSCHEDULABLE));
    }

    #[test]
    fn a_fresh_node_keeps_its_no_execute_taints() {
        let n = node(vec![], vec![taint(NOT_READY, "NoExecute")]);
        assert_eq!(desired_taints(&n, &at(1)), None);
        assert_eq!(ready_status(&n), None);
    }
}
