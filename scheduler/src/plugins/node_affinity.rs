//! NodeAffinity: `nodeSelector` and required node affinity (filter); the summed weights of the
//! preferred terms a node matches (score, normalized by the maximum).

use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;

use super::Reason;

pub(crate) fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Reason> {
    if pod.required_node_affinity.is_empty()
        || pod.required_node_affinity.matches(&node.name, &node.labels)
    {
        None
    } else {
        Some(Reason::NodeAffinity)
    }
}

pub(crate) fn raw_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|(_, term)| term.matches(&node.name, &node.labels))
        .map(|(w, _)| i64::from(*w))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::{NodeSelectorTerm, RequiredNodeAffinity};
    use berth_api::k8s_openapi::api::core::v1 as core;

    fn term(key: &str, value: &str) -> core::NodeSelectorTerm {
        core::NodeSelectorTerm {
            match_expressions: Some(vec![core::NodeSelectorRequirement {
                key: key.into(),
                operator: "In".into(),
                values: Some(vec![value.into()]),
            }]),
            match_fields: None,
        }
    }

    fn node(zone: &str) -> NodeInfo {
        NodeInfo {
            name: format!("n-{zone}"),
            labels: [
                ("zone".to_string(), zone.to_string()),
                ("disk".to_string(), "ssd".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn selector_and_required_terms_combine() {
        let spec = core::PodSpec {
            node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
            affinity: Some(core::Affinity {
                node_affinity: Some(core::NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                        node_selector_terms: vec![term("zone", "a"), term("zone", "b")],
                    }),
                    preferred_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = PodInfo {
            required_node_affinity: RequiredNodeAffinity::from_pod(&spec),
            ..Default::default()
        };
        assert_eq!(filter(&pod, &node("a")), None);
        assert_eq!(filter(&pod, &node("b")), None);
        assert_eq!(filter(&pod, &node("c")), Some(Reason::NodeAffinity));
        let mut no_ssd = node("a");
        no_ssd.labels.remove("disk");
        assert_eq!(filter(&pod, &no_ssd), Some(Reason::NodeAffinity));
    }

    #[test]
    fn preferred_weights_add_up() {
        let pod = PodInfo {
            preferred_node_affinity: vec![
                (5, NodeSelectorTerm::from_api(&term("zone", "a"))),
                (3, NodeSelectorTerm::from_api(&term("disk", "ssd"))),
            ],
            ..Default::default()
        };
        assert_eq!(raw_score(&pod, &node("a")), 8);
        assert_eq!(raw_score(&pod, &node("b")), 3);
    }
}
