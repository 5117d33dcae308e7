//! InterPodAffinity: required affinity and anti-affinity of the incoming pod, and required
//! anti-affinity of existing pods against it (filter); preferred terms of both sides and
//! existing pods' required affinity (score, min–max normalized). Counts are per topology pair
//! (label key, value), computed once a cycle from the snapshot.

use std::collections::{BTreeMap, HashMap};

use crate::pod_info::PodInfo;
use crate::snapshot::{NodeInfo, Snapshot};

use super::{Reason, MAX_NODE_SCORE};

/// kube-scheduler's default `hardPodAffinityWeight`.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Sums per topology pair, borrowing keys and values from the snapshot for one cycle.
#[derive(Debug, Default)]
pub(crate) struct TopologyCounts<'a> {
    keys: Vec<&'a str>,
    counts: HashMap<(&'a str, &'a str), i64>,
}

impl<'a> TopologyCounts<'a> {
    fn add(&mut self, key: &'a str, labels: &'a BTreeMap<String, String>, value: i64) {
        let Some(v) = labels.get(key) else {
            return;
        };
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        *self.counts.entry((key, v.as_str())).or_insert(0) += value;
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.counts.get(&(key, value)).copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Whether any pair the node's labels form has a positive count.
    fn positive_on(&self, labels: &BTreeMap<String, String>) -> bool {
        self.keys
            .iter()
            .any(|k| labels.get(*k).is_some_and(|v| self.get(k, v) > 0))
    }

    /// Sum over the keys of the count of the node's pair.
    fn sum_on(&self, labels: &BTreeMap<String, String>) -> i64 {
        self.keys
            .iter()
            .filter_map(|k| labels.get(*k).map(|v| self.get(k, v)))
            .sum()
    }
}

/// The filter's pre-computed state for one pod.
#[derive(Debug)]
pub(crate) struct InterPodFilter<'a> {
    pod: &'a PodInfo,
    existing_anti: TopologyCounts<'a>,
    affinity: TopologyCounts<'a>,
    anti: TopologyCounts<'a>,
    /// The pod matches all its own affinity terms, so the first pod of a group may go anywhere.
    self_affine: bool,
}

impl<'a> InterPodFilter<'a> {
    /// `None` when neither the pod nor any existing pod has required terms.
    pub(crate) fn prepare(pod: &'a PodInfo, snapshot: &'a Snapshot) -> Option<Self> {
        let existing = snapshot.any_pod_with_required_anti_affinity();
        let own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !existing && !own {
            return None;
        }
        let ns_labels = |ns: &str| snapshot.namespace_labels(ns);
        let mut state = InterPodFilter {
            pod,
            existing_anti: TopologyCounts::default(),
            affinity: TopologyCounts::default(),
            anti: TopologyCounts::default(),
            self_affine: pod
                .required_affinity
                .iter()
                .all(|t| t.matches(&pod.namespace, &pod.labels, ns_labels)),
        };
        for node in snapshot.slots().iter().filter(|n| n.exists) {
            if existing && node.pods_with_required_anti_affinity > 0 {
                for ep in node
                    .pods
                    .iter()
                    .filter(|p| !p.required_anti_affinity.is_empty())
                {
                    for t in &ep.required_anti_affinity {
                        if t.matches(&pod.namespace, &pod.labels, ns_labels) {
                            state.existing_anti.add(&t.topology_key, &node.labels, 1);
                        }
                    }
                }
            }
            if !own {
                continue;
            }
            for ep in &node.pods {
                let matches_all = !pod.required_affinity.is_empty()
                    && pod
                        .required_affinity
                        .iter()
                        .all(|t| t.matches(&ep.namespace, &ep.labels, ns_labels));
                if matches_all {
                    for t in &pod.required_affinity {
                        state.affinity.add(&t.topology_key, &node.labels, 1);
                    }
                }
                for t in &pod.required_anti_affinity {
                    if t.matches(&ep.namespace, &ep.labels, ns_labels) {
                        state.anti.add(&t.topology_key, &node.labels, 1);
                    }
                }
            }
        }
        Some(state)
    }

    pub(crate) fn filter(&self, node: &NodeInfo) -> Option<Reason> {
        if self.existing_anti.positive_on(&node.labels) {
            return Some(Reason::ExistingAntiAffinity);
        }
        if !self.pod.required_affinity.is_empty() {
            let mut pods_exist = true;
            for t in &self.pod.required_affinity {
                match node.labels.get(&t.topology_key) {
                    Some(v) => pods_exist &= self.affinity.get(&t.topology_key, v) > 0,
                    None => return Some(Reason::Affinity),
                }
            }
            let first_of_group = self.affinity.is_empty() && self.self_affine;
            if !pods_exist && !first_of_group {
                return Some(Reason::Affinity);
            }
        }
        let anti = self.pod.required_anti_affinity.iter().any(|t| {
            node.labels
                .get(&t.topology_key)
                .is_some_and(|v| self.anti.get(&t.topology_key, v) > 0)
        });
        anti.then_some(Reason::AntiAffinity)
    }
}

