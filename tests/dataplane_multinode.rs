//! Two nodes on one machine (see support/twonode.rs): pods reach each other and Services across
//! nodes, over routes to each other's podCIDR, with each node's own cluster DNS.

mod common;
#[path = "support/kubelet.rs"]
mod kubelet_support;
#[path = "support/netclient.rs"]
mod netclient;
#[path = "support/twonode.rs"]
mod twonode;

use std::collections::BTreeSet;

use common::{apply, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use netclient::in_pod;
use twonode::TwoNodes;

/// A pod on `node`: `web` ones answer their name over HTTP on 8080; others sleep.
fn pod(name: &str, node: &str, image: &str, web: bool) -> String {
    let (labels, command) = if web {
        (
            r#"{"app": "web"}"#,
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
        )
    } else {
        (r#"{"app": "client"}"#, "exec sleep 3600")
    };
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "labels": {labels}}},
            "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 1,
              "containers": [{{"name": "c", "image": "{image}", "command": ["sh", "-c", {command:?}]}}]}}}}"#
    )
}

const SERVICES: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np"},
   "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty-np"},
   "spec": {"type": "NodePort", "selector": {"app": "none"}, "ports": [{"port": 80}]}}
]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_pods_and_services_across_nodes() {
    let Some(nodes) = TwoNodes::up().await else {
        return;
    };
    let server = &nodes.cluster.server;
    let (node1, node2) = (nodes.cluster.node.as_str(), nodes.node2.as_str());
    for (name, node, web) in [
        ("web-1", node1, true),
        ("web-2", node2, true),
        ("client-1", node1, false),
        ("client-2", node2, false),
    ] {
        apply(server, &pod(name, node, &nodes.image, web)).await;
    }
    apply(server, SERVICES).await;
    let pods: Api<Pod> = Api::default_namespaced(server.client().await);
    let mut ips = std::collections::BTreeMap::new();
    for name in ["web-1", "web-2", "client-1", "client-2"] {
        let pod = wait_for(&pods, name, "running", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Running")
        })
        .await
        .unwrap();
        ips.insert(name, pod.status.unwrap().pod_ip.unwrap());
    }

    // pod → pod across nodes, both ways (and on the same node, for contrast).
    for (client, web) in [
        ("client-1", "web-2"),
        ("client-2", "web-1"),
        ("client-2", "web-2"),
    ] {
        let got = in_pod(server, client, &format!("get {} 8080", ips[web]))
            .unwrap_or_else(|e| panic!("{client} → {web} at {}: {e}", ips[web]));
        assert_eq!(got.trim(), web, "{client} → {web}");
    }

    // pod → ClusterIP from node 2: the local backend and the one across the link.
    let services: Api<Service> = Api::default_namespaced(server.client().await);
    let web_ip = services
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let many = in_pod(
        server,
        "client-2",
        &format!("for i in $(seq 24); do get {web_ip}; done"),
    )
    .expect("GETs through the ClusterIP");
    let seen: BTreeSet<&str> = many.lines().collect();
    assert_eq!(seen, BTreeSet::from(["web-1", "web-2"]), "{many}");

    // Node 2's own cluster DNS answers its pods (kube-dns is node-local).
    let by_name = in_pod(server, "client-2", "get web.default.svc.cluster.local")
        .expect("GET by name from node 2");
    assert!(["web-1", "web-2"].contains(&by_name.trim()), "{by_name}");

    // NodePort through XDP on node 2's link to the outside: a client there reaches both
    // backends, the local one (DNAT) and the one on node 1 (DNAT and SNAT to node 2).
    let node_port = |name: &'static str| {
        let services = services.clone();
        async move {
            let svc = services.get(name).await.unwrap();
            svc.spec.unwrap().ports.unwrap()[0]
                .node_port
                .expect("a nodePort")
        }
    };
    let web_np = node_port("web-np").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = nodes
            .outside
            .command("/bin/busybox")
            .args(["sh", "-c"])
            .arg(format!(
                "{}for i in $(seq 16); do get {} {web_np}; done",
                netclient::GET,
                nodes.node2_ip
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let seen: BTreeSet<&str> = text.lines().collect();
        if seen == BTreeSet::from(["web-1", "web-2"]) {
            break;
        }
        // The Service's maps are written shortly after it is created; no watch shows them.
        assert!(
            std::time::Instant::now() < deadline,
            "outside → NodePort {web_np}: {seen:?} {out:?}"
        );
    }
    // A NodePort without endpoints refuses at once.
    let empty_np = node_port("empty-np").await;
    let started = std::time::Instant::now();
    let refused = nodes
        .outside
        .command("/bin/busybox")
        .args(["nc", "-w", "10", &nodes.node2_ip, &empty_np.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The route node 1 took to node 2's pods is Berth's, through the link to node 2.
    let routes = std::process::Command::new("ip")
        .args(["route", "show", "proto", "180", "dev", &nodes.uplink1])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("via {}", nodes.node2_ip)),
        "{routes}"
    );
}
