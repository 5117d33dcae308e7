//! The controller's writes of PersistentVolumeClaims: creating a pod's missing claims and
//! keeping their owner references as the retention policy says. What to write is decided in
//! [`super::claims`]; claims are read from the informer's store.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::claims::{self, PodRef, Retention};
use super::{StatefulSetError, StatefulSets};
use crate::apierrors::is_gone_or_conflict;
use crate::runtime::events::error_message;
use crate::runtime::reference;

impl StatefulSets {
    fn claims_api(&self, set: &StatefulSet) -> Api<PersistentVolumeClaim> {
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates the claims pod `ordinal` needs that do not exist. `pod` is the pod if it exists
    /// already. Returns false when the pod must wait: a claim of its name is being deleted, or
    /// (for a pod not yet created) still belongs to an earlier pod of the same name.
    pub(super) async fn ensure_claims(
        &self,
        set: &StatefulSet,
        ordinal: i32,
        pod: Option<&Pod>,
    ) -> Result<bool, StatefulSetError> {
        let retention = Retention::of(set);
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let pod_name = format!("{set_name}-{ordinal}");
        let pod_ref = PodRef {
            name: &pod_name,
            uid: pod.and_then(|p| p.metadata.uid.as_deref()),
            scaled_down: false,
        };
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let mut ready = true;
        for mut claim in claims::new_claims(set, ordinal) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            if let Some(existing) = self.claims.get(&ObjectRef::new(&name).within(namespace)) {
                if existing.metadata.deletion_timestamp.is_some()
                    || (pod.is_none() && claims::is_stale(&existing, &pod_ref, retention))
                {
                    ready = false;
                }
                continue;
            }
            if let Some(refs) = claims::owners(&claim, set, &pod_ref, retention) {
                claim.metadata.owner_references = Some(refs);
            }
            match self
                .claims_api(set)
                .create(&PostParams::default(), &claim)
                .await
            {
                Ok(_) => self.events.normal(
                    &reference(set),
                    "SuccessfulCreate",
                    format!("create Claim {name} Pod {pod_name} in StatefulSet {set_name} success"),
                ),
                // Already there: the store lags.
                Err(e) if is_gone_or_conflict(&e) => {}
                Err(source) => {
                    self.events.warning(
                        &reference(set),
                        "FailedCreate",
                        format!(
                            "create Claim {name} for Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                            error_message(&source)
                        ),
                    );
                    return Err(StatefulSetError::Claim {
                        op: "creating",
                        namespace: namespace.to_string(),
                        name,
                        source,
                    });
                }
            }
        }
        Ok(ready)
    }

    /// Sets the owner references of `pod`'s claims as the retention policy wants them, given
    /// whether the pod is being scaled away.
    pub(super) async fn fix_owners(
        &self,
        set: &StatefulSet,
        ordinal: i32,
        pod: &Pod,
        scaled_down: bool,
    ) -> Result<(), StatefulSetError> {
        let retention = Retention::of(set);
        let pod_ref = PodRef::of(pod, scaled_down);
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        for claim in claims::new_claims(set, ordinal) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            let Some(existing) = self.claims.get(&ObjectRef::new(&name).within(namespace)) else {
                continue;
            };
            let Some(refs) = claims::owners(&existing, set, &pod_ref, retention) else {
                continue;
            };
            // The resourceVersion makes this a compare-and-swap: a 409 means the claim changed,
            // and its watch event brings the set back.
            let patch = json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": existing.metadata.resource_version,
            }});
            match self
                .claims_api(set)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_gone_or_conflict(&e) => {}
                Err(source) => {
                    return Err(StatefulSetError::Claim {
                        op: "updating the owners of",
                        namespace: namespace.to_string(),
                        name,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}
