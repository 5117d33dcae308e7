//! The EndpointSlice and Endpoints controllers against a real API server: slices and the legacy
//! Endpoints follow pod readiness, termination and deletion; named ports split pods into slices
//! by port set; more than 100 pods spread over slices of at most 100; Endpoints of a Service
//! without a selector are left to their owner. Pod status is written directly (no scheduler or
//! nodes needed).

mod common;

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

use common::{wait_for, InProcessControllers, Server, CONVERGE_TIMEOUT};

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// Watches `api` (objects labelled `labels`) until `cond` holds for the whole list; returns it.
async fn wait_list<K>(api: &Api<K>, labels: &str, what: &str, cond: impl Fn(&[K]) -> bool) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + k8s_openapi::serde::de::DeserializeOwned
        + 'static,
{
    let (reader, writer) = reflector::store();
    let mut stream = reflector::reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().labels(labels)),
    )
    .default_backoff()
    .boxed();
    let mut last = Vec::new();
    let waiting = async {
        while let Some(event) = stream.next().await {
            if matches!(
                event,
                Ok(watcher::Event::Init | watcher::Event::InitApply(_))
            ) {
                continue;
            }
            last = reader.state().iter().map(|o| (**o).clone()).collect();
            if cond(&last) {
                return last.clone();
            }
        }
        panic!("the watch for {what} ended");
    };
    match tokio::time::timeout(CONVERGE_TIMEOUT, waiting).await {
        Ok(list) => list,
        Err(_) => panic!("{what} within {CONVERGE_TIMEOUT:?}; last seen: {last:#?}"),
    }
}

async fn create_node(client: &kube::Client, name: &str, zone: &str) {
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name,
                "labels": {"topology.kubernetes.io/zone": zone}}})),
        )
        .await
        .expect("creating a node");
}

/// A pod on node `n1` labelled app=web, with a container port named `http` unless `bare`.
async fn create_pod(pods: &Api<Pod>, name: &str, bare: bool) {
    let ports = if bare {
        json!([])
    } else {
        json!([{"name": "http", "containerPort": 8080}])
    };
    pods.create(
        &PostParams::default(),
        &object(json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx", "ports": ports}]}})),
    )
    .await
    .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
}

/// Writes the status a kubelet would: running, with `ip`, Ready as given.
async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("writing the status of pod {name}: {e}"));
}

/// Every endpoint of `slices` by pod name, with the slice's port numbers.
fn endpoints_by_pod(slices: &[EndpointSlice]) -> BTreeMap<String, (Endpoint, Vec<i32>)> {
    slices
        .iter()
        .flat_map(|s| {
            let ports: Vec<i32> = s.ports.iter().flatten().filter_map(|p| p.port).collect();
            s.endpoints.iter().map(move |e| {
                let pod = e.target_ref.as_ref().and_then(|t| t.name.clone()).unwrap();
                (pod, (e.clone(), ports.clone()))
            })
        })
        .collect()
}

