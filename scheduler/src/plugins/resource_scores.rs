//! LeastAllocated and BalancedAllocation for every node at once, over per-slot `f64` columns
//! the snapshot keeps, in a loop the compiler vectorizes: multiplications by each node's
//! precomputed reciprocal capacity instead of divisions.
//!
//! The results equal [`resources::least_allocated`] and [`resources::balanced_allocation`]
//! exactly. LeastAllocated's `⌊(c − r) × 100 / c⌋` is an integer or at least `1/c` away from
//! one, while `(c − r) × 100 × fl(1/c)` errs by under 2⁻⁴⁵ (for `c < 2⁴¹`), so adding 2⁻⁴² before
//! truncating gives the exact floor. BalancedAllocation must equal kube-scheduler's float64
//! arithmetic, which can fall just below an integer; the reciprocal form lands within 2⁻⁴² of
//! that float result, so wherever it is further than [`NEAR`] from an integer both truncate
//! alike, and the rare node near one is marked for the plain float formula. Nodes or pods with
//! numbers outside the bounds these proofs need take the plain path too.

use crate::pod_info::PodInfo;
use crate::snapshot::NodeHot;

use super::fit_columns::{FitColumns, FitWant};
use super::{resources, weights};

/// Capacities at or above this take the plain path (see the module docs).
const MAX_CAPACITY: i64 = 1 << 41;
/// Requests (summed per node, or the pod's own) above these too: their sums stay exact in f64.
const MAX_NODE_REQUEST: i64 = 1 << 52;
const MAX_POD_REQUEST: i64 = 1 << 41;
/// Added to LeastAllocated's quotient before truncating (see the module docs).
const NUDGE: f64 = 1.0 / (1u64 << 42) as f64;
/// How close to an integer a BalancedAllocation score must be to take the plain path; far above
/// the 2⁻⁴² the two computations can differ by.
const NEAR: f64 = 1.0 / (1u64 << 30) as f64;
/// Marks a node whose scores [`dense_scores`] left to the plain functions.
pub(crate) const PLAIN: i32 = -1;

/// Per slot: capacities, their reciprocals and the requested sums, as `f64`. A slot whose
/// numbers are out of bounds holds NaN reciprocals, which the score loop turns into
/// [`PLAIN`].
#[derive(Clone, Debug, Default)]
pub(crate) struct ResourceColumns {
    cap_cpu: Vec<f64>,
    cap_memory: Vec<f64>,
    inv_cpu: Vec<f64>,
    inv_memory: Vec<f64>,
    req_cpu: Vec<f64>,
    req_memory: Vec<f64>,
    nz_cpu: Vec<f64>,
    nz_memory: Vec<f64>,
}

impl ResourceColumns {
    pub(crate) fn push(&mut self, hot: &NodeHot) {
        for column in self.columns_mut() {
            column.push(0.0);
        }
        self.set(self.cap_cpu.len() - 1, hot);
    }

    pub(crate) fn set(&mut self, slot: usize, hot: &NodeHot) {
        let capacity = |c: i64| (0 < c && c < MAX_CAPACITY).then_some(c as f64);
        let request = |r: i64| (0..=MAX_NODE_REQUEST).contains(&r);
        let in_bounds = request(hot.req_cpu)
            && request(hot.req_memory)
            && request(hot.nz_cpu)
            && request(hot.nz_memory);
        let (cpu, memory) = match (capacity(hot.alloc_cpu), capacity(hot.alloc_memory)) {
            (Some(cpu), Some(memory)) if in_bounds => (cpu, memory),
            _ => (f64::NAN, f64::NAN),
        };
        self.cap_cpu[slot] = cpu;
        self.cap_memory[slot] = memory;
        self.inv_cpu[slot] = 1.0 / cpu;
        self.inv_memory[slot] = 1.0 / memory;
        self.req_cpu[slot] = hot.req_cpu as f64;
        self.req_memory[slot] = hot.req_memory as f64;
        self.nz_cpu[slot] = hot.nz_cpu as f64;
        self.nz_memory[slot] = hot.nz_memory as f64;
    }

