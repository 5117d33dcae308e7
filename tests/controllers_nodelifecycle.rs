//! Node loss end to end against a real `berth apiserver` (short default toleration seconds), the
//! controllers in process with a short grace period, and a simulated node: when its Lease stops,
//! the node turns Unknown and is tainted unreachable; its pods turn not Ready; a pod that does
//! not tolerate the taint is deleted at once, one tolerating it for N s after about N s, one
//! tolerating it forever never; the heartbeat coming back clears the taints. A node reporting
//! Ready=False is tainted not-ready.

mod common;

use std::time::{Duration, Instant};

use berth_bench::nodesim::{self, SimConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{json, Value};

use common::{wait_for, InProcessControllers, Server, CONVERGE_TIMEOUT};

const GRACE: Duration = Duration::from_secs(2);
/// What the API server adds to pods without an unreachable toleration.
const DEFAULT_UNREACHABLE_SECONDS: i64 = 3;
const TOLERATED_SECONDS: i64 = 5;
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key && t.effect == effect))
}

fn condition<'a>(
    node: &'a Node,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn pod_ready(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

async fn create_pod(pods: &Api<Pod>, name: &str, node: &str, tolerations: Value) -> Pod {
    let mut spec = json!({"nodeName": node, "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "app", "image": "nginx:1.25"}]});
    if !tolerations.is_null() {
        spec["tolerations"] = tolerations;
    }
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
        .expect("a valid pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"))
}

/// Gone, or marked for deletion.
fn evicted(p: Option<&Pod>) -> bool {
    p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
}

/// Waits for `name` to be evicted; returns when (after `since`).
async fn evicted_after(pods: Api<Pod>, name: &'static str, since: Instant) -> Duration {
    wait_for(&pods, name, "evicted", evicted).await;
    since.elapsed()
}

async fn wait_for_event(client: &kube::Client, pod: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().fields(&format!("involvedObject.name={pod}"));
    let reason = reason.to_string();
    let mut stream = watcher::watcher(events, config)
        .filter_map(|e| async move {
            match e {
                Ok(watcher::Event::Apply(ev) | watcher::Event::InitApply(ev)) => Some(ev),
                _ => None,
            }
        })
        .filter(move |ev| std::future::ready(ev.reason.as_deref() == Some(reason.as_str())))
        .boxed();
    tokio::time::timeout(CONVERGE_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no event for {pod} within {CONVERGE_TIMEOUT:?}"))
        .expect("the event watch ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_evicted_by_their_tolerations() {
    let server = Server::start_with(&[
        "--default-unreachable-toleration-seconds",
        &DEFAULT_UNREACHABLE_SECONDS.to_string(),
    ]);
    let client = server.client().await;
    let sim = nodesim::start(
        client.clone(),
        SimConfig {
            lease_period: Duration::from_millis(500),
            lease_duration_seconds: 2,
            ..SimConfig::default()
        },
    )
    .await
    .expect("starting the node simulator");
    let controllers = InProcessControllers::start(
        client.clone(),
        berth_controllers::Config {
            node_monitor_grace_period: GRACE,
            ..Default::default()
        },
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // The admission plugin's tolerations carry the configured seconds.
    let defaulted = create_pod(&pods, "defaulted", "sim-0", Value::Null).await;
    let tolerations = defaulted.spec.unwrap().tolerations.unwrap();
    let unreachable = tolerations
        .iter()
        .find(|t| t.key.as_deref() == Some(UNREACHABLE))
        .expect("a default unreachable toleration");
    assert_eq!(
        (
            unreachable.operator.as_deref(),
            unreachable.effect.as_deref()
        ),
        (Some("Exists"), Some("NoExecute"))
    );
    assert_eq!(
        unreachable.toleration_seconds,
        Some(DEFAULT_UNREACHABLE_SECONDS)
    );
    let not_ready = tolerations
        .iter()
        .find(|t| t.key.as_deref() == Some(NOT_READY))
        .expect("a default not-ready toleration");
    assert_eq!(not_ready.toleration_seconds, Some(300));
    // Counts as a toleration of the key for the admission plugin (so none is added), but its
    // value does not match the taint's: not tolerated.
    create_pod(
        &pods,
        "intolerant",
        "sim-0",
        json!([{"key": UNREACHABLE, "operator": "Equal", "value": "x", "effect": "NoExecute"}]),
    )
    .await;
    create_pod(
        &pods,
        "patient",
        "sim-0",
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": TOLERATED_SECONDS}]),
    )
    .await;
    create_pod(
        &pods,
        "forever",
        "sim-0",
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
    )
    .await;
    for name in ["defaulted", "intolerant", "patient", "forever"] {
        wait_for(&pods, name, "Ready", |p: Option<&Pod>| {
            p.and_then(pod_ready) == Some("True")
        })
        .await;
    }
    let node = nodes.get("sim-0").await.unwrap();
    assert!(
        !has_taint(&node, UNREACHABLE, "NoExecute"),
        "a live node is not tainted"
    );

    let stopped = Instant::now();
    sim.stop_heartbeat("sim-0").await.unwrap();
    let node = wait_for(&nodes, "sim-0", "Ready=Unknown", |n: Option<&Node>| {
        n.and_then(|n| condition(n, "Ready"))
            .is_some_and(|c| c.status == "Unknown")
    })
    .await
    .unwrap();
    let silent = stopped.elapsed();
    // The last renewal was at most one lease period before the stop.
    assert!(
        silent >= GRACE - Duration::from_millis(600) && silent < GRACE + Duration::from_secs(3),
        "Unknown after {silent:?} with a {GRACE:?} grace period"
    );
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = condition(&node, type_).unwrap_or_else(|| panic!("no {type_} condition"));
        assert_eq!(c.status, "Unknown", "{type_}");
    }
    wait_for(
        &nodes,
        "sim-0",
        "tainted unreachable",
        |n: Option<&Node>| {
            n.is_some_and(|n| {
                has_taint(n, UNREACHABLE, "NoExecute") && has_taint(n, UNREACHABLE, "NoSchedule")
            })
        },
    )
    .await;
    let tainted = Instant::now();

    let (intolerant, defaulted, patient) = tokio::join!(
        evicted_after(pods.clone(), "intolerant", tainted),
        evicted_after(pods.clone(), "defaulted", tainted),
        evicted_after(pods.clone(), "patient", tainted),
    );
    assert!(
        intolerant < Duration::from_secs(2),
        "intolerant evicted after {intolerant:?}"
    );
    let near = |took: Duration, secs: i64| {
        let n = Duration::from_secs(secs as u64);
        took + Duration::from_millis(500) >= n && took < n + Duration::from_secs(3)
    };
    assert!(
        near(defaulted, DEFAULT_UNREACHABLE_SECONDS),
        "defaulted evicted after {defaulted:?}"
    );
    assert!(
        near(patient, TOLERATED_SECONDS),
        "patient evicted after {patient:?}"
    );
    let event = wait_for_event(&client, "intolerant", "TaintManagerEviction").await;
    assert_eq!(
        event.message.as_deref(),
        Some("Marking for deletion Pod default/intolerant")
    );

    // Tolerated forever: still there, but no longer Ready.
    let forever = pods.get("forever").await.unwrap();
    assert!(forever.metadata.deletion_timestamp.is_none());
    wait_for(&pods, "forever", "marked not Ready", |p: Option<&Pod>| {
        p.and_then(pod_ready) == Some("False")
    })
    .await;

    sim.resume_heartbeat("sim-0").await.unwrap();
    wait_for(&nodes, "sim-0", "untainted", |n: Option<&Node>| {
        n.is_some_and(|n| {
            !has_taint(n, UNREACHABLE, "NoExecute") && !has_taint(n, UNREACHABLE, "NoSchedule")
        })
    })
    .await;
    assert!(pods
        .get("forever")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    controllers.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reporting_not_ready_is_tainted_not_ready() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "sick"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
        "reason": "KubeletNotReady", "message": "container runtime is down"}]}});
    nodes
        .patch_status("sick", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    wait_for(&nodes, "sick", "tainted not-ready", |n: Option<&Node>| {
        n.is_some_and(|n| {
            has_taint(n, NOT_READY, "NoExecute") && has_taint(n, NOT_READY, "NoSchedule")
        })
    })
    .await;
    // Ready again: the taints go.
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}});
    nodes
        .patch_status("sick", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    wait_for(&nodes, "sick", "untainted", |n: Option<&Node>| {
        n.is_some_and(|n| {
            !has_taint(n, NOT_READY, "NoExecute") && !has_taint(n, NOT_READY, "NoSchedule")
        })
    })
    .await;
    controllers.stop().await;
}
