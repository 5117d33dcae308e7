//! cgroup resources from requests and limits (Kubernetes' `ResourceConfigForPod` and the
//! container's `LinuxContainerResources`), and the QoS-based OOM score.

use std::collections::BTreeMap;

use berth_api::Quantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::cgroup::Resources;
use crate::qos::QosClass;

/// Kubernetes' `guaranteedOOMScoreAdj` and `besteffortOOMScoreAdj`.
const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BESTEFFORT_OOM_SCORE_ADJ: i32 = 1000;

fn get(list: Option<&BTreeMap<String, K8sQuantity>>, name: &str) -> Option<Quantity> {
    let q = Quantity::parse(&list?.get(name)?.0).ok()?;
    (!q.is_zero()).then_some(q)
}

fn to_u64(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// Requests and limits of one container in kernel units: (cpu request m, cpu limit m, memory
/// request B, memory limit B). A missing request defaults to the limit, as the API server's
/// defaulting does.
fn amounts(c: &Container) -> (u64, Option<u64>, u64, Option<u64>) {
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let cpu_limit = get(limits, "cpu").map(|q| to_u64(q.as_milli()));
    let mem_limit = get(limits, "memory").map(|q| to_u64(q.as_value()));
    let cpu_req = get(requests, "cpu")
        .map(|q| to_u64(q.as_milli()))
        .or(cpu_limit)
        .unwrap_or(0);
    let mem_req = get(requests, "memory")
        .map(|q| to_u64(q.as_value()))
        .or(mem_limit)
        .unwrap_or(0);
    (cpu_req, cpu_limit, mem_req, mem_limit)
}

/// The container's cgroup: cpu request → weight/shares, cpu and memory limits → max. No pids
/// limit (Kubernetes sets that per pod).
pub fn container_resources(c: &Container) -> Resources {
    let (cpu_req, cpu_limit, _, mem_limit) = amounts(c);
    Resources {
        cpu_request_millis: cpu_req,
        cpu_limit_millis: cpu_limit,
        memory_limit_bytes: mem_limit,
        pids_max: None,
        // A privileged container gets the host's devices.
        allow_all_devices: c
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false),
    }
}

/// The pod's cgroup (Kubernetes' `ResourceConfigForPod`): requests and limits summed over the
/// containers, init containers counted at their peak (restartable ones, sidecars, stay running
/// and add up), plus `spec.overhead`. A limit applies only when every container sets it and the
/// pod is not BestEffort; BestEffort pods get the minimum cpu weight. `pod_pids_limit` is the
/// kubelet's `podPidsLimit`.
pub fn pod_resources(pod: &Pod, pod_pids_limit: Option<u64>) -> Resources {
    let pids_max = pod_pids_limit.filter(|&p| p > 0);
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pids_max,
            ..Default::default()
        };
    };
    #[derive(Clone, Copy, Default)]
    struct Sum {
        cpu_req: u64,
        cpu_lim: u64,
        mem_lim: u64,
    }
    let add = |a: Sum, b: Sum| Sum {
        cpu_req: a.cpu_req.saturating_add(b.cpu_req),
        cpu_lim: a.cpu_lim.saturating_add(b.cpu_lim),
        mem_lim: a.mem_lim.saturating_add(b.mem_lim),
    };
    let max = |a: Sum, b: Sum| Sum {
        cpu_req: a.cpu_req.max(b.cpu_req),
        cpu_lim: a.cpu_lim.max(b.cpu_lim),
        mem_lim: a.mem_lim.max(b.mem_lim),
    };
    let mut cpu_limited = true;
    let mut mem_limited = true;
    let mut of = |c: &Container| {
        let (cpu_req, cpu_lim, _, mem_lim) = amounts(c);
        cpu_limited &= cpu_lim.is_some();
        mem_limited &= mem_lim.is_some();
        Sum {
            cpu_req,
            cpu_lim: cpu_lim.unwrap_or(0),
            mem_lim: mem_lim.unwrap_or(0),
        }
    };
    let mut total = spec
        .containers
        .iter()
        .map(&mut of)
        .fold(Sum::default(), add);
    let mut sidecars = Sum::default();
    let mut init_peak = Sum::default();
    for ic in spec.init_containers.iter().flatten() {
        let s = of(ic);
        let at_start = if ic.restart_policy.as_deref() == Some("Always") {
            total = add(total, s);
            sidecars = add(sidecars, s);
            sidecars
        } else {
            add(s, sidecars)
        };
        init_peak = max(init_peak, at_start);
    }
    total = max(total, init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Sum {
            cpu_req: get(Some(overhead), "cpu").map_or(0, |q| to_u64(q.as_milli())),
            cpu_lim: get(Some(overhead), "cpu").map_or(0, |q| to_u64(q.as_milli())),
            mem_lim: get(Some(overhead), "memory").map_or(0, |q| to_u64(q.as_value())),
        };
        total = add(total, o);
    }
    match QosClass::of(pod) {
        QosClass::BestEffort => Resources {
            pids_max,
            ..Default::default()
        },
        QosClass::Guaranteed | QosClass::Burstable => Resources {
            cpu_request_millis: total.cpu_req,
            cpu_limit_millis: cpu_limited.then_some(total.cpu_lim),
            memory_limit_bytes: mem_limited.then_some(total.mem_lim),
            pids_max,
            allow_all_devices: false,
        },
    }
}