    fn columns_mut(&mut self) -> [&mut Vec<f64>; 8] {
        [
            &mut self.cap_cpu,
            &mut self.cap_memory,
            &mut self.inv_cpu,
            &mut self.inv_memory,
            &mut self.req_cpu,
            &mut self.req_memory,
            &mut self.nz_cpu,
            &mut self.nz_memory,
        ]
    }
}

/// The pod's requests as the score loop adds them; `None` when out of bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PodRequests {
    cpu: f64,
    memory: f64,
    nz_cpu: f64,
    nz_memory: f64,
}

impl PodRequests {
    #[cfg(test)]
    pub(crate) const ZERO: PodRequests = PodRequests {
        cpu: 0.0,
        memory: 0.0,
        nz_cpu: 0.0,
        nz_memory: 0.0,
    };

    pub(crate) fn of(pod: &PodInfo) -> Option<PodRequests> {
        let r = &pod.requests;
        let values = [r.milli_cpu, r.memory, pod.non_zero_cpu, pod.non_zero_memory];
        values
            .iter()
            .all(|v| (0..=MAX_POD_REQUEST).contains(v))
            .then_some(PodRequests {
                cpu: r.milli_cpu as f64,
                memory: r.memory as f64,
                nz_cpu: pod.non_zero_cpu as f64,
                nz_memory: pod.non_zero_memory as f64,
            })
    }
}

/// Writes, for every slot, `LEAST_ALLOCATED × least + BALANCED_ALLOCATION × balanced` (the
/// latter only when `balanced`), or [`PLAIN`] where the caller must use the plain functions.
pub(crate) fn dense_scores(
    columns: &ResourceColumns,
    pod: PodRequests,
    balanced: bool,
    out: &mut Vec<i32>,
) {
    out.clear();
    if balanced {
        fill::<true>(columns, pod, out);
    } else {
        fill::<false>(columns, pod, out);
    }
}

fn fill<const BALANCED: bool>(c: &ResourceColumns, pod: PodRequests, out: &mut Vec<i32>) {
    let n = c.cap_cpu.len();
    let (cap_cpu, cap_memory) = (&c.cap_cpu[..n], &c.cap_memory[..n]);
    let (inv_cpu, inv_memory) = (&c.inv_cpu[..n], &c.inv_memory[..n]);
    let (req_cpu, req_memory) = (&c.req_cpu[..n], &c.req_memory[..n]);
    let (nz_cpu, nz_memory) = (&c.nz_cpu[..n], &c.nz_memory[..n]);
    out.extend((0..n).map(|i| {
        // ⌊(c − r) × 100 / c⌋, or 0 when over-committed: the nudged quotient is more than
        // 2⁻⁴³ above its floor and as far below the next integer, so rounding it less ½
        // gives the floor (NaN slots give garbage, replaced by PLAIN below).
        let least =
            |cap: f64, inv: f64, r: f64| round(((cap - r) * 100.0 * inv).max(0.0) + (NUDGE - 0.5));
        let l = (least(cap_cpu[i], inv_cpu[i], nz_cpu[i] + pod.nz_cpu).wrapping_add(least(
            cap_memory[i],
            inv_memory[i],
            nz_memory[i] + pod.nz_memory,
        ))) as u64
            / 2;
        let score = (weights::LEAST_ALLOCATED as u64).wrapping_mul(l);
        let plain_node = inv_cpu[i].is_nan();
        if !BALANCED {
            return if plain_node { PLAIN } else { score as i32 };
        }
        let cpu = ((req_cpu[i] + pod.cpu) * inv_cpu[i]).min(1.0);
        let memory = ((req_memory[i] + pod.memory) * inv_memory[i]).min(1.0);
        // Within [50, 100] for nodes in bounds; NaN for the others.
        let s = (1.0 - ((cpu - memory) * 0.5).abs()) * 100.0;
        let nearest = (s + ROUND) - ROUND;
        let below = s - nearest;
        let t = round(s).wrapping_sub(i64::from(below < 0.0)) as u64;
        if below.abs() > NEAR && !plain_node {
            score.wrapping_add((weights::BALANCED_ALLOCATION as u64).wrapping_mul(t)) as i32
        } else {
            PLAIN
        }
    }));
}

