//! Node lifecycle on Leases (kube-controller-manager's node lifecycle controller) and the
//! NoExecute taint eviction that follows it:
//!
//! - [`NodeLifecycle`]: a node whose Lease in `kube-node-lease` (or Ready heartbeat) has not been
//!   renewed for the grace period gets its kubelet conditions set Unknown; its taints follow its
//!   conditions (`unreachable`/`not-ready` NoExecute and NoSchedule, pressure taints,
//!   `unschedulable`), and its pods' Ready condition turns False. Each node waits on a timer
//!   derived from its last renewal — nothing is listed periodically.
//! - [`TaintEviction`]: pods on a node with NoExecute taints they do not tolerate are deleted at once;
//!   tolerated with `tolerationSeconds`, when that runs out; tolerated forever, never.

mod eviction;
mod health;
mod monitor;
mod tolerations;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

pub use eviction::TaintEviction;
pub use health::{
    desired_taints, ready_status, unknown_conditions, KUBELET_CONDITIONS, MESSAGE_UNKNOWN,
    REASON_UNKNOWN,
};
pub use monitor::NodeLifecycle;
pub use tolerations::{eviction as eviction_time, tolerates, Eviction};

use crate::runtime::{key_of, Change, Informer};

/// Where kubelets (and the node simulator) renew their Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// kube-controller-manager's `--node-monitor-grace-period` default.
pub const DEFAULT_MONITOR_GRACE: Duration = Duration::from_secs(40);
/// kube-controller-manager's `--node-startup-grace-period` default.
pub const DEFAULT_STARTUP_GRACE: Duration = Duration::from_secs(60);

/// How long nodes may be silent.
#[derive(Clone, Copy, Debug)]
pub struct Grace {
    /// A node that has reported Ready before.
    pub monitor: Duration,
    /// A node that has never reported Ready (just registered), counted from its creation.
    pub startup: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            monitor: DEFAULT_MONITOR_GRACE,
            startup: DEFAULT_STARTUP_GRACE,
        }
    }
}

/// Pod keys (`namespace/name`) by the node they are bound to, kept by the pod informer, so a
/// node's pods are found without scanning every pod.
#[derive(Clone, Default)]
pub struct PodsByNode {
    inner: Arc<RwLock<Index>>,
}

#[derive(Default)]
struct Index {
    by_node: HashMap<String, HashSet<String>>,
    node_of: HashMap<String, String>,
}

impl PodsByNode {
    /// Keeps the index on `pods`' changes.
    pub fn attach(&self, pods: &mut Informer<Pod>) {
        let index = self.clone();
        pods.observe(move |change, pod| index.apply(change, pod));
    }

    fn apply(&self, change: Change, pod: &Pod) {
        let key = key_of(pod);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let mut ix = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = ix.node_of.remove(&key) {
            if let Some(set) = ix.by_node.get_mut(&old) {
                set.remove(&key);
                if set.is_empty() {
                    ix.by_node.remove(&old);
                }
            }
        }
        if let (Some(node), false) = (node, change == Change::Deleted) {
            ix.by_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
            ix.node_of.insert(key, node);
        }
    }

    /// The keys of the pods bound to `node`.
    pub fn on(&self, node: &str) -> Vec<String> {
        let ix = self.inner.read().unwrap_or_else(|p| p.into_inner());
        ix.by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// How long ago `at` was (zero if in the future).
fn elapsed_since(at: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_since(at)).unwrap_or(Duration::ZERO)
}

/// The time from now until `at` (zero if past).
fn until(at: Timestamp) -> Duration {
    let left = at.duration_since(Timestamp::now());
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(ns: &str, name: &str, node: Option<&str>) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pods_are_indexed_by_node() {
        let ix = PodsByNode::default();
        ix.apply(Change::Added, &pod("a", "p1", None));
        assert!(ix.on("n1").is_empty());
        ix.apply(Change::Modified, &pod("a", "p1", Some("n1")));
        ix.apply(Change::Added, &pod("a", "p2", Some("n1")));
        let mut on = ix.on("n1");
        on.sort();
        assert_eq!(on, ["a/p1", "a/p2"]);
        ix.apply(Change::Deleted, &pod("a", "p1", Some("n1")));
        assert_eq!(ix.on("n1"), ["a/p2"]);
        ix.apply(Change::Deleted, &pod("a", "p2", Some("n1")));
        assert!(ix.inner.read().unwrap().by_node.is_empty());
    }
}