fn conditions(e: &Endpoint) -> (bool, bool, bool) {
    let c = e.conditions.as_ref().expect("conditions");
    (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
}

fn ready_of(map: &BTreeMap<String, (Endpoint, Vec<i32>)>, pod: &str) -> Option<(bool, bool, bool)> {
    map.get(pod).map(|(e, _)| conditions(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslices_and_endpoints_follow_pod_readiness() {
    let server = Server::start();
    let client = server.client().await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    create_node(&client, "n1", "zone-a").await;
    let pp = PostParams::default();
    let services = Api::<Service>::namespaced(client.clone(), "default");
    // A Service without a selector: its Endpoints are the user's.
    services
        .create(
            &pp,
            &object(json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await
        .expect("creating a selectorless service");
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default");
    let manual = endpoints
        .create(
            &pp,
            &object(json!({"metadata": {"name": "manual"},
                "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]})),
        )
        .await
        .expect("creating manual endpoints");

    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for (name, bare) in [("a", false), ("b", false), ("c", true)] {
        create_pod(&pods, name, bare).await;
    }
    set_status(&pods, "a", "10.244.0.10", true).await;
    set_status(&pods, "b", "10.244.0.11", true).await;
    set_status(&pods, "c", "10.244.0.12", true).await;
    services
        .create(
            &pp,
            &object(
                json!({"metadata": {"name": "web", "labels": {"tier": "front"}}, "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                          {"name": "admin", "port": 81, "targetPort": 9000}]}}),
            ),
        )
        .await
        .expect("creating the service");

    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    let selector = "kubernetes.io/service-name=web";
    let list = wait_list(&slices, selector, "three ready endpoints", |s| {
        let m = endpoints_by_pod(s);
        m.len() == 3 && m.values().all(|(e, _)| conditions(e).0)
    })
    .await;
    // Pod c lacks the named port: it sits in a slice of its own with only the numeric one.
    assert_eq!(list.len(), 2, "{list:#?}");
    let m = endpoints_by_pod(&list);
    let mut a_ports = m["a"].1.clone();
    a_ports.sort();
    assert_eq!(a_ports, [8080, 9000]);
    assert_eq!(m["c"].1, [9000]);
    let (a, _) = &m["a"];
    assert_eq!(a.addresses, ["10.244.0.10"]);
    assert_eq!(a.node_name.as_deref(), Some("n1"));
    assert_eq!(a.zone.as_deref(), Some("zone-a"));
    let svc = services.get("web").await.expect("the service");
    for s in &list {
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(labels["tier"], "front");
        assert!(s.metadata.name.as_ref().unwrap().starts_with("web-"));
        assert_eq!(s.address_type, "IPv4");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Service", Some(true))
        );
        assert_eq!(Some(&owner.uid), svc.metadata.uid.as_ref());
    }

    // Readiness flips the endpoint's conditions.
    set_status(&pods, "a", "10.244.0.10", false).await;
    wait_list(&slices, selector, "a not ready", |s| {
        ready_of(&endpoints_by_pod(s), "a") == Some((false, false, false))
    })
    .await;

    // A terminating pod stays, serving but not ready.
    pods.delete("b", &DeleteParams::default().grace_period(30))
        .await
        .expect("deleting pod b gracefully");
    wait_list(&slices, selector, "b terminating", |s| {
        ready_of(&endpoints_by_pod(s), "b") == Some((false, true, true))
    })
    .await;

    // The legacy Endpoints: terminating pods leave, unready ones are listed as not ready.
    let ep = wait_for(
        &endpoints,
        "web",
        "endpoints without b",
        |e: Option<&Endpoints>| {
            let Some(e) = e else { return false };
            let ips =
                |f: fn(
                    &k8s_openapi::api::core::v1::EndpointSubset,
                )
                    -> &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
                    let mut v: Vec<String> = e
                        .subsets
                        .iter()
                        .flatten()
                        .flat_map(|s| f(s).iter().flatten().map(|a| a.ip.clone()))
                        .collect();
                    v.sort();
                    v
                };
            ips(|s| &s.addresses) == ["10.244.0.12"]
                && ips(|s| &s.not_ready_addresses) == ["10.244.0.10"]
        },
    )
    .await
    .unwrap();
    assert_eq!(ep.metadata.labels.as_ref().unwrap()["tier"], "front");

    // A deleted pod leaves the slice.
    pods.delete("b", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleting pod b now");
    wait_list(&slices, selector, "b gone", |s| {
        let m = endpoints_by_pod(s);
        !m.contains_key("b") && m.len() == 2
    })
    .await;

    // kubectl shows the endpoints a user expects.
    let kubectl = server.kubectl();
    let out = tokio::task::spawn_blocking(move || {
        kubectl.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.trim(), "10.244.0.12");

    // The selectorless Service got no slices, and its Endpoints were not touched.
    let manual_slices = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=manual"))
        .await
        .expect("listing slices");
    assert!(manual_slices.items.is_empty());
    let still = endpoints.get("manual").await.expect("manual endpoints");
    assert_eq!(
        still.metadata.resource_version,
        manual.metadata.resource_version
    );
    controllers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_hundred_pods_spread_over_slices_of_at_most_a_hundred() {
    let server = Server::start();
    let client = server.client().await;
    create_node(&client, "n1", "zone-a").await;
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    const N: usize = 150;
    let names: Vec<String> = (0..N).map(|i| format!("p{i:03}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(16, |(i, name)| {
            let pods = pods.clone();
            async move {
                create_pod(&pods, name, false).await;
                set_status(
                    &pods,
                    name,
                    &format!("10.244.{}.{}", i / 200, i % 200 + 2),
                    true,
                )
                .await;
            }
        })
        .await;
    let controllers = InProcessControllers::start(client.clone(), Default::default());
    Api::<Service>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}, "spec": {
                "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})),
        )
        .await
        .expect("creating the service");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    let list = wait_list(
        &slices,
        "kubernetes.io/service-name=web",
        "150 endpoints",
        |s| endpoints_by_pod(s).len() == N,
    )
    .await;
    let sizes: Vec<usize> = list.iter().map(|s| s.endpoints.len()).collect();
    assert!(sizes.iter().all(|n| *n <= 100), "slice sizes {sizes:?}");
    assert_eq!(
        sizes.iter().sum::<usize>(),
        N,
        "no endpoint twice: {sizes:?}"
    );
    assert_eq!(list.len(), 2, "slice sizes {sizes:?}");

    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default");
    wait_for(
        &endpoints,
        "web",
        "150 addresses",
        |e: Option<&Endpoints>| {
            e.is_some_and(|e| {
                e.subsets
                    .iter()
                    .flatten()
                    .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
                    == N
            })
        },
    )
    .await;
    controllers.stop().await;
}
