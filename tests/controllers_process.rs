//! The controllers as processes: `berth controllers --kubeconfig` against a separate API server,
//! and `berth up`, which runs them inside the server process.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::conditions;
use kube::ResourceExt;
use serde_json::json;

use common::{wait_for, ChildGuard, LineReader, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_controllers_runs_against_an_api_server() {
    let server = Server::start();
    let _controllers = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("controllers")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(["--cluster-cidr", "10.60.0.0/16"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning berth controllers"),
    );
    let client = server.client().await;

    let nodes = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let node = wait_for(&nodes, "n1", "podCIDR set", |n: Option<&Node>| {
        n.and_then(|n| n.spec.as_ref())
            .is_some_and(|s| s.pod_cidr.is_some())
    })
    .await
    .unwrap();
    assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.60.0.0/24"));

    let namespaces = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap();
    let ns = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "gone");
    wait_for(
        &sas,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await;
    namespaces
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        &namespaces,
        "gone",
        "namespace deleted",
        conditions::is_deleted(&ns.uid().unwrap()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_up_runs_the_controllers() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("up")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", "127.0.0.1:0", "--cluster-cidr", "10.70.0.0/16"])
        // The control plane alone: this test is about the controllers.
        .arg("--kubelet=false")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning berth up");
    let mut lines = LineReader::new(child.stdout.take().unwrap());
    let _up = ChildGuard(child);
    lines.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("berth: API server on")
    });
    let client = berth_controllers::client_from_kubeconfig(&data_dir.join("admin.kubeconfig"))
        .await
        .expect("a client from berth up's kubeconfig");

    let sas = Api::<ServiceAccount>::namespaced(client.clone(), "kube-system");
    wait_for(
        &sas,
        "default",
        "default serviceaccount",
        |sa: Option<&ServiceAccount>| sa.is_some(),
    )
    .await;
    let nodes = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let node = wait_for(&nodes, "n1", "podCIDR set", |n: Option<&Node>| {
        n.and_then(|n| n.spec.as_ref())
            .is_some_and(|s| s.pod_cidr.is_some())
    })
    .await
    .unwrap();
    assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.70.0.0/24"));
}
