//! The ReplicaSet controller (kube-controller-manager's): keeps `spec.replicas` active pods
//! matching the selector, adopting matching orphans and releasing pods that stopped matching;
//! creates in slow-start batches (1, 2, 4, …) and deletes in Kubernetes' order; waits on
//! expectations so a lagging informer never leads to duplicate pods; reports replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas (after minReadySeconds) and
//! ReplicaFailure in its status.

pub(crate) mod claim;
mod ranking;
mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use berth_api::LabelSelector;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use serde_json::json;

use crate::pods::{controller_of, controller_reference, from_template, is_active, PodName};
use crate::runtime::{
    key_of, Action, Change, Expectations, Informer, NotSynced, Reconciler, Runner, Synced,
    WorkQueue,
};

pub use ranking::{pods_to_delete, DELETION_COST};
pub use status::REPLICA_FAILURE;

/// Most pods created or deleted in one sync (Kubernetes' `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// The first creation batch; each next one doubles (`SlowStartInitialBatchSize`).
const SLOW_START_INITIAL_BATCH: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("creating pods for replicaset {key}")]
    CreatePods {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod} of replicaset {key}")]
    DeletePod {
        key: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("{op} pod {pod} for replicaset {key}")]
    Claim {
        op: &'static str,
        key: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading replicaset {key}")]
    Get {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of replicaset {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

/// Deletions issued per ReplicaSet key, by pod key, so each is counted once whether it shows
/// as a deletion timestamp, a delete, or both (Kubernetes' `UIDTrackingControllerExpectations`).
#[derive(Debug, Default)]
struct PendingDeletes(Mutex<HashMap<String, HashSet<String>>>);

impl PendingDeletes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        // Every update is a single insert or remove: a panicking holder leaves it consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expect(&self, rs: &str, pods: HashSet<String>) {
        self.lock().insert(rs.to_string(), pods);
    }

    /// True the first time `pod` is seen going, if its deletion was expected.
    fn observed(&self, rs: &str, pod: &str) -> bool {
        self.lock().get_mut(rs).is_some_and(|set| set.remove(pod))
    }

    fn forget(&self, rs: &str) {
        self.lock().remove(rs);
    }
}

/// The ReplicaSet controller.
pub struct ReplicaSetController {
    client: Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    expectations: Arc<Expectations>,
    pending: Arc<PendingDeletes>,
    synced: [Synced; 2],
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// The ReplicaSet a pod's controller reference names, as a queue key.
fn owner_key(pod: &Pod) -> Option<String> {
    let r = controller_of(&pod.metadata)?;
    (r.kind == "ReplicaSet" && r.api_version.starts_with("apps/"))
        .then(|| format!("{}/{}", namespace(&pod.metadata), r.name))
}

/// Parses a ReplicaSet's selector; an absent or invalid one selects nothing.
pub(crate) fn selector_of(rs: &ReplicaSet) -> LabelSelector {
    LabelSelector::from_optional(rs.spec.as_ref().map(|s| &s.selector))
        .unwrap_or_else(|_| LabelSelector::nothing())
}

fn labels_match(selector: &LabelSelector, pod: &Pod) -> bool {
    let empty = Default::default();
    !selector.is_empty() && selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
}

/// Keys to sync for a pod: its controlling ReplicaSet, or, for an orphan, every ReplicaSet
/// in its namespace that would adopt it.
fn keys_for_pod(replicasets: &Store<ReplicaSet>, pod: &Pod) -> Vec<String> {
    if let Some(key) = owner_key(pod) {
        return vec![key];
    }
    if controller_of(&pod.metadata).is_some() {
        return Vec::new();
    }
    let ns = namespace(&pod.metadata);
    replicasets
        .state()
        .iter()
        .filter(|rs| namespace(&rs.metadata) == ns && labels_match(&selector_of(rs), pod))
        .map(|rs| key_of(&**rs))
        .collect()
}

impl ReplicaSetController {
    /// Registers the controller on `runner`. `pods` and `replicasets` are shared informers
    /// (the caller runs them); this adds the handlers it needs to both.
    pub fn register(
        runner: &mut Runner,
        client: Client,
        pods: &mut Informer<Pod>,
        replicasets: &mut Informer<ReplicaSet>,
        queue: WorkQueue<String>,
        workers: usize,
    ) {
        let expectations = Arc::new(Expectations::new());
        let pending = Arc::new(PendingDeletes::default());
        replicasets.enqueue(&queue, |rs: &ReplicaSet| vec![key_of(rs)]);
        let store = replicasets.store();
        pods.enqueue(&queue, move |pod: &Pod| keys_for_pod(&store, pod));
        {
            let expectations = expectations.clone();
            let pending = pending.clone();
            pods.observe(move |change, pod: &Pod| {
                let Some(rs) = owner_key(pod) else {
                    return;
                };
                let going = pod.metadata.deletion_timestamp.is_some();
                if change == Change::Added {
                    expectations.creation_observed(&rs);
                }
                if (change == Change::Deleted || going) && pending.observed(&rs, &key_of(pod)) {
                    expectations.deletion_observed(&rs);
                }
            });
        }
        let controller = ReplicaSetController {
            client,
            pods: pods.store(),
            replicasets: replicasets.store(),
            expectations,
            pending,
            synced: [pods.synced(), replicasets.synced()],
        };
        runner.controller(controller, queue, workers);
    }

    /// Active pods in `ns` this RS keeps, after adopting matching orphans and releasing
    /// non-matching pods it controlled.
    async fn claim_pods(
        &self,
        key: &str,
        rs: &ReplicaSet,
        ns: &str,
    ) -> Result<Vec<Arc<Pod>>, ReplicaSetError> {
        let selector = selector_of(rs);
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut owned = Vec::new();
        let mut may_adopt: Option<bool> = None;
        let candidates = self
            .pods
            .state()
            .into_iter()
            .filter(|p| namespace(&p.metadata) == ns && is_active(p));
        for pod in candidates {
            let matches = labels_match(&selector, &pod);
            let pod_name = || pod.metadata.name.clone().unwrap_or_default();
            match claim::decide(uid, deleting, &pod.metadata, matches) {
                claim::Claim::Keep => owned.push(pod),
                claim::Claim::Ignore => {}
                claim::Claim::Adopt => {
                    if may_adopt.is_none() {
                        may_adopt = Some(self.may_adopt(key, rs, ns).await?);
                    }
                    let Some(owner) = controller_reference(rs).filter(|_| may_adopt == Some(true))
                    else {
                        continue;
                    };
                    let adopted = claim::adopt(&api, &*pod, owner).await.map_err(|source| {
                        ReplicaSetError::Claim {
                            op: "adopting",
                            key: key.to_string(),
                            pod: pod_name(),
                            source,
                        }
                    })?;
                    if adopted {
                        owned.push(pod);
                    }
                }
                claim::Claim::Release => {
                    claim::release(&api, &*pod, uid).await.map_err(|source| {
                        ReplicaSetError::Claim {
                            op: "releasing",
                            key: key.to_string(),
                            pod: pod_name(),
                            source,
                        }
                    })?;
                }
            }
        }
        Ok(owned)
    }

    /// Re-reads the RS from the server before adopting: the cached copy may be a deleted RS
    /// whose name was reused (Kubernetes' `RecheckDeletionTimestamp`).
    async fn may_adopt(
        &self,
        key: &str,
        rs: &ReplicaSet,
        ns: &str,
    ) -> Result<bool, ReplicaSetError> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        match api.get_opt(name).await {
            Ok(Some(fresh)) => Ok(fresh.metadata.uid == rs.metadata.uid
                && fresh.metadata.deletion_timestamp.is_none()),
            Ok(None) => Ok(false),
            Err(source) => Err(ReplicaSetError::Get {
                key: key.to_string(),
                source,
            }),
        }
    }

    /// Creates or deletes pods towards `spec.replicas`.
    async fn manage(
        &self,
        key: &str,
        rs: &ReplicaSet,
        ns: &str,
        owned: &[Arc<Pod>],
    ) -> Result<(), ReplicaSetError> {
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        let have = owned.len();
        if have < want {
            let diff = (want - have).min(BURST_REPLICAS);
            self.create_pods(key, rs, ns, diff).await
        } else if have > want {
            let diff = (have - want).min(BURST_REPLICAS);
            self.delete_pods(key, rs, ns, owned, diff).await
        } else {
            Ok(())
        }
    }

    async fn create_pods(
        &self,
        key: &str,
        rs: &ReplicaSet,
        ns: &str,
        count: usize,
    ) -> Result<(), ReplicaSetError> {
        let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
        let (Some(template), Some(owner)) = (template, controller_reference(rs)) else {
            return Ok(());
        };
        let prefix = format!("{}-", rs.metadata.name.as_deref().unwrap_or_default());
        let pod = from_template(template, ns, owner, PodName::Generate(&prefix));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.expectations.expect(key, count, 0);
        let mut created = 0;
        let mut failure = None;
        for batch in slow_start_batches(count) {
            let params = PostParams::default();
            let results = join_all((0..batch).map(|_| api.create(&params, &pod))).await;
            for r in results {
                match r {
                    Ok(_) => created += 1,
                    // The namespace is going: no pod, no error (as Kubernetes).
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("being terminated") => {}
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if failure.is_some() {
                break;
            }
        }
        // Creations that failed or were never tried will not be observed.
        for _ in created..count {
            self.expectations.creation_observed(key);
        }
        if created > 0 {
            tracing::debug!(replicaset = key, created, "created pods");
        }
        match failure {
            Some(source) => Err(ReplicaSetError::CreatePods {
                key: key.to_string(),
                source,
            }),
            None => Ok(()),
        }
    }

    async fn delete_pods(
        &self,
        key: &str,
        rs: &ReplicaSet,
        ns: &str,
        owned: &[Arc<Pod>],
        count: usize,
    ) -> Result<(), ReplicaSetError> {
        let related = self.related_pods(rs, ns);
        let owned: Vec<&Pod> = owned.iter().map(|p| &**p).collect();
        let related: Vec<&Pod> = related.iter().map(|p| &**p).collect();
        let victims = pods_to_delete(&owned, &related, count);
        let keys: HashSet<String> = victims.iter().map(|p| key_of(*p)).collect();
        self.pending.expect(key, keys);
        self.expectations.expect(key, 0, victims.len());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deletes = victims.iter().map(|pod| {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            async move {
                let name = pod.metadata.name.clone().unwrap_or_default();
                (api.delete(&name, &params).await, *pod)
            }
        });
        let mut failure = None;
        for (result, pod) in join_all(deletes).await {
            let Err(e) = result else {
                continue;
            };
            // Not deleted by us, so no deletion will be observed for it.
            if self.pending.observed(key, &key_of(pod)) {
                self.expectations.deletion_observed(key);
            }
            let gone = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            if !gone && failure.is_none() {
                failure = Some(ReplicaSetError::DeletePod {
                    key: key.to_string(),
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    source: e,
                });
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Pods of this RS and of its siblings (RSes with the same controller), active or not:
    /// they rank doubled-up pods for deletion (Kubernetes' `getIndirectlyRelatedPods`).
    fn related_pods(&self, rs: &ReplicaSet, ns: &str) -> Vec<Arc<Pod>> {
        let owner = controller_of(&rs.metadata).map(|r| r.uid.clone());
        let mut uids: HashSet<String> = HashSet::new();
        uids.extend(rs.metadata.uid.clone());
        if let Some(owner) = owner {
            for sibling in self.replicasets.state() {
                if namespace(&sibling.metadata) == ns
                    && controller_of(&sibling.metadata).is_some_and(|r| r.uid == owner)
                {
                    uids.extend(sibling.metadata.uid.clone());
                }
            }
        }
        self.pods
            .state()
            .into_iter()
            .filter(|p| {
                namespace(&p.metadata) == ns
                    && controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid))
            })
            .collect()
    }

    async fn write_status(
        &self,
        key: &str,
        rs: &ReplicaSet,
        ns: &str,
        mut new: k8s_openapi::api::apps::v1::ReplicaSetStatus,
    ) -> Result<(), ReplicaSetError> {
        new.observed_generation = rs.metadata.generation;
        let mut body = serde_json::to_value(&new).unwrap_or_else(|_| json!({}));
        // A merge patch keeps what it does not mention: say "no conditions" explicitly.
        if new.conditions.as_ref().is_none_or(Vec::is_empty) {
            body["conditions"] = serde_json::Value::Null;
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        match api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": body})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(ReplicaSetError::Status {
                key: key.to_string(),
                source,
            }),
        }
    }
}

impl Reconciler for ReplicaSetController {
    type Error = ReplicaSetError;

    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn prepare(&self) -> Result<(), ReplicaSetError> {
        self.synced[0].wait("pod").await?;
        self.synced[1].wait("replicaset").await?;
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReplicaSetError> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(Action::Done);
        };
        let Some(rs) = self.replicasets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.forget(key);
            self.pending.forget(key);
            return Ok(Action::Done);
        };
        // Read before the pods: a pod observed in between is then in the list we act on.
        let needs_sync = self.expectations.satisfied(key);
        let owned = self.claim_pods(key, &rs, ns).await?;
        let result = if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            self.manage(key, &rs, ns, &owned).await
        } else {
            Ok(())
        };
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        let message = result.as_ref().err().map(error_chain);
        let failure = message.as_deref().map(|m| {
            if owned.len() < want {
                status::Failure::Create(m)
            } else {
                status::Failure::Delete(m)
            }
        });
        let now = Timestamp::now();
        let pods: Vec<&Pod> = owned.iter().map(|p| &**p).collect();
        let new = status::calculate(&rs, &pods, failure, now);
        if status::needs_update(&rs, &new) {
            self.write_status(key, &rs, ns, new).await?;
        }
        result?;
        Ok(match status::next_available_in(&rs, &pods, now) {
            Some(after) => Action::RequeueAfter(after),
            None => Action::Done,
        })
    }
}

