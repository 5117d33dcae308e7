//! The node's own podCIDR, from its Node object.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::watcher;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {name} got no podCIDR within {after:?}")]
    NoPodCidr { name: String, after: Duration },
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()?
        .pod_cidr
        .as_deref()
        .filter(|c| !c.is_empty())
}

/// Waits (watching the Node) until it has `spec.podCIDR`, assigned by the node IPAM
/// controller; returns it.
pub async fn wait_pod_cidr(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<String, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(nodes, config).boxed();
    let waiting = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    if let Some(cidr) = pod_cidr(&n) {
                        return Some(cidr.to_string());
                    }
                }
                Ok(_) => {}
                // The watcher re-lists on its own; an error is only worth a note.
                Err(e) => tracing::debug!(node = name, error = %e, "watching for podCIDR"),
            }
        }
        None
    };
    match tokio::time::timeout(timeout, waiting).await {
        Ok(Some(cidr)) => Ok(cidr),
        _ => Err(NodeError::NoPodCidr {
            name: name.to_string(),
            after: timeout,
        }),
    }
}
