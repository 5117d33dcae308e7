//! One scheduling cycle: filter every node, score every feasible node, pick the best. The
//! per-node loop reads the snapshot's compact node array and writes into buffers the
//! [`Scheduler`] keeps between cycles, so it allocates nothing per node.

use std::hash::{BuildHasher, Hasher};

mod plain;

use crate::plugins::inter_pod::{self, InterPodFilter};
use crate::plugins::spread::{self, SpreadFilter, SpreadScore};
use crate::plugins::{
    basic, default_normalize, images, node_affinity, resource_scores, resources, taints, weights,
    Reason, MAX_NODE_SCORE,
};
use crate::pod_info::PodInfo;
use crate::snapshot::{NodeHot, NodeInfo, Snapshot};
use crate::unschedulable::Unschedulable;

const NOT_FEASIBLE: u32 = u32::MAX;

#[derive(Clone, Debug, Default)]
pub struct SchedulerConfig {
    /// Break ties between equally scored nodes by the smallest node name instead of at random.
    pub deterministic: bool,
    /// Seed of the tie-breaking generator; `None` draws one from the process's hash seed.
    pub seed: Option<u64>,
}

/// Where a pod goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    pub node: String,
    /// The weighted sum of the chosen node's scores.
    pub score: i64,
    pub feasible_nodes: usize,
}

