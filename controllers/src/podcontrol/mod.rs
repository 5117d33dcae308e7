//! Creating and deleting a controller's pods (kube-controller-manager's `PodControl` with the
//! expectations around it): every create and delete records `SuccessfulCreate` /
//! `FailedCreate` / `SuccessfulDelete` / `FailedDelete` on the owner, deletes carry the pod's
//! UID as a precondition so a pod recreated under the same name is never hit, and the batch
//! operations keep the owner's [`PodExpectations`] right whatever the requests return.

mod expectations;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Client;

use crate::apierrors::is_gone_or_conflict;
use crate::runtime::Recorder;

pub use expectations::{DeletionSeen, PodExpectations};

/// The first creation batch under [`Batches::SlowStart`]; each next one doubles
/// (`SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// A create or delete of one pod that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} pod {namespace}/{name}")]
pub struct PodError {
    /// "creating" or "deleting".
    pub op: &'static str,
    pub namespace: String,
    /// The pod's name, or for a pod named by the server its `generateName` prefix.
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// How many creations go out at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batches {
    /// All of them concurrently.
    All,
    /// 1, 2, 4, … concurrently, stopping after a batch with a failure, so a create that keeps
    /// failing (quota, admission) costs a few requests rather than all (`slowStartBatch`).
    SlowStart,
}

/// The owner pods are created or deleted for: its queue key, the expectations its controller
/// waits on, and the reference its Events are recorded about.
pub struct Owner<'a> {
    pub key: &'a str,
    pub expectations: &'a PodExpectations,
    pub reference: ObjectReference,
}

/// Creates and deletes pods for owners, recording the Events Kubernetes' `PodControl` records.
#[derive(Clone)]
pub struct PodControl {
    client: Client,
    events: Option<Recorder>,
}

impl PodControl {
    /// `events`: None for a controller that records no pod Events of its own.
    pub fn new(client: Client, events: Option<Recorder>) -> Self {
        PodControl { client, events }
    }

    /// Creates `pod` in its namespace for `owner`, returning the pod the server stored.
    pub async fn create(&self, owner: &ObjectReference, pod: &Pod) -> Result<Pod, PodError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                if let Some(events) = &self.events {
                    let name = created.metadata.name.as_deref().unwrap_or_default();
                    events.created_pod(owner, name);
                }
                Ok(created)
            }
            Err(source) => {
                if let Some(events) = &self.events {
                    events.failed_create(owner, &source);
                }
                let meta = &pod.metadata;
                let name = meta.name.clone().or_else(|| meta.generate_name.clone());
                Err(PodError {
                    op: "creating",
                    namespace,
                    name: name.unwrap_or_default(),
                    source,
                })
            }
        }
    }

    /// Deletes `pod` for `owner`, only if its UID is still the one in `pod`.
    pub async fn delete(&self, owner: &ObjectReference, pod: &Pod) -> Result<(), PodError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                if let Some(events) = &self.events {
                    events.deleted_pod(owner, &name);
                }
                Ok(())
            }
            Err(source) => {
                if let Some(events) = &self.events {
                    events.failed_delete(owner, &source);
                }
                Err(PodError {
                    op: "deleting",
                    namespace,
                    name,
                    source,
                })
            }
        }
    }

    /// Creates `pods` for `owner`, first expecting their creations (replacing what was
    /// expected); a creation that fails or is never tried is observed at once. Failures
    /// `tolerated` lets pass are no failure. Returns the pods created, or the first failure.
    pub async fn create_all(
        &self,
        owner: &Owner<'_>,
        pods: Vec<Pod>,
        batches: Batches,
        tolerated: fn(&kube::Error) -> bool,
    ) -> Result<Vec<Pod>, PodError> {
        let count = pods.len();
        owner.expectations.expect_creations(owner.key, count);
        let sizes = match batches {
            Batches::All => vec![count].into_iter().filter(|n| *n > 0).collect(),
            Batches::SlowStart => slow_start_batches(count),
        };
        let mut pods = pods.into_iter();
        let mut created = Vec::with_capacity(count);
        let mut failure = None;
        for size in sizes {
            let batch: Vec<Pod> = pods.by_ref().take(size).collect();
            let results = join_all(batch.iter().map(|p| self.create(&owner.reference, p))).await;
            for result in results {
                match result {
                    Ok(pod) => created.push(pod),
                    Err(e) if tolerated(&e.source) => {}
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            if failure.is_some() {
                break;
            }
        }
        for _ in created.len()..count {
            owner.expectations.creation_failed(owner.key);
        }
        if !created.is_empty() {
            tracing::debug!(owner = owner.key, created = created.len(), "created pods");
        }
        failure.map_or(Ok(created), Err)
    }

    /// Deletes `pods` for `owner` concurrently, first expecting their deletions (replacing
    /// what was expected); a deletion that fails is observed at once. A pod already gone or
    /// replaced (404, 409) is no failure. Returns the first failure, in the order of `pods`.
    pub async fn delete_all(&self, owner: &Owner<'_>, pods: &[&Pod]) -> Result<(), PodError> {
        if pods.is_empty() {
            return Ok(());
        }
        owner.expectations.expect_deletions(owner.key, pods);
        let results = join_all(pods.iter().map(|p| self.delete(&owner.reference, p))).await;
        let mut failure = None;
        for (result, pod) in results.into_iter().zip(pods) {
            if let Err(e) = result {
                owner.expectations.deletion_failed(owner.key, pod);
                if !is_gone_or_conflict(&e.source) {
                    failure = failure.or(Some(e));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Batch sizes for creating `count` pods: 1, 2, 4, … and what is left.
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
