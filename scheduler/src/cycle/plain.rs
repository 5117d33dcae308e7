//! The cycle for a pod that only NodeResourcesFit, NodeUnschedulable and TaintToleration can
//! reject and only the resource, TaintToleration and ImageLocality scores tell nodes apart
//! (no node name, selector, affinity, host ports, extended resources or spread constraints,
//! and no placed pod with inter-pod terms): kube-scheduler's PreFilter would Skip every other
//! plugin. One vectorized pass over the snapshot's columns filters and scores every slot into
//! a per-slot array; the few nodes with taints are then visited from the snapshot's sets, and
//! the best slot is picked from the same array, with no compaction or copy in between.
//!
//! Ties are broken over the feasible slots in slot order, as the general cycle does over its
//! feasible list, so both give the same node for the same generator state.

use crate::plugins::fit_columns::FitWant;
use crate::plugins::resource_scores::{self, INFEASIBLE, PLAIN};
use crate::plugins::{basic, images, resources, taints, weights, MAX_NODE_SCORE};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;

use super::{ScheduleResult, Scheduler};

/// Whether [`Scheduler::schedule_plain`] handles the pod.
pub(super) fn applies(pod: &PodInfo, snapshot: &Snapshot) -> bool {
    pod.node_name.is_none()
        && pod.required_node_affinity.is_empty()
        && pod.preferred_node_affinity.is_empty()
        && pod.host_ports.is_empty()
        && pod.requests.scalar.is_empty()
        && pod.spread.is_empty()
        && pod.required_affinity.is_empty()
        && pod.required_anti_affinity.is_empty()
        && pod.preferred_affinity.is_empty()
        && pod.preferred_anti_affinity.is_empty()
        && !snapshot.any_pod_with_affinity()
        && !snapshot.any_pod_with_required_anti_affinity()
}

