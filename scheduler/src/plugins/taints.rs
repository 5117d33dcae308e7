//! TaintToleration: NoSchedule and NoExecute taints must be tolerated (filter); each
//! untolerated PreferNoSchedule taint lowers the score (reverse-normalized).

use crate::pod_info::PodInfo;
use crate::selectors::{tolerated, TaintEffect};
use crate::snapshot::{NodeHot, NodeInfo};

use super::Reason;

pub(crate) fn filter(pod: &PodInfo, hot: &NodeHot, node: &NodeInfo) -> Option<Reason> {
    if hot.hard_taints == 0 {
        return None;
    }
    node.taints
        .iter()
        .position(|t| t.effect.is_hard() && !tolerated(&pod.tolerations, t))
        .map(|i| Reason::Taint(i as u16))
}

/// Number of PreferNoSchedule taints not tolerated by the pod's tolerations that have no
/// effect or PreferNoSchedule.
pub(crate) fn raw_score(pod: &PodInfo, hot: &NodeHot, node: &NodeInfo) -> i64 {
    if hot.prefer_no_schedule_taints == 0 {
        return 0;
    }
    node.taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
        .filter(|t| {
            !pod.tolerations.iter().any(|tol| {
                tol.applies_to_prefer_no_schedule() && tol.tolerates(&t.key, &t.value, t.effect)
            })
        })
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::{Taint, Toleration};
    use berth_api::k8s_openapi::api::core::v1 as core;

    fn node(taints: Vec<Taint>) -> (NodeHot, NodeInfo) {
        let info = NodeInfo {
            taints,
            ..Default::default()
        };
        let hot = NodeHot {
            hard_taints: info.taints.iter().filter(|t| t.effect.is_hard()).count() as u16,
            prefer_no_schedule_taints: info
                .taints
                .iter()
                .filter(|t| t.effect == TaintEffect::PreferNoSchedule)
                .count() as u16,
            ..Default::default()
        };
        (hot, info)
    }

    fn taint(key: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect,
        }
    }

    fn tolerate(key: &str) -> Toleration {
        Toleration::from_api(&core::Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        })
    }

    #[test]
    fn filter_reports_first_untolerated_hard_taint() {
        let (hot, info) = node(vec![
            taint("soft", TaintEffect::PreferNoSchedule),
            taint("a", TaintEffect::NoSchedule),
            taint("b", TaintEffect::NoExecute),
        ]);
        let mut pod = PodInfo::default();
        assert_eq!(filter(&pod, &hot, &info), Some(Reason::Taint(1)));
        pod.tolerations = vec![tolerate("a")];
        assert_eq!(filter(&pod, &hot, &info), Some(Reason::Taint(2)));
        pod.tolerations.push(tolerate("b"));
        assert_eq!(filter(&pod, &hot, &info), None);
    }

    #[test]
    fn score_counts_untolerated_prefer_no_schedule() {
        let (hot, info) = node(vec![
            taint("x", TaintEffect::PreferNoSchedule),
            taint("y", TaintEffect::PreferNoSchedule),
        ]);
        let mut pod = PodInfo::default();
        assert_eq!(raw_score(&pod, &hot, &info), 2);
        pod.tolerations = vec![tolerate("x")];
        assert_eq!(raw_score(&pod, &hot, &info), 1);
    }
}
