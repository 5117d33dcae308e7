//! InterPodAffinity: required affinity and anti-affinity of the incoming pod, and required
//! anti-affinity of existing pods against it (filter); preferred terms of both sides and
//! existing pods' required affinity (score, min–max normalized). Counts are per topology pair
//! (label key, value), computed once a cycle from the snapshot.

use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use crate::topology::{Column, NO_VALUE};

use super::{Reason, MAX_NODE_SCORE};

/// kube-scheduler's default `hardPodAffinityWeight`.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Sums per topology pair (label key, value), dense by the value ids of each key's column.
#[derive(Debug, Default)]
pub(crate) struct TopologyCounts<'a> {
    keys: Vec<(&'a str, &'a Column, Vec<i64>)>,
    /// Some pair was added to (kube-scheduler's map is non-empty).
    any: bool,
}

impl<'a> TopologyCounts<'a> {
    fn add(&mut self, snapshot: &'a Snapshot, key: &'a str, slot: usize, value: i64) {
        let k = match self.keys.iter().position(|(k, ..)| *k == key) {
            Some(k) => k,
            None => {
                let Some(column) = snapshot.column(key) else {
                    return;
                };
                self.keys.push((key, column, vec![0; column.num_values()]));
                self.keys.len() - 1
            }
        };
        let (_, column, counts) = &mut self.keys[k];
        let v = column.value(slot);
        if v != NO_VALUE {
            counts[v as usize] += value;
            self.any = true;
        }
    }

    fn is_empty(&self) -> bool {
        !self.any
    }

    /// Whether any pair the node's labels form has a positive count.
    fn positive_on(&self, slot: usize) -> bool {
        self.keys.iter().any(|(_, column, counts)| {
            let v = column.value(slot);
            v != NO_VALUE && counts[v as usize] > 0
        })
    }

    /// Sum over the keys of the count of the node's pair.
    fn sum_on(&self, slot: usize) -> i64 {
        self.keys
            .iter()
            .map(|(_, column, counts)| {
                let v = column.value(slot);
                if v == NO_VALUE {
                    0
                } else {
                    counts[v as usize]
                }
            })
            .sum()
    }
}

/// Counts per domain of one term's topology key.
#[derive(Debug)]
struct TermCounts<'a> {
    column: Option<&'a Column>,
    counts: Vec<i64>,
}

impl<'a> TermCounts<'a> {
    fn new(snapshot: &'a Snapshot, key: &str) -> Self {
        let column = snapshot.column(key);
        TermCounts {
            column,
            counts: vec![0; column.map_or(0, Column::num_values)],
        }
    }

    /// Adds to the slot's domain; false when the node lacks the key.
    fn add(&mut self, slot: usize, value: i64) -> bool {
        match self.at(slot) {
            Some(v) => {
                self.counts[v] += value;
                true
            }
            None => false,
        }
    }

    /// The slot's value id, `None` without the label.
    #[inline]
    fn at(&self, slot: usize) -> Option<usize> {
        let v = self.column?.value(slot);
        (v != NO_VALUE).then_some(v as usize)
    }

    #[inline]
    fn positive_on(&self, slot: usize) -> bool {
        self.at(slot).is_some_and(|v| self.counts[v] > 0)
    }
}

/// The filter's pre-computed state for one pod.
#[derive(Debug)]
pub(crate) struct InterPodFilter<'a> {
    existing_anti: TopologyCounts<'a>,
    /// Per required affinity term: pods matching all the terms, per domain of its key.
    affinity: Vec<TermCounts<'a>>,
    affinity_any: bool,
    /// Per required anti-affinity term: pods it matches, per domain of its key.
    anti: Vec<TermCounts<'a>>,
    /// The pod matches all its own affinity terms, so the first pod of a group may go anywhere.
    self_affine: bool,
}

impl<'a> InterPodFilter<'a> {
    /// `None` when neither the pod nor any existing pod has required terms.
    ///
    /// The incoming pod's terms are matched once per pod group (namespace and labels) and only
    /// the matching groups' nodes are visited; existing pods' anti-affinity terms are matched
    /// once per distinct set of terms.
    pub(crate) fn prepare(pod: &'a PodInfo, snapshot: &'a Snapshot) -> Option<Self> {
        let existing = snapshot.any_pod_with_required_anti_affinity();
        let own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !existing && !own {
            return None;
        }
        let ns_labels = |ns: &str| snapshot.namespace_labels(ns);
        let slots = snapshot.slots();
        let mut state = InterPodFilter {
            existing_anti: TopologyCounts::default(),
            affinity: pod
                .required_affinity
                .iter()
                .map(|t| TermCounts::new(snapshot, &t.topology_key))
                .collect(),
            affinity_any: false,
            anti: pod
                .required_anti_affinity
                .iter()
                .map(|t| TermCounts::new(snapshot, &t.topology_key))
                .collect(),
            self_affine: pod
                .required_affinity
                .iter()
                .all(|t| t.matches(&pod.namespace, &pod.labels, ns_labels)),
        };
        if existing {
            for g in snapshot.anti_groups().iter() {
                for t in &g.terms {
                    if !t.matches(&pod.namespace, &pod.labels, ns_labels) {
                        continue;
                    }
                    for (&slot, &n) in &g.on {
                        if slots[slot as usize].exists {
                            let (slot, n) = (slot as usize, i64::from(n));
                            state.existing_anti.add(snapshot, &t.topology_key, slot, n);
                        }
                    }
                }
            }
        }
        if own {
            let mut anti_match = vec![false; pod.required_anti_affinity.len()];
            for g in snapshot.groups().iter() {
                let matches_all = !pod.required_affinity.is_empty()
                    && pod
                        .required_affinity
                        .iter()
                        .all(|t| t.matches(&g.namespace, &g.labels, ns_labels));
                for (m, t) in anti_match.iter_mut().zip(&pod.required_anti_affinity) {
                    *m = t.matches(&g.namespace, &g.labels, ns_labels);
                }
                if !matches_all && !anti_match.contains(&true) {
                    continue;
                }
                for (&slot, n) in &g.on {
                    let slot = slot as usize;
                    if !slots[slot].exists {
                        continue;
                    }
                    let n = i64::from(n.all);
                    if matches_all {
                        for t in &mut state.affinity {
                            state.affinity_any |= t.add(slot, n);
                        }
                    }
                    for (t, _) in state.anti.iter_mut().zip(&anti_match).filter(|(_, m)| **m) {
                        t.add(slot, n);
                    }
                }
            }
        }
        Some(state)
    }

