//! NodeAffinity: `nodeSelector` and required node affinity (filter); the summed weights of the
//! preferred terms a node matches (score, normalized by the maximum).

use crate::pod_info::PodInfo;
use crate::selectors::NodeSelectorTerm;
use crate::snapshot::{NodeInfo, Snapshot};
use crate::topology::{Column, NO_VALUE};

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

/// Preferred node affinity resolved for one cycle against the snapshot's label columns: each
/// requirement becomes a table indexed by the node's value id, so scoring a node reads a few
/// arrays instead of looking its labels up by string.
#[derive(Debug)]
pub(crate) struct PreferredScorer<'a> {
    terms: Vec<(i64, Compiled<'a>)>,
}

#[derive(Debug)]
enum Compiled<'a> {
    Constant(bool),
    /// Per requirement: the key's column and whether each value id (and absence) satisfies it.
    Tables(Vec<(&'a Column, Vec<bool>, bool)>),
    Fallback(&'a NodeSelectorTerm),
}

impl<'a> PreferredScorer<'a> {
    pub(crate) fn prepare(pod: &'a PodInfo, snapshot: &'a Snapshot) -> Self {
        let terms = pod
            .preferred_node_affinity
            .iter()
            .map(|(w, term)| (i64::from(*w), compile(term, snapshot)))
            .collect();
        PreferredScorer { terms }
    }

    pub(crate) fn raw_score(&self, slot: usize, node: &NodeInfo) -> i64 {
        let mut score = 0;
        for (weight, term) in &self.terms {
            let matches = match term {
                Compiled::Constant(m) => *m,
                Compiled::Tables(reqs) => reqs.iter().all(|(column, table, absent)| {
                    let v = column.value(slot);
                    if v == NO_VALUE {
                        *absent
                    } else {
                        table[v as usize]
                    }
                }),
                Compiled::Fallback(term) => term.matches(&node.name, &node.labels),
            };
            if matches {
                score += weight;
            }
        }
        score
    }
}

fn compile<'a>(term: &'a NodeSelectorTerm, snapshot: &'a Snapshot) -> Compiled<'a> {
    let Some(selector) = term.labels_only() else {
        return Compiled::Fallback(term);
    };
    if selector.matches_nothing() {
        return Compiled::Constant(false);
    }
    let mut tables = Vec::new();
    for r in selector.requirements() {
        let absent = r.matches(|_| None);
        let Some(column) = snapshot.column(r.key()) else {
            if absent {
                continue;
            }
            return Compiled::Constant(false);
        };
        let table = (0..column.num_values() as u32)
            .map(|id| r.matches(|_| Some(column.name(id))))
            .collect();
        tables.push((column, table, absent));
    }
    Compiled::Tables(tables)
}

#[cfg(test)]
/// The reference the compiled [`PreferredScorer`] is checked against.
#[cfg(test)]
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

    fn req(key: &str, op: &str, values: &[&str]) -> core::NodeSelectorRequirement {
        core::NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn compiled_scorer_agrees_with_label_lookups() {
        let mut s = Snapshot::new();
        for (name, zone, cores) in [
            ("n1", Some("a"), "8"),
            ("n2", Some("b"), "32"),
            ("n3", None, "x"),
        ] {
            let mut n = crate::snapshot::tests::zoned_node(name, zone);
            let labels = n.metadata.labels.as_mut().expect("labels");
            labels.insert("cores".into(), cores.into());
            s.add_node(&n).expect("node");
        }
        let t = |exprs: Vec<core::NodeSelectorRequirement>, fields| {
            NodeSelectorTerm::from_api(&core::NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: fields,
            })
        };
        let pod = PodInfo {
            preferred_node_affinity: vec![
                (1, t(vec![req("zone", "In", &["a", "c"])], None)),
                (2, t(vec![req("zone", "NotIn", &["a"])], None)),
                (4, t(vec![req("zone", "DoesNotExist", &[])], None)),
                (
                    8,
                    t(
                        vec![req("cores", "Gt", &["16"]), req("zone", "Exists", &[])],
                        None,
                    ),
                ),
                (16, t(vec![req("missing", "DoesNotExist", &[])], None)),
                (32, t(vec![req("missing", "In", &["x"])], None)),
                (
                    64,
                    t(vec![], Some(vec![req("metadata.name", "In", &["n3"])])),
                ),
                (128, t(vec![req("zone", "Bogus", &["a"])], None)),
            ],
            ..Default::default()
        };
        let scorer = PreferredScorer::prepare(&pod, &s);
        let mut scores = Vec::new();
        for (i, node) in s.slots().iter().enumerate() {
            assert_eq!(
                scorer.raw_score(i, node),
                raw_score(&pod, node),
                "{}",
                node.name
            );
            scores.push(scorer.raw_score(i, node));
        }
        assert_eq!(scores, vec![1 + 16, 2 + 8 + 16, 2 + 4 + 16 + 64]);
    }
}
