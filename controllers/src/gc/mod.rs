//! The garbage collector (kube-controller-manager's): objects whose owners — every one of their
//! ownerReferences, matched by UID — are gone are deleted (Background); an owner deleted in the
//! Foreground (`foregroundDeletion` finalizer) has its dependents deleted first and loses the
//! finalizer once no dependent with `blockOwnerDeletion` is left; an owner deleted with Orphan
//! (`orphan` finalizer) has its reference removed from every dependent, then the finalizer.
//! Caches lag, so an owner is declared gone only after a live GET says so.

mod decide;
mod graph;
mod monitors;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::Client;
use serde_json::json;
use tokio::task::JoinHandle;

pub use decide::{decide, Decision, OwnerState, Policy};
pub use graph::{Graph, Identity, Node, Work, FOREGROUND, ORPHAN};

use crate::runtime::{Action, Reconciler, Runner, WorkQueue};
use monitors::Shared;

/// How often discovery is re-run to watch resources that appeared (Kubernetes' 30 s).
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// How long the collector waits for every watch's first list before it starts anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Confirmed-absent owner UIDs remembered (UIDs are never reused).
const ABSENT_CACHE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("discovering the served resources")]
    Discovery(#[source] kube::Error),
    #[error("{verb} {resource} {name}")]
    Object {
        verb: &'static str,
        resource: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("owner kind {kind} ({api_version}) of {resource} {name} is not served")]
    UnknownOwnerKind {
        api_version: String,
        kind: String,
        resource: String,
        name: String,
    },
    #[error("stopped before the garbage collector's watches listed")]
    Stopped,
}

