//! Issue 3's scenarios end to end: real kubectl against one `berth server` process (API server,
//! controllers and scheduler, leader-elected) with simulated nodes — Deployments placed, rolled,
//! undone, scaled and deleted with every cascade policy; a Service's EndpointSlices; Jobs to
//! Complete and to Failed; a namespace emptied on delete; an unschedulable pod's reason in
//! `kubectl describe`; and a node that stops heartbeating losing its pods to healthy nodes.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_bench::nodesim::{self, NodeSimulator, SimConfig};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::ResourceExt;

use common::{kubectl, kubectl_stdin, Server, CONVERGE_TIMEOUT};

async fn nodes(server: &Server, count: usize, lease_period: Duration) -> NodeSimulator {
    nodesim::start(
        server.client().await,
        SimConfig {
            count,
            cpu: "4".into(),
            memory: "16Gi".into(),
            lease_period,
            lease_duration_seconds: 2,
            ..SimConfig::default()
        },
    )
    .await
    .expect("starting the node simulator")
}

/// Waits until `probe` holds, re-checking it after every change `api`'s watch reports.
async fn until<K, F, Fut>(api: &Api<K>, what: &str, mut probe: F)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut changes = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let waited = tokio::time::timeout(CONVERGE_TIMEOUT, async {
        while !probe().await {
            match changes.next().await {
                Some(_) => {}
                None => panic!("{what}: the watch ended"),
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within {CONVERGE_TIMEOUT:?}");
}

async fn pods_of(api: &Api<Pod>, selector: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(selector))
        .await
        .expect("listing pods")
        .items
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_undo_scale_and_cascade_on_berth_server() {
    let server = Server::start_control_plane(&[]);
    let client = server.client().await;
    let sim = nodes(&server, 3, Duration::from_secs(5)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

    kubectl(
        &server,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.25",
            "--replicas=3",
        ],
    )
    .await;
    kubectl(
        &server,
        &["set", "resources", "deployment/web", "--requests=cpu=1"],
    )
    .await;
    let out = kubectl(
        &server,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    // 1-CPU pods on three 4-CPU nodes: LeastAllocated puts one on each.
    let placed: BTreeSet<String> = pods_of(&pods, "app=web")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(node_of)
        .collect();
    assert_eq!(placed.len(), 3, "pods spread over every node: {placed:?}");

    kubectl(
        &server,
        &["set", "image", "deployment/web", "nginx=nginx:1.26"],
    )
    .await;
    kubectl(
        &server,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    assert_eq!(
        image_of(&deployments.get("web").await.unwrap()),
        "nginx:1.26"
    );
    kubectl(&server, &["rollout", "undo", "deployment/web"]).await;
    kubectl(
        &server,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    )
    .await;
    assert_eq!(
        image_of(&deployments.get("web").await.unwrap()),
        "nginx:1.25"
    );
    let history = kubectl(&server, &["rollout", "history", "deployment/web"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // create → 1, set resources → 2, set image → 3; undo brings revision 2's template back
    // as revision 4, as Kubernetes renumbers it.
    assert_eq!(revisions, ["1", "3", "4"], "{history}");

    // Scaled down, the Service's EndpointSlice follows.
    kubectl(&server, &["scale", "deployment/web", "--replicas=2"]).await;
    kubectl(&server, &["expose", "deployment/web", "--port=80"]).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    until(&slices, "two ready endpoints for service web", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap();
        let ready = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        ready == 2
    })
    .await;

    // Cascades: background (the default) and foreground remove the pods; orphan leaves them.
    for name in ["bg", "fg", "orphan"] {
        kubectl(
            &server,
            &[
                "create",
                "deployment",
                name,
                "--image=busybox:1.36",
                "--replicas=2",
            ],
        )
        .await;
        kubectl(
            &server,
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=60s",
            ],
        )
        .await;
    }
    kubectl(&server, &["delete", "deployment", "bg"]).await;
    kubectl(
        &server,
        &["delete", "deployment", "fg", "--cascade=foreground"],
    )
    .await;
    // kubectl waits for a foreground delete to finish: the pods went before the Deployment.
    assert!(
        deployments.get_opt("fg").await.unwrap().is_none(),
        "foreground delete returns once the owner is gone"
    );
    kubectl(
        &server,
        &["delete", "deployment", "orphan", "--cascade=orphan"],
    )
    .await;
    until(&pods, "bg and fg pods deleted", || async {
        pods_of(&pods, "app in (bg,fg)").await.is_empty()
    })
    .await;
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let orphans = replicasets
        .list(&ListParams::default().labels("app=orphan"))
        .await
        .unwrap()
        .items;
    assert_eq!(orphans.len(), 1, "the orphaned ReplicaSet stays");
    assert!(
        orphans[0].owner_references().is_empty(),
        "without its owner reference"
    );
    // Its pods stay, still owned by their (now ownerless) ReplicaSet.
    let orphan_pods = pods_of(&pods, "app=orphan").await;
    assert_eq!(orphan_pods.len(), 2);
    assert!(orphan_pods
        .iter()
        .all(|p| p.metadata.deletion_timestamp.is_none()));
    sim.shutdown().await;
}

const JOBS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: batch}
---
apiVersion: batch/v1
kind: Job
metadata: {name: ok, namespace: batch}
spec:
  completions: 2
  parallelism: 2
  template:
    metadata:
      annotations: {sim.berth.dev/exit-code: "0", sim.berth.dev/run-for: "200ms"}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken, namespace: batch}
spec:
  backoffLimit: 1
  template:
    metadata:
      annotations: {sim.berth.dev/exit-code: "3"}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox:1.36}]
---
apiVersion: v1
kind: Pod
metadata: {name: huge, namespace: batch}
spec:
  containers:
  - name: c
    image: busybox:1.36
    resources: {requests: {cpu: "100"}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finish_unschedulable_pods_say_why_and_namespaces_empty() {
    let server = Server::start_control_plane(&[]);
    let client = server.client().await;
    let sim = nodes(&server, 3, Duration::from_secs(5)).await;
    kubectl_stdin(&server, &["apply", "-f", "-"], JOBS).await;
    kubectl(
        &server,
        &[
            "-n",
            "batch",
            "wait",
            "--for=condition=complete",
            "job/ok",
            "--timeout=60s",
        ],
    )
    .await;
    // One retry after the first failure (the Job controller's 10 s back-off), then Failed.
    kubectl(
        &server,
        &[
            "-n",
            "batch",
            "wait",
            "--for=condition=failed",
            "job/broken",
            "--timeout=60s",
        ],
    )
    .await;
    let reason = kubectl(
        &server,
        &[
            "-n",
            "batch",
            "get",
            "job/broken",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason} {.status.failed}",
        ],
    )
    .await;
    assert_eq!(reason.trim(), "BackoffLimitExceeded 2");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "batch");
    until(&pods, "huge marked unschedulable", || async {
        pods.get("huge")
            .await
            .ok()
            .and_then(|p| p.status?.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
            })
    })
    .await;
    let described = kubectl(&server, &["-n", "batch", "describe", "pod", "huge"]).await;
    assert!(
        described.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "{described}"
    );

    // kubectl waits until the namespace is gone, which the namespace controller allows only
    // once everything in it was deleted.
    kubectl(&server, &["delete", "namespace", "batch", "--timeout=60s"]).await;
    let left = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("metadata.namespace=batch"))
        .await
        .unwrap()
        .items;
    assert!(
        left.is_empty(),
        "pods left in a deleted namespace: {left:?}"
    );
    sim.shutdown().await;
}

