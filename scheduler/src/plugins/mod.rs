//! kube-scheduler's default filter and score plugins, as plain functions over a [`PodInfo`] and
//! one node. Filters return the [`Reason`] a node was refused; scores return raw values that
//! the cycle normalizes to 0–100 and weighs as kube-scheduler's defaults do.

pub(crate) mod basic;
pub(crate) mod fit_columns;
pub(crate) mod images;
pub(crate) mod inter_pod;
pub(crate) mod node_affinity;
pub(crate) mod resource_scores;
pub(crate) mod resources;
pub(crate) mod spread;
pub(crate) mod taints;

use std::fmt::Write;

use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;

pub const MAX_NODE_SCORE: i64 = 100;

/// Score weights of kube-scheduler's default profile.
pub mod weights {
    pub const BALANCED_ALLOCATION: i64 = 1;
    pub const LEAST_ALLOCATED: i64 = 1;
    pub const NODE_AFFINITY: i64 = 2;
    pub const TAINT_TOLERATION: i64 = 3;
    pub const INTER_POD_AFFINITY: i64 = 2;
    pub const POD_TOPOLOGY_SPREAD: i64 = 2;
    pub const IMAGE_LOCALITY: i64 = 1;
}

/// Why a filter refused a node; small and `Copy` so the hot loop records it without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    Unschedulable,
    NodeName,
    /// Index of the first untolerated NoSchedule/NoExecute taint in the node's taints.
    Taint(u16),
    NodeAffinity,
    NodePorts,
    /// Bit 0: too many pods; 1 cpu; 2 memory; 3 ephemeral-storage; 4 + i: the pod's i-th
    /// scalar request.
    Resources(u64),
    ExistingAntiAffinity,
    Affinity,
    AntiAffinity,
    SpreadMissingLabel,
    Spread,
}

pub(crate) const RESOURCE_PODS: u64 = 1;
pub(crate) const RESOURCE_CPU: u64 = 1 << 1;
pub(crate) const RESOURCE_MEMORY: u64 = 1 << 2;
pub(crate) const RESOURCE_EPHEMERAL: u64 = 1 << 3;
pub(crate) const RESOURCE_SCALAR_SHIFT: u32 = 4;

impl Reason {
    /// Calls `f` with each message kube-scheduler would record for this node (NodeResourcesFit
    /// records one per insufficient resource).
    pub(crate) fn for_each_message(
        self,
        pod: &PodInfo,
        node: &NodeInfo,
        buf: &mut String,
        mut f: impl FnMut(&str),
    ) {
        let fixed = match self {
            Reason::Unschedulable => "node(s) were unschedulable",
            Reason::NodeName => "node(s) didn't match the requested node name",
            Reason::NodeAffinity => "node(s) didn't match Pod's node affinity/selector",
            Reason::NodePorts => "node(s) didn't have free ports for the requested pod ports",
            Reason::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules"
            }
            Reason::Affinity => "node(s) didn't match pod affinity rules",
            Reason::AntiAffinity => "node(s) didn't match pod anti-affinity rules",
            Reason::SpreadMissingLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
            }
            Reason::Spread => "node(s) didn't match pod topology spread constraints",
            Reason::Taint(i) => {
                let t = &node.taints[usize::from(i)];
                buf.clear();
                let _ = write!(
                    buf,
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key, t.value
                );
                f(buf);
                return;
            }
            Reason::Resources(mask) => {
                let names = [
                    (RESOURCE_PODS, "Too many pods"),
                    (RESOURCE_CPU, "Insufficient cpu"),
                    (RESOURCE_MEMORY, "Insufficient memory"),
                    (RESOURCE_EPHEMERAL, "Insufficient ephemeral-storage"),
                ];
                for (bit, msg) in names {
                    if mask & bit != 0 {
                        f(msg);
                    }
                }
                for (i, (name, _)) in pod.requests.scalar.iter().enumerate().take(60) {
                    if mask & (1 << (RESOURCE_SCALAR_SHIFT + i as u32)) != 0 {
                        buf.clear();
                        let _ = write!(buf, "Insufficient {name}");
                        f(buf);
                    }
                }
                return;
            }
        };
        f(fixed);
    }
}

/// kube-scheduler's `DefaultNormalizeScore`: scales to 0–100 by the maximum, optionally
/// reversed; all zeros stay 0 (or become 100 when reversed).
pub(crate) fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.fill(MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_by_max() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        let mut s = [0, 0];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 0]);
    }
}
