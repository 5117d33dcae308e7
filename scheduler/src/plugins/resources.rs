//! NodeResourcesFit (filter, and its LeastAllocated score) and
//! NodeResourcesBalancedAllocation (score), over cpu and memory with weight 1 each.

use crate::pod_info::PodInfo;
use crate::snapshot::{NodeHot, NodeInfo};

use super::{
    Reason, MAX_NODE_SCORE, RESOURCE_CPU, RESOURCE_EPHEMERAL, RESOURCE_MEMORY, RESOURCE_PODS,
    RESOURCE_SCALAR_SHIFT,
};

/// Every resource the pod requests more of than the node has free, as a [`Reason::Resources`]
/// mask; `None` when it fits.
#[inline]
pub(crate) fn fit(pod: &PodInfo, hot: &NodeHot, node: &NodeInfo) -> Option<Reason> {
    let r = &pod.requests;
    let mut mask = 0;
    if i64::from(hot.pod_count) + 1 > i64::from(hot.alloc_pods) {
        mask |= RESOURCE_PODS;
    }
    if r.milli_cpu > 0 && r.milli_cpu > hot.alloc_cpu - hot.req_cpu {
        mask |= RESOURCE_CPU;
    }
    if r.memory > 0 && r.memory > hot.alloc_memory - hot.req_memory {
        mask |= RESOURCE_MEMORY;
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > hot.alloc_ephemeral - hot.req_ephemeral {
        mask |= RESOURCE_EPHEMERAL;
    }
    if !r.scalar.is_empty() {
        mask |= scalar_misfits(pod, node);
    }
    (mask != 0).then_some(Reason::Resources(mask))
}

#[cold]
fn scalar_misfits(pod: &PodInfo, node: &NodeInfo) -> u64 {
    let mut mask = 0;
    for (i, (name, want)) in pod.requests.scalar.iter().enumerate().take(60) {
        if *want > 0 && *want > node.allocatable.scalar(name) - node.requested.scalar(name) {
            mask |= 1 << (RESOURCE_SCALAR_SHIFT + i as u32);
        }
    }
    mask
}

/// Below this capacity `floor(free × 100 / capacity)` fits comfortably in i64 arithmetic
/// and the f64 estimate below is within one of it.
const EXACT_F64_CAPACITY: i64 = 1 << 44;

/// `1 / capacity` for [`least_requested`], or 0 when the exact integer path must be used.
pub(crate) fn reciprocal(capacity: i64) -> f64 {
    if capacity > 0 && capacity < EXACT_F64_CAPACITY {
        1.0 / capacity as f64
    } else {
        0.0
    }
}

/// `floor((capacity − requested) × 100 / capacity)`, 0 when over-committed. A division per
/// resource per node is the loop's most expensive instruction, so the quotient is estimated
/// with the node's precomputed reciprocal (off by at most one) and corrected exactly.
#[inline]
fn least_requested(requested: i64, capacity: i64, inverse: f64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    let x = (capacity - requested) * MAX_NODE_SCORE;
    if inverse == 0.0 {
        return x / capacity;
    }
    let q = (x as f64 * inverse) as i64;
    if (q + 1) * capacity <= x {
        q + 1
    } else if q * capacity > x {
        q - 1
    } else {
        q
    }
}

/// LeastAllocated: the mean over cpu and memory of the free share after placing the pod,
/// with missing requests taken as the defaults; resources the node has none of are skipped.
#[inline]
pub(crate) fn least_allocated(pod: &PodInfo, hot: &NodeHot) -> i64 {
    let mut score = 0;
    let mut weights = 0;
    if hot.alloc_cpu != 0 {
        score += least_requested(hot.nz_cpu + pod.non_zero_cpu, hot.alloc_cpu, hot.inv_cpu);
        weights += 1;
    }
    if hot.alloc_memory != 0 {
        score += least_requested(
            hot.nz_memory + pod.non_zero_memory,
            hot.alloc_memory,
            hot.inv_memory,
        );
        weights += 1;
    }
    // Spelled out so the compiler does not emit an integer division per node.
    match weights {
        2 => score / 2,
        1 => score,
        _ => 0,
    }
}

/// Whether BalancedAllocation runs: kube-scheduler skips it for pods requesting no cpu or
/// memory, so that best-effort pods do not pile onto one node.
pub(crate) fn balanced_applies(pod: &PodInfo) -> bool {
    pod.requests.milli_cpu != 0 || pod.requests.memory != 0
}

/// BalancedAllocation: `(1 - |cpu fraction - memory fraction| / 2) × 100` after placing the
/// pod, fractions capped at 1; a resource the node has none of is left out.
#[inline]
pub(crate) fn balanced_allocation(pod: &PodInfo, hot: &NodeHot) -> i64 {
    let fraction = |req: i64, alloc: i64| ((req as f64) / (alloc as f64)).min(1.0);
    if hot.alloc_cpu == 0 || hot.alloc_memory == 0 {
        // With one fraction or none the deviation is zero.
        return MAX_NODE_SCORE;
    }
    let cpu = fraction(hot.req_cpu + pod.requests.milli_cpu, hot.alloc_cpu);
    let memory = fraction(hot.req_memory + pod.requests.memory, hot.alloc_memory);
    let std = ((cpu - memory) / 2.0).abs();
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_info::Resources;

    const GI: i64 = 1 << 30;

    fn hot(cpu: i64, mem: i64, req_cpu: i64, req_mem: i64) -> NodeHot {
        NodeHot {
            alloc_cpu: cpu,
            alloc_memory: mem,
            alloc_pods: 110,
            req_cpu,
            req_memory: req_mem,
            nz_cpu: req_cpu,
            nz_memory: req_mem,
            inv_cpu: reciprocal(cpu),
            inv_memory: reciprocal(mem),
            exists: true,
            ..Default::default()
        }
    }

    fn pod(cpu: i64, mem: i64) -> PodInfo {
        PodInfo {
            requests: Resources {
                milli_cpu: cpu,
                memory: mem,
                ..Default::default()
            },
            non_zero_cpu: cpu,
            non_zero_memory: mem,
            ..Default::default()
        }
    }

    #[test]
    fn fit_reports_every_short_resource() {
        let node = NodeInfo::default();
        let h = hot(4000, 8 * GI, 3500, 7 * GI);
        assert_eq!(fit(&pod(500, GI), &h, &node), None);
        assert_eq!(
            fit(&pod(501, 2 * GI), &h, &node),
            Some(Reason::Resources(RESOURCE_CPU | RESOURCE_MEMORY))
        );
        let full = NodeHot {
            pod_count: 110,
            ..h
        };
        assert_eq!(
            fit(&pod(0, 0), &full, &node),
            Some(Reason::Resources(RESOURCE_PODS))
        );
    }

    #[test]
    fn fit_checks_extended_resources() {
        let node = NodeInfo {
            allocatable: Resources {
                scalar: vec![("nvidia.com/gpu".into(), 2)],
                ..Default::default()
            },
            requested: Resources {
                scalar: vec![("nvidia.com/gpu".into(), 1)],
                ..Default::default()
            },
            ..Default::default()
        };
        let mut p = pod(0, 0);
        p.requests.scalar = vec![("example.com/foo".into(), 1), ("nvidia.com/gpu".into(), 2)];
        assert_eq!(
            fit(&p, &hot(1000, GI, 0, 0), &node),
            Some(Reason::Resources(
                (1 << RESOURCE_SCALAR_SHIFT) | (1 << (RESOURCE_SCALAR_SHIFT + 1))
            ))
        );
    }

    #[test]
    fn scores_match_kube_scheduler_arithmetic() {
        // cpu: (4000-1000-1000)*100/4000 = 50; memory: (8-2-2)*100/8 = 50.
        let h = hot(4000, 8 * GI, 1000, 2 * GI);
        assert_eq!(least_allocated(&pod(1000, 2 * GI), &h), 50);
        // fractions 0.5 and 0.5 → 100; 0.5 and 0.25 → (1 - 0.125) × 100 = 87.
        assert_eq!(balanced_allocation(&pod(1000, 2 * GI), &h), 100);
        assert_eq!(balanced_allocation(&pod(1000, 0), &h), 87);
        // Over-committed: least allocated gives 0, balanced caps fractions at 1.
        assert_eq!(least_allocated(&pod(8000, 0), &h), 37);
    }

    #[test]
    fn float_division_matches_integer_division() {
        for capacity in [
            1,
            3,
            7,
            4000,
            32_000,
            137_438_953_472,
            (1 << 44) - 1,
            1 << 44,
            1 << 50,
        ] {
            for requested in [0, 1, capacity / 3, capacity / 2, capacity - 1, capacity] {
                let exact = (capacity - requested) * MAX_NODE_SCORE / capacity;
                assert_eq!(
                    least_requested(requested, capacity, reciprocal(capacity)),
                    exact,
                    "{requested}/{capacity}"
                );
            }
        }
    }
}
