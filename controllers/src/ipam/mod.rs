//! Node IPAM: gives each Node without `spec.podCIDR` the lowest free block of the cluster CIDR
//! (kube-controller-manager's range allocator). Which node holds what is rebuilt from the Nodes
//! at start and freed when a Node goes.

mod cidr;

use std::sync::Mutex;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

pub use cidr::{CidrAllocator, CidrError, Ipv4Cidr};

use crate::runtime::{Action, Informer, NotSynced, Reconciler, Runner, Synced, WorkQueue};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("setting podCIDR {cidr} on node {node}")]
    Patch {
        node: String,
        cidr: Ipv4Cidr,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    NotSynced(#[from] NotSynced),
}

pub struct NodeIpam {
    client: Client,
    nodes: Store<Node>,
    synced: Synced,
    alloc: Mutex<CidrAllocator>,
}

impl NodeIpam {
    /// Registers the controller and its Node informer on `runner`.
    pub fn register(
        runner: &mut Runner,
        client: Client,
        alloc: CidrAllocator,
        queue: WorkQueue<String>,
    ) {
        let mut nodes = Informer::new(Api::<Node>::all(client.clone()), watcher::Config::default());
        nodes.enqueue(&queue, |n: &Node| {
            vec![n.metadata.name.clone().unwrap_or_default()]
        });
        let controller = NodeIpam {
            client,
            nodes: nodes.store(),
            synced: nodes.synced(),
            alloc: Mutex::new(alloc),
        };
        runner.informer(nodes);
        runner.controller(controller, queue, 1);
    }

    fn alloc(&self) -> std::sync::MutexGuard<'_, CidrAllocator> {
        self.alloc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the block a Node already names. A block outside the cluster CIDR is not ours to
    /// track; one held by another node is reported and left alone, as Kubernetes does.
    fn occupy(&self, node: &str, pod_cidr: &str) {
        let parsed = pod_cidr.parse::<Ipv4Cidr>();
        let result = parsed.and_then(|c| self.alloc().occupy(node, c));
        if let Err(e) = result {
            tracing::warn!(node, pod_cidr, error = %e, "node podCIDR not tracked");
        }
    }
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

impl Reconciler for NodeIpam {
    type Error = IpamError;

    fn name(&self) -> &'static str {
        "node-ipam"
    }

    async fn prepare(&self) -> Result<(), IpamError> {
        self.synced.wait("node").await?;
        for node in self.nodes.state() {
            if let (Some(name), Some(cidr)) = (node.metadata.name.as_deref(), pod_cidr(&node)) {
                self.occupy(name, cidr);
            }
        }
        Ok(())
    }

    async fn reconcile(&self, name: &str) -> Result<Action, IpamError> {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            if let Some(cidr) = self.alloc().release(name) {
                tracing::info!(node = name, %cidr, "released node podCIDR");
            }
            return Ok(Action::Done);
        };
        if let Some(cidr) = pod_cidr(&node) {
            self.occupy(name, cidr);
            return Ok(Action::Done);
        }
        // A node this allocator already served but whose update the store has not shown yet
        // gets the same block again: the patch is then a no-op.
        let cidr = self.alloc().allocate(name)?;
        // Pinned to the version read, so a podCIDR someone else just set is never overwritten.
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
        });
        let api = Api::<Node>::all(self.client.clone());
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = name, %cidr, "allocated node podCIDR");
                Ok(Action::Done)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.alloc().release(name);
                Ok(Action::Done)
            }
            Err(source) => Err(IpamError::Patch {
                node: name.to_string(),
                cidr,
                source,
            }),
        }
    }
}