pub struct GarbageCollector {
    shared: Arc<Shared>,
    absent: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl GarbageCollector {
    /// Registers the collector; it discovers and watches resources itself once started.
    pub fn register(runner: &mut Runner, client: Client, queue: WorkQueue<String>, workers: usize) {
        let gc = GarbageCollector {
            shared: Arc::new(Shared::new(client, queue.clone())),
            absent: Mutex::default(),
            tasks: Mutex::default(),
        };
        runner.controller(gc, queue, workers);
    }

    fn api(&self, id: &Identity) -> Api<DynamicObject> {
        let client = self.shared.client.clone();
        match &id.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &*id.resource),
            None => Api::all_with(client, &*id.resource),
        }
    }

    fn err<'a>(verb: &'static str, id: &'a Identity) -> impl FnOnce(kube::Error) -> GcError + 'a {
        move |source| GcError::Object {
            verb,
            resource: id.resource.plural.clone(),
            name: qualified_name(id),
            source,
        }
    }

    /// The object as the server has it now; None if it is gone or was replaced.
    async fn latest(
        &self,
        id: &Identity,
    ) -> Result<Option<PartialObjectMeta<DynamicObject>>, GcError> {
        match self.api(id).get_metadata(&id.name).await {
            Ok(obj) if obj.metadata.uid.as_deref() == Some(id.uid.as_str()) => Ok(Some(obj)),
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(Self::err("reading", id)(e)),
        }
    }

    fn is_absent(&self, uid: &str) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uid)
    }

    fn mark_absent(&self, uid: &str) {
        let mut absent = self.absent.lock().unwrap_or_else(PoisonError::into_inner);
        if absent.len() >= ABSENT_CACHE {
            absent.clear();
        }
        absent.insert(uid.to_string());
    }

    /// Whether `owner` of `dependent` still exists, is going in the foreground, or is gone.
    async fn classify(
        &self,
        owner: &OwnerReference,
        dependent: &Identity,
    ) -> Result<OwnerState, GcError> {
        if self.is_absent(&owner.uid) {
            return Ok(OwnerState::Dangling);
        }
        // Known to the graph: it exists (its deletion, if any, re-queues this object).
        if let Some(node) = self.shared.graph().get(&owner.uid) {
            return Ok(if node.deleting_dependents {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        let Some(kind) = self.shared.kind(&owner.api_version, &owner.kind) else {
            return Err(GcError::UnknownOwnerKind {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
                resource: dependent.resource.plural.clone(),
                name: qualified_name(dependent),
            });
        };
        let namespace = if kind.namespaced {
            match &dependent.namespace {
                Some(ns) => Some(ns.clone()),
                // A cluster-scoped object cannot name a namespaced owner: the reference cannot
                // be resolved, and Kubernetes leaves such objects alone.
                None => return Ok(OwnerState::Solid),
            }
        } else {
            None
        };
        let id = Identity {
            resource: kind.resource,
            namespace,
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        };
        match self.latest(&id).await? {
            None => {
                self.mark_absent(&owner.uid);
                Ok(OwnerState::Dangling)
            }
            Some(o) if o.metadata.deletion_timestamp.is_some() && has(&o, FOREGROUND) => {
                Ok(OwnerState::Waiting)
            }
            Some(_) => Ok(OwnerState::Solid),
        }
    }

    async fn attempt_to_delete(&self, uid: &str) -> Result<Action, GcError> {
        let Some(node) = self.shared.graph().get(uid).cloned() else {
            return Ok(Action::Done);
        };
        let id = &node.identity;
        let Some(latest) = self.latest(id).await? else {
            return Ok(Action::Done);
        };
        if latest.metadata.deletion_timestamp.is_some() {
            if has(&latest, FOREGROUND) {
                self.finish_foreground(id, &latest).await?;
            }
            return Ok(Action::Done);
        }
        let owners = latest.metadata.owner_references.clone().unwrap_or_default();
        let mut states = Vec::with_capacity(owners.len());
        for o in &owners {
            states.push((o.uid.clone(), self.classify(o, id).await?));
        }
        let has_dependents = self.shared.graph().has_dependents(uid);
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        match decide(&states, has_dependents, &finalizers) {
            Decision::Keep => {}
            Decision::DropOwners(gone) => {
                let kept: Vec<&OwnerReference> =
                    owners.iter().filter(|o| !gone.contains(&o.uid)).collect();
                self.patch_meta(id, &latest, json!({"ownerReferences": kept}))
                    .await?;
                tracing::info!(object = %qualified_name(id), resource = %id.resource.plural, "removed references to deleted owners");
            }
            Decision::Delete(policy) => {
                let dp = DeleteParams {
                    propagation_policy: Some(match policy {
                        Policy::Background => PropagationPolicy::Background,
                        Policy::Foreground => PropagationPolicy::Foreground,
                        Policy::Orphan => PropagationPolicy::Orphan,
                    }),
                    preconditions: Some(Preconditions {
                        uid: Some(id.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match self.api(id).delete(&id.name, &dp).await {
                    Ok(_) => {
                        tracing::info!(object = %qualified_name(id), resource = %id.resource.plural, policy = policy.as_str(), "deleted an object whose owners are gone");
                    }
                    // Gone already, or replaced by a namesake (UID precondition).
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(Self::err("deleting", id)(e)),
                }
            }
        }
        Ok(Action::Done)
    }

    /// An owner deleting in the foreground: its blocking dependents are deleted; once none is
    /// left, its `foregroundDeletion` finalizer goes (and with it, the owner).
    async fn finish_foreground(
        &self,
        id: &Identity,
        latest: &PartialObjectMeta<DynamicObject>,
    ) -> Result<(), GcError> {
        let blocking: Vec<(String, bool)> = self
            .shared
            .graph()
            .blocking_dependents(&id.uid)
            .iter()
            .map(|d| (d.identity.uid.clone(), d.deleting_dependents))
            .collect();
        if blocking.is_empty() {
            return self.remove_finalizer(id, latest, FOREGROUND).await;
        }
        for (uid, deleting_dependents) in blocking {
            if !deleting_dependents {
                self.shared.queue.add(Work::Delete(uid).key());
            }
        }
        Ok(())
    }

    async fn orphan(&self, uid: &str) -> Result<Action, GcError> {
        let Some(node) = self.shared.graph().get(uid).cloned() else {
            return Ok(Action::Done);
        };
        let id = &node.identity;
        let Some(latest) = self.latest(id).await? else {
            return Ok(Action::Done);
        };
        if latest.metadata.deletion_timestamp.is_none() || !has(&latest, ORPHAN) {
            return Ok(Action::Done);
        }
        let dependents: Vec<Identity> = self
            .shared
            .graph()
            .dependents(uid)
            .iter()
            .map(|d| d.identity.clone())
            .collect();
        for dep in &dependents {
            let Some(current) = self.latest(dep).await? else {
                continue;
            };
            let refs = current
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            if !refs.iter().any(|o| o.uid == uid) {
                continue;
            }
            let kept: Vec<&OwnerReference> = refs.iter().filter(|o| o.uid != uid).collect();
            self.patch_meta(dep, &current, json!({"ownerReferences": kept}))
                .await?;
        }
        self.remove_finalizer(id, &latest, ORPHAN).await?;
        tracing::info!(object = %qualified_name(id), resource = %id.resource.plural, dependents = dependents.len(), "orphaned dependents");
        Ok(Action::Done)
    }

    async fn remove_finalizer(
        &self,
        id: &Identity,
        latest: &PartialObjectMeta<DynamicObject>,
        finalizer: &str,
    ) -> Result<(), GcError> {
        let kept: Vec<&String> = latest
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        self.patch_meta(id, latest, json!({"finalizers": kept}))
            .await
    }

    /// A merge patch of `fields` into the object's metadata, pinned to the version read (a
    /// conflict is retried with the object read again).
    async fn patch_meta(
        &self,
        id: &Identity,
        latest: &PartialObjectMeta<DynamicObject>,
        mut fields: serde_json::Value,
    ) -> Result<(), GcError> {
        fields["resourceVersion"] = json!(latest.metadata.resource_version);
        fields["uid"] = json!(id.uid);
        let patch = json!({ "metadata": fields });
        match self
            .api(id)
            .patch_metadata(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Self::err("patching", id)(e)),
        }
    }

    async fn wait_for_sync(&self, expected: usize) -> Result<(), GcError> {
        let mut synced = self.shared.synced();
        let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
        loop {
            if *synced.borrow_and_update() >= expected {
                return Ok(());
            }
            if self.shared.queue.is_shut_down() {
                return Err(GcError::Stopped);
            }
            let tick = tokio::time::Instant::now() + Duration::from_millis(200);
            if tick > deadline {
                tracing::warn!(
                    listed = *synced.borrow(),
                    expected,
                    "garbage collector starting before every watch listed"
                );
                return Ok(());
            }
            // Woken by progress, or by the tick to notice a shutdown.
            let _ = tokio::time::timeout_at(tick, synced.changed()).await;
        }
    }
}

impl Drop for GarbageCollector {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
        self.shared.stop();
    }
}

fn has(obj: &PartialObjectMeta<DynamicObject>, finalizer: &str) -> bool {
    obj.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer)
}

fn qualified_name(id: &Identity) -> String {
    match &id.namespace {
        Some(ns) => format!("{ns}/{}", id.name),
        None => id.name.clone(),
    }
}

impl Reconciler for GarbageCollector {
    type Error = GcError;

    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    async fn prepare(&self) -> Result<(), GcError> {
        let found = loop {
            match monitors::discover(&self.shared.client).await {
                Ok(found) => break found,
                Err(e) if self.shared.queue.is_shut_down() => return Err(GcError::Discovery(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector discovery failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        self.shared.apply(found);
        let expected = self.shared.monitor_count();
        let shared = self.shared.clone();
        let resync = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC_PERIOD).await;
                match monitors::discover(&shared.client).await {
                    Ok(found) => shared.apply(found),
                    Err(e) => tracing::warn!(error = %e, "garbage collector re-discovery failed"),
                }
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(resync);
        self.wait_for_sync(expected).await?;
        let unresolved = self.shared.graph().unresolved();
        tracing::info!(
            objects = self.shared.graph().len(),
            resources = expected,
            unresolved = unresolved.len(),
            "garbage collector synced"
        );
        self.shared.push(unresolved);
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, GcError> {
        match Work::parse(key) {
            Some(Work::Delete(uid)) => self.attempt_to_delete(&uid).await,
            Some(Work::Orphan(uid)) => self.orphan(&uid).await,
            None => Ok(Action::Done),
        }
    }
}