    pub(crate) fn filter(&self, slot: usize) -> Option<Reason> {
        if self.existing_anti.positive_on(slot) {
            return Some(Reason::ExistingAntiAffinity);
        }
        if !self.affinity.is_empty() {
            let mut pods_exist = true;
            for t in &self.affinity {
                match t.at(slot) {
                    Some(v) => pods_exist &= t.counts[v] > 0,
                    None => return Some(Reason::Affinity),
                }
            }
            let first_of_group = !self.affinity_any && self.self_affine;
            if !pods_exist && !first_of_group {
                return Some(Reason::Affinity);
            }
        }
        let anti = self.anti.iter().any(|t| t.positive_on(slot));
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
    let slots = snapshot.slots();
    let mut scores = TopologyCounts::default();
    if own {
        let terms = pod
            .preferred_affinity
            .iter()
            .map(|w| (w, i64::from(w.weight)))
            .chain(
                pod.preferred_anti_affinity
                    .iter()
                    .map(|w| (w, -i64::from(w.weight))),
            );
        for (w, weight) in terms {
            for g in snapshot.groups().iter() {
                if !w.term.matches(&g.namespace, &g.labels, ns_labels) {
                    continue;
                }
                for (&slot, n) in &g.on {
                    if slots[slot as usize].exists {
                        let value = weight * i64::from(n.all);
                        scores.add(snapshot, &w.term.topology_key, slot as usize, value);
                    }
                }
            }
        }
    }
    if snapshot.any_pod_with_affinity() {
        for (i, node) in slots.iter().enumerate() {
            if !node.exists || node.pods_with_affinity == 0 {
                continue;
            }
            for ep in node.pods.iter().filter(|p| p.has_pod_affinity()) {
                for t in &ep.required_affinity {
                    if t.matches(&pod.namespace, &pod.labels, ns_labels) {
                        scores.add(snapshot, &t.topology_key, i, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for w in &ep.preferred_affinity {
                    if w.term.matches(&pod.namespace, &pod.labels, ns_labels) {
                        let weight = i64::from(w.weight);
                        scores.add(snapshot, &w.term.topology_key, i, weight);
                    }
                }
                for w in &ep.preferred_anti_affinity {
                    if w.term.matches(&pod.namespace, &pod.labels, ns_labels) {
                        let weight = -i64::from(w.weight);
                        scores.add(snapshot, &w.term.topology_key, i, weight);
                    }
                }
            }
        }
    }
    (!scores.is_empty()).then_some(scores)
}

pub(crate) fn raw_score(scores: &TopologyCounts<'_>, slot: usize) -> i64 {
    scores.sum_on(slot)
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
    use crate::snapshot::tests::{slot_of, zoned_node};
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
            s.add_node(&zoned_node(name, Some(zone))).expect("node");
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
        let node = |n: &str| slot_of(&s, n);
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
        let node = |s: &Snapshot, n: &str| slot_of(s, n);
        // No web pod anywhere and the pod matches its own term: any node.
        let state = InterPodFilter::prepare(&web, &s).expect("state");
        assert_eq!(state.filter(node(&s, "n3")), None);
        s.assume_pod(&pod("web-1", "web"), "n3");
        let state = InterPodFilter::prepare(&web, &s).expect("state");
        assert_eq!(state.filter(node(&s, "n1")), Some(Reason::Affinity));
        assert_eq!(state.filter(node(&s, "n3")), None);
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
            .map(|n| raw_score(&scores, slot_of(&s, n)))
            .collect();
        assert_eq!(raw, vec![0, 0, 10]);
        let mut norm = raw.clone();
        normalize(&mut norm);
        assert_eq!(norm, vec![0, 0, 100]);
        // Nobody has affinity terms: the plugin is skipped.
        assert!(prepare_score(&pod("x", "x"), &s).is_none());
    }
}
