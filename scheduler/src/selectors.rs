//! The matching vocabulary the plugins share, parsed once from the API types: node selector
//! terms (required and preferred node affinity), tolerations against taints, and inter-pod
//! affinity terms.

use std::collections::BTreeMap;

use berth_api::k8s_openapi::api::core::v1 as core;
use berth_api::{LabelSelector, Operator, Requirement};

/// `metadata.name`, the only field node selector `matchFields` may use.
const NODE_NAME_FIELD: &str = "metadata.name";

/// One `nodeSelectorTerm`: its `matchExpressions` and `matchFields` ANDed. A term that failed
/// to parse, or has neither, matches no node (as kube-scheduler's lazy-error selector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    labels: Option<LabelSelector>,
    fields: Vec<FieldTerm>,
    valid: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    key: String,
    value: String,
    equal: bool,
}

impl NodeSelectorTerm {
    pub fn from_api(term: &core::NodeSelectorTerm) -> NodeSelectorTerm {
        let mut requirements = Vec::new();
        let mut valid = true;
        for expr in term.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Some(Operator::In),
                "NotIn" => Some(Operator::NotIn),
                "Exists" => Some(Operator::Exists),
                "DoesNotExist" => Some(Operator::DoesNotExist),
                "Gt" => Some(Operator::GreaterThan),
                "Lt" => Some(Operator::LessThan),
                _ => None,
            };
            let values = expr.values.clone().unwrap_or_default();
            match op.map(|op| Requirement::new(expr.key.clone(), op, values)) {
                Some(Ok(r)) => requirements.push(r),
                _ => valid = false,
            }
        }
        let mut fields = Vec::new();
        for expr in term.match_fields.iter().flatten() {
            let equal = match expr.operator.as_str() {
                "In" => true,
                "NotIn" => false,
                _ => {
                    valid = false;
                    continue;
                }
            };
            match expr.values.as_deref() {
                Some([value]) => fields.push(FieldTerm {
                    key: expr.key.clone(),
                    value: value.clone(),
                    equal,
                }),
                _ => valid = false,
            }
        }
        let labels =
            (!requirements.is_empty()).then(|| LabelSelector::from_requirements(requirements));
        NodeSelectorTerm {
            valid: valid && (labels.is_some() || !fields.is_empty()),
            labels,
            fields,
        }
    }

    /// The term's label selector when that alone decides it (valid, no `matchFields`); `None`
    /// when the caller must use [`NodeSelectorTerm::matches`].
    pub(crate) fn labels_only(&self) -> Option<&LabelSelector> {
        if self.valid && self.fields.is_empty() {
            self.labels.as_ref()
        } else {
            None
        }
    }

    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if !self.valid {
            return false;
        }
        if self.labels.as_ref().is_some_and(|s| !s.matches(labels)) {
            return false;
        }
        self.fields.iter().all(|f| {
            let value = if f.key == NODE_NAME_FIELD {
                node_name
            } else {
                ""
            };
            (value == f.value) == f.equal
        })
    }
}

/// `spec.nodeSelector` ANDed with the required node affinity (its terms ORed): what the
/// NodeAffinity filter and PodTopologySpread's `nodeAffinityPolicy: Honor` check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequiredNodeAffinity {
    selector: Option<LabelSelector>,
    /// `None` when the pod has no required node affinity; an empty list matches nothing.
    terms: Option<Vec<NodeSelectorTerm>>,
}

