//! NodeResourcesFit (filter, and its LeastAllocated score) and
//! NodeResourcesBalancedAllocation (score), over cpu and memory with weight 1 each.

use crate::pod_info::PodInfo;
use crate::snapshot::{NodeHot, NodeInfo};

use super::{
    Reason, MAX_NODE_SCORE, RESOURCE_CPU, RESOURCE_EPHEMERAL, RESOURCE_MEMORY, RESOURCE_PODS,
    RESOURCE_SCALAR_SHIFT,
};

/// The pod's requests as the filter loop's fast path compares them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Want {
    cpu: i64,
    memory: i64,
    ephemeral: i64,
}

impl Want {
    pub(crate) fn of(pod: &PodInfo) -> Want {
        let r = &pod.requests;
        Want {
            cpu: r.milli_cpu,
            memory: r.memory,
            ephemeral: r.ephemeral_storage,
        }
    }

    /// Whether [`fit`] would pass, but for extended resources (the caller checks the pod has
    /// none); without branches, as nearly every node fits.
    #[inline]
    pub(crate) fn fits(self, hot: &NodeHot) -> bool {
        (hot.pod_count < hot.alloc_pods)
            & ((self.cpu <= 0) | (self.cpu <= hot.alloc_cpu - hot.req_cpu))
            & ((self.memory <= 0) | (self.memory <= hot.alloc_memory - hot.req_memory))
            & ((self.ephemeral <= 0) | (self.ephemeral <= hot.alloc_ephemeral - hot.req_ephemeral))
    }
}

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

/// Exact division by one node's capacity with a multiplication and shifts (Granlund and
/// Montgomery, "Division by invariant integers using multiplication", 1994, theorem 4.2):
/// a division per resource per node is the loop's most expensive instruction, and the
/// capacities change far less often than they are divided by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Divisor {
    magic: u64,
    shift1: u8,
    shift2: u8,
}

impl Divisor {
    /// For `d ≥ 1`; `None` for anything else.
    pub(crate) fn new(d: i64) -> Option<Divisor> {
        let d = u64::try_from(d).ok().filter(|&d| d > 0)?;
        // l = ⌈log2 d⌉.
        let l = 64 - (d - 1).leading_zeros();
        let magic = (((1u128 << 64) * ((1u128 << l) - u128::from(d))) / u128::from(d)) as u64;
        Some(Divisor {
            magic: magic.wrapping_add(1),
            shift1: l.min(1) as u8,
            shift2: l.saturating_sub(1) as u8,
        })
    }

    /// `⌊n / d⌋`, for every `n < 2^64`.
    #[inline]
    pub(crate) fn divide(self, n: u64) -> u64 {
        let t = ((u128::from(self.magic) * u128::from(n)) >> 64) as u64;
        (t + ((n - t) >> self.shift1)) >> self.shift2
    }
}

/// Capacities above this would overflow `free × 100`; they take the plain division.
const MAX_DIVISOR_CAPACITY: i64 = i64::MAX / MAX_NODE_SCORE;

/// The node's divisor for [`least_requested`], or `None` where it must divide plainly.
pub(crate) fn divisor(capacity: i64) -> Option<Divisor> {
    if capacity > MAX_DIVISOR_CAPACITY {
        return None;
    }
    Divisor::new(capacity)
}

/// `floor((capacity − requested) × 100 / capacity)`, 0 when over-committed.
#[inline]
fn least_requested(requested: i64, capacity: i64, divisor: Option<Divisor>) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    let free = capacity - requested;
    match divisor {
        Some(d) => d.divide(free as u64 * MAX_NODE_SCORE as u64) as i64,
        None => (i128::from(free) * i128::from(MAX_NODE_SCORE) / i128::from(capacity)) as i64,
    }
}

/// LeastAllocated: the mean over cpu and memory of the free share after placing the pod,
/// with missing requests taken as the defaults; resources the node has none of are skipped.
#[inline]
pub(crate) fn least_allocated(pod: &PodInfo, hot: &NodeHot) -> i64 {
    let mut score = 0;
    let mut weights = 0;
    if hot.alloc_cpu != 0 {
        score += least_requested(hot.nz_cpu + pod.non_zero_cpu, hot.alloc_cpu, hot.div_cpu);
        weights += 1;
    }
    if hot.alloc_memory != 0 {
        score += least_requested(
            hot.nz_memory + pod.non_zero_memory,
            hot.alloc_memory,
            hot.div_memory,
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
            div_cpu: divisor(cpu),
            div_memory: divisor(mem),
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
    fn fast_fit_agrees_with_fit() {
        let node = NodeInfo::default();
        for (cpu, mem, pods) in [
            (500, GI, 0),
            (501, GI, 0),
            (0, 0, 110),
            (0, 2 * GI, 3),
            (-1, 0, 0),
        ] {
            let h = NodeHot {
                pod_count: pods,
                ..hot(4000, 8 * GI, 3500, 7 * GI)
            };
            let p = pod(cpu, mem);
            assert_eq!(
                Want::of(&p).fits(&h),
                fit(&p, &h, &node).is_none(),
                "{cpu} {mem} {pods}"
            );
        }
        // An over-committed node still takes a pod that asks for nothing of that resource.
        let over = hot(1000, GI, 2000, 2 * GI);
        assert!(Want::of(&pod(0, 0)).fits(&over));
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
    fn divisor_matches_integer_division() {
        let divisors = [
            1,
            2,
            3,
            7,
            10,
            4000,
            32_000,
            137_438_953_472,
            (1 << 44) - 1,
            1 << 44,
            (1 << 62) + 12_345,
            i64::MAX,
        ];
        let numerators = [
            0,
            1,
            2,
            99,
            100,
            12_345_678,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ];
        for d in divisors {
            let div = Divisor::new(d).expect("positive");
            for n in numerators
                .into_iter()
                .chain([d as u64 - 1, d as u64, d as u64 + 1])
            {
                assert_eq!(div.divide(n), n / d as u64, "{n} / {d}");
            }
        }
        assert_eq!(Divisor::new(0), None);
        assert_eq!(Divisor::new(-5), None);
        for capacity in [
            1,
            3,
            7,
            4000,
            32_000,
            137_438_953_472,
            1 << 50,
            i64::MAX / 50,
        ] {
            for requested in [0, 1, capacity / 3, capacity / 2, capacity - 1, capacity] {
                let exact = ((capacity - requested) as i128 * 100 / capacity as i128) as i64;
                assert_eq!(
                    least_requested(requested, capacity, divisor(capacity)),
                    exact,
                    "{requested}/{capacity}"
                );
            }
        }
    }
}
