//! The StatefulSet controller (kube-controller-manager's `statefulset`): pods with stable names
//! `<set>-<ordinal>` (labels `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`,
//! hostname and subdomain set), created in order and deleted from the highest ordinal under
//! OrderedReady or all at once under Parallel, rolled to a new template from the highest ordinal
//! down to the partition, with the revisions reported so `kubectl rollout status` follows.
//!
//! Before each pod it creates the pod's PersistentVolumeClaims from `volumeClaimTemplates`
//! (`<template>-<set>-<ordinal>`) and keeps their owner references as
//! `persistentVolumeClaimRetentionPolicy` says ([`claims`]): by default claims outlive scale-down
//! and the set. A pod waits while a claim of its name is being deleted or still belongs to an
//! earlier pod of the same name. Nothing here waits for a claim to be bound.

mod claim_writes;
mod claims;
mod plan;

use std::sync::Arc;
use std::time::Duration;

use berth_api::well_known::labels::{CONTROLLER_REVISION_HASH, POD_INDEX, STATEFULSET_POD_NAME};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

use crate::apierrors::is_gone_or_conflict;
use crate::history::{self, HistoryError, Revision};
use crate::podcontrol::{PodControl, PodError};
use crate::pods::{
    controller_key, controller_reference, from_template, is_available, is_controlled_by, is_ready,
    is_terminating, PodName,
};
use crate::runtime::events::error_message;
use crate::runtime::{
    key_of, reference, Action, Informer, NotSynced, Reconciler, Recorder, Runner, Synced, WorkQueue,
};
use crate::status::status_differs;

pub use claims::claim_name;
pub use plan::ordinal_of;