impl Scheduler {
    /// The cycle for a pod [`applies`] accepts; `None` when its requests are out of the
    /// vectorized scores' bounds or no node fits (the general cycle then says why).
    pub(super) fn schedule_plain(
        &mut self,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Option<ScheduleResult> {
        let requests = resource_scores::PodRequests::of(pod)?;
        let want = FitWant::of(pod)?;
        let (hot, slots, fit) = (snapshot.hot(), snapshot.slots(), snapshot.fit_columns());
        let balanced = resources::balanced_applies(pod);
        let mut scores = std::mem::take(&mut self.slot_scores);
        resource_scores::fit_scores(
            snapshot.resource_columns(),
            fit,
            want,
            requests,
            balanced,
            &mut scores,
        );
        // The pass rejected every hard-tainted node; with tolerations, some may fit.
        if !pod.tolerations.is_empty() {
            for &slot in &fit.hard_taint_slots {
                let (i, h) = (slot as usize, &hot[slot as usize]);
                let rejected = basic::unschedulable(pod, h)
                    .or_else(|| taints::filter(pod, h, &slots[i]))
                    .or_else(|| resources::fit(pod, h, &slots[i]));
                if rejected.is_none() {
                    scores[i] = resource_scores::plain_scores(pod, h, balanced) as i32;
                }
            }
        }
        let feasible = scores.iter().filter(|&&s| s != INFEASIBLE).count();
        if feasible == 0 {
            self.slot_scores = scores;
            return None;
        }
        if scores.contains(&PLAIN) {
            for (s, h) in scores.iter_mut().zip(hot) {
                if *s == PLAIN {
                    *s = resource_scores::plain_scores(pod, h, balanced) as i32;
                }
            }
        }

        // TaintToleration, reverse-normalized over the feasible nodes; the full score every
        // other node gets is added to the result only.
        self.soft_taints.clear();
        let soft_tolerations = taints::tolerates_any_soft(pod);
        for &slot in &fit.soft_taint_slots {
            let i = slot as usize;
            if scores[i] != INFEASIBLE {
                let count = taints::raw_score(pod, soft_tolerations, &hot[i], &slots[i]);
                if count != 0 {
                    self.soft_taints.push((slot, count));
                }
            }
        }
        let max = self.soft_taints.iter().map(|&(_, c)| c).max().unwrap_or(0);
        for &(slot, count) in &self.soft_taints {
            scores[slot as usize] -=
                (weights::TAINT_TOLERATION * (MAX_NODE_SCORE * count / max)) as i32;
        }

        if !pod.images.is_empty() {
            let containers = pod.images.len();
            images::for_each_sum(
                pod,
                snapshot,
                &mut self.image_sums,
                &mut self.image_slots,
                |slot, sum| {
                    let s = &mut scores[slot as usize];
                    if *s != INFEASIBLE {
                        *s += (weights::IMAGE_LOCALITY * images::score(sum, containers)) as i32;
                    }
                },
            );
        }

        let best = self.select_slot(&scores, snapshot);
        let result = ScheduleResult {
            node: slots[best].name.clone(),
            score: i64::from(scores[best]) + weights::TAINT_TOLERATION * MAX_NODE_SCORE,
            feasible_nodes: feasible,
        };
        self.slot_scores = scores;
        Some(result)
    }

    /// The slot of a highest score, tie-broken as [`Scheduler::select`] does.
    fn select_slot(&mut self, scores: &[i32], snapshot: &Snapshot) -> usize {
        let top = scores.iter().copied().max().unwrap_or(INFEASIBLE);
        let slots = snapshot.slots();
        if self.config.deterministic {
            let mut best: Option<usize> = None;
            for (i, &score) in scores.iter().enumerate() {
                if score == top && best.is_none_or(|b| slots[i].name < slots[b].name) {
                    best = Some(i);
                }
            }
            return best.unwrap_or(0);
        }
        let ties = scores.iter().filter(|&&s| s == top).count() as u64;
        let pick = if ties > 1 {
            self.next_random() % ties
        } else {
            0
        };
        scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s == top)
            .nth(pick as usize)
            .map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SchedulerConfig;
    use super::*;
    use crate::snapshot::tests::{node, pod};
    use berth_api::k8s_openapi::api::core::v1 as core;
    use berth_api::k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    fn taint(key: &str, effect: &str) -> core::Taint {
        core::Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    /// Nodes of every kind the fast pass treats specially, with pods placed on them.
    fn cluster() -> Snapshot {
        let mut s = Snapshot::new();
        for i in 0..60 {
            let name = format!("n{i:02}");
            let cpu = ["4", "2", "1", "8"][i % 4];
            let pods = if i % 11 == 3 { "2" } else { "110" };
            let mut n = node(&name, cpu, ["8Gi", "2Gi", "16Gi"][i % 3], pods);
            let spec = n.spec.as_mut().expect("spec");
            let mut taints = Vec::new();
            if i % 7 == 1 {
                taints.push(taint("dedicated", "NoSchedule"));
            }
            if i % 13 == 2 {
                taints.push(taint("evict", "NoExecute"));
            }
            if i % 5 == 4 {
                taints.push(taint("spot", "PreferNoSchedule"));
            }
            if i % 9 == 8 {
                taints.push(taint("cheap", "PreferNoSchedule"));
            }
            spec.taints = Some(taints);
            spec.unschedulable = Some(i % 17 == 5);
            let status = n.status.as_mut().expect("status");
            let alloc = status.allocatable.as_mut().expect("allocatable");
            alloc.insert("ephemeral-storage".into(), Q(["10Gi", "1Gi"][i % 2].into()));
            status.images = Some(vec![core::ContainerImage {
                names: Some(vec![format!("registry.example/app-{}:1", i % 4)]),
                size_bytes: Some(300 << 20),
            }]);
            s.add_node(&n).expect("node");
            for j in 0..(i % 4) {
                let cpu = ["500m", "1", "3"][(i + j) % 3];
                s.add_pod(&pod(&format!("p{i}-{j}"), Some(&name), cpu, "1Gi"))
                    .expect("pod");
            }
        }
        // A slot holding only a pod of an unknown node, and a removed node.
        s.add_pod(&pod("orphan", Some("gone"), "1", "1Gi"))
            .expect("pod");
        s.remove_node("n10");
        s
    }

    fn pods() -> Vec<PodInfo> {
        let mut out = Vec::new();
        for (cpu, memory) in [("500m", "1Gi"), ("0", "0"), ("3", "100Mi"), ("9", "1Gi")] {
            for variant in 0..6 {
                let mut p = pod(&format!("q-{cpu}-{variant}"), None, cpu, memory);
                let spec = p.spec.as_mut().expect("spec");
                let container = &mut spec.containers[0];
                container.image = Some(format!("registry.example/app-{}:1", variant % 4));
                let tolerate = |key: &str, effect: Option<&str>| core::Toleration {
                    key: Some(key.into()),
                    operator: Some("Exists".into()),
                    effect: effect.map(Into::into),
                    ..Default::default()
                };
                match variant {
                    1 => spec.tolerations = Some(vec![tolerate("dedicated", None)]),
                    2 => {
                        spec.tolerations = Some(vec![
                            tolerate("node.kubernetes.io/unschedulable", Some("NoSchedule")),
                            tolerate("spot", Some("PreferNoSchedule")),
                            tolerate("evict", None),
                        ])
                    }
                    3 => {
                        let requests = container
                            .resources
                            .as_mut()
                            .and_then(|r| r.requests.as_mut())
                            .expect("requests");
                        requests.insert("ephemeral-storage".into(), Q("2Gi".into()));
                    }
                    4 => {
                        spec.node_selector =
                            Some([("kubernetes.io/hostname".into(), "n20".into())].into())
                    }
                    5 => {
                        container.ports = Some(vec![core::ContainerPort {
                            container_port: 80,
                            host_port: Some(8080),
                            ..Default::default()
                        }])
                    }
                    _ => {}
                }
                out.push(PodInfo::from_pod(&p).expect("pod"));
            }
        }
        out
    }

    #[test]
    fn plain_cycle_equals_the_general_cycle() {
        let pods = pods();
        for deterministic in [true, false] {
            let config = SchedulerConfig {
                deterministic,
                seed: Some(9),
            };
            let (mut fast, mut general) = (
                Scheduler::new(config.clone()),
                Scheduler::new(config.clone()),
            );
            let mut s = cluster();
            let mut fast_used = 0;
            // Each round places the pods the general cycle picks, so later rounds see fuller,
            // over-committed nodes.
            for round in 0..4 {
                for p in &pods {
                    let want = general.schedule_general(p, &s);
                    let have = fast.schedule(p, &s);
                    fast_used += usize::from(applies(p, &s));
                    assert_eq!(
                        have.as_ref().map_err(ToString::to_string),
                        want.as_ref().map_err(ToString::to_string),
                        "{} round {round}",
                        p.name
                    );
                    if let Ok(r) = want {
                        let mut placed = p.clone();
                        placed.name = format!("{}-{round}", p.name);
                        s.assume_pod(&placed, &r.node);
                    }
                }
            }
            assert!(fast_used > pods.len(), "the fast path ran");
        }
    }
}
