//! NoExecute taint eviction (Kubernetes' taint eviction controller, once the "taint manager").
//! One queue carries two kinds of keys: `node/<name>` — the node's NoExecute taints may have
//! changed, so its pods are looked at again — and `pod/<namespace>/<name>` — this pod's fate
//! under its node's taints: nothing, deletion now, or a timer for when its toleration runs out.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_api::well_known::taints::EFFECT_NO_EXECUTE;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;

use super::tolerations::{eviction, Eviction};
use super::{until, PodsByNode};
use crate::runtime::{
    key_of, reference, Action, Informer, NotSynced, Reconciler, Recorder, Runner, Synced, WorkQueue,
};

/// Kubernetes' taint eviction controller reports as this component.
const COMPONENT: &str = "taint-eviction-controller";
/// The Event reason Kubernetes uses for these deletions (kept from the taint manager days).
pub const EVICTION_REASON: &str = "TaintManagerEviction";

#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error("deleting pod {pod}")]
    Delete {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct TaintEviction {
    client: Client,
    events: Recorder,
    nodes: Store<Node>,
    pods: Store<Pod>,
    pods_by_node: PodsByNode,
    queue: WorkQueue<String>,
    /// Each node's NoExecute taints as last handled, to tell when they change.
    handled: Mutex<HashMap<String, Vec<Taint>>>,
    /// When each pod was first seen under NoExecute taints (its tolerations' clock).
    first_seen: Mutex<HashMap<String, Timestamp>>,
    synced: [Synced; 2],
}

fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter(|t| t.effect == EFFECT_NO_EXECUTE)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

impl TaintEviction {
    pub fn register(
        runner: &mut Runner,
        client: Client,
        nodes: &mut Informer<Node>,
        pods: &mut Informer<Pod>,
        pods_by_node: PodsByNode,
        queue: WorkQueue<String>,
    ) {
        nodes.enqueue(&queue, |n: &Node| {
            vec![format!("node/{}", n.metadata.name.as_deref().unwrap_or(""))]
        });
        pods.enqueue(&queue, |p: &Pod| {
            let bound = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if bound {
                vec![format!("pod/{}", key_of(p))]
            } else {
                vec![]
            }
        });
        let controller = TaintEviction {
            events: Recorder::new(client.clone(), COMPONENT),
            client,
            nodes: nodes.store(),
            pods: pods.store(),
            pods_by_node,
            queue: queue.clone(),
            handled: Mutex::new(HashMap::new()),
            first_seen: Mutex::new(HashMap::new()),
            synced: [nodes.synced(), pods.synced()],
        };
        runner.controller(controller, queue, 4);
    }

    fn node_changed(&self, name: &str) {
        let taints = self
            .nodes
            .get(&ObjectRef::new(name))
            .map(|n| no_execute(&n))
            .unwrap_or_default();
        let mut handled = self.handled.lock().unwrap_or_else(|p| p.into_inner());
        let before = handled.get(name).cloned().unwrap_or_default();
        if before == taints {
            return;
        }
        if taints.is_empty() {
            handled.remove(name);
        } else {
            handled.insert(name.to_string(), taints);
        }
        drop(handled);
        for pod in self.pods_by_node.on(name) {
            self.queue.add(format!("pod/{pod}"));
        }
    }

    fn forget(&self, key: &str) {
        self.first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    async fn pod_changed(&self, key: &str) -> Result<Action, EvictionError> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(Action::Done);
        };
        let pod = self.pods.get(&ObjectRef::new(name).within(ns));
        let node_name = pod
            .as_ref()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .and_then(|p| p.spec.as_ref()?.node_name.clone());
        let (Some(pod), Some(node_name)) = (pod, node_name) else {
            self.forget(key);
            return Ok(Action::Done);
        };
        let taints = self
            .nodes
            .get(&ObjectRef::new(&node_name))
            .map(|n| no_execute(&n))
            .unwrap_or_default();
        if taints.is_empty() {
            self.forget(key);
            return Ok(Action::Done);
        }
        let first_seen = *self
            .first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_insert_with(Timestamp::now);
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match eviction(&tolerations, &taints, first_seen) {
            Eviction::Never => {
                self.forget(key);
                return Ok(Action::Done);
            }
            Eviction::At(at) if at > Timestamp::now() => {
                return Ok(Action::RequeueAfter(until(at)));
            }
            Eviction::At(_) | Eviction::Now => {}
        }
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        // The UID precondition keeps a re-created pod of the same name safe.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(pod = key, node = %node_name, "evicting pod from a NoExecute-tainted node");
                self.events.normal(
                    &reference(&*pod),
                    EVICTION_REASON,
                    format!("Marking for deletion Pod {key}"),
                );
            }
            // Gone, or replaced by a pod of the same name: nothing to evict.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(source) => {
                return Err(EvictionError::Delete {
                    pod: key.to_string(),
                    source,
                })
            }
        }
        self.forget(key);
        Ok(Action::Done)
    }
}

impl Reconciler for TaintEviction {
    type Error = EvictionError;

    fn name(&self) -> &'static str {
        "taint-eviction"
    }

    async fn prepare(&self) -> Result<(), EvictionError> {
        self.synced[0].wait("node").await?;
        self.synced[1].wait("pod").await?;
        Ok(())
    }

    async fn reconcile(&self, key: &str) -> Result<Action, EvictionError> {
        if let Some(node) = key.strip_prefix("node/") {
            self.node_changed(node);
            return Ok(Action::Done);
        }
        match key.strip_prefix("pod/") {
            Some(pod) => self.pod_changed(pod).await,
            None => Ok(Action::Done),
        }
    }
}