#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    #[error("updating the status of statefulset {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("{op} persistentvolumeclaim {namespace}/{name}")]
    Claim {
        op: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("revisions of statefulset {key}")]
    History {
        key: String,
        #[source]
        source: HistoryError,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct StatefulSets {
    client: Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    /// None where the server has no ControllerRevisions.
    revisions: Option<Store<ControllerRevision>>,
    synced: Vec<(Synced, &'static str)>,
    events: Recorder,
    /// Without a recorder: StatefulSets word their pod Events their own way ([`Self::pod_event`]).
    pod_control: PodControl,
}

/// The component named in this controller's Events.
pub const COMPONENT: &str = "statefulset-controller";

impl StatefulSets {
    /// Registers the controller on `runner`; `pods` (shared with other controllers) feeds it.
    /// `with_revisions`: keep ControllerRevisions ([`history::served`]).
    pub fn register(
        runner: &mut Runner,
        client: Client,
        pods: &mut Informer<Pod>,
        queue: WorkQueue<String>,
        with_revisions: bool,
    ) {
        let mut sets = Informer::new(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        );
        sets.enqueue(&queue, |s: &StatefulSet| vec![key_of(s)]);
        pods.enqueue(&queue, |pod: &Pod| {
            controller_key::<StatefulSet>(&pod.metadata)
                .into_iter()
                .collect()
        });
        let mut claims = Informer::new(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        );
        // A claim going away may unblock a pod waiting for it; its name says whose it is.
        let set_store = sets.store();
        claims.enqueue(&queue, move |claim: &PersistentVolumeClaim| {
            let namespace = claim.metadata.namespace.as_deref();
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            set_store
                .state()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == namespace)
                .filter(|s| claims::belongs_to(s, name))
                .map(|s| key_of(&**s))
                .collect()
        });
        let mut synced = vec![
            (sets.synced(), "statefulset"),
            (pods.synced(), "pod"),
            (claims.synced(), "persistentvolumeclaim"),
        ];
        let mut revisions = None;
        if with_revisions {
            let informer = history::informer(&client, &queue, "StatefulSet");
            synced.push((informer.synced(), "controllerrevision"));
            revisions = Some(informer.store());
            runner.informer(informer);
        }
        let controller = StatefulSets {
            events: Recorder::new(client.clone(), COMPONENT),
            pod_control: PodControl::new(client.clone(), None),
            client,
            sets: sets.store(),
            pods: pods.store(),
            claims: claims.store(),
            revisions,
            synced,
        };
        runner.informer(sets);
        runner.informer(claims);
        runner.controller(controller, queue, 2);
    }

    fn new_pod(set: &StatefulSet, ordinal: i32, revision: &Revision) -> Option<Pod> {
        let spec = set.spec.as_ref()?;
        let set_name = set.metadata.name.as_deref()?;
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = format!("{set_name}-{ordinal}");
        let mut pod = from_template(
            &spec.template,
            namespace,
            controller_reference(set)?,
            PodName::Exact(&name),
        );
        let labels = pod.metadata.labels.get_or_insert_default();
        labels.insert(STATEFULSET_POD_NAME.into(), name.clone());
        labels.insert(POD_INDEX.into(), ordinal.to_string());
        labels.insert(CONTROLLER_REVISION_HASH.into(), revision.name.clone());
        let pod_spec = pod.spec.get_or_insert_default();
        pod_spec.hostname = Some(name.clone());
        if let Some(service) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
            pod_spec.subdomain = Some(service.to_string());
        }
        for claim in spec.volume_claim_templates.iter().flatten() {
            let Some(claim_name) = claim.metadata.name.as_deref() else {
                continue;
            };
            let volumes = pod_spec.volumes.get_or_insert_default();
            volumes.retain(|v| v.name != claim_name);
            volumes.push(Volume {
                name: claim_name.to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("{claim_name}-{name}"),
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
        Some(pod)
    }

    async fn sync(&self, key: &str, set: &StatefulSet) -> Result<Action, StatefulSetError> {
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let (Some(spec), Some(reference)) = (set.spec.as_ref(), controller_reference(set)) else {
            return Ok(Action::Done);
        };
        let status = set.status.clone().unwrap_or_default();
        let history_err = |source| StatefulSetError::History {
            key: key.to_string(),
            source,
        };
        let revisions = self
            .revisions
            .as_ref()
            .map(|r| history::owned(&r.state(), &uid));
        let data = history::template_patch(&spec.template);
        let update = match &revisions {
            Some(revisions) => {
                let owner = history::Owner {
                    client: &self.client,
                    namespace: &namespace,
                    name: &name,
                    reference,
                    template_labels: spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.as_ref()),
                    collision_count: status.collision_count,
                };
                Revision::of(
                    &history::ensure(&owner, revisions, &data)
                        .await
                        .map_err(history_err)?,
                )
            }
            None => Revision::local(&name, &data, status.collision_count),
        };
        let current_name = status
            .current_revision
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| update.name.clone());

        let mine: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && is_controlled_by(&p.metadata, &uid)
            })
            .collect();
        let want = spec.replicas.unwrap_or(1).max(0);
        let start = spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        let by_ordinal = |o: i32| {
            mine.iter().map(|p| &**p).find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .and_then(|n| ordinal_of(&name, n))
                    == Some(o)
            })
        };
        let replicas: Vec<(i32, Option<&Pod>)> =
            (start..start + want).map(|o| (o, by_ordinal(o))).collect();
        let mut condemned: Vec<(i32, &Pod)> = mine
            .iter()
            .filter_map(|p| {
                let o = ordinal_of(&name, p.metadata.name.as_deref()?)?;
                (o < start || o >= start + want).then_some((o, &**p))
            })
            .collect();
        condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        let condemned: Vec<&Pod> = condemned.into_iter().map(|(_, p)| p).collect();

        let strategy = spec.update_strategy.as_ref();
        let policy = plan::Policy {
            ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
            rolling: strategy.is_none_or(|s| s.type_.as_deref() != Some("OnDelete")),
            partition: strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0),
        };
        if set.metadata.deletion_timestamp.is_none() {
            // Claims first: a condemned pod's claims must name it before it goes.
            let range = start..start + want;
            let owned = mine.iter().filter_map(|p| {
                let o = ordinal_of(&name, p.metadata.name.as_deref()?)?;
                Some((o, &**p, !range.contains(&o)))
            });
            let fixes = owned
                .clone()
                .map(|(o, pod, out)| self.fix_owners(set, o, pod, out));
            join_all(fixes)
                .await
                .into_iter()
                .collect::<Result<(), _>>()?;
            // A pending pod whose claim was deleted gets it back, as on Kubernetes.
            let pending = owned.filter(|(_, p, out)| {
                !out && !is_terminating(p)
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
            });
            let missing = pending.map(|(o, pod, _)| self.ensure_claims(set, o, Some(pod)));
            join_all(missing)
                .await
                .into_iter()
                .collect::<Result<Vec<bool>, _>>()?;
            let steps = plan::plan(policy, &replicas, &condemned, &update.name);
            let results = join_all(steps.iter().map(|step| self.apply(set, step, &update))).await;
            results.into_iter().collect::<Result<(), _>>()?;
        }

        // Status, from the pods as the store has them.
        let now = Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let created = mine.iter().filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| !ph.is_empty())
        });
        let count = |f: &dyn Fn(&Pod) -> bool| mine.iter().filter(|p| f(p)).count() as i32;
        let ready = count(&|p| is_ready(p) && !is_terminating(p));
        let available = count(&|p| is_available(p, min_ready, now) && !is_terminating(p));
        let at = |rev: &str| {
            count(&|p: &Pod| !is_terminating(p) && history::hash_label(&p.metadata) == Some(rev))
        };
        let updated = at(&update.name);
        let (mut current_revision, mut current) = (current_name.clone(), at(&current_name));
        if policy.rolling && updated == want && ready == want {
            current_revision = update.name.clone();
            current = updated;
        }
        let new_status = json!({"status": {
            "observedGeneration": set.metadata.generation,
            "replicas": created.count(),
            "readyReplicas": ready,
            "availableReplicas": available,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update.name,
        }});
        if status_differs(&status, &new_status["status"]) {
            Api::<StatefulSet>::namespaced(self.client.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&new_status))
                .await
                .map_err(|source| StatefulSetError::Status {
                    key: key.to_string(),
                    source,
                })?;
        }
        if let Some(revisions) = &revisions {
            history::truncate(
                &self.client,
                &namespace,
                revisions,
                &mine,
                &[update.name.as_str(), current_revision.as_str()],
                spec.revision_history_limit.unwrap_or(10),
            )
            .await
            .map_err(history_err)?;
        }
        Ok(if min_ready > 0 && ready > available {
            Action::RequeueAfter(Duration::from_secs(min_ready as u64))
        } else {
            Action::Done
        })
    }

    async fn apply(
        &self,
        set: &StatefulSet,
        step: &plan::Step<'_>,
        update: &Revision,
    ) -> Result<(), StatefulSetError> {
        let owner = reference(set);
        match step {
            plan::Step::Create(ordinal) => {
                let Some(pod) = Self::new_pod(set, *ordinal, update) else {
                    return Ok(());
                };
                if !self.ensure_claims(set, *ordinal, None).await? {
                    tracing::debug!(
                        pod = pod.metadata.name.as_deref().unwrap_or_default(),
                        "waiting for a claim being deleted"
                    );
                    return Ok(());
                }
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                match self.pod_control.create(&owner, &pod).await {
                    Ok(_) => self.pod_event("create", set, &pod_name, None),
                    // Already there: the store lags our create.
                    Err(e) if is_gone_or_conflict(&e.source) => {}
                    Err(e) => {
                        self.pod_event("create", set, &pod_name, Some(&e.source));
                        return Err(e.into());
                    }
                }
            }
            plan::Step::Delete(pod) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                match self.pod_control.delete(&owner, pod).await {
                    Ok(()) => self.pod_event("delete", set, &name, None),
                    Err(e) if is_gone_or_conflict(&e.source) => {}
                    Err(e) => {
                        self.pod_event("delete", set, &name, Some(&e.source));
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Kubernetes' StatefulSet pod Events: `SuccessfulCreate` "create Pod web-0 in StatefulSet
    /// web successful", or `FailedCreate` "... failed error: <message>".
    fn pod_event(&self, verb: &str, set: &StatefulSet, pod: &str, error: Option<&kube::Error>) {
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let reason = event_reason(verb, error.is_none());
        let object = reference(set);
        match error {
            None => self.events.normal(
                &object,
                &reason,
                format!("{verb} Pod {pod} in StatefulSet {set_name} successful"),
            ),
            Some(e) => self.events.warning(
                &object,
                &reason,
                format!(
                    "{verb} Pod {pod} in StatefulSet {set_name} failed error: {}",
                    error_message(e)
                ),
            ),
        }
    }
}

impl Reconciler for StatefulSets {
    type Error = StatefulSetError;

    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn prepare(&self) -> Result<(), StatefulSetError> {
        for (s, kind) in &self.synced {
            s.wait(kind).await?;
        }
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, StatefulSetError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        match self.sets.get(&ObjectRef::new(name).within(namespace)) {
            Some(set) => self.sync(key, &set).await,
            None => Ok(Action::Done),
        }
    }
}
/// `SuccessfulCreate` / `FailedDelete`…: Kubernetes titles the verb.
fn event_reason(verb: &str, ok: bool) -> String {
    let mut chars = verb.chars();
    let titled: String = chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(chars)
        .collect();
    format!("{}{titled}", if ok { "Successful" } else { "Failed" })
}

#[cfg(test)]
mod tests {
    use super::event_reason;

    #[test]
    fn event_reasons_title_the_verb() {
        assert_eq!(event_reason("create", true), "SuccessfulCreate");
        assert_eq!(event_reason("delete", false), "FailedDelete");
    }
}
