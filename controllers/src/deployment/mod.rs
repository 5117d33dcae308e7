//! The Deployment controller (kube-controller-manager's): one ReplicaSet per pod template,
//! named `<deployment>-<pod-template-hash>` and labelled with the hash; RollingUpdate holding
//! maxSurge / maxUnavailable at every step, Recreate, proportional scaling mid-rollout,
//! revisionHistoryLimit, pause / resume, the revision annotations `kubectl rollout history` and
//! `rollout undo` read, and the status and conditions `kubectl rollout status` reads.

mod hash;
mod new_rs;
mod revision;
mod rolling;
mod scale;
mod status;
mod sync;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;

use crate::pods::{controller_key, controller_of_kind};
use crate::replicaset::claim;
use crate::runtime::{
    key_of, reference, Action, Change, Informer, NotSynced, Reconciler, Recorder, Runner, Synced,
    WorkQueue,
};

pub use hash::{compute_hash, equal_ignore_hash, POD_TEMPLATE_HASH_LABEL};
pub use revision::{DESIRED_REPLICAS, MAX_REPLICAS, REVISION, REVISION_HISTORY};
pub use rolling::{max_surge, max_unavailable, resolve_fenceposts, RollingError};
pub use status::{
    AVAILABLE, FOUND_NEW_RS, MINIMUM_REPLICAS_AVAILABLE, MINIMUM_REPLICAS_UNAVAILABLE,
    NEW_RS_AVAILABLE, NEW_RS_CREATED, PAUSED, PROGRESSING, RESUMED, RS_UPDATED, TIMED_OUT,
};

