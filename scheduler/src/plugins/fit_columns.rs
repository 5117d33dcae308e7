//! NodeResourcesFit as struct-of-arrays: per slot the free cpu, memory, ephemeral storage and
//! pod count, and one byte saying whether anything but resources can reject a pod there, so
//! that for a pod only NodeResourcesFit can reject (kube-scheduler's PreFilter would Skip every
//! other filter) a node's feasibility is a few compares in a loop the compiler vectorizes.
//! Nodes with NoSchedule/NoExecute taints or PreferNoSchedule taints are also kept as sorted
//! sets, so a cycle visits only those for TaintToleration.

use std::collections::BTreeSet;

use crate::pod_info::PodInfo;
use crate::snapshot::NodeHot;

/// `f64` holds every integer of magnitude up to this exactly; free amounts beyond it are
/// clamped to it, which keeps every compare with a request below it exact.
const EXACT: i64 = 1 << 53;

/// Per slot, the numbers as `f64` (the baseline x86-64 target has no 64-bit integer compare
/// to vectorize; `f64` compares it has) and sets of tainted nodes.
#[derive(Clone, Debug, Default)]
pub(crate) struct FitColumns {
    pub(crate) free_cpu: Vec<f64>,
    pub(crate) free_memory: Vec<f64>,
    pub(crate) free_ephemeral: Vec<f64>,
    /// Allowed pods less pods placed; the node takes one more when positive.
    pub(crate) free_pods: Vec<f64>,
    /// 0: nothing but resources can reject a pod; 1: cordoned; 2: no node, or hard taints.
    pub(crate) blocked: Vec<f64>,
    /// Existing nodes with NoSchedule or NoExecute taints.
    pub(crate) hard_taint_slots: BTreeSet<u32>,
    /// Existing nodes with PreferNoSchedule taints.
    pub(crate) soft_taint_slots: BTreeSet<u32>,
}

impl FitColumns {
    pub(crate) fn push(&mut self, hot: &NodeHot) {
        for column in [
            &mut self.free_cpu,
            &mut self.free_memory,
            &mut self.free_ephemeral,
            &mut self.free_pods,
            &mut self.blocked,
        ] {
            column.push(0.0);
        }
        self.set(self.blocked.len() - 1, hot);
    }

    pub(crate) fn set(&mut self, slot: usize, hot: &NodeHot) {
        // Wrapping, as `resources::Want::fits` subtracts.
        let free = |alloc: i64, req: i64| alloc.wrapping_sub(req).clamp(-EXACT, EXACT) as f64;
        self.free_cpu[slot] = free(hot.alloc_cpu, hot.req_cpu);
        self.free_memory[slot] = free(hot.alloc_memory, hot.req_memory);
        self.free_ephemeral[slot] = free(hot.alloc_ephemeral, hot.req_ephemeral);
        self.free_pods[slot] = f64::from(hot.alloc_pods) - f64::from(hot.pod_count);
        self.blocked[slot] = if !hot.exists || hot.hard_taints != 0 {
            2.0
        } else if hot.unschedulable {
            1.0
        } else {
            0.0
        };
        let id = slot as u32;
        let keep = |set: &mut BTreeSet<u32>, member: bool| {
            if member {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        };
        keep(
            &mut self.hard_taint_slots,
            hot.exists && hot.hard_taints != 0,
        );
        keep(
            &mut self.soft_taint_slots,
            hot.exists && hot.prefer_no_schedule_taints != 0,
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.blocked.len()
    }
}

/// A pod's side of the fit compares: each request, or -∞ for one it does not make (so the
/// compare always passes), and the highest `blocked` it passes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FitWant {
    pub(crate) cpu: f64,
    pub(crate) memory: f64,
    pub(crate) ephemeral: f64,
    pub(crate) max_blocked: f64,
}

impl FitWant {
    /// For a pod whose only possible rejections are resources, cordons and hard taints (the
    /// caller checks); hard-tainted nodes are rejected here and re-checked by the caller when
    /// the pod has tolerations. `None` for requests too large to compare exactly.
    pub(crate) fn of(pod: &PodInfo) -> Option<FitWant> {
        let r = &pod.requests;
        let want = |v: i64| match v {
            ..=0 => Some(f64::NEG_INFINITY),
            1..EXACT => Some(v as f64),
            _ => None,
        };
        Some(FitWant {
            cpu: want(r.milli_cpu)?,
            memory: want(r.memory)?,
            ephemeral: want(r.ephemeral_storage)?,
            max_blocked: if pod.tolerates_unschedulable {
                1.0
            } else {
                0.0
            },
        })
    }

