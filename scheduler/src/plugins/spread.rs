//! PodTopologySpread: DoNotSchedule constraints filter on skew (matching pods in the node's
//! domain + the pod itself − the global minimum ≤ maxSkew); ScheduleAnyway constraints score
//! fewer matching pods higher, weighted by log(number of domains + 2).

use berth_api::well_known::labels::HOSTNAME;

use crate::pod_info::{PodInfo, SpreadConstraint};
use crate::selectors::tolerated;
use crate::snapshot::{NodeInfo, Snapshot};
use crate::topology::{Column, NO_VALUE};

use super::{Reason, MAX_NODE_SCORE};

/// Score of a node the scoring ignores (it lacks a constraint's topology label).
pub(crate) const IGNORED: i64 = -1;

/// Matching pods on a node: same namespace as the pod, not terminating.
#[cfg(test)]
fn count_matching(pod: &PodInfo, c: &SpreadConstraint, node: &NodeInfo) -> i64 {
    node.pods
        .iter()
        .filter(|p| !p.terminating && p.namespace == pod.namespace && c.selector.matches(&p.labels))
        .count() as i64
}

#[cfg(test)]
fn has_all_keys(constraints: &[&SpreadConstraint], node: &NodeInfo) -> bool {
    constraints
        .iter()
        .all(|c| node.labels.contains_key(&c.topology_key))
}

/// Whether [`included`] holds for every node, so the per-node check can be skipped.
fn includes_every_node(pod: &PodInfo, c: &SpreadConstraint) -> bool {
    (!c.honor_node_affinity || pod.required_node_affinity.is_empty()) && !c.honor_taints
}

/// Whether the node counts for the constraint under its nodeAffinityPolicy and
/// nodeTaintsPolicy.
fn included(pod: &PodInfo, c: &SpreadConstraint, node: &NodeInfo) -> bool {
    if c.honor_node_affinity && !pod.required_node_affinity.matches(&node.name, &node.labels) {
        return false;
    }
    !c.honor_taints
        || node
            .taints
            .iter()
            .filter(|t| t.effect.is_hard())
            .all(|t| tolerated(&pod.tolerations, t))
}

#[derive(Debug)]
struct HardConstraint<'a> {
    c: &'a SpreadConstraint,
    column: Option<&'a Column>,
    /// Matching pods per domain (by value id of the constraint's key).
    counts: Vec<i64>,
    min: i64,
    self_match: i64,
}

/// The filter's pre-computed domain counts for one pod.
#[derive(Debug)]
pub(crate) struct SpreadFilter<'a> {
    constraints: Vec<HardConstraint<'a>>,
}

