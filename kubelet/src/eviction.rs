//! Eviction under memory pressure, as the kubelet's eviction manager does for
//! `memory.available`: when the node's available memory falls under the hard threshold, the
//! kubelet fails one pod at a time — BestEffort and other pods using more than they requested
//! first, lower priority first, biggest overuse first — with reason `Evicted` and a message
//! naming the resource, and stops its containers.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::node::pressure::sample;
use crate::node::HostRoots;
use crate::pods::Context;
use crate::qos::QosClass;

/// How often the node is checked (the kubelet's housekeeping interval is 10 s).
const PERIOD: Duration = Duration::from_secs(10);

/// A pod as the ranking sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    /// Working set of the pod's cgroup.
    pub usage_bytes: u64,
    /// Sum of its containers' memory requests.
    pub request_bytes: u64,
}

/// Kubernetes' memory ranking: pods whose usage exceeds their requests first, then by priority
/// (lowest first), then by usage above requests (largest first).
pub fn rank(mut pods: Vec<Candidate>) -> Vec<Candidate> {
    pods.sort_by(|a, b| {
        let over = |c: &Candidate| c.usage_bytes > c.request_bytes;
        over(b)
            .cmp(&over(a))
            .then(a.priority.cmp(&b.priority))
            .then(
                (b.usage_bytes.saturating_sub(b.request_bytes))
                    .cmp(&a.usage_bytes.saturating_sub(a.request_bytes)),
            )
    });
    pods
}

/// The status message, in the kubelet's words.
pub fn message(threshold: u64, available: u64) -> String {
    format!(
        "The node was low on resource: memory. Threshold quantity: {}, available: {}Ki. ",
        quantity(threshold),
        available / 1024
    )
}

fn quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        format!("{}Ki", bytes / 1024)
    }
}

fn memory_request(pod: &Pod) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    spec.containers
        .iter()
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("memory"))
        .filter_map(|q| berth_api::Quantity::parse(&q.0).ok())
        .map(|q| q.as_value().max(0) as u64)
        .sum()
}

/// Runs until the task is dropped.
pub(crate) async fn run(ctx: Arc<Context>) {
    let roots = HostRoots::default();
    loop {
        tokio::time::sleep(PERIOD).await;
        let threshold = ctx.config.eviction_hard.memory_available_bytes;
        let Ok(usage) = sample(&roots, &ctx.config.data_dir) else {
            continue;
        };
        let Some(available) = usage.memory_available_bytes else {
            continue;
        };
        if available >= threshold {
            continue;
        }
        let candidates = ctx
            .registry
            .running_pods()
            .into_iter()
            .map(|(pod, uid)| {
                let qos = QosClass::of(&pod);
                let usage_bytes = ctx
                    .cgroups
                    .memory_usage(qos, &uid, None)
                    .map(|m| m.working_set_bytes)
                    .unwrap_or(0);
                Candidate {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                    usage_bytes,
                    request_bytes: memory_request(&pod),
                }
            })
            .collect();
        if let Some(victim) = rank(candidates).into_iter().next() {
            tracing::warn!(pod = %victim.name, available, threshold, "kubelet: evicting a pod under memory pressure");
            ctx.registry.evict(
                &victim.namespace,
                &victim.name,
                message(threshold, available),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, priority: i32, usage: u64, request: u64) -> Candidate {
        Candidate {
            namespace: "ns".into(),
            name: name.into(),
            priority,
            usage_bytes: usage,
            request_bytes: request,
        }
    }

    #[test]
    fn best_effort_and_overusers_go_first_then_priority_then_overuse() {
        let ranked = rank(vec![
            c("guaranteed-under", 0, 50, 100),
            c("burstable-over-small", 0, 110, 100),
            c("besteffort-big", 0, 500, 0),
            c("besteffort-important", 1000, 900, 0),
            c("besteffort-small", 0, 10, 0),
        ]);
        let names: Vec<&str> = ranked.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "besteffort-big",
                "burstable-over-small",
                "besteffort-small",
                "besteffort-important",
                "guaranteed-under"
            ]
        );
        assert_eq!(
            message(100 << 20, 50 << 20),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. "
        );
    }
}
