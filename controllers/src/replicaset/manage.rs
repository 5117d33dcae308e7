//! Creating and deleting a ReplicaSet's pods (Kubernetes' `manageReplicas`): slow-start
//! creation batches, the delete order of `ranking`, and the expectations that make the next
//! sync wait until the informer has seen every pod created or deleted here.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::{namespace, pods_to_delete, ReplicaSetController, ReplicaSetError, BURST_REPLICAS};
use crate::pods::{controller_of, controller_reference, from_template, PodName};
use crate::runtime::{key_of, reference};

/// The first creation batch; each next one doubles (`SlowStartInitialBatchSize`).
const SLOW_START_INITIAL_BATCH: usize = 1;

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
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.expectations.expect(key, count, 0);
        let mut created = 0;
        let mut failure = None;
        for batch in slow_start_batches(count) {
            let params = PostParams::default();
            let results = join_all((0..batch).map(|_| api.create(&params, &pod))).await;
            for r in results {
                match r {
                    Ok(pod) => {
                        created += 1;
                        let name = pod.metadata.name.as_deref().unwrap_or_default();
                        self.events.created_pod(&reference(rs), name);
                    }
                    // The namespace is going: no pod, no error (as Kubernetes).
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("being terminated") => {}
                    Err(e) => {
                        self.events.failed_create(&reference(rs), &e);
                        failure = failure.or(Some(e));
                    }
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
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let e = match result {
                Ok(_) => {
                    self.events.deleted_pod(&reference(rs), name);
                    continue;
                }
                Err(e) => e,
            };
            self.events.failed_delete(&reference(rs), &e);
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
}