impl RequiredNodeAffinity {
    pub fn from_pod(spec: &core::PodSpec) -> RequiredNodeAffinity {
        let selector = spec
            .node_selector
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(LabelSelector::from_set);
        let terms = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|ns| {
                ns.node_selector_terms
                    .iter()
                    .map(NodeSelectorTerm::from_api)
                    .collect()
            });
        RequiredNodeAffinity { selector, terms }
    }

    /// True when every node matches, so the filter can be skipped.
    pub fn is_empty(&self) -> bool {
        self.selector.is_none() && self.terms.is_none()
    }

    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.selector.as_ref().is_some_and(|s| !s.matches(labels)) {
            return false;
        }
        match &self.terms {
            None => true,
            Some(terms) => terms.iter().any(|t| t.matches(node_name, labels)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    /// An effect this version does not know; tolerated only by an effect-less toleration.
    Other,
}

impl TaintEffect {
    fn parse(s: &str) -> TaintEffect {
        match s {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            _ => TaintEffect::Other,
        }
    }

    /// Whether the filters (not just the scores) must honour it.
    pub fn is_hard(self) -> bool {
        matches!(self, TaintEffect::NoSchedule | TaintEffect::NoExecute)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl Taint {
    pub fn from_api(t: &core::Taint) -> Taint {
        Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: TaintEffect::parse(&t.effect),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    key: String,
    /// `Exists` when true, `Equal` (or empty) when false; an unknown operator tolerates nothing.
    exists: bool,
    unknown_operator: bool,
    value: String,
    /// `None`: every effect.
    effect: Option<TaintEffect>,
}

impl Toleration {
    pub fn from_api(t: &core::Toleration) -> Toleration {
        let op = t.operator.as_deref().unwrap_or("");
        Toleration {
            key: t.key.clone().unwrap_or_default(),
            exists: op == "Exists",
            unknown_operator: !matches!(op, "" | "Equal" | "Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t
                .effect
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(TaintEffect::parse),
        }
    }

    pub fn tolerates(&self, key: &str, value: &str, effect: TaintEffect) -> bool {
        if self.effect.is_some_and(|e| e != effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != key {
            return false;
        }
        !self.unknown_operator && (self.exists || self.value == value)
    }

    /// Whether the PreferNoSchedule scoring counts it (effect empty or PreferNoSchedule).
    pub fn applies_to_prefer_no_schedule(&self) -> bool {
        matches!(self.effect, None | Some(TaintEffect::PreferNoSchedule))
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|t| t.tolerates(&taint.key, &taint.value, taint.effect))
}

/// One inter-pod (anti-)affinity term of a pod, with the namespaces it applies to resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityTerm {
    pub namespaces: Vec<String>,
    /// `None`: no namespace selector (nothing beyond `namespaces`).
    pub namespace_selector: Option<LabelSelector>,
    pub selector: LabelSelector,
    pub topology_key: String,
}

impl AffinityTerm {
    /// Parses a term owned by a pod in `namespace` with labels `labels` (for `matchLabelKeys`
    /// and `mismatchLabelKeys`). An unparsable selector matches nothing.
    pub fn from_api(
        term: &core::PodAffinityTerm,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> AffinityTerm {
        let mut selector = LabelSelector::from_optional(term.label_selector.as_ref())
            .unwrap_or_else(|_| LabelSelector::nothing());
        if !selector.matches_nothing() {
            let extra =
                label_key_requirements(term.match_label_keys.as_deref(), labels, Operator::In)
                    .chain(label_key_requirements(
                        term.mismatch_label_keys.as_deref(),
                        labels,
                        Operator::NotIn,
                    ));
            selector = merge(selector, extra);
        }
        let namespace_selector = term.namespace_selector.as_ref().map(|s| {
            LabelSelector::from_structured(s).unwrap_or_else(|_| LabelSelector::nothing())
        });
        let mut namespaces = term.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(namespace.to_string());
        }
        AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether a pod in `namespace` with `labels` is one this term selects; `ns_labels` gives
    /// the namespace's labels when a namespace selector needs them.
    pub fn matches<'a>(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        ns_labels: impl FnOnce(&str) -> Option<&'a BTreeMap<String, String>>,
    ) -> bool {
        let ns_ok = self.namespaces.iter().any(|n| n == namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.is_empty() || ns_labels(namespace).is_some_and(|l| s.matches(l))
            });
        ns_ok && self.selector.matches(labels)
    }
}

/// `key in (value)` / `key notin (value)` for each key the owning pod has a label for.
pub fn label_key_requirements<'a>(
    keys: Option<&'a [String]>,
    labels: &'a BTreeMap<String, String>,
    op: Operator,
) -> impl Iterator<Item = Requirement> + 'a {
    keys.into_iter().flatten().filter_map(move |k| {
        let v = labels.get(k)?;
        Requirement::new(k.clone(), op, vec![v.clone()]).ok()
    })
}

pub fn merge(selector: LabelSelector, extra: impl Iterator<Item = Requirement>) -> LabelSelector {
    let mut reqs = selector.requirements().to_vec();
    let before = reqs.len();
    reqs.extend(extra);
    if reqs.len() == before {
        return selector;
    }
    LabelSelector::from_requirements(reqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm as Api};

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_selector_term_operators() {
        let node = labels(&[("zone", "a"), ("cores", "16")]);
        let term = |exprs: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm::from_api(&Api {
                match_expressions: Some(exprs),
                match_fields: None,
            })
        };
        assert!(term(vec![req("zone", "In", &["a", "b"])]).matches("n", &node));
        assert!(!term(vec![req("zone", "NotIn", &["a"])]).matches("n", &node));
        assert!(term(vec![req("gpu", "DoesNotExist", &[])]).matches("n", &node));
        assert!(term(vec![req("cores", "Gt", &["8"])]).matches("n", &node));
        assert!(!term(vec![req("cores", "Lt", &["8"])]).matches("n", &node));
        assert!(!term(vec![req("cores", "Bogus", &["8"])]).matches("n", &node));
        // An empty term matches nothing.
        assert!(!term(vec![]).matches("n", &node));
        let by_name = NodeSelectorTerm::from_api(&Api {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n"])]),
        });
        assert!(by_name.matches("n", &node));
        assert!(!by_name.matches("m", &node));
    }

    #[test]
    fn tolerations_match_taints() {
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: TaintEffect::NoSchedule,
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration::from_api(&core::Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    toleration_seconds: None,
                })
            };
        assert!(tolerated(&[tol(Some("k"), None, Some("v"), None)], &taint));
        assert!(!tolerated(&[tol(Some("k"), None, Some("w"), None)], &taint));
        assert!(tolerated(&[tol(None, Some("Exists"), None, None)], &taint));
        assert!(!tolerated(
            &[tol(Some("k"), Some("Exists"), None, Some("NoExecute"))],
            &taint
        ));
        assert!(tolerated(
            &[tol(Some("k"), Some("Exists"), None, Some("NoSchedule"))],
            &taint
        ));
    }

    #[test]
    fn affinity_term_defaults_to_own_namespace() {
        let term = AffinityTerm::from_api(
            &core::PodAffinityTerm {
                label_selector: Some(
                    berth_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some([("app".to_string(), "web".to_string())].into()),
                        match_expressions: None,
                    },
                ),
                topology_key: "zone".into(),
                ..Default::default()
            },
            "shop",
            &BTreeMap::new(),
        );
        let web = labels(&[("app", "web")]);
        assert!(term.matches("shop", &web, |_| None));
        assert!(!term.matches("other", &web, |_| None));
        assert!(!term.matches("shop", &labels(&[("app", "db")]), |_| None));
    }
}