/// The score's per-pair sums; `None` when nothing contributes (kube-scheduler skips the plugin,
/// leaving every node 0).
pub(crate) fn prepare_score<'a>(
    pod: &'a PodInfo,
    snapshot: &'a Snapshot,
) -> Option<TopologyCounts<'a>> {
    let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !own && !snapshot.any_pod_with_affinity() {
        return None;
    }
    let ns_labels = |ns: &str| snapshot.namespace_labels(ns);
    let mut scores = TopologyCounts::default();
    for node in snapshot
        .slots()
        .iter()
        .filter(|n| n.exists && !n.labels.is_empty())
    {
        if !own && node.pods_with_affinity == 0 {
            continue;
        }
        let labels = &node.labels;
        for ep in node.pods.iter().filter(|p| own || p.has_pod_affinity()) {
            for w in &pod.preferred_affinity {
                if w.term.matches(&ep.namespace, &ep.labels, ns_labels) {
                    scores.add(&w.term.topology_key, labels, i64::from(w.weight));
                }
            }
            for w in &pod.preferred_anti_affinity {
                if w.term.matches(&ep.namespace, &ep.labels, ns_labels) {
                    scores.add(&w.term.topology_key, labels, -i64::from(w.weight));
                }
            }
            for t in &ep.required_affinity {
                if t.matches(&pod.namespace, &pod.labels, ns_labels) {
                    scores.add(&t.topology_key, labels, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for w in &ep.preferred_affinity {
                if w.term.matches(&pod.namespace, &pod.labels, ns_labels) {
                    scores.add(&w.term.topology_key, labels, i64::from(w.weight));
                }
            }
            for w in &ep.preferred_anti_affinity {
                if w.term.matches(&pod.namespace, &pod.labels, ns_labels) {
                    scores.add(&w.term.topology_key, labels, -i64::from(w.weight));
                }
            }
        }
    }
    (!scores.is_empty()).then_some(scores)
}

pub(crate) fn raw_score(scores: &TopologyCounts<'_>, node: &NodeInfo) -> i64 {
    scores.sum_on(&node.labels)
}

/// Min–max normalization to 0–100 (all equal: all 0).
pub(crate) fn normalize(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    let diff = max - min;
    for s in scores {
        *s = if diff > 0 {
            (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::AffinityTerm;
    use berth_api::LabelSelector;

    fn term(app: &str, key: &str) -> AffinityTerm {
        AffinityTerm {
            namespaces: vec!["default".into()],
            namespace_selector: None,
            selector: LabelSelector::parse(&format!("app={app}")).expect("selector"),
            topology_key: key.into(),
        }
    }

    fn pod(name: &str, app: &str) -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..Default::default()
        }
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::new();
        for (name, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
            let mut n = crate::snapshot::tests::node(name, "4", "8Gi", "110");
            n.metadata
                .labels
                .as_mut()
                .expect("labels")
                .insert("zone".into(), zone.into());
            s.add_node(&n).expect("node");
        }
        s
    }

    #[test]
    fn required_anti_affinity_both_ways() {
        let mut s = snapshot();
        let mut db = pod("db-0", "db");
        db.required_anti_affinity = vec![term("web", "zone")];
        s.assume_pod(&db, "n1");
        // An existing pod's anti-affinity keeps web pods out of its zone.
        let web = pod("web-0", "web");
        let state = InterPodFilter::prepare(&web, &s).expect("state");
        let node = |n: &str| s.node(n).expect("node");
        assert_eq!(state.filter(node("n2")), Some(Reason::ExistingAntiAffinity));
        assert_eq!(state.filter(node("n3")), None);
        // The incoming pod's own anti-affinity against db pods, per hostname.
        let mut cache = pod("cache-0", "cache");
        cache.required_anti_affinity = vec![term("db", "kubernetes.io/hostname")];
        let state = InterPodFilter::prepare(&cache, &s).expect("state");
        assert_eq!(state.filter(node("n1")), Some(Reason::AntiAffinity));
        assert_eq!(state.filter(node("n2")), None);
    }

    #[test]
    fn required_affinity_and_first_of_group() {
        let mut s = snapshot();
        let mut web = pod("web-0", "web");
        web.required_affinity = vec![term("web", "zone")];
        let node = |s: &Snapshot, n: &str| s.node(n).expect("node").clone();
        // No web pod anywhere and the pod matches its own term: any node.
        let state = InterPodFilter::prepare(&web, &s).expect("state");
        assert_eq!(state.filter(&node(&s, "n3")), None);
        s.assume_pod(&pod("web-1", "web"), "n3");
        let state = InterPodFilter::prepare(&web, &s).expect("state");
        assert_eq!(state.filter(&node(&s, "n1")), Some(Reason::Affinity));
        assert_eq!(state.filter(&node(&s, "n3")), None);
    }

    #[test]
    fn preferred_terms_score_per_zone() {
        let mut s = snapshot();
        s.assume_pod(&pod("db-0", "db"), "n3");
        let mut web = pod("web-0", "web");
        web.preferred_affinity = vec![crate::pod_info::WeightedTerm {
            weight: 10,
            term: term("db", "zone"),
        }];
        let scores = prepare_score(&web, &s).expect("scores");
        let raw: Vec<i64> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| raw_score(&scores, s.node(n).expect("node")))
            .collect();
        assert_eq!(raw, vec![0, 0, 10]);
        let mut norm = raw.clone();
        normalize(&mut norm);
        assert_eq!(norm, vec![0, 0, 100]);
        // Nobody has affinity terms: the plugin is skipped.
        assert!(prepare_score(&pod("x", "x"), &s).is_none());
    }
}