impl<'a> SpreadFilter<'a> {
    /// `None` when the pod has no DoNotSchedule constraint.
    ///
    /// One pass over the nodes finds the domains the constraints count (nodes with every key
    /// that the policies include); the matching pods are then summed from the snapshot's pod
    /// groups, so the cost grows with nodes and with matching pods, not with all pods.
    pub(crate) fn prepare(pod: &'a PodInfo, snapshot: &'a Snapshot) -> Option<Self> {
        let hard: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).collect();
        if hard.is_empty() {
            return None;
        }
        let slots = snapshot.slots();
        let mut constraints: Vec<HardConstraint> = hard
            .iter()
            .map(|c| {
                let column = snapshot.column(&c.topology_key);
                HardConstraint {
                    c,
                    column,
                    counts: vec![0; column.map_or(0, Column::num_values)],
                    min: 0,
                    self_match: i64::from(c.selector.matches(&pod.labels)),
                }
            })
            .collect();
        // Per constraint, each slot's domain when the slot counts, else NO_VALUE.
        let mut eligible: Vec<Vec<u32>> = vec![vec![NO_VALUE; slots.len()]; hard.len()];
        let mut present: Vec<Vec<bool>> = constraints
            .iter()
            .map(|hc| vec![false; hc.counts.len()])
            .collect();
        if constraints.iter().all(|hc| hc.column.is_some()) {
            let trivial: Vec<bool> = hard.iter().map(|c| includes_every_node(pod, c)).collect();
            let hot = snapshot.hot();
            for (i, h) in hot.iter().enumerate() {
                if !h.exists {
                    continue;
                }
                let all_keys = constraints
                    .iter()
                    .all(|hc| hc.column.is_some_and(|col| col.value(i) != NO_VALUE));
                if !all_keys {
                    continue;
                }
                for (k, hc) in constraints.iter().enumerate() {
                    if !trivial[k] && !included(pod, hc.c, &slots[i]) {
                        continue;
                    }
                    let v = hc.column.map_or(NO_VALUE, |col| col.value(i));
                    eligible[k][i] = v;
                    present[k][v as usize] = true;
                }
            }
            for g in snapshot.groups().iter() {
                if g.namespace != pod.namespace {
                    continue;
                }
                for (k, hc) in constraints.iter_mut().enumerate() {
                    if !hc.c.selector.matches(&g.labels) {
                        continue;
                    }
                    for (&slot, n) in &g.on {
                        let v = eligible[k][slot as usize];
                        if v != NO_VALUE {
                            hc.counts[v as usize] += i64::from(n.live);
                        }
                    }
                }
            }
        }
        for (hc, present) in constraints.iter_mut().zip(&present) {
            let domains = hc
                .counts
                .iter()
                .zip(present)
                .filter(|(_, p)| **p)
                .map(|(c, _)| *c);
            hc.min = domains.clone().min().unwrap_or(i64::from(i32::MAX));
            if hc
                .c
                .min_domains
                .is_some_and(|m| (domains.count() as i64) < i64::from(m))
            {
                hc.min = 0;
            }
        }
        Some(SpreadFilter { constraints })
    }

    pub(crate) fn filter(&self, slot: usize) -> Option<Reason> {
        for hc in &self.constraints {
            let v = hc.column.map_or(NO_VALUE, |col| col.value(slot));
            if v == NO_VALUE {
                return Some(Reason::SpreadMissingLabel);
            }
            let matching = hc.counts[v as usize];
            if matching + hc.self_match - hc.min > i64::from(hc.c.max_skew) {
                return Some(Reason::Spread);
            }
        }
        None
    }
}

/// The score's state: per ScheduleAnyway constraint, matching pods per domain of the feasible
/// nodes (per node for hostname) and the constraint's normalizing weight.
#[derive(Debug)]
pub(crate) struct SpreadScore<'a> {
    soft: Vec<&'a SpreadConstraint>,
    /// `None` when some constraint's key is on no node: every node is then ignored.
    columns: Option<Vec<&'a Column>>,
    /// By value id of the key; by slot for the hostname key.
    counts: Vec<Vec<i64>>,
    weights: Vec<f64>,
}

impl<'a> SpreadScore<'a> {
    /// `None` when the pod has no ScheduleAnyway constraint (the plugin then scores 0).
    pub(crate) fn prepare(
        pod: &'a PodInfo,
        snapshot: &'a Snapshot,
        feasible: &[u32],
    ) -> Option<Self> {
        let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
        if soft.is_empty() || feasible.is_empty() {
            return None;
        }
        let columns: Option<Vec<&Column>> = soft
            .iter()
            .map(|c| snapshot.column(&c.topology_key))
            .collect();
        let Some(cols) = columns.as_ref() else {
            return Some(SpreadScore {
                counts: vec![Vec::new(); soft.len()],
                weights: vec![0.0; soft.len()],
                soft,
                columns: None,
            });
        };
        let slots = snapshot.slots();
        let hostname: Vec<bool> = soft.iter().map(|c| c.topology_key == HOSTNAME).collect();
        let has_all = |slot: usize| cols.iter().all(|col| col.value(slot) != NO_VALUE);
        // Domains of the feasible nodes that have every key.
        let mut present: Vec<Vec<bool>> =
            cols.iter().map(|c| vec![false; c.num_values()]).collect();
        let mut domains = vec![0usize; soft.len()];
        let mut considered = 0usize;
        for &i in feasible {
            let i = i as usize;
            if !has_all(i) {
                continue;
            }
            considered += 1;
            for (k, col) in cols.iter().enumerate() {
                let seen = &mut present[k][col.value(i) as usize];
                if !hostname[k] && !*seen {
                    *seen = true;
                    domains[k] += 1;
                }
            }
        }
        let weights = hostname
            .iter()
            .zip(&domains)
            .map(|(&host, &d)| ((if host { considered } else { d } + 2) as f64).ln())
            .collect();
        let mut counts: Vec<Vec<i64>> = cols
            .iter()
            .zip(&hostname)
            .map(|(col, &host)| vec![0; if host { slots.len() } else { col.num_values() }])
            .collect();
        let trivial: Vec<bool> = soft.iter().map(|c| includes_every_node(pod, c)).collect();
        for g in snapshot.groups().iter() {
            if g.namespace != pod.namespace {
                continue;
            }
            for (k, c) in soft.iter().enumerate() {
                if !c.selector.matches(&g.labels) {
                    continue;
                }
                for (&slot, n) in &g.on {
                    let slot = slot as usize;
                    let live = i64::from(n.live);
                    if hostname[k] {
                        // Counted on the node itself, whatever the policies say.
                        counts[k][slot] += live;
                        continue;
                    }
                    if !slots[slot].exists
                        || !has_all(slot)
                        || !(trivial[k] || included(pod, c, &slots[slot]))
                    {
                        continue;
                    }
                    let v = cols[k].value(slot) as usize;
                    if present[k][v] {
                        counts[k][v] += live;
                    }
                }
            }
        }
        Some(SpreadScore {
            soft,
            columns,
            counts,
            weights,
        })
    }