/// Marks a slot [`fit_scores`] found infeasible; below every score and [`PLAIN`].
pub(crate) const INFEASIBLE: i32 = i32::MIN;

/// For every slot, [`dense_scores`]'s value where the pod fits ([`FitWant::fits`]) and
/// [`INFEASIBLE`] elsewhere: NodeResourcesFit and both resource scores in one pass.
pub(crate) fn fit_scores(
    columns: &ResourceColumns,
    fit: &FitColumns,
    want: FitWant,
    pod: PodRequests,
    balanced: bool,
    out: &mut Vec<i32>,
) {
    out.clear();
    match (balanced, want.wants_ephemeral()) {
        (true, false) => fit_fill::<true, false>(columns, fit, want, pod, out),
        (true, true) => fit_fill::<true, true>(columns, fit, want, pod, out),
        (false, false) => fit_fill::<false, false>(columns, fit, want, pod, out),
        (false, true) => fit_fill::<false, true>(columns, fit, want, pod, out),
    }
}

// Kept out of line so profiles show the pass on its own; it runs once per cycle.
#[inline(never)]
fn fit_fill<const BALANCED: bool, const EPHEMERAL: bool>(
    c: &ResourceColumns,
    f: &FitColumns,
    want: FitWant,
    pod: PodRequests,
    out: &mut Vec<i32>,
) {
    let n = c.cap_cpu.len().min(f.len());
    out.resize(n, 0);
    let out = &mut out[..n];
    let (cap_cpu, cap_memory) = (&c.cap_cpu[..n], &c.cap_memory[..n]);
    let (inv_cpu, inv_memory) = (&c.inv_cpu[..n], &c.inv_memory[..n]);
    let (req_cpu, req_memory) = (&c.req_cpu[..n], &c.req_memory[..n]);
    let (nz_cpu, nz_memory) = (&c.nz_cpu[..n], &c.nz_memory[..n]);
    let (free_cpu, free_memory) = (&f.free_cpu[..n], &f.free_memory[..n]);
    let (free_ephemeral, free_pods, blocked) =
        (&f.free_ephemeral[..n], &f.free_pods[..n], &f.blocked[..n]);
    for i in 0..n {
        // `&`, not `&&`: no branch per node, so the loop vectorizes.
        let fits = (blocked[i] <= want.max_blocked)
            & (free_pods[i] > 0.0)
            & (want.cpu <= free_cpu[i])
            & (want.memory <= free_memory[i])
            & (!EPHEMERAL | (want.ephemeral <= free_ephemeral[i]));
        // `fill`'s arithmetic, with selects for its branches.
        let least =
            |cap: f64, inv: f64, r: f64| round(((cap - r) * 100.0 * inv).max(0.0) + (NUDGE - 0.5));
        let l = least(cap_cpu[i], inv_cpu[i], nz_cpu[i] + pod.nz_cpu).wrapping_add(least(
            cap_memory[i],
            inv_memory[i],
            nz_memory[i] + pod.nz_memory,
        ));
        let mut score = (weights::LEAST_ALLOCATED as u64).wrapping_mul(l as u64 / 2);
        let mut exact = !inv_cpu[i].is_nan();
        if BALANCED {
            let cpu = ((req_cpu[i] + pod.cpu) * inv_cpu[i]).min(1.0);
            let memory = ((req_memory[i] + pod.memory) * inv_memory[i]).min(1.0);
            let s = (1.0 - ((cpu - memory) * 0.5).abs()) * 100.0;
            let below = s - ((s + ROUND) - ROUND);
            let t = round(s).wrapping_sub(i64::from(below < 0.0)) as u64;
            score = score.wrapping_add((weights::BALANCED_ALLOCATION as u64).wrapping_mul(t));
            exact &= below.abs() > NEAR;
        }
        let score = if exact { score as i32 } else { PLAIN };
        out[i] = if fits { score } else { INFEASIBLE };
    }
}

