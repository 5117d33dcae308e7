//! Creating and deleting a ReplicaSet's pods (Kubernetes' `manageReplicas`): slow-start
//! creation batches, the delete order of `ranking`, and (through [`crate::podcontrol`]) the
//! expectations that make the next sync wait until the informer has seen every pod created or
//! deleted here.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;

use super::{namespace, pods_to_delete, ReplicaSetController, ReplicaSetError, BURST_REPLICAS};
use crate::apierrors::is_namespace_terminating;
use crate::podcontrol::{Batches, Owner};
use crate::pods::{controller_of, controller_reference, from_template, PodName};
use crate::runtime::reference;

impl ReplicaSetController {
    /// Creates or deletes pods towards `spec.replicas`.
    pub(super) async fn manage(
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
        // The namespace is going: no pod, no error (as Kubernetes).
        self.pod_control
            .create_all(
                &self.owner(rs, key),
                vec![pod; count],
                Batches::SlowStart,
                is_namespace_terminating,
            )
            .await
            .map_err(|e| ReplicaSetError::CreatePods {
                key: key.to_string(),
                source: e.source,
            })?;
        Ok(())
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
        self.pod_control
            .delete_all(&self.owner(rs, key), &victims)
            .await
            .map_err(|e| ReplicaSetError::DeletePod {
                key: key.to_string(),
                pod: e.name,
                source: e.source,
            })
    }

    fn owner<'a>(&'a self, rs: &ReplicaSet, key: &'a str) -> Owner<'a> {
        Owner {
            key,
            expectations: &self.expectations,
            reference: reference(rs),
        }
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
}
