//! The ReplicaSet controller (kube-controller-manager's): keeps `spec.replicas` active pods
//! matching the selector, adopting matching orphans and releasing pods that stopped matching;
//! creates in slow-start batches (1, 2, 4, …) and deletes in Kubernetes' order; waits on
//! expectations so a lagging informer never leads to duplicate pods; reports replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas (after minReadySeconds) and
//! ReplicaFailure in its status.

pub(crate) mod claim;
mod manage;
mod ranking;
mod status;

use std::sync::Arc;

use berth_api::LabelSelector;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use serde_json::json;

use crate::apierrors::is_not_found;
use crate::podcontrol::{DeletionSeen, PodControl, PodExpectations};
use crate::pods::{controller_reference, is_active};
use crate::runtime::{
    key_of, Action, Informer, NotSynced, Reconciler, Recorder, Runner, Synced, WorkQueue,
};

pub use ranking::{pods_to_delete, DELETION_COST};
pub use status::REPLICA_FAILURE;

/// Reported as the source of this controller's Events.
pub const COMPONENT: &str = "replicaset-controller";

/// Most pods created or deleted in one sync (Kubernetes' `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

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

/// The ReplicaSet controller.
pub struct ReplicaSetController {
    client: Client,
    pod_control: PodControl,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    expectations: Arc<PodExpectations>,
    synced: [Synced; 2],
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// Parses a ReplicaSet's selector; an absent or invalid one selects nothing.
pub(crate) fn selector_of(rs: &ReplicaSet) -> LabelSelector {
    LabelSelector::from_optional(rs.spec.as_ref().map(|s| &s.selector))
        .unwrap_or_else(|_| LabelSelector::nothing())
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
        let expectations = Arc::new(PodExpectations::new(DeletionSeen::Tracked));
        replicasets.enqueue(&queue, |rs: &ReplicaSet| vec![key_of(rs)]);
        let store = replicasets.store();
        pods.enqueue(&queue, move |pod: &Pod| {
            claim::owner_keys(&store, pod, selector_of)
        });
        expectations.observe::<ReplicaSet>(pods);
        let events = Recorder::new(client.clone(), COMPONENT);
        let controller = ReplicaSetController {
            pod_control: PodControl::new(client.clone(), Some(events)),
            client,
            pods: pods.store(),
            replicasets: replicasets.store(),
            expectations,
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
            let matches = claim::selects(&selector, &pod.metadata);
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
            Err(e) if is_not_found(&e) => Ok(()),
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
