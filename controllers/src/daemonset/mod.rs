//! The DaemonSet controller (kube-controller-manager's `daemonset`): one pod on every node the
//! pod template admits (nodeSelector, required node affinity, taints against its tolerations
//! plus the standard daemon tolerations), each pinned to its node by `metadata.name` node
//! affinity so the scheduler binds it there; template changes roll out node by node within
//! `maxUnavailable`, tracked by ControllerRevisions and the `controller-revision-hash` label.

mod placement;
mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::well_known::labels::CONTROLLER_REVISION_HASH;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

use crate::apierrors::is_gone_or_conflict;
use crate::history::{self, HistoryError};
use crate::podcontrol::{Batches, DeletionSeen, Owner, PodControl, PodError, PodExpectations};
use crate::pods::{controller_key, controller_reference, from_template, PodName};
use crate::runtime::{
    key_of, reference, Action, Informer, NotSynced, Reconciler, Recorder, Runner, Synced, WorkQueue,
};
use crate::status::status_differs;

pub use placement::{daemon_tolerations, fit, Fit};

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("updating the status of daemonset {key}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error("revisions of daemonset {key}")]
    History {
        key: String,
        #[source]
        source: HistoryError,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

/// Reported as the source of this controller's Events.
pub const COMPONENT: &str = "daemonset-controller";

pub struct DaemonSets {
    client: Client,
    pod_control: PodControl,
    sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// None where the server has no ControllerRevisions.
    revisions: Option<Store<ControllerRevision>>,
    synced: Vec<(Synced, &'static str)>,
    expectations: Arc<PodExpectations>,
}

impl DaemonSets {
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
            Api::<DaemonSet>::all(client.clone()),
            watcher::Config::default(),
        );
        sets.enqueue(&queue, |ds: &DaemonSet| vec![key_of(ds)]);
        let expectations = Arc::new(PodExpectations::new(DeletionSeen::OnDelete));
        expectations.observe::<DaemonSet>(pods);
        pods.enqueue(&queue, |pod: &Pod| {
            controller_key::<DaemonSet>(&pod.metadata)
                .into_iter()
                .collect()
        });
        // A node that appears, changes labels or taints, or goes: every set looks again.
        let mut nodes = Informer::new(Api::<Node>::all(client.clone()), watcher::Config::default());
        let all_sets = sets.store();
        nodes.enqueue(&queue, move |_: &Node| {
            all_sets.state().iter().map(|ds| key_of(&**ds)).collect()
        });
        let mut synced = vec![
            (sets.synced(), "daemonset"),
            (pods.synced(), "pod"),
            (nodes.synced(), "node"),
        ];
        let mut revisions = None;
        if with_revisions {
            let informer = history::informer(&client, &queue, "DaemonSet");
            synced.push((informer.synced(), "controllerrevision"));
            revisions = Some(informer.store());
            runner.informer(informer);
        }
        let events = Recorder::new(client.clone(), COMPONENT);
        let controller = DaemonSets {
            pod_control: PodControl::new(client.clone(), Some(events)),
            client,
            sets: sets.store(),
            pods: pods.store(),
            nodes: nodes.store(),
            revisions,
            synced,
            expectations,
        };
        runner.informer(sets);
        runner.informer(nodes);
        runner.controller(controller, queue, 2);
    }

    async fn create_pods(
        &self,
        ds: &DaemonSet,
        key: &str,
        hash: &str,
        nodes: &[String],
    ) -> Result<(), DaemonSetError> {
        let (Some(owner), Some(spec)) = (controller_reference(ds), ds.spec.as_ref()) else {
            return Ok(());
        };
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let prefix = format!("{}-", ds.metadata.name.as_deref().unwrap_or_default());
        let mut template = from_template(
            &spec.template,
            &namespace,
            owner,
            PodName::Generate(&prefix),
        );
        template
            .metadata
            .labels
            .get_or_insert_default()
            .insert(CONTROLLER_REVISION_HASH.into(), hash.into());
        if let Some(generation) = ds.metadata.generation {
            template
                .metadata
                .labels
                .get_or_insert_default()
                .insert("pod-template-generation".into(), generation.to_string());
        }
        let pods = nodes
            .iter()
            .map(|node| {
                let mut pod = template.clone();
                if let Some(spec) = pod.spec.as_mut() {
                    placement::add_daemon_tolerations(spec);
                    placement::pin_to_node(spec, node);
                }
                pod
            })
            .collect();
        let owner = self.owner(ds, key);
        self.pod_control
            .create_all(&owner, pods, Batches::All, is_gone_or_conflict)
            .await?;
        Ok(())
    }

    fn owner<'a>(&'a self, ds: &DaemonSet, key: &'a str) -> Owner<'a> {
        Owner {
            key,
            expectations: &self.expectations,
            reference: reference(ds),
        }
    }

    async fn sync(&self, key: &str, ds: &DaemonSet) -> Result<Action, DaemonSetError> {
        let namespace = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let (Some(spec), Some(reference)) = (ds.spec.as_ref(), controller_reference(ds)) else {
            return Ok(Action::Done);
        };
        let status = ds.status.clone().unwrap_or_default();
        let history_err = |source| DaemonSetError::History {
            key: key.to_string(),
            source,
        };
        let revisions = self
            .revisions
            .as_ref()
            .map(|r| history::owned(&r.state(), &uid));
        let data = history::template_patch(&spec.template);
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
        let current = match &revisions {
            Some(revisions) => history::Revision::of(
                &history::ensure(&owner, revisions, &data)
                    .await
                    .map_err(history_err)?,
            ),
            None => history::Revision::local(&name, &data, status.collision_count),
        };
        let hash = current.hash.clone();

        // Daemon pods by the node they are meant for, oldest first.
        let mine: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && crate::pods::is_controlled_by(&p.metadata, &uid)
            })
            .collect();
        let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for pod in &mine {
            let target = pod.spec.as_ref().and_then(placement::target_node);
            by_node
                .entry(target.unwrap_or_default().to_string())
                .or_default()
                .push(pod);
        }
        for pods in by_node.values_mut() {
            pods.sort_by_key(|p| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata.name.clone(),
                )
            });
        }
        let template_spec = spec.template.spec.clone().unwrap_or_default();
        let mut nodes: Vec<plan::NodePods> = self
            .nodes
            .state()
            .iter()
            .map(|node| {
                let node_name = node.metadata.name.clone().unwrap_or_default();
                plan::NodePods {
                    fit: placement::fit(&template_spec, node),
                    pods: by_node.remove(&node_name).unwrap_or_default(),
                    name: node_name,
                }
            })
            .collect();
        // Pods meant for nodes that no longer exist.
        for (name, pods) in by_node {
            nodes.push(plan::NodePods {
                name,
                fit: Fit {
                    should_run: false,
                    should_continue_running: false,
                },
                pods,
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));

        let now = Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if self.expectations.satisfied(key) && ds.metadata.deletion_timestamp.is_none() {
            let (create, mut delete) = plan::manage(&nodes);
            let rolling = spec
                .update_strategy
                .as_ref()
                .is_none_or(|s| s.type_.as_deref() != Some("OnDelete"));
            if create.is_empty() && delete.is_empty() && rolling {
                let desired = nodes.iter().filter(|n| n.fit.should_run).count() as i32;
                let ru = spec
                    .update_strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref());
                let max_unavailable = plan::scaled(
                    ru.and_then(|r| r.max_unavailable.as_ref()),
                    desired,
                    true,
                    1,
                )
                .max(1);
                delete = plan::rolling_update(&nodes, &hash, max_unavailable, min_ready, now);
            }
            self.pod_control
                .delete_all(&self.owner(ds, key), &delete)
                .await?;
            self.create_pods(ds, key, &hash, &create).await?;
        }

        let c = plan::counts(&nodes, &hash, min_ready, now);
        let new_status = json!({"status": {
            "desiredNumberScheduled": c.desired,
            "currentNumberScheduled": c.current,
            "numberMisscheduled": c.misscheduled,
            "numberReady": c.ready,
            "numberAvailable": c.available,
            "numberUnavailable": c.desired - c.available,
            "updatedNumberScheduled": c.updated,
            "observedGeneration": ds.metadata.generation,
        }});
        if status_differs(&status, &new_status["status"]) {
            Api::<DaemonSet>::namespaced(self.client.clone(), &namespace)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&new_status))
                .await
                .map_err(|source| DaemonSetError::Status {
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
                &[current.name.as_str()],
                spec.revision_history_limit.unwrap_or(10),
            )
            .await
            .map_err(history_err)?;
        }
        Ok(if c.waiting_for_available && min_ready > 0 {
            Action::RequeueAfter(Duration::from_secs(min_ready as u64))
        } else {
            Action::Done
        })
    }
}

impl Reconciler for DaemonSets {
    type Error = DaemonSetError;

    fn name(&self) -> &'static str {
        "daemonset"
    }

    async fn prepare(&self) -> Result<(), DaemonSetError> {
        for (s, kind) in &self.synced {
            s.wait(kind).await?;
        }
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, DaemonSetError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        match self.sets.get(&ObjectRef::new(name).within(namespace)) {
            Some(ds) => self.sync(key, &ds).await,
            None => {
                self.expectations.forget(key);
                Ok(Action::Done)
            }
        }
    }
}
