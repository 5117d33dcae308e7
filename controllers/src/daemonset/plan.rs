//! What one DaemonSet sync does, as pure functions of the nodes, their daemon pods and the
//! time: pods to create and delete (Kubernetes' `podsShouldBeOnNode`), old pods to replace in a
//! rolling update within maxUnavailable, and the status counts.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::placement::Fit;
use crate::history::hash_label;
use crate::pods::{is_available, is_ready};

/// One node (or a vanished node's name) and the daemon pods meant for it, oldest first.
pub struct NodePods<'a> {
    pub name: String,
    pub fit: Fit,
    pub pods: Vec<&'a Pod>,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Nodes to start a pod on and pods to delete so each eligible node runs exactly one.
pub fn manage<'a>(nodes: &[NodePods<'a>]) -> (Vec<String>, Vec<&'a Pod>) {
    let mut create = Vec::new();
    let mut delete = Vec::new();
    for node in nodes {
        let live: Vec<&Pod> = node
            .pods
            .iter()
            .copied()
            .filter(|p| !terminating(p))
            .collect();
        if node.fit.should_continue_running {
            // Finished daemon pods are replaced.
            let (done, running): (Vec<&Pod>, Vec<&Pod>) = live
                .into_iter()
                .partition(|p| matches!(phase(p), "Failed" | "Succeeded"));
            delete.extend(done);
            if node.fit.should_run
                && running.is_empty()
                && node.pods.iter().all(|p| !terminating(p))
            {
                create.push(node.name.clone());
            }
            // More than one: keep the oldest.
            delete.extend(running.into_iter().skip(1));
        } else {
            delete.extend(live);
        }
    }
    (create, delete)
}

/// `value` (a count or a percentage) of `total`, rounded up or down.
pub fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return default;
            };
            let product = pct * i64::from(total);
            let v = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            v as i32
        }
    }
}

/// Old pods to delete now so their nodes get the current revision, keeping at most
/// `max_unavailable` eligible nodes without an available pod (Kubernetes' `rollingUpdate` with
/// maxSurge 0). Unavailable old pods go at once: replacing them costs nothing.
pub fn rolling_update<'a>(
    nodes: &[NodePods<'a>],
    hash: &str,
    max_unavailable: i32,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Vec<&'a Pod> {
    let mut unavailable = 0;
    let mut free = Vec::new();
    let mut candidates = Vec::new();
    for node in nodes.iter().filter(|n| n.fit.should_run) {
        let live: Vec<&Pod> = node
            .pods
            .iter()
            .copied()
            .filter(|p| !terminating(p))
            .collect();
        if live.len() > 1 || node.pods.len() != live.len() {
            unavailable += 1;
            continue;
        }
        match live.first() {
            None => unavailable += 1,
            Some(pod) if hash_label(&pod.metadata) == Some(hash) => {
                if !is_available(pod, min_ready_seconds, now) {
                    unavailable += 1;
                }
            }
            Some(pod) => {
                if !is_available(pod, min_ready_seconds, now) {
                    free.push(*pod);
                } else if unavailable < max_unavailable {
                    candidates.push(*pod);
                }
            }
        }
    }
    let budget = (max_unavailable - unavailable).max(0) as usize;
    free.extend(candidates.into_iter().take(budget));
    free
}

/// The DaemonSet status counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
    /// Some pod is ready but not yet available: look again after minReadySeconds.
    pub waiting_for_available: bool,
}

pub fn counts(
    nodes: &[NodePods<'_>],
    hash: &str,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for node in nodes {
        let scheduled = !node.pods.is_empty();
        if node.fit.should_run {
            c.desired += 1;
            if let Some(pod) = node.pods.first() {
                c.current += 1;
                if is_ready(pod) {
                    c.ready += 1;
                    if is_available(pod, min_ready_seconds, now) {
                        c.available += 1;
                    } else {
                        c.waiting_for_available = true;
                    }
                }
                if hash_label(&pod.metadata) == Some(hash) {
                    c.updated += 1;
                }
            }
        } else if scheduled {
            c.misscheduled += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RUN: Fit = Fit {
        should_run: true,
        should_continue_running: true,
    };
    const STAY: Fit = Fit {
        should_run: false,
        should_continue_running: true,
    };
    const NO: Fit = Fit {
        should_run: false,
        should_continue_running: false,
    };

    fn pod(name: &str, hash: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"controller-revision-hash": hash}},
            "status": {"phase": phase, "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    fn node<'a>(name: &str, fit: Fit, pods: Vec<&'a Pod>) -> NodePods<'a> {
        NodePods {
            name: name.into(),
            fit,
            pods,
        }
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let (a1, a2) = (
            pod("a1", "h", "Running", true),
            pod("a2", "h", "Running", true),
        );
        let failed = pod("b1", "h", "Failed", false);
        let stray = pod("d1", "h", "Running", true);
        let tolerated = pod("e1", "h", "Running", true);
        let mut going = pod("f1", "h", "Running", true);
        going.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
        let nodes = [
            node("a", RUN, vec![&a1, &a2]),
            node("b", RUN, vec![&failed]),
            node("c", RUN, vec![]),
            node("d", NO, vec![&stray]),
            node("e", STAY, vec![&tolerated]),
            node("f", RUN, vec![&going]),
            node("g", STAY, vec![]),
        ];
        let (create, delete) = manage(&nodes);
        assert_eq!(create, ["b", "c"]);
        assert_eq!(names(&delete), ["a2", "b1", "d1"]);
        let now = Timestamp::now();
        let c = counts(&nodes, "h", 0, now);
        assert_eq!(
            (c.desired, c.current, c.misscheduled, c.ready, c.updated),
            (4, 3, 2, 2, 3)
        );
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let now = Timestamp::now();
        let old: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("o{i}"), "old", "Running", true))
            .collect();
        let nodes: Vec<NodePods> = old
            .iter()
            .enumerate()
            .map(|(i, p)| node(&format!("n{i}"), RUN, vec![p]))
            .collect();
        assert_eq!(names(&rolling_update(&nodes, "new", 1, 0, now)), ["o0"]);
        assert_eq!(rolling_update(&nodes, "new", 2, 0, now).len(), 2);
        // One node is already down to a new, not yet ready pod: no budget left.
        let fresh = pod("x", "new", "Pending", false);
        let mut nodes = nodes;
        nodes[0] = node("n0", RUN, vec![&fresh]);
        assert!(rolling_update(&nodes, "new", 1, 0, now).is_empty());
        // An old pod that is not available anyway is replaced regardless.
        let sick = pod("s", "old", "Running", false);
        nodes[1] = node("n1", RUN, vec![&sick]);
        assert_eq!(names(&rolling_update(&nodes, "new", 1, 0, now)), ["s"]);
    }

    #[test]
    fn percentages() {
        let pct = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&pct), 10, true, 1), 3);
        assert_eq!(scaled(Some(&pct), 10, false, 1), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(4)), 10, true, 1), 4);
        assert_eq!(scaled(None, 10, true, 1), 1);
    }
}
