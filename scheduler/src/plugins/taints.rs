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
    if pod.tolerations.is_empty() {
        // The first hard taint is the first untolerated one; the node's taints stay unread.
        return Some(Reason::Taint(hot.first_hard_taint));
    }
    node.taints
        .iter()
        .position(|t| t.effect.is_hard() && !tolerated(&pod.tolerations, t))
        .map(|i| Reason::Taint(i as u16))
}

/// Whether any of the pod's tolerations can tolerate a PreferNoSchedule taint; without one,
/// [`raw_score`] is the node's count of such taints.
pub(crate) fn tolerates_any_soft(pod: &PodInfo) -> bool {
    pod.tolerations
        .iter()
        .any(|t| t.applies_to_prefer_no_schedule())
}

/// Number of PreferNoSchedule taints not tolerated by the pod's tolerations that have no
/// effect or PreferNoSchedule (`soft_tolerations`: [`tolerates_any_soft`]).
pub(crate) fn raw_score(
    pod: &PodInfo,
    soft_tolerations: bool,
    hot: &NodeHot,
    node: &NodeInfo,
) -> i64 {
    if hot.prefer_no_schedule_taints == 0 || !soft_tolerations {
        // Counted from the compact copy, without reading the node's taints.
        return i64::from(hot.prefer_no_schedule_taints);
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
        (NodeHot::of(&info), info)
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
        assert!(!tolerates_any_soft(&pod));
        assert_eq!(raw_score(&pod, false, &hot, &info), 2);
        pod.tolerations = vec![tolerate("x")];
        assert!(tolerates_any_soft(&pod));
        assert_eq!(raw_score(&pod, true, &hot, &info), 1);
        // A NoExecute-only toleration cannot tolerate a soft taint: the count stands.
        pod.tolerations = vec![Toleration::from_api(&core::Toleration {
            key: Some("x".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        })];
        assert!(!tolerates_any_soft(&pod));
        assert_eq!(raw_score(&pod, true, &hot, &info), 2);
    }
}