/// Kubernetes' `GetContainerOOMScoreAdjust`: Guaranteed −997, BestEffort 1000, Burstable
/// `1000 − 1000 × memory request / capacity` kept within [3, 999] (3 = 1000 − 997, so a
/// Burstable container never ranks with Guaranteed ones). [`pod_oom_score_adj`] adds the
/// pod-level rules.
pub fn oom_score_adj(qos: QosClass, c: &Container, node_memory_capacity: u64) -> i32 {
    let (_, _, mem_req, _) = amounts(c);
    burstable_adj(qos, mem_req, node_memory_capacity)
}

/// [`oom_score_adj`] for a container of `pod`, with Kubernetes' pod-level rules: node-critical
/// pods (`priorityClassName: system-node-critical`) get −997, and a sidecar (an init container
/// with `restartPolicy: Always`) counts at least the smallest memory request of the regular
/// containers, so it is not killed before the app it serves.
pub fn pod_oom_score_adj(pod: &Pod, c: &Container, node_memory_capacity: u64) -> i32 {
    let Some(spec) = pod.spec.as_ref() else {
        return oom_score_adj(QosClass::of(pod), c, node_memory_capacity);
    };
    if spec.priority_class_name.as_deref() == Some("system-node-critical") {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    let (_, _, mut mem_req, _) = amounts(c);
    let sidecar = c.restart_policy.as_deref() == Some("Always")
        && spec
            .init_containers
            .iter()
            .flatten()
            .any(|i| i.name == c.name);
    if sidecar {
        let min_regular = spec
            .containers
            .iter()
            .map(|r| amounts(r).2)
            .min()
            .unwrap_or(0);
        if min_regular != 0 && min_regular > mem_req {
            mem_req = min_regular;
        }
    }
    burstable_adj(QosClass::of(pod), mem_req, node_memory_capacity)
}

fn burstable_adj(qos: QosClass, mem_req: u64, node_memory_capacity: u64) -> i32 {
    match qos {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BESTEFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    if node_memory_capacity == 0 {
        return BESTEFFORT_OOM_SCORE_ADJ - 1;
    }
    let share = (1000u128 * u128::from(mem_req)) / u128::from(node_memory_capacity);
    let adj = 1000i128 - i128::try_from(share).unwrap_or(i128::MAX);
    let floor = i128::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
    if adj < floor {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if adj == i128::from(BESTEFFORT_OOM_SCORE_ADJ) {
        return BESTEFFORT_OOM_SCORE_ADJ - 1;
    }
    adj as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": v})).unwrap()
    }

    fn c(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn container_amounts() {
        let r = container_resources(&c(json!({"name": "a", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "128Mi"}}})));
        assert_eq!(
            r,
            Resources {
                cpu_request_millis: 250,
                cpu_limit_millis: Some(1000),
                memory_limit_bytes: Some(128 << 20),
                pids_max: None,
                allow_all_devices: false,
            }
        );
        let privileged = container_resources(&c(
            json!({"name": "a", "securityContext": {"privileged": true}}),
        ));
        assert!(privileged.allow_all_devices);
        // A request defaults to the limit.
        let r = container_resources(&c(
            json!({"name": "a", "resources": {"limits": {"cpu": "500m"}}}),
        ));
        assert_eq!(r.cpu_request_millis, 500);
        assert_eq!(
            container_resources(&c(json!({"name": "a"}))),
            Resources::default()
        );
    }

    #[test]
    fn pod_sums_and_init_peaks() {
        let p = pod(json!({
            "initContainers": [
                {"name": "i1", "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"limits": {"cpu": "100m", "memory": "10Mi"}}},
                {"name": "i2", "resources": {"limits": {"cpu": "2900m", "memory": "10Mi"}}}
            ],
            "containers": [
                {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "100Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "50Mi"}}}
            ],
            "overhead": {"cpu": "10m", "memory": "1Mi"}
        }));
        let r = pod_resources(&p, Some(1024));
        // init peak: i1 = 3 cores / 1Gi; i2 + sidecar = 3 cores; regular + sidecar = 1.6 cores.
        assert_eq!(r.cpu_request_millis, 3010);
        assert_eq!(r.cpu_limit_millis, Some(3010));
        assert_eq!(r.memory_limit_bytes, Some((1 << 30) + (1 << 20)));
        assert_eq!(r.pids_max, Some(1024));

        let burst = pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
        ]}));
        let r = pod_resources(&burst, None);
        assert_eq!(r.cpu_request_millis, 300);
        assert_eq!(r.cpu_limit_millis, None);
        assert_eq!(r.memory_limit_bytes, None, "b has no memory limit");
        assert_eq!(
            pod_resources(&pod(json!({"containers": [{"name": "a"}]})), Some(0)),
            Resources::default()
        );
    }

    #[test]
    fn oom_scores() {
        let cap = 1000u64 << 20;
        let with_req = |m: &str| c(json!({"name": "a", "resources": {"requests": {"memory": m}}}));
        assert_eq!(
            oom_score_adj(QosClass::Guaranteed, &with_req("1Mi"), cap),
            -997
        );
        assert_eq!(
            oom_score_adj(QosClass::BestEffort, &c(json!({"name": "a"})), cap),
            1000
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &with_req("100Mi"), cap),
            900
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &with_req("999Mi"), cap),
            3
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &with_req("2000Mi"), cap),
            3
        );
        assert_eq!(
            oom_score_adj(QosClass::Burstable, &c(json!({"name": "a"})), cap),
            999
        );
    }
}
