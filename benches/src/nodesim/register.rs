//! Registration: each node's Node object, its status (through the status subresource, as a
//! kubelet posts it) and its Lease, many nodes at a time.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::objects::{self, NodeShape, LEASE_NAMESPACE};
use super::pods::PodIps;
use super::{SimConfig, SimError, SimNode};

fn shape(config: &SimConfig) -> NodeShape {
    NodeShape {
        cpu: config.cpu.clone(),
        memory: config.memory.clone(),
        pods: config.pods,
        ephemeral_storage: config.ephemeral_storage.clone(),
        labels: config.labels.clone(),
        taints: config
            .taints
            .iter()
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect(),
        zones: config.zones,
        kubelet_version: config.kubelet_version.clone(),
    }
}

/// Registers every node, `config.concurrency` at a time; the result is in index order.
pub(super) async fn register_all(
    client: &kube::Client,
    config: &SimConfig,
) -> Result<Vec<Arc<SimNode>>, SimError> {
    let shape = shape(config);
    futures::stream::iter(0..config.count)
        .map(|index| register_one(client, config, &shape, index))
        .buffered(config.concurrency)
        .try_collect()
        .await
}

pub(super) fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value, name: &str) -> Result<T, SimError> {
    serde_json::from_value(value).map_err(|e| SimError::Invalid {
        field: "generated object",
        value: name.to_string(),
        reason: e.to_string(),
    })
}

async fn register_one(
    client: &kube::Client,
    config: &SimConfig,
    shape: &NodeShape,
    index: usize,
) -> Result<Arc<SimNode>, SimError> {
    let name = format!("{}{index}", config.prefix);
    let api_err = |op, source| SimError::Api {
        op,
        name: name.clone(),
        source,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = typed(objects::node(&name, index, shape), &name)?;
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        // Left by an earlier run: adopt it.
        Err(e) if is_status(&e, 409) => nodes
            .get(&name)
            .await
            .map_err(|e| api_err("getting node", e))?,
        Err(e) => return Err(api_err("creating node", e)),
    };
    let uid = created.metadata.uid.unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let status = objects::node_status(&name, index, shape, &objects::rfc3339(now));
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| api_err("posting the status of node", e))?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renew_time = objects::micro_time(now);
    let lease: Lease = typed(
        objects::lease(&name, &uid, config.lease_duration_seconds, &renew_time),
        &name,
    )?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 409) => {
            let renewal = objects::lease_renewal(&name, config.lease_duration_seconds, &renew_time);
            leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&renewal))
                .await
                .map_err(|e| api_err("renewing the lease of node", e))?;
        }
        Err(e) => return Err(api_err("creating the lease of node", e)),
    }
    Ok(Arc::new(SimNode {
        host_ip: objects::node_ip(index),
        name,
        index,
        uid,
        alive: AtomicBool::new(true),
        renewing: tokio::sync::Mutex::new(()),
        pod_ips: Mutex::new(PodIps::default()),
    }))
}

/// Posts the node's conditions as healthy again (what a kubelet does when it comes back after
/// the node lifecycle controller marked it Unknown).
pub(super) async fn post_status(client: &kube::Client, node: &SimNode) -> Result<(), SimError> {
    let now = objects::rfc3339(OffsetDateTime::now_utc());
    let patch = json!({"status": {"conditions": objects::node_conditions(&now)}});
    Api::<Node>::all(client.clone())
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| SimError::Api {
            op: "posting the status of node",
            name: node.name.clone(),
            source,
        })?;
    Ok(())
}
