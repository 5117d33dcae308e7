//! A pod's QoS class, as Kubernetes defines it (pkg/apis/core/v1/helper/qos).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The name in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// Guaranteed: every container (init containers included) sets cpu and memory limits, and
    /// requests equal to them (a missing request defaults to the limit). BestEffort: no container
    /// requests or limits anything. Burstable: everything else. Only cpu and memory count.
    pub fn of(pod: &Pod) -> QosClass {
        let Some(spec) = pod.spec.as_ref() else {
            return QosClass::BestEffort;
        };
        let mut any = false;
        let mut guaranteed = true;
        let all = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in all {
            let res = c.resources.as_ref();
            let requests = res.and_then(|r| r.requests.as_ref());
            let limits = res.and_then(|r| r.limits.as_ref());
            for name in ["cpu", "memory"] {
                let request = requests.and_then(|m| m.get(name)).filter(|q| !is_zero(q));
                let limit = limits.and_then(|m| m.get(name)).filter(|q| !is_zero(q));
                any |= request.is_some() || limit.is_some();
                match (request, limit) {
                    (_, None) => guaranteed = false,
                    (Some(r), Some(l)) if r != l => guaranteed = false,
                    _ => {}
                }
            }
        }
        match (any, guaranteed) {
            (false, _) => QosClass::BestEffort,
            (true, true) => QosClass::Guaranteed,
            (true, false) => QosClass::Burstable,
        }
    }
}

fn is_zero(q: &Quantity) -> bool {
    let s = q.0.trim_start_matches(['+', '0', '.']);
    s.is_empty() || s.chars().all(|c| !c.is_ascii_digit() || c == '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}})).unwrap()
    }

    #[test]
    fn classes() {
        assert_eq!(
            QosClass::of(&pod(serde_json::json!([{"name": "a"}]))),
            QosClass::BestEffort
        );
        let g = pod(
            serde_json::json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
        );
        assert_eq!(QosClass::of(&g), QosClass::Guaranteed);
        let b = pod(serde_json::json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        assert_eq!(QosClass::of(&b), QosClass::Burstable);
        let mixed = pod(serde_json::json!([
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b"}
        ]));
        assert_eq!(QosClass::of(&mixed), QosClass::Burstable);
        let zero = pod(serde_json::json!([{"name": "a", "resources": {"requests": {"cpu": "0"}}}]));
        assert_eq!(QosClass::of(&zero), QosClass::BestEffort);
    }
}