    pub(crate) fn wants_ephemeral(self) -> bool {
        self.ephemeral != f64::NEG_INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::resource_scores::{self, PodRequests, ResourceColumns};
    use crate::plugins::resources;
    use crate::pod_info::Resources;
    use crate::snapshot::NodeInfo;

    #[test]
    fn fits_agrees_with_the_fit_filter_and_flags() {
        let mut hots = Vec::new();
        for (cpu, req) in [
            (4000, 0),
            (4000, 3500),
            (1000, 2000),
            (0, 0),
            (1 << 60, 0),
            (i64::MAX, 1),
            (0, 1 << 60),
        ] {
            for (pods, count) in [(110, 0), (110, 110), (0, 0), (3, 2)] {
                for (exists, cordoned, hard) in [
                    (true, false, 0),
                    (false, false, 0),
                    (true, true, 0),
                    (true, false, 1),
                ] {
                    hots.push(NodeHot {
                        alloc_cpu: cpu,
                        req_cpu: req,
                        alloc_memory: 8 << 30,
                        req_memory: 7 << 30,
                        alloc_ephemeral: 100,
                        req_ephemeral: 50,
                        alloc_pods: pods,
                        pod_count: count,
                        exists,
                        unschedulable: cordoned,
                        hard_taints: hard,
                        ..Default::default()
                    });
                }
            }
        }
        let mut columns = FitColumns::default();
        let mut scores = ResourceColumns::default();
        for h in &hots {
            columns.push(h);
            scores.push(h);
        }
        let mut out = Vec::new();
        let node = NodeInfo::default();
        for (cpu, memory, ephemeral) in [
            (0, 0, 0),
            (500, 1 << 30, 0),
            (-1, 2 << 30, 51),
            (1, 0, 50),
            ((1 << 53) - 1, 0, 0),
        ] {
            for tolerates in [false, true] {
                let pod = PodInfo {
                    requests: Resources {
                        milli_cpu: cpu,
                        memory,
                        ephemeral_storage: ephemeral,
                        ..Default::default()
                    },
                    tolerates_unschedulable: tolerates,
                    ..Default::default()
                };
                let want = FitWant::of(&pod).expect("small requests");
                let requests = PodRequests::of(&pod).unwrap_or(PodRequests::ZERO);
                resource_scores::fit_scores(&scores, &columns, want, requests, true, &mut out);
                for (i, h) in hots.iter().enumerate() {
                    let expect = h.exists
                        && (!h.unschedulable || tolerates)
                        && h.hard_taints == 0
                        && resources::fit(&pod, h, &node).is_none();
                    let have = out[i] != resource_scores::INFEASIBLE;
                    assert_eq!(have, expect, "{h:?} {:?}", pod.requests);
                }
            }
        }
        assert_eq!(columns.hard_taint_slots.len(), hots.len() / 4);
        let huge = PodInfo {
            requests: Resources {
                milli_cpu: 1 << 53,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(FitWant::of(&huge).is_none(), "not compared in f64");
        let first = *columns.hard_taint_slots.first().expect("tainted");
        columns.set(first as usize, &NodeHot::default());
        assert!(!columns.hard_taint_slots.contains(&first));
    }
}