/// Runs cycles; holds the reusable buffers and the tie-breaking generator.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    rng: u64,
    feasible: Vec<u32>,
    totals: Vec<i64>,
    raw: Vec<i64>,
    /// Per slot, the two resource scores (see [`resource_scores::dense_scores`]).
    dense: Vec<i32>,
    image_sums: Vec<i64>,
    image_slots: Vec<u32>,
    /// Per slot, its index in `feasible` or [`NOT_FEASIBLE`] (valid for existing nodes).
    candidate: Vec<u32>,
    /// Feasible nodes (index into `feasible`) with untolerated PreferNoSchedule taints, and
    /// how many.
    soft_taints: Vec<(u32, i64)>,
    failures: Vec<(u32, Reason)>,
    /// Per slot, the plain-pod cycle's scores (see [`plain`]).
    slot_scores: Vec<i32>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let rng = config.seed.unwrap_or_else(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        Scheduler {
            config,
            rng,
            feasible: Vec::new(),
            totals: Vec::new(),
            raw: Vec::new(),
            dense: Vec::new(),
            image_sums: Vec::new(),
            image_slots: Vec::new(),
            candidate: Vec::new(),
            soft_taints: Vec::new(),
            failures: Vec::new(),
            slot_scores: Vec::new(),
        }
    }

    /// Picks the node for `pod`, or says why none fits.
    pub fn schedule(
        &mut self,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<ScheduleResult, Unschedulable> {
        if snapshot.num_nodes() == 0 {
            return Err(Unschedulable::no_nodes());
        }
        if plain::applies(pod, snapshot) {
            if let Some(result) = self.schedule_plain(pod, snapshot) {
                return Ok(result);
            }
        }
        self.schedule_general(pod, snapshot)
    }

    /// The cycle with every plugin, for any pod.
    fn schedule_general(
        &mut self,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Result<ScheduleResult, Unschedulable> {
        let hot = snapshot.hot();
        let slots = snapshot.slots();
        self.filter(pod, snapshot, hot, slots);
        if self.feasible.is_empty() {
            return Err(Unschedulable::from_failures(
                pod,
                slots,
                &self.failures,
                snapshot.num_nodes(),
            ));
        }
        self.score(pod, snapshot, slots);
        let best = self.select(slots);
        Ok(ScheduleResult {
            node: slots[self.feasible[best] as usize].name.clone(),
            score: self.totals[best],
            feasible_nodes: self.feasible.len(),
        })
    }

    /// Runs the filters in kube-scheduler's order, stopping at a node's first failure, then
    /// starts each feasible node's total with the two resource scores (which need no
    /// normalization) and a provisional full TaintToleration score; nodes with
    /// PreferNoSchedule taints are noted in `soft_taints` for correction.
    ///
    /// Two passes, so that each is a tight loop: the filter pass compacts feasible slots
    /// into `feasible` (most nodes take a branch-light path that checks only what can fail on
    /// them), and the score pass is straight arithmetic over those slots.
    fn filter(&mut self, pod: &PodInfo, snapshot: &Snapshot, hot: &[NodeHot], slots: &[NodeInfo]) {
        self.feasible.clear();
        self.totals.clear();
        self.failures.clear();
        self.soft_taints.clear();
        // Slots of nodes that do not exist keep stale entries; no image maps to them.
        self.candidate.resize(hot.len(), NOT_FEASIBLE);
        self.feasible.reserve(hot.len());
        let inter = InterPodFilter::prepare(pod, snapshot);
        let spread = SpreadFilter::prepare(pod, snapshot);
        // Without these, a node that is schedulable, untainted and has room passes every
        // filter, so the full chain runs only for nodes that may fail.
        let simple = pod.node_name.is_none()
            && pod.required_node_affinity.is_empty()
            && pod.host_ports.is_empty()
            && pod.requests.scalar.is_empty()
            && spread.is_none()
            && inter.is_none();
        let want = resources::Want::of(pod);
        let tolerates_unschedulable = pod.tolerates_unschedulable;
        let soft_tolerations = taints::tolerates_any_soft(pod);
        // Locals, so the loop keeps lengths in registers rather than reloading them from
        // `self` after every store.
        let mut feasible = std::mem::take(&mut self.feasible);
        let mut candidates = std::mem::take(&mut self.candidate);
        let candidate = &mut candidates[..hot.len()];
        for (i, h) in hot.iter().enumerate() {
            let clean = simple
                & h.exists
                & (!h.unschedulable | tolerates_unschedulable)
                & (h.hard_taints == 0);
            if !(clean & want.fits(h)) {
                if !h.exists {
                    continue;
                }
                let node = &slots[i];
                let reason = basic::unschedulable(pod, h)
                    .or_else(|| basic::node_name(pod, node))
                    .or_else(|| taints::filter(pod, h, node))
                    .or_else(|| node_affinity::filter(pod, node))
                    .or_else(|| basic::node_ports(pod, h, node))
                    .or_else(|| resources::fit(pod, h, node))
                    .or_else(|| spread.as_ref().and_then(|s| s.filter(i)))
                    .or_else(|| inter.as_ref().and_then(|s| s.filter(i)));
                if let Some(r) = reason {
                    self.failures.push((i as u32, r));
                    candidate[i] = NOT_FEASIBLE;
                    continue;
                }
            }
            let k = feasible.len() as u32;
            candidate[i] = k;
            feasible.push(i as u32);
            if h.prefer_no_schedule_taints != 0 {
                let count = taints::raw_score(pod, soft_tolerations, h, &slots[i]);
                if count != 0 {
                    self.soft_taints.push((k, count));
                }
            }
        }
        self.candidate = candidates;
        self.feasible = feasible;
        let full_taint_score = weights::TAINT_TOLERATION * MAX_NODE_SCORE;
        let balanced = resources::balanced_applies(pod);
        let feasible = self.feasible.iter().map(|&i| i as usize);
        match resource_scores::PodRequests::of(pod) {
            Some(requests) => {
                resource_scores::dense_scores(
                    snapshot.resource_columns(),
                    requests,
                    balanced,
                    &mut self.dense,
                );
                let dense = &self.dense[..hot.len()];
                self.totals.extend(feasible.map(|i| {
                    full_taint_score
                        + match dense[i] {
                            resource_scores::PLAIN => {
                                resource_scores::plain_scores(pod, &hot[i], balanced)
                            }
                            score => i64::from(score),
                        }
                }));
            }
            None => {
                self.totals.extend(feasible.map(|i| {
                    full_taint_score + resource_scores::plain_scores(pod, &hot[i], balanced)
                }))
            }
        }
    }

    fn score(&mut self, pod: &PodInfo, snapshot: &Snapshot, slots: &[NodeInfo]) {
        let feasible = &self.feasible;

        // TaintToleration, reverse-normalized: the filter gave every node the full 100; a node
        // with untolerated PreferNoSchedule taints gets 100 − 100 × count / max instead.
        let max = self.soft_taints.iter().map(|&(_, c)| c).max().unwrap_or(0);
        for &(k, count) in &self.soft_taints {
            self.totals[k as usize] -= weights::TAINT_TOLERATION * (MAX_NODE_SCORE * count / max);
        }

        if !pod.preferred_node_affinity.is_empty() {
            self.raw.clear();
            let scorer = node_affinity::PreferredScorer::prepare(pod, snapshot);
            self.raw.extend(
                feasible
                    .iter()
                    .map(|&i| scorer.raw_score(i as usize, &slots[i as usize])),
            );
            default_normalize(&mut self.raw, false);
            add_weighted(&mut self.totals, &self.raw, weights::NODE_AFFINITY);
        }

        if let Some(scores) = inter_pod::prepare_score(pod, snapshot) {
            self.raw.clear();
            self.raw.extend(
                feasible
                    .iter()
                    .map(|&i| inter_pod::raw_score(&scores, i as usize)),
            );
            inter_pod::normalize(&mut self.raw);
            add_weighted(&mut self.totals, &self.raw, weights::INTER_POD_AFFINITY);
        }

        if let Some(state) = SpreadScore::prepare(pod, snapshot, feasible) {
            self.raw.clear();
            self.raw
                .extend(feasible.iter().map(|&i| state.raw_score(i as usize)));
            spread::normalize(&mut self.raw);
            add_weighted(&mut self.totals, &self.raw, weights::POD_TOPOLOGY_SPREAD);
        }

        if !pod.images.is_empty() {
            let totals = &mut self.totals;
            let candidate = &self.candidate;
            let containers = pod.images.len();
            images::for_each_sum(
                pod,
                snapshot,
                &mut self.image_sums,
                &mut self.image_slots,
                |slot, sum| {
                    let k = candidate[slot as usize];
                    if k != NOT_FEASIBLE {
                        totals[k as usize] +=
                            weights::IMAGE_LOCALITY * images::score(sum, containers);
                    }
                },
            );
        }
    }

    /// Index into `feasible` of a highest-scoring node: among ties, one drawn uniformly at
    /// random (one draw per cycle, where per-tie reservoir sampling would pay a draw and a
    /// division for each of thousands of equal nodes), or the smallest name when deterministic.
    fn select(&mut self, slots: &[NodeInfo]) -> usize {
        let top = self.totals.iter().copied().max().unwrap_or(0);
        if self.config.deterministic {
            let mut best: Option<usize> = None;
            for (k, &score) in self.totals.iter().enumerate() {
                if score != top {
                    continue;
                }
                let name = &slots[self.feasible[k] as usize].name;
                if best.is_none_or(|b| *name < slots[self.feasible[b] as usize].name) {
                    best = Some(k);
                }
            }
            return best.unwrap_or(0);
        }
        let ties = self.totals.iter().filter(|&&s| s == top).count() as u64;
        let mut pick = if ties > 1 {
            self.next_random() % ties
        } else {
            0
        };
        for (k, &score) in self.totals.iter().enumerate() {
            if score == top {
                if pick == 0 {
                    return k;
                }
                pick -= 1;
            }
        }
        0
    }

    /// SplitMix64: tiny, seedable, and good enough to break ties.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn add_weighted(totals: &mut [i64], scores: &[i64], weight: i64) {
    for (t, s) in totals.iter_mut().zip(scores) {
        *t += weight * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::{node, pod};
    use berth_api::k8s_openapi::api::core::v1 as core;
    use berth_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn deterministic() -> Scheduler {
        Scheduler::new(SchedulerConfig {
            deterministic: true,
            seed: Some(1),
        })
    }

    fn info(p: &core::Pod) -> PodInfo {
        PodInfo::from_pod(p).expect("pod parses")
    }

    fn cluster(nodes: &[(&str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::new();
        for (name, cpu, mem) in nodes {
            s.add_node(&node(name, cpu, mem, "110")).expect("node");
        }
        s
    }

    fn with_zone(mut n: core::Node, zone: &str) -> core::Node {
        n.metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("topology.kubernetes.io/zone".into(), zone.into());
        n
    }

    fn web(name: &str) -> core::Pod {
        let mut p = pod(name, None, "100m", "128Mi");
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p
    }

    fn app_selector() -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: None,
        })
    }

    /// Schedules and assumes, as the API client will between cycles.
    fn place(s: &mut Snapshot, sched: &mut Scheduler, p: &core::Pod) -> String {
        let pi = info(p);
        let r = sched.schedule(&pi, s).expect("schedulable");
        s.assume_pod(&pi, &r.node);
        r.node
    }

    #[test]
    fn insufficient_cpu_message() {
        let s = cluster(&[("n1", "1", "4Gi"), ("n2", "1", "4Gi"), ("n3", "1", "4Gi")]);
        let err = deterministic()
            .schedule(&info(&pod("big", None, "2", "1Gi")), &s)
            .expect_err("does not fit");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 3 Insufficient cpu."
        );
        assert_eq!(err.reasons, vec![("Insufficient cpu".to_string(), 3)]);
    }

    #[test]
    fn taint_and_memory_message_sorted_like_kube_scheduler() {
        let mut s = cluster(&[("w1", "4", "1Gi"), ("w2", "4", "1Gi"), ("w3", "4", "1Gi")]);
        for name in ["cp1", "cp2"] {
            let mut n = node(name, "4", "64Gi", "110");
            n.spec.as_mut().expect("spec").taints = Some(vec![core::Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]);
            s.add_node(&n).expect("node");
        }
        let err = deterministic()
            .schedule(&info(&pod("p", None, "100m", "2Gi")), &s)
            .expect_err("does not fit");
        assert_eq!(
            err.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 3 Insufficient memory."
        );
    }

    #[test]
    fn one_node_can_report_several_resources() {
        let s = cluster(&[("n1", "1", "1Gi")]);
        let err = deterministic()
            .schedule(&info(&pod("p", None, "2", "2Gi")), &s)
            .expect_err("does not fit");
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
        let err = deterministic()
            .schedule(&info(&pod("p", None, "1", "1Gi")), &Snapshot::new())
            .expect_err("no nodes");
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn least_allocated_node_wins_and_assumed_pods_count() {
        let mut s = cluster(&[("a", "4", "8Gi"), ("b", "4", "8Gi")]);
        s.add_pod(&pod("busy", Some("a"), "2", "4Gi")).expect("pod");
        let mut sched = deterministic();
        let p = info(&pod("p", None, "1", "2Gi"));
        let r = sched.schedule(&p, &s).expect("fits");
        assert_eq!(r.node, "b");
        // least: (75 + 75) / 2 = 75; balanced: 100; taints: 300; image: 0.
        assert_eq!(r.score, 75 + 100 + 300);
        assert_eq!(r.feasible_nodes, 2);
        // Two 2-cpu pods in a row: the second must not land where the first was assumed.
        let mut s = cluster(&[("a", "2", "8Gi"), ("b", "2", "8Gi")]);
        let first = place(&mut s, &mut sched, &pod("p1", None, "2", "1Gi"));
        let second = place(&mut s, &mut sched, &pod("p2", None, "2", "1Gi"));
        assert_ne!(first, second);
        let err = sched
            .schedule(&info(&pod("p3", None, "2", "1Gi")), &s)
            .expect_err("full");
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 2 Insufficient cpu."
        );
    }

    #[test]
    fn prefer_no_schedule_and_preferred_affinity_steer() {
        let mut s = Snapshot::new();
        let mut soft = node("a", "4", "8Gi", "110");
        soft.spec.as_mut().expect("spec").taints = Some(vec![core::Taint {
            key: "spot".into(),
            effect: "PreferNoSchedule".into(),
            ..Default::default()
        }]);
        s.add_node(&soft).expect("node");
        s.add_node(&node("b", "4", "8Gi", "110")).expect("node");
        let mut sched = deterministic();
        assert_eq!(
            sched
                .schedule(&info(&pod("p", None, "1", "1Gi")), &s)
                .expect("fits")
                .node,
            "b"
        );

        let prefer = |target: &str| {
            let mut p = pod("q", None, "1", "1Gi");
            p.spec.as_mut().expect("spec").affinity = Some(core::Affinity {
                node_affinity: Some(core::NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        core::PreferredSchedulingTerm {
                            weight: 50,
                            preference: core::NodeSelectorTerm {
                                match_fields: Some(vec![core::NodeSelectorRequirement {
                                    key: "metadata.name".into(),
                                    operator: "In".into(),
                                    values: Some(vec![target.into()]),
                                }]),
                                match_expressions: None,
                            },
                        },
                    ]),
                    required_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            });
            p
        };
        // The soft taint (3 × 100) outweighs node affinity (2 × 100)...
        assert_eq!(
            sched.schedule(&info(&prefer("a")), &s).expect("fits").node,
            "b"
        );
        // ...which decides between otherwise equal nodes.
        s.add_node(&node("c", "4", "8Gi", "110")).expect("node");
        assert_eq!(
            sched.schedule(&info(&prefer("c")), &s).expect("fits").node,
            "c"
        );
    }

    #[test]
    fn required_node_selector_and_cordon() {
        let mut s = cluster(&[("a", "4", "8Gi"), ("b", "4", "8Gi"), ("c", "4", "8Gi")]);
        let mut cordoned = node("c", "4", "8Gi", "110");
        cordoned.spec.as_mut().expect("spec").unschedulable = Some(true);
        s.update_node(&cordoned).expect("node");
        let mut p = pod("p", None, "1", "1Gi");
        p.spec.as_mut().expect("spec").node_selector =
            Some([("kubernetes.io/hostname".to_string(), "b".to_string())].into());
        let mut sched = deterministic();
        assert_eq!(sched.schedule(&info(&p), &s).expect("fits").node, "b");
        p.spec.as_mut().expect("spec").node_selector =
            Some([("kubernetes.io/hostname".to_string(), "z".to_string())].into());
        let err = sched.schedule(&info(&p), &s).expect_err("no match");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) were unschedulable, \
             2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn anti_affinity_puts_replicas_on_distinct_hosts() {
        let mut s = cluster(&[("a", "4", "8Gi"), ("b", "4", "8Gi"), ("c", "4", "8Gi")]);
        let mut sched = deterministic();
        let replica = |name: &str| {
            let mut p = web(name);
            p.spec.as_mut().expect("spec").affinity = Some(core::Affinity {
                pod_anti_affinity: Some(core::PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        core::PodAffinityTerm {
                            label_selector: app_selector(),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    ]),
                    preferred_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            });
            p
        };
        let mut nodes: Vec<String> = (0..3)
            .map(|i| place(&mut s, &mut sched, &replica(&format!("web-{i}"))))
            .collect();
        nodes.sort();
        assert_eq!(nodes, vec!["a", "b", "c"]);
        // The replicas' anti-affinity is checked first, as kube-scheduler does.
        let err = sched
            .schedule(&info(&replica("web-3")), &s)
            .expect_err("no host left");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
        );
        // The incoming pod's own anti-affinity against plain web pods.
        let mut s2 = cluster(&[("a", "4", "8Gi"), ("b", "4", "8Gi")]);
        s2.add_pod(&{
            let mut p = web("plain-a");
            p.spec.as_mut().expect("spec").node_name = Some("a".into());
            p
        })
        .expect("pod");
        assert_eq!(place(&mut s2, &mut sched, &replica("web-x")), "b");
        let err = sched
            .schedule(&info(&replica("web-y")), &s2)
            .expect_err("no host left");
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 1 node(s) didn't match pod anti-affinity rules, \
             1 node(s) didn't satisfy existing pods anti-affinity rules."
        );
        // A plain web pod is kept out by the existing pods' anti-affinity.
        let err = sched
            .schedule(&info(&web("plain")), &s)
            .expect_err("repelled");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
        );
    }

    #[test]
    fn topology_spread_balances_zones() {
        let mut s = Snapshot::new();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
            s.add_node(&with_zone(node(name, "8", "16Gi", "110"), zone))
                .expect("node");
        }
        let mut sched = deterministic();
        let spread = |name: &str, when: &str| {
            let mut p = web(name);
            p.spec.as_mut().expect("spec").topology_spread_constraints =
                Some(vec![core::TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "topology.kubernetes.io/zone".into(),
                    when_unsatisfiable: when.into(),
                    label_selector: app_selector(),
                    ..Default::default()
                }]);
            p
        };
        let mut per_zone = [0, 0];
        for i in 0..6 {
            let n = place(
                &mut s,
                &mut sched,
                &spread(&format!("w{i}"), "DoNotSchedule"),
            );
            per_zone[usize::from(n.starts_with('b'))] += 1;
        }
        assert_eq!(
            per_zone,
            [3, 3],
            "three nodes in zone a must not draw more pods"
        );
        // Soft spreading also prefers the emptier zone.
        s.add_node(&with_zone(node("c1", "8", "16Gi", "110"), "c"))
            .expect("node");
        let n = place(&mut s, &mut sched, &spread("soft", "ScheduleAnyway"));
        assert_eq!(n, "c1");
    }

    #[test]
    fn ties_are_deterministic_or_seeded() {
        let names = ["n3", "n1", "n2", "n4"];
        let s = cluster(&names.map(|n| (n, "4", "8Gi")));
        let p = info(&pod("p", None, "1", "1Gi"));
        assert_eq!(deterministic().schedule(&p, &s).expect("fits").node, "n1");
        let pick = |seed| {
            let mut sched = Scheduler::new(SchedulerConfig {
                deterministic: false,
                seed: Some(seed),
            });
            (0..8)
                .map(|_| sched.schedule(&p, &s).expect("fits").node)
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(7), pick(7));
        let seen: std::collections::BTreeSet<String> = (0..16).flat_map(pick).collect();
        assert_eq!(seen.len(), 4, "random ties reach every node: {seen:?}");
    }
}
