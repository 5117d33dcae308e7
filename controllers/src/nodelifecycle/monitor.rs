//! The node health monitor, keyed by node name. When a node was last heard from (its Lease's
//! renewTime or its Ready heartbeat changing) is kept on this controller's clock, as Kubernetes'
//! `nodeHealthMap` does: a restarted or newly elected controller gives every node a full grace
//! period rather than trusting other hosts' clocks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use serde_json::json;
use tokio::time::Instant;

use super::health::{condition, desired_taints, ready_status, unknown_conditions};
use super::{Grace, PodsByNode, NODE_LEASE_NAMESPACE};
use crate::runtime::{
    reference, Action, Informer, NotSynced, Reconciler, Recorder, Runner, Synced, WorkQueue,
};

/// Kubernetes' node lifecycle controller reports as this component.
const COMPONENT: &str = "node-controller";

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("updating the status of node {node}")]
    Status {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the taints of node {node}")]
    Taints {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("marking pod {pod} not ready")]
    PodNotReady {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

/// What this controller last saw of a node's heartbeats.
#[derive(Clone, Debug)]
struct Health {
    /// When a heartbeat was last observed (local clock).
    probe: Instant,
    lease_renewed: Option<MicroTime>,
    ready_heartbeat: Option<Time>,
}

pub struct NodeLifecycle {
    client: Client,
    events: Recorder,
    grace: Grace,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    pods_by_node: PodsByNode,
    health: Mutex<HashMap<String, Health>>,
    synced: [Synced; 3],
}

impl NodeLifecycle {
    /// Registers the controller: node, node-Lease and pod changes queue the node's name (a pod
    /// only when its node is not Ready, to mark it not ready too).
    pub fn register(
        runner: &mut Runner,
        client: Client,
        grace: Grace,
        nodes: &mut Informer<Node>,
        pods: &mut Informer<Pod>,
        pods_by_node: PodsByNode,
        queue: WorkQueue<String>,
    ) {
        nodes.enqueue(&queue, |n: &Node| {
            vec![n.metadata.name.clone().unwrap_or_default()]
        });
        let mut leases = Informer::new(
            Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            kube::runtime::watcher::Config::default(),
        );
        leases.enqueue(&queue, |l: &Lease| {
            vec![l.metadata.name.clone().unwrap_or_default()]
        });
        let node_store = nodes.store();
        pods.enqueue(&queue, move |p: &Pod| {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                return vec![];
            };
            match node_store.get(&ObjectRef::new(&node)) {
                Some(n) if ready_status(&n) != Some("True") => vec![node],
                _ => vec![],
            }
        });
        let controller = NodeLifecycle {
            events: Recorder::new(client.clone(), COMPONENT),
            client,
            grace,
            nodes: nodes.store(),
            leases: leases.store(),
            pods: pods.store(),
            pods_by_node,
            health: Mutex::new(HashMap::new()),
            synced: [nodes.synced(), leases.synced(), pods.synced()],
        };
        runner.informer(leases);
        runner.controller(controller, queue, 4);
    }

    /// Brings the saved heartbeat record up to date; returns when the node was last heard from.
    fn observe(&self, node: &Node, lease: Option<&Lease>, now: Instant) -> Instant {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ready = condition(node, "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.clone());
        let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.clone());
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let entry = health.entry(name).or_insert_with(|| {
            // A node that never reported Ready counts from its creation (the startup grace).
            let probe = match (ready, &node.metadata.creation_timestamp) {
                (None, Some(created)) => now
                    .checked_sub(super::elapsed_since(created.0))
                    .unwrap_or(now),
                _ => now,
            };
            Health {
                probe,
                lease_renewed: renewed.clone(),
                ready_heartbeat: heartbeat.clone(),
            }
        });
        if heartbeat.is_some() && entry.ready_heartbeat != heartbeat {
            entry.ready_heartbeat = heartbeat;
            entry.probe = now;
        }
        let newer = match (&entry.lease_renewed, &renewed) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => old.0 < new.0,
        };
        if newer {
            entry.lease_renewed = renewed;
            entry.probe = now;
        }
        entry.probe
    }

    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), MonitorError> {
        for key in self.pods_by_node.on(node) {
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let Some(pod) = self.pods.get(&ObjectRef::new(name).within(ns)) else {
                continue;
            };
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            // Only a pod that reports readiness, and is not already not-ready, is touched.
            if ready.is_none_or(|c| c.status == "False") {
                continue;
            }
            let patch = json!({"status": {"conditions": [{
                "type": "Ready", "status": "False",
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            let api = Api::<Pod>::namespaced(self.client.clone(), ns);
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    self.events
                        .warning(&reference(&*pod), "NodeNotReady", "Node is not ready");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(MonitorError::PodNotReady { pod: key, source });
                }
            }
        }
        Ok(())
    }
}

impl Reconciler for NodeLifecycle {
    type Error = MonitorError;

    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    async fn prepare(&self) -> Result<(), MonitorError> {
        self.synced[0].wait("node").await?;
        self.synced[1].wait("lease").await?;
        self.synced[2].wait("pod").await?;
        Ok(())
    }

    async fn reconcile(&self, name: &str) -> Result<Action, MonitorError> {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            self.health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            return Ok(Action::Done);
        };
        let mut node = (*node).clone();
        let lease = self
            .leases
            .get(&ObjectRef::new(name).within(NODE_LEASE_NAMESPACE));
        let now = Instant::now();
        let probe = self.observe(&node, lease.as_deref(), now);
        let grace = match condition(&node, "Ready") {
            None => self.grace.startup,
            Some(_) => self.grace.monitor,
        };
        let expires = probe + grace;
        let mut next = Action::Done;
        let api = Api::<Node>::all(self.client.clone());
        if now >= expires {
            let wall = Time(Timestamp::now());
            if let Some(conditions) = unknown_conditions(&node, &wall) {
                let was_ready = ready_status(&node) == Some("True");
                node.status.get_or_insert_with(Default::default).conditions = Some(conditions);
                node = api
                    .replace_status(name, &PostParams::default(), &node)
                    .await
                    .map_err(|source| MonitorError::Status {
                        node: name.into(),
                        source,
                    })?;
                tracing::info!(node = name, silent_for = ?now - probe, "node stopped heartbeating; conditions set Unknown");
                if was_ready {
                    self.events.normal(
                        &reference(&node),
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    );
                }
            }
        } else {
            // The soonest this node can be found silent; a renewal meanwhile re-queues it anyway.
            next = Action::RequeueAfter((expires - now).max(Duration::from_millis(10)));
        }
        if let Some(taints) = desired_taints(&node, &Time(Timestamp::now())) {
            // resourceVersion makes the patch conditional: a concurrent change gets 409 and a
            // retry on the fresh node.
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| MonitorError::Taints {
                    node: name.into(),
                    source,
                })?;
            tracing::debug!(node = name, "taints updated");
        }
        if matches!(ready_status(&node), Some(s) if s != "True") {
            self.mark_pods_not_ready(name).await?;
        }
        Ok(next)
    }
}