const GRACE_SECONDS: u64 = 2;
const TOLERATION_SECONDS: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_loses_its_pods_to_healthy_nodes() {
    let server = Server::start_control_plane(&[
        "--node-monitor-grace-period",
        &format!("{GRACE_SECONDS}s"),
        "--default-unreachable-toleration-seconds",
        &TOLERATION_SECONDS.to_string(),
        "--default-not-ready-toleration-seconds",
        &TOLERATION_SECONDS.to_string(),
    ]);
    let client = server.client().await;
    let sim = nodes(&server, 3, Duration::from_millis(500)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    kubectl(
        &server,
        &[
            "create",
            "deployment",
            "app",
            "--image=nginx:1.25",
            "--replicas=3",
        ],
    )
    .await;
    kubectl(
        &server,
        &["rollout", "status", "deployment/app", "--timeout=60s"],
    )
    .await;
    let before = pods_of(&pods, "app=app").await;
    let lost = node_of(&before[0]);
    let on_lost: Vec<String> = before
        .iter()
        .filter(|p| node_of(p) == lost)
        .map(|p| p.name_any())
        .collect();

    let stopped = Instant::now();
    sim.stop_heartbeat(&lost).await.unwrap();
    let nodes_api: Api<Node> = Api::all(client.clone());
    until(&nodes_api, "the silent node turns NotReady", || async {
        let out = kubectl(&server, &["get", "node", &lost, "--no-headers"]).await;
        out.split_whitespace().nth(1) == Some("NotReady")
    })
    .await;
    let node = nodes_api.get(&lost).await.unwrap();
    let taints: Vec<String> = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
        "{taints:?}"
    );
    until(
        &pods,
        "three available pods, none on the lost node",
        || async {
            let live: Vec<Pod> = pods_of(&pods, "app=app")
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            live.len() == 3
                && live
                    .iter()
                    .all(|p| node_of(p) != lost && !on_lost.contains(&p.name_any()))
                && live.iter().all(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
        },
    )
    .await;
    let replaced = stopped.elapsed();
    // Silence noticed after the grace period, evictions after the tolerations, replacements
    // scheduled and started: well inside the sum plus the simulator's lease period and slack.
    let bound = Duration::from_secs(GRACE_SECONDS + TOLERATION_SECONDS + 15);
    assert!(replaced < bound, "replaced after {replaced:?}");
    sim.shutdown().await;
}
