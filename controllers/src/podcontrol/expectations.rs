//! Expectations on an owner's pods, fed by the shared Pod informer: after a controller creates
//! or deletes pods for an owner it waits until the informer has seen those changes (or their
//! requests failed) before acting on that owner again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;

use crate::pods::controller_key;
use crate::runtime::{key_of, Change, Expectations, Informer};

/// When a pod deletion the controller issued counts as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionSeen {
    /// When the pod leaves the informer.
    OnDelete,
    /// When the pod leaves the informer, and also whenever it is seen with a deletion
    /// timestamp (Kubernetes' Job: a count that goes below zero is as good as zero).
    OnDeleteOrTerminating,
    /// Once per pod whose deletion was issued, at the first of its deletion timestamp and its
    /// removal (Kubernetes' `UIDTrackingControllerExpectations`, the ReplicaSet's).
    Tracked,
}

/// Outstanding pod creations and deletions per owner key.
#[derive(Debug)]
pub struct PodExpectations {
    counts: Expectations,
    /// Pod keys whose deletion is outstanding, per owner key ([`DeletionSeen::Tracked`]).
    pending: Mutex<HashMap<String, HashSet<String>>>,
    seen: DeletionSeen,
}

impl PodExpectations {
    pub fn new(seen: DeletionSeen) -> Self {
        PodExpectations {
            counts: Expectations::new(),
            pending: Mutex::default(),
            seen,
        }
    }

    /// Counts `pods`' changes against the expectations of the `K` controlling each pod.
    pub fn observe<K: Resource<DynamicType = ()>>(self: &Arc<Self>, pods: &mut Informer<Pod>) {
        let this = self.clone();
        pods.observe(move |change, pod: &Pod| {
            if let Some(key) = controller_key::<K>(&pod.metadata) {
                this.observed(change, &key, pod);
            }
        });
    }

    /// One change of a pod controlled by the owner `key`.
    pub fn observed(&self, change: Change, key: &str, pod: &Pod) {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if change == Change::Added {
            self.counts.creation_observed(key);
        }
        let deleted = match self.seen {
            DeletionSeen::OnDelete => change == Change::Deleted,
            DeletionSeen::OnDeleteOrTerminating => {
                change == Change::Deleted || (change == Change::Modified && terminating)
            }
            DeletionSeen::Tracked => {
                (change == Change::Deleted || terminating) && self.take_pending(key, pod)
            }
        };
        if deleted {
            self.counts.deletion_observed(key);
        }
    }

    /// Whether the controller may act on `key`: nothing outstanding, or the expectations have
    /// expired.
    pub fn satisfied(&self, key: &str) -> bool {
        self.counts.satisfied(key)
    }

    /// Forgets `key` (its owner was deleted).
    pub fn forget(&self, key: &str) {
        self.counts.forget(key);
        self.lock().remove(key);
    }

    /// `count` creations are about to be issued for `key`, on top of what is outstanding.
    pub(crate) fn expect_creations(&self, key: &str, count: usize) {
        self.counts.raise(key, count, 0);
    }

    /// A creation for `key` failed or was never tried: it will not be observed.
    pub(crate) fn creation_failed(&self, key: &str) {
        self.counts.creation_observed(key);
    }

    /// Deletions of `pods` are about to be issued for `key`, on top of what is outstanding.
    pub(crate) fn expect_deletions(&self, key: &str, pods: &[&Pod]) {
        if self.seen == DeletionSeen::Tracked {
            self.lock()
                .entry(key.to_string())
                .or_default()
                .extend(pods.iter().map(|p| key_of(*p)));
        }
        self.counts.raise(key, 0, pods.len());
    }

    /// The deletion of `pod` for `key` failed: it will not be observed (as a deletion of ours).
    pub(crate) fn deletion_failed(&self, key: &str, pod: &Pod) {
        if self.seen != DeletionSeen::Tracked || self.take_pending(key, pod) {
            self.counts.deletion_observed(key);
        }
    }

    /// True the first time `pod` is seen going, if its deletion was expected.
    fn take_pending(&self, key: &str, pod: &Pod) -> bool {
        self.lock()
            .get_mut(key)
            .is_some_and(|set| set.remove(&key_of(pod)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        // Every update is a single insert or remove: a panicking holder leaves it consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn pod(name: &str, terminating: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some(name.into());
        if terminating {
            p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        p
    }

    #[test]
    fn creations_are_observed_when_added_or_failed() {
        let e = PodExpectations::new(DeletionSeen::OnDelete);
        e.expect_creations("ns/o", 2);
        e.observed(Change::Added, "ns/o", &pod("a", false));
        assert!(!e.satisfied("ns/o"));
        e.creation_failed("ns/o");
        assert!(e.satisfied("ns/o"));
    }

    #[test]
    fn on_delete_ignores_deletion_timestamps() {
        let e = PodExpectations::new(DeletionSeen::OnDelete);
        let a = pod("a", true);
        e.expect_deletions("ns/o", &[&a]);
        e.observed(Change::Modified, "ns/o", &a);
        assert!(!e.satisfied("ns/o"));
        e.observed(Change::Deleted, "ns/o", &a);
        assert!(e.satisfied("ns/o"));
    }

    #[test]
    fn on_delete_or_terminating_counts_the_timestamp() {
        let e = PodExpectations::new(DeletionSeen::OnDeleteOrTerminating);
        let (a, b) = (pod("a", true), pod("b", false));
        e.expect_deletions("ns/o", &[&a, &b]);
        e.observed(Change::Modified, "ns/o", &a);
        assert!(!e.satisfied("ns/o"));
        e.deletion_failed("ns/o", &b);
        assert!(e.satisfied("ns/o"));
    }

    #[test]
    fn tracked_deletions_count_once_per_expected_pod() {
        let e = PodExpectations::new(DeletionSeen::Tracked);
        let (a, b, other) = (pod("a", true), pod("b", false), pod("c", true));
        e.expect_deletions("ns/o", &[&a, &b]);
        e.observed(Change::Modified, "ns/o", &a);
        // The same pod again (timestamp, then delete), and a pod not expected: not counted.
        e.observed(Change::Deleted, "ns/o", &a);
        e.observed(Change::Deleted, "ns/o", &other);
        assert!(!e.satisfied("ns/o"));
        e.deletion_failed("ns/o", &b);
        assert!(e.satisfied("ns/o"));
        // A failure for a pod already seen going counts nothing more.
        e.expect_deletions("ns/o", &[&a]);
        e.observed(Change::Deleted, "ns/o", &a);
        e.deletion_failed("ns/o", &a);
        assert!(e.satisfied("ns/o"));
        e.expect_deletions("ns/o", &[&b]);
        e.forget("ns/o");
        assert!(e.satisfied("ns/o"));
    }

    #[test]
    fn a_sync_that_deletes_then_creates_waits_for_both() {
        // A DaemonSet's sync: delete a misscheduled pod, create one on a new node.
        let e = PodExpectations::new(DeletionSeen::OnDelete);
        let old = pod("old", false);
        e.expect_deletions("ns/ds", &[&old]);
        e.expect_creations("ns/ds", 1);
        e.observed(Change::Added, "ns/ds", &pod("new", false));
        assert!(!e.satisfied("ns/ds"), "the deletion is still outstanding");
        e.observed(Change::Deleted, "ns/ds", &old);
        assert!(e.satisfied("ns/ds"));
    }
}
