//! One scheduling cycle: filter every node, score every feasible node, pick the best. The
//! per-node loop reads the snapshot's compact node array and writes into buffers the
//! [`Scheduler`] keeps between cycles, so it allocates nothing per node.

use std::hash::{BuildHasher, Hasher};

use crate::plugins::inter_pod::{self, InterPodFilter};
use crate::plugins::spread::{self, SpreadFilter, SpreadScore};
use crate::plugins::{
    basic, default_normalize, images, node_affinity, resources, taints, weights, Reason,
    MAX_NODE_SCORE,
};
use crate::pod_info::PodInfo;
use crate::snapshot::{NodeHot, NodeInfo, Snapshot};
use crate::unschedulable::Unschedulable;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Break ties between equally scored nodes by the smallest node name instead of at random.
    pub deterministic: bool,
    /// Seed of the tie-breaking generator; `None` draws one from the process's hash seed.
    pub seed: Option<u64>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            deterministic: false,
            seed: None,
        }
    }
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
    image_sums: Vec<i64>,
    failures: Vec<(u32, Reason)>,
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
            image_sums: Vec::new(),
            failures: Vec::new(),
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
        self.score(pod, snapshot, hot, slots);
        let best = self.select(slots);
        Ok(ScheduleResult {
            node: slots[self.feasible[best] as usize].name.clone(),
            score: self.totals[best],
            feasible_nodes: self.feasible.len(),
        })
    }

    /// Runs the filters in kube-scheduler's order, stopping at a node's first failure, and
    /// starts each feasible node's total with the two resource scores (which need no
    /// normalization) while its numbers are in cache.
    fn filter(&mut self, pod: &PodInfo, snapshot: &Snapshot, hot: &[NodeHot], slots: &[NodeInfo]) {
        self.feasible.clear();
        self.totals.clear();
        self.failures.clear();
        let inter = InterPodFilter::prepare(pod, snapshot);
        let spread = SpreadFilter::prepare(pod, snapshot);
        let balanced = resources::balanced_applies(pod);
        for (i, h) in hot.iter().enumerate() {
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
                .or_else(|| spread.as_ref().and_then(|s| s.filter(node)))
                .or_else(|| inter.as_ref().and_then(|s| s.filter(node)));
            match reason {
                Some(r) => self.failures.push((i as u32, r)),
                None => {
                    let mut total = weights::LEAST_ALLOCATED * resources::least_allocated(pod, h);
                    if balanced {
                        total +=
                            weights::BALANCED_ALLOCATION * resources::balanced_allocation(pod, h);
                    }
                    self.feasible.push(i as u32);
                    self.totals.push(total);
                }
            }
        }
    }

    fn score(&mut self, pod: &PodInfo, snapshot: &Snapshot, hot: &[NodeHot], slots: &[NodeInfo]) {
        let feasible = &self.feasible;
        let node = |k: usize| &slots[feasible[k] as usize];

        // TaintToleration (reverse-normalized: no untolerated PreferNoSchedule taint = 100).
        if feasible
            .iter()
            .any(|&i| hot[i as usize].prefer_no_schedule_taints > 0)
        {
            self.raw.clear();
            self.raw.extend(
                feasible
                    .iter()
                    .map(|&i| taints::raw_score(pod, &hot[i as usize], &slots[i as usize])),
            );
            default_normalize(&mut self.raw, true);
            add_weighted(&mut self.totals, &self.raw, weights::TAINT_TOLERATION);
        } else {
            let all = weights::TAINT_TOLERATION * MAX_NODE_SCORE;
            self.totals.iter_mut().for_each(|t| *t += all);
        }

        if !pod.preferred_node_affinity.is_empty() {
            self.raw.clear();
            self.raw
                .extend((0..feasible.len()).map(|k| node_affinity::raw_score(pod, node(k))));
            default_normalize(&mut self.raw, false);
            add_weighted(&mut self.totals, &self.raw, weights::NODE_AFFINITY);
        }

        if let Some(scores) = inter_pod::prepare_score(pod, snapshot) {
            self.raw.clear();
            self.raw
                .extend((0..feasible.len()).map(|k| inter_pod::raw_score(&scores, node(k))));
            inter_pod::normalize(&mut self.raw);
            add_weighted(&mut self.totals, &self.raw, weights::INTER_POD_AFFINITY);
        }

        if let Some(state) = SpreadScore::prepare(pod, snapshot, feasible) {
            self.raw.clear();
            self.raw
                .extend((0..feasible.len()).map(|k| state.raw_score(pod, node(k))));
            spread::normalize(&mut self.raw);
            add_weighted(&mut self.totals, &self.raw, weights::POD_TOPOLOGY_SPREAD);
        }

        if images::accumulate(pod, snapshot, &mut self.image_sums) {
            for (t, &i) in self.totals.iter_mut().zip(feasible) {
                let sum = self.image_sums[i as usize];
                *t += weights::IMAGE_LOCALITY * images::score(sum, pod.images.len());
            }
        }
    }

    /// Index into `feasible` of a highest-scoring node: ties broken by reservoir sampling (each
    /// tied node equally likely), or by the smallest name when deterministic.
    fn select(&mut self, slots: &[NodeInfo]) -> usize {
        let mut best = 0;
        let mut ties = 1u64;
        for k in 1..self.totals.len() {
            let (score, top) = (self.totals[k], self.totals[best]);
            if score > top {
                best = k;
                ties = 1;
            } else if score == top {
                ties += 1;
                let replace = if self.config.deterministic {
                    slots[self.feasible[k] as usize].name < slots[self.feasible[best] as usize].name
                } else {
                    self.next_random() % ties == 0
                };
                if replace {
                    best = k;
                }
            }
        }
        best
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
