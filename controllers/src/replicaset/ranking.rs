//! Which pods a shrinking ReplicaSet deletes first (Kubernetes' `ActivePodsWithRanks`):
//! unscheduled before scheduled, Pending < Unknown < Running, not ready before ready, lower
//! `controller.kubernetes.io/pod-deletion-cost` first, pods doubled up on a node with more of
//! their siblings first, more recently ready first, more restarts first, newer first.

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::pods::{is_active, is_ready, ready_since};

/// The annotation that lets users say which pods to keep.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        // Pending, and anything else.
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Highest restart count of regular containers, then of restartable (sidecar) init containers.
fn restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// Zero (absent) times sort first, then later before earlier (Kubernetes' `afterOrZero`).
fn later_or_zero(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Orders two pods, the one to delete first being Less. `rank` is the number of active sibling
/// pods on the pod's node.
fn compare(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize) -> Ordering {
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let by_phase = phase_ordinal(a).cmp(&phase_ordinal(b));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ra, rb) = (is_ready(a), is_ready(b));
    if ra != rb {
        return if ra {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    let by_cost = deletion_cost(a).cmp(&deletion_cost(b));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    if ra && rb {
        let since = |p: &Pod| ready_since(p).flatten();
        let by_ready = later_or_zero(since(a), since(b));
        if by_ready != Ordering::Equal {
            return by_ready;
        }
    }
    let by_restarts = restarts(b).cmp(&restarts(a));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    later_or_zero(created(a), created(b))
}

/// The `count` pods of `pods` to delete first. `related` are the active and inactive pods of
/// the RS and its siblings (RSes of the same owner), whose placement ranks doubled-up pods.
pub fn pods_to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], count: usize) -> Vec<&'a Pod> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| (*p, on_node.get(node(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|a, b| compare(a.0, a.1, b.0, b.1));
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    struct P {
        name: &'static str,
        node: &'static str,
        phase: &'static str,
        ready_at: Option<i64>,
        created: i64,
        restarts: i32,
        cost: Option<&'static str>,
    }

    const BASE: P = P {
        name: "",
        node: "n1",
        phase: "Running",
        ready_at: Some(100),
        created: 50,
        restarts: 0,
        cost: None,
    };

    fn pod(p: P) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(p.name.into());
        pod.metadata.creation_timestamp = Some(at(p.created));
        if let Some(c) = p.cost {
            pod.metadata.annotations = Some(BTreeMap::from([(DELETION_COST.into(), c.into())]));
        }
        pod.spec = Some(PodSpec {
            node_name: (!p.node.is_empty()).then(|| p.node.into()),
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: Some(p.phase.into()),
            conditions: p.ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(at(t)),
                    ..PodCondition::default()
                }]
            }),
            container_statuses: Some(vec![ContainerStatus {
                restart_count: p.restarts,
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn order(pods: &[Pod]) -> Vec<&str> {
        let refs: Vec<&Pod> = pods.iter().collect();
        pods_to_delete(&refs, &refs, pods.len() - 1)
            .into_iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn the_kubernetes_delete_order() {
        let pods = vec![
            pod(P {
                name: "ready-old",
                ..BASE
            }),
            pod(P {
                name: "ready-recently",
                ready_at: Some(200),
                ..BASE
            }),
            pod(P {
                name: "restarted",
                restarts: 3,
                ..BASE
            }),
            pod(P {
                name: "newer",
                created: 60,
                ..BASE
            }),
            pod(P {
                name: "not-ready",
                ready_at: None,
                ..BASE
            }),
            pod(P {
                name: "unknown",
                phase: "Unknown",
                ready_at: None,
                ..BASE
            }),
            pod(P {
                name: "pending",
                phase: "Pending",
                ready_at: None,
                ..BASE
            }),
            pod(P {
                name: "unscheduled",
                node: "",
                phase: "Pending",
                ready_at: None,
                ..BASE
            }),
            pod(P {
                name: "cheap",
                cost: Some("-5"),
                ..BASE
            }),
        ];
        assert_eq!(
            order(&pods),
            [
                "unscheduled",
                "pending",
                "unknown",
                "not-ready",
                "cheap",
                "ready-recently",
                "restarted",
                "newer",
            ]
        );
    }

    #[test]
    fn doubled_up_pods_go_before_lonely_ones() {
        let pods = [
            pod(P {
                name: "alone",
                node: "n2",
                ready_at: Some(300),
                ..BASE
            }),
            pod(P { name: "a", ..BASE }),
            pod(P { name: "b", ..BASE }),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let chosen = pods_to_delete(&refs, &refs, 1);
        assert_eq!(chosen[0].metadata.name.as_deref(), Some("a"));
        // Asking for all returns all, unsorted.
        assert_eq!(pods_to_delete(&refs, &refs, 5).len(), 3);
    }
}
