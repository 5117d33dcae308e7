//! What one StatefulSet sync does, as a pure function of its pods by ordinal: create missing
//! ordinals, delete condemned ones (highest first), replace outdated ones from the highest
//! ordinal down to the partition — one at a time under OrderedReady, waiting for each pod to be
//! Running and Ready (Kubernetes' `updateStatefulSet` with `monotonic`).

use k8s_openapi::api::core::v1::Pod;

use crate::history::hash_label;
use crate::pods::{is_ready, is_terminating};

/// The policy knobs of one set.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// podManagementPolicy OrderedReady (else Parallel).
    pub ordered: bool,
    /// updateStrategy RollingUpdate (else OnDelete).
    pub rolling: bool,
    /// Ordinals below this keep the current revision.
    pub partition: i32,
}

/// One step of a sync.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    Create(i32),
    Delete(&'a Pod),
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod) && !is_terminating(pod)
}

/// `<set>-<ordinal>` → ordinal, if `pod_name` is one of `set`'s.
pub fn ordinal_of(set: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The steps for `replicas` (each wanted ordinal, ascending, with its pod if any) and
/// `condemned` (pods beyond the wanted range, highest ordinal first).
pub fn plan<'a>(
    policy: Policy,
    replicas: &[(i32, Option<&'a Pod>)],
    condemned: &[&'a Pod],
    update_revision: &str,
) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let mut unhealthy = false;
    for &(ordinal, pod) in replicas {
        match pod {
            None => {
                steps.push(Step::Create(ordinal));
                if policy.ordered {
                    return steps;
                }
                unhealthy = true;
            }
            Some(pod) if matches!(phase(pod), "Failed" | "Succeeded") && !is_terminating(pod) => {
                // Replaced: deleted now, created again once it is gone.
                steps.push(Step::Delete(pod));
                if policy.ordered {
                    return steps;
                }
                unhealthy = true;
            }
            Some(pod) if !running_and_ready(pod) => {
                if policy.ordered {
                    return steps;
                }
                unhealthy = true;
            }
            Some(_) => {}
        }
    }
    for pod in condemned {
        if is_terminating(pod) {
            if policy.ordered {
                return steps;
            }
            continue;
        }
        // Under OrderedReady, scale down only while every remaining pod is healthy.
        if policy.ordered && unhealthy {
            return steps;
        }
        steps.push(Step::Delete(pod));
        if policy.ordered {
            return steps;
        }
    }
    if !policy.rolling || unhealthy || !steps.is_empty() {
        return steps;
    }
    // Highest ordinal first, down to the partition, one pod at a time.
    for &(ordinal, pod) in replicas.iter().rev() {
        if ordinal < policy.partition {
            break;
        }
        let Some(pod) = pod else { break };
        if hash_label(&pod.metadata) != Some(update_revision) && !is_terminating(pod) {
            steps.push(Step::Delete(pod));
            break;
        }
        if !running_and_ready(pod) {
            break;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, revision: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"controller-revision-hash": revision}},
            "status": {"phase": if ready { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    const ORDERED: Policy = Policy {
        ordered: true,
        rolling: true,
        partition: 0,
    };

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webs-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web-1", "web-1-2"), Some(2));
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        assert_eq!(
            plan(ORDERED, &[(0, None), (1, None)], &[], "r1"),
            [Step::Create(0)]
        );
        let w0 = pod("web-0", "r1", false);
        assert!(plan(ORDERED, &[(0, Some(&w0)), (1, None)], &[], "r1").is_empty());
        let w0 = pod("web-0", "r1", true);
        assert_eq!(
            plan(ORDERED, &[(0, Some(&w0)), (1, None)], &[], "r1"),
            [Step::Create(1)]
        );
        let parallel = Policy {
            ordered: false,
            ..ORDERED
        };
        assert_eq!(
            plan(parallel, &[(0, None), (1, None), (2, None)], &[], "r1"),
            [Step::Create(0), Step::Create(1), Step::Create(2)]
        );
    }

    #[test]
    fn scale_down_from_the_highest_ordinal() {
        let (w0, w1, w2) = (
            pod("web-0", "r1", true),
            pod("web-1", "r1", true),
            pod("web-2", "r1", true),
        );
        assert_eq!(
            plan(ORDERED, &[(0, Some(&w0))], &[&w2, &w1], "r1"),
            [Step::Delete(&w2)]
        );
        let sick = pod("web-0", "r1", false);
        assert!(plan(ORDERED, &[(0, Some(&sick))], &[&w2, &w1], "r1").is_empty());
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition() {
        let (w0, w1, w2) = (
            pod("web-0", "r1", true),
            pod("web-1", "r1", true),
            pod("web-2", "r1", true),
        );
        let replicas = [(0, Some(&w0)), (1, Some(&w1)), (2, Some(&w2))];
        assert_eq!(plan(ORDERED, &replicas, &[], "r2"), [Step::Delete(&w2)]);
        let n2 = pod("web-2", "r2", true);
        let replicas = [(0, Some(&w0)), (1, Some(&w1)), (2, Some(&n2))];
        assert_eq!(plan(ORDERED, &replicas, &[], "r2"), [Step::Delete(&w1)]);
        let partitioned = Policy {
            partition: 2,
            ..ORDERED
        };
        assert!(plan(partitioned, &replicas, &[], "r2").is_empty());
        let on_delete = Policy {
            rolling: false,
            ..ORDERED
        };
        assert!(plan(on_delete, &replicas, &[], "r2").is_empty());
    }
}
