//! Which nodes a DaemonSet's pod belongs on, and the pod it gets there (Kubernetes'
//! `NodeShouldRunDaemonPod`, `AddOrUpdateDaemonPodTolerations` and
//! `ReplaceDaemonSetPodNodeNameNodeAffinity`).

use berth_api::well_known::taints;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Taint, Toleration,
};

/// Whether a daemon pod should be started on `node`, and whether one already there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub should_run: bool,
    pub should_continue_running: bool,
}

/// The tolerations every DaemonSet pod gets, so it runs where regular pods are kept away.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut t = vec![
        exists(taints::NOT_READY, taints::EFFECT_NO_EXECUTE),
        exists(taints::UNREACHABLE, taints::EFFECT_NO_EXECUTE),
        exists(taints::DISK_PRESSURE, taints::EFFECT_NO_SCHEDULE),
        exists(taints::MEMORY_PRESSURE, taints::EFFECT_NO_SCHEDULE),
        exists(taints::PID_PRESSURE, taints::EFFECT_NO_SCHEDULE),
        exists(taints::UNSCHEDULABLE, taints::EFFECT_NO_SCHEDULE),
    ];
    if host_network {
        t.push(exists(
            taints::NETWORK_UNAVAILABLE,
            taints::EFFECT_NO_SCHEDULE,
        ));
    }
    t
}

/// Adds the daemon tolerations to `spec`, replacing any with the same key and effect.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let list = spec.tolerations.get_or_insert_default();
    for t in daemon_tolerations(host_network) {
        list.retain(|old| !(old.key == t.key && old.effect == t.effect));
        list.push(t);
    }
}

/// Pins `spec` to `node` through required node affinity on `metadata.name`, which replaces
/// any other required terms (the node already satisfied them), so the scheduler binds it there.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
        match_expressions: None,
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod is meant for: its `nodeName`, else its `metadata.name` affinity.
pub fn target_node(spec: &PodSpec) -> Option<&str> {
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| r.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// The pod's nodeSelector and required node affinity admit `node`.
fn fits_affinity(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// Whether a pod from `template` (daemon tolerations included) belongs on `node`.
pub fn fit(template: &PodSpec, node: &Node) -> Fit {
    let mut spec = template.clone();
    add_daemon_tolerations(&mut spec);
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if Some(name) != node.metadata.name.as_deref() {
            return Fit {
                should_run: false,
                should_continue_running: false,
            };
        }
    }
    if !fits_affinity(&spec, node) {
        return Fit {
            should_run: false,
            should_continue_running: false,
        };
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| t.effect == effect)
            .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
    };
    let no_execute = untolerated(taints::EFFECT_NO_EXECUTE);
    let no_schedule = untolerated(taints::EFFECT_NO_SCHEDULE);
    Fit {
        should_run: !no_execute && !no_schedule,
        should_continue_running: !no_execute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints}}))
        .unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([]);
        serde_json::from_value(v).unwrap()
    }

    const RUN: Fit = Fit {
        should_run: true,
        should_continue_running: true,
    };
    const NO: Fit = Fit {
        should_run: false,
        should_continue_running: false,
    };

    #[test]
    fn taints_and_tolerations() {
        let plain = spec(json!({}));
        assert_eq!(fit(&plain, &node("a", json!({}), json!([]))), RUN);
        let gpu = node(
            "b",
            json!({}),
            json!([{"key": "gpu", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            fit(&plain, &gpu),
            Fit {
                should_run: false,
                should_continue_running: true
            }
        );
        let evicting = node(
            "c",
            json!({}),
            json!([{"key": "gpu", "value": "x", "effect": "NoExecute"}]),
        );
        assert_eq!(fit(&plain, &evicting), NO);
        let tolerant = spec(json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}));
        assert_eq!(fit(&tolerant, &gpu), RUN);
        assert_eq!(fit(&tolerant, &evicting), RUN);
        let equal =
            spec(json!({"tolerations": [{"key": "gpu", "value": "y", "effect": "NoExecute"}]}));
        assert_eq!(fit(&equal, &evicting), NO);
        // The daemon tolerations cover cordoned, not-ready and pressured nodes.
        let cordoned = node(
            "d",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                   {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                   {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}]),
        );
        assert_eq!(fit(&plain, &cordoned), RUN);
    }

    #[test]
    fn node_selector_and_affinity() {
        let ssd = node("a", json!({"disk": "ssd", "cores": "8"}), json!([]));
        let hdd = node("b", json!({"disk": "hdd"}), json!([]));
        let by_selector = spec(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(
            (fit(&by_selector, &ssd), fit(&by_selector, &hdd)),
            (RUN, NO)
        );
        let by_affinity = spec(json!({"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
        ]}}}}));
        assert_eq!(
            (fit(&by_affinity, &ssd), fit(&by_affinity, &hdd)),
            (RUN, RUN)
        );
        assert_eq!(
            fit(&by_affinity, &node("c", json!({"cores": "2"}), json!([]))),
            NO
        );
    }

    #[test]
    fn pods_are_pinned_and_tolerant() {
        let mut s = spec(
            json!({"tolerations": [{"key": "node.kubernetes.io/not-ready",
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}}}}),
        );
        add_daemon_tolerations(&mut s);
        pin_to_node(&mut s, "node-7");
        assert_eq!(target_node(&s), Some("node-7"));
        let t = s.tolerations.as_ref().unwrap();
        assert_eq!(t.len(), 6);
        assert!(t.iter().all(|t| t.toleration_seconds.is_none()));
        let keys: Vec<_> = t.iter().filter_map(|t| t.key.as_deref()).collect();
        assert!(keys.contains(&"node.kubernetes.io/pid-pressure"));
        let terms = &s
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(daemon_tolerations(true).len(), 7);
        let mut bound = spec(json!({"nodeName": "n1"}));
        assert_eq!(target_node(&bound), Some("n1"));
        bound.node_name = None;
        assert_eq!(target_node(&bound), None);
    }
}
