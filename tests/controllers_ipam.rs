//! Node IPAM and restarts against a real API server through kube-rs: Nodes get distinct /24s
//! from the cluster CIDR, a deleted Node's block is reused, and controllers restarted over an
//! existing cluster converge without re-allocating or duplicating anything.

mod common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::conditions;
use kube::ResourceExt;
use serde_json::json;

use common::{wait_for, InProcessControllers, Server};

async fn create_node(nodes: &Api<Node>, name: &str) -> Node {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"))
}

/// Waits for `name`'s podCIDR; asserts podCIDRs agrees; returns it.
async fn pod_cidr(nodes: &Api<Node>, name: &str) -> String {
    let node = wait_for(nodes, name, "podCIDR set", |n: Option<&Node>| {
        n.and_then(|n| n.spec.as_ref())
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some()
    })
    .await
    .expect("the node");
    let spec = node.spec.expect("a spec");
    let cidr = spec.pod_cidr.expect("a podCIDR");
    assert_eq!(
        spec.pod_cidrs,
        Some(vec![cidr.clone()]),
        "podCIDRs of {name}"
    );
    cidr
}

async fn delete_node(nodes: &Api<Node>, name: &str) {
    let uid = nodes.get(name).await.expect("the node").uid().unwrap();
    nodes
        .delete(name, &DeleteParams::default())
        .await
        .expect("deleting a node");
    wait_for(nodes, name, "node deleted", conditions::is_deleted(&uid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_blocks_and_freed_blocks_are_reused() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let nodes = Api::<Node>::all(client.clone());

    create_node(&nodes, "n1").await;
    create_node(&nodes, "n2").await;
    let mut got = vec![pod_cidr(&nodes, "n1").await, pod_cidr(&nodes, "n2").await];
    got.sort();
    assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24"]);

    let freed = pod_cidr(&nodes, "n1").await;
    delete_node(&nodes, "n1").await;
    create_node(&nodes, "n3").await;
    assert_eq!(pod_cidr(&nodes, "n3").await, freed);
    create_node(&nodes, "n4").await;
    assert_eq!(pod_cidr(&nodes, "n4").await, "10.244.2.0/24");
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_cidr_is_configurable_and_existing_pod_cidrs_are_kept() {
    let server = Server::start();
    let client = server.client().await;
    let nodes = Api::<Node>::all(client.clone());
    // A node that already has a block (e.g. set by an earlier allocator) keeps it.
    let preset: Node = serde_json::from_value(json!({"metadata": {"name": "preset"},
        "spec": {"podCIDR": "10.50.0.0/24", "podCIDRs": ["10.50.0.0/24"]}}))
    .unwrap();
    nodes
        .create(&PostParams::default(), &preset)
        .await
        .expect("creating a node with a podCIDR");
    let config = berth_controllers::Config {
        cluster_cidr: "10.50.0.0/16".into(),
        ..Default::default()
    };
    let controllers = InProcessControllers::start(client.clone(), config);
    create_node(&nodes, "fresh").await;
    assert_eq!(pod_cidr(&nodes, "fresh").await, "10.50.1.0/24");
    assert_eq!(pod_cidr(&nodes, "preset").await, "10.50.0.0/24");
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_controllers_converge_without_duplicates() {
    let server = Server::start();
    let client = server.client().await;
    let nodes = Api::<Node>::all(client.clone());
    let namespaces = Api::<Namespace>::all(client.clone());
    let all_accounts = Api::<ServiceAccount>::all(client.clone());

    let first = InProcessControllers::start(client.clone(), Default::default());
    for name in ["a", "b"] {
        create_node(&nodes, name).await;
    }
    let a = pod_cidr(&nodes, "a").await;
    let b = pod_cidr(&nodes, "b").await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "r1"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let r1 = Api::<ServiceAccount>::namespaced(client.clone(), "r1");
    wait_for(
        &r1,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await;
    let accounts_before = uids(&all_accounts).await;
    assert_eq!(accounts_before.len(), 5, "{accounts_before:?}");
    first.stop().await;

    // While they are down: node b goes, node c comes.
    delete_node(&nodes, "b").await;
    create_node(&nodes, "c").await;

    let second = InProcessControllers::start(client.clone(), Default::default());
    // Rebuilt from the Nodes: a keeps its block, b's is free again and c gets it.
    assert_eq!(pod_cidr(&nodes, "c").await, b);
    assert_eq!(pod_cidr(&nodes, "a").await, a);
    // A namespace created now gets its account; the old accounts are the same objects.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "r2"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let r2 = Api::<ServiceAccount>::namespaced(client.clone(), "r2");
    wait_for(
        &r2,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await;
    let mut accounts_after = uids(&all_accounts).await;
    assert!(accounts_after.remove("r2/default").is_some());
    assert_eq!(accounts_after, accounts_before);
    second.stop().await;
}

/// `namespace/name` → uid of every ServiceAccount.
async fn uids(api: &Api<ServiceAccount>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .expect("listing serviceaccounts")
        .items
        .iter()
        .map(|sa| {
            (
                format!("{}/{}", sa.namespace().unwrap(), sa.name_any()),
                sa.uid().unwrap(),
            )
        })
        .collect()
}