/// Reported as the source of this controller's Events.
pub const COMPONENT: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("reading deployment {key}")]
    Get {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("{op} replicaset {rs} for deployment {key}")]
    ReplicaSet {
        op: &'static str,
        key: String,
        rs: String,
        #[source]
        source: kube::Error,
    },
    #[error("replicaset {rs} exists with another template: hash collision for deployment {key}")]
    Collision { key: String, rs: String },
    #[error("updating the {what} of deployment {key}")]
    Write {
        what: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("deployment {key}: rolling update parameters")]
    Rolling {
        key: String,
        #[source]
        source: RollingError,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

/// The Deployment controller.
pub struct DeploymentController {
    client: Client,
    events: Recorder,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    synced: [Synced; 3],
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// The Deployment a ReplicaSet's controller reference names.
fn deployment_key(rs: &ReplicaSet) -> Option<String> {
    controller_key::<Deployment>(&rs.metadata)
}

pub(crate) fn selector_of(d: &Deployment) -> berth_api::LabelSelector {
    berth_api::LabelSelector::from_optional(d.spec.as_ref().map(|s| &s.selector))
        .unwrap_or_else(|_| berth_api::LabelSelector::nothing())
}

impl DeploymentController {
    /// Registers the controller on `runner` with its own Deployment informer. `pods` and
    /// `replicasets` are shared informers (the caller runs them).
    pub fn register(
        runner: &mut Runner,
        client: Client,
        pods: &mut Informer<Pod>,
        replicasets: &mut Informer<ReplicaSet>,
        queue: WorkQueue<String>,
        workers: usize,
    ) {
        let mut deployments = Informer::new(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        );
        deployments.enqueue(&queue, |d: &Deployment| vec![key_of(d)]);
        let store = deployments.store();
        replicasets.enqueue(&queue, move |rs: &ReplicaSet| {
            claim::owner_keys(&store, rs, selector_of)
        });
        // A Recreate rollout waits until every old pod is gone: a pod's deletion is news.
        let rs_store = replicasets.store();
        let on_pod_delete = queue.clone();
        pods.observe(move |change, pod: &Pod| {
            if change != Change::Deleted {
                return;
            }
            let Some(owner) = controller_of_kind::<ReplicaSet>(&pod.metadata) else {
                return;
            };
            let rs_ref = ObjectRef::new(&owner.name).within(namespace(&pod.metadata));
            if let Some(key) = rs_store.get(&rs_ref).and_then(|rs| deployment_key(&rs)) {
                on_pod_delete.add(key);
            }
        });
        let controller = DeploymentController {
            events: Recorder::new(client.clone(), COMPONENT),
            client,
            deployments: deployments.store(),
            replicasets: replicasets.store(),
            pods: pods.store(),
            synced: [deployments.synced(), replicasets.synced(), pods.synced()],
        };
        runner.informer(deployments);
        runner.controller(controller, queue, workers);
    }

    /// The ReplicaSets this Deployment controls after adopting matching orphans and releasing
    /// ones that stopped matching.
    async fn claim_replicasets(
        &self,
        key: &str,
        d: &Deployment,
        ns: &str,
    ) -> Result<Vec<ReplicaSet>, DeploymentError> {
        let selector = selector_of(d);
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let mut owned = Vec::new();
        let mut may_adopt: Option<bool> = None;
        let candidates = self
            .replicasets
            .state()
            .into_iter()
            .filter(|rs| namespace(&rs.metadata) == ns);
        for rs in candidates {
            let matches = claim::selects(&selector, &rs.metadata);
            let rs_name = || rs.metadata.name.clone().unwrap_or_default();
            let failed = |op, source| DeploymentError::ReplicaSet {
                op,
                key: key.to_string(),
                rs: rs_name(),
                source,
            };
            match claim::decide(uid, deleting, &rs.metadata, matches) {
                claim::Claim::Keep => owned.push((*rs).clone()),
                claim::Claim::Ignore => {}
                claim::Claim::Adopt => {
                    if may_adopt.is_none() {
                        may_adopt = Some(self.may_adopt(key, d, ns).await?);
                    }
                    let owner = crate::pods::controller_reference(d);
                    let Some(owner) = owner.filter(|_| may_adopt == Some(true)) else {
                        continue;
                    };
                    if claim::adopt(&api, &*rs, owner)
                        .await
                        .map_err(|e| failed("adopting", e))?
                    {
                        owned.push((*rs).clone());
                    }
                }
                claim::Claim::Release => {
                    claim::release(&api, &*rs, uid)
                        .await
                        .map_err(|e| failed("releasing", e))?;
                }
            }
        }
        Ok(owned)
    }

    async fn may_adopt(
        &self,
        key: &str,
        d: &Deployment,
        ns: &str,
    ) -> Result<bool, DeploymentError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        match api
            .get_opt(d.metadata.name.as_deref().unwrap_or_default())
            .await
        {
            Ok(Some(fresh)) => {
                Ok(fresh.metadata.uid == d.metadata.uid
                    && fresh.metadata.deletion_timestamp.is_none())
            }
            Ok(None) => Ok(false),
            Err(source) => Err(DeploymentError::Get {
                key: key.to_string(),
                source,
            }),
        }
    }
}

fn selects_everything(d: &Deployment) -> bool {
    d.spec.as_ref().is_some_and(|s| {
        s.selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && s.selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty())
    })
}

impl Reconciler for DeploymentController {
    type Error = DeploymentError;

    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn prepare(&self) -> Result<(), DeploymentError> {
        self.synced[0].wait("deployment").await?;
        self.synced[1].wait("replicaset").await?;
        self.synced[2].wait("pod").await?;
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, DeploymentError> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(Action::Done);
        };
        let Some(d) = self.deployments.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(Action::Done);
        };
        let d = (*d).clone();
        let mut rollout = sync::Rollout::new(&self.client, &self.events, &self.pods, key, ns, d);
        if selects_everything(&rollout.d) {
            // Kubernetes refuses to act on a selector that selects every pod.
            tracing::warn!(deployment = key, "selector selects all pods; not syncing");
            self.events.warning(
                &reference(&rollout.d),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            rollout.observe_generation_only().await?;
            return Ok(Action::Done);
        }
        let rses = self.claim_replicasets(key, &rollout.d, ns).await?;
        rollout.set_replicasets(rses);
        rollout.run().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn replicasets_key_to_their_deployment() {
        let mut rs = ReplicaSet::default();
        rs.metadata.namespace = Some("ns".into());
        assert_eq!(deployment_key(&rs), None);
        rs.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        assert_eq!(deployment_key(&rs).as_deref(), Some("ns/web"));
    }
}