/// Batch sizes for creating `count` pods: 1, 2, 4, … and what is left, so a failing create
/// (quota, admission) costs a few requests rather than `count` (Kubernetes' `slowStartBatch`).
fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut batch = SLOW_START_INITIAL_BATCH.min(count);
    while batch > 0 {
        batches.push(batch);
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    batches
}

/// An error and its causes on one line (the condition message users read).
fn error_chain(e: &ReplicaSetError) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_start_slow_and_double() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15), [1, 2, 4, 8]);
    }

    #[test]
    fn each_pending_deletion_counts_once() {
        let p = PendingDeletes::default();
        p.expect(
            "ns/rs",
            HashSet::from(["ns/a".to_string(), "ns/b".to_string()]),
        );
        assert!(p.observed("ns/rs", "ns/a"));
        // The same pod again (timestamp, then delete): not counted twice.
        assert!(!p.observed("ns/rs", "ns/a"));
        assert!(!p.observed("ns/other", "ns/b"));
        p.forget("ns/rs");
        assert!(!p.observed("ns/rs", "ns/b"));
    }

    #[test]
    fn pods_key_to_their_controlling_replicaset() {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        assert_eq!(owner_key(&pod), None);
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-abc".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
        assert_eq!(owner_key(&pod).as_deref(), Some("ns/web-abc"));
    }
}
