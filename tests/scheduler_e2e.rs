//! The scheduler as an API client against a real `berth apiserver`: Node objects are created
//! through the API (no node simulator yet), pods are placed respecting requests, taints and node
//! selectors, an unschedulable pod shows kube-scheduler's reason in `kubectl describe`, and a
//! node added later gets it scheduled without waiting for the periodic flush.

mod common;

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{json, Value};

use common::{kubectl, wait_for, InProcessScheduler, Server, CONVERGE_TIMEOUT};

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// Creates a Ready node with `cpu` cores, then sets its status through the status subresource.
async fn create_node(client: &kube::Client, name: &str, cpu: &str, extra: Value) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    merge(&mut node, extra);
    nodes
        .create(&PostParams::default(), &object(node))
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
    let resources = json!({"cpu": cpu, "memory": "16Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated"}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("setting the status of node {name}: {e}"));
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn create_pod(client: &kube::Client, name: &str, cpu: &str, spec: Value) {
    let mut pod = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25",
            "resources": {"requests": {"cpu": cpu}}}]}
    });
    merge(&mut pod, json!({"spec": spec}));
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &object(pod))
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
}

/// Waits until pod `name` is bound; returns its node.
async fn bound_node(client: &kube::Client, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_for(&pods, name, "bound to a node", |p: Option<&Pod>| {
        p.and_then(|p| p.spec.as_ref()?.node_name.as_ref())
            .is_some()
    })
    .await
    .unwrap_or_else(|| panic!("pod {name} vanished"));
    pod.spec.and_then(|s| s.node_name).expect("bound")
}

fn scheduled_condition(pod: &Pod) -> Option<(String, String, String)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// Waits (by watching Events) for an event about pod `name` with `reason`; returns its message.
async fn wait_for_event(client: &kube::Client, name: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let config = watcher::Config::default().fields(&format!("involvedObject.name={name}"));
    let mut stream = watcher::watcher(events, config)
        .filter_map(|e| async move {
            match e {
                Ok(watcher::Event::Apply(ev) | watcher::Event::InitApply(ev)) => Some(ev),
                _ => None,
            }
        })
        .filter(|ev| std::future::ready(ev.reason.as_deref() == Some(reason)))
        .boxed();
    let ev = tokio::time::timeout(CONVERGE_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no {reason} event for {name} within {CONVERGE_TIMEOUT:?}"))
        .expect("the event watch ended");
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.involved_object.kind.as_deref(),
        Some("Pod"),
        "involvedObject of {ev:?}"
    );
    ev.message.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_fill_nodes_by_requests_then_wait_for_a_new_node() {
    let server = Server::start();
    let client = server.client().await;
    for n in ["node-1", "node-2", "node-3"] {
        create_node(&client, n, "4", json!({})).await;
    }
    let scheduler = InProcessScheduler::start(client.clone(), Default::default());
    for i in 0..12 {
        create_pod(&client, &format!("web-{i}"), "1", json!({})).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..12 {
        *per_node
            .entry(bound_node(&client, &format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([
            ("node-1".to_string(), 4),
            ("node-2".to_string(), 4),
            ("node-3".to_string(), 4)
        ]),
        "1-cpu pods on 4-cpu nodes"
    );

    // A 13th pod fits nowhere.
    create_pod(&client, "extra", "1", json!({})).await;
    let message = "0/3 nodes are available: 3 Insufficient cpu.";
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_for(&pods, "extra", "PodScheduled=False", |p: Option<&Pod>| {
        p.and_then(scheduled_condition)
            .is_some_and(|(status, _, _)| status == "False")
    })
    .await
    .expect("pod extra exists");
    assert_eq!(
        scheduled_condition(&pod),
        Some(("False".into(), "Unschedulable".into(), message.into()))
    );
    assert_eq!(
        wait_for_event(&client, "extra", "FailedScheduling").await,
        message
    );
    let describe = kubectl(&server, &["describe", "pod", "extra", "-n", "default"]).await;
    assert!(
        describe.contains(message) && describe.contains("FailedScheduling"),
        "kubectl describe shows the reason:\n{describe}"
    );
    let conditions = describe
        .lines()
        .find(|l| l.trim_start().starts_with("PodScheduled"))
        .unwrap_or_else(|| panic!("a PodScheduled condition row in:\n{describe}"));
    assert_eq!(
        conditions.split_whitespace().collect::<Vec<_>>(),
        ["PodScheduled", "False"]
    );

    // A new node is a cluster event: the pod is retried at once, not after the 60 s flush.
    create_node(&client, "node-4", "4", json!({})).await;
    assert_eq!(bound_node(&client, "extra").await, "node-4");
    scheduler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_and_node_selectors_are_honoured() {
    let server = Server::start();
    let client = server.client().await;
    create_node(
        &client,
        "tainted",
        "64",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    )
    .await;
    create_node(&client, "plain", "2", json!({})).await;
    create_node(
        &client,
        "ssd",
        "2",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    )
    .await;
    let scheduler = InProcessScheduler::start(client.clone(), Default::default());
    // The tainted node is by far the emptiest, yet no pod without a toleration goes there.
    for i in 0..4 {
        create_pod(&client, &format!("plain-{i}"), "500m", json!({})).await;
    }
    create_pod(
        &client,
        "wants-ssd",
        "100m",
        json!({"nodeSelector": {"disk": "ssd"}}),
    )
    .await;
    create_pod(
        &client,
        "tolerates",
        "100m",
        json!({"nodeSelector": {"kubernetes.io/hostname": "tainted"},
               "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db",
                                "effect": "NoSchedule"}]}),
    )
    .await;
    for i in 0..4 {
        let node = bound_node(&client, &format!("plain-{i}")).await;
        assert_ne!(node, "tainted", "plain-{i} avoids the tainted node");
    }
    assert_eq!(bound_node(&client, "wants-ssd").await, "ssd");
    assert_eq!(bound_node(&client, "tolerates").await, "tainted");

    // A selector no node matches: kube-scheduler's NodeAffinity message for every node.
    create_pod(
        &client,
        "wants-gpu",
        "100m",
        json!({"nodeSelector": {"gpu": "true"}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = wait_for(
        &pods,
        "wants-gpu",
        "PodScheduled=False",
        |p: Option<&Pod>| {
            p.and_then(scheduled_condition)
                .is_some_and(|(status, _, _)| status == "False")
        },
    )
    .await
    .expect("pod wants-gpu exists");
    assert_eq!(
        scheduled_condition(&pod).map(|c| c.2),
        Some(
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
             2 node(s) didn't match Pod's node affinity/selector."
                .to_string()
        )
    );
    scheduler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_scheduler_process_binds_and_stops_on_sigint() {
    let server = Server::start();
    let client = server.client().await;
    create_node(&client, "only", "2", json!({})).await;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("scheduler")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawning berth scheduler");
    let mut guard = common::ChildGuard(child);
    create_pod(&client, "p", "1", json!({})).await;
    assert_eq!(bound_node(&client, "p").await, "only");

    let pid = guard.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("running kill");
    assert!(sent.success(), "SIGINT sent");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(guard.0.wait());
    });
    let status = match rx.recv_timeout(CONVERGE_TIMEOUT) {
        Ok(status) => status.expect("reaping berth scheduler"),
        Err(e) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            panic!("berth scheduler did not exit within {CONVERGE_TIMEOUT:?} of SIGINT ({e})");
        }
    };
    assert!(status.success(), "clean exit: {status}");
}