    /// The node's raw score, or [`IGNORED`].
    pub(crate) fn raw_score(&self, slot: usize) -> i64 {
        let Some(cols) = &self.columns else {
            return IGNORED;
        };
        if cols.iter().any(|col| col.value(slot) == NO_VALUE) {
            return IGNORED;
        }
        let mut score = 0.0;
        for (k, c) in self.soft.iter().enumerate() {
            let count = if c.topology_key == HOSTNAME {
                self.counts[k][slot]
            } else {
                self.counts[k][cols[k].value(slot) as usize]
            };
            score += count as f64 * self.weights[k] + f64::from(c.max_skew - 1);
        }
        score.round() as i64
    }
}

/// Fewer matching pods score higher: `100 × (max + min − s) / max`; ignored nodes get 0.
pub(crate) fn normalize(scores: &mut [i64]) {
    let valid = scores.iter().copied().filter(|&s| s != IGNORED);
    let min = valid.clone().min().unwrap_or(0);
    let max = valid.max().unwrap_or(0);
    for s in scores {
        *s = if *s == IGNORED {
            0
        } else if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *s) / max
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::{slot_of, zoned_node};
    use berth_api::LabelSelector;

    fn constraint(key: &str, max_skew: i32, hard: bool) -> SpreadConstraint {
        SpreadConstraint {
            max_skew,
            topology_key: key.into(),
            hard,
            selector: LabelSelector::parse("app=web").expect("selector"),
            min_domains: None,
            honor_node_affinity: true,
            honor_taints: false,
        }
    }

    fn web(name: &str) -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    /// n1, n2 in zone a; n3 in zone b; n4 without a zone.
    fn snapshot() -> Snapshot {
        let mut s = Snapshot::new();
        for (name, zone) in [
            ("n1", Some("a")),
            ("n2", Some("a")),
            ("n3", Some("b")),
            ("n4", None),
        ] {
            s.add_node(&zoned_node(name, zone)).expect("node");
        }
        s
    }

    #[test]
    fn skew_filter() {
        let mut s = snapshot();
        s.assume_pod(&web("w1"), "n1");
        let mut pod = web("w2");
        pod.spread = vec![constraint("zone", 1, true)];
        let state = SpreadFilter::prepare(&pod, &s).expect("state");
        let node = |n: &str| slot_of(&s, n);
        // zone a has 1, zone b 0: a would reach skew 2.
        assert_eq!(state.filter(node("n2")), Some(Reason::Spread));
        assert_eq!(state.filter(node("n3")), None);
        assert_eq!(state.filter(node("n4")), Some(Reason::SpreadMissingLabel));
        // minDomains 3 with two domains: the global minimum counts as 0.
        pod.spread[0].min_domains = Some(3);
        pod.spread[0].max_skew = 2;
        let state = SpreadFilter::prepare(&pod, &s).expect("state");
        assert_eq!(state.filter(node("n2")), None);
    }

    /// The per-pod, per-node computation the indexed [`SpreadScore`] replaced.
    fn reference_scores(pod: &PodInfo, s: &Snapshot, feasible: &[u32]) -> Vec<i64> {
        use std::collections::HashMap;
        let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
        let slots = s.slots();
        let mut counts: Vec<HashMap<&str, i64>> = vec![HashMap::new(); soft.len()];
        let mut considered = 0usize;
        for &i in feasible {
            let node = &slots[i as usize];
            if has_all_keys(&soft, node) {
                considered += 1;
                for (k, c) in soft.iter().enumerate() {
                    if c.topology_key != HOSTNAME {
                        counts[k]
                            .entry(node.labels[&c.topology_key].as_str())
                            .or_insert(0);
                    }
                }
            }
        }
        let weights: Vec<f64> = soft
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                let size = if c.topology_key == HOSTNAME {
                    considered
                } else {
                    m.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        for node in slots.iter().filter(|n| n.exists && has_all_keys(&soft, n)) {
            for (k, c) in soft.iter().enumerate() {
                if c.topology_key == HOSTNAME || !included(pod, c, node) {
                    continue;
                }
                if let Some(n) = counts[k].get_mut(node.labels[&c.topology_key].as_str()) {
                    *n += count_matching(pod, c, node);
                }
            }
        }
        feasible
            .iter()
            .map(|&i| {
                let node = &slots[i as usize];
                if !has_all_keys(&soft, node) {
                    return IGNORED;
                }
                let mut score = 0.0;
                for (k, c) in soft.iter().enumerate() {
                    let count = if c.topology_key == HOSTNAME {
                        count_matching(pod, c, node)
                    } else {
                        counts[k]
                            .get(node.labels[&c.topology_key].as_str())
                            .copied()
                            .unwrap_or(0)
                    };
                    score += count as f64 * weights[k] + f64::from(c.max_skew - 1);
                }
                score.round() as i64
            })
            .collect()
    }

    #[test]
    fn indexed_scores_match_per_pod_counting() {
        let mut s = snapshot();
        let mut other_ns = web("o1");
        other_ns.namespace = "other".into();
        let mut dying = web("t1");
        dying.terminating = true;
        for (p, n) in [
            (web("w1"), "n1"),
            (web("w2"), "n1"),
            (web("w3"), "n3"),
            (web("w4"), "n4"),
            (other_ns, "n3"),
            (dying, "n3"),
        ] {
            s.assume_pod(&p, n);
        }
        let mut pod = web("new");
        pod.spread = vec![
            constraint("zone", 1, false),
            constraint(HOSTNAME, 3, false),
            constraint("zone", 2, true),
        ];
        for feasible in [vec![0u32, 1, 2, 3], vec![1, 3], vec![0, 2]] {
            let state = SpreadScore::prepare(&pod, &s, &feasible).expect("state");
            let raw: Vec<i64> = feasible
                .iter()
                .map(|&i| state.raw_score(i as usize))
                .collect();
            assert_eq!(raw, reference_scores(&pod, &s, &feasible), "{feasible:?}");
        }
        // Exact values for all four: zones a (2 pods) and b (1), weight ln(4); hostname weight
        // ln(5) over 3 considered nodes, + maxSkew − 1 = 2; n4 has no zone.
        let state = SpreadScore::prepare(&pod, &s, &[0, 1, 2, 3]).expect("state");
        let raw: Vec<i64> = (0..4).map(|i| state.raw_score(i)).collect();
        let (z, h) = (4f64.ln(), 5f64.ln());
        assert_eq!(
            raw,
            vec![
                (2.0 * z + 2.0 * h + 2.0).round() as i64,
                (2.0 * z + 2.0).round() as i64,
                (z + h + 2.0).round() as i64,
                IGNORED,
            ]
        );
        // A key no node has: every node ignored.
        pod.spread = vec![constraint("rack", 1, false)];
        let state = SpreadScore::prepare(&pod, &s, &[0, 1]).expect("state");
        assert_eq!((state.raw_score(0), state.raw_score(1)), (IGNORED, IGNORED));
    }

    #[test]
    fn soft_constraint_scores() {
        let mut s = snapshot();
        s.assume_pod(&web("w1"), "n1");
        s.assume_pod(&web("w2"), "n2");
        let mut pod = web("w3");
        pod.spread = vec![constraint("zone", 1, false)];
        let feasible = [0u32, 1, 2, 3];
        let state = SpreadScore::prepare(&pod, &s, &feasible).expect("state");
        let mut raw: Vec<i64> = feasible
            .iter()
            .map(|&i| state.raw_score(i as usize))
            .collect();
        // Two zones: weight ln(4); zone a has 2 pods → round(2 × 1.386) = 3; zone b 0.
        assert_eq!(raw, vec![3, 3, 0, IGNORED]);
        normalize(&mut raw);
        assert_eq!(raw, vec![0, 0, 100, 0]);
    }
}
