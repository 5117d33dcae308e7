//! The error of a cycle that found no node, with kube-scheduler's message: "0/N nodes are
//! available: " then "count reason" entries sorted as strings (Go's `sort.Strings`).

use std::collections::HashMap;

use crate::plugins::Reason;
use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;

/// No node fits the pod. `Display` is the message kube-scheduler puts in the PodScheduled
/// condition and the FailedScheduling event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unschedulable {
    pub num_nodes: usize,
    /// Each reason with the number of nodes it was given for, in the message's order.
    pub reasons: Vec<(String, usize)>,
    pub message: String,
}

impl Unschedulable {
    /// kube-scheduler's `ErrNoNodesAvailable`.
    pub fn no_nodes() -> Unschedulable {
        Unschedulable {
            num_nodes: 0,
            reasons: Vec::new(),
            message: "no nodes available to schedule pods".into(),
        }
    }

    pub(crate) fn from_failures(
        pod: &PodInfo,
        slots: &[NodeInfo],
        failures: &[(u32, Reason)],
        num_nodes: usize,
    ) -> Unschedulable {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut buf = String::new();
        for &(slot, reason) in failures {
            reason.for_each_message(pod, &slots[slot as usize], &mut buf, |msg| {
                match counts.get_mut(msg) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(msg.to_string(), 1);
                    }
                }
            });
        }
        let mut entries: Vec<(String, String, usize)> = counts
            .into_iter()
            .map(|(reason, count)| (format!("{count} {reason}"), reason, count))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut message = format!("0/{num_nodes} nodes are available:");
        if !entries.is_empty() {
            let joined: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
            message.push(' ');
            message.push_str(&joined.join(", "));
            message.push('.');
        }
        Unschedulable {
            num_nodes,
            reasons: entries.into_iter().map(|(_, r, c)| (r, c)).collect(),
            message,
        }
    }
}