/// 1.5 × 2⁵²: adding it to an `f64` under 2⁵¹ in magnitude rounds that to an integer, which
/// then sits in the sum's low mantissa bits.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// `x` rounded to the nearest integer (ties to even) for `|x| < 2⁵¹`, without the saturating
/// float-to-int conversion that the compiler cannot vectorize.
#[inline]
fn round(x: f64) -> i64 {
    ((x + ROUND).to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64)
}

/// The two resource scores of one node the plain way, weighted as [`dense_scores`] does.
pub(crate) fn plain_scores(pod: &PodInfo, hot: &NodeHot, balanced: bool) -> i64 {
    let least = weights::LEAST_ALLOCATED * resources::least_allocated(pod, hot);
    if balanced {
        least + weights::BALANCED_ALLOCATION * resources::balanced_allocation(pod, hot)
    } else {
        least
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_info::Resources;

    const GI: i64 = 1 << 30;

    fn hot(alloc: (i64, i64), req: (i64, i64), nz: (i64, i64)) -> NodeHot {
        NodeHot {
            alloc_cpu: alloc.0,
            alloc_memory: alloc.1,
            req_cpu: req.0,
            req_memory: req.1,
            nz_cpu: nz.0,
            nz_memory: nz.1,
            div_cpu: resources::divisor(alloc.0),
            div_memory: resources::divisor(alloc.1),
            exists: true,
            ..Default::default()
        }
    }

    fn pod(cpu: i64, memory: i64, nz_cpu: i64, nz_memory: i64) -> PodInfo {
        PodInfo {
            requests: Resources {
                milli_cpu: cpu,
                memory,
                ..Default::default()
            },
            non_zero_cpu: nz_cpu,
            non_zero_memory: nz_memory,
            ..Default::default()
        }
    }

    /// Scores every node for every pod both ways; returns how many took the plain path.
    fn compare(nodes: &[NodeHot], pods: &[PodInfo]) -> usize {
        let mut columns = ResourceColumns::default();
        for h in nodes {
            columns.push(h);
        }
        let mut out = Vec::new();
        let mut plain = 0;
        for p in pods {
            for balanced in [true, false] {
                let want: Vec<i64> = nodes.iter().map(|h| plain_scores(p, h, balanced)).collect();
                let Some(requests) = PodRequests::of(p) else {
                    plain += nodes.len();
                    continue;
                };
                dense_scores(&columns, requests, balanced, &mut out);
                assert_eq!(out.len(), nodes.len());
                for ((h, &have), &want) in nodes.iter().zip(&out).zip(&want) {
                    if have == PLAIN {
                        plain += 1;
                    } else {
                        assert_eq!(i64::from(have), want, "{h:?} {:?}", p.requests);
                    }
                }
            }
        }
        plain
    }

    /// xorshift64*, so the test needs no crate and is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Mostly small, sometimes up to `max`, sometimes a round multiple of `unit`.
        fn value(&mut self, max: i64, unit: i64) -> i64 {
            let max = max.max(1) as u64;
            match self.next() % 4 {
                0 => (self.next() % max) as i64,
                1 => ((self.next() % (max / unit as u64).max(1)) as i64) * unit,
                2 => (self.next() % 64) as i64,
                _ => (self.next() % max.min(1 << 20)) as i64,
            }
        }
    }

    #[test]
    fn dense_scores_equal_the_float_formula_on_random_nodes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut plain = 0;
        let mut total = 0;
        for round in 0..200 {
            let big = if round % 10 == 0 { 1 << 45 } else { 1 << 38 };
            let nodes: Vec<NodeHot> = (0..200)
                .map(|_| {
                    let alloc = (rng.value(big, 1000), rng.value(big, GI));
                    // Often below capacity, sometimes over-committed.
                    let req = (
                        rng.value(alloc.0.saturating_mul(2), 100),
                        rng.value(alloc.1.saturating_mul(2), 1 << 20),
                    );
                    let nz = (req.0 + rng.value(500, 100), req.1 + rng.value(GI, 1 << 20));
                    hot(alloc, req, nz)
                })
                .collect();
            let pods: Vec<PodInfo> = (0..20)
                .map(|_| {
                    let (cpu, memory) = (rng.value(8000, 100), rng.value(16 * GI, 1 << 20));
                    pod(cpu, memory, cpu.max(100), memory.max(200 << 20))
                })
                .collect();
            plain += compare(&nodes, &pods);
            total += nodes.len() * pods.len() * 2;
        }
        // The plain path is for out-of-bounds numbers and near-integer scores only (this
        // generator makes many of both: round multiples, capacities over 2⁴¹).
        assert!(plain * 3 < total, "{plain} of {total} took the plain path");
    }

    #[test]
    fn dense_scores_equal_the_float_formula_on_edge_cases() {
        let caps = [
            1,
            3,
            1000,
            4000,
            32_000,
            GI,
            128 * GI,
            (1 << 41) - 1,
            1 << 41,
            i64::MAX,
            0,
            -4000,
        ];
        let mut nodes = Vec::new();
        for &cpu in &caps {
            for &memory in &caps {
                for (num, den) in [(0, 1), (1, 2), (1, 3), (2, 3), (1, 1), (3, 2), (7, 10)] {
                    // Kept below 2⁶² so the plain functions' sums cannot overflow.
                    let r = |c: i64| (i128::from(c) * num / den).min(1 << 62) as i64;
                    nodes.push(hot((cpu, memory), (r(cpu), r(memory)), (r(cpu), r(memory))));
                    nodes.push(hot((cpu, memory), (r(cpu), 0), (r(cpu), r(memory) + 1)));
                }
            }
        }
        nodes.push(hot((4000, 8 * GI), (-1, 0), (0, 0)));
        nodes.push(hot((4000, 8 * GI), (1 << 53, 0), (1 << 53, 0)));
        let pods = [
            pod(0, 0, 100, 200 << 20),
            pod(1000, 2 * GI, 1000, 2 * GI),
            pod(1, 1, 1, 1),
            pod(4000, 8 * GI, 4000, 8 * GI),
            pod(1 << 41, 0, 1 << 41, 0),
            pod((1 << 41) + 1, 0, (1 << 41) + 1, 0),
            pod(-1, 0, 100, 0),
        ];
        compare(&nodes, &pods);
    }

    #[test]
    fn integer_scores_take_the_plain_path() {
        // Equal fractions give exactly 100, which the float formula may or may not reach.
        let nodes = [hot((4000, 8 * GI), (1000, 2 * GI), (1000, 2 * GI))];
        let mut columns = ResourceColumns::default();
        columns.push(&nodes[0]);
        let mut out = Vec::new();
        let p = pod(1000, 2 * GI, 1000, 2 * GI);
        dense_scores(
            &columns,
            PodRequests::of(&p).expect("in bounds"),
            true,
            &mut out,
        );
        assert_eq!(out, [PLAIN]);
        // Without BalancedAllocation, LeastAllocated is exact on its own: (50 + 50) / 2.
        dense_scores(
            &columns,
            PodRequests::of(&p).expect("in bounds"),
            false,
            &mut out,
        );
        assert_eq!(out, [50]);
        assert_eq!(compare(&nodes, &[p]), 1);
    }
}
