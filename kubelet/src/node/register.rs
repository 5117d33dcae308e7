//! Registration (the kubelet's `registerWithAPIServer`): create the Node, or take over the
//! one a previous run left and bring its labels up to date; then post the full status.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_api::well_known::labels;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use super::agent::{NodeAgent, Providers};
use super::host::HostInfo;
use super::{is_status, NodeConfig, NodeError};

/// Kubernetes' deprecated beta spellings, still set by the kubelet for old selectors.
pub const BETA_OS: &str = "beta.kubernetes.io/os";
pub const BETA_ARCH: &str = "beta.kubernetes.io/arch";

/// The labels the kubelet owns and re-asserts on every start (`updateDefaultLabels`).
pub fn default_labels(cfg: &NodeConfig, host: &HostInfo) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::HOSTNAME.to_string(), cfg.hostname.clone()),
        (labels::OS.to_string(), "linux".to_string()),
        (labels::ARCH.to_string(), host.architecture.clone()),
        (BETA_OS.to_string(), "linux".to_string()),
        (BETA_ARCH.to_string(), host.architecture.clone()),
    ])
}

/// The Node to create: default labels with the configured ones on top (a configured label may
/// not override a default), and the registration taints.
pub fn initial_node(cfg: &NodeConfig, host: &HostInfo) -> Node {
    let mut node_labels = cfg.labels.clone();
    node_labels.extend(default_labels(cfg, host));
    let taints = (!cfg.register_taints.is_empty()).then(|| cfg.register_taints.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            labels: Some(node_labels),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints,
            ..Default::default()
        }),
        status: None,
    }
}

/// Labels to set on an existing node so it carries the defaults and the configured ones;
/// None when it already does. Labels set by others are left alone.
pub fn label_updates(
    existing: &Node,
    cfg: &NodeConfig,
    host: &HostInfo,
) -> Option<BTreeMap<String, String>> {
    let current = existing.metadata.labels.clone().unwrap_or_default();
    let mut wanted = cfg.labels.clone();
    wanted.extend(default_labels(cfg, host));
    let updates: BTreeMap<String, String> = wanted
        .into_iter()
        .filter(|(k, v)| current.get(k) != Some(v))
        .collect();
    (!updates.is_empty()).then_some(updates)
}

/// Creates the Node, or reconciles the existing one, without posting status.
pub(super) async fn create_or_reconcile(
    client: &kube::Client,
    cfg: &NodeConfig,
    host: &HostInfo,
) -> Result<Node, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes
        .create(&PostParams::default(), &initial_node(cfg, host))
        .await
    {
        Ok(node) => {
            tracing::info!(node = %cfg.name, "registered node");
            return Ok(node);
        }
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(NodeError::api("creating node", &cfg.name)(e)),
    }
    let existing = nodes
        .get(&cfg.name)
        .await
        .map_err(NodeError::api("getting existing node", &cfg.name))?;
    let Some(updates) = label_updates(&existing, cfg, host) else {
        tracing::info!(node = %cfg.name, "node already registered");
        return Ok(existing);
    };
    let patch = json!({"metadata": {"labels": updates}});
    let node = nodes
        .patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(NodeError::api("updating the labels of node", &cfg.name))?;
    tracing::info!(node = %cfg.name, "node already registered; labels updated");
    Ok(node)
}

/// Registers the node and posts its full status (conditions from `providers`); returns the
/// Node as stored. One attempt: the caller retries with back-off.
pub async fn register(
    client: &kube::Client,
    cfg: &NodeConfig,
    host: &HostInfo,
    providers: &Providers,
) -> Result<Node, NodeError> {
    let mut agent = NodeAgent::new(client.clone(), cfg.clone(), host.clone(), providers.clone());
    agent.register().await
}

/// Waits (watching the Node) until it has `spec.podCIDR`, assigned by the node IPAM
/// controller; returns it. The data plane waits the same way.
pub async fn wait_pod_cidr(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<String, NodeError> {
    berth_dataplane::agent::wait_pod_cidr(client, name, timeout)
        .await
        .map_err(
            |berth_dataplane::agent::NodeError::NoPodCidr { name, after }| NodeError::NoPodCidr {
                name,
                after,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostInfo {
        HostInfo {
            cpu: 1,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 30,
            hugepages: BTreeMap::new(),
            boot_id: String::new(),
            machine_id: String::new(),
            system_uuid: String::new(),
            kernel_version: String::new(),
            os_image: String::new(),
            architecture: "arm64".into(),
        }
    }

    #[test]
    fn initial_node_has_the_kubelet_labels_and_taints() {
        let mut cfg = NodeConfig::new("n1", "10.0.0.1".parse().unwrap(), "/tmp".into());
        cfg.hostname = "host-1".into();
        cfg.labels = BTreeMap::from([
            ("tier".to_string(), "edge".to_string()),
            (labels::OS.to_string(), "windows".to_string()),
        ]);
        cfg.register_taints = vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("x".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let node = initial_node(&cfg, &host());
        let l = node.metadata.labels.unwrap();
        assert_eq!(l["kubernetes.io/hostname"], "host-1");
        assert_eq!(l["kubernetes.io/os"], "linux", "defaults win");
        assert_eq!(l["kubernetes.io/arch"], "arm64");
        assert_eq!(l["beta.kubernetes.io/os"], "linux");
        assert_eq!(l["beta.kubernetes.io/arch"], "arm64");
        assert_eq!(l["tier"], "edge");
        assert_eq!(node.spec.unwrap().taints.unwrap()[0].key, "dedicated");
    }

    #[test]
    fn an_existing_node_gets_only_missing_or_wrong_labels() {
        let mut cfg = NodeConfig::new("n1", "10.0.0.1".parse().unwrap(), "/tmp".into());
        let mut node = initial_node(&cfg, &host());
        assert_eq!(label_updates(&node, &cfg, &host()), None);
        node.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("someone-else".into(), "x".into());
        assert_eq!(label_updates(&node, &cfg, &host()), None);
        cfg.labels.insert("tier".into(), "edge".into());
        let mut moved = host();
        moved.architecture = "amd64".into();
        assert_eq!(
            label_updates(&node, &cfg, &moved),
            Some(BTreeMap::from([
                ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("tier".to_string(), "edge".to_string()),
            ]))
        );
    }
}
